//! `repobox-agent`: the process repobox places in every sandbox.
//!
//! - `repobox-agent` serves the protocol of `repobox-protocol` on stdin (requests) and
//!   stdout (replies); stderr carries the agent's own diagnostics.
//!
//! In a sandbox the agent is the container's PID 1 and not dumpable, so that the
//! commands it runs can neither signal nor trace it nor open its pipes (see [`reap`]).
//! - `repobox-agent supervise [--process] [--tty] <shell> -c <command>` is the
//!   supervisor each command and background process runs under (see [`supervise`]).
//! - `repobox-agent install <path>` copies the agent's own binary to `<path>` (mode
//!   0755): how an engine without a copy API (Kubernetes) provisions it, from an init
//!   container of the agent's image into a volume the sandbox's container mounts.
//! - `repobox-agent --version` prints the version.

mod archive;
mod error;
mod exec;
mod files;
mod flow;
mod ports;
mod processes;
mod procs;
mod reap;
mod stream;
mod supervise;
mod tunnel;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use repobox_protocol::{ErrorKind, Frame, FrameCodec, PROTOCOL_VERSION, Reply, Request, Tag};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::error::OpError;
use crate::flow::{Outbox, Window, Writer};
use crate::stream::ChunkSink;

/// The agent's version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Operations at once beyond which new ones are refused ([`ErrorKind::Busy`]).
const MAX_OPS: usize = 512;

/// Frames the writer sends before it flushes, at most.
const FLUSH_EVERY: usize = 64;

/// What the server sends an operation under way.
#[derive(Debug)]
pub enum Incoming {
    /// A data frame's body.
    Data(Bytes),
    /// End of the data.
    Eof,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => agent(),
        Some("supervise") => supervise::main(&args[1..]),
        Some("install") if args.len() == 2 => install(&args[1]),
        Some("--version" | "-V") => {
            println!("repobox-agent {VERSION}");
            ExitCode::SUCCESS
        }
        Some(_) => {
            eprintln!(
                "usage: repobox-agent [--version | install <path> | supervise [--process] [--tty] <shell> -c <command>]"
            );
            ExitCode::from(2)
        }
    }
}

/// Copies this binary to `target` (written aside, then renamed into place, mode 0755).
fn install(target: &str) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let target = PathBuf::from(target);
    let staged = target.with_extension("partial");
    let copied = std::fs::copy("/proc/self/exe", &staged)
        .and_then(|_| std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&staged, &target));
    match copied {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "repobox-agent: cannot install to {}: {error}",
                target.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn agent() -> ExitCode {
    // Before anything else: out of reach of the sandbox's processes (see `reap`).
    reap::shield();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2 * MAX_OPS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("repobox-agent: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve());
    ExitCode::SUCCESS
}

/// One operation under way, as the dispatcher knows it.
struct Op {
    serial: u64,
    tx: mpsc::UnboundedSender<Incoming>,
    window: Arc<Window>,
    alive: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Op {
    /// Ends it at once: nothing more of it is sent, its task is dropped (which kills a
    /// command, removes a write's temporary file, stops a transfer).
    fn end(self) {
        self.alive.store(false, Ordering::Release);
        self.task.abort();
    }
}

type OpFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Dispatcher {
    ops: HashMap<u64, Op>,
    /// Background processes: the agent's, untouched by a hello.
    processes: Arc<processes::Table>,
    /// Ports listened on for [`Request::Accept`]: the agent's, untouched by a hello.
    listeners: Arc<tunnel::Listeners>,
    writer: Writer,
    done: mpsc::UnboundedSender<(u64, u64)>,
    serial: u64,
    warned: bool,
}

impl Dispatcher {
    fn warn_once(&mut self, what: &str) {
        if !std::mem::replace(&mut self.warned, true) {
            eprintln!("repobox-agent: ignoring {what} (and any more frames like it)");
        }
    }

    async fn reply(&self, id: u64, reply: &Reply) {
        let _ = self.writer.urgent.send(Frame::control(id, reply)).await;
    }

    async fn handle(&mut self, frame: Frame) {
        match frame.tag {
            Tag::Control => match frame.parse::<Request>() {
                Ok(request) => self.control(frame.id, request).await,
                Err(_) => self.warn_once("a control frame that does not parse"),
            },
            Tag::Data => {
                if let Some(op) = self.ops.get(&frame.id) {
                    let _ = op.tx.send(Incoming::Data(frame.body));
                }
            }
            Tag::Stdout | Tag::Stderr => self.warn_once("an output frame from the server"),
        }
    }

    async fn control(&mut self, id: u64, request: Request) {
        match request {
            Request::Hello { epoch } => {
                // Background processes are the agent's and live on; following them,
                // writing their stdin and such are operations, and end here.
                for (_, op) in self.ops.drain() {
                    op.end();
                }
                let ack = Reply::HelloAck {
                    epoch,
                    protocol: PROTOCOL_VERSION,
                    agent_version: VERSION.to_owned(),
                };
                self.reply(id, &ack).await;
            }
            Request::Ping => self.reply(id, &Reply::Pong).await,
            Request::Eof => {
                if let Some(op) = self.ops.get(&id) {
                    let _ = op.tx.send(Incoming::Eof);
                }
            }
            Request::Cancel => {
                if let Some(op) = self.ops.remove(&id) {
                    op.end();
                }
            }
            Request::Credit { bytes } => {
                if let Some(op) = self.ops.get(&id) {
                    op.window.add(bytes);
                }
            }
            request => self.open(id, request).await,
        }
    }

    async fn open(&mut self, id: u64, request: Request) {
        if self.ops.contains_key(&id) {
            eprintln!("repobox-agent: ignoring a second operation on id {id}");
            return;
        }
        if self.ops.len() >= MAX_OPS {
            let message = format!("too many operations at once (at most {MAX_OPS})");
            self.reply(id, &Reply::error(ErrorKind::Busy, message))
                .await;
            return;
        }
        let alive = Arc::new(AtomicBool::new(true));
        let window = Arc::new(Window::new());
        let out = Outbox::new(id, self.writer.clone(), alive.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let future: OpFuture = match request {
            Request::Exec {
                command,
                cwd,
                env,
                stdin,
                timeout_ms,
                output_cap,
            } => {
                let spec = exec::Spec {
                    command,
                    cwd,
                    env,
                    stdin,
                    timeout_ms,
                    output_cap,
                };
                Box::pin(exec::run(out, window.clone(), rx, spec))
            }
            Request::Stat { path, follow } => {
                Box::pin(blocking_reply(out, move || files::op_stat(&path, follow)))
            }
            Request::List { path, offset } => {
                Box::pin(blocking_reply(out, move || files::op_list(&path, offset)))
            }
            Request::Mkdir { path } => {
                Box::pin(blocking_reply(out, move || files::op_mkdir(&path)))
            }
            Request::Read { path } => {
                let shown = path.clone();
                Box::pin(stream_out(
                    out,
                    window.clone(),
                    move || files::open_read(&path),
                    move |file, sink| files::produce_file(file, sink, &shown),
                ))
            }
            Request::ArchiveOut { path } => Box::pin(stream_out(
                out,
                window.clone(),
                move || archive::open_out(&path),
                |path: PathBuf, sink| archive::produce(&path, sink),
            )),
            Request::Write {
                path,
                mode,
                create_parents,
            } => Box::pin(stream::consume(out, rx, move |reader| {
                files::op_write(&path, mode, create_parents, reader)
            })),
            Request::ArchiveIn { path } => Box::pin(stream::consume(out, rx, move |reader| {
                archive::op_archive_in(&path, reader)
            })),
            Request::ProcessStart {
                command,
                cwd,
                env,
                stdin_open,
                tty,
                cols,
                rows,
                timeout_ms,
                output_bytes,
                max_running,
            } => {
                let spec = processes::Spec {
                    command,
                    cwd,
                    env,
                    stdin_open,
                    tty: tty.then(|| (cols.unwrap_or(80), rows.unwrap_or(24))),
                    timeout_ms,
                    output_bytes,
                    max_running,
                };
                Box::pin(processes::start(out, self.processes.clone(), spec))
            }
            Request::ProcessList => {
                let reply = processes::list(&self.processes);
                Box::pin(async move {
                    out.reply(&reply).await;
                })
            }
            Request::ProcessGet { id } => {
                let reply = processes::get(&self.processes, id);
                Box::pin(reply_with(out, reply))
            }
            Request::ProcessOutput {
                id,
                stdout_offset,
                stderr_offset,
                max_bytes,
            } => {
                let reply =
                    processes::output(&self.processes, id, stdout_offset, stderr_offset, max_bytes);
                Box::pin(reply_with(out, reply))
            }
            Request::ProcessFollow {
                id,
                stdout_offset,
                stderr_offset,
            } => Box::pin(processes::follow(
                out,
                window.clone(),
                self.processes.clone(),
                id,
                stdout_offset,
                stderr_offset,
            )),
            Request::ProcessStdin { id, close } => {
                Box::pin(processes::stdin(out, self.processes.clone(), id, close, rx))
            }
            Request::ProcessSignal { id, signal } => {
                let table = self.processes.clone();
                Box::pin(async move {
                    let reply = processes::signal(table, id, signal).await;
                    reply_with(out, reply).await;
                })
            }
            Request::ProcessResize { id, cols, rows } => {
                let reply = processes::resize(&self.processes, id, cols, rows);
                Box::pin(reply_with(out, reply))
            }
            Request::ProcessRemove { id } => {
                let table = self.processes.clone();
                Box::pin(async move {
                    let reply = processes::remove(table, id).await;
                    reply_with(out, reply).await;
                })
            }
            Request::Connect { port } => Box::pin(tunnel::connect(out, window.clone(), rx, port)),
            Request::Accept { port } => Box::pin(tunnel::accept(
                out,
                window.clone(),
                rx,
                self.listeners.clone(),
                port,
            )),
            Request::Ports => {
                let exclude = self.listeners.ports();
                Box::pin(blocking_reply(out, move || ports::op_ports(&exclude)))
            }
            Request::Hello { .. }
            | Request::Ping
            | Request::Eof
            | Request::Cancel
            | Request::Credit { .. } => {
                return;
            }
        };
        self.serial += 1;
        let serial = self.serial;
        let done = self.done.clone();
        let task = tokio::spawn(async move {
            future.await;
            let _ = done.send((id, serial));
        });
        self.ops.insert(
            id,
            Op {
                serial,
                tx,
                window,
                alive,
                task: task.abort_handle(),
            },
        );
    }

    fn finished(&mut self, id: u64, serial: u64) {
        if self.ops.get(&id).is_some_and(|op| op.serial == serial) {
            self.ops.remove(&id);
        }
    }
}

/// Sends a reply worked out already (or its error).
async fn reply_with(out: Outbox, reply: Result<Reply, OpError>) {
    out.reply(&reply.unwrap_or_else(|error| error.reply()))
        .await;
}

/// Runs `work` on a blocking thread and sends its reply.
async fn blocking_reply<F>(out: Outbox, work: F)
where
    F: FnOnce() -> Result<Reply, OpError> + Send + 'static,
{
    let reply = match tokio::task::spawn_blocking(work).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => error.reply(),
        Err(error) => Reply::error(ErrorKind::Other, error.to_string()),
    };
    out.reply(&reply).await;
}

/// [`Request::Read`] and [`Request::ArchiveOut`]: `open` (on a blocking thread) gives
/// what is streamed and its stat for [`Reply::Opened`]; `produce` (on another) writes
/// the bytes, sent as data frames within the window, then [`Reply::End`].
async fn stream_out<T, O, P>(out: Outbox, window: Arc<Window>, open: O, produce: P)
where
    T: Send + 'static,
    O: FnOnce() -> Result<(T, repobox_protocol::Stat), OpError> + Send + 'static,
    P: FnOnce(T, ChunkSink) -> Result<(), OpError> + Send + 'static,
{
    let (source, stat) = match tokio::task::spawn_blocking(open).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(error)) => {
            out.reply(&error.reply()).await;
            return;
        }
        Err(error) => {
            out.reply(&Reply::error(ErrorKind::Other, error.to_string()))
                .await;
            return;
        }
    };
    out.reply(&Reply::Opened { stat }).await;
    let (sink, chunks) = ChunkSink::new();
    let producer = tokio::task::spawn_blocking(move || produce(source, sink));
    stream::send_produced(&out, &window, chunks, producer).await;
}

/// Owns stdout: writes the queued frames (urgent ones first), flushing whenever the
/// queues run dry.
async fn write_frames(mut urgent: mpsc::Receiver<Frame>, mut bulk: mpsc::Receiver<Frame>) {
    let mut sink = FramedWrite::new(tokio::io::stdout(), FrameCodec::new());
    let mut failed = false;
    loop {
        let frame = tokio::select! {
            biased;
            Some(frame) = urgent.recv() => frame,
            Some(frame) = bulk.recv() => frame,
            else => break,
        };
        let mut result = sink.feed(frame).await;
        for _ in 1..FLUSH_EVERY {
            let next = match urgent.try_recv() {
                Ok(frame) => frame,
                Err(_) => match bulk.try_recv() {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
            };
            if result.is_ok() {
                result = sink.feed(next).await;
            }
        }
        if result.is_ok() {
            result = sink.flush().await;
        }
        if let Err(error) = result {
            if !std::mem::replace(&mut failed, true) {
                eprintln!("repobox-agent: writing to stdout: {error}");
            }
        }
    }
}

async fn serve() {
    let (urgent, urgent_rx) = mpsc::channel(256);
    // Few bulk frames wait: data is flow-controlled per operation anyway, and what waits
    // here is what an urgent frame could have to follow.
    let (bulk, bulk_rx) = mpsc::channel(4);
    tokio::spawn(write_frames(urgent_rx, bulk_rx));
    tokio::spawn(reap::orphans());
    let writer = Writer { urgent, bulk };
    let (done, mut done_rx) = mpsc::unbounded_channel();
    let mut dispatcher = Dispatcher {
        ops: HashMap::new(),
        processes: Arc::default(),
        listeners: Arc::default(),
        writer,
        done,
        serial: 0,
        warned: false,
    };
    let mut frames = FramedRead::new(tokio::io::stdin(), FrameCodec::new());
    let mut reading = true;
    loop {
        tokio::select! {
            frame = frames.next(), if reading => match frame {
                Some(Ok(frame)) => dispatcher.handle(frame).await,
                Some(Err(error)) => {
                    eprintln!("repobox-agent: reading stdin: {error}; serving what is under way");
                    reading = false;
                }
                None => {
                    // The stream may come back (a re-attach); commands keep their deadlines.
                    eprintln!("repobox-agent: stdin closed; serving what is under way");
                    reading = false;
                }
            },
            Some((id, serial)) = done_rx.recv() => dispatcher.finished(id, serial),
        }
    }
}
