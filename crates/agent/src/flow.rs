//! Flow control and the way out: credit windows and each operation's outbox.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use repobox_protocol::{Frame, Reply, Tag, WINDOW};
use tokio::sync::{Notify, mpsc};

/// The send window of one operation: how many data bytes the agent may still send
/// before the server returns credit.
#[derive(Debug)]
pub struct Window {
    available: Mutex<u64>,
    notify: Notify,
}

impl Window {
    /// A full window of [`WINDOW`] bytes.
    pub fn new() -> Self {
        Self {
            available: Mutex::new(WINDOW),
            notify: Notify::new(),
        }
    }

    /// Returns `bytes` of credit.
    pub fn add(&self, bytes: u64) {
        {
            let mut available = self.available.lock().unwrap_or_else(|e| e.into_inner());
            *available = available.saturating_add(bytes);
        }
        self.notify.notify_waiters();
    }

    fn try_take(&self, max: u64) -> u64 {
        let mut available = self.available.lock().unwrap_or_else(|e| e.into_inner());
        let taken = (*available).min(max);
        *available -= taken;
        taken
    }

    /// Waits until some credit is there and takes up to `max` bytes of it (at least 1
    /// when `max` > 0).
    pub async fn take(&self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = self.try_take(max);
            if taken > 0 {
                return taken;
            }
            notified.await;
        }
    }
}

/// Where one operation's frames go: the writer's queue, unless the operation has been
/// ended (cancelled, or a new connection said hello), after which nothing more is sent.
#[derive(Debug, Clone)]
pub struct Outbox {
    id: u64,
    tx: mpsc::Sender<Frame>,
    alive: Arc<AtomicBool>,
}

impl Outbox {
    /// An outbox for operation `id`.
    pub fn new(id: u64, tx: mpsc::Sender<Frame>, alive: Arc<AtomicBool>) -> Self {
        Self { id, tx, alive }
    }

    /// Queues a frame (dropped once the operation is dead). Returns whether it was queued.
    pub async fn send(&self, frame: Frame) -> bool {
        let Ok(permit) = self.tx.reserve().await else {
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
    pub async fn reply(&self, reply: &Reply) -> bool {
        let mut frame = Frame::control(self.id, reply);
        if frame.body.len() > repobox_protocol::MAX_FRAME {
            let error = Reply::error(
                repobox_protocol::ErrorKind::Invalid,
                format!("the reply is too large ({} bytes)", frame.body.len()),
            );
            frame = Frame::control(self.id, &error);
        }
        self.send(frame).await
    }

    /// Sends `data` as frames of `tag`, at most `MAX_CHUNK` each, within `window`.
    pub async fn send_data(&self, tag: Tag, window: &Window, mut data: Bytes) -> bool {
        while !data.is_empty() {
            let max = data.len().min(repobox_protocol::MAX_CHUNK) as u64;
            let n = window.take(max).await as usize;
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
    async fn window_takes_what_there_is_and_waits_for_credit() {
        let window = Arc::new(Window::new());
        assert_eq!(window.take(WINDOW + 10).await, WINDOW);
        let w = window.clone();
        let waiter = tokio::spawn(async move { w.take(100).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        window.add(30);
        assert_eq!(waiter.await.unwrap(), 30);
    }
}
