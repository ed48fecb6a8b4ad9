//! Background processes: [`Request::ProcessStart`](repobox_protocol::Request::ProcessStart)
//! and the requests that address a process by id.
//!
//! A process belongs to the agent's [`Table`], not to the operation that started it:
//! its own task watches it, reads its output into a ring per stream and records its
//! end, so it outlives the operation, the connection and a new connection's hello.
//! Operations only look at it (info, output, follow) or act on it (stdin, signal,
//! resize, remove).

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::Signal;
use repobox_protocol::{
    ErrorKind, MAX_CHUNK, MAX_ENDED, OutputChunk, ProcessInfo, ProcessStatus, Reply, Tag,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};

use crate::Incoming;
use crate::error::{OpError, OpResult};
use crate::exec::{ShellLine, check_cwd, pick_shell};
use crate::flow::{Outbox, Window};
use crate::procs::{kill_tree, signal_tree};
use crate::reap::Own;

/// How long output is still read after the supervisor exits (see `exec`'s `DRAIN`).
const DRAIN: Duration = Duration::from_secs(2);

/// How long a removal waits for a killed process to end.
const REMOVE_WAIT: Duration = Duration::from_secs(10);

/// The end-of-file character a terminal's line discipline takes by default (`^D`).
const VEOF: u8 = 0x04;

/// What to start.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Shell command line.
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Variables over the agent's environment.
    pub env: Vec<(String, String)>,
    /// Whether stdin takes writes.
    pub stdin_open: bool,
    /// Terminal size (columns, rows) when on a terminal.
    pub tty: Option<(u16, u16)>,
    /// Deadline in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Ring size per stream.
    pub output_bytes: u64,
    /// Refuse when this many run.
    pub max_running: Option<u32>,
}

/// The most recent bytes of one stream, and how many there were in all.
#[derive(Debug)]
struct Ring {
    kept: VecDeque<u8>,
    cap: usize,
    end: u64,
}

impl Ring {
    fn new(cap: u64) -> Self {
        Self {
            kept: VecDeque::new(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            end: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.end += data.len() as u64;
        let tail = &data[data.len().saturating_sub(self.cap)..];
        let excess = (self.kept.len() + tail.len()).saturating_sub(self.cap);
        self.kept.drain(..excess);
        self.kept.extend(tail);
    }

    fn start(&self) -> u64 {
        self.end - self.kept.len() as u64
    }

    /// `from` moved up to the oldest kept byte.
    fn clamp(&self, from: u64) -> u64 {
        from.max(self.start())
    }

    /// Up to `max` kept bytes from `from` (moved up): the actual offset and the bytes.
    fn read(&self, from: u64, max: u64) -> (u64, Vec<u8>) {
        let from = self.clamp(from);
        if from >= self.end {
            return (from, Vec::new());
        }
        let skip = (from - self.start()) as usize;
        let take = usize::try_from((self.end - from).min(max)).unwrap_or(usize::MAX);
        (from, self.kept.range(skip..skip + take).copied().collect())
    }
}

/// What changes while a process runs.
#[derive(Debug)]
struct State {
    status: ProcessStatus,
    exit_code: Option<i64>,
    ended_at: Option<u64>,
    stdin_open: bool,
    stdout: Ring,
    stderr: Ring,
}

/// Where stdin writes go.
enum Stdin {
    Pipe(ChildStdin),
    Terminal(Arc<std::fs::File>),
}

impl Stdin {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        match self {
            Stdin::Pipe(pipe) => pipe.write_all(&data).await,
            Stdin::Terminal(master) => {
                let master = master.clone();
                tokio::task::spawn_blocking(move || (&*master).write_all(&data))
                    .await
                    .map_err(std::io::Error::other)?
            }
        }
    }
}

/// One background process.
pub(crate) struct Process {
    id: u64,
    command: String,
    cwd: String,
    /// Pid of its supervisor.
    pid: u32,
    started_at: u64,
    /// The terminal's master side, for resizing.
    master: Option<Arc<std::fs::File>>,
    state: Mutex<State>,
    /// Bumped on new output and at the end.
    changed: watch::Sender<()>,
    stdin: tokio::sync::Mutex<Option<Stdin>>,
    /// Its removal was asked for: it is forgotten once it ended.
    removed: AtomicBool,
}

impl Process {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What it is now.
    pub(crate) fn info(&self) -> ProcessInfo {
        let state = self.state();
        ProcessInfo {
            id: self.id,
            command: shown_command(&self.command),
            pid: self.pid,
            status: state.status,
            exit_code: state.exit_code,
            started_at: self.started_at,
            ended_at: state.ended_at,
            cwd: self.cwd.clone(),
            tty: self.master.is_some(),
            stdin_open: state.stdin_open,
            stdout_end: state.stdout.end,
            stderr_end: state.stderr.end,
        }
    }

    fn running(&self) -> bool {
        self.state().status == ProcessStatus::Running
    }

    fn push(&self, tag: Tag, data: &[u8]) {
        {
            let mut state = self.state();
            match tag {
                Tag::Stderr => state.stderr.push(data),
                _ => state.stdout.push(data),
            }
        }
        self.changed.send_replace(());
    }
}

/// Every process of the agent's life still remembered, by id.
#[derive(Default)]
pub(crate) struct Table {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    last_id: u64,
    processes: BTreeMap<u64, Arc<Process>>,
}

impl Table {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: u64) -> OpResult<Arc<Process>> {
        self.inner()
            .processes
            .get(&id)
            .cloned()
            .ok_or_else(|| OpError::new(ErrorKind::NotFound, format!("no process {id}")))
    }

    /// Forgets the oldest ended processes beyond [`MAX_ENDED`], and removed ones that ended.
    fn prune(&self) {
        let mut inner = self.inner();
        inner
            .processes
            .retain(|_, process| process.running() || !process.removed.load(Ordering::Acquire));
        let ended: Vec<u64> = inner
            .processes
            .iter()
            .filter(|(_, process)| !process.running())
            .map(|(&id, _)| id)
            .collect();
        for id in ended.iter().take(ended.len().saturating_sub(MAX_ENDED)) {
            inner.processes.remove(id);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn cloexec(fd: &OwnedFd) -> std::io::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// The output of a started supervisor.
enum Output {
    Pipes(tokio::process::ChildStdout, tokio::process::ChildStderr),
    Terminal(Arc<std::fs::File>),
}

/// A started supervisor and its ends.
struct Spawned {
    child: Child,
    /// Registered as the agent's own child while it is watched.
    own: Own,
    output: Output,
    stdin: Option<Stdin>,
    /// The terminal's master side.
    master: Option<Arc<std::fs::File>>,
}

/// A process's command as its info shows it: at most
/// [`repobox_protocol::MAX_INFO_COMMAND`] bytes (cut at a character boundary), so
/// that a listing of many processes stays a small reply.
pub(crate) fn shown_command(command: &str) -> String {
    let max = repobox_protocol::MAX_INFO_COMMAND;
    if command.len() <= max {
        return command.to_owned();
    }
    let mut end = max;
    while !command.is_char_boundary(end) {
        end -= 1;
    }
    command[..end].to_owned()
}

/// Starts the supervisor (as `exec` does, with `--process`, and `--tty` on a terminal).
fn spawn(spec: &Spec) -> OpResult<Spawned> {
    let shell = pick_shell()?;
    check_cwd(&spec.cwd)?;
    let io = |error: std::io::Error| OpError::io(&error, "cannot set up the terminal");
    let pty = match spec.tty {
        Some((cols, rows)) => {
            let size = nix::pty::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&size), None).map_err(|e| io(e.into()))?;
            cloexec(&pty.master).map_err(io)?;
            cloexec(&pty.slave).map_err(io)?;
            Some(pty)
        }
        None => None,
    };
    let line = ShellLine::new(&spec.command)?;
    let build = |program: &std::path::Path| -> std::io::Result<Child> {
        let mut command = Command::new(program);
        command
            .arg0("repobox-agent")
            .arg("supervise")
            .arg("--process");
        if pty.is_some() {
            command.arg("--tty");
        }
        line.args(&mut command, shell);
        command
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        match &pty {
            Some(pty) => {
                command
                    .stdin(Stdio::from(pty.slave.try_clone()?))
                    .stdout(Stdio::from(pty.slave.try_clone()?))
                    .stderr(Stdio::from(pty.slave.try_clone()?));
            }
            None => {
                command
                    .stdin(if spec.stdin_open {
                        Stdio::piped()
                    } else {
                        Stdio::null()
                    })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        // The command (and the terminal's slave side it holds) is dropped here: only
        // the process keeps the slave open, so the master reads EOF when it is done.
        command.spawn()
    };
    let pid = |child: &Child| child.id();
    let (mut child, own) = match Own::spawn(|| build("/proc/self/exe".as_ref()), pid) {
        Ok(spawned) => spawned,
        Err(first) => {
            let exe = std::env::current_exe()
                .map_err(|_| OpError::io(&first, "cannot start the supervisor"))?;
            Own::spawn(|| build(&exe), pid)
                .map_err(|error| OpError::io(&error, "cannot start the supervisor"))?
        }
    };
    line.handed_over();
    match pty {
        Some(pty) => {
            drop(pty.slave);
            let master = Arc::new(std::fs::File::from(pty.master));
            Ok(Spawned {
                child,
                own,
                output: Output::Terminal(master.clone()),
                stdin: spec.stdin_open.then(|| Stdin::Terminal(master.clone())),
                master: Some(master),
            })
        }
        None => {
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(OpError::new(
                    ErrorKind::Other,
                    "the process has no output pipes",
                ));
            };
            let stdin = child.stdin.take().map(Stdin::Pipe);
            Ok(Spawned {
                child,
                own,
                output: Output::Pipes(stdout, stderr),
                stdin,
                master: None,
            })
        }
    }
}

/// [`Request::ProcessStart`](repobox_protocol::Request::ProcessStart).
pub(crate) async fn start(out: Outbox, table: Arc<Table>, spec: Spec) {
    let reply = match tokio::task::spawn_blocking(move || start_blocking(&table, spec)).await {
        Ok(Ok(info)) => Reply::Process { info },
        Ok(Err(error)) => error.reply(),
        Err(error) => Reply::error(ErrorKind::Other, format!("cannot start: {error}")),
    };
    out.reply(&reply).await;
}

fn start_blocking(table: &Arc<Table>, spec: Spec) -> OpResult<ProcessInfo> {
    // Held through the spawn, so that two starts cannot both pass `max_running`.
    let mut inner = table.inner();
    if let Some(max) = spec.max_running {
        let running = inner.processes.values().filter(|p| p.running()).count();
        if running >= max as usize {
            return Err(OpError::new(
                ErrorKind::Limit,
                format!("{running} processes run already (at most {max})"),
            ));
        }
    }
    let Spawned {
        child,
        own,
        output,
        stdin,
        master,
    } = spawn(&spec)?;
    inner.last_id += 1;
    let stdin_open = stdin.is_some();
    let process = Arc::new(Process {
        id: inner.last_id,
        command: spec.command,
        cwd: spec.cwd,
        pid: child.id().unwrap_or_default(),
        started_at: now_ms(),
        master,
        state: Mutex::new(State {
            status: ProcessStatus::Running,
            exit_code: None,
            ended_at: None,
            stdin_open,
            stdout: Ring::new(spec.output_bytes),
            stderr: Ring::new(spec.output_bytes),
        }),
        changed: watch::Sender::new(()),
        stdin: tokio::sync::Mutex::new(stdin),
        removed: AtomicBool::new(false),
    });
    inner.processes.insert(process.id, process.clone());
    drop(inner);
    let info = process.info();
    let table = table.clone();
    // Owned by the table's process, not by the operation: it ends with the process.
    tokio::runtime::Handle::current().spawn(watch_process(
        table,
        process,
        child,
        own,
        output,
        spec.timeout_ms,
    ));
    Ok(info)
}

/// Reads a pipe into the process's ring up to EOF.
async fn pump_pipe(process: &Process, tag: Tag, mut pipe: impl AsyncRead + Unpin) {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => process.push(tag, &buf[..n]),
        }
    }
}

/// Reads the terminal's master side (on a blocking thread) up to EOF or EIO (which is
/// how it says the slave side is closed everywhere).
async fn pump_terminal(process: Arc<Process>, master: Arc<std::fs::File>) {
    let _ = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            match (&*master).read(&mut buf) {
                Ok(0) => return,
                Ok(n) => process.push(Tag::Stdout, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Watches one process to its end: its output, its deadline, its exit.
async fn watch_process(
    table: Arc<Table>,
    process: Arc<Process>,
    mut child: Child,
    _own: Own,
    output: Output,
    timeout_ms: Option<u64>,
) {
    let pid = process.pid as i32;
    let (exited_tx, mut exited_rx) = watch::channel(false);
    let pumps = {
        let process = process.clone();
        async move {
            let drain = async move {
                let _ = exited_rx.wait_for(|&exited| exited).await;
                tokio::time::sleep(DRAIN).await;
            };
            let read = async {
                match output {
                    Output::Pipes(stdout, stderr) => {
                        tokio::join!(
                            pump_pipe(&process, Tag::Stdout, stdout),
                            pump_pipe(&process, Tag::Stderr, stderr)
                        );
                    }
                    Output::Terminal(master) => pump_terminal(process.clone(), master).await,
                }
            };
            tokio::select! {
                () = read => {},
                () = drain => {},
            }
        }
    };
    let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let waited = async {
        let mut timed_out = false;
        let mut rekill = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                result = child.wait() => {
                    let status = result.unwrap_or_else(|_| ExitStatus::from_raw(255 << 8));
                    let _ = exited_tx.send(true);
                    return (status, timed_out);
                }
                () = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                }, if !timed_out => {
                    timed_out = true;
                    tokio::task::spawn_blocking(move || kill_tree(pid, false));
                    rekill.reset();
                }
                _ = rekill.tick(), if timed_out => {
                    tokio::task::spawn_blocking(move || kill_tree(pid, false));
                }
            }
        }
    };
    let ((status, timed_out), ()) = tokio::join!(waited, pumps);
    {
        let mut state = process.state();
        let (status, code) = if timed_out {
            (ProcessStatus::TimedOut, 124)
        } else if let Some(signal) = status.signal() {
            (ProcessStatus::Killed, 128 + i64::from(signal))
        } else {
            (ProcessStatus::Exited, status.code().map_or(255, i64::from))
        };
        state.status = status;
        state.exit_code = Some(code);
        state.ended_at = Some(now_ms());
        state.stdin_open = false;
    }
    process.changed.send_replace(());
    table.prune();
    // Its stdin goes with it (once a write under way, which fails now, lets go: the
    // end above does not wait for that).
    *process.stdin.lock().await = None;
}

/// [`Request::ProcessList`](repobox_protocol::Request::ProcessList).
pub(crate) fn list(table: &Table) -> Reply {
    let processes = table
        .inner()
        .processes
        .values()
        .cloned()
        .collect::<Vec<_>>();
    Reply::Processes {
        processes: processes.iter().map(|p| p.info()).collect(),
    }
}

/// [`Request::ProcessGet`](repobox_protocol::Request::ProcessGet).
pub(crate) fn get(table: &Table, id: u64) -> OpResult<Reply> {
    Ok(Reply::Process {
        info: table.get(id)?.info(),
    })
}

/// [`Request::ProcessOutput`](repobox_protocol::Request::ProcessOutput).
pub(crate) fn output(
    table: &Table,
    id: u64,
    stdout_offset: u64,
    stderr_offset: u64,
    max_bytes: u64,
) -> OpResult<Reply> {
    let process = table.get(id)?;
    let state = process.state();
    let chunk = |ring: &Ring, from: u64| {
        let (offset, data) = ring.read(from, max_bytes);
        OutputChunk {
            offset,
            end: ring.end,
            data,
        }
    };
    Ok(Reply::ProcessOutput {
        stdout: chunk(&state.stdout, stdout_offset),
        stderr: chunk(&state.stderr, stderr_offset),
        status: state.status,
        exit_code: state.exit_code,
    })
}

/// [`Request::ProcessFollow`](repobox_protocol::Request::ProcessFollow).
pub(crate) async fn follow(
    out: Outbox,
    window: Arc<Window>,
    table: Arc<Table>,
    id: u64,
    stdout_offset: u64,
    stderr_offset: u64,
) {
    let process = match table.get(id) {
        Ok(process) => process,
        Err(error) => {
            out.reply(&error.reply()).await;
            return;
        }
    };
    let mut changed = process.changed.subscribe();
    let (mut stdout_at, mut stderr_at) = {
        let state = process.state();
        (
            state.stdout.clamp(stdout_offset),
            state.stderr.clamp(stderr_offset),
        )
    };
    let following = Reply::Following {
        stdout_offset: stdout_at,
        stderr_offset: stderr_at,
    };
    if !out.reply(&following).await {
        return;
    }
    loop {
        // Marked seen before reading: output that comes after the read wakes us.
        changed.borrow_and_update();
        let (stdout, stderr, ended) = {
            let state = process.state();
            (
                state.stdout.read(stdout_at, MAX_CHUNK as u64),
                state.stderr.read(stderr_at, MAX_CHUNK as u64),
                state.status != ProcessStatus::Running,
            )
        };
        let mut sent = false;
        for (tag, (from, data), at) in [
            (Tag::Stdout, stdout, &mut stdout_at),
            (Tag::Stderr, stderr, &mut stderr_at),
        ] {
            *at = from + data.len() as u64;
            if !data.is_empty() {
                sent = true;
                if !out.send_data(tag, &window, data.into()).await {
                    return;
                }
            }
        }
        if sent {
            continue;
        }
        if ended {
            out.reply(&Reply::ProcessEnded {
                info: process.info(),
            })
            .await;
            return;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// [`Request::ProcessStdin`](repobox_protocol::Request::ProcessStdin).
pub(crate) async fn stdin(
    out: Outbox,
    table: Arc<Table>,
    id: u64,
    close: bool,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
) {
    let reply = match write_stdin(&out, &table, id, close, &mut incoming).await {
        Ok(()) => Reply::Done { stat: None },
        Err(error) => error.reply(),
    };
    out.reply(&reply).await;
}

fn not_open(id: u64) -> OpError {
    OpError::new(
        ErrorKind::Conflict,
        format!("the stdin of process {id} is not open (closed, or the process ended)"),
    )
}

async fn write_stdin(
    out: &Outbox,
    table: &Table,
    id: u64,
    close: bool,
    incoming: &mut mpsc::UnboundedReceiver<Incoming>,
) -> OpResult<()> {
    let process = table.get(id)?;
    // `stdin_open` turns false at the end, before the pipe is dropped.
    let open = || process.state().stdin_open;
    if !open() {
        return Err(not_open(id));
    }
    loop {
        match incoming.recv().await {
            Some(Incoming::Data(data)) => {
                let len = data.len() as u64;
                let mut stdin = process.stdin.lock().await;
                let pipe = stdin
                    .as_mut()
                    .filter(|_| open())
                    .ok_or_else(|| not_open(id))?;
                if pipe.write(data).await.is_err() {
                    return Err(not_open(id));
                }
                drop(stdin);
                out.reply(&Reply::Credit { bytes: len }).await;
            }
            Some(Incoming::Eof) => break,
            None => return Err(OpError::new(ErrorKind::Other, "cancelled")),
        }
    }
    if close {
        let mut stdin = process.stdin.lock().await;
        // A terminal is not closed (that would hang it up): its end-of-file is typed.
        match stdin.take() {
            Some(Stdin::Terminal(master)) => {
                let _ = tokio::task::spawn_blocking(move || (&*master).write_all(&[VEOF])).await;
            }
            Some(Stdin::Pipe(pipe)) => drop(pipe),
            None => {}
        }
        process.state().stdin_open = false;
        process.changed.send_replace(());
    }
    Ok(())
}

/// [`Request::ProcessSignal`](repobox_protocol::Request::ProcessSignal).
pub(crate) async fn signal(table: Arc<Table>, id: u64, signal: i32) -> OpResult<Reply> {
    let process = table.get(id)?;
    let signal = Signal::try_from(signal)
        .map_err(|_| OpError::new(ErrorKind::Invalid, format!("no signal {signal}")))?;
    if process.running() {
        let pid = process.pid as i32;
        let _ = tokio::task::spawn_blocking(move || signal_tree(pid, signal)).await;
    }
    Ok(Reply::Done { stat: None })
}

/// [`Request::ProcessResize`](repobox_protocol::Request::ProcessResize).
pub(crate) fn resize(table: &Table, id: u64, cols: u16, rows: u16) -> OpResult<Reply> {
    let process = table.get(id)?;
    let Some(master) = &process.master else {
        return Err(OpError::new(
            ErrorKind::Conflict,
            format!("process {id} has no terminal"),
        ));
    };
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&**master, size)
        .map_err(|e| OpError::io(&e.into(), "resizing the terminal"))?;
    Ok(Reply::Done { stat: None })
}

/// [`Request::ProcessRemove`](repobox_protocol::Request::ProcessRemove).
pub(crate) async fn remove(table: Arc<Table>, id: u64) -> OpResult<Reply> {
    let process = table.get(id)?;
    process.removed.store(true, Ordering::Release);
    let mut changed = process.changed.subscribe();
    let pid = process.pid as i32;
    let ended = tokio::time::timeout(REMOVE_WAIT, async {
        while process.running() {
            tokio::task::spawn_blocking(move || kill_tree(pid, false));
            let _ = tokio::time::timeout(Duration::from_millis(200), changed.changed()).await;
        }
    })
    .await;
    if ended.is_err() {
        return Err(OpError::new(
            ErrorKind::Other,
            format!("process {id} did not end within {REMOVE_WAIT:?}"),
        ));
    }
    table.prune();
    Ok(Reply::Done { stat: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_tail_and_moves_old_offsets_up() {
        let mut ring = Ring::new(4);
        ring.push(b"ab");
        assert_eq!(ring.read(0, 10), (0, b"ab".to_vec()));
        ring.push(b"cdef");
        assert_eq!(ring.end, 6);
        assert_eq!(ring.read(0, 10), (2, b"cdef".to_vec()));
        assert_eq!(ring.read(3, 2), (3, b"de".to_vec()));
        assert_eq!(ring.read(9, 2), (9, Vec::new()));
        ring.push(b"0123456789");
        assert_eq!(ring.read(0, 10), (12, b"6789".to_vec()));
        let mut none = Ring::new(0);
        none.push(b"xyz");
        assert_eq!(none.read(0, 10), (3, Vec::new()));
    }
}
