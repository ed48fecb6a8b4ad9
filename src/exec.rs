//! Running commands in a sandbox: exact results, timeouts that kill, bounded output,
//! and live streaming.
//!
//! Each command runs through the sandbox's agent (`bash -c`, or `sh -c` where the
//! image has no bash), under a supervisor that is the subreaper of everything the
//! command starts: at the timeout, when the client goes away (the [`Execution`] is
//! dropped) and when the shell exits, every process it started is killed, whether it
//! cleared its environment, started a new session or double-forked. The agent
//! enforces the timeout and the output cap itself, so an honest agent's bytes beyond
//! the cap never cross into the server; the server counts them again all the same
//! (the agent is in the sandbox), and keeps at most the cap whatever arrives.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::agent::{AgentClient, ExecEvent, ExecSpec, Execution};
use crate::error::Result;

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

/// What to run.
#[derive(Debug, Clone)]
pub struct Command {
    /// The command line, given to the shell's `-c`.
    pub command: String,
    /// Absolute working directory.
    pub working_dir: String,
    /// Deadline, from the start.
    pub timeout: Duration,
    /// Extra variables for this command only.
    pub env: Vec<(String, String)>,
    /// Standard input (`None`: empty, end-of-file at once).
    pub stdin: Option<Bytes>,
}

impl Command {
    fn spec(&self, output_cap: Option<u64>) -> ExecSpec {
        ExecSpec {
            command: self.command.clone(),
            cwd: self.working_dir.clone(),
            env: self.env.clone(),
            stdin: self.stdin.clone(),
            // The agent's own deadline is the bound; the server adds a margin for
            // the kill and the last output, and never waits longer.
            timeout: self.timeout,
            output_cap,
        }
    }
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

impl ExecResult {
    /// The result with each stream cut to its first `bytes` bytes (at a character
    /// boundary), flagged truncated when cut.
    pub fn kept(mut self, bytes: usize) -> Self {
        for (text, truncated) in [
            (&mut self.stdout, &mut self.stdout_truncated),
            (&mut self.stderr, &mut self.stderr_truncated),
        ] {
            if text.len() > bytes {
                let mut end = bytes;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                *truncated = true;
            }
        }
        self
    }
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
#[derive(Debug)]
pub enum Event {
    /// Output on stdout (valid UTF-8; a character split across reads is kept whole).
    Stdout(String),
    /// Output on stderr.
    Stderr(String),
    /// The command ended.
    Exit(ExitEvent),
    /// The command could not be run to its end (the agent's connection failed).
    Error(crate::error::Error),
}

/// Runs `command` and collects its output, each stream capped at `cap` bytes (the
/// rest is discarded by the agent; the command runs to its end). Dropping the future
/// kills the command.
pub async fn run(agent: &AgentClient, command: Command, cap: usize) -> Result<ExecResult> {
    let started_at = Utc::now();
    let started = Instant::now();
    let mut execution = agent.exec(command.spec(Some(cap as u64))).await?;
    let mut stdout = Capped::new(cap);
    let mut stderr = Capped::new(cap);
    let status = loop {
        match next_event(&mut execution, started + command.timeout).await? {
            ExecEvent::Stdout(bytes) => stdout.push(&bytes),
            ExecEvent::Stderr(bytes) => stderr.push(&bytes),
            ExecEvent::Exit(status) => break status,
        }
    };
    Ok(ExecResult {
        command: command.command,
        exit_code: status.exit_code,
        stdout_truncated: status.stdout_truncated || stdout.cut,
        stderr_truncated: status.stderr_truncated || stderr.cut,
        stdout: into_text(stdout.bytes),
        stderr: into_text(stderr.bytes),
        execution_time_secs: started.elapsed().as_secs_f64(),
        timestamp: started_at,
        timed_out: status.timed_out,
    })
}

/// One output stream gathered up to a cap, counted by the server: the agent caps it
/// too, but what it sends is not trusted to be within the cap.
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
    cut: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            cut: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let room = self.cap - self.bytes.len();
        if chunk.len() > room {
            self.cut = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// How long past its deadline a command may take to report its end (the kill and the
/// last output) before the server gives up on it.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// The next event, bounded by the command's deadline plus [`EXIT_GRACE`]: the agent
/// enforces the deadline, this only guards against an agent that stopped answering.
async fn next_event(execution: &mut Execution, deadline: Instant) -> Result<ExecEvent> {
    match tokio::time::timeout_at(deadline + EXIT_GRACE, execution.next()).await {
        Ok(event) => event,
        Err(_) => Err(crate::error::Error::NotRunning(
            "the sandbox's agent did not report the command's end after its deadline".to_owned(),
        )),
    }
}

/// Starts `command` and returns its events as they happen. The command runs in a task
/// that owns it: the channel is small and the agent sends only what the server has
/// taken, so a slow client slows the command's output instead of growing the server's
/// memory, and a client that goes away (the receiver is dropped) gets the command
/// killed.
pub async fn stream(agent: &AgentClient, command: Command) -> Result<mpsc::Receiver<Event>> {
    let started_at = Utc::now();
    let started = Instant::now();
    let deadline = started + command.timeout;
    let mut execution = agent.exec(command.spec(None)).await?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut out = Utf8Carry::default();
        let mut err = Utf8Carry::default();
        loop {
            let first = tokio::select! {
                event = next_event(&mut execution, deadline) => event,
                // Dropping the execution kills the command.
                () = tx.closed() => return,
            };
            // Take whatever else is already there too (up to a bound), so a command
            // that prints fast makes few large events rather than many small ones.
            let mut batch = Batch::default();
            let mut event = first;
            let exit = loop {
                match event {
                    Ok(ExecEvent::Stdout(bytes)) => batch.stdout.extend_from_slice(&bytes),
                    Ok(ExecEvent::Stderr(bytes)) => batch.stderr.extend_from_slice(&bytes),
                    Ok(ExecEvent::Exit(status)) => break Some(Ok(status)),
                    Err(error) => break Some(Err(error)),
                }
                if batch.len() >= BATCH_BYTES {
                    break None;
                }
                match futures_util::FutureExt::now_or_never(execution.next()) {
                    Some(next) => event = next,
                    None => break None,
                }
            };
            for event in [
                (!batch.stdout.is_empty()).then(|| Event::Stdout(out.decode(&batch.stdout))),
                (!batch.stderr.is_empty()).then(|| Event::Stderr(err.decode(&batch.stderr))),
            ]
            .into_iter()
            .flatten()
            {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            let Some(exit) = exit else {
                continue;
            };
            for (rest, make) in [
                (out.finish(), Event::Stdout as fn(String) -> Event),
                (err.finish(), Event::Stderr),
            ] {
                if !rest.is_empty() && tx.send(make(rest)).await.is_err() {
                    return;
                }
            }
            let event = match exit {
                Ok(status) => Event::Exit(ExitEvent {
                    command: command.command,
                    exit_code: status.exit_code,
                    execution_time_secs: started.elapsed().as_secs_f64(),
                    timestamp: started_at,
                    timed_out: status.timed_out,
                    stdout_truncated: false,
                    stderr_truncated: false,
                }),
                Err(error) => Event::Error(error),
            };
            let _ = tx.send(event).await;
            return;
        }
    });
    Ok(rx)
}

/// Text of the bytes, without a copy when they are valid UTF-8 (the common case, and
/// the output can be `MAX_OUTPUT_BYTES` large).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
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
    fn kept_results_are_cut_at_a_character_boundary() {
        let result = ExecResult {
            command: "c".into(),
            exit_code: 0,
            stdout: "aé".repeat(10),
            stderr: "short".into(),
            execution_time_secs: 0.0,
            timestamp: Utc::now(),
            timed_out: false,
            stdout_truncated: false,
            stderr_truncated: false,
        }
        .kept(8);
        assert_eq!(result.stdout, "aéaéa");
        assert!(result.stdout_truncated);
        assert_eq!(result.stderr, "short");
        assert!(!result.stderr_truncated);
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

    mod against_a_hostile_agent {
        //! exec's own bounds, with the agent a fake that lies.
        use super::*;
        use crate::agent::hostile_agent_tests::{Out, connect, exit, limits, started};
        use repobox_protocol::{Frame, Tag};

        #[tokio::test]
        async fn output_past_the_cap_is_not_kept_even_within_the_window() {
            let (client, _, _fake) = connect(limits(), |id, _| {
                vec![
                    started(id),
                    // 512 KiB, all within the window, though the cap asked for is 1000.
                    Out::Frame(Frame::data(
                        Tag::Stdout,
                        id,
                        Bytes::from(vec![b'a'; 256 * 1024]),
                    )),
                    Out::Frame(Frame::data(
                        Tag::Stderr,
                        id,
                        Bytes::from(vec![b'b'; 256 * 1024]),
                    )),
                    exit(id, 0),
                ]
            })
            .await;
            let command = Command {
                command: "true".to_owned(),
                working_dir: "/".to_owned(),
                timeout: Duration::from_secs(5),
                env: Vec::new(),
                stdin: None,
            };
            let result = run(&client, command, 1000).await.unwrap();
            assert_eq!(result.stdout.len(), 1000);
            assert_eq!(result.stderr.len(), 1000);
            assert!(result.stdout_truncated && result.stderr_truncated);
        }

        #[tokio::test]
        async fn a_forged_exit_for_another_operation_changes_nothing() {
            // Frames for an id that is not (or no longer) under way are dropped.
            let (client, reason, _fake) = connect(limits(), |id, _| {
                vec![started(id), exit(id + 1000, 0), exit(id, 7)]
            })
            .await;
            let command = Command {
                command: "exit 7".to_owned(),
                working_dir: "/".to_owned(),
                timeout: Duration::from_secs(5),
                env: Vec::new(),
                stdin: None,
            };
            let result = run(&client, command, 1000).await.unwrap();
            assert_eq!(result.exit_code, 7);
            assert!(reason.lock().unwrap().is_none());
        }
    }
}
