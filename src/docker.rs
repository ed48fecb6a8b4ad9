//! The Docker boundary: every call to the engine goes through the domain verbs here.
//!
//! Nothing outside this module sees a bollard type. Hardening lives in one function,
//! [`container_config`], so a reviewer can read the whole security posture of a
//! sandbox in one place. A Kubernetes backend or an in-sandbox agent would slot in
//! behind the same verbs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, HostConfig,
};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder,
    DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::error::{Error, Result};

/// Label set on every container repobox owns.
pub const LABEL_MANAGED: &str = "repobox.managed";
/// Label naming the repobox instance (one `DATA_DIR`) that owns the container, so
/// that several instances can share one engine without touching each other's.
pub const LABEL_INSTANCE: &str = "repobox.instance";
/// Label holding the sandbox id.
pub const LABEL_ID: &str = "repobox.id";
/// Label prefix for sandbox metadata that must survive a restart.
pub const LABEL_PREFIX: &str = "repobox.";

/// Where checkouts go inside a sandbox.
pub const WORKSPACE: &str = "/workspace";

/// Capabilities a sandbox keeps; everything else is dropped. These are what package
/// managers and build tools running as root inside the container ordinarily need
/// (file ownership and permission changes, dropping to another user, signalling
/// their own children). Notably absent: NET_RAW, NET_BIND_SERVICE, MKNOD, SYS_CHROOT,
/// SETPCAP, SETFCAP, AUDIT_WRITE.
pub const KEPT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
];

/// How a sandbox reaches the network.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No interface but loopback (the default).
    None,
    /// Docker's default bridge (only when `ALLOW_NETWORK=true`).
    Bridge,
}

impl Network {
    fn mode(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Bridge => "bridge",
        }
    }
}

/// Everything needed to create one sandbox container.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The sandbox id (labelled on the container).
    pub id: String,
    /// Container name: unique on the engine, also across repobox instances.
    pub name: String,
    /// The repobox instance that owns it (see [`LABEL_INSTANCE`]).
    pub instance: String,
    /// Image reference.
    pub image: String,
    /// `NAME=value` pairs for the container and every command in it.
    pub env: Vec<String>,
    /// CPU limit.
    pub cpus: f64,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Process limit.
    pub pids: i64,
    /// Network mode.
    pub network: Network,
    /// Labels (metadata that must outlive the server process).
    pub labels: HashMap<String, String>,
    /// OCI runtime (e.g. `runsc`); `None`: the engine's default.
    pub runtime: Option<String>,
}

/// Builds the container configuration. All hardening is here.
pub fn container_config(spec: &SandboxSpec) -> ContainerCreateBody {
    let memory = i64::try_from(spec.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
    let mut labels = spec.labels.clone();
    labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
    labels.insert(LABEL_ID.to_owned(), spec.id.clone());
    labels.insert(LABEL_INSTANCE.to_owned(), spec.instance.clone());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        // Keeps the container alive; the init (below) is PID 1 and reaps zombies.
        entrypoint: Some(vec!["sleep".to_owned()]),
        cmd: Some(vec!["infinity".to_owned()]),
        env: Some(spec.env.clone()),
        working_dir: Some(WORKSPACE.to_owned()),
        labels: Some(labels),
        hostname: Some("sandbox".to_owned()),
        network_disabled: Some(spec.network == Network::None),
        stop_signal: Some("SIGKILL".to_owned()),
        host_config: Some(HostConfig {
            init: Some(true),
            network_mode: Some(spec.network.mode().to_owned()),
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
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What Docker says about a container's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not yet started.
    Created,
    /// Running (or paused/restarting).
    Running,
    /// Exited or dead.
    Exited,
    /// Being removed.
    Removing,
}

/// A container carrying our labels, as found by [`Runtime::list_managed`].
#[derive(Debug, Clone)]
pub struct ManagedContainer {
    /// Docker's id.
    pub docker_id: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its state.
    pub state: ContainerState,
}

/// What a path inside a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A regular file (or anything that is neither of the others).
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

/// `stat` of a path inside a container, from the archive API.
#[derive(Debug, Clone)]
pub struct PathStat {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Kind.
    pub kind: PathKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub modified_at: Option<DateTime<Utc>>,
    /// Target, for a symlink.
    pub link_target: Option<String>,
}

/// One piece of a command's output.
#[derive(Debug, Clone)]
pub enum Output {
    /// Bytes written to stdout.
    Stdout(Bytes),
    /// Bytes written to stderr.
    Stderr(Bytes),
}

/// A command's output as it happens.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output>> + Send>>;

/// A process to run inside a container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// Program and arguments (no shell unless the caller puts one there).
    pub cmd: Vec<String>,
    /// Extra `NAME=value` pairs, over the container's own.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub working_dir: Option<String>,
}

/// A byte stream coming out of the engine.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A body streaming into the engine.
pub type BodyStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The Docker engine, seen through repobox's verbs.
#[derive(Clone, Debug)]
pub struct Runtime {
    host: Arc<str>,
    /// Made on first use: bollard refuses to build a client for a socket that does
    /// not exist yet, and the server must start (and report) while Docker is down.
    client: Arc<OnceLock<Docker>>,
}

/// How long any single engine call may take before we give up on the engine; long
/// transfers are bounded by their callers instead.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3600);

impl Runtime {
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
            Error::DockerUnavailable(format!("Docker engine unreachable at {host}: {err}"))
        })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Checks the engine answers, within `bound`.
    pub async fn ping(&self, bound: Duration) -> Result<()> {
        let client = self.client()?;
        match tokio::time::timeout(bound, client.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(Error::DockerUnavailable(format!(
                "Docker engine unreachable: {err}"
            ))),
            Err(_) => Err(Error::DockerUnavailable(format!(
                "Docker engine did not answer within {bound:?}"
            ))),
        }
    }

    /// The engine's version string.
    pub async fn version(&self) -> Result<String> {
        let version = self
            .client()?
            .version()
            .await
            .map_err(unavailable_or_internal)?;
        Ok(version.version.unwrap_or_default())
    }

    /// Whether `image` is present locally (nothing is ever pulled).
    pub async fn image_exists(&self, image: &str) -> Result<bool> {
        match self.client()?.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(err) => Err(unavailable_or_internal(err)),
        }
    }

    /// Creates and starts a sandbox container; returns Docker's id. On a failed start
    /// the container is removed again, so nothing is left behind.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<String> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .client()?
            .create_container(Some(options), container_config(spec))
            .await
            .map_err(|err| match err {
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
            })?;
        if let Err(err) = self.client()?.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Err(unavailable_or_internal(err));
        }
        Ok(created.id)
    }

    /// Removes a container and its anonymous volumes, killing it if running. A
    /// container that is already gone is not an error.
    pub async fn remove(&self, docker_id: &str) -> Result<()> {
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

    /// Every container (running or not) of repobox instance `instance`.
    pub async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>> {
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
                    docker_id: summary.id?,
                    labels: summary.labels.unwrap_or_default(),
                    state,
                })
            })
            .collect())
    }

    /// A container's state; `None` when it no longer exists.
    pub async fn state(&self, docker_id: &str) -> Result<Option<ContainerState>> {
        match self.client()?.inspect_container(docker_id, None).await {
            Ok(inspect) => {
                let status = inspect.state.and_then(|state| state.status);
                Ok(Some(match status {
                    Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
                    Some(
                        ContainerStateStatusEnum::RUNNING
                        | ContainerStateStatusEnum::PAUSED
                        | ContainerStateStatusEnum::RESTARTING,
                    ) => ContainerState::Running,
                    Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
                    _ => ContainerState::Exited,
                }))
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(unavailable_or_internal(err)),
        }
    }

    /// Stats a path inside a container; `None` when it does not exist. A symlink is
    /// reported as such (not followed).
    pub async fn stat(&self, docker_id: &str, path: &str) -> Result<Option<PathStat>> {
        let options = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        match self
            .client()?
            .get_container_archive_info(docker_id, Some(options))
            .await
        {
            Ok(stat) => {
                // Go's os.FileMode: type bits at the top, permissions at the bottom.
                const MODE_DIR: u32 = 1 << 31;
                const MODE_SYMLINK: u32 = 1 << 27;
                let kind = if stat.file_mode & MODE_SYMLINK != 0 {
                    PathKind::Symlink
                } else if stat.file_mode & MODE_DIR != 0 {
                    PathKind::Directory
                } else {
                    PathKind::File
                };
                Ok(Some(PathStat {
                    name: stat.name,
                    size: u64::try_from(stat.size).unwrap_or(0),
                    kind,
                    mode: stat.file_mode & 0o7777,
                    modified_at: stat
                        .modification_time
                        .as_deref()
                        .and_then(|mtime| DateTime::parse_from_rfc3339(mtime).ok())
                        .map(|mtime| mtime.with_timezone(&Utc)),
                    link_target: (!stat.link_target.is_empty()).then_some(stat.link_target),
                }))
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(DockerError::DockerResponseServerError {
                status_code: 400,
                message,
            }) => Err(Error::invalid(format!("invalid path {path:?}: {message}"))),
            Err(DockerError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => Err(Error::NotRunning(message)),
            // The engine answers a path it cannot resolve inside the container (a
            // component that is a file, a symlink loop) with a bare 500.
            Err(DockerError::DockerResponseServerError {
                status_code: 500, ..
            }) => Err(Error::invalid(format!(
                "cannot resolve {path:?} inside the container (a component is not a directory, or symlinks loop)"
            ))),
            Err(err) => Err(unavailable_or_internal(err)),
        }
    }

    /// Unpacks a tar stream at `path` (which must be an existing directory).
    pub async fn put_archive(&self, docker_id: &str, path: &str, tar: BodyStream) -> Result<()> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .no_overwrite_dir_non_dir("true")
            .build();
        self.client()?
            .upload_to_container(docker_id, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(|err| match err {
                DockerError::DockerResponseServerError {
                    status_code: 404, ..
                } => Error::PathNotFound(path.to_owned()),
                DockerError::DockerResponseServerError {
                    status_code: 400 | 403 | 500,
                    message,
                } => Error::invalid(format!("could not unpack the archive at {path}: {message}")),
                other => unavailable_or_internal(other),
            })
    }

    /// Streams a tar of `path`.
    pub fn get_archive(&self, docker_id: &str, path: &str) -> ByteStream {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let owned_path = path.to_owned();
        let client = match self.client() {
            Ok(client) => client,
            Err(err) => return Box::pin(futures_util::stream::once(async move { Err(err) })),
        };
        Box::pin(
            client
                .download_from_container(docker_id, Some(options))
                .map_err(move |err| match err {
                    DockerError::DockerResponseServerError {
                        status_code: 404, ..
                    } => Error::PathNotFound(owned_path.clone()),
                    other => unavailable_or_internal(other),
                }),
        )
    }

    /// Starts a process in a container; returns the exec id and its output. The
    /// output ends when the process (and everything holding its stdout/stderr) ends.
    pub async fn exec(&self, docker_id: &str, spec: ExecSpec) -> Result<(String, OutputStream)> {
        let options = CreateExecOptions {
            cmd: Some(spec.cmd),
            env: Some(spec.env),
            working_dir: spec.working_dir,
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let created = self
            .client()?
            .create_exec(docker_id, options)
            .await
            .map_err(exec_error)?;
        let started = self
            .client()?
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await
            .map_err(exec_error)?;
        let StartExecResults::Attached { output, .. } = started else {
            return Err(Error::internal(
                "exec started detached although attached was asked for",
            ));
        };
        let output = output.filter_map(|item| async move {
            match item {
                Ok(LogOutput::StdOut { message }) => Some(Ok(Output::Stdout(message))),
                Ok(LogOutput::StdErr { message }) => Some(Ok(Output::Stderr(message))),
                Ok(LogOutput::Console { message }) => Some(Ok(Output::Stdout(message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(err) => Some(Err(unavailable_or_internal(err))),
            }
        });
        Ok((created.id, Box::pin(output)))
    }

    /// The exit code of a finished exec; `None` while it still runs.
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        let inspect = self
            .client()?
            .inspect_exec(exec_id)
            .await
            .map_err(unavailable_or_internal)?;
        if inspect.running == Some(true) {
            return Ok(None);
        }
        Ok(inspect.exit_code)
    }
}

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
        other => Error::DockerUnavailable(format!("Docker engine unreachable: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            id: "repo-container-1-0".into(),
            name: "repo-container-1-0.abc".into(),
            instance: "abc".into(),
            image: "img".into(),
            env: vec!["A=b".into()],
            cpus: 1.5,
            memory_mb: 256,
            pids: 128,
            network: Network::None,
            labels: HashMap::new(),
            runtime: None,
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
        assert_eq!(host.init, Some(true));
        assert!(host.binds.is_none() && host.mounts.is_none());
        let labels = config.labels.unwrap();
        assert_eq!(
            labels.get(LABEL_ID).map(String::as_str),
            Some("repo-container-1-0")
        );
        assert_eq!(labels.get(LABEL_INSTANCE).map(String::as_str), Some("abc"));
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
