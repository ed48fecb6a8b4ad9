//! Sandbox lifecycle: create, status, destroy, expiry and reconciliation with the
//! backend, and the connection to each sandbox's agent.
//!
//! A create runs the git work and the container's creation (with its agent) at the
//! same time (each takes a few hundred milliseconds and neither needs the other), then
//! streams the checkout in through the agent. From its first await until its record
//! is written, a sandbox being created is owned by a guard that removes its container
//! if the create fails or its request is dropped, so a failed or abandoned create
//! leaves nothing behind.
//!
//! Every operation on a sandbox goes through here by sandbox id: handlers get the
//! sandbox's [`AgentClient`] from [`Sandboxes::agent`], which re-attaches when the
//! connection was lost (a restarted server or engine), and never see the engine.

mod commands;
mod sessions;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agent::AgentClient;
use crate::backend::{
    ANNOTATION_CREATED_AT, ANNOTATION_EXPIRES_AT, ANNOTATION_REPO_URL, Backend, ContainerInfo,
    ContainerState, DiskLimits, LABEL_AGENT_PROTOCOL, LABEL_ID, LABEL_POOL, LABEL_PREFIX, Limits,
    Network, SandboxSpec, WORKSPACE, image_store,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec;
use crate::git::{Checkout, GitCache, RepoUrl, Tree};
use crate::id::{EngineId, SandboxId};
use crate::image::Images;
use crate::metrics::Metrics;
use crate::policy::CommandPolicy;
use crate::pool::{Member, Pool};
use crate::reaper::Expiries;
use crate::registry::{Registry, Resources, Sandbox};
use crate::snapshot::{Snapshot, Snapshots};
use crate::sync::Locked as _;

/// A sandbox's status, as the seed names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Usable.
    Running,
    /// Its container stopped on its own.
    Completed,
    /// Its container is in an unusable state.
    Failed,
    /// Expired.
    Timeout,
    /// Destroyed.
    Destroyed,
}

/// A sandbox's status and, when it failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The status.
    pub status: Status,
    /// Why, for `failed`.
    pub reason: Option<String>,
}

impl Condition {
    /// A status with no reason to give.
    pub fn plain(status: Status) -> Self {
        Self {
            status,
            reason: None,
        }
    }

    /// What a container's state means for its sandbox.
    pub fn of(info: &ContainerInfo) -> Self {
        match info.state {
            ContainerState::Created => Self::plain(Status::Creating),
            ContainerState::Running => Self::plain(Status::Running),
            ContainerState::Removing => Self::plain(Status::Destroyed),
            ContainerState::Exited if info.oom_killed => Self {
                status: Status::Failed,
                reason: Some("out of memory: the sandbox reached its memory limit".to_owned()),
            },
            ContainerState::Exited => match info.exit_code {
                Some(0) => Self::plain(Status::Completed),
                Some(code) if code > 128 => Self {
                    status: Status::Failed,
                    reason: Some(format!(
                        "the sandbox's agent was killed (signal {}); the sandbox stopped",
                        code - 128
                    )),
                },
                code => Self {
                    status: Status::Failed,
                    reason: Some(format!(
                        "the sandbox's agent exited (code {}); the sandbox stopped",
                        code.map_or_else(|| "unknown".to_owned(), |code| code.to_string())
                    )),
                },
            },
        }
    }
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    /// Repository (`None`: the sandbox starts from `snapshot`).
    pub repo: Option<RepoUrl>,
    /// Snapshot to start from instead of a checkout (its image is `image`).
    pub snapshot: Option<Arc<Snapshot>>,
    /// Branch to check out (`None`: the remote's default).
    pub branch: Option<String>,
    /// Commit to check out (lowercase hex).
    pub commit: Option<String>,
    /// Commit exactly as the client wrote it (echoed back, as the seed does).
    pub commit_as_requested: Option<String>,
    /// Commits of history the checkout's `.git` holds (`None`: all).
    pub depth: Option<u32>,
    /// Lifetime.
    pub max_runtime: Option<Duration>,
    /// Environment for the container and every command.
    pub env: BTreeMap<String, String>,
    /// Command to run once after the checkout.
    pub initial_command: Option<String>,
    /// Image.
    pub image: String,
    /// Limits.
    pub resources: Resources,
    /// Network mode.
    pub network: Network,
    /// Hosts reachable through the egress proxy (with `network` none).
    pub egress: Option<Vec<String>>,
    /// The job whose entry this sandbox runs.
    pub job_id: Option<String>,
    /// The built image (`POST /images`) it runs on.
    pub image_id: Option<String>,
}

/// How long a new or re-attached agent has to answer its hello (gVisor starts slowly).
const AGENT_HELLO_BOUND: Duration = Duration::from_secs(30);
/// Tries (two seconds apart) at removing a failed create's container while the
/// engine is away.
const REMOVE_RETRIES: usize = 60;
/// How long a claimed pool member's agent has to answer a ping.
const CLAIM_PING_BOUND: Duration = Duration::from_secs(2);
/// Agents connected at once while adopting sandboxes after a start.
const ADOPT_CONCURRENCY: usize = 8;

/// What the server holds for one sandbox while it runs, besides its record (the
/// registry's): made on first use, dropped in one call by [`Sandboxes::forget`].
#[derive(Default)]
struct Live {
    /// The agent connection, made on first use and again after a loss.
    agent: tokio::sync::Mutex<Option<Arc<AgentClient>>>,
    /// One lock per session, and one (`""`) for the session creates: a session's
    /// commands run one at a time, in order.
    sessions: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Owns every sandbox.
pub struct Sandboxes {
    config: Arc<Config>,
    backend: Arc<dyn Backend>,
    git: GitCache,
    registry: Registry,
    expiries: Expiries,
    metrics: Arc<Metrics>,
    reconciled: AtomicBool,
    /// Each sandbox's [`Live`] state.
    live: std::sync::Mutex<HashMap<SandboxId, Arc<Live>>>,
    policy: CommandPolicy,
    disk_limits: tokio::sync::OnceCell<DiskLimits>,
    /// Held while a deadline is changed and while an expiry checks its deadline.
    lifetimes: tokio::sync::Mutex<()>,
    pool: Pool,
    snapshots: Snapshots,
    images: Images,
    /// Numbers pool members' names.
    members_made: std::sync::atomic::AtomicU64,
    /// Containers (by engine id) whose agent broke the protocol, with the reason: they
    /// read `failed` and are not connected to again.
    broken: Arc<std::sync::Mutex<HashMap<EngineId, String>>>,
}

impl Sandboxes {
    /// Opens the registry and the git cache (no engine calls yet: see [`Self::reconcile`]).
    pub fn open(
        config: Arc<Config>,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let registry = Registry::open(&config.data_dir)?;
        let git = GitCache::open(
            &config.cache_dir,
            Duration::from_secs(config.git_timeout_secs),
            config.tree_cache_mb.saturating_mul(1024 * 1024),
            config.cache_mb.saturating_mul(1024 * 1024),
            crate::git::Credentials::load(&config.git_credentials_file)?,
        )?;
        let expiries = Expiries::default();
        for sandbox in registry.all() {
            if let Some(at) = sandbox.expires_at {
                expiries.schedule(&sandbox.id, at);
            }
        }
        metrics.sandboxes_active.set(registry.len() as i64);
        let policy = CommandPolicy::new(config.command_allowlist.items());
        let mut pooled = vec![config.docker_base_image.clone()];
        pooled.extend(config.pool_images.items().iter().cloned());
        let defaults = Limits {
            cpus: config.default_cpus,
            memory_mb: config.default_memory_mb,
            pids: config.default_pids,
        };
        let pool = Pool::new(config.pool_size, &pooled, defaults, metrics.clone());
        let snapshots = Snapshots::open(&config.data_dir)?;
        let images = Images::open(
            config.clone(),
            backend.clone(),
            metrics.clone(),
            registry.instance(),
        )?;
        Ok(Self {
            pool,
            snapshots,
            images,
            members_made: std::sync::atomic::AtomicU64::new(0),
            broken: Arc::default(),
            config,
            backend,
            git,
            registry,
            expiries,
            metrics,
            reconciled: AtomicBool::new(false),
            live: std::sync::Mutex::new(HashMap::new()),
            policy,
            disk_limits: tokio::sync::OnceCell::new(),
            lifetimes: tokio::sync::Mutex::new(()),
        })
    }

    /// The backend (for health checks).
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The images built from repositories, and the pulls.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Starts (or finds) the build of an image from a repository's recipe.
    pub async fn build_image(
        &self,
        request: crate::image::BuildRequest,
    ) -> Result<crate::image::Image> {
        self.images.build(&self.git, request).await
    }

    /// Deletes a built image; 409 while a sandbox runs on it.
    pub async fn delete_image(&self, image_id: &str) -> Result<()> {
        let in_use = self
            .registry
            .all()
            .iter()
            .any(|sandbox| sandbox.image_id.as_deref() == Some(image_id));
        self.images.delete(image_id, in_use).await
    }

    /// The snapshots.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Snapshots the sandbox `id` (409 unless running; 429 past `MAX_SNAPSHOTS`). A
    /// failure leaves neither image nor record.
    pub async fn snapshot(&self, id: &SandboxId, name: Option<String>) -> Result<Arc<Snapshot>> {
        let store = image_store(&*self.backend)?;
        let sandbox = self.get(id)?;
        let condition = self.status(&sandbox).await?;
        if condition.status != Status::Running {
            return Err(Error::NotRunning(format!("container {id} is not running")));
        }
        let started = Instant::now();
        let pending = self.snapshots.reserve(self.config.max_snapshots)?;
        let snapshot_id = pending.id.clone();
        let reference = format!(
            "{}{}:{snapshot_id}",
            crate::image::SNAPSHOT_PREFIX,
            self.registry.instance()
        );
        let name = name.unwrap_or_else(|| snapshot_id.clone());
        let labels = HashMap::from([
            (
                crate::backend::LABEL_SNAPSHOT_INSTANCE.to_owned(),
                self.registry.instance().to_owned(),
            ),
            (
                crate::backend::LABEL_SNAPSHOT_ID.to_owned(),
                snapshot_id.clone(),
            ),
            (format!("{LABEL_PREFIX}snapshot.source"), id.to_string()),
            (format!("{LABEL_PREFIX}snapshot.name"), name.clone()),
            (
                format!("{LABEL_PREFIX}snapshot.commit"),
                sandbox.resolved_commit.clone(),
            ),
        ]);
        let image = store
            .snapshot(&sandbox.engine_id, &reference, labels)
            .await?;
        let record = Snapshot {
            snapshot_id: snapshot_id.clone(),
            name,
            source_container_id: id.to_string(),
            repo_url: sandbox.repo_url.clone(),
            branch: sandbox.branch.clone(),
            resolved_commit: sandbox.resolved_commit.clone(),
            image: reference.clone(),
            size_bytes: image.size_bytes,
            created_at: Utc::now(),
            image_id: image.id,
        };
        match self.snapshots.insert(record, pending).await {
            Ok(snapshot) => {
                self.metrics
                    .snapshot_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(sandbox = %id, snapshot = %snapshot_id, size_bytes = snapshot.size_bytes, "snapshot made");
                Ok(snapshot)
            }
            Err(err) => {
                let _ = store.remove_image(&reference).await;
                Err(err)
            }
        }
    }

    /// Deletes a snapshot and its image; 409 while a sandbox runs on it.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()> {
        let store = image_store(&*self.backend)?;
        let snapshot = self.snapshots.get(snapshot_id)?;
        if let Some(user) = self
            .registry
            .all()
            .into_iter()
            .find(|sandbox| sandbox.image == snapshot.image)
        {
            return Err(Error::Conflict(format!(
                "sandbox {} runs on snapshot {snapshot_id}: destroy it first",
                user.id
            )));
        }
        store.remove_image(&snapshot.image).await?;
        self.snapshots.remove(snapshot_id);
        tracing::info!(snapshot = %snapshot_id, "snapshot deleted");
        Ok(())
    }

    /// Snapshot images and records into agreement (part of [`Self::reconcile`]).
    async fn reconcile_snapshots(&self) -> Result<()> {
        let Some(store) = self.backend.images() else {
            return Ok(());
        };
        let images = store
            .list_images(&format!(
                "{}={}",
                crate::backend::LABEL_SNAPSHOT_INSTANCE,
                self.registry.instance()
            ))
            .await?;
        let mut seen = std::collections::HashSet::new();
        for image in images {
            let id = image
                .labels
                .get(crate::backend::LABEL_SNAPSHOT_ID)
                .cloned()
                .unwrap_or_default();
            match self.snapshots.get(&id) {
                Ok(_) => {
                    seen.insert(id);
                }
                Err(_) if self.snapshots.is_pending(&id) => {}
                Err(_) => {
                    tracing::info!(image = %image.id, "removing a snapshot image without a record (an interrupted snapshot)");
                    if let Err(err) = store.remove_image(&image.id).await {
                        tracing::warn!(image = %image.id, %err, "could not remove a snapshot image");
                    }
                }
            }
        }
        for snapshot in self.snapshots.all() {
            if !seen.contains(&snapshot.snapshot_id) {
                tracing::info!(snapshot = %snapshot.snapshot_id, "forgetting a snapshot whose image is gone");
                self.snapshots.remove(&snapshot.snapshot_id);
            }
        }
        Ok(())
    }

    /// This server's instance id (see [`crate::backend::LABEL_INSTANCE`]).
    pub fn instance(&self) -> &str {
        self.registry.instance()
    }

    /// The lock that orders the commands of session `session` of sandbox `id` (with
    /// `session` empty: the sandbox's session creates). Tokio's mutex is fair: turns
    /// come in order of arrival.
    fn session_lock(&self, id: &SandboxId, session: &str) -> Arc<tokio::sync::Mutex<()>> {
        let live = self.live(id);
        let mut locks = live.sessions.locked();
        locks.entry(session.to_owned()).or_default().clone()
    }

    /// Drops the lock of a deleted session.
    fn forget_session(&self, id: &SandboxId, session: &str) {
        self.live(id).sessions.locked().remove(session);
    }

    /// The git cache (mirrors, checkouts, credentials).
    pub fn git(&self) -> &GitCache {
        &self.git
    }

    /// The warm pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The disk limit of pool members: the default where the engine enforces one.
    pub async fn pool_disk_mb(&self) -> Result<Option<u64>> {
        let limits = self.disk_limits().await?;
        Ok(limits.enforced.then_some(self.config.default_disk_mb))
    }

    fn default_limits(&self) -> Limits {
        Limits {
            cpus: self.config.default_cpus,
            memory_mb: self.config.default_memory_mb,
            pids: self.config.default_pids,
        }
    }

    /// Makes a pool member of `image`: a started container with its agent answering,
    /// with the default limits and no sandbox's identity (its name, host name and
    /// labels are its own). A failure leaves nothing.
    pub async fn make_pool_member(&self, image: &str) -> Result<Member> {
        let number = self.members_made.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "pool-{}",
            &hostname_for(&format!(
                "{}/{number}/{}",
                self.registry.instance(),
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ))[3..]
        );
        let name = format!("{id}.{}", self.registry.instance());
        let limits = self.default_limits();
        let disk_mb = self.pool_disk_mb().await?;
        let spec = SandboxSpec {
            id: SandboxId::new(id),
            hostname: hostname_for(&name),
            name: name.clone(),
            instance: self.registry.instance().to_owned(),
            image: image.to_owned(),
            cpus: limits.cpus,
            memory_mb: limits.memory_mb,
            pids: limits.pids,
            network: Network::None,
            labels: HashMap::from([(LABEL_POOL.to_owned(), image.to_owned())]),
            annotations: HashMap::new(),
            runtime: self.runtime(),
            disk_mb,
        };
        let mut guard = ContainerGuard::new(self.backend.clone(), name);
        let made = async {
            // A pooled image the engine lacks is pulled first (the pool warms after).
            self.images.ensure(image, false).await?;
            let engine_id = self.backend.create(&spec).await?;
            guard.engine_id = Some(engine_id.clone());
            let agent = self.connect_agent(&engine_id).await?;
            Ok::<_, Error>(Member {
                engine_id,
                agent,
                limits,
            })
        }
        .await;
        match made {
            Ok(member) => {
                guard.keep();
                Ok(member)
            }
            Err(err) => {
                guard.remove().await;
                Err(err)
            }
        }
    }

    /// Removes a pool member (dead, or left when the server stops), trying up to
    /// `tries` times two seconds apart (a member found dead while the engine restarts
    /// is removed once it is back).
    pub async fn remove_pool_member(&self, engine_id: &EngineId, tries: usize) {
        for attempt in 1..=tries.max(1) {
            match self.backend.remove(engine_id).await {
                Ok(()) => return,
                Err(err) if attempt < tries => {
                    tracing::debug!(%engine_id, %err, attempt, "could not remove a pool member; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(err) => {
                    tracing::warn!(%engine_id, %err, "could not remove a pool member; the next start removes it");
                }
            }
        }
    }

    fn runtime(&self) -> Option<String> {
        (!self.config.docker_runtime.is_empty()).then(|| self.config.docker_runtime.clone())
    }

    /// The command policy (`COMMAND_ALLOWLIST`).
    pub fn policy(&self) -> &CommandPolicy {
        &self.policy
    }

    /// Checks a command and the names of the variables it gets against the policy
    /// (403 when refused), before anything runs.
    pub fn allow<'a>(
        &self,
        command: &str,
        env_names: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        self.policy.check(command)?;
        self.policy.check_environment(env_names)?;
        Ok(())
    }

    /// Whether the engine can cap what a sandbox writes (asked once, then kept).
    pub async fn disk_limits(&self) -> Result<DiskLimits> {
        self.disk_limits
            .get_or_try_init(|| async {
                let limits = self.backend.disk_limits().await?;
                if let Some(reason) = &limits.reason {
                    tracing::warn!(%reason, "disk limits are not enforced: a sandbox can fill the engine's disk");
                }
                Ok(limits)
            })
            .await
            .cloned()
    }

    /// Settles a create's disk limit: the default where the engine enforces one, and
    /// a clear 400 for an explicit `disk_mb` where it cannot (rather than pretending).
    ///
    /// Also admission: a sandbox asking more memory than the host has, or more disk
    /// than the engine's store holds, or whose memory limit would take the sum of all
    /// limits past `MEMORY_OVERCOMMIT` times the host's memory, is refused (409).
    pub async fn apply_disk_limit(&self, resources: &mut Resources) -> Result<()> {
        let limits = self.disk_limits().await?;
        const MIB: u64 = 1024 * 1024;
        if let Some(memory) = limits.memory_bytes {
            let asked = resources.memory_mb.saturating_mul(MIB);
            if asked > memory {
                return Err(Error::NoCapacity(format!(
                    "resources.memory_mb ({} MiB) is more than this host has ({} MiB)",
                    resources.memory_mb,
                    memory / MIB
                )));
            }
            let held: u64 = self
                .registry
                .all()
                .iter()
                .map(|sandbox| sandbox.resources.memory_mb.saturating_mul(MIB))
                .sum();
            let budget = (memory as f64 * self.config.memory_overcommit) as u64;
            if held.saturating_add(asked) > budget {
                return Err(Error::NoCapacity(format!(
                    "the sandboxes here already hold {} MiB of memory limits; {} MiB more would pass {} MiB (the host's {} MiB times MEMORY_OVERCOMMIT {}); destroy a sandbox or ask for less",
                    held / MIB,
                    resources.memory_mb,
                    budget / MIB,
                    memory / MIB,
                    self.config.memory_overcommit
                )));
            }
        }
        if let (Some(store), Some(disk_mb)) = (limits.store_bytes, resources.disk_mb)
            && disk_mb.saturating_mul(MIB) > store
        {
            return Err(Error::NoCapacity(format!(
                "resources.disk_mb ({disk_mb} MiB) is more than the engine's store holds ({} MiB)",
                store / MIB
            )));
        }
        match (limits.enforced, resources.disk_mb) {
            (true, None) => resources.disk_mb = Some(self.config.default_disk_mb),
            (true, Some(_)) | (false, None) => {}
            (false, Some(_)) => {
                return Err(Error::invalid(format!(
                    "resources.disk_mb cannot be enforced by this engine: {}",
                    limits.reason.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// The sandboxes recorded for job `job_id`.
    pub fn of_job(&self, job_id: &str) -> Vec<Arc<Sandbox>> {
        self.registry
            .all()
            .into_iter()
            .filter(|sandbox| sandbox.job_id.as_deref() == Some(job_id))
            .collect()
    }

    /// Number of live sandboxes.
    pub fn count(&self) -> usize {
        self.registry.len()
    }

    /// A sandbox by id, or 404.
    pub fn get(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        self.registry
            .get(id)
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))
    }

    /// The [`Live`] state of sandbox `id`.
    fn live(&self, id: &SandboxId) -> Arc<Live> {
        let mut live = self.live.locked();
        live.entry(id.to_owned()).or_default().clone()
    }

    /// The connection to the agent of the sandbox `id` (404 when unknown): the live
    /// one, or a new one when it was lost. A sandbox whose agent cannot be reached
    /// answers 409 with the reason.
    pub async fn agent(&self, id: &SandboxId) -> Result<Arc<AgentClient>> {
        let sandbox = self.get(id)?;
        let live = self.live(id);
        let mut connected = live.agent.lock().await;
        if let Some(client) = connected.as_ref()
            && !client.is_closed()
        {
            return Ok(client.clone());
        }
        *connected = None;
        // A container that has stopped cannot answer a hello: say so now rather than
        // at the hello's bound (an attach to it would wait for a start).
        if let Ok(Some(info)) = self.backend.inspect(&sandbox.engine_id).await
            && info.state != ContainerState::Running
        {
            let not_running = Error::NotRunning("not running".to_owned());
            return Err(self.unreachable(&sandbox, not_running).await);
        }
        match self.connect_agent(&sandbox.engine_id).await {
            Ok(client) => {
                self.serve_egress(
                    &sandbox.id,
                    sandbox.egress.as_deref(),
                    &sandbox.egress_log,
                    &client,
                );
                *connected = Some(client.clone());
                Ok(client)
            }
            Err(err) => Err(self.unreachable(&sandbox, err).await),
        }
    }

    /// Serves the egress proxy of a sandbox with an allow-list over `agent` (for as long
    /// as that connection lives). Entries the operator's `EGRESS_ALLOW` no longer
    /// covers (it changed since the create) are dropped.
    fn serve_egress(
        &self,
        id: &SandboxId,
        allow: Option<&[String]>,
        log: &crate::egress::EgressLog,
        agent: &Arc<AgentClient>,
    ) {
        let Some(allow) = allow else {
            return;
        };
        let operator = self.config.egress_allow.entries();
        let entries = allow
            .iter()
            .filter_map(|entry| crate::egress::Entry::parse(entry).ok())
            .filter(|entry| operator.iter().any(|own| own.covers(entry)))
            .collect();
        let proxy = crate::egress::SandboxEgress::new(
            id.to_string(),
            entries,
            log.clone(),
            self.config.egress_hosts.0.clone(),
            self.metrics.clone(),
        );
        agent.attach(crate::egress::serve(agent, Arc::new(proxy)));
    }

    async fn connect_agent(&self, engine_id: &EngineId) -> Result<Arc<AgentClient>> {
        if let Some(reason) = self.broken_reason(engine_id) {
            return Err(Error::NotRunning(format!(
                "the sandbox's agent broke the protocol ({reason}); the sandbox is marked failed"
            )));
        }
        let transport = self.backend.attach(engine_id).await?;
        let broken = self.broken.clone();
        let key = engine_id.to_owned();
        let on_violation = Box::new(move |reason: String| {
            broken.locked().insert(key.clone(), reason);
        });
        Ok(Arc::new(
            AgentClient::connect_with(
                transport,
                AGENT_HELLO_BOUND,
                crate::agent::Limits::for_process_output(self.config.process_output_bytes),
                on_violation,
            )
            .await?,
        ))
    }

    /// Refuses an image that declares `VOLUME`s: the engine would put them outside the
    /// container's writable layer, where `disk_mb` does not reach (422).
    async fn refuse_volumes(&self, image: &str) -> Result<()> {
        let Some(store) = self.backend.images() else {
            // The engine resolves the image itself, and keeps to its own volumes.
            return Ok(());
        };
        if let Some(info) = store.image(image).await?
            && !info.volumes.is_empty()
        {
            let mut volumes = info.volumes;
            volumes.sort();
            return Err(Error::ImageUnavailable(format!(
                "image {image} declares volumes ({}): what a sandbox writes there would escape its disk limit, so repobox does not run such images; rebuild it without VOLUME",
                volumes.join(", ")
            )));
        }
        Ok(())
    }

    /// Why the agent of the container `engine_id` was cut off, if it broke the protocol.
    fn broken_reason(&self, engine_id: &EngineId) -> Option<String> {
        self.broken.locked().get(engine_id).cloned()
    }

    /// Puts a failure to reach a sandbox's agent in the client's terms.
    async fn unreachable(&self, sandbox: &Sandbox, err: Error) -> Error {
        match self.backend.inspect(&sandbox.engine_id).await {
            Ok(Some(info)) if info.state == ContainerState::Running => match err {
                Error::EngineUnavailable(_) => err,
                other => Error::NotRunning(format!(
                    "the agent of container {} does not answer: {other}",
                    sandbox.id
                )),
            },
            Ok(Some(info)) => {
                let condition = Condition::of(&info);
                Error::NotRunning(match condition.reason {
                    Some(reason) => format!("container {} is not running: {reason}", sandbox.id),
                    None => format!("container {} is not running", sandbox.id),
                })
            }
            Ok(None) => {
                self.forget(&sandbox.id, "vanished");
                Error::ContainerNotFound(sandbox.id.to_string())
            }
            Err(other) => other,
        }
    }

    /// Creates a sandbox; returns once it is usable (or has failed, leaving nothing).
    pub async fn create(&self, request: NewSandbox) -> Result<Arc<Sandbox>> {
        let result = self.create_inner(request).await;
        Metrics::count(
            &self.metrics.creates,
            if result.is_ok() { "ok" } else { "failed" },
        );
        result
    }

    async fn create_inner(&self, request: NewSandbox) -> Result<Arc<Sandbox>> {
        let mut slot = self.registry.reserve(self.config.max_containers)?;
        let created_at = Utc::now();
        let id = slot.assign_id(created_at)?;
        let expires_at = request.max_runtime.map(|lifetime| {
            created_at + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX)
        });
        let spec = self.spec(&id, &request, created_at, expires_at);
        // Armed before the first await: a create dropped while the engine makes its
        // container still gets that container removed (by its unique name), and one
        // dropped while it claims a pool member gets the member removed.
        let mut guard = ContainerGuard::new(self.backend.clone(), spec.name.clone());
        let claimed = self.pool.claim(
            &request.image,
            request.network,
            request.resources.disk_mb,
            spec.limits(),
        );
        if let Some(member) = &claimed {
            guard.engine_id = Some(member.engine_id.clone());
        }

        let clone_started = Instant::now();
        // `join!` polls in order: the container's request goes out first, before the
        // git processes are spawned (spawning holds the thread for a moment).
        let (agent, checkout) = tokio::join!(
            async {
                if let Some(member) = claimed {
                    let started = Instant::now();
                    // Handed out only once its agent answers again (its connection
                    // may have closed a moment ago).
                    let (assigned, answered) = tokio::join!(
                        self.backend.assign(&member.engine_id, &spec, member.limits),
                        member.agent.ping(CLAIM_PING_BOUND)
                    );
                    if assigned.is_err() && spec.limits() != member.limits {
                        self.pool.limits_are_fixed();
                    }
                    match assigned.and(answered) {
                        Ok(()) => {
                            self.metrics
                                .pool_claim_seconds
                                .observe(started.elapsed().as_secs_f64());
                            return Ok((member.engine_id, member.agent));
                        }
                        Err(err) => {
                            tracing::warn!(sandbox = %id, %err, "could not claim a pool member; making a container instead");
                            self.remove_pool_member(&member.engine_id, 1).await;
                            guard.engine_id = None;
                        }
                    }
                }
                let named = request.image != self.config.docker_base_image;
                self.images.ensure(&spec.image, named).await?;
                if named {
                    self.refuse_volumes(&spec.image).await?;
                }
                let engine_id = self.backend.create(&spec).await?;
                guard.engine_id = Some(engine_id.clone());
                let agent = self.connect_agent(&engine_id).await?;
                Ok::<_, Error>((engine_id, agent))
            },
            async {
                let Some(repo) = &request.repo else {
                    return Ok(None);
                };
                let checkout = self
                    .git
                    .checkout(
                        repo,
                        request.branch.as_deref(),
                        request.commit.as_deref(),
                        request.depth,
                        id.as_str(),
                        request
                            .resources
                            .disk_mb
                            .unwrap_or(self.config.default_disk_mb)
                            .saturating_mul(1024 * 1024),
                    )
                    .await;
                self.metrics
                    .clone_seconds
                    .observe(clone_started.elapsed().as_secs_f64());
                checkout.map(Some)
            }
        );
        // The container is the guard's until the record is written: on any error the
        // container is removed (awaited), and the checkout's temporary tree goes with it.
        let egress_log = crate::egress::EgressLog::default();
        let provisioned = async {
            let (engine_id, agent) = agent?;
            // Before anything runs in it (the initial command may install packages).
            self.serve_egress(&id, request.egress.as_deref(), &egress_log, &agent);
            let (repo_url, branch, resolved_commit) = match (checkout?, &request.snapshot) {
                (Some(checkout), _) => {
                    Metrics::count(
                        &self.metrics.cache,
                        if checkout.cache_hit { "hit" } else { "miss" },
                    );
                    let Checkout {
                        tree,
                        branch,
                        commit: resolved_commit,
                        ..
                    } = checkout;
                    let reused = matches!(tree, Tree::Cached(_));
                    Metrics::count(
                        &self.metrics.cache,
                        if reused { "tree_hit" } else { "tree_miss" },
                    );
                    let tar = self.git.tar(tree, WORKSPACE.trim_start_matches('/'));
                    agent.archive_in("/", tar).await?;
                    let repo = request.repo.as_ref().map(RepoUrl::redacted);
                    (repo.unwrap_or_default().to_owned(), branch, resolved_commit)
                }
                // The snapshot's image holds the whole filesystem, `/workspace` too.
                (None, Some(snapshot)) => (
                    snapshot.repo_url.clone(),
                    snapshot.branch.clone(),
                    snapshot.resolved_commit.clone(),
                ),
                (None, None) => {
                    return Err(Error::internal(
                        "a create with neither repository nor snapshot",
                    ));
                }
            };

            let initial_command_result = match &request.initial_command {
                Some(command) => {
                    let command = exec::Command {
                        command: command.clone(),
                        working_dir: WORKSPACE.to_owned(),
                        timeout: Duration::from_secs(self.config.max_exec_timeout_secs),
                        env: request.env.clone().into_iter().collect(),
                        stdin: None,
                    };
                    let result = exec::run(&agent, command, self.config.max_output_bytes).await?;
                    Some(result.kept(INITIAL_RESULT_BYTES))
                }
                None => None,
            };
            let sandbox = Sandbox {
                id: id.clone(),
                engine_id,
                repo_url,
                branch,
                commit: request.commit_as_requested.clone(),
                resolved_commit,
                created_at,
                expires_at,
                image: request.image.clone(),
                network: request.network,
                resources: request.resources,
                initial_command_result,
                env: request.env.clone(),
                job_id: request.job_id.clone(),
                image_id: request.image_id.clone(),
                depth: request.depth,
                egress: request.egress.clone(),
                egress_log,
            };
            let sandbox = self.registry.insert(sandbox, slot).await?;
            *self.live(&id).agent.lock().await = Some(agent);
            Ok::<_, Error>(sandbox)
        }
        .await;
        let sandbox = match provisioned {
            Ok(sandbox) => sandbox,
            Err(err) => {
                guard.remove().await;
                return Err(err);
            }
        };
        guard.keep();
        if let Some(at) = expires_at {
            self.expiries.schedule(&id, at);
        }
        self.metrics
            .sandboxes_active
            .set(self.registry.len() as i64);
        tracing::info!(sandbox = %id, repo = %sandbox.repo_url, commit = %sandbox.resolved_commit, "sandbox created");
        Ok(sandbox)
    }

    fn spec(
        &self,
        id: &SandboxId,
        request: &NewSandbox,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> SandboxSpec {
        // Identity in labels; the rest (kept in the record) as annotations, for
        // people looking at the engine.
        let mut annotations = HashMap::from([
            (
                ANNOTATION_REPO_URL.to_owned(),
                match (&request.repo, &request.snapshot) {
                    (Some(repo), _) => repo.redacted().to_owned(),
                    (None, Some(snapshot)) => snapshot.repo_url.clone(),
                    (None, None) => String::new(),
                },
            ),
            (ANNOTATION_CREATED_AT.to_owned(), created_at.to_rfc3339()),
        ]);
        if let Some(at) = expires_at {
            annotations.insert(ANNOTATION_EXPIRES_AT.to_owned(), at.to_rfc3339());
        }
        let mut labels = HashMap::new();
        if let Some(job) = &request.job_id {
            labels.insert(crate::backend::LABEL_JOB.to_owned(), job.clone());
        }
        let name = format!("{id}.{}", self.registry.instance());
        SandboxSpec {
            id: id.clone(),
            hostname: hostname_for(&name),
            name,
            instance: self.registry.instance().to_owned(),
            image: request.image.clone(),
            cpus: request.resources.cpus,
            memory_mb: request.resources.memory_mb,
            pids: request.resources.pids,
            network: request.network,
            labels,
            annotations,
            runtime: self.runtime(),
            disk_mb: request.resources.disk_mb,
        }
    }

    /// A sandbox's status, read from the engine. A sandbox whose container vanished is
    /// forgotten and answers 404.
    pub async fn status(&self, sandbox: &Sandbox) -> Result<Condition> {
        if let Some(reason) = self.broken_reason(&sandbox.engine_id) {
            return Ok(Condition {
                status: Status::Failed,
                reason: Some(format!(
                    "the sandbox's agent broke the protocol and was disconnected: {reason}"
                )),
            });
        }
        match self.backend.inspect(&sandbox.engine_id).await? {
            Some(info) => Ok(Condition::of(&info)),
            None => {
                self.forget(&sandbox.id, "vanished");
                Err(Error::ContainerNotFound(sandbox.id.to_string()))
            }
        }
    }

    /// Every sandbox with its status, from one engine call (and one more for each
    /// that stopped, to say why).
    pub async fn list(&self) -> Result<Vec<(Arc<Sandbox>, Condition)>> {
        // Records first: every one of them had its container before the listing.
        let records = self.registry.all();
        let states: HashMap<EngineId, ContainerState> = self
            .backend
            .list_managed(self.registry.instance())
            .await?
            .into_iter()
            .map(|c| (c.engine_id, c.state))
            .collect();
        let mut listed = Vec::new();
        for sandbox in records {
            match states.get(&sandbox.engine_id) {
                Some(_) if self.broken_reason(&sandbox.engine_id).is_some() => {
                    if let Ok(condition) = self.status(&sandbox).await {
                        listed.push((sandbox, condition));
                    }
                }
                Some(ContainerState::Exited) => {
                    let condition = self.status(&sandbox).await;
                    if let Ok(condition) = condition {
                        listed.push((sandbox, condition));
                    }
                }
                Some(&state) => listed.push((
                    sandbox,
                    Condition::of(&ContainerInfo {
                        state,
                        oom_killed: false,
                        exit_code: None,
                    }),
                )),
                None => self.forget(&sandbox.id, "vanished"),
            }
        }
        Ok(listed)
    }

    /// Destroys a sandbox at a client's request.
    pub async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let sandbox = self.get(id)?;
        self.backend.remove(&sandbox.engine_id).await?;
        self.forget(id, "api");
        tracing::info!(sandbox = %id, "sandbox destroyed");
        Ok(())
    }

    /// Sets a sandbox's lifetime: it expires `lifetime` from now, or never (`None`).
    /// The new deadline is persisted before the answer; 409 when not running.
    pub async fn set_lifetime(
        &self,
        id: &SandboxId,
        lifetime: Option<Duration>,
    ) -> Result<Arc<Sandbox>> {
        let sandbox = self.get(id)?;
        let condition = self.status(&sandbox).await?;
        if condition.status != Status::Running {
            return Err(Error::NotRunning(format!("container {id} is not running")));
        }
        let _lifetime = self.lifetimes.lock().await;
        let expires_at = lifetime.map(|lifetime| {
            Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX)
        });
        let updated = self
            .registry
            .update(id, |record| record.expires_at = expires_at)
            .await?
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))?;
        match expires_at {
            Some(at) => self.expiries.schedule(id, at),
            None => self.expiries.cancel(id),
        }
        tracing::info!(sandbox = %id, expires_at = ?expires_at, "sandbox lifetime changed");
        Ok(updated)
    }

    /// Destroys a sandbox whose deadline has come. If the engine cannot be reached,
    /// tries again a little later rather than forgetting a container that still runs.
    pub async fn expire(&self, id: &SandboxId) {
        // Under the lifetime lock, the deadline that counts is the record's now, not the
        // one this call was scheduled for: a sandbox extended a moment ago lives on.
        let _lifetime = self.lifetimes.lock().await;
        let Some(sandbox) = self.registry.get(id) else {
            return;
        };
        let now = Utc::now();
        match sandbox.expires_at {
            Some(at) if at <= now => {}
            Some(at) => {
                self.expiries.schedule(id, at);
                return;
            }
            None => return,
        }
        match self.backend.remove(&sandbox.engine_id).await {
            Ok(()) => {
                self.forget(id, "expired");
                tracing::info!(sandbox = %id, "sandbox expired and destroyed");
            }
            Err(err) => {
                tracing::warn!(sandbox = %id, %err, "could not destroy an expired sandbox; retrying");
                self.expiries
                    .schedule(id, Utc::now() + chrono::Duration::seconds(5));
            }
        }
    }

    fn forget(&self, id: &SandboxId, reason: &'static str) {
        self.expiries.cancel(id);
        // Its agent connection (and with it the tasks attached to it, such as the
        // egress proxy) and its sessions' locks.
        self.live.locked().remove(id);
        if let Some(sandbox) = self.registry.remove(id) {
            self.broken.locked().remove(&sandbox.engine_id);
            Metrics::count(&self.metrics.destroys, reason);
        }
        self.metrics
            .sandboxes_active
            .set(self.registry.len() as i64);
    }

    /// Whether [`Self::reconcile`] has succeeded since start.
    pub fn is_reconciled(&self) -> bool {
        self.reconciled.load(Ordering::SeqCst)
    }

    /// Brings the registry and the engine into agreement after a start: adopts
    /// containers with a record (re-attaching to their agents, which ends whatever
    /// commands the previous server left running), destroys the expired ones, removes
    /// containers without a record (interrupted creates, and pool members a previous
    /// run left: a claim may have been under way on any of them) and those made by a
    /// repobox from before the agent, and forgets records whose container vanished.
    ///
    /// A container is matched to its record by engine id, not by its labels: a
    /// sandbox made from a pool member carries the member's labels.
    pub async fn reconcile(&self) -> Result<()> {
        // Records are read before containers are listed: a record written meanwhile
        // belongs to a container the listing may not show yet.
        let records = self.registry.all();
        let by_engine_id: HashMap<&str, &Arc<Sandbox>> = records
            .iter()
            .map(|sandbox| (sandbox.engine_id.as_str(), sandbox))
            .collect();
        let containers = self.backend.list_managed(self.registry.instance()).await?;
        let now = Utc::now();
        let mut seen = std::collections::HashSet::new();
        let mut adopted = Vec::new();
        for container in containers {
            let (label_id, pooled) = identity(&container);
            if !pooled && self.registry.is_creating(&label_id) {
                // A create under way (requests are served while reconciling; the pool
                // starts only afterwards, so no claim is).
                continue;
            }
            let speaks_agent = container
                .labels
                .get(LABEL_AGENT_PROTOCOL)
                .is_some_and(|v| *v == repobox_protocol::PROTOCOL_VERSION.to_string());
            match by_engine_id.get(container.engine_id.as_str()) {
                Some(sandbox) if speaks_agent => {
                    let id = sandbox.id.clone();
                    if sandbox.expires_at.is_some_and(|at| at <= now) {
                        self.expire(&id).await;
                    } else if container.state == ContainerState::Running {
                        adopted.push(id.clone());
                    }
                    seen.insert(id);
                }
                Some(sandbox) => {
                    tracing::warn!(sandbox = %sandbox.id, "removing a sandbox made by an earlier repobox (before the agent); it cannot be served");
                    self.backend.remove(&container.engine_id).await?;
                }
                None if pooled => {
                    tracing::info!(engine_id = %container.engine_id, "removing a pool member left by a previous run");
                    self.backend.remove(&container.engine_id).await?;
                }
                None => {
                    tracing::info!(sandbox = %label_id, engine_id = %container.engine_id, "removing leftover of an interrupted create");
                    self.backend.remove(&container.engine_id).await?;
                }
            }
        }
        for sandbox in records {
            if !seen.contains(&sandbox.id) {
                tracing::info!(sandbox = %sandbox.id, "forgetting sandbox whose container is gone");
                self.forget(&sandbox.id, "reconcile");
            }
        }
        // Re-attach now rather than at first use: the hello ends the commands that the
        // previous server left in flight.
        futures_util::stream::iter(adopted)
            .for_each_concurrent(ADOPT_CONCURRENCY, |id: SandboxId| async move {
                match self.agent(&id).await {
                    Ok(_) => tracing::info!(sandbox = %id, "adopted sandbox"),
                    Err(err) => tracing::warn!(sandbox = %id, %err, "adopted sandbox whose agent does not answer"),
                }
            })
            .await;
        self.reconcile_snapshots().await?;
        self.images.reconcile().await?;
        self.reconciled.store(true, Ordering::SeqCst);
        // Said at start, once: whether a sandbox's writes are bounded.
        let _ = self.disk_limits().await;
        Ok(())
    }

    /// Removes the containers of interrupted creates that the engine finished only
    /// after [`Self::reconcile`] listed its containers: a create that a killed server
    /// had sent goes on in the engine without it. A container is a leftover when it
    /// is no pool member, no create of this process is under way for its id, and no
    /// record names it (looked up after the create check: a create records its
    /// sandbox before it stops counting as under way).
    pub async fn sweep_leftovers(&self) -> Result<()> {
        let recorded = |records: &[Arc<Sandbox>], engine_id: &EngineId| {
            records
                .iter()
                .any(|sandbox| &sandbox.engine_id == engine_id)
        };
        let records = self.registry.all();
        for container in self.backend.list_managed(self.registry.instance()).await? {
            let (label_id, pooled) = identity(&container);
            if pooled
                || label_id.is_empty()
                || recorded(&records, &container.engine_id)
                || self.registry.is_creating(&label_id)
            {
                continue;
            }
            // Recorded since the records were read?
            if !recorded(&self.registry.all(), &container.engine_id) {
                tracing::info!(sandbox = %label_id, engine_id = %container.engine_id, "removing leftover of an interrupted create, finished by the engine after reconciliation");
                self.backend.remove(&container.engine_id).await?;
            }
        }
        Ok(())
    }
}

/// A container's sandbox id label, and whether it was made as a pool member (every
/// container has the pool label; only a pool member has a value in it).
fn identity(container: &crate::backend::ManagedContainer) -> (SandboxId, bool) {
    let label_id = SandboxId::new(container.labels.get(LABEL_ID).cloned().unwrap_or_default());
    let pooled = container
        .labels
        .get(LABEL_POOL)
        .is_some_and(|image| !image.is_empty());
    (label_id, pooled)
}

/// Most bytes of each stream of `initial_command_result` kept on the record.
pub const INITIAL_RESULT_BYTES: usize = 64 * 1024;

/// A host name for the container named `name`: unique per sandbox, and telling
/// nothing of its repository or id.
fn hostname_for(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("rb-{hex}")
}

#[async_trait::async_trait]
impl crate::pool::Supplier for Sandboxes {
    fn pool(&self) -> &Pool {
        &self.pool
    }
    fn is_reconciled(&self) -> bool {
        Sandboxes::is_reconciled(self)
    }
    async fn pool_disk_mb(&self) -> Result<Option<u64>> {
        Sandboxes::pool_disk_mb(self).await
    }
    async fn make_pool_member(&self, image: &str) -> Result<Member> {
        Sandboxes::make_pool_member(self, image).await
    }
    async fn remove_pool_member(&self, engine_id: &EngineId, tries: usize) {
        Sandboxes::remove_pool_member(self, engine_id, tries).await;
    }
}

#[async_trait::async_trait]
impl crate::reaper::Expire for Sandboxes {
    fn expiries(&self) -> &Expiries {
        &self.expiries
    }
    async fn expire(&self, id: &SandboxId) {
        Sandboxes::expire(self, id).await;
    }
}

/// Owns a container until its create has committed. Dropped armed (the request went
/// away mid-create), it removes the container in the background. Until the engine
/// has answered the create, the container is known by its (unique) name.
struct ContainerGuard {
    backend: Arc<dyn Backend>,
    name: String,
    engine_id: Option<EngineId>,
    armed: bool,
}

impl ContainerGuard {
    fn new(backend: Arc<dyn Backend>, name: String) -> Self {
        Self {
            backend,
            name,
            engine_id: None,
            armed: true,
        }
    }

    /// The engine's reference, or the unique name until it is known (engines
    /// address a sandbox by either).
    fn target(&self) -> EngineId {
        self.engine_id
            .clone()
            .unwrap_or_else(|| EngineId::new(self.name.clone()))
    }

    /// Removes the container now.
    /// Removes the container now; if the engine cannot be reached (it may be
    /// restarting), keeps trying in the background for a while.
    async fn remove(mut self) {
        self.armed = false;
        let target = self.target();
        if let Err(err) = self.backend.remove(&target).await {
            tracing::warn!(container = %target, %err, "could not remove the container of a failed create; trying again while the engine comes back");
            let backend = self.backend.clone();
            tokio::spawn(async move {
                for _ in 0..REMOVE_RETRIES {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if backend.remove(&target).await.is_ok() {
                        tracing::info!(container = %target, "removed the container of a failed create");
                        return;
                    }
                }
                tracing::warn!(container = %target, "gave up removing the container of a failed create; the next start removes it");
            });
        }
    }

    /// The create committed: the container is the sandbox's now.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.armed {
            let backend = self.backend.clone();
            let target = self.target();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    // The engine may still be creating it: removing by name can come
                    // too early, so try again a little later.
                    for pause in [0, 500, 2000, 5000] {
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        let _ = backend.remove(&target).await;
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_differ_per_sandbox_and_are_valid() {
        let a = hostname_for("repo-container-1-0.inst");
        let b = hostname_for("repo-container-1-1.inst");
        assert_ne!(a, b);
        assert_eq!(a.len(), 15);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn a_stopped_container_fails_with_its_reason() {
        let info = |oom, code| ContainerInfo {
            state: ContainerState::Exited,
            oom_killed: oom,
            exit_code: code,
        };
        assert_eq!(
            Condition::of(&info(false, Some(0))).status,
            Status::Completed
        );
        let oom = Condition::of(&info(true, Some(137)));
        assert_eq!(oom.status, Status::Failed);
        assert!(oom.reason.unwrap().contains("out of memory"));
        let killed = Condition::of(&info(false, Some(137)));
        assert_eq!(killed.status, Status::Failed);
        assert!(killed.reason.unwrap().contains("signal 9"));
    }
}
