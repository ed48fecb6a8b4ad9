//! Images: named ones pulled on demand, and images built from a repository's own
//! recipe (its `Dockerfile` or `devcontainer.json`).
//!
//! **Pulls.** A create on an image the engine lacks pulls it per `IMAGE_PULL_POLICY`,
//! within `ALLOWED_IMAGES`, bounded by `IMAGE_PULL_TIMEOUT_SECS`, with credentials
//! from `REGISTRY_AUTH_FILE`. Concurrent creates of one image share one pull (a
//! shared future, polled by whoever waits: when every waiter is gone, so is the pull).
//!
//! **Builds.** `POST /images` resolves the repository in the mirror cache, reads the
//! recipe from the commit (no checkout), and streams the context (`git archive` of its
//! tree) to the engine's classic builder, with `BUILD_NETWORK` and the memory bound of
//! a sandbox. An image's id is a hash of the repository, the context's tree, the
//! recipe and the build arguments, so the same request again finds the same image.
//! Records live in `DATA_DIR/images/<id>.json` (with `<id>.log`, the build's output);
//! the build tasks belong to [`Images`] and stop with it. At start, images of ours
//! without a record are removed, records whose image is gone read `failed`, and a
//! build the restart interrupted reads `failed` (the same request builds again).
//!
//! Here: [`Images`], the store (pulls, builds, their records on disk). `reference`:
//! references, `ALLOWED_IMAGES` and the Dockerfile checks; `credentials`:
//! `REGISTRY_AUTH_FILE`; `record`: an image's record and its build; `recipe`: a
//! Dockerfile, or a devcontainer configuration turned into one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::backend::{
    Backend, BuildEvent, BuildSpec, Credentials, ImageInfo, LABEL_IMAGE_ID, LABEL_IMAGE_INSTANCE,
    image_store,
};
use crate::config::{BuildNetwork, Config, PullPolicy};
use crate::error::{Error, Result};
use crate::git::{GitCache, RepoUrl, Source};
use crate::metrics::Metrics;
use crate::registry::write_atomically;
use crate::sync::{Locked as _, RwLocked as _};

/// Prefix of the references of images built here.
pub const BUILT_PREFIX: &str = "repobox-image/";
/// Prefix of the references of snapshot images.
pub const SNAPSHOT_PREFIX: &str = "repobox-snapshot/";
/// Bytes of a build's output kept (the newest).
const LOG_BYTES: usize = 1024 * 1024;
/// Lines of the log's tail a failed build's `error` carries.
const ERROR_TAIL_LINES: usize = 20;
/// How often a pull in progress is logged.
const PULL_LOG_PERIOD: Duration = Duration::from_secs(5);
/// Where a repository's devcontainer configuration may be, in order.
const DEVCONTAINER_FILES: &[&str] = &[".devcontainer/devcontainer.json", ".devcontainer.json"];

mod credentials;
mod recipe;
mod record;
mod reference;

use credentials::*;
use recipe::*;
pub use record::*;
pub use reference::*;

/// A pull's failure, shareable among the creates that waited for it.
#[derive(Debug, Clone)]
enum PullFailure {
    /// The registry or the engine refused it, or it ran too long (422).
    Refused(String),
    /// The engine cannot be reached (503).
    Engine(String),
}

impl From<PullFailure> for Error {
    fn from(failure: PullFailure) -> Self {
        match failure {
            PullFailure::Refused(reason) => Error::ImageUnavailable(reason),
            PullFailure::Engine(reason) => Error::EngineUnavailable(reason),
        }
    }
}

type PullFuture = Shared<BoxFuture<'static, std::result::Result<(), PullFailure>>>;

/// Every image of this instance: the pulls in flight and the built images.
pub struct Images {
    config: Arc<Config>,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    instance: String,
    dir: PathBuf,
    puller: Puller,
    builds: RwLock<HashMap<String, Arc<Build>>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

impl Images {
    /// Opens the records under `DATA_DIR/images`. A build that was running when the
    /// last process ended reads `failed`.
    pub fn open(
        config: Arc<Config>,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        instance: &str,
    ) -> anyhow::Result<Self> {
        let dir = config.data_dir.join("images");
        std::fs::create_dir_all(&dir)?;
        let mut builds = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
                continue;
            }
            let mut record = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<Image>(&bytes)?))
            {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "setting aside an unreadable image record");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                    continue;
                }
            };
            let log = std::fs::read_to_string(path.with_extension("log")).unwrap_or_default();
            if record.status == ImageStatus::Building {
                record.status = ImageStatus::Failed;
                record.finished_at = Some(Utc::now());
                record.error = Some(
                    "the build was interrupted by a restart of repobox; ask for it again"
                        .to_owned(),
                );
                write_atomically(&path, &serde_json::to_vec_pretty(&record)?)?;
            }
            builds.insert(record.image_id.clone(), Arc::new(Build::new(record, log)));
        }
        Ok(Self {
            puller: Puller {
                backend: backend.clone(),
                metrics: metrics.clone(),
                config: config.clone(),
                pulls: Arc::new(Mutex::new(HashMap::new())),
            },
            config,
            backend,
            metrics,
            instance: instance.to_owned(),
            dir,
            builds: RwLock::new(builds),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    /// Makes sure the engine has `reference` for a sandbox, pulling it per
    /// `IMAGE_PULL_POLICY`. `named`: the request named it (`always` applies to those;
    /// `DOCKER_BASE_IMAGE` and pool members are pulled only when missing).
    pub async fn ensure(&self, reference: &str, named: bool) -> Result<()> {
        self.puller.ensure(reference, named).await
    }

    /// A built image by id.
    pub fn get(&self, image_id: &str) -> Result<Arc<Build>> {
        self.builds
            .read_locked()
            .get(image_id)
            .cloned()
            .ok_or_else(|| Error::ImageNotFound(format!("no image with id {image_id}")))
    }

    /// Every built image, oldest first.
    pub fn list(&self) -> Vec<Image> {
        let mut all: Vec<Image> = self
            .builds
            .read_locked()
            .values()
            .map(|build| build.record())
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.image_id).cmp(&(b.created_at, &b.image_id)));
        all
    }

    /// Starts the build `request` asks for, or finds the same build already made (or
    /// being made). Resolving the repository and reading its recipe happen before it
    /// answers, so a bad repository or recipe is a 4xx, never a failed record.
    pub async fn build(&self, git: &GitCache, request: BuildRequest) -> Result<Image> {
        image_store(&*self.backend)?;
        if !self.config.allow_image_builds {
            return Err(Error::BuildsDisabled(
                "image builds are off on this server (ALLOW_IMAGE_BUILDS=false): they run the repository's own instructions on the engine".to_owned(),
            ));
        }
        let source = git
            .source(
                &request.repo,
                request.branch.as_deref(),
                request.commit.as_deref(),
            )
            .await?;
        let mut recipe = self.recipe(&source, &request).await?;
        for (name, value) in &request.build_args {
            recipe.build_args.insert(name.clone(), value.clone());
        }
        match &recipe.image {
            Some(image) => validate_reference(&self.config, image)?,
            None => {
                let text = source
                    .read(&recipe.dockerfile_in_repo)
                    .await?
                    .unwrap_or_default();
                check_dockerfile(&self.config, &text)?;
            }
        }
        let tree = match &recipe.image {
            Some(_) => String::new(),
            None => source.tree(&recipe.context).await?.ok_or_else(|| {
                Error::Checkout(format!(
                    "the build context {:?} is not a directory in commit {}",
                    recipe.context,
                    source.commit()
                ))
            })?,
        };
        let image_id = image_id(&request, &recipe, &tree, self.config.build_network);
        let reference = match &recipe.image {
            Some(image) => image.clone(),
            None => format!("{BUILT_PREFIX}{}:{image_id}", self.instance),
        };

        let build = {
            let mut builds = self.builds.write_locked();
            if let Some(existing) = builds.get(&image_id)
                && existing.record().status != ImageStatus::Failed
            {
                Metrics::count(&self.metrics.image_builds, "cached");
                return Ok(existing.record());
            }
            let failed_before = builds.contains_key(&image_id);
            if !failed_before && builds.len() >= self.config.max_images {
                return Err(Error::LimitReached(format!(
                    "the limit of {} images is reached (MAX_IMAGES); delete one first",
                    self.config.max_images
                )));
            }
            let record = Image {
                image_id: image_id.clone(),
                status: ImageStatus::Building,
                repo_url: request.repo.redacted().to_owned(),
                branch: source.branch().map(str::to_owned),
                resolved_commit: source.commit().to_owned(),
                from: request.from,
                image: reference,
                size_bytes: 0,
                created_at: Utc::now(),
                finished_at: None,
                error: None,
                dockerfile: recipe
                    .image
                    .is_none()
                    .then(|| recipe.dockerfile_in_repo.clone()),
                container_env: recipe.container_env.clone(),
                post_create_command: recipe.post_create_command.clone(),
                built: recipe.image.is_none(),
            };
            let build = Arc::new(Build::new(record, String::new()));
            builds.insert(image_id.clone(), build.clone());
            build
        };
        if let Err(err) = self.persist(&build) {
            self.forget(&image_id);
            return Err(Error::internal(format!(
                "cannot write an image record: {err}"
            )));
        }
        let context = match &recipe.image {
            Some(_) => None,
            None => match source.archive(&tree) {
                Ok(context) => Some(context),
                Err(err) => {
                    self.forget(&image_id);
                    return Err(err);
                }
            },
        };
        let work = BuildWork {
            backend: self.backend.clone(),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
            dir: self.dir.clone(),
            instance: self.instance.clone(),
            build: build.clone(),
            dockerfile: recipe.dockerfile.clone(),
            build_args: recipe.build_args.clone(),
        };
        let pulled = recipe.image.clone();
        let pull = pulled.map(|reference| {
            // A devcontainer's `image` is pulled like any named image, sharing pulls.
            let puller = self.puller.clone();
            async move { puller.ensure(&reference, false).await }
        });
        let mut tasks = self.tasks.locked();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            match (context, pull) {
                (Some(context), _) => work.run(context).await,
                (None, Some(pull)) => work.finish_pulled(pull.await).await,
                (None, None) => {}
            }
        });
        Ok(build.record())
    }

    async fn recipe(&self, source: &Source<'_>, request: &BuildRequest) -> Result<Recipe> {
        match request.from {
            BuildFrom::Dockerfile => {
                let path = request.dockerfile.as_deref().unwrap_or("Dockerfile");
                let dockerfile = repo_path(path).filter(|p| !p.is_empty()).ok_or_else(|| {
                    Error::invalid(format!(
                        "dockerfile {path:?} must be a relative path inside the repository"
                    ))
                })?;
                let text = source.read(&dockerfile).await?.ok_or_else(|| {
                    Error::Checkout(format!(
                        "there is no Dockerfile at {dockerfile:?} in commit {}",
                        source.commit()
                    ))
                })?;
                Ok(Recipe {
                    image: None,
                    context: String::new(),
                    dockerfile: dockerfile.clone(),
                    dockerfile_in_repo: dockerfile,
                    build_args: BTreeMap::new(),
                    container_env: BTreeMap::new(),
                    post_create_command: None,
                    config: text,
                })
            }
            BuildFrom::Devcontainer => {
                if request.dockerfile.is_some() {
                    return Err(Error::invalid(
                        "dockerfile is for from \"dockerfile\"; a devcontainer names its own",
                    ));
                }
                for path in DEVCONTAINER_FILES {
                    if let Some(text) = source.read(path).await? {
                        let recipe = devcontainer_recipe(path, &text)?;
                        if recipe.image.is_none()
                            && source.read(&recipe.dockerfile_in_repo).await?.is_none()
                        {
                            return Err(Error::Checkout(format!(
                                "there is no Dockerfile at {:?} in commit {}",
                                recipe.dockerfile_in_repo,
                                source.commit()
                            )));
                        }
                        return Ok(recipe);
                    }
                }
                Err(Error::Checkout(format!(
                    "commit {} has no .devcontainer/devcontainer.json nor .devcontainer.json",
                    source.commit()
                )))
            }
        }
    }

    fn persist(&self, build: &Build) -> std::io::Result<()> {
        persist(&self.dir, build)
    }

    fn forget(&self, image_id: &str) {
        self.builds.write_locked().remove(image_id);
        let _ = std::fs::remove_file(self.dir.join(format!("{image_id}.json")));
        let _ = std::fs::remove_file(self.dir.join(format!("{image_id}.log")));
    }

    /// Deletes an image: its record, its output and (when built here) the engine's
    /// image. `in_use`: a sandbox runs on it (409). A build in progress is 409 too.
    pub async fn delete(&self, image_id: &str, in_use: bool) -> Result<()> {
        let build = self.get(image_id)?;
        let record = build.record();
        if record.status == ImageStatus::Building {
            return Err(Error::Conflict(format!(
                "image {image_id} is still building; delete it once it has finished"
            )));
        }
        if in_use {
            return Err(Error::Conflict(format!(
                "a sandbox runs on image {image_id}; destroy it first"
            )));
        }
        if record.built {
            image_store(&*self.backend)?
                .remove_image(&record.image)
                .await?;
        }
        self.forget(image_id);
        Ok(())
    }

    /// Brings the engine's images of ours and the records into agreement: an image
    /// without a record is removed, a ready record whose image is gone reads `failed`.
    pub async fn reconcile(&self) -> Result<()> {
        let Some(store) = self.backend.images() else {
            return Ok(());
        };
        let label = format!("{LABEL_IMAGE_INSTANCE}={}", self.instance);
        let images = store.list_images(&label).await?;
        for image in &images {
            let known = image
                .labels
                .get(LABEL_IMAGE_ID)
                .is_some_and(|id| self.get(id).is_ok());
            if !known {
                tracing::info!(image = %image.id, "removing a built image without a record");
                if let Err(err) = store.remove_image(&image.id).await {
                    tracing::warn!(image = %image.id, %err, "could not remove a built image");
                }
            }
        }
        let builds: Vec<Arc<Build>> = self.builds.read_locked().values().cloned().collect();
        for build in builds {
            let record = build.record();
            if record.built
                && record.status == ImageStatus::Ready
                && store.image(&record.image).await?.is_none()
            {
                tracing::warn!(image = %record.image_id, "an image's record outlived its image");
                build.update(|record| {
                    record.status = ImageStatus::Failed;
                    record.error =
                        Some("the image is no longer on the engine; build it again".to_owned());
                });
                if let Err(err) = self.persist(&build) {
                    tracing::warn!(image = %record.image_id, %err, "could not write an image record");
                }
            }
        }
        Ok(())
    }

    /// Stops the builds in flight (their records read `failed` at the next start).
    pub async fn shutdown(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.locked());
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// An image's id: a hash of everything that decides its content.
fn image_id(request: &BuildRequest, recipe: &Recipe, tree: &str, network: BuildNetwork) -> String {
    let mut hasher = Sha256::new();
    let from = match request.from {
        BuildFrom::Dockerfile => "dockerfile",
        BuildFrom::Devcontainer => "devcontainer",
    };
    let network = match network {
        BuildNetwork::None => "none",
        BuildNetwork::Default => "default",
    };
    for part in [
        "v1",
        from,
        request.repo.redacted(),
        tree,
        &recipe.context,
        &recipe.dockerfile,
        recipe.image.as_deref().unwrap_or(""),
        &recipe.config,
        network,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for (name, value) in &recipe.build_args {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("img-{hex}")
}

fn persist(dir: &Path, build: &Build) -> std::io::Result<()> {
    let record = build.record();
    let bytes = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    write_atomically(&dir.join(format!("{}.json", record.image_id)), &bytes)
}

/// The pulls: shared by the creates that wait for one image, and by builds whose
/// devcontainer names an image.
#[derive(Clone)]
struct Puller {
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    pulls: Arc<Mutex<HashMap<String, PullFuture>>>,
}

impl Puller {
    /// Makes sure the engine has `reference` for a sandbox, pulling it per
    /// `IMAGE_PULL_POLICY`. `named`: the request named it (`always` applies to those;
    /// `DOCKER_BASE_IMAGE` and pool members are pulled only when missing).
    pub(crate) async fn ensure(&self, reference: &str, named: bool) -> Result<()> {
        let policy = self.config.image_pull_policy;
        let Some(store) = self.backend.images() else {
            // No image store: the engine resolves the image itself.
            return Ok(());
        };
        let always = policy == PullPolicy::Always && named && !is_ours(reference);
        if !always && store.image_exists(reference).await? {
            return Ok(());
        }
        if is_ours(reference) {
            return Err(Error::ImageUnavailable(format!(
                "image {reference:?} is no longer on the engine"
            )));
        }
        if policy == PullPolicy::Never {
            return Err(Error::ImageUnavailable(format!(
                "image {reference:?} is not on this engine, and IMAGE_PULL_POLICY=never forbids pulling it"
            )));
        }
        self.pull(reference).await
    }

    /// Pulls `reference`, sharing a pull already in flight.
    async fn pull(&self, reference: &str) -> Result<()> {
        let pull = {
            let mut pulls = self.lock();
            pulls
                .entry(reference.to_owned())
                .or_insert_with(|| {
                    pull_once(
                        self.backend.clone(),
                        self.metrics.clone(),
                        reference.to_owned(),
                        self.config.registry_auth_file.clone(),
                        Duration::from_secs(self.config.image_pull_timeout_secs),
                    )
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let outcome = pull.clone().await;
        {
            let mut pulls = self.lock();
            if pulls
                .get(reference)
                .is_some_and(|inflight| inflight.peek().is_some())
            {
                pulls.remove(reference);
            }
        }
        outcome.map_err(Error::from)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PullFuture>> {
        self.pulls.locked()
    }
}

/// One pull, logged and counted.
async fn pull_once(
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    reference: String,
    auth_file: String,
    bound: Duration,
) -> std::result::Result<(), PullFailure> {
    let started = Instant::now();
    let credentials = if auth_file.is_empty() {
        None
    } else {
        let host = registry_host(&reference);
        let text = std::fs::read_to_string(&auth_file).map_err(|err| {
            PullFailure::Refused(format!(
                "cannot pull image {reference:?}: REGISTRY_AUTH_FILE cannot be read: {err}"
            ))
        })?;
        credentials_in(&text, &host).map_err(|err| {
            PullFailure::Refused(format!(
                "cannot pull image {reference:?}: REGISTRY_AUTH_FILE is not a Docker config.json: {err}"
            ))
        })?
    };
    let store = image_store(&*backend).map_err(failure)?;
    tracing::info!(image = %reference, authenticated = credentials.is_some(), "pulling an image");
    let mut layers: HashMap<String, u64> = HashMap::new();
    let mut done = 0usize;
    let mut logged = Instant::now();
    let run = async {
        let mut stream = store.pull(&reference, credentials);
        while let Some(progress) = stream.next().await {
            let progress = progress?;
            if progress.status == "Downloading" && progress.total > 0 {
                layers.insert(progress.layer.clone(), progress.total);
            }
            if progress.status == "Pull complete" || progress.status == "Already exists" {
                done += 1;
            }
            if logged.elapsed() >= PULL_LOG_PERIOD {
                logged = Instant::now();
                tracing::info!(
                    image = %reference,
                    layers_done = done,
                    bytes = layers.values().sum::<u64>(),
                    elapsed_secs = started.elapsed().as_secs(),
                    "pull in progress"
                );
            }
        }
        Ok::<_, Error>(())
    };
    let outcome = match tokio::time::timeout(bound, run).await {
        Ok(Ok(())) => match store.image_exists(&reference).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(PullFailure::Refused(format!(
                "cannot pull image {reference:?}: the engine reported no error, yet has no such image"
            ))),
            Err(err) => Err(failure(err)),
        },
        Ok(Err(err)) => Err(failure(err)),
        Err(_) => Err(PullFailure::Refused(format!(
            "cannot pull image {reference:?}: it did not finish within {} s (IMAGE_PULL_TIMEOUT_SECS)",
            bound.as_secs()
        ))),
    };
    let bytes: u64 = layers.values().sum();
    metrics
        .image_pull_seconds
        .observe(started.elapsed().as_secs_f64());
    match &outcome {
        Ok(()) => {
            metrics.image_pull_bytes.inc_by(bytes);
            Metrics::count(&metrics.image_pulls, "ok");
            tracing::info!(image = %reference, bytes, secs = started.elapsed().as_secs_f64(), "pulled an image");
        }
        Err(failure) => {
            Metrics::count(&metrics.image_pulls, "failed");
            tracing::warn!(image = %reference, ?failure, "a pull failed");
        }
    }
    outcome
}

fn failure(err: Error) -> PullFailure {
    match err {
        Error::EngineUnavailable(reason) => PullFailure::Engine(reason),
        other => PullFailure::Refused(other.to_string()),
    }
}

/// The image `reference` names, from `backend`'s image store.
async fn image_info(backend: &dyn Backend, reference: &str) -> Result<Option<ImageInfo>> {
    image_store(backend)?.image(reference).await
}

/// What a build's task needs, owned.
struct BuildWork {
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    dir: PathBuf,
    instance: String,
    build: Arc<Build>,
    dockerfile: String,
    build_args: BTreeMap<String, String>,
}

impl BuildWork {
    async fn run(self, context: crate::backend::BodyStream) {
        let started = Instant::now();
        let record = self.build.record();
        tracing::info!(image = %record.image_id, repo = %record.repo_url, commit = %record.resolved_commit, "building an image");
        let spec = BuildSpec {
            reference: record.image.clone(),
            dockerfile: self.dockerfile.clone(),
            build_args: self.build_args.clone().into_iter().collect(),
            labels: HashMap::from([
                (LABEL_IMAGE_INSTANCE.to_owned(), self.instance.clone()),
                (LABEL_IMAGE_ID.to_owned(), record.image_id.clone()),
            ]),
            network: self.config.build_network == BuildNetwork::Default,
            memory_mb: self.config.max_memory_mb,
            pids: self.config.build_pids_limit,
        };
        let bound = Duration::from_secs(self.config.image_build_timeout_secs);
        let build = &self.build;
        let run = async {
            let mut stream = image_store(&*self.backend)?.build(context, spec);
            let mut built = false;
            while let Some(event) = stream.next().await {
                match event? {
                    BuildEvent::Log(text) => build.append(&text),
                    BuildEvent::Built(_) => built = true,
                }
            }
            Ok::<_, Error>(built)
        };
        let outcome = match tokio::time::timeout(bound, run).await {
            Ok(Ok(true)) => match image_info(&*self.backend, &record.image).await {
                Ok(Some(info)) => Ok(info.size_bytes),
                Ok(None) => Err("the engine reported success, yet has no image".to_owned()),
                Err(err) => Err(err.to_string()),
            },
            Ok(Ok(false)) => Err("the build ended without an image".to_owned()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "the build did not finish within {} s (IMAGE_BUILD_TIMEOUT_SECS)",
                bound.as_secs()
            )),
        };
        self.metrics
            .image_build_seconds
            .observe(started.elapsed().as_secs_f64());
        if outcome.is_err() {
            // A timed-out or failed build may have left its image half-tagged.
            if let Some(store) = self.backend.images() {
                let _ = store.remove_image(&record.image).await;
            }
        }
        self.finish(outcome).await;
    }

    async fn finish_pulled(self, pulled: Result<()>) {
        let outcome = match pulled {
            Ok(()) => match image_info(&*self.backend, &self.build.record().image).await {
                Ok(Some(info)) => Ok(info.size_bytes),
                Ok(None) => Err("the image is not on the engine after its pull".to_owned()),
                Err(err) => Err(err.to_string()),
            },
            Err(err) => Err(err.to_string()),
        };
        self.finish(outcome).await;
    }

    async fn finish(self, outcome: std::result::Result<u64, String>) {
        let tail = self.build.lock_log().tail(ERROR_TAIL_LINES);
        let record = self.build.update(|record| {
            record.finished_at = Some(Utc::now());
            match &outcome {
                Ok(size) => {
                    record.status = ImageStatus::Ready;
                    record.size_bytes = *size;
                }
                Err(reason) => {
                    record.status = ImageStatus::Failed;
                    record.error = Some(if tail.is_empty() {
                        reason.clone()
                    } else {
                        format!("{reason}\n--- last lines of the build's output ---\n{tail}")
                    });
                }
            }
        });
        Metrics::count(
            &self.metrics.image_builds,
            if outcome.is_ok() { "ready" } else { "failed" },
        );
        match &outcome {
            Ok(size) => tracing::info!(image = %record.image_id, size, "image ready"),
            Err(reason) => tracing::warn!(image = %record.image_id, %reason, "image build failed"),
        }
        let (dir, build) = (self.dir.clone(), self.build.clone());
        let log = build.lock_log().text.clone();
        let written = tokio::task::spawn_blocking(move || {
            persist(&dir, &build)?;
            write_atomically(
                &dir.join(format!("{}.log", record.image_id)),
                log.as_bytes(),
            )
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!("could not write an image's record or log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized_as_the_engine_does() {
        assert_eq!(normalize("node:20"), "docker.io/library/node:20");
        assert_eq!(normalize("node"), "docker.io/library/node:latest");
        assert_eq!(normalize("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            normalize("127.0.0.1:5000/team/app:1"),
            "127.0.0.1:5000/team/app:1"
        );
        assert_eq!(normalize("localhost/app"), "localhost/app:latest");
        assert_eq!(
            normalize("ghcr.io/o/app@sha256:abc"),
            "ghcr.io/o/app@sha256:abc"
        );
        assert_eq!(registry_host("node:20"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_host("index.docker.io/library/x"), "docker.io");
    }

    #[test]
    fn a_dockerfile_fetches_only_allowed_bases_and_no_urls() {
        let mut config = Config::defaults();
        config.allowed_images = crate::config::List(vec!["docker.io/library/debian:*".to_owned()]);
        let check =
            |text: &str| check_dockerfile(&config, text).map_err(|e| e.public_body().detail);
        assert!(check("FROM debian:12 AS build\nRUN true\nfrom build\nCOPY --from=build /a /b\nCOPY --from=0 /a /b\nADD x.tar /\n").is_ok());
        assert!(check("FROM scratch\n").is_ok());
        for bad in [
            "FROM evil/base\n",
            "# escape=`\nFROM debian:12\nfrOm `\n  evil/base\n",
            "FROM \\\n  --platform=linux/amd64 \\\n  evil/base AS x\n",
            "ARG B=debian:12\nFROM $B\n",
            "FROM debian:12\nCOPY --from=evil/base /x /x\n",
            "FROM debian:12\nADD http://127.0.0.1:9/secret /s\n",
            "FROM debian:12\nadd --chown=1 \\\n HTTPS://x.example/a /a\n",
            "FROM debian:12\nADD [\"git@github.com:a/b.git\", \"/b\"]\n",
            "FROM 127.0.0.1:5000/x\n",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert!(
            check("FROM debian:12\nADD http://x/y /y\n")
                .unwrap_err()
                .contains("BUILD_NETWORK")
        );
    }

    #[test]
    fn registries_on_host_only_addresses_need_to_be_named() {
        let none: Vec<String> = Vec::new();
        for reference in [
            "127.0.0.1:5000/x:1",
            "localhost:5000/x",
            "localhost/x",
            "LOCALHOST.:5000/x",
            "[::1]:5000/x",
            "[fe80::1]/x",
            "[::ffff:10.0.0.1]:80/x",
            "10.1.2.3/x",
            "192.168.0.1:443/x",
            "172.16.0.1/x",
            "169.254.169.254/latest",
            "100.64.0.1/x",
            "0.0.0.0:5000/x",
            "127.1:5000/x",
            "2130706433:5000/x",
            "0x7f000001:5000/x",
            "0177.0.0.1/x",
        ] {
            assert!(!allowed(&none, reference), "{reference}");
            assert!(!allowed(&["*".to_owned()], reference), "{reference}");
            assert!(!allowed(&["*/x*".to_owned()], reference), "{reference}");
        }
        let named = vec!["127.0.0.1:5000/*".to_owned()];
        assert!(allowed(&named, "127.0.0.1:5000/x:1"));
        assert!(!allowed(&named, "127.0.0.1:5001/x:1"));
        assert!(allowed(&["127.0.0.1:*/*".to_owned()], "127.0.0.1:5000/x"));
        assert!(!allowed(&["127.*/*".to_owned()], "127.0.0.1:5000/x"));
        assert!(!allowed(&["127.0.0.1/*".to_owned()], "127.0.0.2/x"));
        for public in [
            "node:20",
            "ghcr.io/a/b:1",
            "8.8.8.8:5000/x",
            "cafe.be/x",
            "1.2.3.4/x",
        ] {
            assert!(allowed(&none, public), "{public}");
        }
        assert_eq!(
            inet_aton("127.1"),
            Some(std::net::Ipv4Addr::new(127, 0, 0, 1))
        );
        assert_eq!(inet_aton("256.1.1.1"), None);
    }

    #[test]
    fn allowed_images_are_globs_over_either_form() {
        let patterns = vec![
            "docker.io/library/*".to_owned(),
            "127.0.0.1:*/ok:*".to_owned(),
        ];
        assert!(allowed(&patterns, "node:20"));
        assert!(allowed(&patterns, "docker.io/library/python:3.12"));
        assert!(!allowed(&patterns, "evil/node:20"));
        assert!(allowed(&patterns, "127.0.0.1:5000/ok:1"));
        assert!(!allowed(&patterns, "127.0.0.1:5000/other:1"));
        assert!(allowed(&[], "anything"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn credentials_are_found_by_registry_in_either_form() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let text = format!(
            r#"{{"auths": {{"127.0.0.1:5001": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}}}}}}"#
        );
        let found = credentials_in(&text, "127.0.0.1:5001").unwrap().unwrap();
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("alice", "s3cret")
        );
        let hub = credentials_in(&text, "docker.io").unwrap().unwrap();
        assert_eq!(hub.username, "bob");
        assert!(credentials_in(&text, "ghcr.io").unwrap().is_none());
        assert!(credentials_in("not json", "x").is_err());
        // The password never shows in debug output.
        assert!(!format!("{found:?}").contains("s3cret"));
    }

    #[test]
    fn a_devcontainer_with_comments_gives_its_build_env_and_command() {
        let text = r#"{
            // a comment
            "name": "x", /* another */
            "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"A": "1"},},
            "containerEnv": {"FROM_DEVCONTAINER": "yes"},
            "postCreateCommand": ["echo", "it's", "done"],
        }"#;
        let recipe = devcontainer_recipe(".devcontainer/devcontainer.json", text).unwrap();
        assert_eq!(recipe.context, "");
        assert_eq!(recipe.dockerfile, ".devcontainer/Dockerfile");
        assert_eq!(recipe.build_args["A"], "1");
        assert_eq!(recipe.container_env["FROM_DEVCONTAINER"], "yes");
        assert_eq!(
            recipe.post_create_command.as_deref(),
            Some(r"echo 'it'\''s' done")
        );
        let inside = devcontainer_recipe(
            ".devcontainer/devcontainer.json",
            r#"{"build": {"dockerfile": "Dockerfile"}, "postCreateCommand": {"a": "x", "b": "y"}}"#,
        )
        .unwrap();
        assert_eq!(
            (inside.context.as_str(), inside.dockerfile.as_str()),
            (".devcontainer", "Dockerfile")
        );
        assert_eq!(inside.post_create_command.as_deref(), Some("x && y"));
        let image = devcontainer_recipe(".devcontainer.json", r#"{"image": "node:20"}"#).unwrap();
        assert_eq!(image.image.as_deref(), Some("node:20"));
    }

    #[test]
    fn devcontainer_features_and_escapes_are_refused_by_name() {
        let err = devcontainer_recipe(
            ".devcontainer.json",
            r#"{"image": "x", "features": {"ghcr.io/devcontainers/features/node:1": {}}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Invalid(ref m) if m.contains("features")),
            "{err}"
        );
        // An empty features object asks for nothing.
        assert!(
            devcontainer_recipe(".devcontainer.json", r#"{"image": "x", "features": {}}"#).is_ok()
        );
        let err = devcontainer_recipe(
            ".devcontainer/devcontainer.json",
            r#"{"build": {"dockerfile": "../../Dockerfile"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("inside the repository"), "{err}");
        let err = devcontainer_recipe(
            ".devcontainer/devcontainer.json",
            r#"{"build": {"dockerfile": "../Dockerfile", "context": "."}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("inside the build context"),
            "{err}"
        );
        assert!(devcontainer_recipe(".devcontainer.json", "{").is_err());
        assert!(devcontainer_recipe(".devcontainer.json", "{}").is_err());
    }

    #[test]
    fn repository_paths_stay_inside() {
        assert_eq!(repo_path("a/./b/../c").as_deref(), Some("a/c"));
        assert_eq!(repo_path(".").as_deref(), Some(""));
        assert_eq!(repo_path("../x"), None);
        assert_eq!(repo_path("/etc/passwd"), None);
        assert_eq!(
            relative_to("a/b/Dockerfile", "a"),
            Some("b/Dockerfile".to_owned())
        );
        assert_eq!(relative_to("ab/Dockerfile", "a"), None);
    }

    #[test]
    fn the_log_keeps_its_newest_bytes_and_absolute_offsets() {
        let mut log = BuildLog::default();
        log.push("hello\n");
        let (text, next) = log.since(0);
        assert_eq!((text.as_str(), next), ("hello\n", 6));
        log.push(&"x".repeat(LOG_BYTES));
        assert_eq!(log.text.len(), LOG_BYTES);
        let (text, next) = log.since(6);
        assert_eq!(next, 6 + LOG_BYTES);
        assert_eq!(text.len(), LOG_BYTES);
        assert_eq!(log.since(next).0, "");
    }
}
