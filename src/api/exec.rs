//! Commands: run to completion, or stream live as Server-Sent Events.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Json, json_body};
use crate::config::Config;
use crate::error::{Error, ErrorBody, Result};
use crate::exec::{self, Event, ExecResult};
use crate::id::SandboxId;
use crate::request::validate_env;

pub(super) fn router() -> OpenApiRouter<AppState> {
    // The bodies may carry `stdin`: their bound is the handlers' own (see `body_limit`).
    OpenApiRouter::new()
        .routes(routes!(execute_command))
        .routes(routes!(stream_command))
        .layer(DefaultBodyLimit::disable())
}

/// Largest body of an execute request: the JSON limit plus room for `stdin` (which
/// JSON escaping can make up to twice as long for ordinary text).
pub(super) fn body_limit(config: &Config) -> usize {
    config
        .max_request_bytes
        .saturating_add(config.max_stdin_bytes.saturating_mul(2))
}

/// Body of `POST /containers/{id}/execute` (and `/execute/stream`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ExecuteCommandRequest {
    /// Run by `bash -c` (or `sh -c` where the image has no bash).
    #[schema(example = "python --version")]
    pub command: String,
    /// Absolute working directory; `/workspace` by default.
    pub working_directory: Option<String>,
    /// Deadline in seconds (1 … `MAX_EXEC_TIMEOUT_SECS`, default 30); the command and
    /// everything it started are killed at it.
    pub timeout_secs: Option<i64>,
    /// (ext) Extra environment for this command only.
    pub environment: Option<BTreeMap<String, String>>,
    /// (ext) Written to the command's standard input, which is then closed (at most
    /// `MAX_STDIN_BYTES`). Absent: standard input is empty.
    pub stdin: Option<String>,
}

impl ExecuteCommandRequest {
    pub(super) fn validate(self, config: &Config) -> Result<exec::Command> {
        if self.command.trim().is_empty() {
            return Err(Error::invalid("command must not be empty"));
        }
        if self.command.contains('\0') {
            return Err(Error::invalid("command must not contain NUL bytes"));
        }
        let working_dir = crate::request::validate_working_dir(self.working_directory)?;
        let timeout = crate::request::validate_timeout(
            config,
            self.timeout_secs
                .unwrap_or_else(|| crate::request::default_timeout_secs(config)),
        )?;
        let env = self.environment.unwrap_or_default();
        validate_env("environment", &env)?;
        if let Some(stdin) = &self.stdin
            && stdin.len() > config.max_stdin_bytes
        {
            return Err(Error::TooLarge(format!(
                "stdin is {} bytes, above MAX_STDIN_BYTES ({})",
                stdin.len(),
                config.max_stdin_bytes
            )));
        }
        Ok(exec::Command {
            command: self.command,
            working_dir,
            timeout,
            env: env.into_iter().collect(),
            stdin: self.stdin.map(bytes::Bytes::from),
        })
    }
}

/// Run a command and return its result when it ends (or is killed at its deadline).
#[utoipa::path(post, path = "/containers/{container_id}/execute", tag = "commands",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = ExecuteCommandRequest,
    responses(
        (status = 200, body = ExecResult, description = "The command ran (any exit code)"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Refused by COMMAND_ALLOWLIST"),
        (status = 413, body = ErrorBody, description = "stdin above MAX_STDIN_BYTES"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody, description = "The image has no shell"),
    ))]
pub async fn execute_command(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ExecResult>> {
    state.sandboxes.get(&container_id)?;
    let request: ExecuteCommandRequest =
        json_body(&headers, body, body_limit(&state.config)).await?;
    let command = request.validate(&state.config)?;
    let result = state
        .sandboxes
        .execute(&container_id, command, state.config.max_output_bytes)
        .await?;
    state
        .metrics
        .exec_seconds
        .observe(result.execution_time_secs);
    crate::metrics::Metrics::count(
        &state.metrics.execs,
        if result.timed_out { "timeout" } else { "sync" },
    );
    Ok(Json(result))
}

/// Run a command and stream its output live as Server-Sent Events: `stdout` and
/// `stderr` events (`{"data": "…"}`), then one `exit` event with the result's other
/// fields. No output cap. Disconnecting kills the command.
#[utoipa::path(post, path = "/containers/{container_id}/execute/stream", tag = "commands",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = ExecuteCommandRequest,
    responses(
        (status = 200, content_type = "text/event-stream", description = "Events: stdout, stderr, exit"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Refused by COMMAND_ALLOWLIST"),
        (status = 413, body = ErrorBody, description = "stdin above MAX_STDIN_BYTES"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody, description = "The image has no shell"),
    ))]
pub async fn stream_command(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    state.sandboxes.get(&container_id)?;
    let request: ExecuteCommandRequest =
        json_body(&headers, body, body_limit(&state.config)).await?;
    let command = request.validate(&state.config)?;
    let events = state
        .sandboxes
        .execute_streamed(&container_id, command)
        .await?;
    crate::metrics::Metrics::count(&state.metrics.execs, "stream");
    let mut response = Sse::new(sse_events(events))
        .keep_alive(KeepAlive::default())
        .into_response();
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// Data of a `stdout` or `stderr` event, serialized without an intermediate value.
#[derive(serde::Serialize)]
struct Chunk<'a> {
    data: &'a str,
}

fn sse_events(
    mut events: tokio::sync::mpsc::Receiver<Event>,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    futures_util::stream::poll_fn(move |cx| events.poll_recv(cx)).map(|event| {
        let sse = match event {
            Event::Stdout(data) => SseEvent::default()
                .event("stdout")
                .json_data(Chunk { data: &data }),
            Event::Stderr(data) => SseEvent::default()
                .event("stderr")
                .json_data(Chunk { data: &data }),
            Event::Exit(exit) => SseEvent::default().event("exit").json_data(exit),
            Event::Error(error) => SseEvent::default()
                .event("error")
                .json_data(error.public_body()),
        };
        Ok(sse.unwrap_or_else(|_| {
            SseEvent::default()
                .event("error")
                .data("could not encode event")
        }))
    })
}

use futures_util::StreamExt as _;
