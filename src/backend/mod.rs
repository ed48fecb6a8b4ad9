//! The backend boundary: where sandboxes live. Two roles:
//!
//! - [`Backend`], *placement*: create a sandbox with its agent in it, bind a warm-pool
//!   member to a sandbox, attach to the agent's stdin/stdout (the byte stream
//!   [`crate::agent`] speaks its protocol over), inspect, remove, list what it owns.
//!   Every backend has it.
//! - [`ImageStore`]: image lookup, pull, build, snapshot, remove and list images. A
//!   backend may lack one ([`Backend::images`] is `None`): the routes of images,
//!   snapshots and forks then answer 501 (`not_supported`), and a sandbox's image is
//!   resolved by the engine itself.
//!
//! Implementations: Docker ([`crate::docker::Runtime`], both roles) and the local test
//! backend ([`local::Local`], placement only, no isolation), and Kubernetes
//! ([`crate::kubernetes::Kubernetes`], placement only): a pod per sandbox (the agent
//! as its container's command, copied in by an init container), `pods/attach` for
//! the stream, labels for ownership. Nothing above this module names an engine.
//!
//! Labels ([`SandboxSpec::labels`]) hold identity alone (managed, instance, id, pool,
//! job, protocol version): short values any engine can hold as labels (Kubernetes
//! label values cannot hold URLs or timestamps). Descriptive metadata goes in
//! [`SandboxSpec::annotations`], which an engine keeps where it can (Docker: labels
//! too; Kubernetes: annotations); nothing reads it back.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::id::{EngineId, SandboxId};

pub mod local;

/// Version of the agent binary this server carries.
pub const AGENT_VERSION: &str = env!("REPOBOX_AGENT_VERSION");

/// The agent binary (static, x86-64 Linux) every backend provisions in its sandboxes; built from
/// `crates/agent` by the build script.
pub static AGENT_BINARY: &[u8] = include_bytes!(env!("REPOBOX_AGENT_BINARY"));

/// Label set on every container repobox owns.
pub const LABEL_MANAGED: &str = "repobox.managed";
/// Label naming the repobox instance (one `DATA_DIR`) that owns the container, so
/// that several instances can share one engine without touching each other's.
pub const LABEL_INSTANCE: &str = "repobox.instance";
/// Label holding the sandbox id.
pub const LABEL_ID: &str = "repobox.id";
/// Label holding the agent protocol version the sandbox was made for. Containers
/// without it were made by a repobox from before the agent.
pub const LABEL_AGENT_PROTOCOL: &str = "repobox.agent_protocol";
/// Label on the members of the warm pool: the pool key they were made for. Docker
/// fixes labels at creation, so a claimed member keeps it; a sandbox's record (by
/// engine id) and its container's name say which members became sandboxes.
pub const LABEL_POOL: &str = "repobox.pool";
/// Label of a sandbox that runs an entry of a job: the job's id.
pub const LABEL_JOB: &str = "repobox.job";
/// Label on snapshot images: the repobox instance whose snapshot it is.
pub const LABEL_SNAPSHOT_INSTANCE: &str = "repobox.snapshot.instance";
/// Label on snapshot images: the snapshot id.
pub const LABEL_SNAPSHOT_ID: &str = "repobox.snapshot.id";
/// Label on built images: the repobox instance that built it.
pub const LABEL_IMAGE_INSTANCE: &str = "repobox.image.instance";
/// Label on built images: the image id (`img-…`).
pub const LABEL_IMAGE_ID: &str = "repobox.image.id";
/// Label prefix for sandbox metadata that must survive a restart.
pub const LABEL_PREFIX: &str = "repobox.";
/// Annotation holding the sandbox's repository URL (credentials removed).
pub const ANNOTATION_REPO_URL: &str = "repobox.repo_url";
/// Annotation holding when the sandbox was made (RFC 3339).
pub const ANNOTATION_CREATED_AT: &str = "repobox.created_at";
/// Annotation holding when the sandbox expires (RFC 3339).
pub const ANNOTATION_EXPIRES_AT: &str = "repobox.expires_at";

/// Where checkouts go inside a sandbox.
pub const WORKSPACE: &str = "/workspace";
/// Where the agent binary is placed inside a sandbox.
pub const AGENT_PATH: &str = "/.repobox/agent";

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

/// Everything needed to create one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The sandbox id (labelled on the container).
    pub id: SandboxId,
    /// Container name: unique on the engine, also across repobox instances.
    pub name: String,
    /// Host name inside the sandbox (unique per sandbox).
    pub hostname: String,
    /// The repobox instance that owns it (see [`LABEL_INSTANCE`]).
    pub instance: String,
    /// Image reference.
    pub image: String,
    /// CPU limit.
    pub cpus: f64,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Process limit.
    pub pids: i64,
    /// Network mode.
    pub network: Network,
    /// Identity labels (short values: see the module's docs), read back by
    /// [`Backend::list_managed`].
    pub labels: HashMap<String, String>,
    /// Descriptive metadata (repository URL, times) for people looking at the engine;
    /// never read back (the record holds it).
    pub annotations: HashMap<String, String>,
    /// OCI runtime (e.g. `runsc`); `None`: the engine's default.
    pub runtime: Option<String>,
    /// Most the sandbox may write, in MiB (`None`: no limit).
    pub disk_mb: Option<u64>,
}

/// An image made from a sandbox.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The engine's image id.
    pub id: String,
    /// Its size in bytes (what it adds to its base, where the engine says).
    pub size_bytes: u64,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// The paths it declares as volumes (`VOLUME`): the engine would put them outside
    /// the container's disk limit.
    pub volumes: Vec<String>,
}

/// Registry credentials for one pull. Never logged: `Debug` shows the server alone.
#[derive(Clone)]
pub struct Credentials {
    /// The registry (`host[:port]`, as the auth file names it).
    pub server: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// One step of a pull, as the engine reports it.
#[derive(Debug, Clone, Default)]
pub struct PullProgress {
    /// The layer it is about (empty for the image as a whole).
    pub layer: String,
    /// The engine's word for the step (`Downloading`, `Pull complete`, …).
    pub status: String,
    /// Bytes done of the layer's current step.
    pub current: u64,
    /// The layer's size, where known.
    pub total: u64,
}

/// What a build reports.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// Output of the build (a step, a command's output).
    Log(String),
    /// The built image's id.
    Built(String),
}

/// A stream of a pull's progress; it ends when the pull does, with an error item when
/// it failed.
pub type PullStream = Pin<Box<dyn Stream<Item = Result<PullProgress>> + Send>>;

/// A stream of a build's output; it ends when the build does, with an error item when
/// it failed.
pub type BuildStream = Pin<Box<dyn Stream<Item = Result<BuildEvent>> + Send>>;

/// Everything needed to build one image from a context.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Reference (`repo:tag`) the image gets.
    pub reference: String,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    /// Build arguments.
    pub build_args: HashMap<String, String>,
    /// Labels of the image.
    pub labels: HashMap<String, String>,
    /// Whether build steps reach the network (the engine's bridge).
    pub network: bool,
    /// Memory limit of each build step, in MiB.
    pub memory_mb: u64,
    /// Most processes the build's steps may run together.
    pub pids: i64,
}

/// The limits of a running container that can change after its creation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// CPU limit.
    pub cpus: f64,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Process limit.
    pub pids: i64,
}

impl SandboxSpec {
    /// The labels every backend puts on a sandbox: the spec's own, then the identity
    /// repobox reads back (managed, id, instance, agent protocol).
    pub fn identity_labels(&self) -> HashMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        labels.insert(LABEL_ID.to_owned(), self.id.to_string());
        labels.insert(LABEL_INSTANCE.to_owned(), self.instance.clone());
        labels.insert(
            LABEL_AGENT_PROTOCOL.to_owned(),
            repobox_protocol::PROTOCOL_VERSION.to_string(),
        );
        labels
    }

    /// The limits this spec asks for.
    pub fn limits(&self) -> Limits {
        Limits {
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            pids: self.pids,
        }
    }
}

/// Whether the engine can cap what a sandbox writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DiskLimits {
    /// Whether `resources.disk_mb` is enforced.
    pub enforced: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
    /// The host's memory, as the engine reports it (`None`: unknown).
    pub memory_bytes: Option<u64>,
    /// The size of the engine's store, where it can be read (`None`: unknown).
    pub store_bytes: Option<u64>,
}

/// What the engine says about a container's life.
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

/// A container's state with, for one that ended, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Its state.
    pub state: ContainerState,
    /// Killed by the kernel's OOM killer.
    pub oom_killed: bool,
    /// Exit code of its main process (the init, which passes on the agent's).
    pub exit_code: Option<i64>,
}

/// A container carrying our labels, as found by [`Backend::list_managed`].
#[derive(Debug, Clone)]
pub struct ManagedContainer {
    /// The engine's id.
    pub engine_id: EngineId,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its state.
    pub state: ContainerState,
}

/// A byte stream coming out of the engine.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A body streaming into a sandbox.
pub type BodyStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The two directions of the stream to a sandbox's agent (its stdin and stdout).
pub struct Transport {
    /// What the agent writes.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// What the agent reads.
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Which backend a server runs on (`BACKEND`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Docker Engine (the default): containers, images, snapshots.
    Docker,
    /// Child processes of the server in namespaces of their own: a test backend with
    /// no isolation and no image store. Never for production.
    Local,
    /// A Kubernetes cluster: a pod per sandbox, reached through the API server's
    /// `pods/attach`; no image store.
    Kubernetes,
}

impl BackendKind {
    /// Its name, as `BACKEND` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Docker => "docker",
            BackendKind::Local => "local",
            BackendKind::Kubernetes => "kubernetes",
        }
    }
}

/// Where sandboxes live: the placement verbs the service needs from an engine.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// The backend's image store; `None` when it has none (images, snapshots and
    /// forks are then not supported).
    fn images(&self) -> Option<&dyn ImageStore>;

    /// The Linux capabilities a sandbox's processes keep (reported by `/info`).
    fn capabilities(&self) -> &'static [&'static str];

    /// Features of the API this backend cannot serve, for `/info` (the routes of an
    /// image store are added when [`Self::images`] is `None`).
    fn unsupported(&self) -> Vec<String> {
        Vec::new()
    }

    /// Checks the engine answers, within `bound`.
    async fn ping(&self, bound: Duration) -> Result<()>;

    /// The engine's version string.
    async fn version(&self) -> Result<String>;

    /// Creates and starts a sandbox whose main process is the agent (the backend
    /// provisions it: see [`AGENT_PATH`]); returns the engine's id. A failed start
    /// leaves nothing behind.
    async fn create(&self, spec: &SandboxSpec) -> Result<EngineId>;

    /// Makes a started pool member the sandbox `spec` describes: renames it to
    /// `spec.name` and applies `spec`'s resources (cpus, memory, pids) when they
    /// differ from `current`. What only creation can set (image, runtime, network,
    /// disk limit, host name) is the pool key's and the member's own.
    async fn assign(&self, engine_id: &EngineId, spec: &SandboxSpec, current: Limits)
    -> Result<()>;

    /// Attaches to the agent's stdin and stdout.
    async fn attach(&self, engine_id: &EngineId) -> Result<Transport>;

    /// Removes a sandbox, killing it if running; one already gone is not an error.
    async fn remove(&self, engine_id: &EngineId) -> Result<()>;

    /// Every sandbox (running or not) of repobox instance `instance`.
    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>>;

    /// Whether the engine can enforce a sandbox's disk limit.
    async fn disk_limits(&self) -> Result<DiskLimits>;

    /// A sandbox's state; `None` when it no longer exists.
    async fn inspect(&self, engine_id: &EngineId) -> Result<Option<ContainerInfo>>;
}

/// The images of an engine: what sandboxes start from, and what snapshots make.
#[async_trait::async_trait]
pub trait ImageStore: Send + Sync {
    /// Whether `image` is present.
    async fn image_exists(&self, image: &str) -> Result<bool> {
        Ok(self.image(image).await?.is_some())
    }

    /// The image `reference` names; `None` when the engine has none.
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>>;

    /// Pulls `reference` from its registry.
    fn pull(&self, reference: &str, credentials: Option<Credentials>) -> PullStream;

    /// Builds an image from `context` (a tar) as `spec` says.
    fn build(&self, context: BodyStream, spec: BuildSpec) -> BuildStream;

    /// Copies a sandbox's whole filesystem into the image `reference` (`repo:tag`)
    /// labelled `labels`, pausing the sandbox for the moment of the copy at most.
    async fn snapshot(
        &self,
        engine_id: &EngineId,
        reference: &str,
        labels: HashMap<String, String>,
    ) -> Result<ImageInfo>;

    /// Removes an image made by [`Self::snapshot`] or [`Self::build`]; one already
    /// gone is not an error.
    async fn remove_image(&self, reference: &str) -> Result<()>;

    /// Every image labelled `label` (`key=value`).
    async fn list_images(&self, label: &str) -> Result<Vec<ImageInfo>>;
}

/// The API's route templates that need an image store (501 without one).
pub const IMAGE_STORE_ROUTES: &[&str] = &[
    "/api/v1/images",
    "/api/v1/images/{image_id}",
    "/api/v1/images/{image_id}/logs",
    "/api/v1/snapshots",
    "/api/v1/snapshots/{snapshot_id}",
    "/api/v1/containers/{container_id}/snapshots",
    "/api/v1/containers/{container_id}/fork",
];

/// The template of [`IMAGE_STORE_ROUTES`] that `path` (a request's path) falls under.
pub fn image_store_route(path: &str) -> Option<&'static str> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    IMAGE_STORE_ROUTES.iter().copied().find(|template| {
        let pattern: Vec<&str> = template.split('/').collect();
        pattern.len() == segments.len()
            && pattern.iter().zip(&segments).all(|(pattern, segment)| {
                (pattern.starts_with('{') && !segment.is_empty()) || pattern == segment
            })
    })
}

/// `backend`'s image store, or 501 (`not_supported`) when it has none.
pub fn image_store(backend: &dyn Backend) -> Result<&dyn ImageStore> {
    backend.images().ok_or_else(|| {
        Error::NotSupported(format!(
            "the {} backend has no image store: images, snapshots and forks are not supported",
            backend.kind().as_str()
        ))
    })
}

/// What a backend cannot serve, as `/info.backend.unsupported` lists it.
pub fn unsupported(backend: &dyn Backend) -> Vec<String> {
    let mut unsupported: Vec<String> = if backend.images().is_none() {
        IMAGE_STORE_ROUTES
            .iter()
            .map(|route| (*route).to_owned())
            .collect()
    } else {
        Vec::new()
    };
    unsupported.extend(backend.unsupported());
    unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_under_image_store_routes() {
        assert_eq!(image_store_route("/api/v1/images"), Some("/api/v1/images"));
        assert_eq!(
            image_store_route("/api/v1/containers/abc/fork"),
            Some("/api/v1/containers/{container_id}/fork")
        );
        assert_eq!(
            image_store_route("/api/v1/images/img-1/logs"),
            Some("/api/v1/images/{image_id}/logs")
        );
        assert_eq!(image_store_route("/api/v1/containers/abc"), None);
        assert_eq!(image_store_route("/api/v1/containers/abc/execute"), None);
    }
}
