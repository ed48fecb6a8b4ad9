//! Flow control and the way out: credit windows and each operation's outbox.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use repobox_protocol::{FRAME_COST, Frame, Reply, Tag, WINDOW};
use tokio::sync::{Notify, mpsc};

/// The send window of one operation: how many data bytes the agent may still send
/// before the server returns credit.
#[derive(Debug)]
pub(crate) struct Window {
    available: Mutex<u64>,
    notify: Notify,
}

impl Window {
    /// A full window of [`WINDOW`] bytes.
    pub(crate) fn new() -> Self {
        Self {
            available: Mutex::new(WINDOW),
            notify: Notify::new(),
        }
    }

    /// Returns `bytes` of credit.
    pub(crate) fn add(&self, bytes: u64) {
        {
            let mut available = self.available.lock().unwrap_or_else(|e| e.into_inner());
            *available = available.saturating_add(bytes);
        }
        self.notify.notify_waiters();
    }

    /// Waits until a data frame fits and takes its cost: returns how many of `max` body
    /// bytes (at least 1) the frame may carry. A frame costs its body plus
    /// [`FRAME_COST`], as the server counts it.
    pub(crate) async fn take_frame(&self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut available = self.available.lock().unwrap_or_else(|e| e.into_inner());
                if *available > FRAME_COST {
                    let body = (*available - FRAME_COST).min(max);
                    *available -= body + FRAME_COST;
                    return body;
                }
            }
            notified.await;
        }
    }
}

/// The writer's two queues. Control frames of operations that have sent no data (the
/// answer to a small command, a stat, a credit) go ahead of bulk data, so a large
/// stream never delays a small operation by more than the frame being written; an
/// operation's control frames after its first data go behind that data, in order.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    /// Ahead of everything.
    pub urgent: mpsc::Sender<Frame>,
    /// In order.
    pub bulk: mpsc::Sender<Frame>,
}

/// Where one operation's frames go: the writer's queues, unless the operation has been
/// ended (cancelled, or a new connection said hello), after which nothing more is sent.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    id: u64,
    writer: Writer,
    alive: Arc<AtomicBool>,
    /// Data has been queued: later frames must follow it.
    ordered: Arc<AtomicBool>,
}

impl Outbox {
    /// An outbox for operation `id`.
    pub(crate) fn new(id: u64, writer: Writer, alive: Arc<AtomicBool>) -> Self {
        Self {
            id,
            writer,
            alive,
            ordered: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Queues a frame (dropped once the operation is dead). Returns whether it was queued.
    pub(crate) async fn send(&self, frame: Frame) -> bool {
        self.queue(frame, false).await
    }

    async fn queue(&self, frame: Frame, is_credit: bool) -> bool {
        let queue = if frame.tag != repobox_protocol::Tag::Control {
            self.ordered.store(true, Ordering::Release);
            &self.writer.bulk
        } else if is_credit || !self.ordered.load(Ordering::Acquire) {
            &self.writer.urgent
        } else {
            &self.writer.bulk
        };
        let Ok(permit) = queue.reserve().await else {
            return false;
        };
        // Checked after the wait and before queuing, with no await in between: once the
        // dispatcher (on this same thread) marks the operation dead, nothing of it is queued.
        if !self.alive.load(Ordering::Acquire) {
            return false;
        }
        permit.send(frame);
        true
    }

    /// Queues a control reply (one too large for a frame, such as the listing of a
    /// gigantic directory, becomes an error).
    pub(crate) async fn reply(&self, reply: &Reply) -> bool {
        let is_credit = matches!(reply, Reply::Credit { .. });
        let mut frame = Frame::control(self.id, reply);
        if frame.body.len() > repobox_protocol::MAX_FRAME {
            let error = Reply::error(
                repobox_protocol::ErrorKind::Invalid,
                format!("the reply is too large ({} bytes)", frame.body.len()),
            );
            frame = Frame::control(self.id, &error);
        }
        self.queue(frame, is_credit).await
    }

    /// Sends `data` as frames of `tag`, at most `MAX_CHUNK` each, within `window`.
    pub(crate) async fn send_data(&self, tag: Tag, window: &Window, mut data: Bytes) -> bool {
        while !data.is_empty() {
            let max = data.len().min(repobox_protocol::MAX_CHUNK) as u64;
            let n = window.take_frame(max).await as usize;
            if !self.send(Frame::data(tag, self.id, data.split_to(n))).await {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_costs_its_body_and_frame_cost_and_waits_for_credit() {
        let window = Arc::new(Window::new());
        assert_eq!(window.take_frame(WINDOW + 10).await, WINDOW - FRAME_COST);
        let w = window.clone();
        let waiter = tokio::spawn(async move { w.take_frame(100).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // Credit for no more than the frame's own cost is not enough for a byte.
        window.add(FRAME_COST);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        window.add(30);
        assert_eq!(waiter.await.unwrap(), 30);
    }
}
