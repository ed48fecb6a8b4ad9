//! Client connections: the accept loop, its cap and its timeouts.
//!
//! `axum::serve` accepts every connection and never times out one that sends half a
//! request, so a few thousand idle sockets (a slow-loris) exhaust the process's file
//! descriptors and lock everyone out. Here:
//! - each connection is served by hyper with a header read timeout
//!   (`HEADER_READ_TIMEOUT_SECS`), which also bounds a kept-alive connection's idle time;
//! - at most `MAX_CONNECTIONS` are served at once, lowered at start-up to leave room
//!   below the open-file limit, so `accept` never fails for want of descriptors;
//! - at the cap, a new connection closes the oldest connection that has no request in
//!   progress (idle, or still sending its headers): a client holding many half-sent
//!   requests only ever holds the newest slots and cannot keep another client out.
//!   When every connection is busy, new ones wait in the listen queue.
//!
//! A connection upgraded to a WebSocket leaves the cap when hyper hands its socket
//! over (a terminal needs a key, a sandbox and a process slot, each bounded).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::Locked as _;
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Descriptors kept free below the open-file limit for everything that is not a
/// client connection (the engine's sockets, git, files, logs).
const RESERVED_FDS: usize = 128;
/// How long a new connection waits for an evicted one to close before another is
/// evicted.
const EVICTION_WAIT: Duration = Duration::from_millis(200);
/// A connection that has not had an answer is not evicted before it is this old: a
/// client sends its request as soon as it connects, and a busy server may not have
/// read it yet.
const FRESH: Duration = Duration::from_millis(500);
/// How long the accept loop waits before looking again when every connection is
/// busy or fresh.
const RECHECK: Duration = Duration::from_millis(50);

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Bound on receiving a request's headers.
    pub header_read_timeout: Duration,
}

impl Limits {
    /// `max` lowered, with a warning, to fit under the process's open-file limit.
    pub fn fitted(max: usize, header_read_timeout: Duration) -> Self {
        let max_connections = match open_file_limit() {
            Some(limit) if max + RESERVED_FDS > limit => {
                let fitted = limit.saturating_sub(RESERVED_FDS).max(16);
                tracing::warn!(
                    max_connections = max,
                    open_file_limit = limit,
                    fitted,
                    "MAX_CONNECTIONS does not fit under the open-file limit (ulimit -n); serving at most {fitted} connections"
                );
                fitted
            }
            _ => max,
        };
        Self {
            max_connections,
            header_read_timeout,
        }
    }
}

/// The soft open-file limit of this process (`/proc/self/limits`; no `unsafe`
/// `getrlimit`).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&text)
}

fn parse_open_file_limit(limits: &str) -> Option<usize> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One served connection, as the eviction sees it.
struct Slot {
    /// Requests in progress (from headers received to the end of the response).
    busy: AtomicUsize,
    /// Requests answered: a kept-alive client's connection has some, a half-sent
    /// request's (a slow-loris) none.
    served: AtomicUsize,
    /// When it was accepted.
    born: std::time::Instant,
    /// Closes the connection (chosen while it had no request in progress).
    evict: CancellationToken,
}

/// Marks a connection busy while it lives: from a request's headers to the end of its
/// response's body.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Self(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection [`Busy`].
struct Guarded {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Table {
    next: Mutex<(u64, BTreeMap<u64, Arc<Slot>>)>,
}

impl Table {
    fn insert(&self) -> (u64, Arc<Slot>) {
        self.insert_born(std::time::Instant::now())
    }

    /// [`Self::insert`] for a connection accepted at `born`.
    fn insert_born(&self, born: std::time::Instant) -> (u64, Arc<Slot>) {
        let mut guard = self.next.locked();
        let id = guard.0;
        guard.0 += 1;
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            born,
            evict: CancellationToken::new(),
        });
        guard.1.insert(id, slot.clone());
        (id, slot)
    }

    fn remove(&self, id: u64) {
        self.next.locked().1.remove(&id);
    }

    /// Asks the oldest idle connection not yet asked to close; false when there is none.
    /// Connections that never got an answer (half-sent requests) go first: a client
    /// whose kept-alive connection is idle between its requests keeps it while any
    /// of those are left.
    fn evict_oldest_idle(&self) -> bool {
        let guard = self.next.locked();
        let idle = |slot: &&Arc<Slot>| {
            slot.busy.load(Ordering::Acquire) == 0 && !slot.evict.is_cancelled()
        };
        let victim = guard
            .1
            .values()
            .filter(idle)
            .find(|slot| slot.served.load(Ordering::Acquire) == 0 && slot.born.elapsed() >= FRESH)
            .or_else(|| {
                guard
                    .1
                    .values()
                    .filter(idle)
                    .find(|slot| slot.served.load(Ordering::Acquire) > 0)
            });
        match victim {
            Some(slot) => {
                slot.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then
/// lets the connections finish their requests and returns when they have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let table = Arc::new(Table::default());
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors despite the cap (other work of the process):
                    // wait rather than spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let permit = loop {
            if let Ok(permit) = permits.clone().try_acquire_owned() {
                break Some(permit);
            }
            if !table.evict_oldest_idle() {
                // Every connection is busy or just opened: wait for one to end, and
                // look again shortly (a fresh one may turn out to be a half-sent
                // request).
                tokio::select! {
                    permit = permits.clone().acquire_owned() => break permit.ok(),
                    () = &mut shutdown => break None,
                    () = tokio::time::sleep(RECHECK) => continue,
                }
            }
            if let Ok(Ok(permit)) =
                tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned()).await
            {
                break Some(permit);
            }
        };
        let Some(permit) = permit else { break };
        let _ = stream.set_nodelay(true);
        let (id, slot) = table.insert();
        let service = {
            let slot = slot.clone();
            let router = router.clone();
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let router = router.clone();
                let busy = Busy::new(slot.clone());
                let slot = slot.clone();
                async move {
                    let response = router.oneshot(request.map(Body::new)).await;
                    let response = response.unwrap_or_else(|never| match never {});
                    slot.served.fetch_add(1, Ordering::AcqRel);
                    // Busy until the body is sent: a streamed answer is not idle.
                    Ok::<_, Infallible>(
                        response.map(|body| Body::new(Guarded { body, _busy: busy })),
                    )
                }
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let table = table.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break,
                    // Evicted: only an idle connection is, so nothing is cut short (a
                    // graceful shutdown would wait for the headers of a half-sent
                    // request, up to their timeout).
                    () = slot.evict.cancelled() => break,
                    () = stop.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            table.remove(id);
            drop(permit);
        });
    }
    drop(listener);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(text), Some(1024));
        assert_eq!(parse_open_file_limit("nothing"), None);
    }

    #[test]
    fn eviction_takes_the_oldest_idle_connection_once() {
        let table = Table::default();
        let (_, busy) = table.insert_born(std::time::Instant::now() - FRESH);
        let (_, idle_old) = table.insert_born(std::time::Instant::now() - FRESH);
        let (_, idle_new) = table.insert_born(std::time::Instant::now() - FRESH);
        busy.busy.store(1, Ordering::Release);
        assert!(table.evict_oldest_idle());
        assert!(idle_old.evict.is_cancelled());
        assert!(!busy.evict.is_cancelled() && !idle_new.evict.is_cancelled());
        assert!(table.evict_oldest_idle());
        assert!(idle_new.evict.is_cancelled());
        assert!(!table.evict_oldest_idle());
    }

    #[test]
    fn a_connection_that_was_answered_goes_after_those_never_answered() {
        let table = Table::default();
        let (_, kept_alive) = table.insert_born(std::time::Instant::now() - FRESH);
        let (_, half_sent) = table.insert_born(std::time::Instant::now() - FRESH);
        kept_alive.served.store(3, Ordering::Release);
        assert!(table.evict_oldest_idle());
        assert!(half_sent.evict.is_cancelled() && !kept_alive.evict.is_cancelled());
        assert!(table.evict_oldest_idle());
        assert!(kept_alive.evict.is_cancelled());
        // A connection just opened, not yet answered, is left to send its request.
        let (_, fresh) = table.insert();
        assert!(!table.evict_oldest_idle());
        assert!(!fresh.evict.is_cancelled());
    }
}
