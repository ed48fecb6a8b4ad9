//! The terminal: a WebSocket to an interactive login shell on a pseudo-terminal, run
//! as a background process of the sandbox's agent (so it is the same machinery as
//! `/processes` with `tty: true`).

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Query};
use crate::agent::{AgentClient, ProcessEvent, ProcessSpec, TerminalSize};
use crate::backend::WORKSPACE;
use crate::error::{Error, ErrorBody, Result};
use crate::id::SandboxId;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(terminal))
}

/// The login shell: bash where the image has it.
const SHELL: &str = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";

/// Query of `GET /containers/{id}/terminal`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TerminalQuery {
    /// Width (1 … 1000), 80 by default.
    #[param(minimum = 1, maximum = 1000)]
    pub cols: Option<u16>,
    /// Height (1 … 1000), 24 by default.
    #[param(minimum = 1, maximum = 1000)]
    pub rows: Option<u16>,
    /// The API key, for clients that cannot set headers (browsers); this route only,
    /// never logged.
    pub access_token: Option<String>,
}

/// A message the client sends as a text frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u16, rows: u16 },
}

fn size(cols: u16, rows: u16) -> Result<TerminalSize> {
    if !(1..=1000).contains(&cols) || !(1..=1000).contains(&rows) {
        return Err(Error::invalid("cols and rows must be between 1 and 1000"));
    }
    Ok(TerminalSize { cols, rows })
}

/// Upgrade to a WebSocket running an interactive login shell on a pseudo-terminal in
/// `/workspace`. Binary frames carry the terminal's bytes both ways; the client may
/// send `{"type": "resize", "cols": n, "rows": n}` as a text frame. When the shell
/// exits the server sends `{"type": "exit", "exit_code": n}` and closes; a client
/// that goes away ends the shell.
#[utoipa::path(get, path = "/containers/{container_id}/terminal", tag = "processes",
    params(("container_id" = String, Path, description = "Sandbox id"), TerminalQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket request, or a bad size"),
        (status = 403, body = ErrorBody, description = "COMMAND_ALLOWLIST is set and does not list `bash`, or the page's Origin is foreign"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "MAX_PROCESSES running"),
    ))]
pub async fn terminal(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<TerminalQuery>,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    let sandbox = state.sandboxes.get(&container_id)?;
    // A shell runs whatever is typed into it: with COMMAND_ALLOWLIST set, only a list
    // that names `bash` allows one.
    if !state.sandboxes.policy().allows_everything()
        && state.sandboxes.policy().check("bash").is_err()
    {
        return Err(Error::CommandNotAllowed(
            "the terminal is an interactive shell, which COMMAND_ALLOWLIST does not allow (it would need `bash` listed)".to_owned(),
        ));
    }
    let upgrade = upgrade.map_err(|rejection| {
        Error::invalid(format!(
            "this route speaks WebSocket: {}",
            rejection.body_text()
        ))
    })?;
    let size = size(query.cols.unwrap_or(80), query.rows.unwrap_or(24))?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let mut env = vec![("TERM".to_owned(), "xterm-256color".to_owned())];
    env = sandbox.command_env(env);
    let info = agent
        .start_process(ProcessSpec {
            command: SHELL.to_owned(),
            cwd: WORKSPACE.to_owned(),
            env,
            stdin_open: true,
            tty: Some(size),
            timeout: None,
            output_bytes: state.config.process_output_bytes,
            max_running: Some(u32::try_from(state.config.max_processes).unwrap_or(u32::MAX)),
        })
        .await?;
    tracing::info!(sandbox = %container_id, process = info.id, "terminal opened");
    Ok(upgrade.on_upgrade(move |socket| serve(socket, agent, info.id)))
}

/// How long a terminal waits for the client's Close after its shell ended.
const CLOSE_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(socket: WebSocket, agent: Arc<AgentClient>, id: u64) {
    let (mut to_client, mut from_client) = socket.split();
    let mut output = match agent.follow_process(id, 0, 0).await {
        Ok(events) => events,
        Err(_) => {
            let _ = agent.remove_process(id).await;
            return;
        }
    };
    loop {
        tokio::select! {
            event = output.next() => match event {
                Some(Ok(ProcessEvent::Stdout(bytes) | ProcessEvent::Stderr(bytes))) => {
                    if to_client.send(Message::Binary(bytes)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(ProcessEvent::Following { .. })) => {}
                Some(Ok(ProcessEvent::Ended(info))) => {
                    let exit = serde_json::json!({"type": "exit", "exit_code": info.exit_code});
                    let _ = to_client.send(Message::Text(exit.to_string().into())).await;
                    // A normal closure (1000), as the contract says: a Close without a
                    // code reads as 1005 ("no status") to the client.
                    let normal = axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::NORMAL,
                        reason: "exited".into(),
                    };
                    let _ = to_client.send(Message::Close(Some(normal))).await;
                    let _ = agent.remove_process(id).await;
                    // The closing handshake: what the client still sends is read until
                    // its Close (bounded). A socket dropped with unread input is reset,
                    // and a reset can make the client lose the exit message above.
                    let _ = tokio::time::timeout(CLOSE_BOUND, async {
                        while let Some(Ok(message)) = from_client.next().await {
                            if matches!(message, Message::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                    return;
                }
                Some(Err(_)) | None => break,
            },
            message = from_client.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let body = futures_util::stream::once(async move { Ok(bytes) });
                    match agent.process_stdin(id, Box::pin(body), false).await {
                        Ok(()) => {}
                        // The shell has ended (or closed its terminal) while this input
                        // was on its way, e.g. the Ctrl-D after `exit`: its end and exit
                        // status are still to come on the output, and must reach the
                        // client before the socket closes.
                        Err(Error::Conflict(_) | Error::ProcessNotFound(_)) => {}
                        Err(_) => break,
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(Control::Resize { cols, rows }) = serde_json::from_str(text.as_str())
                        && let Ok(size) = size(cols, rows)
                    {
                        let _ = agent.resize_process(id, size).await;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
        }
    }
    // The client went away (or the agent did): the shell ends with the terminal.
    let _ = agent.remove_process(id).await;
}
