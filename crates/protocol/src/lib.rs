//! The protocol between repobox and the agent inside each sandbox.
//!
//! One byte stream each way (in practice the container's attach stream: the agent's
//! stdin and stdout), carrying many operations at once. Nothing here knows of Docker:
//! any ordered byte stream carries it.
//!
//! # Frames
//! Every message is a [`Frame`]: a tag, the id of the operation it belongs to, and a
//! body. [`FrameCodec`] puts frames on the wire HDLC-style: each frame is byte-stuffed
//! (so that [`FLAG`] never appears inside it) and opened and closed by `FLAG`. Two properties
//! follow that the transport needs:
//! - **Resynchronisation.** A reader that starts in the middle of a stream (a server
//!   that re-attaches after a restart), or whose writer died in the middle of a frame,
//!   loses at most one frame: everything up to the next `FLAG` is dropped. Frames that
//!   do not parse are skipped, never fatal.
//! - **Docker's detach keys never appear.** The engine watches a container's stdin for
//!   its detach sequence (ctrl-p, ctrl-q) and holds back bytes that could begin it;
//!   [`DETACH_KEY`] is stuffed like `FLAG`, so no frame ever contains it.
//!
//! # Operations
//! The server opens an operation by sending a [`Request`] on a fresh id (ids are the
//! server's, unique within a connection; id 0 is the connection's own, for
//! [`Request::Hello`]). The agent answers with [`Reply`] frames and, for operations
//! that move bytes, [`Tag::Stdout`]/[`Tag::Stderr`]/[`Tag::Data`] frames on the same
//! id. Every operation ends with exactly one final reply (see [`Reply::is_final`]).
//!
//! # Flow control
//! Each direction of each byte stream has a window of [`WINDOW`] bytes: a sender may
//! have at most that many data bytes unacknowledged, and the receiver returns credit
//! ([`Request::Credit`] / [`Reply::Credit`]) as it consumes them. So one slow consumer
//! never stalls the shared stream, a 1 GB transfer never grows either side's memory
//! beyond a window, and small operations interleave with large ones: data frames are
//! at most [`MAX_CHUNK`] bytes.
//!
//! Agent to server, every data frame costs its body's length plus [`FRAME_COST`] of the
//! window (and credit is returned the same way), so that the number of frames waiting on
//! the server's side is bounded as well as their bytes, however small the agent makes
//! them. The server checks this accounting on every frame it receives: the agent is
//! input from the sandbox, and a peer that goes past its window is cut off.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// Version of this protocol; the agent reports it in [`Reply::HelloAck`] and the server
/// refuses an agent that speaks another.
pub const PROTOCOL_VERSION: u32 = 2;

/// Ends every frame; never appears inside one.
pub const FLAG: u8 = 0x7e;
/// Escapes a stuffed byte: `ESCAPE, byte ^ 0x20`.
pub const ESCAPE: u8 = 0x7d;
/// Ctrl-P, the first byte of Docker's detach sequence; stuffed so it never appears.
pub const DETACH_KEY: u8 = 0x10;
/// The detach sequence to ask the engine for explicitly (its default), whose first byte
/// never appears on the wire.
pub const DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Largest data chunk in one frame.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Flow-control window of each byte stream, each direction.
pub const WINDOW: u64 = 1024 * 1024;
/// Largest frame body accepted (a directory listing is one frame); a longer frame is
/// dropped whole.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// What a data frame from the agent costs of its window beyond its body (see the
/// module docs): a window holds at most `WINDOW / FRAME_COST` frames.
pub const FRAME_COST: u64 = 256;
/// Most entries in one [`Reply::Listing`]; a larger directory is listed in pages.
pub const LIST_PAGE: u32 = 1000;
/// Most bytes of entries (as JSON) in one [`Reply::Listing`]: a page ends early when
/// its names and link targets are long.
pub const LIST_PAGE_BYTES: usize = 1024 * 1024;
/// Most bytes of a process's command in a [`ProcessInfo`] (longer ones are cut).
pub const MAX_INFO_COMMAND: usize = 4096;

/// Window cost of a data frame of `len` body bytes, agent to server.
pub fn frame_cost(len: usize) -> u64 {
    len as u64 + FRAME_COST
}

/// What a frame's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// A JSON [`Request`] (server to agent) or [`Reply`] (agent to server).
    Control = 0,
    /// Bytes of a stream that is not a command's output: stdin, a file, a tar.
    Data = 1,
    /// A command's standard output.
    Stdout = 2,
    /// A command's standard error.
    Stderr = 3,
}

impl Tag {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Tag::Control,
            1 => Tag::Data,
            2 => Tag::Stdout,
            3 => Tag::Stderr,
            _ => return None,
        })
    }
}

/// One message on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the body is.
    pub tag: Tag,
    /// The operation it belongs to.
    pub id: u64,
    /// The body: JSON for [`Tag::Control`], raw bytes otherwise.
    pub body: Bytes,
}

/// Bytes before the body: tag, id and the body's length (which tells a torn frame from
/// a whole one).
const HEADER: usize = 1 + 8 + 4;

impl Frame {
    /// A control frame carrying `message` as JSON.
    pub fn control<T: Serialize>(id: u64, message: &T) -> Self {
        // Serializing our own enums to a Vec cannot fail.
        let body = serde_json::to_vec(message).unwrap_or_default();
        Self {
            tag: Tag::Control,
            id,
            body: body.into(),
        }
    }

    /// A data frame.
    pub fn data(tag: Tag, id: u64, body: Bytes) -> Self {
        Self { tag, id, body }
    }

    /// The control message in this frame.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Encodes and decodes [`Frame`]s (see the module docs for the format).
#[derive(Debug, Default)]
pub struct FrameCodec {
    /// Whether a `FLAG` has been seen: until then input is dropped, because the stream
    /// may have been joined in the middle of a frame.
    synced: bool,
    /// Where the scan for the next `FLAG` resumes in the buffer.
    scanned: usize,
    /// Whether the frame being read has grown past [`MAX_FRAME`] and is being skipped.
    oversized: bool,
    /// Frames dropped because they did not parse (for diagnostics).
    pub dropped: u64,
    /// Strict mode (the server's reader): the largest body accepted; a longer frame, or
    /// one that does not parse once synchronised, is an error that ends the stream
    /// instead of being skipped, and the read buffer never holds more than one frame.
    strict: Option<usize>,
}

impl FrameCodec {
    /// A codec for one connection (reading may start in the middle of a frame).
    pub fn new() -> Self {
        Self::default()
    }

    /// A strict codec for reading from a peer that is not trusted: frames of at most
    /// `max_body` bytes; an oversized or malformed frame after the first `FLAG` is an
    /// [`std::io::ErrorKind::InvalidData`] error (see [`FrameCodec::strict`]'s field).
    pub fn strict(max_body: usize) -> Self {
        Self {
            strict: Some(max_body),
            ..Self::default()
        }
    }
}

fn violation(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

fn stuffed(byte: u8) -> bool {
    matches!(byte, FLAG | ESCAPE | DETACH_KEY)
}

fn put_stuffed(dst: &mut BytesMut, mut src: &[u8]) {
    while let Some(at) = memchr::memchr3(FLAG, ESCAPE, DETACH_KEY, src) {
        dst.put_slice(&src[..at]);
        dst.put_u8(ESCAPE);
        dst.put_u8(src[at] ^ 0x20);
        src = &src[at + 1..];
    }
    dst.put_slice(src);
}

/// Undoes the stuffing of one frame's bytes; `None` when they are malformed.
fn unstuff(src: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = memchr::memchr(ESCAPE, rest) {
        out.extend_from_slice(&rest[..at]);
        let escaped = *rest.get(at + 1)? ^ 0x20;
        if !stuffed(escaped) {
            return None;
        }
        out.push(escaped);
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// A frame from its unstuffed bytes (taken without a copy).
fn parse_frame(mut raw: Bytes) -> Option<Frame> {
    if raw.len() < HEADER {
        return None;
    }
    let tag = Tag::from_byte(raw[0])?;
    let mut fields = &raw[1..HEADER];
    let id = fields.get_u64();
    let len = fields.get_u32() as usize;
    if len != raw.len() - HEADER {
        return None;
    }
    raw.advance(HEADER);
    Some(Frame { tag, id, body: raw })
}

impl Encoder<Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> std::io::Result<()> {
        let mut header = [0u8; HEADER];
        header[0] = frame.tag as u8;
        header[1..9].copy_from_slice(&frame.id.to_be_bytes());
        let len = u32::try_from(frame.body.len())
            .ok()
            .filter(|&len| len as usize <= MAX_FRAME)
            .ok_or_else(|| std::io::Error::other("frame body too large"))?;
        header[9..].copy_from_slice(&len.to_be_bytes());
        // Room for the usual case (little stuffing); grows if needed.
        dst.reserve(HEADER + frame.body.len() + frame.body.len() / 64 + 4);
        // A FLAG on both sides: a reader that joins between two frames (a server that
        // re-attaches to a long-running agent) must see the next frame's start, and a
        // writer's first FLAG ends whatever torn frame an earlier writer left.
        dst.put_u8(FLAG);
        put_stuffed(dst, &header);
        put_stuffed(dst, &frame.body);
        dst.put_u8(FLAG);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<Frame>> {
        if let Some(max_body) = self.strict {
            return self.decode_strict(src, max_body);
        }
        loop {
            let Some(offset) = memchr::memchr(FLAG, &src[self.scanned..]) else {
                self.scanned = src.len();
                // A stuffed frame is at most about twice its body.
                if self.scanned > 2 * (MAX_FRAME + HEADER) + 2 || (!self.synced && !src.is_empty())
                {
                    // Nothing here can become a frame: drop it and keep reading.
                    self.oversized |= self.synced;
                    src.clear();
                    self.scanned = 0;
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            let raw = src.split_to(end + 1);
            self.scanned = 0;
            let was_synced = std::mem::replace(&mut self.synced, true);
            let was_oversized = std::mem::replace(&mut self.oversized, false);
            if !was_synced || was_oversized || end == 0 {
                // The tail of a frame joined in the middle, the end of a skipped frame,
                // or an empty frame.
                if end > 0 || was_oversized {
                    self.dropped += 1;
                }
                continue;
            }
            let mut raw = raw.freeze();
            raw.truncate(end);
            // Most frames (text, small messages) have nothing stuffed: no copy then.
            let unstuffed = if memchr::memchr(ESCAPE, &raw).is_none() {
                Some(raw)
            } else {
                unstuff(&raw).map(Bytes::from)
            };
            match unstuffed.and_then(parse_frame) {
                Some(frame) => return Ok(Some(frame)),
                None => self.dropped += 1,
            }
        }
    }
}

impl FrameCodec {
    /// [`Decoder::decode`] in strict mode: bytes before the first `FLAG` are dropped
    /// (the stream may be joined in the middle), everything after it must be whole,
    /// well-formed frames of at most `max_body` bytes. Bodies are copied out of the
    /// read buffer, so a small frame kept by a slow consumer never pins a large buffer.
    fn decode_strict(
        &mut self,
        src: &mut BytesMut,
        max_body: usize,
    ) -> std::io::Result<Option<Frame>> {
        // A stuffed frame is at most twice its bytes, plus its two flags.
        let max_stuffed = 2 * (max_body + HEADER) + 2;
        loop {
            let Some(offset) = memchr::memchr(FLAG, &src[self.scanned..]) else {
                self.scanned = src.len();
                if !self.synced {
                    src.clear();
                    self.scanned = 0;
                } else if self.scanned > max_stuffed {
                    return Err(violation(format!("a frame longer than {max_body} bytes")));
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            let raw = src.split_to(end + 1);
            self.scanned = 0;
            if !std::mem::replace(&mut self.synced, true) || end == 0 {
                continue;
            }
            if end > max_stuffed {
                return Err(violation(format!("a frame longer than {max_body} bytes")));
            }
            let raw = &raw[..end];
            let unstuffed = if memchr::memchr(ESCAPE, raw).is_none() {
                Some(Bytes::copy_from_slice(raw))
            } else {
                unstuff(raw).map(Bytes::from)
            };
            let frame = unstuffed
                .and_then(parse_frame)
                .ok_or_else(|| violation("a malformed frame"))?;
            if frame.body.len() > max_body {
                return Err(violation(format!(
                    "a frame of {} bytes (at most {max_body})",
                    frame.body.len()
                )));
            }
            return Ok(Some(frame));
        }
    }
}

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

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
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
    /// The agent consumed `bytes` of this operation's data from the server.
    Credit {
        /// Bytes consumed.
        bytes: u64,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for frame in frames {
            codec.encode(frame.clone(), &mut wire).unwrap();
        }
        wire
    }

    fn decode_all(codec: &mut FrameCodec, wire: &mut BytesMut) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(wire).unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn every_byte() -> Bytes {
        (0..=255u8).cycle().take(3000).collect::<Vec<_>>().into()
    }

    #[test]
    fn frames_round_trip_and_never_contain_flag_or_detach_key() {
        let frames = vec![
            Frame::control(0, &Request::Hello { epoch: 7 }),
            Frame::data(Tag::Stdout, u64::MAX, every_byte()),
            Frame::data(Tag::Data, 0x7e7d10, Bytes::new()),
        ];
        let mut wire = encode_all(&frames);
        assert!(!wire.contains(&DETACH_KEY));
        // A FLAG opening and one closing each frame.
        assert_eq!(
            wire.iter().filter(|&&b| b == FLAG).count(),
            2 * frames.len()
        );
        let mut codec = FrameCodec::new();
        assert_eq!(decode_all(&mut codec, &mut wire.clone()), frames);
        // Byte by byte, the same.
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.split().iter() {
            buf.put_u8(*byte);
            got.extend(decode_all(&mut codec, &mut buf));
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn joining_mid_frame_loses_only_that_frame() {
        let frames = vec![
            Frame::data(Tag::Data, 1, every_byte()),
            Frame::control(2, &Reply::Pong),
        ];
        let wire = encode_all(&frames);
        let mut middle = BytesMut::from(&wire[100..]);
        let mut codec = FrameCodec::new();
        assert_eq!(decode_all(&mut codec, &mut middle), vec![frames[1].clone()]);
    }

    #[test]
    fn a_torn_frame_followed_by_a_new_writer_is_dropped() {
        let torn = encode_all(&[Frame::data(Tag::Data, 1, every_byte())]);
        let fresh = encode_all(&[Frame::control(0, &Request::Hello { epoch: 9 })]);
        let mut wire = BytesMut::from(&torn[..torn.len() / 2]);
        // The new writer's opening FLAG ends the torn frame.
        wire.extend_from_slice(&fresh);
        let mut codec = FrameCodec::new();
        let got = decode_all(&mut codec, &mut wire);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].parse::<Request>().unwrap(),
            Request::Hello { epoch: 9 }
        );
        assert_eq!(codec.dropped, 1);
    }

    #[test]
    fn a_reader_joining_between_frames_gets_the_next_one() {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        codec
            .encode(Frame::control(1, &Reply::Pong), &mut wire)
            .unwrap();
        // A second reader starts after the first frame was read by someone else.
        let mut later = BytesMut::new();
        codec
            .encode(Frame::control(0, &Reply::End), &mut later)
            .unwrap();
        let mut reader = FrameCodec::new();
        assert_eq!(
            decode_all(&mut reader, &mut later),
            vec![Frame::control(0, &Reply::End)]
        );
    }

    #[test]
    fn garbage_is_skipped() {
        let mut wire = BytesMut::from(&[FLAG, 9, 9, FLAG, ESCAPE, 0x00, FLAG, 1, FLAG][..]);
        wire.extend_from_slice(&encode_all(&[Frame::control(3, &Reply::End)]));
        let mut codec = FrameCodec::new();
        let got = decode_all(&mut codec, &mut wire);
        assert_eq!(got, vec![Frame::control(3, &Reply::End)]);
        assert_eq!(codec.dropped, 3);
    }

    #[test]
    fn messages_are_tagged_json() {
        let json = serde_json::to_value(Request::Stat {
            path: "/x".into(),
            follow: true,
        })
        .unwrap();
        assert_eq!(json["op"], "stat");
        let reply: Reply =
            serde_json::from_str(r#"{"reply":"error","kind":"not_found","message":"m"}"#).unwrap();
        assert!(reply.is_final());
        assert!(!Reply::Credit { bytes: 1 }.is_final());
    }
    #[test]
    fn process_messages_round_trip() {
        let info = ProcessInfo {
            id: 3,
            command: "sleep 1".into(),
            pid: 42,
            status: ProcessStatus::TimedOut,
            exit_code: Some(124),
            started_at: 1,
            ended_at: Some(2),
            cwd: "/".into(),
            tty: true,
            stdin_open: false,
            stdout_end: 10,
            stderr_end: 0,
        };
        let requests = [
            Request::ProcessStart {
                command: "c".into(),
                cwd: "/".into(),
                env: vec![("A".into(), "b".into())],
                stdin_open: true,
                tty: true,
                cols: Some(100),
                rows: None,
                timeout_ms: Some(5),
                output_bytes: 1024,
                max_running: Some(2),
            },
            Request::ProcessList,
            Request::ProcessGet { id: 1 },
            Request::ProcessOutput {
                id: 1,
                stdout_offset: 2,
                stderr_offset: 3,
                max_bytes: 4,
            },
            Request::ProcessFollow {
                id: 1,
                stdout_offset: 0,
                stderr_offset: 9,
            },
            Request::ProcessStdin { id: 1, close: true },
            Request::ProcessSignal { id: 1, signal: 15 },
            Request::ProcessResize {
                id: 1,
                cols: 80,
                rows: 24,
            },
            Request::ProcessRemove { id: 1 },
        ];
        for request in requests {
            let json = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        }
        let replies = [
            Reply::Process { info: info.clone() },
            Reply::Processes {
                processes: vec![info.clone()],
            },
            Reply::ProcessOutput {
                stdout: OutputChunk {
                    offset: 5,
                    end: 261,
                    data: (0..=255u8).collect(),
                },
                stderr: OutputChunk {
                    offset: 0,
                    end: 0,
                    data: Vec::new(),
                },
                status: ProcessStatus::Running,
                exit_code: None,
            },
            Reply::Following {
                stdout_offset: 1,
                stderr_offset: 2,
            },
            Reply::ProcessEnded { info },
        ];
        for reply in replies {
            let json = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), reply);
        }
        assert!(
            !Reply::Following {
                stdout_offset: 0,
                stderr_offset: 0
            }
            .is_final()
        );
        let json = serde_json::to_value(Reply::ProcessOutput {
            stdout: OutputChunk {
                offset: 0,
                end: 2,
                data: b"hi".to_vec(),
            },
            stderr: OutputChunk {
                offset: 0,
                end: 0,
                data: Vec::new(),
            },
            status: ProcessStatus::Exited,
            exit_code: Some(0),
        })
        .unwrap();
        assert_eq!(json["stdout"]["data"], "aGk=");
        assert_eq!(json["status"], "exited");
        let kind: ErrorKind = serde_json::from_str(r#""conflict""#).unwrap();
        assert_eq!(kind, ErrorKind::Conflict);
    }
}
