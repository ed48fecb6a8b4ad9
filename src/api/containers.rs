//! Sandboxes: create, list, status, destroy.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Json};
use crate::backend::WORKSPACE;
use crate::error::{Error, ErrorBody, Result};
use crate::exec::ExecResult;
use crate::id::SandboxId;
use crate::registry::Sandbox;
use crate::request::{CreateContainerRequest, NetworkSetting};
use crate::sandbox::{Condition, Status};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_container, list_containers))
        .routes(routes!(get_container, destroy_container, update_container))
        .routes(routes!(get_egress))
}

/// A sandbox, as every container endpoint returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerResponse {
    /// Our id.
    pub container_id: String,
    /// `creating`, `running`, `completed`, `failed`, `timeout` or `destroyed`.
    pub status: Status,
    /// Repository URL (credentials removed).
    pub repo_url: String,
    /// Branch checked out (null for a detached HEAD).
    pub branch: Option<String>,
    /// Commit as requested.
    pub commit: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it will be destroyed automatically.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where the checkout is.
    pub working_directory: String,
    /// (ext) Full SHA of HEAD.
    pub resolved_commit: String,
    /// (ext) Image it runs.
    pub image: String,
    /// (ext) Result of `initial_command` (at most 64 KiB of each stream kept).
    pub initial_command_result: Option<ExecResult>,
    /// (ext) Why the sandbox `failed` (e.g. "out of memory"); null otherwise.
    pub status_reason: Option<String>,
    /// (ext) The job whose entry this sandbox runs (it is destroyed when the entry
    /// ends); null for a sandbox made by a client.
    pub job_id: Option<String>,
    /// (ext) The built image (`POST /images`) it runs on; null otherwise.
    pub image_id: Option<String>,
    /// (ext) Commits of history the checkout's `.git` holds (a shallow clone); null:
    /// the whole history.
    pub depth: Option<u32>,
    /// (ext) `none`, `bridge`, or `{"allow": [...]}`: the hosts it reaches through the
    /// egress proxy.
    pub network: NetworkSetting,
}

impl ContainerResponse {
    pub(super) fn new(sandbox: &Sandbox, condition: &Condition) -> Self {
        Self {
            container_id: sandbox.id.to_string(),
            status: condition.status,
            status_reason: condition.reason.clone(),
            repo_url: sandbox.repo_url.clone(),
            branch: sandbox.branch.clone(),
            commit: sandbox.commit.clone(),
            created_at: sandbox.created_at,
            expires_at: sandbox.expires_at,
            working_directory: WORKSPACE.to_owned(),
            resolved_commit: sandbox.resolved_commit.clone(),
            image: sandbox.image.clone(),
            initial_command_result: sandbox.initial_command_result.clone(),
            job_id: sandbox.job_id.clone(),
            image_id: sandbox.image_id.clone(),
            depth: sandbox.depth,
            network: NetworkSetting::of(sandbox.network, sandbox.egress.as_deref()),
        }
    }
}

/// Body of `GET /containers`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerListResponse {
    /// Every sandbox, oldest first.
    pub containers: Vec<ContainerResponse>,
    /// How many there are.
    pub total_count: usize,
    /// How many are `running`.
    pub active_count: usize,
}

/// Create a sandbox from a git repository; returns once it is usable.
#[utoipa::path(post, path = "/containers", tag = "containers", request_body = CreateContainerRequest, responses(
    (status = 201, body = ContainerResponse),
    (status = 400, body = ErrorBody, description = "Invalid request (URL policy, ref names, limits)"),
    (status = 403, body = ErrorBody, description = "initial_command refused by COMMAND_ALLOWLIST"),
    (status = 404, body = ErrorBody, description = "Unknown snapshot_id or image_id"),
    (status = 409, body = ErrorBody, description = "image_id is still building, or failed; `no_capacity`: resources beyond what the host can give (memory, the engine's store, memory limits together past MEMORY_OVERCOMMIT)"),
    (status = 413, body = ErrorBody, description = "`too_large`: the checkout would take more than the sandbox's disk_mb"),
    (status = 422, body = ErrorBody, description = "Repository, branch or commit cannot be checked out; the image cannot be pulled (the registry's reason), or declares VOLUMEs"),
    (status = 429, body = ErrorBody, description = "MAX_CONTAINERS reached"),
    (status = 503, body = ErrorBody, description = "Docker unreachable"),
))]
pub async fn create_container(
    State(state): State<AppState>,
    Json(request): Json<CreateContainerRequest>,
) -> Result<(StatusCode, Json<ContainerResponse>)> {
    let mut request = request.validate(&state.config, &state.sandboxes)?;
    state
        .sandboxes
        .apply_disk_limit(&mut request.resources)
        .await?;
    // The sandbox's variables reach every command, the initial one included.
    state.sandboxes.allow(
        request.initial_command.as_deref().unwrap_or("true"),
        request.env.keys().map(String::as_str),
    )?;
    let sandbox = state.sandboxes.create(request).await?;
    Ok((
        StatusCode::CREATED,
        Json(ContainerResponse::new(
            &sandbox,
            &Condition::plain(Status::Running),
        )),
    ))
}

/// List sandboxes (destroyed and expired ones are not listed).
#[utoipa::path(get, path = "/containers", tag = "containers", responses(
    (status = 200, body = ContainerListResponse),
    (status = 503, body = ErrorBody),
))]
pub async fn list_containers(State(state): State<AppState>) -> Result<Json<ContainerListResponse>> {
    let listed = state.sandboxes.list().await?;
    let containers: Vec<_> = listed
        .iter()
        .map(|(sandbox, condition)| ContainerResponse::new(sandbox, condition))
        .collect();
    let active_count = containers
        .iter()
        .filter(|c| c.status == Status::Running)
        .count();
    Ok(Json(ContainerListResponse {
        total_count: containers.len(),
        active_count,
        containers,
    }))
}

/// A sandbox's status, read from Docker.
#[utoipa::path(get, path = "/containers/{container_id}", tag = "containers",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = ContainerResponse), (status = 404, body = ErrorBody)))]
pub async fn get_container(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
) -> Result<Json<ContainerResponse>> {
    let sandbox = state.sandboxes.get(&container_id)?;
    let condition = state.sandboxes.status(&sandbox).await?;
    Ok(Json(ContainerResponse::new(&sandbox, &condition)))
}

/// Body of `GET /containers/{id}/egress`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EgressResponse {
    /// The sandbox's allow-list; null when it has none (then it has no proxy).
    pub allow: Option<Vec<String>>,
    /// Its proxy's last decisions (at most 1000), oldest first; since the server
    /// started.
    pub decisions: Vec<crate::egress::Decision>,
}

/// (ext) What a sandbox's egress proxy allowed and refused.
#[utoipa::path(get, path = "/containers/{container_id}/egress", tag = "containers",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = EgressResponse), (status = 404, body = ErrorBody)))]
pub async fn get_egress(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
) -> Result<Json<EgressResponse>> {
    let sandbox = state.sandboxes.get(&container_id)?;
    Ok(Json(EgressResponse {
        allow: sandbox.egress.clone(),
        decisions: sandbox.egress_log.entries(),
    }))
}

/// Body of `PATCH /containers/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContainerRequest {
    /// The sandbox now expires this many seconds from now (1 … `MAX_RUNTIME_SECS`);
    /// `null`: it no longer expires. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, required = true)]
    pub max_runtime_secs: Option<Option<i64>>,
}

/// Tells `"field": null` (`Some(None)`) from an absent field (`None`).
#[expect(
    clippy::option_option,
    reason = "absent, null and a value mean three things here"
)]
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// (ext) Extend, shorten or remove a sandbox's lifetime. The new `expires_at` is
/// persisted before the answer and holds across restarts; a sandbox extended a moment
/// before its old deadline is never reaped at the old one.
#[utoipa::path(patch, path = "/containers/{container_id}", tag = "containers",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = UpdateContainerRequest,
    responses(
        (status = 200, body = ContainerResponse),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The sandbox is not running"),
    ))]
pub async fn update_container(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Json(request): Json<UpdateContainerRequest>,
) -> Result<Json<ContainerResponse>> {
    let lifetime = match request.max_runtime_secs {
        None => {
            return Err(Error::invalid(
                "max_runtime_secs is required: seconds from now, or null for no expiry",
            ));
        }
        Some(None) => None,
        Some(Some(secs)) => {
            if secs < 1 || secs.unsigned_abs() > state.config.max_runtime_secs {
                return Err(Error::invalid(format!(
                    "max_runtime_secs must be between 1 and {} (MAX_RUNTIME_SECS), or null",
                    state.config.max_runtime_secs
                )));
            }
            Some(Duration::from_secs(secs.unsigned_abs()))
        }
    };
    let sandbox = state
        .sandboxes
        .set_lifetime(&container_id, lifetime)
        .await?;
    Ok(Json(ContainerResponse::new(
        &sandbox,
        &Condition::plain(Status::Running),
    )))
}

/// Destroy a sandbox: its container and everything kept for it.
#[utoipa::path(delete, path = "/containers/{container_id}", tag = "containers",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses((status = 204, description = "Destroyed"), (status = 404, body = ErrorBody)))]
pub async fn destroy_container(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
) -> Result<StatusCode> {
    state.sandboxes.destroy(&container_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
