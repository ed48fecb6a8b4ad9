//! Messages: what control frames carry ([`Request`] from the server, [`Reply`] from
//! the agent) and the values inside them.

use serde::{Deserialize, Serialize};

/// Most entries in one [`Reply::Listing`]; a larger directory is listed in pages.
pub const LIST_PAGE: u32 = 1000;
/// Most bytes of entries (as JSON) in one [`Reply::Listing`]: a page ends early when
/// its names and link targets are long.
pub const LIST_PAGE_BYTES: usize = 1024 * 1024;
/// Most bytes of a process's command in a [`ProcessInfo`] (longer ones are cut).
pub const MAX_INFO_COMMAND: usize = 4096;

/// A key-value environment entry.
pub type EnvVar = (String, String);

/// Server to agent: the first control frame of each operation, and the messages that
/// steer one under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First message of a connection, on id 0. The agent answers [`Reply::HelloAck`]
    /// with the same `epoch`, and ends every operation begun before it (a new
    /// connection means the server that started them is gone): commands are killed,
    /// transfers dropped, follows of background processes ended. Background processes
    /// ([`Request::ProcessStart`]) are the agent's and are left running.
    Hello {
        /// The connection's nonce; the server treats everything before the ack that
        /// echoes it as noise.
        epoch: u64,
    },
    /// Liveness check: answered by [`Reply::Pong`].
    Ping,
    /// Runs `command` with the image's shell (`/bin/bash -c`, else `/bin/sh -c`) in its
    /// own process group, under a supervisor that is the subreaper of everything it
    /// starts. Answers [`Reply::Started`], then output frames ([`Tag::Stdout`],
    /// [`Tag::Stderr`]; one window covers both), then [`Reply::Exit`] after the last
    /// output. When the shell exits, at the timeout and on [`Request::Cancel`], every
    /// process the command started is killed (also those that left the process group
    /// or the session, or were re-parented), so the exit comes as soon as the shell's.
    Exec {
        /// Shell command line.
        command: String,
        /// Absolute working directory (must exist).
        cwd: String,
        /// Variables over the agent's own environment (the container's).
        env: Vec<EnvVar>,
        /// Whether stdin data follows ([`Tag::Data`] frames, then [`Request::Eof`]);
        /// without it stdin is `/dev/null`.
        stdin: bool,
        /// Deadline from the start, in milliseconds; reported as exit code 124.
        timeout_ms: Option<u64>,
        /// Cap on each output stream: beyond it output is read and discarded (the
        /// command runs on) and flagged truncated. `None`: everything is sent.
        output_cap: Option<u64>,
    },
    /// Stats `path` (without following a final symlink unless `follow`). Answers
    /// [`Reply::Stat`].
    Stat {
        /// Absolute path.
        path: String,
        /// Follow a symlink at the end of the path.
        follow: bool,
    },
    /// Lists the directory `path` (a symlink to a directory is followed): every entry
    /// but `.` and `..`, sorted by name in byte order, entries not followed. Answers
    /// [`Reply::Listing`].
    List {
        /// Absolute path.
        path: String,
        /// Entries to skip (in name order): pages after the first.
        #[serde(default)]
        offset: u64,
    },
    /// Reads the file `path` (symlinks followed): [`Reply::Opened`], [`Tag::Data`]
    /// frames, then [`Reply::End`].
    Read {
        /// Absolute path.
        path: String,
    },
    /// Writes the file `path` from [`Tag::Data`] frames ended by [`Request::Eof`]: the
    /// bytes go to a temporary file beside it that is renamed over `path` at the end
    /// (so a cancelled or failed write leaves the old file). A symlink at `path` is
    /// written through to its target, as a shell's `>` would. Answers [`Reply::Done`]
    /// with the new file's stat.
    Write {
        /// Absolute path.
        path: String,
        /// Permission bits of the file.
        mode: u32,
        /// Create missing parent directories (mode 0755).
        create_parents: bool,
    },
    /// Streams a tar of `path` (a directory with everything under it, a file, or a
    /// final symlink as a link, not followed), whose entries are named from `path`'s
    /// base name down, as Docker's archive API does: [`Reply::Opened`] (the `lstat` of
    /// `path`), [`Tag::Data`] frames, [`Reply::End`].
    ArchiveOut {
        /// Absolute path.
        path: String,
    },
    /// Unpacks the tar that follows ([`Tag::Data`] frames, [`Request::Eof`]) into the
    /// existing directory `path`: files, directories, symlinks and hard links with their
    /// modes, owners and modification times; entries that would land outside `path`
    /// are refused. Answers [`Reply::Done`].
    ArchiveIn {
        /// Absolute path of a directory.
        path: String,
    },
    /// Creates a directory and its missing parents (mode 0755). Answers [`Reply::Done`].
    Mkdir {
        /// Absolute path.
        path: String,
    },
    /// Starts a background process: like [`Request::Exec`] (the same shell, supervisor
    /// and environment), but owned by the agent, not by this operation or connection:
    /// it keeps running when the operation ends, the client goes away or a new
    /// connection says [`Request::Hello`]; it ends when it exits, at its timeout, on
    /// [`Request::ProcessSignal`] or [`Request::ProcessRemove`]. Its output is kept in a
    /// ring per stream for [`Request::ProcessOutput`] and [`Request::ProcessFollow`].
    /// Answers [`Reply::Process`] once it runs; [`ErrorKind::Limit`] when `max_running`
    /// processes already run.
    ProcessStart {
        /// Shell command line.
        command: String,
        /// Absolute working directory (must exist).
        cwd: String,
        /// Variables over the agent's own environment.
        env: Vec<EnvVar>,
        /// Whether stdin stays open for [`Request::ProcessStdin`]; false: `/dev/null`
        /// (with a terminal: writes are refused).
        stdin_open: bool,
        /// Run on a pseudo-terminal (its controlling terminal, in a session of its own):
        /// stdout and stderr are then one stream, reported as stdout.
        tty: bool,
        /// Terminal width (default 80).
        #[serde(default)]
        cols: Option<u16>,
        /// Terminal height (default 24).
        #[serde(default)]
        rows: Option<u16>,
        /// Deadline from the start, in milliseconds: then everything it started is
        /// killed, and it ends [`ProcessStatus::TimedOut`] with exit code 124.
        timeout_ms: Option<u64>,
        /// Bytes kept of each output stream (the most recent ones).
        output_bytes: u64,
        /// Refuse to start when this many processes already run.
        max_running: Option<u32>,
    },
    /// Lists the running processes and the most recent [`MAX_ENDED`] ended ones, oldest
    /// first. Answers [`Reply::Processes`].
    ProcessList,
    /// One process. Answers [`Reply::Process`]; [`ErrorKind::NotFound`] for an unknown id.
    ProcessGet {
        /// Its id.
        id: u64,
    },
    /// The kept output of a process from the given offsets (bytes since its start, per
    /// stream): an offset below the oldest kept byte is moved up to it, one past the
    /// end gives nothing. Answers [`Reply::ProcessOutput`].
    ProcessOutput {
        /// Its id.
        id: u64,
        /// Where stdout is read from.
        stdout_offset: u64,
        /// Where stderr is read from.
        stderr_offset: u64,
        /// At most this many bytes of each stream.
        max_bytes: u64,
    },
    /// Follows a process's output from the given offsets (moved up as for
    /// [`Request::ProcessOutput`]): [`Reply::Following`] with the actual offsets, the
    /// kept output then the live output as [`Tag::Stdout`]/[`Tag::Stderr`] frames (one
    /// window covers both), then [`Reply::ProcessEnded`] once it has ended and all its
    /// output was sent. Output dropped from the ring while this follow was held up by
    /// credit is skipped. [`Request::Cancel`] ends the follow, never the process.
    ProcessFollow {
        /// Its id.
        id: u64,
        /// Where stdout starts.
        stdout_offset: u64,
        /// Where stderr starts.
        stderr_offset: u64,
    },
    /// Writes the [`Tag::Data`] frames that follow, up to [`Request::Eof`], to a
    /// process's stdin, in order (credit returned as written); with `close`, stdin is
    /// then closed (on a terminal: an end-of-file character is typed). Answers
    /// [`Reply::Done`]; [`ErrorKind::Conflict`] when its stdin is not open or it ended.
    ProcessStdin {
        /// Its id.
        id: u64,
        /// Close stdin after the data.
        close: bool,
    },
    /// Sends signal `signal` to every process it started (the shell and all its
    /// descendants, also those that left its group or session). Answers [`Reply::Done`].
    ProcessSignal {
        /// Its id.
        id: u64,
        /// The signal number (15: SIGTERM, 9: SIGKILL, …).
        signal: i32,
    },
    /// Sets the window size of a process's terminal (then `SIGWINCH`). Answers
    /// [`Reply::Done`]; [`ErrorKind::Conflict`] for a process without a terminal.
    ProcessResize {
        /// Its id.
        id: u64,
        /// Width.
        cols: u16,
        /// Height.
        rows: u16,
    },
    /// Kills everything a process started if it runs, then forgets it. Answers
    /// [`Reply::Done`].
    ProcessRemove {
        /// Its id.
        id: u64,
    },
    /// Opens a TCP connection to `127.0.0.1:port` inside the sandbox (its loopback: no
    /// network needed). Answers [`Reply::Connected`] once connected
    /// ([`ErrorKind::NotFound`] when nothing listens), then carries the connection both
    /// ways, each within its window: [`Tag::Data`] frames from the server are written to
    /// it (credit returned as written) and [`Request::Eof`] shuts its sending side;
    /// what it sends comes back as [`Tag::Data`] frames, then [`Reply::End`] once it
    /// closes. [`Request::Cancel`] closes it.
    Connect {
        /// The port.
        port: u16,
    },
    /// Listens on `127.0.0.1:port` inside the sandbox (bound on the first such request,
    /// then kept for the agent's life; [`ErrorKind::Conflict`] when the port is taken)
    /// and waits for one connection to it: [`Reply::Connected`], then the connection
    /// is carried as for [`Request::Connect`]. How a sandbox with no network reaches a
    /// proxy the server runs: the server keeps an accept open for each connection it
    /// is ready to take.
    Accept {
        /// The port.
        port: u16,
    },
    /// The TCP ports that listen inside the sandbox (its network namespace), but the
    /// agent's own. Answers [`Reply::Ports`].
    Ports,
    /// End of the data the server sends for this operation.
    Eof,
    /// Ends the operation at once: a command is killed with everything it started, a
    /// transfer is dropped, a follow ends (its process runs on). The agent sends
    /// nothing more for this id.
    Cancel,
    /// The server consumed `bytes` of this operation's data: the agent may send that
    /// much more.
    Credit {
        /// Bytes consumed.
        bytes: u64,
    },
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// `lstat` (or `stat`) of a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time: seconds since the epoch.
    pub mtime_secs: i64,
    /// Modification time: nanoseconds within the second.
    pub mtime_nanos: u32,
    /// Where a symlink points, as written in the link (lossy UTF-8).
    pub link_target: Option<String>,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Name (lossy UTF-8).
    pub name: String,
    /// Its `lstat`.
    pub stat: Stat,
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The path (or the working directory) does not exist.
    NotFound,
    /// A component of the path, or the path itself where a directory was needed, is
    /// not a directory.
    NotDirectory,
    /// A directory where a file was needed.
    IsDirectory,
    /// The request cannot be carried out as given (a symlink loop, an archive entry
    /// outside its directory, a malformed archive, a path too long).
    Invalid,
    /// Permission denied inside the sandbox.
    PermissionDenied,
    /// The sandbox lacks something the operation needs (no shell for a command).
    MissingTool,
    /// The sandbox's disk is full (or its quota reached).
    NoSpace,
    /// Too many operations at once.
    Busy,
    /// A limit set by the request was reached (`max_running` processes already run).
    Limit,
    /// The target is not in a state that allows it (stdin of a process that ended or
    /// whose stdin is closed; resizing a process without a terminal).
    Conflict,
    /// Anything else (an I/O error, with its message).
    Other,
}

/// Ended processes kept for [`Request::ProcessList`] and the others, at most.
pub const MAX_ENDED: usize = 64;

/// Where a background process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    /// It runs.
    Running,
    /// Its shell exited by itself.
    Exited,
    /// Its shell died by a signal (exit code 128+N).
    Killed,
    /// It was killed at its timeout (exit code 124).
    TimedOut,
}

/// What the agent knows of a background process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its id: from 1, never reused in the agent's life.
    pub id: u64,
    /// Its command line.
    pub command: String,
    /// Pid of its supervisor (the parent of its shell) inside the sandbox.
    pub pid: u32,
    /// Where it is.
    pub status: ProcessStatus,
    /// `None` while it runs; its own code, 128+N when killed by signal N, 124 at the
    /// timeout.
    pub exit_code: Option<i64>,
    /// Start, in unix milliseconds.
    pub started_at: u64,
    /// End, in unix milliseconds.
    pub ended_at: Option<u64>,
    /// Working directory.
    pub cwd: String,
    /// Whether it runs on a terminal.
    pub tty: bool,
    /// Whether its stdin still takes writes.
    pub stdin_open: bool,
    /// Bytes of stdout produced since its start.
    pub stdout_end: u64,
    /// Bytes of stderr produced since its start.
    pub stderr_end: u64,
}

/// Kept output of one stream, from an offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// Offset of the first byte of `data`.
    pub offset: u64,
    /// Bytes produced so far (`offset` + `data.len()` when nothing is left out).
    pub end: u64,
    /// The bytes (base64 in the JSON).
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// Bytes as a standard base64 string.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Agent to server: answers to [`Request`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Hello`].
    HelloAck {
        /// The hello's epoch.
        epoch: u64,
        /// [`PROTOCOL_VERSION`] of the agent.
        protocol: u32,
        /// The agent's own version (its crate version).
        agent_version: String,
    },
    /// Answer to [`Request::Ping`].
    Pong,
    /// The command runs.
    Started {
        /// Process id of its shell inside the sandbox.
        pid: u32,
    },
    /// The command ended (final).
    Exit {
        /// The shell's exit code, 128+N for a signal, 124 at the timeout.
        exit_code: i64,
        /// Whether it was killed at its timeout.
        timed_out: bool,
        /// Whether stdout went past the cap.
        stdout_truncated: bool,
        /// Whether stderr went past the cap.
        stderr_truncated: bool,
    },
    /// Answer to [`Request::Stat`] (final): `None` when the path does not exist.
    Stat {
        /// The stat.
        stat: Option<Stat>,
    },
    /// Answer to [`Request::List`] (final).
    Listing {
        /// The entries from the requested offset, sorted by name: at most
        /// [`LIST_PAGE`].
        entries: Vec<Entry>,
        /// Entries in the whole directory.
        #[serde(default)]
        total: u64,
        /// The offset of the next page (`total` after the last page).
        #[serde(default)]
        next: u64,
    },
    /// A read or archive stream begins: the stat of what is read.
    Opened {
        /// Its stat.
        stat: Stat,
    },
    /// The data stream is complete (final).
    End,
    /// The operation succeeded (final); for a write, the file's stat.
    Done {
        /// Stat of what was written, where there is one.
        stat: Option<Stat>,
    },
    /// The operation failed (final).
    Error {
        /// Why.
        kind: ErrorKind,
        /// What happened, for a person.
        message: String,
    },
    /// Answer to [`Request::ProcessStart`] and [`Request::ProcessGet`] (final).
    Process {
        /// The process.
        info: ProcessInfo,
    },
    /// Answer to [`Request::ProcessList`] (final).
    Processes {
        /// Running ones and the most recent ended ones, oldest first.
        processes: Vec<ProcessInfo>,
    },
    /// Answer to [`Request::ProcessOutput`] (final).
    ProcessOutput {
        /// Kept stdout from the (moved up) offset.
        stdout: OutputChunk,
        /// Kept stderr from the (moved up) offset.
        stderr: OutputChunk,
        /// The process's status.
        status: ProcessStatus,
        /// Its exit code, once ended.
        exit_code: Option<i64>,
    },
    /// A follow begins at these offsets (after moving them up to the oldest kept byte).
    Following {
        /// Offset of the first stdout byte sent.
        stdout_offset: u64,
        /// Offset of the first stderr byte sent.
        stderr_offset: u64,
    },
    /// The followed process ended and all its output was sent (final).
    ProcessEnded {
        /// Its final info.
        info: ProcessInfo,
    },
    /// A connection ([`Request::Connect`], [`Request::Accept`]) is open: data follows
    /// both ways.
    Connected,
    /// Answer to [`Request::Ports`] (final).
    Ports {
        /// Listening ports, by port; at most [`MAX_PORTS`].
        ports: Vec<ListeningPort>,
    },
    /// The agent consumed `bytes` of this operation's data from the server.
    Credit {
        /// Bytes consumed.
        bytes: u64,
    },
}

/// Most ports in one [`Reply::Ports`].
pub const MAX_PORTS: usize = 1000;

/// A TCP port listening inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPort {
    /// The port.
    pub port: u16,
    /// Addresses it listens on (`0.0.0.0`, `127.0.0.1`, `::`, …).
    pub addresses: Vec<String>,
    /// Pid of a process that holds the socket, when one is found.
    pub pid: Option<u32>,
    /// That process's command line (arguments joined by spaces, cut at
    /// [`MAX_INFO_COMMAND`] bytes).
    pub process: Option<String>,
}

impl Reply {
    /// Whether this reply ends its operation.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Reply::HelloAck { .. }
                | Reply::Pong
                | Reply::Exit { .. }
                | Reply::Stat { .. }
                | Reply::Listing { .. }
                | Reply::End
                | Reply::Done { .. }
                | Reply::Error { .. }
                | Reply::Process { .. }
                | Reply::Processes { .. }
                | Reply::ProcessOutput { .. }
                | Reply::ProcessEnded { .. }
                | Reply::Ports { .. }
        )
    }

    /// An error reply.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Reply::Error {
            kind,
            message: message.into(),
        }
    }
}
