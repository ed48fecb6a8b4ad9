//! `repobox shell ID`: an interactive login shell in a sandbox through the WebSocket
//! `GET /containers/{id}/terminal`.
//!
//! Binary frames carry the terminal's bytes both ways; a window size change
//! (SIGWINCH) becomes a `{"type": "resize"}` text frame; the server's `{"type":
//! "exit"}` frame gives our exit status. On a terminal, the local one is put in raw
//! mode (keys such as Ctrl-C go to the remote shell) and restored on the way out,
//! whatever happens. Without one (input piped), the input is sent as typed and its
//! end sends Ctrl-D.

use std::io::{IsTerminal as _, Read as _};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};

use super::client::{Client, error_from_body};
use super::output::write_now;
use super::{CliError, CliResult};

/// Arguments of `repobox shell`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShellArgs {
    /// Sandbox id.
    pub id: String,
}

/// The terminal's size, or 80×24 when unknown (or reported as zero).
fn terminal_size(interactive: bool) -> (u16, u16) {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if interactive && cols > 0 && rows > 0 => (cols, rows),
        _ => (80, 24),
    }
}

/// The API's WebSocket URL for `path` (under the API prefix): the server's own with
/// `ws`/`wss` for `http`/`https`.
pub fn websocket_url(base: &str, path: &str) -> String {
    let base = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| base.to_owned());
    format!("{base}{}{path}", repobox_client::API_PREFIX)
}

/// A WebSocket of the API at `url`, with the client's key; the server's refusal is its
/// JSON error, anything else says it could not open `what`.
pub async fn open_websocket(
    client: &Client,
    url: String,
    what: &str,
) -> CliResult<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("building the request for {what}"))?;
    if let Some(key) = client.key() {
        let value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| CliError::Usage("the API key is not a valid header value".to_owned()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|err| match err {
            tungstenite::Error::Http(response) => error_from_body(
                reqwest::StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
                response.body().as_deref().unwrap_or_default(),
            ),
            other => CliError::Other(
                anyhow::Error::new(other)
                    .context(format!("cannot open {what} at {}", client.base())),
            ),
        })?;
    Ok(socket)
}

/// The terminal's WebSocket URL.
pub fn terminal_url(base: &str, id: &str, cols: u16, rows: u16) -> String {
    websocket_url(
        base,
        &format!("/containers/{id}/terminal?cols={cols}&rows={rows}"),
    )
}

/// Runs `repobox shell`; returns the shell's exit status.
pub async fn run(client: &Client, args: ShellArgs) -> CliResult {
    let interactive = std::io::stdin().is_terminal();
    let (cols, rows) = terminal_size(interactive);
    let url = terminal_url(client.base(), &args.id, cols, rows);
    let socket = open_websocket(client, url, "a terminal").await?;
    let raw = if interactive {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let ended = session(socket, interactive).await;
    drop(raw);
    ended
}

/// The local terminal in raw mode while this lives.
struct RawMode;

impl RawMode {
    fn enable() -> CliResult<Self> {
        crossterm::terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Reads our stdin on a thread of its own (a blocking read that no runtime waits
/// for at exit) into `tx`; the channel closes at end of input.
fn read_stdin(tx: mpsc::Sender<Vec<u8>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buffer = [0u8; 8192];
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if tx.blocking_send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Exit { exit_code: Option<i64> },
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session(socket: Socket, interactive: bool) -> CliResult {
    let (mut to_server, mut from_server) = socket.split();
    let (tx, mut input) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || read_stdin(tx))
        .context("starting the input thread")?;
    let mut resizes = if interactive {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .context("listening for window size changes")?,
        )
    } else {
        None
    };
    let mut input_open = true;
    let mut exit_code = None;
    loop {
        let resized = async {
            match &mut resizes {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = from_server.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    write_now(false, &bytes).context("writing to the terminal")?;
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(Control::Exit { exit_code: code }) = serde_json::from_str(text.as_str()) {
                        exit_code = Some(code);
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                // A connection reset after the exit message is the end, not an error.
                Some(Err(_)) if exit_code.is_some() => break,
                Some(Err(err)) => {
                    return Err(anyhow::Error::new(err).context("the terminal connection broke").into());
                }
            },
            chunk = input.recv(), if input_open => {
                let message = match chunk {
                    Some(bytes) => Message::Binary(bytes.into()),
                    None => {
                        // End of piped input: Ctrl-D, as a user would type it.
                        input_open = false;
                        Message::Binary(vec![4u8].into())
                    }
                };
                if to_server.send(message).await.is_err() && exit_code.is_none() {
                    // The server went away; what it sent last is read next round.
                    input_open = false;
                }
            },
            Some(()) = resized => {
                let (cols, rows) = terminal_size(true);
                let resize = json!({"type": "resize", "cols": cols, "rows": rows});
                let _ = to_server.send(Message::Text(resize.to_string().into())).await;
            },
        }
    }
    match exit_code {
        Some(code) => Ok(super::exec::exit_status(code)),
        None => Err(anyhow::anyhow!("the terminal closed without the shell's exit status").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_urls_speak_websocket() {
        assert_eq!(
            terminal_url("http://127.0.0.1:8000", "box-1", 100, 30),
            "ws://127.0.0.1:8000/api/v1/containers/box-1/terminal?cols=100&rows=30"
        );
        assert_eq!(
            terminal_url("https://h/prefix", "b", 80, 24),
            "wss://h/prefix/api/v1/containers/b/terminal?cols=80&rows=24"
        );
    }
}
