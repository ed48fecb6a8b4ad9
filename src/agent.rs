//! The server's end of the connection to a sandbox's agent.
//!
//! One [`AgentClient`] per sandbox, over the [`Transport`] its backend attached: a
//! writer task owns the outgoing half, a reader task decodes frames and hands each to
//! the operation whose id it carries. An operation ([`Op`]) is a request id with its
//! own inbox; dropping it before its final reply cancels it in the agent (a command
//! is killed with everything it started), which is how a client that goes away
//! stops what it started. Byte streams are flow-controlled per operation (see
//! [`repobox_protocol`]): credit for data the agent sent is returned only as the
//! consumer takes it, so a slow consumer slows its own operation and nothing else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use repobox_protocol::{
    ErrorKind, Frame, FrameCodec, MAX_CHUNK, PROTOCOL_VERSION, Reply, Request, Tag, WINDOW,
};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

pub use repobox_protocol::{Entry, Kind, OutputChunk, ProcessInfo, ProcessStatus, Stat};

use crate::backend::{BodyStream, ByteStream, Transport};
use crate::error::{Error, Result};

/// Version of the agent binary this server carries.
pub const AGENT_VERSION: &str = env!("REPOBOX_AGENT_VERSION");

/// The agent binary (static, x86-64 Linux) placed in every sandbox; built from
/// `crates/agent` by the build script.
pub static AGENT_BINARY: &[u8] = include_bytes!(env!("REPOBOX_AGENT_BINARY"));

/// Credit is returned in batches of at least this many bytes.
const CREDIT_BATCH: u64 = WINDOW / 4;

/// What the reader hands an operation.
#[derive(Debug)]
enum Incoming {
    Reply(Reply),
    Data(Tag, Bytes),
}

/// State shared by the client, its reader task and its operations.
struct Shared {
    ops: Mutex<HashMap<u64, mpsc::UnboundedSender<Incoming>>>,
    closed: AtomicBool,
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut ops) = self.ops.lock() {
            // Dropping the senders tells every operation the connection is gone.
            ops.clear();
        }
    }
}

/// A live connection to one sandbox's agent.
pub struct AgentClient {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Frame>,
    next_id: AtomicU64,
    version: String,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("version", &self.version)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

fn lost() -> Error {
    Error::NotRunning("the sandbox's agent is not answering (its connection was lost)".to_owned())
}

fn unexpected(reply: &Reply) -> Error {
    Error::internal(format!(
        "unexpected answer from the sandbox agent: {reply:?}"
    ))
}

/// The service error for an agent's error reply.
fn agent_error(kind: ErrorKind, message: String) -> Error {
    match kind {
        ErrorKind::NotFound => Error::PathNotFound(message),
        ErrorKind::NotDirectory
        | ErrorKind::IsDirectory
        | ErrorKind::Invalid
        | ErrorKind::PermissionDenied => Error::Invalid(message),
        ErrorKind::MissingTool => Error::MissingTool(message),
        ErrorKind::NoSpace => Error::TooLarge(message),
        ErrorKind::Busy => Error::NotRunning(message),
        ErrorKind::Limit => Error::LimitReached(message),
        ErrorKind::Conflict => Error::Conflict(message),
        ErrorKind::Other => Error::internal(message),
    }
}

/// The service error for an agent's error reply about an existing background process:
/// there `NotFound` means no process with that id.
fn process_error(kind: ErrorKind, message: String) -> Error {
    match kind {
        ErrorKind::NotFound => Error::ProcessNotFound(message),
        kind => agent_error(kind, message),
    }
}

impl AgentClient {
    /// Speaks to the agent at the other end of `transport`: says hello (which also
    /// ends whatever an earlier connection left running) and waits, within `bound`,
    /// for the answer.
    pub async fn connect(transport: Transport, bound: Duration) -> Result<Self> {
        let shared = Arc::new(Shared {
            ops: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Frame>();
        let writer_shared = shared.clone();
        let writer = tokio::spawn(async move {
            let mut sink = FramedWrite::new(transport.writer, FrameCodec::new());
            while let Some(frame) = queue.recv().await {
                let mut result = sink.feed(frame).await;
                while result.is_ok() {
                    match queue.try_recv() {
                        Ok(frame) => result = sink.feed(frame).await,
                        Err(_) => break,
                    }
                }
                if result.is_err() || sink.flush().await.is_err() {
                    break;
                }
            }
            writer_shared.close();
        });
        let reader_shared = shared.clone();
        let reader = tokio::spawn(async move {
            let mut frames = FramedRead::new(transport.reader, FrameCodec::new());
            while let Some(Ok(frame)) = frames.next().await {
                let incoming = match frame.tag {
                    Tag::Control => match frame.parse::<Reply>() {
                        Ok(reply) => Incoming::Reply(reply),
                        Err(err) => {
                            tracing::warn!(%err, "undecodable reply from a sandbox agent");
                            continue;
                        }
                    },
                    tag => Incoming::Data(tag, frame.body),
                };
                let Ok(mut ops) = reader_shared.ops.lock() else {
                    break;
                };
                if let Some(op) = ops.get(&frame.id)
                    && op.send(incoming).is_err()
                {
                    ops.remove(&frame.id);
                }
            }
            reader_shared.close();
        });
        let mut client = Self {
            shared,
            outgoing,
            next_id: AtomicU64::new(1),
            version: String::new(),
            tasks: [writer, reader],
        };
        let epoch = rand_u64();
        let mut hello = client.open_on(0, &Request::Hello { epoch })?;
        let acked = tokio::time::timeout(bound, async {
            loop {
                if let Incoming::Reply(Reply::HelloAck {
                    epoch: acked,
                    protocol,
                    agent_version,
                }) = hello.recv().await?
                    && acked == epoch
                {
                    return Ok((protocol, agent_version));
                }
            }
        })
        .await;
        hello.done = true;
        let (protocol, version) = match acked {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                return Err(Error::NotRunning(format!(
                    "the sandbox's agent did not answer within {bound:?}"
                )));
            }
        };
        if protocol != PROTOCOL_VERSION {
            return Err(Error::NotRunning(format!(
                "the sandbox's agent speaks protocol {protocol}, this server {PROTOCOL_VERSION}"
            )));
        }
        client.version = version;
        Ok(client)
    }

    /// The agent's version, as it reported it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the connection is gone (the agent died, or the stream broke).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    fn open(&self, request: &Request) -> Result<Op> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open_on(id, request)
    }

    fn open_on(&self, id: u64, request: &Request) -> Result<Op> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut ops = self.shared.ops.lock().map_err(|_| lost())?;
            if self.is_closed() {
                return Err(lost());
            }
            ops.insert(id, tx);
        }
        let op = Op {
            id,
            rx,
            shared: self.shared.clone(),
            outgoing: self.outgoing.clone(),
            done: false,
            unreturned: 0,
        };
        op.send(request)?;
        Ok(op)
    }

    /// Opens `request` and waits for its one final reply.
    async fn call(&self, request: &Request) -> Result<Reply> {
        self.call_with(request, agent_error).await
    }

    /// [`Self::call`], with its own mapping of the agent's errors.
    async fn call_with(
        &self,
        request: &Request,
        map_error: fn(ErrorKind, String) -> Error,
    ) -> Result<Reply> {
        let mut op = self.open(request)?;
        loop {
            if let Incoming::Reply(reply) = op.recv().await?
                && reply.is_final()
            {
                op.done = true;
                return match reply {
                    Reply::Error { kind, message } => Err(map_error(kind, message)),
                    other => Ok(other),
                };
            }
        }
    }

    /// Checks the agent answers.
    pub async fn ping(&self, bound: Duration) -> Result<()> {
        match tokio::time::timeout(bound, self.call(&Request::Ping)).await {
            Ok(Ok(Reply::Pong)) => Ok(()),
            Ok(Ok(other)) => Err(unexpected(&other)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::NotRunning(format!(
                "the sandbox's agent did not answer within {bound:?}"
            ))),
        }
    }

    /// Stats `path`; `None` when it does not exist.
    pub async fn stat(&self, path: &str, follow: bool) -> Result<Option<Stat>> {
        match self
            .call(&Request::Stat {
                path: path.to_owned(),
                follow,
            })
            .await?
        {
            Reply::Stat { stat } => Ok(stat),
            other => Err(unexpected(&other)),
        }
    }

    /// The entries of the directory `path`, sorted by name.
    pub async fn list(&self, path: &str) -> Result<Vec<Entry>> {
        match self
            .call(&Request::List {
                path: path.to_owned(),
            })
            .await?
        {
            Reply::Listing { entries } => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a directory and its parents.
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        match self
            .call(&Request::Mkdir {
                path: path.to_owned(),
            })
            .await?
        {
            Reply::Done { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Opens a byte stream out of the sandbox: the stat of what is read, then its bytes.
    async fn stream_out(&self, request: &Request) -> Result<(Stat, ByteStream)> {
        let mut op = self.open(request)?;
        let stat = loop {
            match op.recv().await? {
                Incoming::Reply(Reply::Opened { stat }) => break stat,
                Incoming::Reply(Reply::Error { kind, message }) => {
                    op.done = true;
                    return Err(agent_error(kind, message));
                }
                Incoming::Reply(other) if other.is_final() => {
                    op.done = true;
                    return Err(unexpected(&other));
                }
                _ => {}
            }
        };
        let stream = futures_util::stream::unfold(op, |mut op| async move {
            if op.done {
                return None;
            }
            loop {
                match op.recv().await {
                    Ok(Incoming::Data(_, bytes)) => {
                        op.consumed(bytes.len());
                        return Some((Ok(bytes), op));
                    }
                    Ok(Incoming::Reply(Reply::End)) => {
                        op.finish();
                        return None;
                    }
                    Ok(Incoming::Reply(Reply::Error { kind, message })) => {
                        op.done = true;
                        return Some((Err(agent_error(kind, message)), op));
                    }
                    Ok(Incoming::Reply(_)) => {}
                    Err(err) => {
                        op.done = true;
                        return Some((Err(err), op));
                    }
                }
            }
        });
        Ok((stat, Box::pin(stream)))
    }

    /// Reads the file `path` (symlinks followed): its stat and its bytes.
    pub async fn read(&self, path: &str) -> Result<(Stat, ByteStream)> {
        self.stream_out(&Request::Read {
            path: path.to_owned(),
        })
        .await
    }

    /// A tar of `path` (a final symlink as a link): the path's stat and the tar.
    pub async fn archive_out(&self, path: &str) -> Result<(Stat, ByteStream)> {
        self.stream_out(&Request::ArchiveOut {
            path: path.to_owned(),
        })
        .await
    }

    /// Sends `body` for `request` and waits for the final reply.
    async fn stream_in(&self, request: &Request, body: BodyStream) -> Result<Reply> {
        self.stream_in_with(request, body, agent_error).await
    }

    /// [`Self::stream_in`], with its own mapping of the agent's errors.
    async fn stream_in_with(
        &self,
        request: &Request,
        body: BodyStream,
        map_error: fn(ErrorKind, String) -> Error,
    ) -> Result<Reply> {
        let mut op = self.open(request)?;
        let early = op.pump(body).await?;
        let reply = match early {
            Some(reply) => reply,
            None => loop {
                if let Incoming::Reply(reply) = op.recv().await?
                    && reply.is_final()
                {
                    break reply;
                }
            },
        };
        op.done = true;
        match reply {
            Reply::Error { kind, message } => Err(map_error(kind, message)),
            other => Ok(other),
        }
    }

    /// Writes `body` to the file `path` (through a symlink there); returns its stat.
    pub async fn write(
        &self,
        path: &str,
        mode: u32,
        create_parents: bool,
        body: BodyStream,
    ) -> Result<Stat> {
        let request = Request::Write {
            path: path.to_owned(),
            mode,
            create_parents,
        };
        match self.stream_in(&request, body).await? {
            Reply::Done { stat: Some(stat) } => Ok(stat),
            other => Err(unexpected(&other)),
        }
    }

    /// Unpacks the tar `body` into the directory `path`.
    pub async fn archive_in(&self, path: &str, body: BodyStream) -> Result<()> {
        let request = Request::ArchiveIn {
            path: path.to_owned(),
        };
        match self.stream_in(&request, body).await? {
            Reply::Done { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a command; returns once it runs (or could not be started).
    pub async fn exec(&self, spec: ExecSpec) -> Result<Execution> {
        let request = Request::Exec {
            command: spec.command,
            cwd: spec.cwd,
            env: spec.env,
            stdin: spec.stdin.is_some(),
            timeout_ms: Some(u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX)),
            output_cap: spec.output_cap,
        };
        let op = self.open(&request)?;
        let mut execution = Execution {
            op,
            stdin: spec.stdin,
            stdin_credit: WINDOW,
            pid: 0,
            early: Vec::new(),
        };
        loop {
            execution.push_stdin();
            match execution.op.recv().await? {
                Incoming::Reply(Reply::Started { pid }) => {
                    execution.pid = pid;
                    return Ok(execution);
                }
                Incoming::Reply(Reply::Credit { bytes }) => execution.stdin_credit += bytes,
                Incoming::Reply(Reply::Error { kind, message }) => {
                    execution.op.done = true;
                    return Err(agent_error(kind, message));
                }
                Incoming::Reply(other) if other.is_final() => {
                    execution.op.done = true;
                    return Err(unexpected(&other));
                }
                other => execution.early.push(other),
            }
        }
    }

    /// Starts a background process, which belongs to the agent: it outlives this
    /// connection and the next server's hello, and ends when it exits, at its timeout,
    /// or when signalled or removed. Returns its info once it runs;
    /// [`Error::LimitReached`] when `max_running` processes already run.
    pub async fn start_process(&self, spec: ProcessSpec) -> Result<ProcessInfo> {
        let request = Request::ProcessStart {
            command: spec.command,
            cwd: spec.cwd,
            env: spec.env,
            stdin_open: spec.stdin_open,
            tty: spec.tty.is_some(),
            cols: spec.tty.map(|size| size.cols),
            rows: spec.tty.map(|size| size.rows),
            timeout_ms: spec
                .timeout
                .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            output_bytes: spec.output_bytes,
            max_running: spec.max_running,
        };
        // A working directory that does not exist is a path not found, as for `exec`.
        match self.call(&request).await? {
            Reply::Process { info } => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// The running processes and the most recent ended ones
    /// ([`repobox_protocol::MAX_ENDED`]), oldest first.
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>> {
        match self.call_with(&Request::ProcessList, process_error).await? {
            Reply::Processes { processes } => Ok(processes),
            other => Err(unexpected(&other)),
        }
    }

    /// One process; [`Error::ProcessNotFound`] for an unknown (or forgotten) id.
    pub async fn process(&self, id: u64) -> Result<ProcessInfo> {
        match self
            .call_with(&Request::ProcessGet { id }, process_error)
            .await?
        {
            Reply::Process { info } => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// The kept output of a process from the given byte offsets (since its start, per
    /// stream), at most `max_bytes` of each: an offset below the oldest kept byte is
    /// moved up to it (the chunk's `offset` says where it starts), one past the end
    /// gives nothing; each chunk's `end` is what the stream produced so far.
    pub async fn process_output(
        &self,
        id: u64,
        stdout_offset: u64,
        stderr_offset: u64,
        max_bytes: u64,
    ) -> Result<ProcessOutput> {
        let request = Request::ProcessOutput {
            id,
            stdout_offset,
            stderr_offset,
            max_bytes,
        };
        match self.call_with(&request, process_error).await? {
            Reply::ProcessOutput {
                stdout,
                stderr,
                status,
                exit_code,
            } => Ok(ProcessOutput {
                stdout,
                stderr,
                status,
                exit_code,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Follows a process's output from the given offsets (moved up as for
    /// [`Self::process_output`]). The stream's first event is
    /// [`ProcessEvent::Following`] with the actual offsets, then the kept and live
    /// output, then [`ProcessEvent::Ended`] with its final info (at once for a process
    /// that has ended). Dropping the stream ends the follow, not the process; several
    /// follows of one process may run at once.
    pub async fn follow_process(
        &self,
        id: u64,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<ProcessEvents> {
        let mut op = self.open(&Request::ProcessFollow {
            id,
            stdout_offset,
            stderr_offset,
        })?;
        let first = loop {
            match op.recv().await? {
                Incoming::Reply(Reply::Following {
                    stdout_offset,
                    stderr_offset,
                }) => {
                    break ProcessEvent::Following {
                        stdout_offset,
                        stderr_offset,
                    };
                }
                Incoming::Reply(Reply::Error { kind, message }) => {
                    op.done = true;
                    return Err(process_error(kind, message));
                }
                Incoming::Reply(other) if other.is_final() => {
                    op.done = true;
                    return Err(unexpected(&other));
                }
                _ => {}
            }
        };
        let stream =
            futures_util::stream::unfold((op, Some(first)), |(mut op, mut first)| async move {
                if let Some(first) = first.take() {
                    return Some((Ok(first), (op, None)));
                }
                if op.done {
                    return None;
                }
                loop {
                    let event = match op.recv().await {
                        Ok(Incoming::Data(tag, bytes)) => {
                            op.consumed(bytes.len());
                            match tag {
                                Tag::Stderr => ProcessEvent::Stderr(bytes),
                                _ => ProcessEvent::Stdout(bytes),
                            }
                        }
                        Ok(Incoming::Reply(Reply::ProcessEnded { info })) => {
                            op.finish();
                            ProcessEvent::Ended(info)
                        }
                        Ok(Incoming::Reply(Reply::Error { kind, message })) => {
                            op.done = true;
                            return Some((Err(process_error(kind, message)), (op, None)));
                        }
                        Ok(Incoming::Reply(_)) => continue,
                        Err(err) => {
                            op.done = true;
                            return Some((Err(err), (op, None)));
                        }
                    };
                    return Some((Ok(event), (op, None)));
                }
            });
        Ok(Box::pin(stream))
    }

    /// Writes `body` to a process's stdin, in order, and with `close` then closes it
    /// (on a terminal, types its end-of-file character instead). [`Error::Conflict`]
    /// when its stdin is not open or it has ended.
    pub async fn process_stdin(&self, id: u64, body: BodyStream, close: bool) -> Result<()> {
        let request = Request::ProcessStdin { id, close };
        match self.stream_in_with(&request, body, process_error).await? {
            Reply::Done { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends signal `signal` (its number) to everything a process started: its shell
    /// and all their descendants, also those that left its group or session. A
    /// process that has ended is left as it is.
    pub async fn signal_process(&self, id: u64, signal: i32) -> Result<()> {
        self.process_done(&Request::ProcessSignal { id, signal })
            .await
    }

    /// Sets the size of a process's terminal; [`Error::Conflict`] for one without.
    pub async fn resize_process(&self, id: u64, size: TerminalSize) -> Result<()> {
        self.process_done(&Request::ProcessResize {
            id,
            cols: size.cols,
            rows: size.rows,
        })
        .await
    }

    /// Kills everything a process started if it still runs, then forgets it.
    pub async fn remove_process(&self, id: u64) -> Result<()> {
        self.process_done(&Request::ProcessRemove { id }).await
    }

    async fn process_done(&self, request: &Request) -> Result<()> {
        match self.call_with(request, process_error).await? {
            Reply::Done { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// A background process to start.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Shell command line.
    pub command: String,
    /// Absolute working directory.
    pub cwd: String,
    /// Variables over the sandbox's own.
    pub env: Vec<(String, String)>,
    /// Whether stdin takes writes ([`AgentClient::process_stdin`]); otherwise it is
    /// `/dev/null`.
    pub stdin_open: bool,
    /// Run on a terminal of this size: stdout and stderr are then one stream, stdout.
    pub tty: Option<TerminalSize>,
    /// Deadline from the start: then it is killed, status timed out, exit code 124.
    pub timeout: Option<Duration>,
    /// Bytes kept of each output stream.
    pub output_bytes: u64,
    /// Refuse to start when this many run.
    pub max_running: Option<u32>,
}

/// Size of a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Width.
    pub cols: u16,
    /// Height.
    pub rows: u16,
}

/// Kept output of a process ([`AgentClient::process_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Stdout from its (moved up) offset.
    pub stdout: OutputChunk,
    /// Stderr from its (moved up) offset.
    pub stderr: OutputChunk,
    /// Where the process is.
    pub status: ProcessStatus,
    /// Its exit code, once ended.
    pub exit_code: Option<i64>,
}

/// One event of a follow ([`AgentClient::follow_process`]).
#[derive(Debug, Clone)]
pub enum ProcessEvent {
    /// The first event: where the output sent starts.
    Following {
        /// Offset of the first stdout byte.
        stdout_offset: u64,
        /// Offset of the first stderr byte.
        stderr_offset: u64,
    },
    /// Bytes on stdout (on a terminal, all output).
    Stdout(Bytes),
    /// Bytes on stderr.
    Stderr(Bytes),
    /// The process ended and all its output came (the last event).
    Ended(ProcessInfo),
}

/// The events of a follow; dropped, the follow ends (never the process).
pub type ProcessEvents =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ProcessEvent>> + Send>>;

/// A command to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Shell command line.
    pub command: String,
    /// Absolute working directory.
    pub cwd: String,
    /// Variables over the sandbox's own.
    pub env: Vec<(String, String)>,
    /// Standard input (`None`: empty).
    pub stdin: Option<Bytes>,
    /// Deadline.
    pub timeout: Duration,
    /// Cap on each output stream (`None`: everything).
    pub output_cap: Option<u64>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code: its own, 128+N for a signal, 124 at the timeout.
    pub exit_code: i64,
    /// Killed at its deadline.
    pub timed_out: bool,
    /// Stdout went past the cap.
    pub stdout_truncated: bool,
    /// Stderr went past the cap.
    pub stderr_truncated: bool,
}

/// One event of a running command.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    /// Bytes on stdout.
    Stdout(Bytes),
    /// Bytes on stderr.
    Stderr(Bytes),
    /// The command ended (the last event).
    Exit(ExitStatus),
}

/// A running command. Dropped before its exit, the command is killed.
pub struct Execution {
    op: Op,
    stdin: Option<Bytes>,
    stdin_credit: u64,
    pid: u32,
    early: Vec<Incoming>,
}

impl Execution {
    /// Process id of the command inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends as much of stdin as the agent has room for, then its end.
    fn push_stdin(&mut self) {
        let Some(stdin) = &mut self.stdin else {
            return;
        };
        while !stdin.is_empty() && self.stdin_credit > 0 {
            let take = stdin
                .len()
                .min(MAX_CHUNK)
                .min(usize::try_from(self.stdin_credit).unwrap_or(MAX_CHUNK));
            let chunk = stdin.split_to(take);
            self.stdin_credit -= take as u64;
            self.op.send_data(chunk);
        }
        if stdin.is_empty() {
            let _ = self.op.send(&Request::Eof);
            self.stdin = None;
        }
    }

    /// The next event; after [`ExecEvent::Exit`], an error.
    pub async fn next(&mut self) -> Result<ExecEvent> {
        loop {
            self.push_stdin();
            let incoming = if self.early.is_empty() {
                self.op.recv().await?
            } else {
                self.early.remove(0)
            };
            match incoming {
                Incoming::Data(tag, bytes) => {
                    self.op.consumed(bytes.len());
                    return Ok(match tag {
                        Tag::Stderr => ExecEvent::Stderr(bytes),
                        _ => ExecEvent::Stdout(bytes),
                    });
                }
                Incoming::Reply(Reply::Credit { bytes }) => self.stdin_credit += bytes,
                Incoming::Reply(Reply::Exit {
                    exit_code,
                    timed_out,
                    stdout_truncated,
                    stderr_truncated,
                }) => {
                    self.op.done = true;
                    return Ok(ExecEvent::Exit(ExitStatus {
                        exit_code,
                        timed_out,
                        stdout_truncated,
                        stderr_truncated,
                    }));
                }
                Incoming::Reply(Reply::Error { kind, message }) => {
                    self.op.done = true;
                    return Err(agent_error(kind, message));
                }
                Incoming::Reply(_) => {}
            }
        }
    }
}

/// One operation: a request id and its inbox.
struct Op {
    id: u64,
    rx: mpsc::UnboundedReceiver<Incoming>,
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Frame>,
    /// Its final reply has come (or it needs no cancel).
    done: bool,
    /// Data consumed but not yet credited back.
    unreturned: u64,
}

impl Op {
    /// Its final reply came: nothing to cancel when dropped.
    fn finish(&mut self) {
        self.done = true;
    }

    fn send(&self, request: &Request) -> Result<()> {
        self.outgoing
            .send(Frame::control(self.id, request))
            .map_err(|_| lost())
    }

    fn send_data(&self, bytes: Bytes) {
        let _ = self.outgoing.send(Frame::data(Tag::Data, self.id, bytes));
    }

    async fn recv(&mut self) -> Result<Incoming> {
        self.rx.recv().await.ok_or_else(lost)
    }

    /// `bytes` of the agent's data were consumed: return credit (in batches).
    fn consumed(&mut self, bytes: usize) {
        self.unreturned += bytes as u64;
        if self.unreturned >= CREDIT_BATCH {
            let bytes = std::mem::take(&mut self.unreturned);
            let _ = self.send(&Request::Credit { bytes });
        }
    }

    /// Sends `body` as data within the agent's credit, then its end. Returns early
    /// with the agent's final reply if it fails before the body is through.
    async fn pump(&mut self, mut body: BodyStream) -> Result<Option<Reply>> {
        let mut credit = WINDOW;
        let mut pending = Bytes::new();
        let mut ended = false;
        loop {
            while !pending.is_empty() && credit > 0 {
                let take = pending
                    .len()
                    .min(MAX_CHUNK)
                    .min(usize::try_from(credit).unwrap_or(MAX_CHUNK));
                self.send_data(pending.split_to(take));
                credit -= take as u64;
            }
            if pending.is_empty() && ended {
                self.send(&Request::Eof)?;
                return Ok(None);
            }
            let want_body = pending.is_empty() && !ended;
            tokio::select! {
                chunk = body.next(), if want_body => match chunk {
                    Some(Ok(bytes)) => pending = bytes,
                    Some(Err(err)) => {
                        // The body broke (or went over a limit): the agent drops what it
                        // has, since this op is cancelled when dropped.
                        return Err(Error::invalid(format!("the upload was cut off: {err}")));
                    }
                    None => ended = true,
                },
                incoming = self.recv() => match incoming? {
                    Incoming::Reply(Reply::Credit { bytes }) => credit += bytes,
                    Incoming::Reply(reply) if reply.is_final() => return Ok(Some(reply)),
                    _ => {}
                },
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if let Ok(mut ops) = self.shared.ops.lock() {
            ops.remove(&self.id);
        }
        if !self.done && self.id != 0 {
            let _ = self.send(&Request::Cancel);
        }
    }
}

/// A random 64-bit number (for the hello's epoch), without a dependency: the std
/// hasher is seeded randomly per process, and the time and a counter vary per call.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}
