//! Docker, the default [`Backend`] (with an [`ImageStore`]): every call to the engine is here.
//!
//! Nothing outside this module sees a bollard type. Hardening lives in one function,
//! [`container_config`], so a reviewer can read the whole security posture of a
//! sandbox in one place. A sandbox's main process is the agent (PID 1, no init),
//! reached over the container's attach stream.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, ContainerUpdateBody,
    HostConfig,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CommitContainerOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RenameContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

pub use crate::backend::KEPT_CAPABILITIES;
use crate::backend::{
    AGENT_BINARY, AGENT_PATH, ANNOTATION_CREATED_AT, ANNOTATION_EXPIRES_AT, ANNOTATION_REPO_URL,
    Backend, BackendKind, BodyStream, BuildSpec, BuildStream, ContainerInfo, ContainerState,
    Credentials, DiskLimits, ImageInfo, ImageStore, LABEL_INSTANCE, LABEL_MANAGED, LABEL_POOL,
    Limits, ManagedContainer, Network, PullProgress, PullStream, SandboxSpec, Transport, WORKSPACE,
};
use crate::error::{Error, Result};
use crate::id::EngineId;

mod build;

fn network_mode(network: Network) -> &'static str {
    match network {
        Network::None => "none",
        Network::Bridge => "bridge",
    }
}

/// Builds the container configuration. All hardening is here.
pub fn container_config(spec: &SandboxSpec) -> ContainerCreateBody {
    let memory = memory_bytes(spec.memory_mb);
    // Labels an image made from another sandbox carries (a snapshot) are overwritten
    // (Docker merges the image's labels under the container's and cannot drop one).
    let mut labels: HashMap<String, String> = [
        LABEL_POOL.to_owned(),
        crate::backend::LABEL_JOB.to_owned(),
        ANNOTATION_REPO_URL.to_owned(),
        ANNOTATION_CREATED_AT.to_owned(),
        ANNOTATION_EXPIRES_AT.to_owned(),
    ]
    .into_iter()
    .map(|key| (key, String::new()))
    .collect();
    // Docker has no annotations, and its labels hold any value: both go there.
    labels.extend(spec.annotations.clone());
    labels.extend(spec.identity_labels());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The agent is the main process and PID 1 (no init: an init would hold the
        // attach stream's pipes too, where the sandbox's processes could reach them).
        // As PID 1 it cannot be signalled from inside, it makes itself non-dumpable so
        // it cannot be traced or have its pipes opened through /proc, and it reaps
        // orphans. Its stdin and stdout are the stream repobox attaches to.
        entrypoint: Some(vec![AGENT_PATH.to_owned()]),
        cmd: Some(Vec::new()),
        open_stdin: Some(true),
        stdin_once: Some(false),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        // No sandbox environment here: the agent gives it to every command, the same
        // way for a sandbox made now and for a pool member made before its request.
        working_dir: Some(WORKSPACE.to_owned()),
        labels: Some(labels),
        hostname: Some(spec.hostname.clone()),
        network_disabled: Some(spec.network == Network::None),
        stop_signal: Some("SIGKILL".to_owned()),
        host_config: Some(HostConfig {
            init: Some(false),
            network_mode: Some(network_mode(spec.network).to_owned()),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(
                KEPT_CAPABILITIES
                    .iter()
                    .map(|&cap| cap.to_owned())
                    .collect(),
            ),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            privileged: Some(false),
            memory: Some(memory),
            // Same as memory: no swap on top of the limit.
            memory_swap: Some(memory),
            nano_cpus: Some((spec.cpus * 1e9) as i64),
            pids_limit: Some(spec.pids),
            readonly_rootfs: Some(false),
            // No host paths, no Docker socket, no devices: nothing is mounted.
            binds: None,
            mounts: None,
            devices: None,
            ipc_mode: Some("private".to_owned()),
            runtime: spec.runtime.clone(),
            storage_opt: spec
                .disk_mb
                .map(|mb| HashMap::from([("size".to_owned(), format!("{mb}M"))])),
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn memory_bytes(mb: u64) -> i64 {
    i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}

/// The resource part of [`container_config`], for a running container.
fn limits_update(limits: Limits) -> ContainerUpdateBody {
    let memory = memory_bytes(limits.memory_mb);
    ContainerUpdateBody {
        memory: Some(memory),
        // Same as memory: no swap on top of the limit.
        memory_swap: Some(memory),
        nano_cpus: Some((limits.cpus * 1e9) as i64),
        pids_limit: Some(limits.pids),
        ..Default::default()
    }
}

/// The Docker engine, seen through repobox's verbs.
#[derive(Clone, Debug)]
pub struct Runtime {
    host: Arc<str>,
    /// Made on first use: bollard refuses to build a client for a socket that does
    /// not exist yet, and the server must start (and report) while Docker is down.
    client: Arc<OnceLock<Docker>>,
    /// Where the engine host's cgroup tree is seen (`BUILD_CGROUP_ROOT`).
    build_cgroup_root: Arc<Path>,
}

/// How long any single engine call may take before we give up on the engine; long
/// transfers are bounded by their callers instead.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The engine's storage, as far as disk limits go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Storage {
    /// The btrfs driver: `size` is a quota group on the container's snapshot. With
    /// simple quotas (what scripts/setup-docker.sh turns on) it counts what the
    /// container writes; with full quota groups, also what it shares with its image.
    Btrfs,
    /// overlay2 over xfs: `size` is a project quota on the writable layer alone.
    OverlayXfs,
    /// Anything else: no `size`.
    Other { driver: String, backing: String },
}

impl Storage {
    fn of(driver: &str, backing: &str) -> Self {
        match (driver, backing) {
            ("btrfs", _) => Storage::Btrfs,
            ("overlay2", "xfs") => Storage::OverlayXfs,
            _ => Storage::Other {
                driver: driver.to_owned(),
                backing: backing.to_owned(),
            },
        }
    }
}

impl Runtime {
    /// A cgroup for one build, limited to the build's processes.
    async fn build_cgroup(&self, spec: &BuildSpec) -> Result<build::BuildCgroup> {
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let info = self
            .client()?
            .info()
            .await
            .map_err(unavailable_or_internal)?;
        let driver = info
            .cgroup_driver
            .map(|driver| driver.to_string())
            .unwrap_or_default();
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis(),
            BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let root = self.build_cgroup_root.clone();
        let pids = spec.pids;
        tokio::task::spawn_blocking(move || build::BuildCgroup::make(&root, &driver, &name, pids))
            .await
            .map_err(|err| Error::internal(err.to_string()))?
    }

    /// Sets where the engine host's cgroup tree is seen (builds make their cgroups
    /// there).
    #[must_use]
    pub fn with_build_cgroup_root(mut self, root: &Path) -> Self {
        self.build_cgroup_root = root.into();
        self
    }

    /// The engine's storage driver and what lies under it.
    async fn storage(&self) -> Result<Storage> {
        let info = self
            .client()?
            .info()
            .await
            .map_err(unavailable_or_internal)?;
        let backing = info
            .driver_status
            .unwrap_or_default()
            .into_iter()
            .find(|pair| pair.first().map(String::as_str) == Some("Backing Filesystem"))
            .and_then(|pair| pair.get(1).cloned())
            .unwrap_or_default();
        Ok(Storage::of(&info.driver.unwrap_or_default(), &backing))
    }

    /// Prepares a client for `host` (`unix://…`, `tcp://…`, `http://…`); no I/O.
    pub fn connect(host: &str) -> anyhow::Result<Self> {
        let supported = ["unix://", "tcp://", "http://", "/"]
            .iter()
            .any(|prefix| host.starts_with(prefix));
        anyhow::ensure!(
            supported,
            "unsupported DOCKER_HOST {host:?}: use unix://PATH or tcp://HOST:PORT"
        );
        Ok(Self {
            host: host.into(),
            client: Arc::new(OnceLock::new()),
            build_cgroup_root: Path::new(crate::config::DEFAULT_CGROUP_ROOT).into(),
        })
    }

    fn client(&self) -> Result<&Docker> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let host = &*self.host;
        let client = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, CLIENT_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
        } else if host.starts_with('/') {
            Docker::connect_with_unix(host, CLIENT_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(host, CLIENT_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
        }
        .map_err(|err| {
            Error::EngineUnavailable(format!("Docker engine unreachable at {host}: {err}"))
        })?;
        Ok(self.client.get_or_init(|| client))
    }

    fn map_create_error(spec: &SandboxSpec, err: DockerError) -> Error {
        match err {
            DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            } => Error::invalid(format!(
                "image {:?} is not available on this engine: {message}",
                spec.image
            )),
            DockerError::DockerResponseServerError {
                status_code: 400,
                message,
            } => Error::invalid(format!(
                "the engine refused the container configuration: {message}"
            )),
            other => unavailable_or_internal(other),
        }
    }

    /// Puts the agent into a created container, then starts it.
    async fn provision(&self, docker_id: &str, agent: &'static [u8]) -> Result<()> {
        let tar = agent_archive(agent).map_err(Error::internal)?;
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        self.client()?
            .upload_to_container(docker_id, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(unavailable_or_internal)?;
        self.client()?
            .start_container(docker_id, None)
            .await
            .map_err(unavailable_or_internal)
    }

    /// Removes a container and its anonymous volumes, killing it if running. A
    /// container that is already gone is not an error.
    async fn remove_container(&self, docker_id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self
            .client()?
            .remove_container(docker_id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // 409: removal already in progress.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(err) => Err(unavailable_or_internal(err)),
        }
    }
}

/// A tar holding the agent at [`AGENT_PATH`] (and its directory).
fn agent_archive(agent: &[u8]) -> std::io::Result<Vec<u8>> {
    let (dir, _) = AGENT_PATH
        .trim_start_matches('/')
        .rsplit_once('/')
        .unwrap_or(("", ""));
    let mut builder = tar::Builder::new(Vec::with_capacity(agent.len() + 4096));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_cksum();
    builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(agent.len() as u64);
    header.set_cksum();
    builder.append_data(&mut header, AGENT_PATH.trim_start_matches('/'), agent)?;
    builder.into_inner()
}

fn container_state(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING,
        ) => ContainerState::Running,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        _ => ContainerState::Exited,
    }
}

#[async_trait::async_trait]
impl Backend for Runtime {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    fn images(&self) -> Option<&dyn ImageStore> {
        Some(self)
    }

    fn capabilities(&self) -> &'static [&'static str] {
        KEPT_CAPABILITIES
    }

    async fn ping(&self, bound: Duration) -> Result<()> {
        let client = self.client()?;
        match tokio::time::timeout(bound, client.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(Error::EngineUnavailable(format!(
                "Docker engine unreachable: {err}"
            ))),
            Err(_) => Err(Error::EngineUnavailable(format!(
                "Docker engine did not answer within {bound:?}"
            ))),
        }
    }

    async fn version(&self) -> Result<String> {
        let version = self
            .client()?
            .version()
            .await
            .map_err(unavailable_or_internal)?;
        Ok(version.version.unwrap_or_default())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<EngineId> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .client()?
            .create_container(Some(options), container_config(spec))
            .await
            .map_err(|err| Self::map_create_error(spec, err))?;
        if let Err(err) = self.provision(&created.id, AGENT_BINARY).await {
            let _ = self.remove_container(&created.id).await;
            return Err(err);
        }
        Ok(created.id.into())
    }

    async fn assign(
        &self,
        docker_id: &EngineId,
        spec: &SandboxSpec,
        current: Limits,
    ) -> Result<()> {
        let docker_id = docker_id.as_str();
        let client = self.client()?;
        let rename = async {
            let options = RenameContainerOptionsBuilder::default()
                .name(&spec.name)
                .build();
            client
                .rename_container(docker_id, options)
                .await
                .map_err(exec_error)
        };
        let update = async {
            if spec.limits() == current {
                return Ok(());
            }
            client
                .update_container(docker_id, limits_update(spec.limits()))
                .await
                .map_err(exec_error)
        };
        let (renamed, updated) = tokio::join!(rename, update);
        renamed.and(updated)
    }

    async fn attach(&self, docker_id: &EngineId) -> Result<Transport> {
        let docker_id = docker_id.as_str();
        let options = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .detach_keys(repobox_protocol::DETACH_KEYS)
            .build();
        let attached = self
            .client()?
            .attach_container(docker_id, Some(options))
            .await
            .map_err(exec_error)?;
        let id = docker_id.chars().take(12).collect::<String>();
        let output = attached.output.filter_map(move |item| {
            let id = id.clone();
            async move {
                match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        Some(Ok(message))
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        // The agent's own diagnostics (never command output).
                        tracing::debug!(container = %id, agent = %String::from_utf8_lossy(&message).trim_end(), "agent says");
                        None
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(err) => Some(Err(std::io::Error::other(err))),
                }
            }
        });
        Ok(Transport {
            reader: Box::pin(tokio_util::io::StreamReader::new(output)),
            writer: attached.input,
        })
    }

    async fn remove(&self, docker_id: &EngineId) -> Result<()> {
        let docker_id = docker_id.as_str();
        self.remove_container(docker_id).await
    }

    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_INSTANCE}={instance}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .client()?
            .list_containers(Some(options))
            .await
            .map_err(unavailable_or_internal)?;
        Ok(summaries
            .into_iter()
            .filter_map(|summary| {
                let state = match summary.state? {
                    ContainerSummaryStateEnum::CREATED => ContainerState::Created,
                    ContainerSummaryStateEnum::RUNNING
                    | ContainerSummaryStateEnum::PAUSED
                    | ContainerSummaryStateEnum::RESTARTING => ContainerState::Running,
                    ContainerSummaryStateEnum::REMOVING => ContainerState::Removing,
                    _ => ContainerState::Exited,
                };
                Some(ManagedContainer {
                    engine_id: summary.id?.into(),
                    labels: summary.labels.unwrap_or_default(),
                    state,
                })
            })
            .collect())
    }

    async fn disk_limits(&self) -> Result<DiskLimits> {
        let info = self
            .client()?
            .info()
            .await
            .map_err(unavailable_or_internal)?;
        let memory_bytes = info.mem_total.and_then(|bytes| u64::try_from(bytes).ok());
        // The store's size, where the engine's data root is on this machine.
        let store_bytes = match info.docker_root_dir.clone() {
            Some(root) => tokio::task::spawn_blocking(move || filesystem_bytes(&root))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        Ok(match self.storage().await? {
            Storage::Btrfs | Storage::OverlayXfs => DiskLimits {
                enforced: true,
                reason: None,
                memory_bytes,
                store_bytes,
            },
            Storage::Other { driver, backing } => DiskLimits {
                enforced: false,
                memory_bytes,
                store_bytes,
                reason: Some(format!(
                    "the engine's storage is {driver} on {backing}: Docker limits a container's size only with the btrfs driver or with overlay2 on xfs mounted with pquota (scripts/setup-docker.sh puts the engine on btrfs when it starts it)",
                    backing = if backing.is_empty() {
                        "an unknown filesystem"
                    } else {
                        &backing
                    }
                )),
            },
        })
    }

    async fn inspect(&self, docker_id: &EngineId) -> Result<Option<ContainerInfo>> {
        let docker_id = docker_id.as_str();
        match self.client()?.inspect_container(docker_id, None).await {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                Ok(Some(ContainerInfo {
                    state: container_state(state.status),
                    oom_killed: state.oom_killed.unwrap_or(false),
                    exit_code: state.exit_code,
                }))
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(unavailable_or_internal(err)),
        }
    }
}

#[async_trait::async_trait]
impl ImageStore for Runtime {
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        match self.client()?.inspect_image(reference).await {
            Ok(inspect) => Ok(Some(ImageInfo {
                id: inspect.id.unwrap_or_default(),
                size_bytes: inspect
                    .size
                    .and_then(|size| u64::try_from(size).ok())
                    .unwrap_or(0),
                volumes: inspect
                    .config
                    .as_ref()
                    .and_then(|config| config.volumes.clone())
                    .unwrap_or_default(),
                labels: inspect
                    .config
                    .and_then(|config| config.labels)
                    .unwrap_or_default(),
            })),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            // A reference the engine cannot parse names no image it has.
            Err(DockerError::DockerResponseServerError {
                status_code: 400, ..
            }) => Ok(None),
            Err(err) => Err(unavailable_or_internal(err)),
        }
    }

    fn pull(&self, reference: &str, credentials: Option<Credentials>) -> PullStream {
        let client = match self.client() {
            Ok(client) => client.clone(),
            Err(err) => return Box::pin(futures_util::stream::once(async move { Err(err) })),
        };
        let options = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let credentials = credentials.map(|credentials| DockerCredentials {
            username: Some(credentials.username),
            password: Some(credentials.password),
            serveraddress: Some(credentials.server),
            ..Default::default()
        });
        let reference = reference.to_owned();
        Box::pin(
            client
                .create_image(Some(options), None, credentials)
                .map(move |item| match item {
                    Ok(info) => Ok(PullProgress {
                        layer: info.id.unwrap_or_default(),
                        status: info.status.unwrap_or_default(),
                        current: info
                            .progress_detail
                            .as_ref()
                            .and_then(|detail| detail.current)
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                        total: info
                            .progress_detail
                            .as_ref()
                            .and_then(|detail| detail.total)
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                    }),
                    Err(err) => Err(pull_error(&reference, err)),
                }),
        )
    }

    fn build(&self, context: BodyStream, spec: BuildSpec) -> BuildStream {
        let runtime = self.clone();
        // The build runs in a task of its own, which stops as soon as the returned
        // stream is dropped (and removes the build's cgroup as it ends).
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let cgroup = match runtime.build_cgroup(&spec).await {
                Ok(cgroup) => cgroup,
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            if let Err(err) = build::run(&runtime.host, context, &spec, cgroup.parent(), &tx).await
            {
                let _ = tx.send(Err(err)).await;
            }
        });
        Box::pin(tokio_stream_of(rx))
    }

    async fn snapshot(
        &self,
        docker_id: &EngineId,
        reference: &str,
        labels: HashMap<String, String>,
    ) -> Result<ImageInfo> {
        let docker_id = docker_id.as_str();
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let options = CommitContainerOptionsBuilder::default()
            .container(docker_id)
            .repo(repo)
            .tag(tag)
            .pause(true)
            .build();
        let config = bollard::models::ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        };
        let client = self.client()?;
        let committed = client
            .commit_container(options, config)
            .await
            .map_err(exec_error)?;
        let inspect = client
            .inspect_image(reference)
            .await
            .map_err(unavailable_or_internal)?;
        Ok(ImageInfo {
            id: committed.id,
            volumes: Vec::new(),
            size_bytes: inspect
                .size
                .and_then(|size| u64::try_from(size).ok())
                .unwrap_or(0),
            labels: inspect
                .config
                .and_then(|config| config.labels)
                .unwrap_or_default(),
        })
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        match self
            .client()?
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => Err(Error::Conflict(format!(
                "the engine still uses the image: {message}"
            ))),
            Err(err) => Err(unavailable_or_internal(err)),
        }
    }

    async fn list_images(&self, label: &str) -> Result<Vec<ImageInfo>> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = ListImagesOptionsBuilder::default()
            .all(false)
            .filters(&filters)
            .build();
        let images = self
            .client()?
            .list_images(Some(options))
            .await
            .map_err(unavailable_or_internal)?;
        Ok(images
            .into_iter()
            .map(|image| ImageInfo {
                id: image.id,
                size_bytes: u64::try_from(image.size).unwrap_or(0),
                labels: image.labels,
                // Not listed by the engine; read with `image()` where it matters.
                volumes: Vec::new(),
            })
            .collect())
    }
}

/// Size of the filesystem holding `path` (`df`), when it is on this machine.
fn filesystem_bytes(path: &str) -> Option<u64> {
    if !std::path::Path::new(path).exists() {
        return None;
    }
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size", path])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// The items of `rx` as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
}

/// A pull the engine or the registry refused (422, with their reason), or an engine
/// that cannot be reached (503).
fn pull_error(reference: &str, err: DockerError) -> Error {
    match err {
        DockerError::DockerStreamError { error } => {
            Error::ImageUnavailable(format!("cannot pull image {reference:?}: {error}"))
        }
        DockerError::DockerResponseServerError { message, .. } => {
            Error::ImageUnavailable(format!("cannot pull image {reference:?}: {message}"))
        }
        other => unavailable_or_internal(other),
    }
}

/// A build the engine refused (its reason), or an engine that cannot be reached.
fn exec_error(err: DockerError) -> Error {
    match err {
        DockerError::DockerResponseServerError {
            status_code: 409,
            message,
        } => Error::NotRunning(format!("the container is not running: {message}")),
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => Error::NotRunning(format!("the container no longer exists: {message}")),
        other => unavailable_or_internal(other),
    }
}

/// Engine answered with an error: a defect or a surprise (500). Engine did not answer:
/// Docker is unavailable (503).
fn unavailable_or_internal(err: DockerError) -> Error {
    match err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => Error::internal(format!("Docker answered {status_code}: {message}")),
        DockerError::JsonDataError { .. } | DockerError::JsonSerdeError { .. } => {
            Error::internal(format!("unexpected answer from Docker: {err}"))
        }
        other => Error::EngineUnavailable(format!("Docker engine unreachable: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_limits_are_known_only_for_btrfs_and_overlay2_on_xfs() {
        assert_eq!(Storage::of("btrfs", ""), Storage::Btrfs);
        assert_eq!(Storage::of("overlay2", "xfs"), Storage::OverlayXfs);
        for (driver, backing) in [("overlay2", "extfs"), ("vfs", ""), ("zfs", "zfs")] {
            assert_eq!(
                Storage::of(driver, backing),
                Storage::Other {
                    driver: driver.into(),
                    backing: backing.into()
                }
            );
        }
    }

    fn spec() -> SandboxSpec {
        SandboxSpec {
            id: "repo-container-1-0".into(),
            name: "repo-container-1-0.abc".into(),
            hostname: "rb-0123456789ab".into(),
            instance: "abc".into(),
            image: "img".into(),
            cpus: 1.5,
            memory_mb: 256,
            pids: 128,
            network: Network::None,
            labels: HashMap::new(),
            annotations: HashMap::new(),
            runtime: None,
            disk_mb: None,
        }
    }

    #[test]
    fn sandboxes_are_locked_down() {
        let config = container_config(&spec());
        let host = config.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert!(
            !host
                .cap_add
                .unwrap()
                .iter()
                .any(|cap| cap == "NET_RAW" || cap == "SYS_ADMIN")
        );
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges:true".to_owned()])
        );
        assert_eq!(host.memory, Some(256 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.pids_limit, Some(128));
        assert_eq!(host.init, Some(false));
        assert!(host.binds.is_none() && host.mounts.is_none());
        let labels = config.labels.unwrap();
        assert_eq!(
            labels.get(crate::backend::LABEL_ID).map(String::as_str),
            Some("repo-container-1-0")
        );
        assert_eq!(labels.get(LABEL_INSTANCE).map(String::as_str), Some("abc"));
        assert_eq!(config.hostname.as_deref(), Some("rb-0123456789ab"));
        assert_eq!(config.entrypoint, Some(vec![AGENT_PATH.to_owned()]));
        assert_eq!(config.open_stdin, Some(true));
    }

    #[test]
    fn the_agent_archive_holds_an_executable_at_its_path() {
        let tar = agent_archive(b"\x7fELF").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    entry.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (".repobox/".to_owned(), 0o755),
                (".repobox/agent".to_owned(), 0o755)
            ]
        );
    }

    #[test]
    fn bridge_only_when_asked() {
        let mut spec = spec();
        spec.network = Network::Bridge;
        assert_eq!(
            container_config(&spec)
                .host_config
                .unwrap()
                .network_mode
                .as_deref(),
            Some("bridge")
        );
    }
}
