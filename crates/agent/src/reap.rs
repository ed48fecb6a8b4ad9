//! The agent as the container's init: it is PID 1, so that no process of the sandbox
//! can signal, stop or trace it (the kernel delivers to a namespace's init only the
//! signals it handles, never SIGKILL or SIGSTOP from inside), and it is the only holder
//! of the protocol's pipes. Being init, it reaps the orphans re-parented to it.
//!
//! Its own children (the supervisors) are reaped by tokio; everything else that dies
//! under it is reaped here. The two are told apart by [`Own`], a registry of the pids it
//! spawned: a spawn registers its child under the registry's lock, and the reaper scans
//! under the same lock, so a child that dies at once is never reaped from under tokio.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Pids of the agent's own children, which tokio waits for.
static OWN: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// How often orphans are looked for.
const PERIOD: Duration = Duration::from_millis(250);

fn own() -> MutexGuard<'static, Option<HashSet<i32>>> {
    OWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child of the agent's own, registered while it lives (see the module docs).
#[derive(Debug)]
pub(crate) struct Own(i32);

impl Own {
    /// Runs `spawn` under the registry's lock and registers the child's pid.
    pub(crate) fn spawn<T>(
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid: impl Fn(&T) -> Option<u32>,
    ) -> std::io::Result<(T, Own)> {
        let mut own = own();
        let child = spawn()?;
        let pid = pid(&child).map_or(0, |pid| pid as i32);
        own.get_or_insert_with(HashSet::new).insert(pid);
        Ok((child, Own(pid)))
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        if let Some(own) = own().as_mut() {
            own.remove(&self.0);
        }
    }
}

/// Makes the agent unreachable for the sandbox's processes: not dumpable, so that no
/// process without `CAP_SYS_PTRACE` (none in a sandbox has it) may open
/// `/proc/<agent>/fd/*`, read or write its memory, or ptrace it. The children it
/// spawns become dumpable again at their `execve`.
pub(crate) fn shield() {
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("repobox-agent: cannot make itself non-dumpable: {error}");
    }
}

/// When the agent is PID 1: reaps, forever, the zombies that are not its own children.
pub(crate) async fn orphans() {
    if std::process::id() != 1 {
        return;
    }
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        reap_orphans();
    }
}

fn reap_orphans() {
    let own = own();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if own.as_ref().is_some_and(|own| own.contains(&pid)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold anything, so read after its last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if state == "Z" && ppid == "1" {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}
