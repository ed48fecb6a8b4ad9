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
//!
//! The agent runs in the sandbox, so what it sends is input from an attacker, checked
//! like an HTTP body (see [`Limits`]): frames are read by a strict decoder (one frame of
//! at most [`Limits::max_control`] bytes in the buffer, a malformed one is fatal), every
//! data frame is charged to its operation's window and one that goes past it is a
//! violation, credit beyond what was sent is a violation, an operation takes a handful
//! of control replies, and every call has a deadline. A violation drops the connection
//! at once and is reported once (see [`AgentClient::connect_with`]'s `on_violation`): the
//! server's memory for a sandbox stays within its windows and one control frame
//! whatever the agent does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use repobox_protocol::{
    ErrorKind, Frame, FrameCodec, MAX_CHUNK, PROTOCOL_VERSION, Reply, Request, Tag, WINDOW,
    frame_cost,
};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

pub use repobox_protocol::{
    Entry, Kind, ListeningPort, OutputChunk, ProcessInfo, ProcessStatus, Stat,
};

use crate::backend::{BodyStream, ByteStream, Transport};
use crate::error::{Error, Result};
use crate::sync::Locked as _;

/// Most entries of one directory listing.
pub const MAX_LISTING: usize = 100_000;

/// Credit is returned in batches of at least this many bytes.
const CREDIT_BATCH: u64 = WINDOW / 4;

/// What the reader hands an operation.
#[derive(Debug)]
enum Incoming {
    Reply(Reply),
    Data(Tag, Bytes),
}

/// How long a control call (a stat, a listing, a process's info) may wait for its
/// answer, and a transfer for its next frame, before the agent counts as gone.
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// Most control replies one operation takes (its non-final ones are a few: `Started`,
/// `Opened`, `Following`); more is a violation.
const MAX_CONTROL_REPLIES: u32 = 16;

/// What the server accepts from an agent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame body: a control reply (a listing page, a process's kept output)
    /// and a data chunk must fit.
    pub max_control: usize,
    /// How long a control call may wait for its answer, and a transfer for its next
    /// frame ([`CALL_DEADLINE`]).
    pub call_deadline: Duration,
}

impl Limits {
    /// Limits for a server that keeps `process_output_bytes` of each stream of a
    /// background process (one reply carries both streams, base64).
    pub fn for_process_output(process_output_bytes: u64) -> Self {
        let output = usize::try_from(process_output_bytes).unwrap_or(usize::MAX / 4);
        Self {
            max_control: (4 * 1024 * 1024usize)
                .max(output.saturating_mul(3).saturating_add(64 * 1024)),
            call_deadline: CALL_DEADLINE,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::for_process_output(1024 * 1024)
    }
}

/// Called once with the reason when an agent breaks the protocol.
pub type OnViolation = Box<dyn Fn(String) + Send + Sync>;

/// One operation as the reader knows it: its inbox and its accounts.
struct Slot {
    tx: mpsc::UnboundedSender<Incoming>,
    account: Arc<Account>,
    /// Whether the operation takes data frames (an output or a read stream).
    takes_data: bool,
}

/// An operation's flow accounting, shared by the reader and the operation.
#[derive(Default)]
struct Account {
    /// Window cost of the agent's data received and not yet credited back (queued or
    /// being consumed): at most [`WINDOW`] for an honest agent.
    held: AtomicU64,
    /// Data bytes the operation sent the agent that it has not yet credited.
    unacked: AtomicU64,
    /// Credit the agent returned that the operation has not yet taken.
    credit: AtomicU64,
    /// Control replies received.
    replies: std::sync::atomic::AtomicU32,
}

/// State shared by the client, its reader task and its operations.
struct Shared {
    ops: Mutex<HashMap<u64, Slot>>,
    closed: AtomicBool,
    /// Why the connection was dropped, when the agent broke the protocol.
    violation: Mutex<Option<String>>,
    /// [`Limits::call_deadline`].
    deadline: Duration,
    /// Told when the reader ends: the writer then drops its half too, so that the
    /// whole transport is let go (a peer cut off is not kept half-open).
    hangup: tokio::sync::Notify,
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        {
            let mut ops = self.ops.locked();
            // Dropping the senders tells every operation the connection is gone.
            ops.clear();
        }
    }

    fn violation(&self) -> Option<String> {
        self.violation.lock().ok().and_then(|v| v.clone())
    }

    /// The error an operation sees once the connection is gone.
    fn lost(&self) -> Error {
        match self.violation() {
            Some(reason) => Error::NotRunning(format!(
                "the sandbox's agent broke the protocol ({reason}); the sandbox is marked failed"
            )),
            None => lost(),
        }
    }
}

/// What the reader makes of one frame: `Err` is a protocol violation.
fn route(shared: &Shared, frame: Frame) -> std::result::Result<(), String> {
    let Ok(mut ops) = shared.ops.lock() else {
        return Err("internal: poisoned".to_owned());
    };
    // Frames of an operation that has ended (its reply came, or it was cancelled) are
    // dropped: an honest agent may still have had some under way.
    let Some(slot) = ops.get(&frame.id) else {
        return Ok(());
    };
    let incoming = match frame.tag {
        Tag::Control => {
            let reply: Reply = frame
                .parse()
                .map_err(|err| format!("an undecodable reply ({err})"))?;
            if let Reply::Credit { bytes } = reply {
                let unacked = slot.account.unacked.load(Ordering::SeqCst);
                if bytes > unacked {
                    return Err(format!("credit for {bytes} bytes when {unacked} were sent"));
                }
                slot.account.unacked.fetch_sub(bytes, Ordering::SeqCst);
                // One notice at a time: the operation takes all the credit there is.
                if slot.account.credit.fetch_add(bytes, Ordering::SeqCst) > 0 || bytes == 0 {
                    return Ok(());
                }
                Incoming::Reply(Reply::Credit { bytes: 0 })
            } else {
                let replies = slot.account.replies.fetch_add(1, Ordering::SeqCst) + 1;
                if replies > MAX_CONTROL_REPLIES {
                    return Err(format!(
                        "more than {MAX_CONTROL_REPLIES} replies to one operation"
                    ));
                }
                let last = reply.is_final();
                let incoming = Incoming::Reply(reply);
                if last {
                    // Nothing more is taken for it.
                    if let Some(slot) = ops.remove(&frame.id) {
                        let _ = slot.tx.send(incoming);
                    }
                    return Ok(());
                }
                incoming
            }
        }
        tag => {
            if !slot.takes_data {
                return Err("data for an operation that takes none".to_owned());
            }
            let held = slot
                .account
                .held
                .fetch_add(frame_cost(frame.body.len()), Ordering::SeqCst)
                + frame_cost(frame.body.len());
            if held > WINDOW {
                return Err(format!(
                    "{held} bytes of data beyond the credit it was given ({WINDOW})"
                ));
            }
            Incoming::Data(tag, frame.body)
        }
    };
    if slot.tx.send(incoming).is_err() {
        ops.remove(&frame.id);
    }
    Ok(())
}

/// A live connection to one sandbox's agent.
pub struct AgentClient {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Frame>,
    next_id: AtomicU64,
    version: String,
    tasks: [tokio::task::JoinHandle<()>; 2],
    /// Tasks that live as long as the connection ([`AgentClient::attach`]).
    attached: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.attached.locked().drain(..) {
            task.abort();
        }
        // Operations still held (a tunnel's pump) hear that the connection is gone
        // rather than wait on it.
        self.shared.close();
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
        // The sandbox's own failure (an errno of its filesystem or processes).
        ErrorKind::Other => Error::Sandbox(message),
    }
}

/// The service error for an agent's refusal to start a command: its working directory
/// missing (or not a directory) is a bad field of the request (400), never a 404,
/// which would say the sandbox is gone.
fn command_error(kind: ErrorKind, message: String) -> Error {
    match kind {
        ErrorKind::NotFound | ErrorKind::NotDirectory => {
            Error::Invalid(format!("working_directory: {message}"))
        }
        kind => agent_error(kind, message),
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
    /// Speaks to the agent at the other end of `transport` (says hello, which also
    /// ends whatever an earlier connection left running, and waits within `bound`
    /// for the answer), holding the agent to `limits`; `on_violation` is called once,
    /// with the reason, if the agent breaks the protocol (the connection is then gone).
    pub async fn connect_with(
        transport: Transport,
        bound: Duration,
        limits: Limits,
        on_violation: OnViolation,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            ops: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            violation: Mutex::new(None),
            deadline: limits.call_deadline,
            hangup: tokio::sync::Notify::new(),
        });
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Frame>();
        let writer_shared = shared.clone();
        let writer = tokio::spawn(async move {
            let mut sink = FramedWrite::new(transport.writer, FrameCodec::new());
            let hangup = writer_shared.hangup.notified();
            tokio::pin!(hangup);
            loop {
                let frame = tokio::select! {
                    frame = queue.recv() => match frame {
                        Some(frame) => frame,
                        None => break,
                    },
                    () = &mut hangup => break,
                };
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
            let mut frames = FramedRead::new(
                transport.reader,
                FrameCodec::strict(limits.max_control.max(MAX_CHUNK)),
            );
            let broken = loop {
                match frames.next().await {
                    Some(Ok(frame)) => {
                        if let Err(reason) = route(&reader_shared, frame) {
                            break Some(reason);
                        }
                    }
                    Some(Err(err)) if err.kind() == std::io::ErrorKind::InvalidData => {
                        break Some(err.to_string());
                    }
                    Some(Err(_)) | None => break None,
                }
            };
            if let Some(reason) = broken {
                // Logged once per connection: the agent is cut off here.
                tracing::warn!(%reason, "a sandbox agent broke the protocol; disconnected");
                {
                    let mut violation = reader_shared.violation.locked();
                    *violation = Some(reason.clone());
                }
                reader_shared.close();
                on_violation(reason);
            } else {
                reader_shared.close();
            }
            reader_shared.hangup.notify_one();
        });
        let mut client = Self {
            shared,
            outgoing,
            next_id: AtomicU64::new(1),
            version: String::new(),
            tasks: [writer, reader],
            attached: Mutex::default(),
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

    /// Why the connection was dropped, when the agent broke the protocol.
    pub fn violation(&self) -> Option<String> {
        self.shared.violation()
    }

    fn open(&self, request: &Request) -> Result<Op> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open_on(id, request)
    }

    fn open_on(&self, id: u64, request: &Request) -> Result<Op> {
        let takes_data = matches!(
            request,
            Request::Exec { .. }
                | Request::Read { .. }
                | Request::ArchiveOut { .. }
                | Request::ProcessFollow { .. }
                | Request::Connect { .. }
                | Request::Accept { .. }
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let account = Arc::new(Account::default());
        {
            let mut ops = self.shared.ops.lock().map_err(|_| lost())?;
            if self.is_closed() {
                return Err(self.shared.lost());
            }
            ops.insert(
                id,
                Slot {
                    tx,
                    account: account.clone(),
                    takes_data,
                },
            );
        }
        let op = Op {
            id,
            rx,
            shared: self.shared.clone(),
            outgoing: self.outgoing.clone(),
            account,
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
            if let Incoming::Reply(reply) = op.recv_within().await?
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

    /// The entries of the directory `path`, sorted by name: at most [`MAX_LISTING`]
    /// ([`Error::TooLarge`] beyond), asked for page by page.
    pub async fn list(&self, path: &str) -> Result<Vec<Entry>> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let reply = self
                .call(&Request::List {
                    path: path.to_owned(),
                    offset,
                })
                .await?;
            let Reply::Listing {
                entries,
                total,
                next,
            } = reply
            else {
                return Err(unexpected(&reply));
            };
            if total > MAX_LISTING as u64 || all.len() + entries.len() > MAX_LISTING {
                return Err(Error::TooLarge(format!(
                    "{path} has {total} entries, more than the {MAX_LISTING} a listing holds; \
                     list a subdirectory or download it as an archive"
                )));
            }
            // Each page must move on (an agent that says otherwise would loop us).
            if next <= offset && offset < total {
                return Err(Error::NotRunning(
                    "the sandbox's agent answered a listing that does not move on".to_owned(),
                ));
            }
            all.extend(entries);
            if next >= total {
                return Ok(all);
            }
            offset = next;
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
            match op.recv_within().await? {
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
                match op.recv_within().await {
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
                if let Incoming::Reply(reply) = op.recv_within().await?
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
            match execution.op.recv_within().await? {
                Incoming::Reply(Reply::Started { pid }) => {
                    execution.pid = pid;
                    return Ok(execution);
                }
                Incoming::Reply(Reply::Credit { bytes }) => {
                    execution.stdin_credit += execution.op.take_credit(bytes)
                }
                Incoming::Reply(Reply::Error { kind, message }) => {
                    execution.op.done = true;
                    return Err(command_error(kind, message));
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
        // A working directory that does not exist is the request's fault, as for `exec`.
        match self.call_with(&request, command_error).await? {
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
            } => {
                // Never more than was asked for, whatever the agent sent.
                let (mut stdout, mut stderr) = (stdout, stderr);
                for chunk in [&mut stdout, &mut stderr] {
                    chunk
                        .data
                        .truncate(usize::try_from(max_bytes).unwrap_or(usize::MAX));
                }
                Ok(ProcessOutput {
                    stdout,
                    stderr,
                    status,
                    exit_code,
                })
            }
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
            match op.recv_within().await? {
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

    /// Opens a TCP connection to `127.0.0.1:port` inside the sandbox;
    /// [`Error::PortClosed`] when nothing listens there.
    pub async fn connect_port(&self, port: u16) -> Result<Tunnel> {
        let mut op = self.open(&Request::Connect { port })?;
        loop {
            match op.recv_within().await? {
                Incoming::Reply(Reply::Connected) => break,
                Incoming::Reply(Reply::Error { kind, message }) => {
                    op.done = true;
                    return Err(match kind {
                        ErrorKind::NotFound => Error::PortClosed(format!(
                            "nothing listens on port {port} in the sandbox"
                        )),
                        kind => agent_error(kind, message),
                    });
                }
                Incoming::Reply(other) if other.is_final() => {
                    op.done = true;
                    return Err(unexpected(&other));
                }
                _ => {}
            }
        }
        Ok(Tunnel::carry(op))
    }

    /// Opens a wait for one connection to `127.0.0.1:port` inside the sandbox, where the
    /// agent listens (binding the port on the first call). The future that is returned
    /// does not hold the client: it has no deadline, and ends when a process connects
    /// or when the connection to the agent is lost.
    pub fn accept_later(
        &self,
        port: u16,
    ) -> Result<impl std::future::Future<Output = Result<Tunnel>> + Send + 'static> {
        let mut op = self.open(&Request::Accept { port })?;
        Ok(async move {
            loop {
                match op.recv().await? {
                    Incoming::Reply(Reply::Connected) => break,
                    Incoming::Reply(Reply::Error { kind, message }) => {
                        op.finish();
                        return Err(agent_error(kind, message));
                    }
                    Incoming::Reply(other) if other.is_final() => {
                        op.finish();
                        return Err(unexpected(&other));
                    }
                    _ => {}
                }
            }
            Ok(Tunnel::carry(op))
        })
    }

    /// Ties `task` to this connection: it is stopped when the client is dropped.
    pub fn attach(&self, task: tokio::task::AbortHandle) {
        self.attached.locked().push(task);
    }

    /// The TCP ports listening inside the sandbox (but the agent's own).
    pub async fn listening_ports(&self) -> Result<Vec<ListeningPort>> {
        match self.call(&Request::Ports).await? {
            Reply::Ports { mut ports } => {
                ports.truncate(repobox_protocol::MAX_PORTS);
                Ok(ports)
            }
            other => Err(unexpected(&other)),
        }
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
                Incoming::Reply(Reply::Credit { bytes }) => {
                    self.stdin_credit += self.op.take_credit(bytes)
                }
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

/// Bytes buffered between a tunnel's user and its pump, each way.
const TUNNEL_BUFFER: usize = 64 * 1024;
/// How long a tunnel whose user is gone still waits for the agent to take what the
/// user wrote last (an answer written just before the drop).
const TUNNEL_LINGER: Duration = Duration::from_secs(5);

/// A TCP connection inside the sandbox ([`AgentClient::connect_port`],
/// [`AgentClient::accept_later`]), read and written as a byte stream. A task pumps it
/// to and from the agent within the protocol's windows. Dropped, the tunnel's last
/// bytes still reach the sandbox (for at most [`TUNNEL_LINGER`]), then the connection
/// there is closed. Its end of file comes when the sandbox's side closes (or the agent
/// is lost).
pub struct Tunnel {
    io: tokio::io::DuplexStream,
    gone: Arc<tokio::sync::Notify>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.gone.notify_one();
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}

impl Tunnel {
    fn carry(op: Op) -> Self {
        let (io, ours) = tokio::io::duplex(TUNNEL_BUFFER);
        let gone = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(pump_tunnel(op, ours, gone.clone()));
        Self { io, gone }
    }
}

impl tokio::io::AsyncRead for Tunnel {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tunnel {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Moves a tunnel's bytes: what the user writes goes to the agent within its credit
/// (then `Eof` at the user's end of writing); what the agent sends is written for the
/// user and credited as taken. Ends at the agent's end or error, when the agent is
/// lost, or once the user is `gone` and the agent took everything (or
/// [`TUNNEL_LINGER`] passed); ending before the agent's end cancels the connection.
async fn pump_tunnel(mut op: Op, io: tokio::io::DuplexStream, gone: Arc<tokio::sync::Notify>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut credit = WINDOW;
    let mut reading = true;
    let mut user_gone = false;
    let linger = tokio::time::sleep(Duration::MAX);
    tokio::pin!(linger);
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        if user_gone && !reading && credit == WINDOW {
            // Everything the user wrote is in the sandbox.
            return;
        }
        let room = usize::try_from(credit).unwrap_or(MAX_CHUNK).min(MAX_CHUNK);
        tokio::select! {
            read = reader.read(&mut buf[..room.max(1)]), if reading && room > 0 => match read {
                Ok(0) | Err(_) => {
                    reading = false;
                    if op.send(&Request::Eof).is_err() {
                        return;
                    }
                }
                Ok(n) => {
                    credit -= n as u64;
                    op.send_data(Bytes::copy_from_slice(&buf[..n]));
                }
            },
            incoming = op.recv() => match incoming {
                Ok(Incoming::Data(_, bytes)) => {
                    let len = bytes.len();
                    if !user_gone && writer.write_all(&bytes).await.is_err() {
                        user_gone = true;
                    }
                    op.consumed(len);
                }
                Ok(Incoming::Reply(Reply::Credit { bytes })) => credit += op.take_credit(bytes),
                Ok(Incoming::Reply(reply)) if reply.is_final() => {
                    op.finish();
                    let _ = writer.shutdown().await;
                    return;
                }
                Ok(Incoming::Reply(_)) => {}
                Err(_) => {
                    let _ = writer.shutdown().await;
                    return;
                }
            },
            () = gone.notified(), if !user_gone => {
                user_gone = true;
                linger.as_mut().reset(tokio::time::Instant::now() + TUNNEL_LINGER);
            }
            () = &mut linger => return,
        }
    }
}

/// One operation: a request id and its inbox.
struct Op {
    id: u64,
    rx: mpsc::UnboundedReceiver<Incoming>,
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Frame>,
    account: Arc<Account>,
    /// Its final reply has come (or it needs no cancel).
    done: bool,
    /// Window cost of data consumed but not yet credited back.
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
            .map_err(|_| self.shared.lost())
    }

    fn send_data(&self, bytes: Bytes) {
        self.account
            .unacked
            .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        let _ = self.outgoing.send(Frame::data(Tag::Data, self.id, bytes));
    }

    /// The credit the agent returned (a credit reply is a notice: `_notice` is 0).
    fn take_credit(&self, _notice: u64) -> u64 {
        self.account.credit.swap(0, Ordering::SeqCst)
    }

    async fn recv(&mut self) -> Result<Incoming> {
        match self.rx.recv().await {
            Some(incoming) => Ok(incoming),
            None => Err(self.shared.lost()),
        }
    }

    /// [`Self::recv`], for at most the call deadline: past it the agent counts as not
    /// answering.
    async fn recv_within(&mut self) -> Result<Incoming> {
        let bound = self.shared.deadline;
        match tokio::time::timeout(bound, self.recv()).await {
            Ok(incoming) => incoming,
            Err(_) => Err(Error::NotRunning(format!(
                "the sandbox's agent did not answer within {bound:?}"
            ))),
        }
    }

    /// `bytes` of the agent's data were consumed: return credit (in batches), for the
    /// frame's whole cost as the agent charged it.
    fn consumed(&mut self, bytes: usize) {
        self.unreturned += frame_cost(bytes);
        if self.unreturned >= CREDIT_BATCH {
            let bytes = std::mem::take(&mut self.unreturned);
            self.account.held.fetch_sub(
                bytes.min(self.account.held.load(Ordering::SeqCst)),
                Ordering::SeqCst,
            );
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
                incoming = self.recv_within() => match incoming? {
                    Incoming::Reply(Reply::Credit { bytes }) => credit += self.take_credit(bytes),
                    Incoming::Reply(reply) if reply.is_final() => return Ok(Some(reply)),
                    _ => {}
                },
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        {
            let mut ops = self.shared.ops.locked();
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

#[cfg(test)]
pub(crate) mod hostile_agent_tests {
    //! The agent is in the sandbox: a fake one over an in-memory pipe floods, lies about
    //! credit, sends oversized and malformed frames and goes silent, and the server
    //! must keep its bounds and cut it off.

    use super::*;
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    /// What the fake agent sends in answer to a request.
    pub(crate) enum Out {
        Frame(Frame),
        /// Raw bytes on the wire.
        Raw(Vec<u8>),
        /// This frame again and again, until the server hangs up.
        Flood(Frame),
    }

    fn encode(frame: Frame) -> Vec<u8> {
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(frame, &mut buf).unwrap();
        buf.to_vec()
    }

    /// Starts a fake agent that answers the hello and then `answer`s each request;
    /// returns the client connected to it, the reason it was cut off (if it was) and
    /// how many bytes the fake managed to write before the server hung up.
    pub(crate) async fn connect(
        limits: Limits,
        mut answer: impl FnMut(u64, Request) -> Vec<Out> + Send + 'static,
    ) -> (
        AgentClient,
        Arc<Mutex<Option<String>>>,
        tokio::task::JoinHandle<u64>,
    ) {
        let (server, agent) = tokio::io::duplex(64 * 1024);
        let (server_read, server_write) = tokio::io::split(server);
        let (agent_read, mut agent_write) = tokio::io::split(agent);
        let fake = tokio::spawn(async move {
            let mut requests = FramedRead::new(agent_read, FrameCodec::new());
            let mut written = 0u64;
            while let Some(Ok(frame)) = requests.next().await {
                let Ok(request) = frame.parse::<Request>() else {
                    continue;
                };
                let outs = match request {
                    Request::Hello { epoch } => vec![Out::Frame(Frame::control(
                        0,
                        &Reply::HelloAck {
                            epoch,
                            protocol: PROTOCOL_VERSION,
                            agent_version: "fake".to_owned(),
                        },
                    ))],
                    Request::Credit { .. } | Request::Eof | Request::Cancel => Vec::new(),
                    request => answer(frame.id, request),
                };
                for out in outs {
                    let bytes = match out {
                        Out::Frame(frame) => encode(frame),
                        Out::Raw(bytes) => bytes,
                        Out::Flood(frame) => {
                            let bytes = encode(frame);
                            // Bounded: 4 GiB at most, far past any window.
                            for _ in 0..(4u64 << 30) / bytes.len() as u64 {
                                if agent_write.write_all(&bytes).await.is_err() {
                                    return written;
                                }
                                written += bytes.len() as u64;
                            }
                            continue;
                        }
                    };
                    if agent_write.write_all(&bytes).await.is_err() {
                        return written;
                    }
                    written += bytes.len() as u64;
                }
            }
            written
        });
        let reason = Arc::new(Mutex::new(None));
        let seen = reason.clone();
        let client = AgentClient::connect_with(
            Transport {
                reader: Box::pin(server_read),
                writer: Box::pin(server_write),
            },
            Duration::from_secs(5),
            limits,
            Box::new(move |why| *seen.lock().unwrap() = Some(why)),
        )
        .await
        .expect("the fake agent says hello");
        (client, reason, fake)
    }

    pub(crate) fn limits() -> Limits {
        Limits {
            max_control: 1024 * 1024,
            call_deadline: Duration::from_millis(500),
        }
    }

    fn exec_spec() -> ExecSpec {
        ExecSpec {
            command: "true".to_owned(),
            cwd: "/".to_owned(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(5),
            output_cap: Some(1000),
        }
    }

    pub(crate) fn started(id: u64) -> Out {
        Out::Frame(Frame::control(id, &Reply::Started { pid: 7 }))
    }

    pub(crate) fn exit(id: u64, code: i64) -> Out {
        Out::Frame(Frame::control(
            id,
            &Reply::Exit {
                exit_code: code,
                timed_out: false,
                stdout_truncated: false,
                stderr_truncated: false,
            },
        ))
    }

    async fn assert_cut_off(client: &AgentClient, reason: &Mutex<Option<String>>, what: &str) {
        for _ in 0..200 {
            if client.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(client.is_closed(), "{what}: still connected");
        let why = reason.lock().unwrap().clone();
        assert!(why.is_some(), "{what}: no violation reported");
        assert_eq!(client.violation(), why);
    }

    #[tokio::test]
    async fn a_flood_past_the_window_is_cut_off_within_the_window() {
        let (client, reason, fake) = connect(limits(), |id, _| {
            vec![
                started(id),
                Out::Flood(Frame::data(
                    Tag::Stdout,
                    id,
                    Bytes::from(vec![b'x'; MAX_CHUNK]),
                )),
            ]
        })
        .await;
        let mut execution = client.exec(exec_spec()).await.unwrap();
        // The consumer takes nothing: the agent must stop at its window.
        let err = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            loop {
                if let Err(err) = execution.next().await {
                    return err;
                }
            }
        })
        .await
        .expect("the flood ends");
        assert!(err.to_string().contains("broke the protocol"), "{err}");
        assert_cut_off(&client, &reason, "flood").await;
        let written = fake.await.unwrap();
        // What the server read before hanging up: its window, the pipe's buffer, and a
        // read buffer's worth; nowhere near the 4 GiB offered.
        assert!(written < 4 * WINDOW, "the server took {written} bytes");
    }

    #[tokio::test]
    async fn a_tunnel_flooded_past_its_window_is_cut_off() {
        // A port's server in the sandbox (or an agent lying for it) sends without end to
        // a client that reads nothing: the tunnel holds its window and its pipe, and
        // the agent that goes past the window is cut off.
        let (client, reason, fake) = connect(limits(), |id, request| match request {
            Request::Connect { .. } => vec![
                Out::Frame(Frame::control(id, &Reply::Connected)),
                Out::Flood(Frame::data(
                    Tag::Data,
                    id,
                    Bytes::from(vec![b'x'; MAX_CHUNK]),
                )),
            ],
            _ => Vec::new(),
        })
        .await;
        let mut tunnel = client.connect_port(3000).await.unwrap();
        assert_cut_off(&client, &reason, "tunnel flood").await;
        let written = fake.await.unwrap();
        assert!(written < 4 * WINDOW, "the server took {written} bytes");
        // The tunnel ends: what it had taken (at most its window), then end of file.
        let mut received = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut tunnel, &mut received),
        )
        .await
        .expect("the tunnel ends")
        .unwrap();
        assert!(received.len() as u64 <= WINDOW, "{} bytes", received.len());
    }

    #[tokio::test]
    async fn a_tunnels_credit_for_bytes_never_sent_is_a_violation() {
        let (client, reason, _fake) = connect(limits(), |id, request| match request {
            Request::Connect { .. } => vec![
                Out::Frame(Frame::control(id, &Reply::Connected)),
                Out::Frame(Frame::control(id, &Reply::Credit { bytes: 1 << 40 })),
            ],
            _ => Vec::new(),
        })
        .await;
        let _tunnel = client.connect_port(3000).await.unwrap();
        assert_cut_off(&client, &reason, "tunnel credit").await;
    }

    #[tokio::test]
    async fn credit_for_bytes_never_sent_is_a_violation() {
        let (client, reason, _fake) = connect(limits(), |id, _| {
            vec![Out::Frame(Frame::control(
                id,
                &Reply::Credit { bytes: 1 << 40 },
            ))]
        })
        .await;
        let body: BodyStream =
            Box::pin(futures_util::stream::iter((0..64).map(|_| {
                Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 64 * 1024]))
            })));
        let err = client.write("/x", 0o644, false, body).await.unwrap_err();
        assert!(err.to_string().contains("broke the protocol"), "{err}");
        assert_cut_off(&client, &reason, "credit").await;
    }

    #[tokio::test]
    async fn an_oversized_frame_is_a_violation_and_not_buffered() {
        let (client, reason, fake) = connect(limits(), |id, _| {
            let listing = Reply::Listing {
                entries: Vec::new(),
                total: 0,
                next: 0,
            };
            let mut frame = Frame::control(id, &listing);
            // 8 MiB of body where at most 1 MiB is taken.
            let mut body = frame.body.to_vec();
            body.extend(std::iter::repeat_n(b' ', 8 * 1024 * 1024));
            frame.body = body.into();
            vec![Out::Frame(frame)]
        })
        .await;
        let err = client.list("/").await.unwrap_err();
        assert!(
            err.to_string().contains("broke the protocol")
                || err.to_string().contains("not answering"),
            "{err}"
        );
        assert_cut_off(&client, &reason, "oversized").await;
        let written = fake.await.unwrap();
        assert!(written < 4 * 1024 * 1024, "the server took {written} bytes");
    }

    #[tokio::test]
    async fn bytes_without_a_flag_are_not_kept() {
        let (client, reason, fake) = connect(limits(), |_, _| {
            // 64 MiB with no frame boundary at all (no FLAG byte).
            vec![Out::Raw(vec![b'z'; 64 * 1024 * 1024])]
        })
        .await;
        let _ = client.stat("/", false).await;
        assert_cut_off(&client, &reason, "no flag").await;
        let written = fake.await.unwrap();
        assert!(written < 8 * 1024 * 1024, "the server took {written} bytes");
    }

    #[tokio::test]
    async fn a_malformed_frame_is_a_violation() {
        let (client, reason, _fake) = connect(limits(), |_, _| {
            vec![Out::Raw(vec![
                repobox_protocol::FLAG,
                0x09,
                1,
                2,
                3,
                repobox_protocol::FLAG,
            ])]
        })
        .await;
        let _ = client.stat("/", false).await;
        assert_cut_off(&client, &reason, "malformed").await;
    }

    #[tokio::test]
    async fn data_for_an_operation_that_takes_none_is_a_violation() {
        let (client, reason, _fake) = connect(limits(), |id, _| {
            vec![Out::Frame(Frame::data(
                Tag::Stdout,
                id,
                Bytes::from_static(b"forged"),
            ))]
        })
        .await;
        let _ = client.stat("/", false).await;
        assert_cut_off(&client, &reason, "unasked data").await;
    }

    #[tokio::test]
    async fn a_storm_of_replies_is_a_violation() {
        let (client, reason, _fake) = connect(limits(), |id, _| {
            vec![Out::Flood(Frame::control(id, &Reply::Started { pid: 1 }))]
        })
        .await;
        let _ = client.exec(exec_spec()).await;
        assert_cut_off(&client, &reason, "reply storm").await;
    }

    #[tokio::test]
    async fn a_silent_agent_fails_calls_at_their_deadline() {
        let (client, reason, _fake) = connect(limits(), |_, _| Vec::new()).await;
        let started = std::time::Instant::now();
        let err = client.stat("/", false).await.unwrap_err();
        assert!(matches!(err, Error::NotRunning(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Silence is not a violation: the sandbox may just be busy.
        assert!(reason.lock().unwrap().is_none());
    }

    fn flood(id: u64, tag: Tag) -> Out {
        Out::Flood(Frame::data(tag, id, Bytes::from(vec![b'x'; MAX_CHUNK])))
    }

    fn a_stat() -> Stat {
        Stat {
            kind: repobox_protocol::Kind::File,
            size: 1,
            mode: 0o644,
            mtime_secs: 0,
            mtime_nanos: 0,
            link_target: None,
        }
    }

    /// Every verb, against an agent that floods it: a stream past its window, or any
    /// data at all for a verb that takes none. Each is cut off, having cost the server
    /// no more than a window and a pipe's worth.
    #[tokio::test]
    async fn every_verb_is_held_to_its_bounds() {
        type Call = fn(
            &AgentClient,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<()>> + Send + '_>,
        >;
        async fn drain(stream: Result<(Stat, ByteStream)>) -> Result<()> {
            let (_, mut bytes) = stream?;
            // A consumer that takes nothing for a while, as a slow client.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while let Some(chunk) = bytes.next().await {
                chunk?;
            }
            Ok(())
        }
        let verbs: Vec<(&str, Call)> = vec![
            ("read", |c| {
                Box::pin(async move { drain(c.read("/f").await).await })
            }),
            ("archive_out", |c| {
                Box::pin(async move { drain(c.archive_out("/d").await).await })
            }),
            ("follow", |c| {
                Box::pin(async move {
                    let mut events = c.follow_process(1, 0, 0).await?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    while let Some(event) = events.next().await {
                        event?;
                    }
                    Ok(())
                })
            }),
            ("stat", |c| {
                Box::pin(async move { c.stat("/", false).await.map(drop) })
            }),
            ("list", |c| {
                Box::pin(async move { c.list("/").await.map(drop) })
            }),
            ("mkdir", |c| Box::pin(async move { c.mkdir("/x").await })),
            ("processes", |c| {
                Box::pin(async move { c.processes().await.map(drop) })
            }),
            ("process", |c| {
                Box::pin(async move { c.process(1).await.map(drop) })
            }),
            ("process_output", |c| {
                Box::pin(async move { c.process_output(1, 0, 0, 10).await.map(drop) })
            }),
            ("signal_process", |c| {
                Box::pin(async move { c.signal_process(1, 15).await })
            }),
            ("remove_process", |c| {
                Box::pin(async move { c.remove_process(1).await })
            }),
            ("start_process", |c| {
                Box::pin(async move {
                    c.start_process(ProcessSpec {
                        command: "true".to_owned(),
                        cwd: "/".to_owned(),
                        env: Vec::new(),
                        stdin_open: false,
                        tty: None,
                        timeout: None,
                        output_bytes: 1024,
                        max_running: None,
                    })
                    .await
                    .map(drop)
                })
            }),
        ];
        for (verb, call) in verbs {
            let (client, reason, fake) = connect(limits(), |id, request| match request {
                Request::Read { .. } | Request::ArchiveOut { .. } => vec![
                    Out::Frame(Frame::control(id, &Reply::Opened { stat: a_stat() })),
                    flood(id, Tag::Data),
                ],
                Request::ProcessFollow { .. } => vec![
                    Out::Frame(Frame::control(
                        id,
                        &Reply::Following {
                            stdout_offset: 0,
                            stderr_offset: 0,
                        },
                    )),
                    flood(id, Tag::Stdout),
                ],
                _ => vec![flood(id, Tag::Stdout)],
            })
            .await;
            let outcome = tokio::time::timeout(Duration::from_secs(10), call(&client))
                .await
                .unwrap_or_else(|_| panic!("{verb}: no answer"));
            let err = outcome.expect_err(verb);
            assert!(
                err.to_string().contains("broke the protocol"),
                "{verb}: {err}"
            );
            assert_cut_off(&client, &reason, verb).await;
            let written = fake.await.unwrap();
            assert!(
                written < 4 * WINDOW,
                "{verb}: the server took {written} bytes"
            );
        }
    }

    #[tokio::test]
    async fn kept_output_is_never_more_than_was_asked_for() {
        let (client, reason, _fake) = connect(limits(), |id, _| {
            let chunk = |data: Vec<u8>| repobox_protocol::OutputChunk {
                offset: 0,
                end: data.len() as u64,
                data,
            };
            vec![Out::Frame(Frame::control(
                id,
                &Reply::ProcessOutput {
                    stdout: chunk(vec![b'o'; 100_000]),
                    stderr: chunk(vec![b'e'; 100_000]),
                    status: repobox_protocol::ProcessStatus::Running,
                    exit_code: None,
                },
            ))]
        })
        .await;
        let output = client.process_output(1, 0, 0, 1000).await.unwrap();
        assert_eq!(output.stdout.data.len(), 1000);
        assert_eq!(output.stderr.data.len(), 1000);
        assert!(reason.lock().unwrap().is_none());
    }
}
