//! The Kubernetes backend (`BACKEND=kubernetes`): a sandbox is a pod, placed by the
//! cluster's own scheduler; the server talks to the API server alone (never to a node).
//!
//! - **The pod.** One container, `sandbox`, from the sandbox's image, whose command
//!   is the agent ([`AGENT_PATH`]) with stdin open: the agent is PID 1 of the
//!   container as on Docker. The agent comes from an **init container** of the
//!   agent's image ([`default_agent_image`], built by `repobox agent-image`), which
//!   copies itself (`repobox-agent install`) into an `emptyDir` the sandbox mounts at
//!   `/.repobox` (the agent keeps its scratch files there too, as on Docker).
//! - **The stream.** `pods/attach` (WebSocket, channel protocol v4) to the
//!   container's stdin and stdout: the same byte stream the agent speaks on Docker.
//! - **Hardening.** Every capability dropped but [`KEPT_CAPABILITIES`], no privilege
//!   escalation, no service-account token mounted, no service links, no host
//!   namespaces, grace period 0.
//! - **Runtime.** `KUBE_RUNTIME_CLASS` names the pods' RuntimeClass (the engine's
//!   `DOCKER_RUNTIME` is Docker's alone).
//! - **Limits.** cpus and memory as the container's limits (requests a fraction of
//!   them, `KUBE_REQUEST_PERCENT`, so a node holds more than its cores' worth of idle
//!   sandboxes). No disk limit: an `ephemeral-storage` limit is enforced by eviction
//!   after the fact, and only where the kubelet measures a container's writable
//!   layer (not on the test cluster, Docker on btrfs), so `disk_mb` is refused as on
//!   any engine that cannot cap it (`/info.disk_limits`). Kubernetes 1.20 has no
//!   per-pod process limit (the node's `podPidsLimit` applies) and cannot change a
//!   running pod's limits, so a warm-pool member serves only requests with its
//!   limits (the pool learns this from the first refusal).
//! - **Network.** Pods of `network: none` are labelled `repobox.network=none`; a
//!   NetworkPolicy the backend keeps in its namespace denies them all ingress and
//!   egress (on clusters whose network plugin enforces policies). The test cluster of
//!   `scripts/kubernetes.sh` has no pod network at all: its pods hold loopback alone.
//! - **Identity.** Labels hold identity (see [`crate::backend`]), their values made
//!   valid label values (a value that is not — an image reference — is replaced by
//!   its digest); the values as given are kept in the annotation
//!   [`ANNOTATION_LABELS`] and read back from there. Descriptive metadata goes into
//!   annotations. After a restart, the pods listed by label are the sandboxes.
//! - **No image store**: images, snapshots and forks answer 501.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, AttachParams, AttachedProcess, DeleteParams, ListParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncRead, ReadBuf};

use crate::backend::{
    AGENT_PATH, Backend, BackendKind, ContainerInfo, ContainerState, DiskLimits, ImageStore,
    KEPT_CAPABILITIES, LABEL_INSTANCE, LABEL_MANAGED, Limits, ManagedContainer, Network,
    SandboxSpec, Transport, WORKSPACE,
};
use crate::error::{Error, Result};
use crate::id::EngineId;

/// The sandbox's container in its pod.
const CONTAINER: &str = "sandbox";
/// Where the init container puts the agent (the directory of [`AGENT_PATH`]).
const AGENT_DIR: &str = "/.repobox";
/// The agent's path inside the agent's image.
const IMAGE_AGENT_PATH: &str = "/repobox-agent";
/// Annotation holding the identity labels as given (label values must be short and
/// plain; these may not be).
pub const ANNOTATION_LABELS: &str = "repobox.labels";
/// Label saying how a pod reaches the network (`none`, `bridge`): what the
/// NetworkPolicy selects.
pub const LABEL_NETWORK: &str = "repobox.network";
/// The NetworkPolicy isolating pods of `network: none`.
const ISOLATION_POLICY: &str = "repobox-sandbox-isolation";
/// Bytes buffered each way of an attach stream.
const ATTACH_BUFFER: usize = 256 * 1024;
/// Reasons a container waits for that will not pass by waiting.
const HOPELESS_WAITS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// How the backend reaches its cluster (`KUBECONFIG`, `KUBE_*` settings).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A kubeconfig file; `None`: the usual places (`$KUBECONFIG`, `~/.kube/config`,
    /// the in-cluster service account).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The namespace sandboxes go in.
    pub namespace: String,
    /// The agent's image (`None`: [`default_agent_image`]).
    pub agent_image: Option<String>,
    /// The pods' image pull policy (`IfNotPresent`, `Always`, `Never`).
    pub pull_policy: String,
    /// The pods' RuntimeClass (`None`: the cluster's default runtime).
    pub runtime_class: Option<String>,
    /// Requests as a percentage of limits.
    pub request_percent: u8,
    /// Bound on a pod's start (scheduling, pulls, the agent's copy).
    pub start_timeout: Duration,
}

/// The agent image this server's agent is in: `repobox/agent:<version>-<digest>`, the
/// digest that of the agent binary, so that a changed agent never meets an old image.
pub fn default_agent_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        format!(
            "repobox/agent:{}-{}",
            crate::backend::AGENT_VERSION,
            short_digest(crate::backend::AGENT_BINARY, 6)
        )
    })
}

/// The first `bytes` bytes of `data`'s SHA-256, in hex.
fn short_digest(data: &[u8], bytes: usize) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `docker build` context (a tar) of the agent's image: the agent binary alone,
/// `FROM scratch`. `repobox agent-image | docker build -t "$(repobox agent-image
/// --tag)" -` builds it.
pub fn agent_image_context() -> std::io::Result<Vec<u8>> {
    let dockerfile = format!(
        "FROM scratch\nCOPY repobox-agent {IMAGE_AGENT_PATH}\nENTRYPOINT [\"{IMAGE_AGENT_PATH}\"]\n"
    );
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, body) in [
        ("Dockerfile", 0o644, dockerfile.as_bytes()),
        ("repobox-agent", 0o755, crate::backend::AGENT_BINARY),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append_data(&mut header, path, body)?;
    }
    builder.into_inner()
}

/// The Kubernetes backend.
pub struct Kubernetes {
    client: kube::Client,
    pods: Api<Pod>,
    settings: Settings,
    agent_image: String,
}

impl Kubernetes {
    /// Connects to the cluster `settings` name and keeps the isolation policy in its
    /// namespace. Fails when the kubeconfig cannot be read; an API server that does
    /// not answer yet is reported by [`Backend::ping`] instead.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let config = match &settings.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
            }
            None => kube::Config::infer().await?,
        };
        let client = kube::Client::try_from(config)?;
        let pods = Api::namespaced(client.clone(), &settings.namespace);
        let agent_image = settings
            .agent_image
            .clone()
            .unwrap_or_else(|| default_agent_image().to_owned());
        let backend = Self {
            client,
            pods,
            settings,
            agent_image,
        };
        if let Err(err) = backend.keep_isolation_policy().await {
            tracing::warn!(%err, "cannot keep the NetworkPolicy that isolates sandboxes of network none");
        }
        Ok(backend)
    }

    /// Creates the NetworkPolicy denying pods of `network: none` all traffic, when
    /// missing.
    async fn keep_isolation_policy(&self) -> Result<()> {
        let policies: Api<NetworkPolicy> =
            Api::namespaced(self.client.clone(), &self.settings.namespace);
        if policies
            .get_opt(ISOLATION_POLICY)
            .await
            .map_err(api_error)?
            .is_some()
        {
            return Ok(());
        }
        let policy: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": ISOLATION_POLICY, "labels": {LABEL_MANAGED: "true"}},
            "spec": {
                "podSelector": {"matchLabels": {LABEL_MANAGED: "true", LABEL_NETWORK: "none"}},
                "policyTypes": ["Ingress", "Egress"],
            }
        }))
        .map_err(Error::internal)?;
        match policies.create(&PostParams::default(), &policy).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(api_error(err)),
        }
    }

    /// The pod `spec` describes.
    fn pod(&self, spec: &SandboxSpec) -> Result<Pod> {
        let given = spec.identity_labels();
        let mut labels: BTreeMap<String, String> = given
            .iter()
            .map(|(key, value)| (key.clone(), label_value(value)))
            .collect();
        labels.insert(
            LABEL_NETWORK.to_owned(),
            match spec.network {
                Network::None => "none",
                Network::Bridge => "bridge",
            }
            .to_owned(),
        );
        let mut annotations: BTreeMap<String, String> = spec
            .annotations
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let given: BTreeMap<&String, &String> = given.iter().collect();
        annotations.insert(
            ANNOTATION_LABELS.to_owned(),
            serde_json::to_string(&given).map_err(Error::internal)?,
        );
        let percent = f64::from(self.settings.request_percent.clamp(1, 100)) / 100.0;
        let millicpus = (spec.cpus * 1000.0).round().max(1.0) as u64;
        let mut limits = json!({
            "cpu": format!("{millicpus}m"),
            "memory": format!("{}Mi", spec.memory_mb),
        });
        let mut requests = json!({
            "cpu": format!("{}m", ((millicpus as f64 * percent) as u64).max(1)),
            "memory": format!("{}Mi", ((spec.memory_mb as f64 * percent) as u64).max(1)),
        });
        if let Some(disk_mb) = spec.disk_mb {
            limits["ephemeral-storage"] = json!(format!("{disk_mb}Mi"));
            requests["ephemeral-storage"] =
                json!(format!("{}Mi", ((disk_mb as f64 * percent) as u64).max(1)));
        }
        let drop_all = json!({
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
        });
        let mut sandbox_security = drop_all.clone();
        sandbox_security["capabilities"]["add"] = json!(KEPT_CAPABILITIES);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": spec.name,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {
                "restartPolicy": "Never",
                "hostname": spec.hostname,
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 0,
                "runtimeClassName": self.settings.runtime_class,
                // The agent's directory also holds its sessions' and git's scratch
                // files (what the sandbox writes there counts toward the pod's
                // ephemeral-storage limit).
                "volumes": [{"name": "agent", "emptyDir": {}}],
                "initContainers": [{
                    "name": "agent",
                    "image": self.agent_image,
                    "imagePullPolicy": self.settings.pull_policy,
                    "command": [IMAGE_AGENT_PATH, "install", AGENT_PATH],
                    "volumeMounts": [{"name": "agent", "mountPath": AGENT_DIR}],
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "64Mi"},
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                    },
                    "securityContext": drop_all,
                }],
                "containers": [{
                    "name": CONTAINER,
                    "image": spec.image,
                    "imagePullPolicy": self.settings.pull_policy,
                    "command": [AGENT_PATH],
                    "args": [],
                    "stdin": true,
                    "stdinOnce": false,
                    "tty": false,
                    "workingDir": WORKSPACE,
                    "volumeMounts": [{"name": "agent", "mountPath": AGENT_DIR}],
                    "resources": {"limits": limits, "requests": requests},
                    "securityContext": sandbox_security,
                }],
            }
        });
        serde_json::from_value(pod).map_err(Error::internal)
    }

    /// Waits until the pod's sandbox container runs; fails (the pod left for the
    /// caller to remove) when it ends or waits for something waiting will not bring.
    async fn await_running(&self, name: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.settings.start_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let pod = self.pods.get_opt(name).await.map_err(api_error)?;
            let Some(pod) = pod else {
                return Err(Error::NotRunning(format!(
                    "pod {name} vanished while starting"
                )));
            };
            let last = match progress(&pod) {
                Progress::Running => return Ok(()),
                Progress::Failed(err) => return Err(err),
                Progress::Waiting(why) => why,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NoCapacity(format!(
                    "pod {name} did not start within {:?}: {last}",
                    self.settings.start_timeout
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// Where a starting pod is.
enum Progress {
    Running,
    Waiting(String),
    Failed(Error),
}

/// Reads a starting pod's status.
fn progress(pod: &Pod) -> Progress {
    let Some(status) = &pod.status else {
        return Progress::Waiting("no status yet".to_owned());
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in statuses {
        let Some(state) = &container.state else {
            continue;
        };
        if let Some(waiting) = &state.waiting {
            let reason = waiting.reason.as_deref().unwrap_or_default();
            if HOPELESS_WAITS.contains(&reason) {
                let message = waiting.message.as_deref().unwrap_or_default();
                let detail = format!(
                    "container {} of the pod cannot start: {reason}: {message}",
                    container.name
                );
                return Progress::Failed(if reason.contains("Image") {
                    Error::ImageNotFound(format!("{} ({detail})", container.image))
                } else {
                    Error::internal(detail)
                });
            }
        }
        if let Some(terminated) = &state.terminated
            && (container.name == CONTAINER || terminated.exit_code != 0)
        {
            return Progress::Failed(Error::internal(format!(
                "container {} of the pod ended ({}, exit code {}): {}",
                container.name,
                terminated.reason.as_deref().unwrap_or("no reason"),
                terminated.exit_code,
                terminated.message.as_deref().unwrap_or_default()
            )));
        }
        if container.name == CONTAINER && state.running.is_some() {
            return Progress::Running;
        }
    }
    if matches!(phase, "Failed" | "Succeeded") {
        return Progress::Failed(Error::internal(format!(
            "the pod ended ({phase}): {}",
            status.message.as_deref().unwrap_or_default()
        )));
    }
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "PodScheduled" && condition.status == "False");
    Progress::Waiting(match unschedulable {
        Some(condition) => format!(
            "not scheduled: {}",
            condition.message.as_deref().unwrap_or_default()
        ),
        None => format!("phase {phase}"),
    })
}

/// A pod's state as the service sees a container's.
fn container_info(pod: &Pod) -> ContainerInfo {
    let terminated = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|status| status.name == CONTAINER))
        .and_then(|status| status.state.as_ref())
        .and_then(|state| state.terminated.as_ref());
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending");
    let state = if pod.metadata.deletion_timestamp.is_some() {
        ContainerState::Removing
    } else if terminated.is_some() || matches!(phase, "Failed" | "Succeeded") {
        ContainerState::Exited
    } else if phase == "Pending" {
        ContainerState::Created
    } else {
        ContainerState::Running
    };
    ContainerInfo {
        state,
        oom_killed: terminated.and_then(|t| t.reason.as_deref()) == Some("OOMKilled"),
        exit_code: terminated.map(|t| i64::from(t.exit_code)),
    }
}

/// `value` as a label value: itself when it is one (at most 63 of `[A-Za-z0-9._-]`,
/// alphanumeric at both ends), otherwise `h-` and its digest.
fn label_value(value: &str) -> String {
    let valid = value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.as_bytes()[0].is_ascii_alphanumeric()
            && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric());
    if valid {
        return value.to_owned();
    }
    format!("h-{}", short_digest(value.as_bytes(), 16))
}

/// A kube error as the service's: an API server that cannot be reached is the
/// engine being unavailable.
fn api_error(err: kube::Error) -> Error {
    match err {
        kube::Error::Api(status) if status.code == 403 || status.code == 401 => {
            Error::EngineUnavailable(format!(
                "the API server refused repobox ({}): {}",
                status.code, status.message
            ))
        }
        kube::Error::Api(status) => Error::internal(format!(
            "the API server answered {}: {}",
            status.code, status.message
        )),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            Error::EngineUnavailable(format!("the API server does not answer: {err}"))
        }
        other => Error::internal(format!("talking to the API server: {other}")),
    }
}

#[async_trait::async_trait]
impl Backend for Kubernetes {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    fn images(&self) -> Option<&dyn ImageStore> {
        None
    }

    fn capabilities(&self) -> &'static [&'static str] {
        KEPT_CAPABILITIES
    }

    fn unsupported(&self) -> Vec<String> {
        [
            "resources.pids (Kubernetes 1.20 limits processes per node: the kubelet's podPidsLimit)",
            "resources.disk_mb (ephemeral-storage limits are enforced by eviction, where at all)",
            "changing a warm-pool member's limits (pods keep the limits they were made with)",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    async fn ping(&self, bound: Duration) -> Result<()> {
        match tokio::time::timeout(bound, self.client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(Error::EngineUnavailable(format!(
                "the API server does not answer: {err}"
            ))),
            Err(_) => Err(Error::EngineUnavailable(format!(
                "the API server did not answer within {bound:?}"
            ))),
        }
    }

    async fn version(&self) -> Result<String> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|err| Error::EngineUnavailable(format!("the API server: {err}")))?;
        Ok(info.git_version)
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<EngineId> {
        let pod = self.pod(spec)?;
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 403 && status.reason == "Forbidden" => {
                // A quota of the namespace (pods, cpu, memory) is full.
                return Err(Error::NoCapacity(format!(
                    "the cluster refused the pod: {}",
                    status.message
                )));
            }
            Err(kube::Error::Api(status)) if status.code == 422 => {
                return Err(Error::Invalid(format!(
                    "the cluster refused the pod: {}",
                    status.message
                )));
            }
            Err(err) => return Err(api_error(err)),
        }
        let engine_id = EngineId::from(spec.name.clone());
        if let Err(err) = self.await_running(&spec.name).await {
            let _ = self.remove(&engine_id).await;
            return Err(err);
        }
        Ok(engine_id)
    }

    async fn assign(
        &self,
        engine_id: &EngineId,
        spec: &SandboxSpec,
        current: Limits,
    ) -> Result<()> {
        // Pods are never renamed (the record maps the sandbox to its pod) and cannot
        // change their limits.
        if spec.limits() != current {
            return Err(Error::Conflict(format!(
                "pod {engine_id} has other limits, and a pod's cannot change"
            )));
        }
        Ok(())
    }

    async fn attach(&self, engine_id: &EngineId) -> Result<Transport> {
        let mut params = AttachParams::default()
            .container(CONTAINER)
            .stdin(true)
            .stdout(true)
            .stderr(false);
        params.max_stdin_buf_size = Some(ATTACH_BUFFER);
        params.max_stdout_buf_size = Some(ATTACH_BUFFER);
        let mut process = self
            .pods
            .attach(engine_id.as_str(), &params)
            .await
            .map_err(|err| match err {
                kube::Error::Api(status) if status.code == 404 => {
                    Error::NotRunning(format!("pod {engine_id} is gone"))
                }
                kube::Error::Api(status) if status.code == 400 => Error::NotRunning(format!(
                    "pod {engine_id} cannot be attached to: {}",
                    status.message
                )),
                other => api_error(other),
            })?;
        let (Some(writer), Some(reader)) = (process.stdin(), process.stdout()) else {
            return Err(Error::internal("the attach stream has no stdin or stdout"));
        };
        Ok(Transport {
            reader: Box::pin(Attached {
                reader,
                _process: process,
            }),
            writer: Box::pin(writer),
        })
    }

    async fn remove(&self, engine_id: &EngineId) -> Result<()> {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::background()
        };
        match self.pods.delete(engine_id.as_str(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(api_error(err)),
        }
    }

    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>> {
        let selector = format!(
            "{LABEL_MANAGED}=true,{LABEL_INSTANCE}={}",
            label_value(instance)
        );
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error)?;
        Ok(pods
            .items
            .into_iter()
            .filter_map(|pod| {
                let labels: HashMap<String, String> = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|annotations| annotations.get(ANNOTATION_LABELS))
                    .and_then(|given| serde_json::from_str(given).ok())?;
                Some(ManagedContainer {
                    engine_id: EngineId::from(pod.metadata.name.clone()?),
                    state: container_info(&pod).state,
                    labels,
                })
            })
            .collect())
    }

    async fn disk_limits(&self) -> Result<DiskLimits> {
        // An ephemeral-storage limit is enforced by eviction, after the fact, and
        // only where the kubelet measures a container's writable layer (not with
        // Docker on btrfs, as on the test cluster): not a cap repobox can promise.
        Ok(DiskLimits {
            enforced: false,
            reason: Some(
                "Kubernetes enforces ephemeral-storage only by evicting a pod after the fact, \
                 and only where the kubelet measures a container's writable layer"
                    .to_owned(),
            ),
            memory_bytes: None,
            store_bytes: None,
        })
    }

    async fn inspect(&self, engine_id: &EngineId) -> Result<Option<ContainerInfo>> {
        let pod = self
            .pods
            .get_opt(engine_id.as_str())
            .await
            .map_err(api_error)?;
        Ok(pod.as_ref().map(container_info))
    }
}

/// The agent's stdout, holding the attach session (its WebSocket closes when this
/// is dropped).
struct Attached<R> {
    reader: R,
    _process: AttachedProcess,
}

impl<R: AsyncRead + Unpin> AsyncRead for Attached<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_stay_when_valid_and_are_digested_when_not() {
        assert_eq!(label_value("repo-container-1-2"), "repo-container-1-2");
        assert_eq!(label_value(""), "");
        let image = label_value("repobox/sandbox:bookworm");
        assert!(image.starts_with("h-") && image.len() == 34, "{image}");
        assert_eq!(image, label_value("repobox/sandbox:bookworm"));
        assert!(label_value(&"a".repeat(64)).starts_with("h-"));
        assert!(label_value("-a").starts_with("h-"));
    }

    #[test]
    fn the_agent_image_names_the_agent_it_holds() {
        let image = default_agent_image();
        assert!(image.starts_with("repobox/agent:"), "{image}");
        let context = agent_image_context().unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|entry| entry.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "repobox-agent"]);
    }
}
