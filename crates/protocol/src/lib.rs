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

mod frame;
mod message;

pub use frame::*;
pub use message::*;

/// Version of this protocol; the agent reports it in [`Reply::HelloAck`] and the server
/// refuses an agent that speaks another.
pub const PROTOCOL_VERSION: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

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
