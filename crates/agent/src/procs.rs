//! The process table, read from `/proc`: finding and killing a process tree.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What `/proc/<pid>/stat` says of a process that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Its parent.
    pub ppid: i32,
    /// Its state letter (`R`, `S`, `Z`, …).
    pub state: u8,
}

impl ProcStat {
    /// Whether it has exited (a zombie, or being torn down): it can no longer run.
    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses a `/proc/<pid>/stat` line: `pid (comm) state ppid …`, where comm may hold
/// spaces and parentheses (so the fields start after the last `)`).
pub(crate) fn parse_stat(line: &[u8]) -> Option<ProcStat> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&line[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcStat { ppid, state })
}

/// The stat of one process, if it exists.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    // Read by hand: `fs::read` sizes its buffer with `statx`, which gVisor refuses.
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    parse_stat(&buf[..len])
}

/// Every process visible: pid → stat.
fn processes() -> HashMap<i32, ProcStat> {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(stat) = proc_stat(pid) {
            table.insert(pid, stat);
        }
    }
    table
}

/// The live processes (but `exclude`) with an open file descriptor whose link in
/// `/proc/<pid>/fd` is `link` (such as `pipe:[1234]`).
pub(crate) fn holders_of(link: &Path, exclude: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for (pid, stat) in processes() {
        if pid == exclude || stat.is_dead() {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == link))
        {
            found.push(pid);
        }
    }
    found
}

/// The live descendants of `root` in `table`.
fn descendants(table: &HashMap<i32, ProcStat>, root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, stat) in table {
        if pid != root {
            children.entry(stat.ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        if let Some(kids) = children.get(&pid) {
            for &kid in kids {
                if !table[&kid].is_dead() {
                    found.push(kid);
                }
                queue.push(kid);
            }
        }
    }
    found
}

/// SIGKILLs every descendant of `root` (and `root` itself if `include_root`), pass after
/// pass until a pass finds none alive: processes forked meanwhile, or re-parented to a
/// subreaper inside the tree, are caught by the next pass.
pub(crate) fn kill_tree(root: i32, include_root: bool) {
    if include_root {
        let _ = kill(Pid::from_raw(root), Signal::SIGKILL);
    }
    for _ in 0..200 {
        let victims = descendants(&processes(), root);
        if victims.is_empty() {
            return;
        }
        for pid in victims {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `signal` to every live descendant of `root` (not `root`) and to the process
/// groups of its children (which holds members that left the tree without a subreaper).
pub(crate) fn signal_tree(root: i32, signal: Signal) {
    let table = processes();
    for pid in descendants(&table, root) {
        if table.get(&pid).is_some_and(|stat| stat.ppid == root) {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), signal);
        }
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ppid_after_the_last_paren() {
        let line = b"1234 (a) b) (c) S 42 1234 1234 0 -1 4194560 100 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                ppid: 42,
                state: b'S'
            })
        );
        let zombie = parse_stat(b"7 (with space ) Z 1 7 7 0").unwrap();
        assert_eq!(zombie.ppid, 1);
        assert!(zombie.is_dead());
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x) R"), None);
    }

    #[test]
    fn descendants_follow_the_tree_and_skip_zombies() {
        let table: HashMap<i32, ProcStat> = [
            (
                10,
                ProcStat {
                    ppid: 1,
                    state: b'S',
                },
            ),
            (
                11,
                ProcStat {
                    ppid: 10,
                    state: b'S',
                },
            ),
            (
                12,
                ProcStat {
                    ppid: 11,
                    state: b'Z',
                },
            ),
            (
                13,
                ProcStat {
                    ppid: 11,
                    state: b'R',
                },
            ),
            (
                20,
                ProcStat {
                    ppid: 1,
                    state: b'S',
                },
            ),
        ]
        .into_iter()
        .collect();
        let mut found = descendants(&table, 10);
        found.sort_unstable();
        assert_eq!(found, vec![11, 13]);
        assert!(descendants(&table, 20).is_empty());
    }

    #[test]
    fn reads_this_process() {
        let me = proc_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
    }
}
