//! Sessions: shells whose `cd`, variables, functions and aliases carry from one
//! command to the next (see [`crate::session`]).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::exec::{ExecuteCommandRequest, body_limit};
use super::{AppState, Json, json_body};
use crate::error::{Error, ErrorBody, Result};
use crate::exec::ExecResult;
use crate::id::SandboxId;
use crate::request::validate_env;
use crate::session::{self, SessionInfo};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(delete_session))
        .routes(routes!(session_execute))
        .layer(DefaultBodyLimit::disable())
}

/// Body of `POST /containers/{id}/sessions`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Where the first command starts (absolute, an existing directory); `/workspace`
    /// by default.
    pub working_directory: Option<String>,
    /// Variables exported in the session from the start.
    pub environment: Option<BTreeMap<String, String>>,
}

/// `GET /containers/{id}/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// Every session of the sandbox, oldest first.
    pub sessions: Vec<SessionInfo>,
}

/// Start a session: a shell whose state carries from one command to the next.
#[utoipa::path(post, path = "/containers/{container_id}/sessions", tag = "sessions",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = CreateSessionRequest,
    responses(
        (status = 201, body = SessionInfo, description = "Created"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SessionInfo>)> {
    state.sandboxes.get(&container_id)?;
    let request: CreateSessionRequest =
        json_body(&headers, body, state.config.max_request_bytes).await?;
    let working_dir = crate::request::validate_working_dir(request.working_directory)?;
    let env = request.environment.unwrap_or_default();
    validate_env("environment", &env)?;
    let created = state
        .sandboxes
        .create_session(&container_id, &working_dir, &env)
        .await?;
    tracing::info!(sandbox = %container_id, session = %created.session_id, "session created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// The sandbox's sessions, each with its current working directory.
#[utoipa::path(get, path = "/containers/{container_id}/sessions", tag = "sessions",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, body = SessionList),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
) -> Result<Json<SessionList>> {
    Ok(Json(SessionList {
        sessions: state.sandboxes.sessions(&container_id).await?,
    }))
}

/// End a session (its state is removed).
#[utoipa::path(delete, path = "/containers/{container_id}/sessions/{session_id}", tag = "sessions",
    params(
        ("container_id" = String, Path, description = "Sandbox id"),
        ("session_id" = String, Path, description = "Session id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ))]
pub async fn delete_session(
    State(state): State<AppState>,
    Path((container_id, session_id)): Path<(SandboxId, String)>,
) -> Result<StatusCode> {
    state
        .sandboxes
        .delete_session(&container_id, &session_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a command in a session: as `execute`, but `cd`, variables (exported or not),
/// functions, aliases and shell options carry over to the next command. Commands of
/// one session run one at a time, in order of arrival. A timed-out command is killed
/// and the session goes on from its state before that command; `exit n` ends only the
/// command (exit code `n`).
#[utoipa::path(post, path = "/containers/{container_id}/sessions/{session_id}/execute", tag = "sessions",
    params(
        ("container_id" = String, Path, description = "Sandbox id"),
        ("session_id" = String, Path, description = "Session id"),
    ),
    request_body = ExecuteCommandRequest,
    responses(
        (status = 200, body = ExecResult, description = "The command ran (any exit code)"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
    ))]
pub async fn session_execute(
    State(state): State<AppState>,
    Path((container_id, session_id)): Path<(SandboxId, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ExecResult>> {
    state.sandboxes.get(&container_id)?;
    if !session::valid_id(&session_id) {
        return Err(Error::SessionNotFound(format!(
            "no session {session_id:?} in this sandbox"
        )));
    }
    let request: ExecuteCommandRequest =
        json_body(&headers, body, body_limit(&state.config)).await?;
    let working_dir = request.working_directory.clone();
    let command = request.validate(&state.config)?;
    let result = state
        .sandboxes
        .session_execute(
            &container_id,
            &session_id,
            command,
            working_dir.as_deref(),
            state.config.max_output_bytes,
        )
        .await?;
    state
        .metrics
        .exec_seconds
        .observe(result.execution_time_secs);
    crate::metrics::Metrics::count(
        &state.metrics.execs,
        if result.timed_out {
            "timeout"
        } else {
            "session"
        },
    );
    Ok(Json(result))
}
