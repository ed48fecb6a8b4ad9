//! Snapshots and forks: set a sandbox up once, start many copies of it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::containers::ContainerResponse;
use super::{AppState, Json, json_body};
use crate::error::{Error, ErrorBody, Result};
use crate::id::SandboxId;
use crate::metrics::Metrics;
use crate::request::validate_env;
use crate::sandbox::{Condition, NewSandbox, Status};
use crate::snapshot::Snapshot;

/// Copies of a fork made at once.
const FORK_CONCURRENCY: usize = 4;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_snapshot))
        .routes(routes!(list_snapshots))
        .routes(routes!(get_snapshot, delete_snapshot))
        .routes(routes!(fork))
}

/// Body of `POST /containers/{id}/snapshots`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// A name for it (at most 200 characters); its id when omitted.
    pub name: Option<String>,
}

/// `GET /snapshots`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    /// Every snapshot, oldest first.
    pub snapshots: Vec<Snapshot>,
}

/// Snapshot a sandbox: its whole filesystem now, as an image (not its processes). The
/// sandbox keeps running (paused for the moment of the copy at most).
#[utoipa::path(post, path = "/containers/{container_id}/snapshots", tag = "snapshots",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = CreateSnapshotRequest,
    responses(
        (status = 201, body = Snapshot, description = "Made"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The sandbox is not running"),
        (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "MAX_SNAPSHOTS reached"),
    ))]
pub async fn create_snapshot(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Snapshot>)> {
    state.sandboxes.get(&container_id)?;
    let request: CreateSnapshotRequest =
        json_body(&headers, body, state.config.max_request_bytes).await?;
    if let Some(name) = &request.name
        && (name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control))
    {
        return Err(Error::invalid(
            "name must be 1 to 200 characters, none of them control characters",
        ));
    }
    let snapshot = state
        .sandboxes
        .snapshot(&container_id, request.name)
        .await?;
    Ok((StatusCode::CREATED, Json((*snapshot).clone())))
}

/// Every snapshot.
#[utoipa::path(get, path = "/snapshots", tag = "snapshots",
    responses((status = 200, body = SnapshotList)))]
pub async fn list_snapshots(State(state): State<AppState>) -> Json<SnapshotList> {
    Json(SnapshotList {
        snapshots: state
            .sandboxes
            .snapshots()
            .all()
            .into_iter()
            .map(|snapshot| (*snapshot).clone())
            .collect(),
    })
}

/// One snapshot.
#[utoipa::path(get, path = "/snapshots/{snapshot_id}", tag = "snapshots",
    params(("snapshot_id" = String, Path, description = "Snapshot id")),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get_snapshot(
    State(state): State<AppState>,
    Path(snapshot_id): Path<String>,
) -> Result<Json<Snapshot>> {
    Ok(Json(
        (*state.sandboxes.snapshots().get(&snapshot_id)?).clone(),
    ))
}

/// Delete a snapshot and its image.
#[utoipa::path(delete, path = "/snapshots/{snapshot_id}", tag = "snapshots",
    params(("snapshot_id" = String, Path, description = "Snapshot id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A sandbox still runs on it"),
    ))]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    Path(snapshot_id): Path<String>,
) -> Result<StatusCode> {
    state.sandboxes.delete_snapshot(&snapshot_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /containers/{id}/fork`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// How many copies (1 … `MAX_FORKS`).
    pub count: i64,
    /// Lifetime of each copy in seconds; no expiry when omitted.
    pub max_runtime_secs: Option<i64>,
    /// Environment of the copies; the source's when omitted.
    pub environment_vars: Option<BTreeMap<String, String>>,
}

/// One copy of a fork: the sandbox, or why it could not be made.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ForkEntry {
    /// Made.
    Made {
        /// The copy.
        container: Box<ContainerResponse>,
    },
    /// Not made (nothing of it is left).
    Failed {
        /// Why.
        error: ErrorBody,
    },
}

/// `POST /containers/{id}/fork`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ForkResponse {
    /// The snapshot the copies run on.
    pub snapshot_id: String,
    /// One entry per copy, in order.
    pub forks: Vec<ForkEntry>,
}

/// Fork a sandbox: one snapshot, then `count` sandboxes on it, each made or failing
/// on its own. The source keeps running.
#[utoipa::path(post, path = "/containers/{container_id}/fork", tag = "snapshots",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = ForkRequest,
    responses(
        (status = 201, body = ForkResponse, description = "The snapshot was made; see each copy"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "MAX_SNAPSHOTS reached"),
    ))]
pub async fn fork(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ForkResponse>)> {
    let source = state.sandboxes.get(&container_id)?;
    let request: ForkRequest = json_body(&headers, body, state.config.max_request_bytes).await?;
    let max = state.config.max_forks;
    let count = usize::try_from(request.count)
        .ok()
        .filter(|count| (1..=max).contains(count))
        .ok_or_else(|| Error::invalid(format!("count must be between 1 and {max} (MAX_FORKS)")))?;
    let max_runtime = match request.max_runtime_secs {
        None => None,
        Some(secs) if secs >= 1 && secs.unsigned_abs() <= state.config.max_runtime_secs => {
            Some(Duration::from_secs(secs.unsigned_abs()))
        }
        Some(_) => {
            return Err(Error::invalid(format!(
                "max_runtime_secs must be between 1 and {} (MAX_RUNTIME_SECS)",
                state.config.max_runtime_secs
            )));
        }
    };
    let env = request
        .environment_vars
        .unwrap_or_else(|| source.env.clone());
    validate_env("environment_vars", &env)?;
    state
        .sandboxes
        .policy()
        .check_environment(env.keys().map(String::as_str))?;

    let started = std::time::Instant::now();
    let snapshot = state
        .sandboxes
        .snapshot(&container_id, Some(format!("fork of {container_id}")))
        .await?;
    let copy = NewSandbox {
        repo: None,
        snapshot: Some(snapshot.clone()),
        branch: None,
        commit: None,
        commit_as_requested: None,
        depth: None,
        max_runtime,
        env,
        initial_command: None,
        image: snapshot.image.clone(),
        resources: source.resources,
        network: source.network,
        egress: source.egress.clone(),
        job_id: None,
        // The copies run on the snapshot's image, not on the source's built one.
        image_id: None,
    };
    let forks = futures_util::stream::iter((0..count).map(|_| {
        let state = state.clone();
        let copy = copy.clone();
        async move {
            match state.sandboxes.create(copy).await {
                Ok(sandbox) => {
                    Metrics::count(&state.metrics.forks, "ok");
                    ForkEntry::Made {
                        container: Box::new(ContainerResponse::new(
                            &sandbox,
                            &Condition::plain(Status::Running),
                        )),
                    }
                }
                Err(err) => {
                    Metrics::count(&state.metrics.forks, "failed");
                    ForkEntry::Failed {
                        error: err.public_body(),
                    }
                }
            }
        }
    }))
    .buffered(FORK_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    state
        .metrics
        .fork_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok((
        StatusCode::CREATED,
        Json(ForkResponse {
            snapshot_id: snapshot.snapshot_id.clone(),
            forks,
        }),
    ))
}
