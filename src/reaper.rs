//! Expiry: one task that sleeps until the next deadline, then destroys what is due.
//!
//! Deadlines live in an ordered set; scheduling an earlier deadline wakes the task so
//! it can sleep less. This is exact to the engine's removal time, where a periodic
//! sweep would be late by up to its period.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::id::SandboxId;
use crate::sync::Locked as _;

#[derive(Default)]
struct Schedule {
    queue: BTreeSet<(DateTime<Utc>, SandboxId)>,
    by_id: HashMap<SandboxId, DateTime<Utc>>,
}

/// The set of deadlines.
#[derive(Default)]
pub struct Expiries {
    schedule: Mutex<Schedule>,
    changed: Notify,
}

impl Expiries {
    /// Schedules (or reschedules) `id` for destruction at `at`.
    pub fn schedule(&self, id: &SandboxId, at: DateTime<Utc>) {
        let mut schedule = self.schedule.locked();
        if let Some(old) = schedule.by_id.insert(id.clone(), at) {
            schedule.queue.remove(&(old, id.clone()));
        }
        schedule.queue.insert((at, id.clone()));
        drop(schedule);
        self.changed.notify_one();
    }

    /// Forgets `id`'s deadline.
    pub fn cancel(&self, id: &SandboxId) {
        let mut schedule = self.schedule.locked();
        if let Some(at) = schedule.by_id.remove(id) {
            schedule.queue.remove(&(at, id.clone()));
        }
    }

    /// Takes every id due at `now`; returns them and the next deadline after them.
    pub fn take_due(&self, now: DateTime<Utc>) -> (Vec<SandboxId>, Option<DateTime<Utc>>) {
        let mut schedule = self.schedule.locked();
        let mut due = Vec::new();
        while let Some((at, id)) = schedule.queue.first().cloned() {
            if at > now {
                return (due, Some(at));
            }
            schedule.queue.pop_first();
            schedule.by_id.remove(&id);
            due.push(id);
        }
        (due, None)
    }
}

/// What the reaper needs of the service: its deadlines, and ending a sandbox whose
/// time is up. The sandbox service implements it.
#[async_trait::async_trait]
pub trait Expire: Send + Sync + 'static {
    /// The deadlines.
    fn expiries(&self) -> &Expiries;
    /// Ends sandbox `id`, whose deadline has come.
    async fn expire(&self, id: &SandboxId);
}

/// Runs until `shutdown`: destroys each sandbox at its deadline.
pub async fn run(sandboxes: Arc<impl Expire>, shutdown: CancellationToken) {
    let expiries = sandboxes.expiries();
    loop {
        let (due, next) = expiries.take_due(Utc::now());
        if !due.is_empty() {
            let destroys = due.iter().map(|id| sandboxes.expire(id));
            futures_util::future::join_all(destroys).await;
            continue;
        }
        let sleep = match next {
            Some(at) => (at - Utc::now()).to_std().unwrap_or_default(),
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = expiries.changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn due_in_deadline_order_and_next_reported() {
        let expiries = Expiries::default();
        let now = Utc::now();
        expiries.schedule(&"b".into(), now + Duration::seconds(2));
        expiries.schedule(&"a".into(), now - Duration::seconds(1));
        expiries.schedule(&"c".into(), now + Duration::seconds(10));
        let (due, next) = expiries.take_due(now);
        assert_eq!(due, ["a"]);
        assert_eq!(next, Some(now + Duration::seconds(2)));
        let (due, next) = expiries.take_due(now + Duration::seconds(5));
        assert_eq!(due, ["b"]);
        assert_eq!(next, Some(now + Duration::seconds(10)));
    }

    #[test]
    fn rescheduling_and_cancelling_replace_the_deadline() {
        let expiries = Expiries::default();
        let now = Utc::now();
        expiries.schedule(&"a".into(), now);
        expiries.schedule(&"a".into(), now + Duration::seconds(5));
        assert!(expiries.take_due(now).0.is_empty());
        expiries.cancel(&"a".into());
        assert_eq!(
            expiries.take_due(now + Duration::seconds(9)),
            (vec![], None)
        );
    }
}
