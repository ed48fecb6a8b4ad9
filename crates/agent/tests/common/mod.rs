//! A small client of the agent for the integration tests: spawns the built binary and
//! speaks the protocol over its stdin and stdout.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use repobox_protocol::{Frame, FrameCodec, MAX_CHUNK, Reply, Request, Stat, Tag, WINDOW};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

/// How long any single frame may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(60);

struct Route {
    tx: mpsc::UnboundedSender<Frame>,
    auto_credit: bool,
}

type Routes = Arc<Mutex<HashMap<u64, Route>>>;

/// A running agent.
pub(crate) struct Agent {
    child: Child,
    writer: mpsc::UnboundedSender<Frame>,
    routes: Routes,
    next_id: AtomicU64,
}

impl Agent {
    /// Spawns the agent and says hello.
    pub(crate) async fn start() -> Agent {
        Self::start_with_env(&[]).await
    }

    /// Spawns the agent with more environment variables and says hello.
    pub(crate) async fn start_with_env(env: &[(&str, &str)]) -> Agent {
        let agent = Self::spawn(env);
        let ack = agent.hello(7).await;
        assert!(
            matches!(
                ack,
                Reply::HelloAck {
                    epoch: 7,
                    protocol: repobox_protocol::PROTOCOL_VERSION,
                    ..
                }
            ),
            "{ack:?}"
        );
        agent
    }

    /// Spawns the agent without a hello.
    pub(crate) fn spawn(env: &[(&str, &str)]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_repobox-agent"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the agent");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (writer, mut writer_rx) = mpsc::unbounded_channel::<Frame>();
        tokio::spawn(async move {
            let mut sink = FramedWrite::new(stdin, FrameCodec::new());
            while let Some(frame) = writer_rx.recv().await {
                if sink.feed(frame).await.is_err() {
                    return;
                }
                while let Ok(frame) = writer_rx.try_recv() {
                    if sink.feed(frame).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        let routes: Routes = Arc::default();
        let reader_routes = routes.clone();
        let credit_writer = writer.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(stdout, FrameCodec::new());
            while let Some(Ok(frame)) = frames.next().await {
                let routes = reader_routes.lock().unwrap();
                if let Some(route) = routes.get(&frame.id) {
                    if route.auto_credit && frame.tag != Tag::Control && !frame.body.is_empty() {
                        let credit = Request::Credit {
                            bytes: repobox_protocol::frame_cost(frame.body.len()),
                        };
                        let _ = credit_writer.send(Frame::control(frame.id, &credit));
                    }
                    let _ = route.tx.send(frame);
                }
            }
        });
        Agent {
            child,
            writer,
            routes,
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends a hello and waits for its ack.
    pub(crate) async fn hello(&self, epoch: u64) -> Reply {
        let mut op = self.route(0, true);
        op.send(&Request::Hello { epoch });
        loop {
            let reply = op.reply().await;
            if matches!(reply, Reply::HelloAck { epoch: e, .. } if e == epoch) {
                return reply;
            }
        }
    }

    fn route(&self, id: u64, auto_credit: bool) -> Op {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap()
            .insert(id, Route { tx, auto_credit });
        Op {
            id,
            rx,
            writer: self.writer.clone(),
        }
    }

    /// Opens an operation; its data is credited back as soon as it arrives.
    pub(crate) fn open(&self, request: &Request) -> Op {
        self.open_with(request, true)
    }

    /// Opens an operation, crediting its data automatically or not.
    pub(crate) fn open_with(&self, request: &Request, auto_credit: bool) -> Op {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let op = self.route(id, auto_credit);
        op.send(request);
        op
    }

    /// Runs a command with default options.
    pub(crate) async fn exec(&self, command: &str) -> ExecOutput {
        self.open(&exec_request(command)).exec_output().await
    }

    /// The agent's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

/// An exec request with defaults (cwd /, no stdin, no timeout, no cap).
pub(crate) fn exec_request(command: &str) -> Request {
    Request::Exec {
        command: command.to_owned(),
        cwd: "/".to_owned(),
        env: Vec::new(),
        stdin: false,
        timeout_ms: None,
        output_cap: None,
    }
}

/// One operation of a client.
pub(crate) struct Op {
    /// Its id.
    pub id: u64,
    rx: mpsc::UnboundedReceiver<Frame>,
    writer: mpsc::UnboundedSender<Frame>,
}

/// What a command gave.
#[derive(Debug, Default)]
pub(crate) struct ExecOutput {
    /// Pid from `Started`.
    pub pid: u32,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
    /// The final reply (`Exit` or `Error`).
    pub end: Option<Reply>,
}

impl ExecOutput {
    /// The exit code (panics if the command did not exit).
    pub(crate) fn code(&self) -> i64 {
        match &self.end {
            Some(Reply::Exit { exit_code, .. }) => *exit_code,
            other => panic!("no exit: {other:?}"),
        }
    }

    /// Stdout as text.
    pub(crate) fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Op {
    /// Sends a control message on this operation.
    pub(crate) fn send(&self, request: &Request) {
        self.writer.send(Frame::control(self.id, request)).unwrap();
    }

    /// Sends a data frame.
    pub(crate) fn send_data(&self, data: &[u8]) {
        self.writer
            .send(Frame::data(
                Tag::Data,
                self.id,
                Bytes::copy_from_slice(data),
            ))
            .unwrap();
    }

    /// The next frame (fails the test after a long wait).
    pub(crate) async fn next(&mut self) -> Frame {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("timed out waiting for a frame")
            .expect("the agent went away")
    }

    /// The next frame, if one comes within `wait`.
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next control reply (data frames before it fail the test).
    pub(crate) async fn reply(&mut self) -> Reply {
        let frame = self.next().await;
        assert_eq!(frame.tag, Tag::Control, "expected a reply, got data");
        frame.parse().unwrap()
    }

    /// The next reply that is not a credit.
    pub(crate) async fn final_reply(&mut self) -> Reply {
        loop {
            match self.reply().await {
                Reply::Credit { .. } => {}
                reply => return reply,
            }
        }
    }

    /// Collects a command's frames up to its end.
    pub(crate) async fn exec_output(&mut self) -> ExecOutput {
        self.exec_with_input(None).await
    }

    /// Collects a command's frames up to its end, sending `input` as stdin (within the
    /// window, then Eof) when given.
    pub(crate) async fn exec_with_input(&mut self, input: Option<&[u8]>) -> ExecOutput {
        let mut output = ExecOutput::default();
        let mut sender = input.map(Uploader::new);
        loop {
            if let Some(sender) = sender.as_mut() {
                sender.pump(self);
            }
            let frame = self.next().await;
            match frame.tag {
                Tag::Stdout => output.stdout.extend_from_slice(&frame.body),
                Tag::Stderr => output.stderr.extend_from_slice(&frame.body),
                Tag::Data => panic!("data frame in an exec"),
                Tag::Control => match frame.parse::<Reply>().unwrap() {
                    Reply::Started { pid } => output.pid = pid,
                    Reply::Credit { bytes } => {
                        if let Some(sender) = sender.as_mut() {
                            sender.credit(bytes);
                        }
                    }
                    reply => {
                        output.end = Some(reply);
                        return output;
                    }
                },
            }
        }
    }

    /// Uploads `data` (Write, ArchiveIn) within the window, then Eof; returns the final reply.
    pub(crate) async fn upload(&mut self, data: &[u8]) -> Reply {
        let mut sender = Uploader::new(data);
        loop {
            sender.pump(self);
            match self.reply().await {
                Reply::Credit { bytes } => sender.credit(bytes),
                reply => return reply,
            }
        }
    }

    /// Collects a stream (Read, ArchiveOut): `Opened`'s stat and the data, up to `End`;
    /// `Err` with the error reply instead.
    pub(crate) async fn download(&mut self) -> Result<(Stat, Vec<u8>), Reply> {
        let stat = match self.reply().await {
            Reply::Opened { stat } => stat,
            reply => return Err(reply),
        };
        let mut data = Vec::new();
        loop {
            let frame = self.next().await;
            match frame.tag {
                Tag::Data => {
                    assert!(frame.body.len() <= MAX_CHUNK);
                    data.extend_from_slice(&frame.body);
                }
                Tag::Control => match frame.parse::<Reply>().unwrap() {
                    Reply::End => return Ok((stat, data)),
                    reply => return Err(reply),
                },
                tag => panic!("unexpected {tag:?}"),
            }
        }
    }
}

/// Sends data within the window as credit comes back.
struct Uploader<'a> {
    data: &'a [u8],
    outstanding: u64,
    eof_sent: bool,
}

impl<'a> Uploader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            outstanding: 0,
            eof_sent: false,
        }
    }

    fn pump(&mut self, op: &Op) {
        while !self.data.is_empty() {
            let n = self.data.len().min(MAX_CHUNK);
            if self.outstanding + n as u64 > WINDOW {
                return;
            }
            op.send_data(&self.data[..n]);
            self.data = &self.data[n..];
            self.outstanding += n as u64;
        }
        if !self.eof_sent {
            op.send(&Request::Eof);
            self.eof_sent = true;
        }
    }

    fn credit(&mut self, bytes: u64) {
        self.outstanding = self
            .outstanding
            .checked_sub(bytes)
            .expect("more credit than data sent");
    }
}

/// Processes (other than this one) whose command line contains `marker`.
pub(crate) fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates one.
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "repobox-agent-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it, as the protocol's string.
    pub(crate) fn join(&self, rel: &str) -> String {
        self.0.join(rel).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
