//! Framing: [`Frame`]s on a byte stream, byte-stuffed between `FLAG`s, and the flow
//! control's numbers (see the crate's docs). Knows nothing of what frames carry.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

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
