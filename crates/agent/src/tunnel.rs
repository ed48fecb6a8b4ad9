//! TCP connections carried over the protocol: [`Request::Connect`] (the server reaches
//! a port inside the sandbox) and [`Request::Accept`] (a process in the sandbox reaches
//! the server, through a port the agent listens on).
//!
//! [`Request::Connect`]: repobox_protocol::Request::Connect
//! [`Request::Accept`]: repobox_protocol::Request::Accept

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use repobox_protocol::{ErrorKind, MAX_CHUNK, Reply, Tag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::Incoming;
use crate::flow::{Outbox, Window};

/// The ports the agent listens on for [`Request::Accept`], bound once and kept: an
/// accept of a new connection never races a process of the sandbox for the port.
///
/// [`Request::Accept`]: repobox_protocol::Request::Accept
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    bound: Mutex<HashMap<u16, Arc<TcpListener>>>,
}

impl Listeners {
    /// The listener on `127.0.0.1:port`, bound now if it is not yet.
    fn get(&self, port: u16) -> std::io::Result<Arc<TcpListener>> {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listener) = bound.get(&port) {
            return Ok(listener.clone());
        }
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        std_listener.set_nonblocking(true)?;
        let listener = Arc::new(TcpListener::from_std(std_listener)?);
        bound.insert(port, listener.clone());
        Ok(listener)
    }

    /// The ports bound (the agent's own, left out of [`Request::Ports`]).
    ///
    /// [`Request::Ports`]: repobox_protocol::Request::Ports
    pub(crate) fn ports(&self) -> Vec<u16> {
        let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.keys().copied().collect()
    }
}

/// [`Request::Connect`]: connects to `127.0.0.1:port` (or `[::1]:port` when nothing
/// listens on the first), then carries the connection.
///
/// [`Request::Connect`]: repobox_protocol::Request::Connect
pub(crate) async fn connect(
    out: Outbox,
    window: Arc<Window>,
    rx: mpsc::UnboundedReceiver<Incoming>,
    port: u16,
) {
    let connected = match TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
        // A server told to listen on `localhost` may have taken ::1 only (Node's
        // resolver prefers it on some systems): the port is open there.
        Err(refused) if refused.kind() == std::io::ErrorKind::ConnectionRefused => {
            TcpStream::connect((Ipv6Addr::LOCALHOST, port))
                .await
                .map_err(|_| refused)
        }
        other => other,
    };
    match connected {
        Ok(stream) => {
            if out.reply(&Reply::Connected).await {
                carry(out, window, rx, stream).await;
            }
        }
        Err(error) => {
            let kind = if error.kind() == std::io::ErrorKind::ConnectionRefused {
                ErrorKind::NotFound
            } else {
                ErrorKind::Other
            };
            let message = format!("cannot connect to 127.0.0.1:{port} in the sandbox: {error}");
            out.reply(&Reply::error(kind, message)).await;
        }
    }
}

/// [`Request::Accept`]: waits for one connection to `127.0.0.1:port`, then carries it.
///
/// [`Request::Accept`]: repobox_protocol::Request::Accept
pub(crate) async fn accept(
    out: Outbox,
    window: Arc<Window>,
    rx: mpsc::UnboundedReceiver<Incoming>,
    listeners: Arc<Listeners>,
    port: u16,
) {
    let listener = match listeners.get(port) {
        Ok(listener) => listener,
        Err(error) => {
            let kind = if error.kind() == std::io::ErrorKind::AddrInUse {
                ErrorKind::Conflict
            } else {
                ErrorKind::Other
            };
            let message = format!("cannot listen on 127.0.0.1:{port} in the sandbox: {error}");
            out.reply(&Reply::error(kind, message)).await;
            return;
        }
    };
    let stream = loop {
        match listener.accept().await {
            Ok((stream, _)) => break stream,
            // A connection reset before it was taken, or out of descriptors for a
            // moment: the next one will do.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    if out.reply(&Reply::Connected).await {
        carry(out, window, rx, stream).await;
    }
}

/// Carries `stream` both ways until it closes: the server's data is written to it (and
/// credited as written), its `Eof` shuts the sending side; what the stream sends goes
/// out as data within `window`; then [`Reply::End`] (or the error).
async fn carry(
    out: Outbox,
    window: Arc<Window>,
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    stream: TcpStream,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let inbound = async {
        while let Some(incoming) = rx.recv().await {
            match incoming {
                Incoming::Data(data) => {
                    let len = data.len() as u64;
                    writer.write_all(&data).await?;
                    out.reply(&Reply::Credit { bytes: len }).await;
                }
                Incoming::Eof => writer.shutdown().await?,
            }
        }
        // The operation was ended: the task is being dropped.
        std::future::pending::<std::io::Result<()>>().await
    };
    let outbound = async {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if !out
                .send_data(Tag::Data, &window, Bytes::copy_from_slice(&buf[..n]))
                .await
            {
                return Ok(());
            }
        }
    };
    let result = tokio::select! {
        result = outbound => result,
        result = inbound => result,
    };
    let reply = match result {
        Ok(()) => Reply::End,
        Err(error) => Reply::error(ErrorKind::Other, format!("the connection broke: {error}")),
    };
    out.reply(&reply).await;
}
