//! Health, readiness, liveness and service information.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Json};
use crate::backend::Network;
use crate::error::Error;
use crate::registry::Resources;
use crate::sync::Locked as _;

/// How long a health probe waits for Docker.
const PROBE_BOUND: Duration = Duration::from_secs(2);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health_check))
        .routes(routes!(readiness_check))
        .routes(routes!(liveness_check))
        .routes(routes!(get_info))
}

/// Health with statistics.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `healthy` when Docker answers, else `unhealthy`.
    pub status: String,
    /// Service version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Sandboxes that exist.
    pub active_containers: usize,
    /// Whether the Docker engine answers.
    pub docker_available: bool,
}

/// Readiness.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready` or `not ready`.
    pub status: String,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Liveness.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct LiveResponse {
    /// Always `alive`.
    pub status: String,
}

/// Service health, with statistics.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = HealthResponse)))]
pub async fn health_check(State(state): State<AppState>) -> Json<HealthResponse> {
    let docker_available = state.sandboxes.backend().ping(PROBE_BOUND).await.is_ok();
    state.metrics.docker_up.set(i64::from(docker_available));
    Json(HealthResponse {
        status: if docker_available {
            "healthy"
        } else {
            "unhealthy"
        }
        .to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        active_containers: state.sandboxes.count(),
        docker_available,
    })
}

/// The last readiness probe's finding: `None` before the first, then `Ok` (ready) or
/// why the server is not ready.
#[derive(Default)]
pub struct Readiness {
    found: std::sync::Mutex<Option<std::result::Result<(), String>>>,
    probing: tokio::sync::Mutex<()>,
}

impl Readiness {
    /// The last finding, if there was a probe.
    pub fn cached(&self) -> Option<std::result::Result<(), String>> {
        self.found.locked().clone()
    }

    /// Probes the engine (one probe at a time) and keeps the finding: why the server
    /// is not ready, or `None`.
    pub async fn refresh(
        &self,
        sandboxes: &crate::sandbox::Sandboxes,
        base_image: &str,
    ) -> Option<String> {
        let _one = self.probing.lock().await;
        let runtime = sandboxes.backend();
        let reason = match runtime.ping(PROBE_BOUND).await {
            Err(err) => Some(err.to_string()),
            // Without an image store the engine resolves images itself, at create.
            Ok(()) if runtime.images().is_none() => None,
            Ok(()) => {
                let exists = async {
                    crate::backend::image_store(runtime)?
                        .image_exists(base_image)
                        .await
                };
                match tokio::time::timeout(PROBE_BOUND, exists).await {
                    Ok(Ok(true)) => None,
                    Ok(Ok(false)) => Some(format!(
                        "base image {base_image} is missing; build it with scripts/build-image.sh"
                    )),
                    Ok(Err(err)) => Some(err.to_string()),
                    Err(_) => Some("the engine did not answer in time".to_owned()),
                }
            }
        };
        *self.found.locked() = Some(reason.clone().map_or(Ok(()), Err));
        reason
    }
}

/// Ready for traffic: Docker answers and the base image is present. 503 otherwise.
#[utoipa::path(get, path = "/health/ready", tag = "health", security(()), responses(
    (status = 200, body = ReadyResponse),
    (status = 503, body = ReadyResponse, description = "Docker unreachable or base image missing"),
))]
pub async fn readiness_check(State(state): State<AppState>) -> Response {
    // The watcher (`server::watch_docker`) probes the engine every few seconds; this
    // route answers from what it found, so an open route costs the engine nothing.
    // Before its first probe, one request probes (the others wait for it).
    let reason = match state.readiness.cached() {
        Some(finding) => finding.err(),
        None => {
            state
                .readiness
                .refresh(&state.sandboxes, &state.config.docker_base_image)
                .await
        }
    };
    match reason {
        None => Json(ReadyResponse {
            status: "ready".to_owned(),
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyResponse {
                status: "not ready".to_owned(),
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// The process is alive.
#[utoipa::path(get, path = "/health/live", tag = "health", security(()), responses((status = 200, body = LiveResponse)))]
pub async fn liveness_check() -> Json<LiveResponse> {
    Json(LiveResponse {
        status: "alive".to_owned(),
    })
}

/// Effective configuration and limits.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct InfoResponse {
    /// `repobox`.
    pub name: String,
    /// Service version.
    pub version: String,
    /// Image used when a create names none.
    pub docker_base_image: String,
    /// OCI runtime for sandboxes (empty: the engine's default).
    pub docker_runtime: String,
    /// Hosts repositories may come from.
    pub allowed_git_hosts: Vec<String>,
    /// Hosts the server has credentials for (`GIT_CREDENTIALS_FILE`; never the
    /// credentials themselves).
    pub git_credential_hosts: Vec<String>,
    /// Images a create may name (empty: any).
    pub allowed_images: Vec<String>,
    /// Image pulls and builds.
    pub images: ImagesInfo,
    /// Network policy.
    pub network: NetworkInfo,
    /// Capabilities a sandbox keeps (all others are dropped).
    pub capabilities: Vec<String>,
    /// The backend sandboxes run on, and what it cannot serve.
    pub backend: BackendInfo,
    /// Whether API keys are required.
    pub auth_required: bool,
    /// The agent placed in every sandbox.
    pub agent: AgentInfo,
    /// The command policy.
    pub command_policy: CommandPolicyInfo,
    /// Whether `resources.disk_mb` is enforced by the engine.
    pub disk_limits: crate::backend::DiskLimits,
    /// The warm pool.
    pub pool: PoolInfo,
    /// This server's instance id: the `repobox.instance` label on its containers,
    /// and the suffix of their names (`<container_id>.<instance>`).
    pub instance: String,
    /// Limits.
    pub limits: Limits,
}

/// Image pulls and builds (`IMAGE_PULL_POLICY`, `ALLOW_IMAGE_BUILDS`, …).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ImagesInfo {
    /// `if-missing`, `always` or `never`.
    pub pull_policy: String,
    /// Bound on one pull.
    pub pull_timeout_secs: u64,
    /// Whether pulls carry credentials (`REGISTRY_AUTH_FILE` is set; never shown).
    pub registry_auth: bool,
    /// Whether `POST /images` builds.
    pub builds_allowed: bool,
    /// Network of build steps: `none` or `default`.
    pub build_network: String,
    /// Bound on one build.
    pub build_timeout_secs: u64,
    /// Most processes one build's steps run together.
    pub build_pids_limit: i64,
    /// Most built images kept.
    pub max_images: usize,
}

/// The command policy (`COMMAND_ALLOWLIST`).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct CommandPolicyInfo {
    /// Whether commands are checked at all (a list is set).
    pub enforced: bool,
    /// Programs commands may start.
    pub allowlist: Vec<String>,
}

/// The warm pool (`POOL_SIZE`, `POOL_IMAGES`): started sandboxes waiting for a
/// create, so that it starts no container. A create is served from it when it asks
/// for a pooled image, `network: "none"` and the default disk limit.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct PoolInfo {
    /// Members kept per pooled image (0: no pool).
    pub size: usize,
    /// Pooled images (`DOCKER_BASE_IMAGE` first).
    pub images: Vec<String>,
    /// Members ready now, over all images.
    pub ready: usize,
}

/// The sandbox agent.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct AgentInfo {
    /// Version of the agent binary this server places in sandboxes.
    pub version: String,
    /// Version of the protocol it speaks.
    pub protocol: u32,
}

/// Network policy.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct NetworkInfo {
    /// Mode of a sandbox that asks for none.
    pub default: Network,
    /// Whether `bridge` may be asked for.
    pub allow_bridge: bool,
}

/// Every limit a client can run into.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Limits {
    /// Most sandboxes at once.
    pub max_containers: usize,
    /// Largest `max_runtime_secs`.
    pub max_runtime_secs: u64,
    /// Default `timeout_secs`.
    pub default_exec_timeout_secs: u64,
    /// Smallest `timeout_secs`.
    pub min_exec_timeout_secs: u64,
    /// Largest `timeout_secs`.
    pub max_exec_timeout_secs: u64,
    /// Cap on each output stream of `/execute`.
    pub max_output_bytes: usize,
    /// Largest `stdin` of an execute request.
    pub max_stdin_bytes: usize,
    /// Largest file `/files` returns inline.
    pub max_file_bytes: u64,
    /// Largest JSON request body.
    pub max_request_bytes: usize,
    /// Largest raw or archive upload.
    pub max_upload_bytes: u64,
    /// Most background processes running at once per sandbox.
    pub max_processes: usize,
    /// Bytes of each output stream of a process kept.
    pub process_output_bytes: u64,
    /// Most snapshots kept at once.
    pub max_snapshots: usize,
    /// Largest `count` of a fork.
    pub max_forks: usize,
    /// Most repositories in one job.
    pub max_job_repos: usize,
    /// Largest `concurrency` of a job.
    pub max_job_concurrency: usize,
    /// Sandboxes all jobs together may hold at once (the rest of `max_containers`
    /// stays for interactive creates).
    pub max_job_containers: usize,
    /// Bytes of each output stream kept per job entry.
    pub job_output_bytes: usize,
    /// Most jobs kept.
    pub max_jobs: usize,
    /// Disk budget of the git mirrors, in MiB.
    pub cache_mb: u64,
    /// Resources of a sandbox that asks for none.
    pub default_resources: Resources,
    /// Most a sandbox may ask for.
    pub max_resources: Resources,
}

/// The backend sandboxes run on (`BACKEND`).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct BackendInfo {
    /// `docker` or `local`.
    pub kind: String,
    /// The engine's version (`null` when it cannot be asked).
    pub version: Option<String>,
    /// Route templates and features this backend cannot serve: they answer 501
    /// (`code: "not_supported"`).
    pub unsupported: Vec<String>,
}

/// API configuration and limits.
#[utoipa::path(get, path = "/info", tag = "health", responses((status = 200, body = InfoResponse)))]
pub async fn get_info(State(state): State<AppState>) -> Result<Json<InfoResponse>, Error> {
    let config = &state.config;
    let backend = state.sandboxes.backend();
    Ok(Json(InfoResponse {
        name: "repobox".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        docker_base_image: config.docker_base_image.clone(),
        docker_runtime: config.docker_runtime.clone(),
        allowed_git_hosts: config.allowed_git_hosts.items().to_vec(),
        git_credential_hosts: state.sandboxes.git().credential_hosts(),
        allowed_images: config.allowed_images.items().to_vec(),
        images: ImagesInfo {
            pull_policy: match config.image_pull_policy {
                crate::config::PullPolicy::IfMissing => "if-missing",
                crate::config::PullPolicy::Always => "always",
                crate::config::PullPolicy::Never => "never",
            }
            .to_owned(),
            pull_timeout_secs: config.image_pull_timeout_secs,
            registry_auth: !config.registry_auth_file.is_empty(),
            builds_allowed: config.allow_image_builds,
            build_network: match config.build_network {
                crate::config::BuildNetwork::None => "none",
                crate::config::BuildNetwork::Default => "default",
            }
            .to_owned(),
            build_timeout_secs: config.image_build_timeout_secs,
            build_pids_limit: config.build_pids_limit,
            max_images: config.max_images,
        },
        network: NetworkInfo {
            default: Network::None,
            allow_bridge: config.allow_network,
        },
        capabilities: backend
            .capabilities()
            .iter()
            .map(|&cap| cap.to_owned())
            .collect(),
        backend: BackendInfo {
            kind: backend.kind().as_str().to_owned(),
            version: tokio::time::timeout(PROBE_BOUND, backend.version())
                .await
                .ok()
                .and_then(std::result::Result::ok),
            unsupported: crate::backend::unsupported(backend),
        },
        auth_required: !config.api_keys.is_empty(),
        disk_limits: state.sandboxes.disk_limits().await.unwrap_or_else(|err| {
            crate::backend::DiskLimits {
                enforced: false,
                reason: Some(format!("the engine could not be asked: {err}")),
                memory_bytes: None,
                store_bytes: None,
            }
        }),
        pool: PoolInfo {
            size: state.sandboxes.pool().size(),
            images: state.sandboxes.pool().images(),
            ready: state.sandboxes.pool().ready(),
        },
        instance: state.sandboxes.instance().to_owned(),
        command_policy: CommandPolicyInfo {
            enforced: !state.sandboxes.policy().allows_everything(),
            allowlist: state.sandboxes.policy().programs().to_vec(),
        },
        agent: AgentInfo {
            version: crate::backend::AGENT_VERSION.to_owned(),
            protocol: repobox_protocol::PROTOCOL_VERSION,
        },
        limits: Limits {
            max_containers: config.max_containers,
            max_runtime_secs: config.max_runtime_secs,
            default_exec_timeout_secs: config.default_exec_timeout_secs,
            min_exec_timeout_secs: 1,
            max_exec_timeout_secs: config.max_exec_timeout_secs,
            max_output_bytes: config.max_output_bytes,
            max_stdin_bytes: config.max_stdin_bytes,
            max_file_bytes: config.max_file_bytes,
            max_request_bytes: config.max_request_bytes,
            max_upload_bytes: config.max_upload_bytes,
            max_processes: config.max_processes,
            process_output_bytes: config.process_output_bytes,
            max_snapshots: config.max_snapshots,
            max_forks: config.max_forks,
            max_job_repos: config.max_job_repos,
            max_job_concurrency: config.max_job_concurrency,
            max_job_containers: config.job_containers(),
            job_output_bytes: config.job_output_bytes,
            max_jobs: config.max_jobs,
            cache_mb: config.cache_mb,
            default_resources: Resources {
                cpus: config.default_cpus,
                memory_mb: config.default_memory_mb,
                pids: config.default_pids,
                disk_mb: Some(config.default_disk_mb),
            },
            max_resources: Resources {
                cpus: config.max_cpus,
                memory_mb: config.max_memory_mb,
                pids: config.max_pids,
                disk_mb: Some(config.max_disk_mb),
            },
        },
    }))
}
