//! A fake sandbox agent that floods: it obeys the flow control to the letter (so the
//! server cannot cut it off) but answers one command with as many bytes of output as
//! it is told. Shared by `tests/agent_flood.rs` and `make bench` (figure 14): what the
//! server's memory does when a sandbox sends all it may.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use repobox::agent::{AgentClient, Limits};
use repobox::backend::Transport;
use repobox_protocol::{
    FRAME_COST, Frame, FrameCodec, MAX_CHUNK, PROTOCOL_VERSION, Reply, Request, Tag, WINDOW,
};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Encoder, FramedRead};

/// Resident memory of this process, in bytes.
pub(crate) fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn encode(frame: Frame, into: &mut BytesMut) {
    FrameCodec::new().encode(frame, into).unwrap();
}

/// A fake agent that answers one `Exec` with `total` bytes of stdout, sent within the
/// credit the server gives (as an honest agent would), then exit code 0.
pub(crate) async fn flooding_agent(total: u64) -> AgentClient {
    let (server, agent) = tokio::io::duplex(256 * 1024);
    let (server_read, server_write) = tokio::io::split(server);
    let (agent_read, mut agent_write) = tokio::io::split(agent);
    tokio::spawn(async move {
        let mut requests = FramedRead::new(agent_read, FrameCodec::new());
        let (credit_tx, mut credit_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (exec_tx, mut exec_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Option<u64>)>();
        let hello_tx = exec_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = requests.next().await {
                match frame.parse::<Request>() {
                    Ok(Request::Hello { epoch }) => {
                        let _ = hello_tx.send((0, Some(epoch)));
                    }
                    Ok(Request::Exec { .. }) => {
                        let _ = exec_tx.send((frame.id, None));
                    }
                    Ok(Request::Credit { bytes }) => {
                        let _ = credit_tx.send(bytes);
                    }
                    _ => {}
                }
            }
        });
        let chunk = Bytes::from(vec![b'x'; MAX_CHUNK]);
        while let Some((id, epoch)) = exec_rx.recv().await {
            let mut out = BytesMut::new();
            if let Some(epoch) = epoch {
                encode(
                    Frame::control(
                        0,
                        &Reply::HelloAck {
                            epoch,
                            protocol: PROTOCOL_VERSION,
                            agent_version: "flood".to_owned(),
                        },
                    ),
                    &mut out,
                );
                if agent_write.write_all(&out).await.is_err() {
                    return;
                }
                continue;
            }
            encode(Frame::control(id, &Reply::Started { pid: 2 }), &mut out);
            let mut window = WINDOW;
            let mut sent = 0u64;
            while sent < total {
                let cost = chunk.len() as u64 + FRAME_COST;
                while window < cost {
                    if !out.is_empty() {
                        if agent_write.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    match credit_rx.recv().await {
                        Some(bytes) => window += bytes,
                        None => return,
                    }
                }
                window -= cost;
                encode(Frame::data(Tag::Stdout, id, chunk.clone()), &mut out);
                sent += chunk.len() as u64;
            }
            encode(
                Frame::control(
                    id,
                    &Reply::Exit {
                        exit_code: 0,
                        timed_out: false,
                        // The agent lies: it says nothing was cut.
                        stdout_truncated: false,
                        stderr_truncated: false,
                    },
                ),
                &mut out,
            );
            if agent_write.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    AgentClient::connect_with(
        Transport {
            reader: Box::pin(server_read),
            writer: Box::pin(server_write),
        },
        Duration::from_secs(5),
        Limits::default(),
        Box::new(|reason| panic!("an agent within its window was cut off: {reason}")),
    )
    .await
    .unwrap()
}

pub(crate) fn command() -> repobox::exec::Command {
    repobox::exec::Command {
        command: "yes".to_owned(),
        working_dir: "/".to_owned(),
        timeout: Duration::from_secs(600),
        env: Vec::new(),
        stdin: None,
    }
}
