//! Server-Sent Events framing: bytes in, whole events out. Only what repobox sends
//! is needed (`event:` and `data:` lines; comments as keep-alives), but the parser
//! follows the format's rules so that any proxy's line endings or chunking work.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `event:` name (`message` when it has none).
    pub event: String,
    /// Its `data:` lines, joined with `\n`.
    pub data: String,
}

/// Accumulates bytes as they arrive and hands out the events they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` opening this one belongs to it.
    after_cr: bool,
}

impl SseParser {
    /// Feeds `chunk`; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            let after_cr = std::mem::take(&mut self.after_cr);
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        events.push(event);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            // A blank line dispatches the event, if it has data.
            let event = self.event.take();
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.first() == Some(&b':') {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            event: name.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let text = ": keep-alive\n\nevent: stdout\ndata: {\"data\":\"hi\\n\"}\n\n\
                    event:exit\ndata:{\"exit_code\":3}\n\n";
        let whole = SseParser::default().push(text.as_bytes());
        let expected = vec![
            event("stdout", r#"{"data":"hi\n"}"#),
            event("exit", r#"{"exit_code":3}"#),
        ];
        assert_eq!(whole, expected);
        // Byte by byte: the same events.
        let mut parser = SseParser::default();
        let piecewise: Vec<_> = text.bytes().flat_map(|b| parser.push(&[b])).collect();
        assert_eq!(piecewise, expected);
    }

    #[test]
    fn crlf_lines_multi_line_data_and_unnamed_events() {
        let mut parser = SseParser::default();
        let mut events = parser.push(b"data: a\r");
        events.extend(parser.push(b"\ndata: b\r\n\r"));
        events.extend(parser.push(b"\nid: 7\nevent: x\n\n"));
        assert_eq!(events, vec![event("message", "a\nb")]);
        // An event without data is not dispatched, and its name does not leak.
        assert_eq!(parser.push(b"data: c\n\n"), vec![event("message", "c")]);
    }
}
