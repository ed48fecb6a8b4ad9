//! Supervisor mode: `repobox-agent supervise [--process] [--tty] <shell> -c <command>`.
//!
//! The agent runs every command under a supervisor, a child of its own, that is the
//! subreaper of everything the command starts: processes that leave the process group
//! or the session, or whose parent dies, stay in its tree. When the shell exits the
//! supervisor kills what is left, reaps it all, and exits with the shell's status, so
//! the command's pipes close at once.
//!
//! For a background process (`--process`), a shell killed by a signal is reported by
//! the supervisor dying of the same signal, so the agent can tell `kill -TERM` from
//! `exit 143`. With `--tty` its stdin is a terminal, which the supervisor makes the
//! controlling terminal of a session of its own (the shell's group in the foreground).

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
pub(crate) const NO_SUBREAPER: &str = "REPOBOX_AGENT_NO_SUBREAPER";

/// Exit code for a status: the code, or 128+N for a death by signal N.
fn status_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, signal, _) => Some((128 + signal as i32) as u8),
        _ => None,
    }
}

/// Runs the supervisor; `args` are what follows `supervise`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let mut args = args;
    let (mut process, mut tty) = (false, false);
    let mut remove = None;
    while let Some((first, rest)) = args.split_first() {
        match first.as_str() {
            "--process" => process = true,
            "--tty" => tty = true,
            // A file holding the command line (one too long for an argument), removed
            // once the shell is done with it.
            "--remove" if !rest.is_empty() => {
                remove = Some(ScriptFile(PathBuf::from(&rest[0])));
                args = &rest[1..];
                continue;
            }
            _ => break,
        }
        args = rest;
    }
    let [shell, flag, command] = args else {
        eprintln!(
            "repobox-agent: usage: repobox-agent supervise [--process] [--tty] <shell> -c <command>"
        );
        return ExitCode::from(2);
    };
    if tty {
        // A new session, then the terminal on stdin as its controlling terminal: done
        // here, in a process of our own before the shell starts, because a `pre_exec`
        // hook would need unsafe code.
        if let Err(error) = nix::unistd::setsid()
            .map_err(std::io::Error::from)
            .and_then(|_| rustix::process::ioctl_tiocsctty(std::io::stdin()).map_err(Into::into))
        {
            eprintln!("repobox: cannot set up the terminal: {error}");
            return ExitCode::from(126);
        }
    }
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
    if tty {
        // The shell's group takes the terminal (so it may read it, and ^C reaches it);
        // should it have read before that and been stopped, it is woken.
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), shell_pid);
        let _ = nix::sys::signal::killpg(shell_pid, nix::sys::signal::Signal::SIGCONT);
    }
    let mut killed_by = None;
    let code = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) if status.pid() == Some(shell_pid) => {
                if let WaitStatus::Signaled(_, signal, _) = status {
                    killed_by = Some(signal);
                }
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
    drop(remove);
    if let Some(signal) = killed_by.filter(|_| process) {
        // No core file of the supervisor for a shell that dumped one.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        let _ = nix::sys::signal::raise(signal);
        // Still here (the signal is ignored, as SIGPIPE is in Rust programs): the code.
    }
    ExitCode::from(code)
}

/// A file removed when dropped.
struct ScriptFile(PathBuf);

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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
