//! Background processes: commands that outlive a request (and a server restart),
//! owned by the sandbox's agent, with their output kept for polling and streaming.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Json, Query, json_body};
use crate::agent::{ProcessEvent, ProcessInfo, ProcessSpec, ProcessStatus, TerminalSize};
use crate::error::{Error, ErrorBody, Result};
use crate::id::SandboxId;
use crate::request::validate_env;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_process, list_processes))
        .routes(routes!(get_process, delete_process))
        .routes(routes!(process_output))
        .routes(routes!(process_stream))
        .routes(routes!(process_stdin))
        .routes(routes!(process_signal))
        .layer(DefaultBodyLimit::disable())
}

/// Body of `POST /containers/{id}/processes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartProcessRequest {
    /// Run by `bash -c` (or `sh -c`).
    #[schema(example = "python3 -m http.server 8080")]
    pub command: String,
    /// Absolute working directory; `/workspace` by default.
    pub working_directory: Option<String>,
    /// Extra environment for this process.
    pub environment: Option<BTreeMap<String, String>>,
    /// Deadline in seconds (at most `MAX_EXEC_TIMEOUT_SECS`); none by default.
    pub timeout_secs: Option<i64>,
    /// Keep stdin open for `/stdin` writes (false: stdin is empty).
    #[serde(default)]
    pub stdin_open: bool,
    /// Run on a terminal: stdout and stderr are then one stream, `stdout`.
    #[serde(default)]
    pub tty: bool,
}

/// A background process.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Process {
    /// `proc-<n>`, unique within the sandbox and never reused.
    pub process_id: String,
    /// The command as given.
    pub command: String,
    /// `running`, `exited`, `killed` or `timed_out`.
    pub status: String,
    /// Null while running; its own code, 128+N for signal N, 124 at its timeout.
    pub exit_code: Option<i64>,
    /// Pid inside the sandbox (of the process's supervisor, the parent of its shell).
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Its working directory.
    pub working_directory: String,
    /// Whether it runs on a terminal.
    pub tty: bool,
    /// Whether its stdin still takes writes.
    pub stdin_open: bool,
}

fn status_name(status: ProcessStatus) -> &'static str {
    match status {
        ProcessStatus::Running => "running",
        ProcessStatus::Exited => "exited",
        ProcessStatus::Killed => "killed",
        ProcessStatus::TimedOut => "timed_out",
    }
}

fn at_millis(millis: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(i64::try_from(millis).unwrap_or(i64::MAX))
        .single()
        .unwrap_or_default()
}

impl From<&ProcessInfo> for Process {
    fn from(info: &ProcessInfo) -> Self {
        Self {
            process_id: format!("proc-{}", info.id),
            command: info.command.clone(),
            status: status_name(info.status).to_owned(),
            exit_code: info.exit_code,
            pid: info.pid,
            started_at: at_millis(info.started_at),
            ended_at: info.ended_at.map(at_millis),
            working_directory: info.cwd.clone(),
            tty: info.tty,
            stdin_open: info.stdin_open,
        }
    }
}

/// `GET /containers/{id}/processes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcessList {
    /// Running ones and the most recent ended ones, oldest first.
    pub processes: Vec<Process>,
}

/// The agent's number of the process `proc-<n>`, or 404.
fn number(process_id: &str) -> Result<u64> {
    process_id
        .strip_prefix("proc-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::ProcessNotFound(format!("no process {process_id:?} in this sandbox")))
}

/// Start a background process: it keeps running when the client goes away and when
/// the server restarts, and ends with the sandbox.
#[utoipa::path(post, path = "/containers/{container_id}/processes", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = StartProcessRequest,
    responses(
        (status = 201, body = Process, description = "Started"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "MAX_PROCESSES running"),
    ))]
pub async fn start_process(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Process>)> {
    state.sandboxes.get(&container_id)?;
    let request: StartProcessRequest =
        json_body(&headers, body, state.config.max_request_bytes).await?;
    if request.command.trim().is_empty() || request.command.contains('\0') {
        return Err(Error::invalid(
            "command must be a non-empty command without NUL bytes",
        ));
    }
    let cwd = crate::request::validate_working_dir(request.working_directory)?;
    let timeout = request
        .timeout_secs
        .map(|secs| crate::request::validate_timeout(&state.config, secs))
        .transpose()?;
    let env = request.environment.unwrap_or_default();
    validate_env("environment", &env)?;
    let info = state
        .sandboxes
        .start_process(
            &container_id,
            ProcessSpec {
                command: request.command,
                cwd,
                env: env.into_iter().collect(),
                stdin_open: request.stdin_open,
                tty: request.tty.then_some(TerminalSize { cols: 80, rows: 24 }),
                timeout,
                output_bytes: state.config.process_output_bytes,
                max_running: Some(u32::try_from(state.config.max_processes).unwrap_or(u32::MAX)),
            },
        )
        .await
        .map_err(|err| match err {
            Error::LimitReached(_) => Error::LimitReached(format!(
                "{} processes already run in this sandbox (MAX_PROCESSES)",
                state.config.max_processes
            )),
            other => other,
        })?;
    tracing::info!(sandbox = %container_id, process = info.id, "process started");
    Ok((StatusCode::CREATED, Json(Process::from(&info))))
}

/// The sandbox's processes: running ones and the most recent ended ones.
#[utoipa::path(get, path = "/containers/{container_id}/processes", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = ProcessList), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list_processes(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
) -> Result<Json<ProcessList>> {
    state.sandboxes.get(&container_id)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let processes = agent.processes().await?;
    Ok(Json(ProcessList {
        processes: processes.iter().map(Process::from).collect(),
    }))
}

/// One process.
#[utoipa::path(get, path = "/containers/{container_id}/processes/{process_id}", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id"), ("process_id" = String, Path, description = "Process id")),
    responses((status = 200, body = Process), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_process(
    State(state): State<AppState>,
    Path((container_id, process_id)): Path<(SandboxId, String)>,
) -> Result<Json<Process>> {
    state.sandboxes.get(&container_id)?;
    let id = number(&process_id)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    Ok(Json(Process::from(&agent.process(id).await?)))
}

/// Kill everything the process started if it runs, and forget it.
#[utoipa::path(delete, path = "/containers/{container_id}/processes/{process_id}", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id"), ("process_id" = String, Path, description = "Process id")),
    responses((status = 204, description = "Gone"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_process(
    State(state): State<AppState>,
    Path((container_id, process_id)): Path<(SandboxId, String)>,
) -> Result<StatusCode> {
    state.sandboxes.get(&container_id)?;
    let id = number(&process_id)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    agent.remove_process(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Byte offsets into a process's output streams.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Offsets {
    /// Where to start in stdout (bytes since the process started); 0 by default.
    pub stdout_offset: Option<u64>,
    /// Where to start in stderr; 0 by default.
    pub stderr_offset: Option<u64>,
}

/// `GET …/processes/{process_id}/output`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcessOutputResponse {
    /// Stdout from `stdout_offset` (lossy UTF-8).
    pub stdout: String,
    /// Stderr from `stderr_offset` (lossy UTF-8).
    pub stderr: String,
    /// Where `stdout` begins (moved up to the oldest kept byte when needed).
    pub stdout_offset: u64,
    /// Where `stderr` begins.
    pub stderr_offset: u64,
    /// Where `stdout` ends: pass it back to get only what is new.
    pub stdout_end: u64,
    /// Where `stderr` ends.
    pub stderr_end: u64,
    /// The process's status.
    pub status: String,
    /// Its exit code once ended.
    pub exit_code: Option<i64>,
}

/// Output kept since the given offsets (the last `PROCESS_OUTPUT_BYTES` of each
/// stream are kept).
#[utoipa::path(get, path = "/containers/{container_id}/processes/{process_id}/output", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id"), ("process_id" = String, Path, description = "Process id"), Offsets),
    responses((status = 200, body = ProcessOutputResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn process_output(
    State(state): State<AppState>,
    Path((container_id, process_id)): Path<(SandboxId, String)>,
    Query(offsets): Query<Offsets>,
) -> Result<Json<ProcessOutputResponse>> {
    state.sandboxes.get(&container_id)?;
    let id = number(&process_id)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let output = agent
        .process_output(
            id,
            offsets.stdout_offset.unwrap_or(0),
            offsets.stderr_offset.unwrap_or(0),
            state.config.process_output_bytes,
        )
        .await?;
    Ok(Json(ProcessOutputResponse {
        stdout_offset: output.stdout.offset,
        stderr_offset: output.stderr.offset,
        stdout_end: output.stdout.offset + output.stdout.data.len() as u64,
        stderr_end: output.stderr.offset + output.stderr.data.len() as u64,
        stdout: String::from_utf8_lossy(&output.stdout.data).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr.data).into_owned(),
        status: status_name(output.status).to_owned(),
        exit_code: output.exit_code,
    }))
}

/// Data of a `stdout` or `stderr` event of a process stream.
#[derive(Serialize)]
struct Chunk<'a> {
    data: &'a str,
    offset: u64,
}

/// The `exit` event of a process stream.
#[derive(Serialize)]
struct ProcessExit {
    process_id: String,
    command: String,
    status: &'static str,
    exit_code: Option<i64>,
    execution_time_secs: f64,
    timestamp: DateTime<Utc>,
    timed_out: bool,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

/// Server-Sent Events: the kept output from the offsets, then live output (`stdout`
/// and `stderr` events, `{"data", "offset"}`), then one `exit` event when the process
/// ends (at once if it has). Disconnecting does not stop the process.
#[utoipa::path(get, path = "/containers/{container_id}/processes/{process_id}/stream", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id"), ("process_id" = String, Path, description = "Process id"), Offsets),
    responses(
        (status = 200, content_type = "text/event-stream", description = "Events: stdout, stderr, exit"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ))]
pub async fn process_stream(
    State(state): State<AppState>,
    Path((container_id, process_id)): Path<(SandboxId, String)>,
    Query(offsets): Query<Offsets>,
) -> Result<Response> {
    state.sandboxes.get(&container_id)?;
    let id = number(&process_id)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let events = agent
        .follow_process(
            id,
            offsets.stdout_offset.unwrap_or(0),
            offsets.stderr_offset.unwrap_or(0),
        )
        .await?;
    let mut positions = (0u64, 0u64);
    let stream = events.filter_map(move |event| {
        let sse = match event {
            Ok(ProcessEvent::Following {
                stdout_offset,
                stderr_offset,
            }) => {
                positions = (stdout_offset, stderr_offset);
                None
            }
            Ok(ProcessEvent::Stdout(bytes)) => {
                let offset = positions.0;
                positions.0 += bytes.len() as u64;
                SseEvent::default()
                    .event("stdout")
                    .json_data(Chunk {
                        data: &String::from_utf8_lossy(&bytes),
                        offset,
                    })
                    .ok()
            }
            Ok(ProcessEvent::Stderr(bytes)) => {
                let offset = positions.1;
                positions.1 += bytes.len() as u64;
                SseEvent::default()
                    .event("stderr")
                    .json_data(Chunk {
                        data: &String::from_utf8_lossy(&bytes),
                        offset,
                    })
                    .ok()
            }
            Ok(ProcessEvent::Ended(info)) => {
                let took = info
                    .ended_at
                    .unwrap_or(info.started_at)
                    .saturating_sub(info.started_at);
                SseEvent::default()
                    .event("exit")
                    .json_data(ProcessExit {
                        process_id: format!("proc-{}", info.id),
                        command: info.command.clone(),
                        status: status_name(info.status),
                        exit_code: info.exit_code,
                        execution_time_secs: took as f64 / 1000.0,
                        timestamp: at_millis(info.started_at),
                        timed_out: info.status == ProcessStatus::TimedOut,
                        stdout_truncated: false,
                        stderr_truncated: false,
                    })
                    .ok()
            }
            Err(err) => SseEvent::default()
                .event("error")
                .json_data(err.public_body())
                .ok(),
        };
        std::future::ready(sse.map(Ok::<_, Infallible>))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// Body of `POST …/processes/{process_id}/stdin`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinRequest {
    /// Text to write.
    pub data: Option<String>,
    /// Bytes to write, base64 (instead of `data`).
    pub data_base64: Option<String>,
    /// Close stdin after writing.
    #[serde(default)]
    pub eof: bool,
}

/// Write to a process's stdin, in order; `eof` closes it.
#[utoipa::path(post, path = "/containers/{container_id}/processes/{process_id}/stdin", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id"), ("process_id" = String, Path, description = "Process id")),
    request_body = StdinRequest,
    responses(
        (status = 204, description = "Written"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Stdin is not open, or the process ended"),
        (status = 413, body = ErrorBody, description = "Above MAX_STDIN_BYTES"),
        (status = 415, body = ErrorBody),
    ))]
pub async fn process_stdin(
    State(state): State<AppState>,
    Path((container_id, process_id)): Path<(SandboxId, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode> {
    state.sandboxes.get(&container_id)?;
    let id = number(&process_id)?;
    let limit = state
        .config
        .max_request_bytes
        .saturating_add(state.config.max_stdin_bytes.saturating_mul(2));
    let request: StdinRequest = json_body(&headers, body, limit).await?;
    let bytes = match (request.data, request.data_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|err| Error::invalid(format!("data_base64 is not base64: {err}")))?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            return Err(Error::invalid("give either data or data_base64, not both"));
        }
    };
    if bytes.len() > state.config.max_stdin_bytes {
        return Err(Error::TooLarge(format!(
            "stdin is {} bytes, above MAX_STDIN_BYTES ({})",
            bytes.len(),
            state.config.max_stdin_bytes
        )));
    }
    let agent = state.sandboxes.agent(&container_id).await?;
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(bytes)) });
    agent.process_stdin(id, Box::pin(body), request.eof).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST …/processes/{process_id}/signal`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// `SIGTERM`, `TERM` or its number: any of SIGHUP SIGINT SIGQUIT SIGKILL SIGUSR1
    /// SIGUSR2 SIGTERM SIGCONT SIGSTOP.
    #[schema(schema_with = signal_schema, example = "SIGTERM")]
    pub signal: serde_json::Value,
}

const SIGNALS: [(&str, i32); 9] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
];

/// What `signal` takes: a name of [`SIGNALS`], with or without `SIG`, in any case, or
/// its number.
fn signal_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
    let names = SIGNALS
        .iter()
        .map(|(name, _)| format!("(?:[Ss][Ii][Gg])?{}", case_free(name)))
        .collect::<Vec<_>>()
        .join("|");
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .pattern(Some(format!("^(?:{names})$"))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::Integer))
                .enum_values(Some(SIGNALS.iter().map(|(_, number)| *number))),
        )
        .description(Some("A signal's name (`SIGTERM`, `term`) or number (`15`)"))
        .into()
}

/// A regular expression matching `word` in any case (`[Tt][Ee][Rr][Mm]`).
fn case_free(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The number of an allowed signal given by name or number, or 400.
fn signal_number(signal: &serde_json::Value) -> Result<i32> {
    let found = match signal {
        serde_json::Value::String(name) => {
            let upper = name.to_ascii_uppercase();
            let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
            SIGNALS
                .iter()
                .find(|(known, _)| *known == bare)
                .map(|(_, n)| *n)
        }
        // `15.0` is a JSON Schema integer too.
        serde_json::Value::Number(number) => number
            .as_i64()
            .or_else(|| {
                number
                    .as_f64()
                    .filter(|n| n.fract() == 0.0 && n.abs() < 1e9)
                    .map(|n| n as i64)
            })
            .and_then(|n| SIGNALS.iter().find(|(_, known)| i64::from(*known) == n))
            .map(|(_, n)| *n),
        _ => None,
    };
    found.ok_or_else(|| {
        Error::invalid(format!(
            "unknown signal {signal}: use one of {}",
            SIGNALS
                .iter()
                .map(|(name, _)| format!("SIG{name}"))
                .collect::<Vec<_>>()
                .join(" ")
        ))
    })
}

/// Send a signal to everything the process started.
#[utoipa::path(post, path = "/containers/{container_id}/processes/{process_id}/signal", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id"), ("process_id" = String, Path, description = "Process id")),
    request_body = SignalRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 400, body = ErrorBody, description = "Unknown signal"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
pub async fn process_signal(
    State(state): State<AppState>,
    Path((container_id, process_id)): Path<(SandboxId, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode> {
    state.sandboxes.get(&container_id)?;
    let id = number(&process_id)?;
    let request: SignalRequest = json_body(&headers, body, state.config.max_request_bytes).await?;
    let signal = signal_number(&request.signal)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    agent.signal_process(id, signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_with_or_without_sig_or_by_number() {
        assert_eq!(signal_number(&serde_json::json!("SIGTERM")).unwrap(), 15);
        assert_eq!(signal_number(&serde_json::json!("term")).unwrap(), 15);
        assert_eq!(signal_number(&serde_json::json!(9)).unwrap(), 9);
        // What JSON Schema calls an integer too.
        assert_eq!(signal_number(&serde_json::json!(15.0)).unwrap(), 15);
        for bad in [
            serde_json::json!("SIGSEGV"),
            serde_json::json!(11),
            serde_json::json!(15.5),
            serde_json::json!(null),
            serde_json::json!("-9"),
        ] {
            assert!(signal_number(&bad).is_err(), "{bad}");
        }
        assert_eq!(number("proc-12").unwrap(), 12);
        assert!(number("proc-x").is_err() && number("12").is_err());
    }
}
