//! Commands: [`Request::Exec`](repobox_protocol::Request::Exec).

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::stat::{SFlag, stat};
use repobox_protocol::{ErrorKind, MAX_CHUNK, Reply, Tag};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Incoming;
use crate::error::{OpError, OpResult};
use crate::flow::{Outbox, Window};
use crate::procs::{kill_tree, proc_stat};
use crate::reap::Own;

/// How long output is still read after the supervisor exits (by then every process of
/// the command is dead, so the pipes are at EOF at once; this only bounds a surprise).
const DRAIN: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Shell command line.
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Variables over the agent's environment.
    pub env: Vec<(String, String)>,
    /// Whether stdin data follows.
    pub stdin: bool,
    /// Deadline in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Cap of each output stream.
    pub output_cap: Option<u64>,
}

fn is_executable_file(path: &str) -> bool {
    stat(path).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
            && st.st_mode & 0o111 != 0
    })
}

/// The image's shell: `/bin/bash`, else `/bin/sh`.
pub(crate) fn pick_shell() -> OpResult<&'static str> {
    ["/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|shell| is_executable_file(shell))
        .ok_or_else(|| {
            OpError::new(
                ErrorKind::MissingTool,
                "the image has no /bin/bash or /bin/sh",
            )
        })
}

/// Longest command line passed as an argument; a longer one (an argument may not
/// exceed 128 KiB) is written to a file the shell sources.
const MAX_ARGUMENT_COMMAND: usize = 64 * 1024;

/// How a command line reaches the shell: as `-c`'s argument, or, when too long for
/// one, through a file of its own that the shell sources (`. FILE`, so `$0`, the
/// positional parameters and `exit` behave as with `-c`) and the supervisor removes.
pub(crate) struct ShellLine {
    line: String,
    file: Option<std::path::PathBuf>,
    handed_over: std::cell::Cell<bool>,
}

impl ShellLine {
    /// The line for `command` (a file written for a long one).
    pub(crate) fn new(command: &str) -> OpResult<Self> {
        if command.len() <= MAX_ARGUMENT_COMMAND {
            return Ok(Self {
                line: command.to_owned(),
                file: None,
                handed_over: false.into(),
            });
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "repobox-command-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(command.as_bytes()));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&path);
            return Err(OpError::io(&error, "cannot store the long command line"));
        }
        Ok(Self {
            // The path is ours: no quote or other special character in it.
            line: format!(". '{}'", path.display()),
            file: Some(path),
            handed_over: false.into(),
        })
    }

    /// Adds `[--remove FILE] SHELL -c LINE` to the supervisor's arguments.
    pub(crate) fn args(&self, command: &mut Command, shell: &str) {
        if let Some(file) = &self.file {
            command.arg("--remove").arg(file);
        }
        command.arg(shell).arg("-c").arg(&self.line);
    }

    /// The supervisor runs: it removes the file now.
    pub(crate) fn handed_over(&self) {
        self.handed_over.set(true);
    }
}

impl Drop for ShellLine {
    fn drop(&mut self) {
        if let Some(file) = &self.file
            && !self.handed_over.get()
        {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Checks that `cwd` is an existing directory.
pub(crate) fn check_cwd(cwd: &str) -> OpResult<()> {
    if !cwd.starts_with('/') {
        return Err(OpError::new(
            ErrorKind::Invalid,
            format!("working directory {cwd:?} is not absolute"),
        ));
    }
    match stat(cwd) {
        Ok(st)
            if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR =>
        {
            Ok(())
        }
        Ok(_) => Err(OpError::new(
            ErrorKind::NotDirectory,
            format!("working directory {cwd} is not a directory"),
        )),
        Err(nix::errno::Errno::ENOENT) => Err(OpError::new(
            ErrorKind::NotFound,
            format!("working directory {cwd} does not exist"),
        )),
        Err(errno) => Err(OpError::errno(errno, format!("working directory {cwd}"))),
    }
}

/// Starts the supervisor (this same binary) that runs the shell; the guard kills its
/// tree unless disarmed (so a command whose operation ends early does not live on).
fn spawn(spec: &Spec) -> OpResult<(Child, KillOnDrop)> {
    let shell = pick_shell()?;
    check_cwd(&spec.cwd)?;
    let line = ShellLine::new(&spec.command)?;
    let build = |program: &std::path::Path| {
        let mut command = Command::new(program);
        command.arg0("repobox-agent").arg("supervise");
        line.args(&mut command, shell);
        command
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn()
    };
    let pid = |child: &Child| child.id();
    let (child, own) = match Own::spawn(|| build("/proc/self/exe".as_ref()), pid) {
        Ok(spawned) => spawned,
        Err(first) => {
            let exe = std::env::current_exe()
                .map_err(|_| OpError::io(&first, "cannot start the supervisor"))?;
            Own::spawn(|| build(&exe), pid)
                .map_err(|error| OpError::io(&error, "cannot start the supervisor"))?
        }
    };
    // From here the supervisor removes the command's file.
    line.handed_over();
    let guard = KillOnDrop {
        pid: child.id().map(|pid| pid as i32),
        _own: own,
    };
    Ok((child, guard))
}

/// Kills the command's tree if the operation is dropped before the supervisor exited
/// (cancel, or a new connection).
struct KillOnDrop {
    pid: Option<i32>,
    /// The supervisor stays registered as the agent's own child until this is dropped.
    _own: Own,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            std::thread::spawn(move || {
                // Repeated: the supervisor may not have started the shell yet.
                for _ in 0..500 {
                    kill_tree(pid, false);
                    match proc_stat(pid) {
                        Some(stat) if !stat.is_dead() => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => return,
                    }
                }
                kill_tree(pid, true);
            });
        }
    }
}

fn exit_code(status: ExitStatus) -> i64 {
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => 255,
    }
}

/// Sends one output stream; returns whether it went past the cap.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    tag: Tag,
    out: &Outbox,
    window: &Window,
    cap: Option<u64>,
    mut exited: watch::Receiver<bool>,
) -> bool {
    let drain = async move {
        let _ = exited.wait_for(|&exited| exited).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::pin!(drain);
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut sent = 0u64;
    let mut truncated = false;
    let mut sending = true;
    loop {
        let n = tokio::select! {
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = &mut drain => break,
        };
        let mut take = n;
        if let Some(cap) = cap {
            let room = cap.saturating_sub(sent);
            if n as u64 > room {
                truncated = true;
                take = room as usize;
            }
        }
        sent += take as u64;
        if take > 0 && sending {
            let data = Bytes::copy_from_slice(&buf[..take]);
            sending = out.send_data(tag, window, data).await;
        }
    }
    truncated
}

/// Writes stdin data to the command in order, returning credit as it goes; data that
/// the command no longer takes is dropped (credit still returned).
async fn feed_stdin(
    mut stdin: Option<ChildStdin>,
    mut data: mpsc::UnboundedReceiver<Bytes>,
    out: &Outbox,
) {
    while let Some(chunk) = data.recv().await {
        if let Some(pipe) = stdin.as_mut() {
            if pipe.write_all(&chunk).await.is_err() {
                stdin = None;
            }
        }
        out.reply(&Reply::Credit {
            bytes: chunk.len() as u64,
        })
        .await;
    }
    // Eof: closes the command's stdin.
    drop(stdin);
}

/// Runs a command to its end.
pub(crate) async fn run(
    out: Outbox,
    window: Arc<Window>,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    spec: Spec,
) {
    let started = Instant::now();
    let spec = Arc::new(spec);
    let spawned = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || spawn(&spec)).await
    };
    let (mut child, mut guard) = match spawned {
        Ok(Ok(spawned)) => spawned,
        Ok(Err(error)) => {
            out.reply(&error.reply()).await;
            return;
        }
        Err(error) => {
            out.reply(&Reply::error(
                ErrorKind::Other,
                format!("cannot start the command: {error}"),
            ))
            .await;
            return;
        }
    };
    let pid = child.id().unwrap_or_default();
    out.reply(&Reply::Started { pid }).await;

    let (exited_tx, exited_rx) = watch::channel(false);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        out.reply(&Reply::error(
            ErrorKind::Other,
            "the command has no output pipes",
        ))
        .await;
        return;
    };
    let stdout = pump(
        stdout,
        Tag::Stdout,
        &out,
        &window,
        spec.output_cap,
        exited_rx.clone(),
    );
    let stderr = pump(
        stderr,
        Tag::Stderr,
        &out,
        &window,
        spec.output_cap,
        exited_rx,
    );
    let output = async { tokio::join!(stdout, stderr) };
    tokio::pin!(output);

    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let mut stdin_tx = Some(stdin_tx);
    let stdin = feed_stdin(child.stdin.take(), stdin_rx, &out);
    tokio::pin!(stdin);

    let deadline = spec
        .timeout_ms
        .map(|ms| started + Duration::from_millis(ms));
    let mut timed_out = false;
    let mut status: Option<ExitStatus> = None;
    let mut truncated: Option<(bool, bool)> = None;
    let mut incoming_open = true;
    let mut stdin_done = false;
    let mut rekill = tokio::time::interval(Duration::from_millis(200));

    loop {
        if let (Some(status), Some((stdout_truncated, stderr_truncated))) = (status, truncated) {
            guard.pid = None;
            let exit_code = if timed_out { 124 } else { exit_code(status) };
            out.reply(&Reply::Exit {
                exit_code,
                timed_out,
                stdout_truncated,
                stderr_truncated,
            })
            .await;
            return;
        }
        tokio::select! {
            message = incoming.recv(), if incoming_open => match message {
                Some(Incoming::Data(data)) => {
                    match &stdin_tx {
                        Some(tx) => {
                            let _ = tx.send(data);
                        }
                        // Not asked for, or after Eof: dropped, credit returned.
                        None => {
                            out.reply(&Reply::Credit { bytes: data.len() as u64 }).await;
                        }
                    }
                }
                Some(Incoming::Eof) => stdin_tx = None,
                None => incoming_open = false,
            },
            () = &mut stdin, if !stdin_done => stdin_done = true,
            result = child.wait(), if status.is_none() => {
                status = Some(result.unwrap_or_else(|_| ExitStatus::from_raw(255 << 8)));
                let _ = exited_tx.send(true);
            },
            flags = &mut output, if truncated.is_none() => truncated = Some(flags),
            () = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            }, if !timed_out && status.is_none() => {
                timed_out = true;
                tokio::task::spawn_blocking(move || kill_tree(pid as i32, false));
                rekill.reset();
            },
            _ = rekill.tick(), if timed_out && status.is_none() => {
                tokio::task::spawn_blocking(move || kill_tree(pid as i32, false));
            },
        }
    }
}
