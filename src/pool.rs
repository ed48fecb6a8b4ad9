//! The warm pool: started sandbox containers, each with its agent answering, waiting
//! for a create to claim them, so that a create starts no container.
//!
//! There is one lane per pooled image (`DOCKER_BASE_IMAGE` and `POOL_IMAGES`), each
//! kept at `POOL_SIZE` members by [`run`], which refills a lane as soon as a claim
//! takes from it. A pool key is everything the engine fixes when it creates a
//! container and a request can ask for: the image, the network (only `none` is
//! pooled), the disk limit; the runtime is the server's. A request with another key
//! takes the ordinary path. Members count against their own bound (`POOL_SIZE` per
//! lane), never against `MAX_CONTAINERS`, and have no record: a container becomes a
//! sandbox when its record is written, as on the ordinary path.
//!
//! Members are made only after the first reconciliation, which removes the members
//! a previous run left (a claim may have been under way on any of them), so a member
//! is never one that some earlier server touched. A member whose agent connection
//! closed is never handed out: it is removed and replaced.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::AgentClient;
use crate::backend::{Limits, Network};
use crate::id::EngineId;
use crate::metrics::Metrics;
use crate::sync::Locked as _;

/// Members made at once (each is a container create and start: the engine's work,
/// on a small machine mostly CPU).
const MAX_FILLING: usize = 2;
/// Tries at removing a dead member (two seconds apart: the engine may be restarting).
const DEAD_MEMBER_REMOVE_TRIES: usize = 15;
/// How often members are checked for a closed agent connection.
const CHECK_PERIOD: Duration = Duration::from_secs(2);
/// Longest pause before a lane whose members cannot be made is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bound on waiting for members being made when the server stops.
const STOP_BOUND: Duration = Duration::from_secs(15);

/// A started container waiting to become a sandbox.
pub struct Member {
    /// Its engine id.
    pub engine_id: EngineId,
    /// Its agent, which answered its hello.
    pub agent: Arc<AgentClient>,
    /// The limits it was made with.
    pub limits: Limits,
}

#[derive(Default)]
struct Lane {
    image: String,
    ready: VecDeque<Member>,
    filling: usize,
    failures: u32,
    retry_at: Option<Instant>,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A member was handed out.
    Hit,
    /// The request's key is pooled but its lane was empty.
    Miss,
    /// The request's key is not pooled (another image, network or disk limit).
    Unpooled,
}

impl Claim {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Unpooled => "unpooled",
        }
    }
}

/// The pool's members and what is being made.
pub struct Pool {
    size: usize,
    lanes: Mutex<Vec<Lane>>,
    /// Members to remove: found dead, or left when the server stops.
    dead: Mutex<Vec<EngineId>>,
    /// The disk limit of every member, settled when the pool starts filling.
    disk_mb: OnceLock<Option<u64>>,
    /// The limits every member is made with.
    defaults: Limits,
    /// Set once the engine could not change a member's limits (`docker update` is
    /// missing from gVisor's runtime, for one): from then on only creates that ask
    /// for the default limits are served from the pool.
    fixed_limits: std::sync::atomic::AtomicBool,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl Pool {
    /// A pool of `size` members with `defaults` for each of `images` (duplicates
    /// count once).
    pub fn new(size: usize, images: &[String], defaults: Limits, metrics: Arc<Metrics>) -> Self {
        let mut lanes: Vec<Lane> = Vec::new();
        if size > 0 {
            for image in images {
                if !lanes.iter().any(|lane| lane.image == *image) {
                    lanes.push(Lane {
                        image: image.clone(),
                        ..Lane::default()
                    });
                }
            }
        }
        Self {
            size,
            lanes: Mutex::new(lanes),
            dead: Mutex::new(Vec::new()),
            disk_mb: OnceLock::new(),
            defaults,
            fixed_limits: std::sync::atomic::AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Members per lane (`POOL_SIZE`).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The pooled images.
    pub fn images(&self) -> Vec<String> {
        self.lock().iter().map(|lane| lane.image.clone()).collect()
    }

    /// Members ready now, over all lanes.
    pub fn ready(&self) -> usize {
        self.lock().iter().map(|lane| lane.ready.len()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Lane>> {
        self.lanes.locked()
    }

    fn publish(&self, lanes: &[Lane]) {
        let ready: usize = lanes.iter().map(|lane| lane.ready.len()).sum();
        self.metrics.pool_ready.set(ready as i64);
    }

    /// Takes a member for a sandbox of `image` with `network`, `disk_mb` and
    /// `limits`, when the pool holds one for that key whose agent connection is open;
    /// wakes the filler either way.
    pub fn claim(
        &self,
        image: &str,
        network: Network,
        disk_mb: Option<u64>,
        limits: Limits,
    ) -> Option<Member> {
        let (claim, member) = if limits != self.defaults
            && self.fixed_limits.load(std::sync::atomic::Ordering::Relaxed)
        {
            (Claim::Unpooled, None)
        } else {
            self.take(image, network, disk_mb)
        };
        Metrics::count(&self.metrics.pool_claims, claim.label());
        if claim != Claim::Unpooled {
            self.wake.notify_one();
        }
        member
    }

    fn take(&self, image: &str, network: Network, disk_mb: Option<u64>) -> (Claim, Option<Member>) {
        if network != Network::None {
            return (Claim::Unpooled, None);
        }
        match self.disk_mb.get() {
            // Not filling yet (the engine has not been reached).
            None => return (Claim::Miss, None),
            Some(pooled) if *pooled != disk_mb => return (Claim::Unpooled, None),
            Some(_) => {}
        }
        let mut lanes = self.lock();
        let Some(lane) = lanes.iter_mut().find(|lane| lane.image == image) else {
            return (Claim::Unpooled, None);
        };
        let mut found = None;
        while let Some(member) = lane.ready.pop_front() {
            if member.agent.is_closed() {
                self.bury(member);
                continue;
            }
            found = Some(member);
            break;
        }
        self.publish(&lanes);
        match found {
            Some(member) => (Claim::Hit, Some(member)),
            None => (Claim::Miss, None),
        }
    }

    /// The engine could not change a claimed member's limits: serve only creates with
    /// the default limits from now on.
    pub fn limits_are_fixed(&self) {
        if !self
            .fixed_limits
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                "the engine cannot change a running container's limits (its runtime has no update): only creates with the default limits are served from the warm pool"
            );
        }
    }

    fn bury(&self, member: Member) {
        tracing::info!(engine_id = %member.engine_id, "pool member's agent is gone; replacing it");
        self.dead.locked().push(member.engine_id);
    }

    /// Moves members whose agent connection closed to the dead.
    fn prune(&self) {
        let mut lanes = self.lock();
        for lane in lanes.iter_mut() {
            let (live, dead): (VecDeque<Member>, VecDeque<Member>) = lane
                .ready
                .drain(..)
                .partition(|member| !member.agent.is_closed());
            lane.ready = live;
            for member in dead {
                self.bury(member);
            }
        }
        self.publish(&lanes);
    }

    fn take_dead(&self) -> Vec<EngineId> {
        std::mem::take(&mut *self.dead.locked())
    }

    /// Lanes to make a member for now (at most `room`), each counted as filling.
    fn wanted(&self, room: usize, now: Instant) -> Vec<(usize, String)> {
        let mut lanes = self.lock();
        let mut wanted = Vec::new();
        for (index, lane) in lanes.iter_mut().enumerate() {
            if lane.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            while wanted.len() < room && lane.ready.len() + lane.filling < self.size {
                lane.filling += 1;
                wanted.push((index, lane.image.clone()));
            }
        }
        wanted
    }

    /// A member made for lane `index` (or why it could not be).
    fn filled(&self, index: usize, made: crate::error::Result<Member>, now: Instant) {
        let mut lanes = self.lock();
        let Some(lane) = lanes.get_mut(index) else {
            return;
        };
        lane.filling = lane.filling.saturating_sub(1);
        match made {
            Ok(member) => {
                lane.failures = 0;
                lane.retry_at = None;
                lane.ready.push_back(member);
            }
            Err(err) => {
                lane.failures = lane.failures.saturating_add(1);
                let backoff = Duration::from_millis(500)
                    .saturating_mul(1 << lane.failures.min(6))
                    .min(MAX_BACKOFF);
                lane.retry_at = Some(now + backoff);
                tracing::warn!(image = %lane.image, %err, ?backoff, "could not make a pool member; trying again later");
            }
        }
        self.publish(&lanes);
    }

    /// Every member, taken out of the pool (the server is stopping).
    fn drain(&self) -> Vec<Member> {
        let mut lanes = self.lock();
        let members = lanes
            .iter_mut()
            .flat_map(|lane| lane.ready.drain(..))
            .collect();
        self.publish(&lanes);
        members
    }
}

/// What the pool's task needs of the service: making and removing members. The
/// sandbox service implements it; the pool knows nothing else of it.
#[async_trait::async_trait]
pub trait Supplier: Send + Sync + 'static {
    /// The pool being kept.
    fn pool(&self) -> &Pool;
    /// Whether the service is ready for members (its sandboxes are reconciled with
    /// the engine).
    fn is_reconciled(&self) -> bool;
    /// The disk limit every member gets (`None`: the engine enforces none).
    async fn pool_disk_mb(&self) -> crate::error::Result<Option<u64>>;
    /// Makes a started member on `image`.
    async fn make_pool_member(&self, image: &str) -> crate::error::Result<Member>;
    /// Removes a member, trying `tries` times.
    async fn remove_pool_member(&self, engine_id: &EngineId, tries: usize);
}

/// Keeps the pool topped up until `stop`, then removes its members. Starts filling
/// once the sandboxes are reconciled with the engine.
pub async fn run(sandboxes: Arc<impl Supplier>, stop: CancellationToken) {
    let pool = sandboxes.pool();
    if pool.size() == 0 || pool.images().is_empty() {
        return;
    }
    // The disk limit is part of every member's key: settle it first (it needs the
    // engine, as does everything the pool does).
    loop {
        if sandboxes.is_reconciled()
            && let Ok(disk_mb) = sandboxes.pool_disk_mb().await
        {
            let _ = pool.disk_mb.set(disk_mb);
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = stop.cancelled() => return,
        }
    }
    tracing::info!(size = pool.size(), images = ?pool.images(), "filling the warm pool");

    let mut fills: JoinSet<(usize, crate::error::Result<Member>, Duration)> = JoinSet::new();
    let mut removals: JoinSet<()> = JoinSet::new();
    loop {
        pool.prune();
        for engine_id in pool.take_dead() {
            let sandboxes = sandboxes.clone();
            removals.spawn(async move {
                sandboxes
                    .remove_pool_member(&engine_id, DEAD_MEMBER_REMOVE_TRIES)
                    .await
            });
        }
        for (index, image) in pool.wanted(MAX_FILLING - fills.len(), Instant::now()) {
            let sandboxes = sandboxes.clone();
            fills.spawn(async move {
                let started = Instant::now();
                let made = sandboxes.make_pool_member(&image).await;
                (index, made, started.elapsed())
            });
        }
        tokio::select! {
            () = pool.wake.notified() => {}
            Some(done) = fills.join_next(), if !fills.is_empty() => {
                if let Ok((index, made, took)) = done {
                    if made.is_ok() {
                        pool.metrics.pool_refill_seconds.observe(took.as_secs_f64());
                    }
                    pool.filled(index, made, Instant::now());
                }
            }
            Some(_) = removals.join_next(), if !removals.is_empty() => {}
            () = tokio::time::sleep(CHECK_PERIOD) => {}
            () = stop.cancelled() => break,
        }
    }

    // Stopping: members being made are waited for (a create cut off half-way would
    // leave a container behind), then every member is removed. Sandboxes outlive the
    // server; members do not (the next start would remove them anyway).
    let waited = tokio::time::timeout(STOP_BOUND, async {
        while let Some(done) = fills.join_next().await {
            if let Ok((index, made, _)) = done {
                pool.filled(index, made, Instant::now());
            }
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            "pool members still being made at the stop bound; the next start removes them"
        );
    }
    let mut leftovers: Vec<EngineId> = pool
        .drain()
        .into_iter()
        .map(|member| member.engine_id)
        .collect();
    leftovers.extend(pool.take_dead());
    let _ = tokio::time::timeout(STOP_BOUND, async {
        futures_util::future::join_all(
            leftovers
                .iter()
                .map(|engine_id| sandboxes.remove_pool_member(engine_id, 1)),
        )
        .await;
        while removals.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Limits = Limits {
        cpus: 1.0,
        memory_mb: 1024,
        pids: 512,
    };

    fn pool(size: usize) -> Pool {
        let pool = Pool::new(
            size,
            &["base".to_owned(), "other".to_owned(), "base".to_owned()],
            DEFAULTS,
            Arc::new(Metrics::new()),
        );
        let _ = pool.disk_mb.set(None);
        pool
    }

    #[test]
    fn a_lane_per_image_each_filled_to_its_size_within_the_room_given() {
        let pool = pool(2);
        assert_eq!(pool.images(), vec!["base", "other"]);
        let now = Instant::now();
        let first = pool.wanted(3, now);
        assert_eq!(
            first,
            vec![(0, "base".into()), (0, "base".into()), (1, "other".into())]
        );
        // What is being made counts: only the one left is wanted.
        assert_eq!(pool.wanted(3, now), vec![(1, "other".into())]);
        assert!(pool.wanted(3, now).is_empty());
    }

    #[test]
    fn a_failing_lane_backs_off_and_recovers() {
        let pool = pool(1);
        let now = Instant::now();
        assert_eq!(pool.wanted(1, now), vec![(0, "base".into())]);
        pool.filled(0, Err(crate::error::Error::internal("no engine")), now);
        // Lane 0 waits; lane 1 does not.
        assert_eq!(pool.wanted(2, now), vec![(1, "other".into())]);
        assert_eq!(pool.wanted(2, now + MAX_BACKOFF), vec![(0, "base".into())]);
    }

    #[test]
    fn claims_outside_the_pool_keys_are_unpooled_and_an_empty_lane_misses() {
        let pool = pool(1);
        assert_eq!(pool.take("base", Network::Bridge, None).0, Claim::Unpooled);
        assert_eq!(pool.take("base", Network::None, Some(5)).0, Claim::Unpooled);
        assert_eq!(
            pool.take("elsewhere", Network::None, None).0,
            Claim::Unpooled
        );
        assert_eq!(pool.take("base", Network::None, None).0, Claim::Miss);
        assert!(
            Pool::new(0, &["base".to_owned()], DEFAULTS, Arc::new(Metrics::new()))
                .images()
                .is_empty()
        );
        // Other limits than the defaults stop being pooled once the engine cannot
        // change them.
        let other = Limits {
            pids: 7,
            ..DEFAULTS
        };
        assert!(pool.claim("base", Network::None, None, other).is_none());
        pool.limits_are_fixed();
        assert!(pool.claim("base", Network::None, None, other).is_none());
        let metrics = pool.metrics.render();
        assert!(
            metrics.contains("repobox_pool_claims_total{kind=\"unpooled\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("repobox_pool_claims_total{kind=\"miss\"} 1"),
            "{metrics}"
        );
    }
}
