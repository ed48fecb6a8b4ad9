//! [`Request::Ports`]: the TCP ports listening in the sandbox's network namespace, read
//! from `/proc/net/tcp` and `/proc/net/tcp6`, each with a process that holds it.
//!
//! [`Request::Ports`]: repobox_protocol::Request::Ports

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use repobox_protocol::{ListeningPort, MAX_PORTS, Reply};

use crate::error::OpResult;

/// `st` of a listening socket in `/proc/net/tcp*`.
const LISTEN: &str = "0A";

/// One listening socket: its address, port and inode.
#[derive(Debug, PartialEq, Eq)]
struct Socket {
    address: String,
    port: u16,
    inode: u64,
}

/// Parses `/proc/net/tcp` (`v6`: `tcp6`) text into its listening sockets.
fn listening(text: &str, v6: bool) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != LISTEN {
                return None;
            }
            let (address, port) = fields[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let address = if v6 {
                ipv6(address)?.to_string()
            } else {
                Ipv4Addr::from(u32::from_str_radix(address, 16).ok()?.to_ne_bytes()).to_string()
            };
            let inode = fields[9].parse().ok()?;
            Some(Socket {
                address,
                port,
                inode,
            })
        })
        .collect()
}

/// An IPv6 address as `/proc/net/tcp6` writes it: four 32-bit words, each printed
/// from memory as a native-endian number.
fn ipv6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for word in 0..4 {
        let value = u32::from_str_radix(hex.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_ne_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

/// Socket inodes to the first pid (lowest) found holding them, from `/proc/*/fd`.
fn holders(wanted: &HashMap<u64, ()>, own: u32) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| *pid != own)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if wanted.contains_key(&inode) {
                found.entry(inode).or_insert(pid);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

/// A process's command line, arguments joined by spaces.
fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let joined = text
        .split('\0')
        .filter(|arg| !arg.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!joined.is_empty()).then(|| crate::processes::shown_command(&joined))
}

/// The listening ports but `exclude` (the agent's own), by port.
pub(crate) fn op_ports(exclude: &[u16]) -> OpResult<Reply> {
    let mut sockets = Vec::new();
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(path) {
            sockets.extend(listening(&text, v6));
        }
    }
    sockets.retain(|socket| !exclude.contains(&socket.port));
    let wanted: HashMap<u64, ()> = sockets.iter().map(|s| (s.inode, ())).collect();
    let holders = holders(&wanted, std::process::id());
    let mut ports: BTreeMap<u16, ListeningPort> = BTreeMap::new();
    for socket in sockets {
        let entry = ports.entry(socket.port).or_insert_with(|| ListeningPort {
            port: socket.port,
            addresses: Vec::new(),
            pid: None,
            process: None,
        });
        if !entry.addresses.contains(&socket.address) {
            entry.addresses.push(socket.address);
        }
        if entry.pid.is_none()
            && let Some(pid) = holders.get(&socket.inode)
        {
            entry.pid = Some(*pid);
            entry.process = command_line(*pid);
        }
    }
    Ok(Reply::Ports {
        ports: ports.into_values().take(MAX_PORTS).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_sockets_of_both_families() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:0BB9 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            listening(v4, false),
            vec![Socket {
                address: "127.0.0.1".to_owned(),
                port: 3000,
                inode: 4242
            }]
        );
        // `::` and `::1` as a little-endian kernel writes them.
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0\n   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0000000000000000 100 0 0 10 0\n";
        let sockets = listening(v6, true);
        assert_eq!(sockets[0].address, "::");
        assert_eq!(sockets[0].port, 8080);
        if cfg!(target_endian = "little") {
            assert_eq!(sockets[1].address, "::1");
        }
    }
}
