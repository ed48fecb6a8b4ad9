//! Supervisor mode: `repobox-agent supervise <shell> -c <command>`.
//!
//! The agent runs every command under a supervisor, a child of its own, that is the
//! subreaper of everything the command starts: processes that leave the process group
//! or the session, or whose parent dies, stay in its tree. When the shell exits the
//! supervisor kills what is left, reaps it all, and exits with the shell's status, so
//! the command's pipes close at once.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::procs::{holders_of, kill_tree};

/// Set (in the agent's environment, for tests): run as if no subreaper could be had.
pub const NO_SUBREAPER: &str = "REPOBOX_AGENT_NO_SUBREAPER";

/// Exit code for a status: the code, or 128+N for a death by signal N.
fn status_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, signal, _) => Some((128 + signal as i32) as u8),
        _ => None,
    }
}

/// Runs the supervisor; `args` are what follows `supervise`.
pub fn main(args: &[String]) -> ExitCode {
    let [shell, flag, command] = args else {
        eprintln!("repobox-agent: usage: repobox-agent supervise <shell> -c <command>");
        return ExitCode::from(2);
    };
    // Where a subreaper cannot be had (gVisor refuses it), orphans go to the container's
    // init instead; they are then found by a marker every process of the command
    // inherits: a pipe of ours, not close-on-exec. (Nothing is said on stderr: it is the
    // command's.)
    let subreaper = std::env::var_os(NO_SUBREAPER).is_none()
        && nix::sys::prctl::set_child_subreaper(true).is_ok();
    let marker = if subreaper { None } else { Marker::new() };
    let child = Command::new(shell)
        .arg(flag)
        .arg(command)
        .env_remove(NO_SUBREAPER)
        .process_group(0)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(error) => {
            eprintln!("repobox: cannot run {shell}: {error}");
            let code = if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return ExitCode::from(code);
        }
    };
    let shell_pid = Pid::from_raw(child.id() as i32);
    let code = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) if status.pid() == Some(shell_pid) => {
                if let Some(code) = status_code(status) {
                    break code;
                }
            }
            // An orphan re-parented to us, reaped.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                eprintln!("repobox-agent: waiting for the shell: {errno}");
                break 125;
            }
        }
    };
    finish(marker.as_ref());
    ExitCode::from(code)
}

/// A pipe inherited by every process of the command: how they are told apart without a
/// subreaper.
struct Marker {
    /// Keeps the pipe open (and inherited).
    _fd: std::os::fd::OwnedFd,
    /// Its link in `/proc/<pid>/fd`, such as `pipe:[1234]`.
    link: PathBuf,
}

impl Marker {
    fn new() -> Option<Self> {
        // `pipe()`, unlike std's, leaves the descriptors inheritable; only the read end is
        // kept.
        let (read, write) = nix::unistd::pipe().ok()?;
        drop(write);
        let link = std::fs::read_link(format!("/proc/self/fd/{}", read.as_raw_fd())).ok()?;
        Some(Self { _fd: read, link })
    }
}

/// Kills and reaps every remaining process of the command; returns once there is no
/// child left (and, without a subreaper, no other process holding the marker).
fn finish(marker: Option<&Marker>) {
    let me = std::process::id() as i32;
    loop {
        // Reap what has exited.
        let children_left = loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break true,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break false,
            }
        };
        let strays = marker
            .map(|marker| holders_of(&marker.link, me))
            .unwrap_or_default();
        if !children_left && strays.is_empty() {
            return;
        }
        for pid in strays {
            kill_tree(pid, true);
        }
        kill_tree(me, false);
        std::thread::sleep(Duration::from_millis(1));
    }
}
