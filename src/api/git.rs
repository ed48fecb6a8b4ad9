//! Repository operations: status, diff, apply, reset (see [`crate::repo`]).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::containers::ContainerResponse;
use super::files::{RawBytes, body_stream, content_length, streamed};
use super::{AppState, Json, Query, json_body};
use crate::error::{ErrorBody, Result};
use crate::files::Upload;
use crate::id::SandboxId;
use crate::repo::{self, GitStatus};
use crate::sandbox::{Condition, Status};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(git_status))
        .routes(routes!(git_diff))
        .routes(routes!(git_apply))
        .routes(routes!(reset))
}

/// What changed in the checkout, as git sees it.
#[utoipa::path(get, path = "/containers/{container_id}/git/status", tag = "repository",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, body = GitStatus),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not running, or the image has no git"),
    ))]
pub async fn git_status(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
) -> Result<Json<GitStatus>> {
    let sandbox = state.sandboxes.get(&container_id)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    Ok(Json(repo::status(&agent, &sandbox.resolved_commit).await?))
}

/// Query of `GET /containers/{id}/git/diff`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The revision to diff from: a commit SHA, a branch, a tag or an expression such
    /// as `HEAD~3`; the sandbox's `resolved_commit` by default.
    pub base: Option<String>,
    /// Include untracked files (true by default).
    pub untracked: Option<bool>,
}

/// A binary-safe patch from `base` to the working tree (commits made in the sandbox,
/// staged and unstaged changes, untracked files), such that `git apply` of it on a
/// fresh checkout of `base` reproduces the working tree. Empty when nothing changed.
#[utoipa::path(get, path = "/containers/{container_id}/git/diff", tag = "repository",
    params(("container_id" = String, Path, description = "Sandbox id"), DiffQuery),
    responses(
        (status = 200, body = inline(RawBytes), content_type = "text/x-diff"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not running, or the image has no git"),
        (status = 422, body = ErrorBody, description = "A base that does not resolve to a commit"),
    ))]
pub async fn git_diff(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<DiffQuery>,
) -> Result<Response> {
    let sandbox = state.sandboxes.get(&container_id)?;
    let base = match query.base {
        Some(base) => crate::git::validate_commitish(&base)?,
        None => sandbox.resolved_commit.clone(),
    };
    let agent = state.sandboxes.agent(&container_id).await?;
    let out = repo::tmp_name("diff");
    if let Err(err) = repo::diff_into(&agent, &base, query.untracked.unwrap_or(true), &out).await {
        repo::remove(&agent, &out).await;
        return Err(err);
    }
    let (size, stream) = repo::read_then_remove(agent, out).await?;
    Ok(streamed(stream, "text/x-diff", Some(size)))
}

/// Apply a patch (`git apply`) to the working tree, all or nothing; `HEAD` does not
/// move. Answers the new status.
#[utoipa::path(post, path = "/containers/{container_id}/git/apply", tag = "repository",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body(content = inline(RawBytes), content_type = "text/x-diff"),
    responses(
        (status = 200, body = GitStatus, description = "Applied"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not running, or the image has no git"),
        (status = 413, body = ErrorBody, description = "Above MAX_UPLOAD_BYTES"),
        (status = 422, body = ErrorBody, description = "The patch does not apply; nothing was changed"),
    ))]
pub async fn git_apply(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<GitStatus>> {
    let sandbox = state.sandboxes.get(&container_id)?;
    let limit = state.config.max_upload_bytes;
    let length = content_length(&headers, limit)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let patch = repo::tmp_name("apply");
    let upload = Upload::new(body_stream(body), length, limit);
    let written = crate::files::write_file(&agent, &patch, upload).await;
    match written {
        Ok(item) if item.size == Some(0) => repo::remove(&agent, &patch).await,
        Ok(_) => repo::apply(&agent, &patch).await?,
        Err(err) => {
            repo::remove(&agent, &patch).await;
            return Err(err);
        }
    }
    Ok(Json(repo::status(&agent, &sandbox.resolved_commit).await?))
}

/// Body of `POST /containers/{id}/reset`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Also kill every process, session and background job of the sandbox (true by
    /// default).
    pub processes: Option<bool>,
}

/// Put `/workspace` back to exactly the checkout it was created with (`HEAD` at the
/// base commit on the original branch, every modified, untracked and ignored file
/// gone), verified; with `processes`, everything the sandbox's users started is killed
/// first. Reuse a sandbox between attempts instead of creating a new one.
#[utoipa::path(post, path = "/containers/{container_id}/reset", tag = "repository",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = ResetRequest,
    responses(
        (status = 200, body = ContainerResponse, description = "Reset"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not running, no git, or the checkout could not be restored"),
        (status = 415, body = ErrorBody),
    ))]
pub async fn reset(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ContainerResponse>> {
    let sandbox = state.sandboxes.get(&container_id)?;
    let request: ResetRequest = json_body(&headers, body, state.config.max_request_bytes).await?;
    let agent = state.sandboxes.agent(&container_id).await?;
    repo::reset(
        &agent,
        &sandbox.resolved_commit,
        sandbox.branch.as_deref(),
        request.processes.unwrap_or(true),
    )
    .await?;
    tracing::info!(sandbox = %container_id, "sandbox reset to its checkout");
    Ok(Json(ContainerResponse::new(
        &sandbox,
        &Condition::plain(Status::Running),
    )))
}
