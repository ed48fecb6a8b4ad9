//! Running commands in a sandbox: exact results, timeouts that kill, bounded output,
//! and live streaming.
//!
//! Each command runs as `<shell> -c <command>` through a Docker exec, tagged with a
//! unique `REPOBOX_EXEC_ID` in its environment. Children inherit the environment, so
//! at a timeout (or when a streaming client goes away) a second, tiny exec finds every
//! process carrying the tag in `/proc` and kills it: the command, its children, and a
//! backgrounded `sleep &` alike. Docker has no "kill exec", and closing the stream
//! alone would leave the processes running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::docker::{ExecSpec, Output, OutputStream, Runtime};
use crate::error::{Error, Result};

/// Exit code reported for a command stopped at its deadline (as `timeout(1)` does).
pub const TIMEOUT_EXIT_CODE: i64 = 124;
/// Environment variable tagging every process of one command.
const TAG_VAR: &str = "REPOBOX_EXEC_ID";
/// How long output is still collected after a timed-out command was killed.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);
/// Bound on the kill itself.
const KILL_BOUND: Duration = Duration::from_secs(10);

/// Most output bytes gathered into one streamed event.
const BATCH_BYTES: usize = 256 * 1024;

/// Output that was ready at once, by stream.
#[derive(Default)]
struct Batch {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Batch {
    fn len(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }
}

/// Kills every process whose environment holds `REPOBOX_EXEC_ID=$1`. Runs a few passes
/// so that a process forked while the first pass ran is caught by the next one. Uses
/// only `sh`, `tr`, `grep` and `kill`, which any image with a shell has.
const KILL_SCRIPT: &str = r#"tag="REPOBOX_EXEC_ID=$1"
for pass in 1 2 3 4 5; do
  found=0
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" = "$$" ] && continue
    if tr '\0' '\n' < "$dir/environ" 2>/dev/null | grep -qxF "$tag"; then
      kill -9 "$pid" 2>/dev/null && found=1
    fi
  done
  [ "$found" = 0 ] && break
done"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct Command {
    /// The command line, given to the shell's `-c`.
    pub command: String,
    /// Absolute working directory.
    pub working_dir: String,
    /// Deadline, from the start.
    pub timeout: Duration,
    /// Extra `NAME=value` pairs for this command only.
    pub env: Vec<String>,
}

/// The outcome of a command (the spec's *ExecResult*).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// The command as given.
    pub command: String,
    /// Exit code: the command's own, 124 for a timeout, 128+N for a signal.
    pub exit_code: i64,
    /// Standard output (lossy UTF-8), at most `MAX_OUTPUT_BYTES`.
    pub stdout: String,
    /// Standard error (lossy UTF-8), at most `MAX_OUTPUT_BYTES`.
    pub stderr: String,
    /// Wall time in seconds.
    pub execution_time_secs: f64,
    /// When the command started (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// Whether the command was killed at its deadline.
    pub timed_out: bool,
    /// Whether stdout was cut at the cap.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the cap.
    pub stderr_truncated: bool,
}

/// The final event of a streamed command: the [`ExecResult`] without its output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExitEvent {
    /// The command as given.
    pub command: String,
    /// Exit code, as in [`ExecResult`].
    pub exit_code: i64,
    /// Wall time in seconds.
    pub execution_time_secs: f64,
    /// When the command started.
    pub timestamp: DateTime<Utc>,
    /// Whether the command was killed at its deadline.
    pub timed_out: bool,
    /// Always false: streams are not capped.
    pub stdout_truncated: bool,
    /// Always false: streams are not capped.
    pub stderr_truncated: bool,
}

/// One event of a streamed command.
#[derive(Debug, Clone)]
pub enum Event {
    /// Output on stdout (valid UTF-8; a character split across reads is kept whole).
    Stdout(String),
    /// Output on stderr.
    Stderr(String),
    /// The command ended.
    Exit(ExitEvent),
    /// The command could not be run to its end (engine failure).
    Error(String),
}

/// Runs `command` in `container` and collects its output, each stream capped at
/// `cap` bytes (the rest is read and discarded so the command runs to its end).
pub async fn run(
    runtime: &Runtime,
    container: &str,
    shell: &str,
    command: Command,
    cap: usize,
) -> Result<ExecResult> {
    let started_at = Utc::now();
    let started = Instant::now();
    let deadline = started + command.timeout;
    let tag = new_tag();
    let (exec_id, mut output) = start(runtime, container, shell, &command, &tag).await?;

    let mut stdout = Capped::new(cap);
    let mut stderr = Capped::new(cap);
    let mut timed_out = false;
    loop {
        tokio::select! {
            item = output.next() => match item {
                Some(Ok(Output::Stdout(bytes))) => stdout.push(&bytes),
                Some(Ok(Output::Stderr(bytes))) => stderr.push(&bytes),
                Some(Err(err)) => return Err(err),
                None => break,
            },
            () = tokio::time::sleep_until(deadline), if !timed_out => {
                timed_out = true;
                kill(runtime, container, &tag).await;
                // Keep what the command wrote up to its death, but do not wait on a
                // stream that something outside the tag still holds open.
                let _ = tokio::time::timeout(DRAIN_AFTER_KILL, async {
                    while let Some(Ok(item)) = output.next().await {
                        match item {
                            Output::Stdout(bytes) => stdout.push(&bytes),
                            Output::Stderr(bytes) => stderr.push(&bytes),
                        }
                    }
                }).await;
                break;
            }
        }
    }
    let exit_code = if timed_out {
        TIMEOUT_EXIT_CODE
    } else if let Some(code) = wait_exit_code(runtime, &exec_id, deadline).await? {
        code
    } else {
        // The output ended early but the command ran past its deadline.
        timed_out = true;
        kill(runtime, container, &tag).await;
        TIMEOUT_EXIT_CODE
    };
    if !timed_out {
        check_started(runtime, container, &command, exit_code, stdout.bytes()).await?;
    }
    Ok(ExecResult {
        command: command.command,
        exit_code,
        stdout_truncated: stdout.truncated,
        stderr_truncated: stderr.truncated,
        stdout: into_text(stdout.buf),
        stderr: into_text(stderr.buf),
        execution_time_secs: started.elapsed().as_secs_f64(),
        timestamp: started_at,
        timed_out,
    })
}

/// Starts `command` and returns its events as they happen. The command runs in a task
/// that owns it: the channel is small, so a slow client slows the command's output
/// instead of growing the server's memory, and a client that goes away (the receiver
/// is dropped) gets the command killed.
pub async fn stream(
    runtime: &Runtime,
    container: &str,
    shell: &str,
    command: Command,
) -> Result<mpsc::Receiver<Event>> {
    let started_at = Utc::now();
    let started = Instant::now();
    let deadline = started + command.timeout;
    let tag = new_tag();
    let (exec_id, mut output) = start(runtime, container, shell, &command, &tag).await?;
    let (tx, rx) = mpsc::channel(8);
    let runtime = runtime.clone();
    let container = container.to_owned();
    tokio::spawn(async move {
        let mut out = Utf8Carry::default();
        let mut err = Utf8Carry::default();
        let mut timed_out = false;
        let mut ended = false;
        while !ended {
            let first = tokio::select! {
                item = output.next() => item,
                () = tokio::time::sleep_until(deadline) => {
                    timed_out = true;
                    kill(&runtime, &container, &tag).await;
                    break;
                }
                () = tx.closed() => {
                    kill(&runtime, &container, &tag).await;
                    return;
                }
            };
            // Take whatever else is already there too (up to a bound), so a command
            // that prints fast makes few large events rather than many small ones.
            let mut batch = Batch::default();
            let mut item = first;
            loop {
                match item {
                    Some(Ok(Output::Stdout(bytes))) => batch.stdout.extend_from_slice(&bytes),
                    Some(Ok(Output::Stderr(bytes))) => batch.stderr.extend_from_slice(&bytes),
                    Some(Err(error)) => {
                        kill(&runtime, &container, &tag).await;
                        let _ = tx.send(Event::Error(error.to_string())).await;
                        return;
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
                if batch.len() >= BATCH_BYTES {
                    break;
                }
                match output.next().now_or_never() {
                    Some(next) => item = next,
                    None => break,
                }
            }
            for event in [
                (!batch.stdout.is_empty()).then(|| Event::Stdout(out.decode(&batch.stdout))),
                (!batch.stderr.is_empty()).then(|| Event::Stderr(err.decode(&batch.stderr))),
            ]
            .into_iter()
            .flatten()
            {
                if tx.send(event).await.is_err() {
                    kill(&runtime, &container, &tag).await;
                    return;
                }
            }
        }
        for (rest, make) in [
            (out.finish(), Event::Stdout as fn(String) -> Event),
            (err.finish(), Event::Stderr),
        ] {
            if !rest.is_empty() && tx.send(make(rest)).await.is_err() {
                return;
            }
        }
        let exit_code = if timed_out {
            Ok(TIMEOUT_EXIT_CODE)
        } else {
            match wait_exit_code(&runtime, &exec_id, deadline).await {
                Ok(Some(code)) => Ok(code),
                Ok(None) => {
                    timed_out = true;
                    kill(&runtime, &container, &tag).await;
                    Ok(TIMEOUT_EXIT_CODE)
                }
                Err(error) => Err(error),
            }
        };
        let event = match exit_code {
            Ok(exit_code) => Event::Exit(ExitEvent {
                command: command.command,
                exit_code,
                execution_time_secs: started.elapsed().as_secs_f64(),
                timestamp: started_at,
                timed_out,
                stdout_truncated: false,
                stderr_truncated: false,
            }),
            Err(error) => Event::Error(error.to_string()),
        };
        let _ = tx.send(event).await;
    });
    Ok(rx)
}

async fn start(
    runtime: &Runtime,
    container: &str,
    shell: &str,
    command: &Command,
    tag: &str,
) -> Result<(String, OutputStream)> {
    let mut env = command.env.clone();
    env.push(format!("{TAG_VAR}={tag}"));
    runtime
        .exec(
            container,
            ExecSpec {
                cmd: vec![shell.to_owned(), "-c".to_owned(), command.command.clone()],
                env,
                working_dir: Some(command.working_dir.clone()),
            },
        )
        .await
}

/// A missing working directory makes the runtime fail before the shell starts; that
/// is the client's mistake, not a command result.
async fn check_started(
    runtime: &Runtime,
    container: &str,
    command: &Command,
    exit_code: i64,
    stdout: &[u8],
) -> Result<()> {
    if (exit_code == 126 || exit_code == 127) && stdout.starts_with(b"OCI runtime exec failed") {
        if runtime
            .stat(container, &command.working_dir)
            .await?
            .is_none()
        {
            return Err(Error::PathNotFound(format!(
                "working_directory {}",
                command.working_dir
            )));
        }
        return Err(Error::MissingTool(format!(
            "the sandbox could not start the command: {}",
            String::from_utf8_lossy(stdout).trim()
        )));
    }
    Ok(())
}

/// The exit code, once the engine has recorded it: the output can end a moment
/// before, and it ends early for a command that closed its stdout and stderr and
/// carries on. `None` when `deadline` passes first.
pub(crate) async fn wait_exit_code(
    runtime: &Runtime,
    exec_id: &str,
    deadline: Instant,
) -> Result<Option<i64>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(code) = runtime.exec_exit_code(exec_id).await? {
            return Ok(Some(code));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(deadline - Instant::now())).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Kills every process of the command tagged `tag`. Failures are logged: the caller
/// has nothing better to do than carry on.
async fn kill(runtime: &Runtime, container: &str, tag: &str) {
    let spec = ExecSpec {
        cmd: vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            KILL_SCRIPT.to_owned(),
            "repobox-kill".to_owned(),
            tag.to_owned(),
        ],
        env: Vec::new(),
        working_dir: Some("/".to_owned()),
    };
    let result = tokio::time::timeout(KILL_BOUND, async {
        let (_, mut output) = runtime.exec(container, spec).await?;
        while output.next().await.is_some() {}
        Ok::<_, Error>(())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%container, %err, "could not kill a command's processes"),
        Err(_) => tracing::warn!(%container, "killing a command's processes timed out"),
    }
}

fn new_tag() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}-{n}", std::process::id())
}

/// Text of the bytes, without a copy when they are valid UTF-8 (the common case, and
/// the output can be `MAX_OUTPUT_BYTES` large).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// A buffer that keeps the first `cap` bytes and counts the rest away.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            truncated: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap - self.buf.len();
        if bytes.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Decodes a byte stream as UTF-8 piecewise, holding back an incomplete trailing
/// character until its remaining bytes arrive; invalid bytes become U+FFFD.
#[derive(Default)]
struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        // At most 3 bytes of a 4-byte character can be incomplete at the end.
        let keep = incomplete_suffix(&self.pending);
        let rest = self.pending.split_off(self.pending.len() - keep);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Length of a trailing, incomplete-but-so-far-valid UTF-8 sequence.
fn incomplete_suffix(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: look further back
        }
        let needed = match byte {
            b if b & 0b1110_0000 == 0b1100_0000 => 2,
            b if b & 0b1111_0000 == 0b1110_0000 => 3,
            b if b & 0b1111_1000 == 0b1111_0000 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn capped_keeps_the_head_and_flags_the_rest() {
        let mut capped = Capped::new(5);
        capped.push(b"abc");
        assert!(!capped.truncated);
        capped.push(b"defg");
        capped.push(b"h");
        assert_eq!(capped.bytes(), b"abcde");
        assert!(capped.truncated);
    }

    #[test]
    fn split_characters_survive_chunking() {
        let text = "héllo → wörld 🎉";
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let mut carry = Utf8Carry::default();
            let mut out = carry.decode(&Bytes::copy_from_slice(&bytes[..split]));
            out += &carry.decode(&Bytes::copy_from_slice(&bytes[split..]));
            out += &carry.finish();
            assert_eq!(out, text, "split at {split}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut carry = Utf8Carry::default();
        let out = carry.decode(&Bytes::from_static(b"a\xffb")) + &carry.finish();
        assert_eq!(out, "a\u{fffd}b");
    }

    #[test]
    fn tags_are_unique() {
        assert_ne!(new_tag(), new_tag());
    }
}
