//! The backend boundary: where sandboxes live. Container lifecycle on one side (create
//! with the agent in it, inspect, list, remove), and on the other the byte stream to
//! each sandbox's agent, which [`crate::agent`] speaks its protocol over.
//!
//! Docker ([`crate::docker::Runtime`]) is the implementation today. A Kubernetes
//! backend would be a second one: a pod per sandbox (the agent as its container's
//! command, copied in by an init container), `pods/attach` for the stream, labels
//! for ownership. Nothing above this trait names an engine.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Result;

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

/// Where checkouts go inside a sandbox.
pub const WORKSPACE: &str = "/workspace";
/// Where the agent binary is placed inside a sandbox.
pub const AGENT_PATH: &str = "/.repobox/agent";

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
    pub id: String,
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
    /// Labels (metadata that must outlive the server process).
    pub labels: HashMap<String, String>,
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
    pub engine_id: String,
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

/// Where sandboxes live: the verbs the service needs from an engine.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Checks the engine answers, within `bound`.
    async fn ping(&self, bound: Duration) -> Result<()>;

    /// The engine's version string.
    async fn version(&self) -> Result<String>;

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

    /// Creates and starts a sandbox whose main process is `agent` (a static binary,
    /// placed at [`AGENT_PATH`]); returns the engine's id. A failed start leaves
    /// nothing behind.
    async fn create(&self, spec: &SandboxSpec, agent: &'static [u8]) -> Result<String>;

    /// Makes a started pool member the sandbox `spec` describes: renames it to
    /// `spec.name` and applies `spec`'s resources (cpus, memory, pids) when they
    /// differ from `current`. What only creation can set (image, runtime, network,
    /// disk limit, host name) is the pool key's and the member's own.
    async fn assign(&self, engine_id: &str, spec: &SandboxSpec, current: Limits) -> Result<()>;

    /// Copies a sandbox's whole filesystem into the image `reference` (`repo:tag`)
    /// labelled `labels`, pausing the sandbox for the moment of the copy at most.
    async fn snapshot(
        &self,
        engine_id: &str,
        reference: &str,
        labels: HashMap<String, String>,
    ) -> Result<ImageInfo>;

    /// Removes an image made by [`Self::snapshot`] or [`Self::build`]; one already
    /// gone is not an error.
    async fn remove_image(&self, reference: &str) -> Result<()>;

    /// Every image labelled `label` (`key=value`).
    async fn list_images(&self, label: &str) -> Result<Vec<ImageInfo>>;

    /// Attaches to the agent's stdin and stdout.
    async fn attach(&self, engine_id: &str) -> Result<Transport>;

    /// Removes a sandbox, killing it if running; one already gone is not an error.
    async fn remove(&self, engine_id: &str) -> Result<()>;

    /// Every sandbox (running or not) of repobox instance `instance`.
    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>>;

    /// Whether the engine can enforce a sandbox's disk limit.
    async fn disk_limits(&self) -> Result<DiskLimits>;

    /// A sandbox's state; `None` when it no longer exists.
    async fn inspect(&self, engine_id: &str) -> Result<Option<ContainerInfo>>;
}
