//! Bridges between blocking work (file I/O on a blocking thread) and the async side
//! that owns the wire: a reader over the data the server sends, a writer whose chunks
//! go out as data frames within the credit window.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use repobox_protocol::{MAX_CHUNK, Reply, Tag};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Incoming;
use crate::error::{OpError, OpResult};
use crate::flow::{Outbox, Window};

/// Reads, on a blocking thread, the data frames of an operation up to its `Eof`; reports
/// each chunk consumed so that its credit goes back to the server. Fails if the
/// operation ends (cancel) before `Eof`.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: mpsc::UnboundedReceiver<Incoming>,
    current: Bytes,
    current_len: u64,
    consumed: mpsc::UnboundedSender<u64>,
    eof: bool,
}

impl ChannelReader {
    /// A reader over `rx`, reporting consumed bytes on `consumed`.
    pub(crate) fn new(
        rx: mpsc::UnboundedReceiver<Incoming>,
        consumed: mpsc::UnboundedSender<u64>,
    ) -> Self {
        Self {
            rx,
            current: Bytes::new(),
            current_len: 0,
            consumed,
            eof: false,
        }
    }

    /// Reads and drops everything up to `Eof`.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current[..n]);
                self.current.advance(n);
                if self.current.is_empty() {
                    let _ = self.consumed.send(std::mem::take(&mut self.current_len));
                }
                return Ok(n);
            }
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Incoming::Data(data)) => {
                    self.current_len = data.len() as u64;
                    self.current = data;
                }
                Some(Incoming::Eof) => self.eof = true,
                None => return Err(io::Error::other("the operation was cancelled")),
            }
        }
    }
}

/// A writer, on a blocking thread, whose bytes go out in chunks of [`MAX_CHUNK`]; it
/// blocks while the async side is a few chunks behind, and fails once the operation is
/// gone.
#[derive(Debug)]
pub(crate) struct ChunkSink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkSink {
    /// A sink and the receiver of its chunks.
    pub(crate) fn new() -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(8);
        (
            Self {
                tx,
                buf: Vec::with_capacity(MAX_CHUNK),
            },
            rx,
        )
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_CHUNK));
        self.tx
            .blocking_send(chunk.into())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the operation was cancelled"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// Sends what `producer` writes into its sink as data frames, then the final reply:
/// [`Reply::End`], or the producer's error.
pub(crate) async fn send_produced(
    out: &Outbox,
    window: &Window,
    mut chunks: mpsc::Receiver<Bytes>,
    producer: JoinHandle<OpResult<()>>,
) {
    while let Some(chunk) = chunks.recv().await {
        if !out.send_data(Tag::Data, window, chunk).await {
            return;
        }
    }
    let reply = match producer.await {
        Ok(Ok(())) => Reply::End,
        Ok(Err(error)) => error.reply(),
        Err(error) => OpError::new(repobox_protocol::ErrorKind::Other, error.to_string()).reply(),
    };
    out.reply(&reply).await;
}

/// Runs `consumer` on a blocking thread over the operation's incoming data, returning
/// credit as it consumes it, then sends its final reply.
pub(crate) async fn consume<F>(
    out: Outbox,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    consumer: F,
) where
    F: FnOnce(ChannelReader) -> OpResult<Reply> + Send + 'static,
{
    let (consumed_tx, mut consumed_rx) = mpsc::unbounded_channel();
    let reader = ChannelReader::new(incoming, consumed_tx);
    let mut worker = tokio::task::spawn_blocking(move || consumer(reader));
    let out = Arc::new(out);
    loop {
        tokio::select! {
            biased;
            Some(bytes) = consumed_rx.recv() => {
                out.reply(&Reply::Credit { bytes }).await;
            }
            result = &mut worker => {
                let reply = match result {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(error)) => error.reply(),
                    Err(error) => OpError::new(repobox_protocol::ErrorKind::Other, error.to_string()).reply(),
                };
                out.reply(&reply).await;
                return;
            }
        }
    }
}
