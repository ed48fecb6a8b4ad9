//! `repobox ports ID` (the TCP ports listening in a sandbox) and `repobox port-forward
//! ID LOCAL:REMOTE`: a local port whose every connection is carried to a port inside
//! the sandbox, each through a WebSocket of its own (`GET /containers/{id}/tcp/{port}`,
//! binary frames both ways).

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::CliResult;
use super::client::Client;
use super::output::{field, out, outln, print_json, table};

/// Arguments of `repobox port-forward`.
#[derive(Debug, Clone, clap::Args)]
pub struct PortForwardArgs {
    /// Sandbox id.
    pub id: String,
    /// `LOCAL:REMOTE`: listen on 127.0.0.1:LOCAL, reach 127.0.0.1:REMOTE in the
    /// sandbox (`REMOTE` alone: the same number on both sides).
    #[arg(value_parser = parse_mapping)]
    pub ports: (u16, u16),
}

/// Parses `LOCAL:REMOTE` or `PORT`.
fn parse_mapping(raw: &str) -> Result<(u16, u16), String> {
    let port = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{text:?} is not a port (1 … 65535)"))
    };
    match raw.split_once(':') {
        Some((local, remote)) => Ok((port(local)?, port(remote)?)),
        None => port(raw).map(|port| (port, port)),
    }
}

/// `repobox ports ID`.
pub async fn list(client: &Client, id: &str, json: bool) -> CliResult {
    let ports = client.get(&format!("/containers/{id}/ports")).await?;
    if json {
        print_json(&ports);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = ports
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|port| {
            let addresses = port["addresses"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|address| address.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                field(port, "port"),
                addresses,
                field(port, "pid"),
                field(port, "process"),
            ]
        })
        .collect();
    out(table(&["PORT", "ADDRESSES", "PID", "PROCESS"], &rows));
    Ok(0)
}

/// The TCP route's WebSocket URL.
fn tcp_url(base: &str, id: &str, port: u16) -> String {
    super::shell::websocket_url(base, &format!("/containers/{id}/tcp/{port}"))
}

/// `repobox port-forward ID LOCAL:REMOTE`: runs until interrupted.
pub async fn forward(client: &Client, args: PortForwardArgs) -> CliResult {
    let (local, remote) = args.ports;
    // The sandbox must exist (and a key be right) before we claim to forward.
    client.get(&format!("/containers/{}", args.id)).await?;
    let listener = TcpListener::bind(("127.0.0.1", local))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{local}"))?;
    outln(format_args!(
        "Forwarding 127.0.0.1:{local} -> {}:{remote} (Ctrl-C to stop)",
        args.id
    ));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (client, id) = (client.clone(), args.id.clone());
                tokio::spawn(async move {
                    if let Err(err) = connection(&client, &id, remote, stream).await {
                        eprintln!("repobox: a connection to port {remote}: {err}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// Carries one local connection to the sandbox's port until either side closes.
async fn connection(client: &Client, id: &str, port: u16, stream: TcpStream) -> CliResult<()> {
    let url = tcp_url(client.base(), id, port);
    let socket = super::shell::open_websocket(client, url, "a connection").await?;
    let (mut to_server, mut from_server) = socket.split();
    let (mut reader, mut writer) = stream.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
                    if to_server.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
            }
        }
        // An empty frame ends our side only (a half-close): the answer may still be on
        // its way, and the other direction ends this.
        let _ = to_server.send(Message::Binary(bytes::Bytes::new())).await;
        std::future::pending::<()>().await;
    };
    let downstream = async {
        while let Some(Ok(message)) = from_server.next().await {
            let written = match message {
                Message::Binary(bytes) => writer.write_all(&bytes).await,
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if written.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_local_then_remote() {
        assert_eq!(parse_mapping("8080:3000"), Ok((8080, 3000)));
        assert_eq!(parse_mapping("3000"), Ok((3000, 3000)));
        assert!(parse_mapping("0:3000").is_err());
        assert!(parse_mapping("8080:70000").is_err());
        assert!(parse_mapping("a:b").is_err());
    }

    #[test]
    fn tcp_urls_speak_websocket() {
        assert_eq!(
            tcp_url("http://127.0.0.1:8000", "box-1", 3000),
            "ws://127.0.0.1:8000/api/v1/containers/box-1/tcp/3000"
        );
        assert_eq!(
            tcp_url("https://h", "b", 80),
            "wss://h/api/v1/containers/b/tcp/80"
        );
    }
}
