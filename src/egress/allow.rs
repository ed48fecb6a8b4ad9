//! Allow-list entries: `host`, `*.domain`, `*`, an IP address, each with an optional
//! `:port` (`[v6]:port` for IPv6) or `:*` (any port). Without a port an entry allows
//! ports 80 and 443.

use std::net::IpAddr;

use crate::error::{Error, Result};

/// Ports an entry without `:port` allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];
/// Longest entry.
const MAX_ENTRY: usize = 300;

/// The host part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`: any host name (not an IP address).
    Any,
    /// `*.domain`: any name below `domain` (not `domain` itself).
    Below(String),
    /// One host name.
    Name(String),
    /// One IP address, named: the only way to a private or loopback address.
    Ip(IpAddr),
}

/// The ports of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// No `:port`: [`DEFAULT_PORTS`].
    Default,
    /// `:port`.
    One(u16),
    /// `:*`.
    Any,
}

impl Ports {
    fn allows(self, port: u16) -> bool {
        match self {
            Ports::Default => DEFAULT_PORTS.contains(&port),
            Ports::One(own) => own == port,
            Ports::Any => true,
        }
    }

    fn covers(self, other: Ports) -> bool {
        match (self, other) {
            (Ports::Any, _) => true,
            (_, Ports::Any) => false,
            (own, Ports::One(port)) => own.allows(port),
            (Ports::Default, Ports::Default) => true,
            (Ports::One(_), Ports::Default) => false,
        }
    }
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    host: HostPattern,
    port: Ports,
    /// As written, lowercased.
    shown: String,
}

/// Where a connection goes: the host as the request named it, and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name, lowercased, without a final dot.
    Name(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// A host as a request names it (`example.org`, `10.0.0.1`, `[::1]`, `::1`).
    pub fn parse(raw: &str) -> Option<Host> {
        let raw = raw.trim().to_ascii_lowercase();
        let bare = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(&raw);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = raw.strip_suffix('.').unwrap_or(&raw);
        valid_name(name).then(|| Host::Name(name.to_owned()))
    }
}

/// Whether `name` is a host name: dot-separated labels of letters, digits, `-` and
/// `_`, none empty or longer than 63, 253 in all, and not all digits (which a resolver
/// would read as a number: `167772161` is 10.0.0.1).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && !name
            .split('.')
            .next_back()
            .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit() || b == b'x'))
}

impl Entry {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(raw: &str) -> std::result::Result<Entry, String> {
        let shown = raw.trim().to_ascii_lowercase();
        if shown.is_empty() || shown.len() > MAX_ENTRY {
            return Err(format!(
                "{raw:?} is not an allow-list entry (empty or too long)"
            ));
        }
        let (host, port) = split_port(&shown)
            .ok_or_else(|| format!("{raw:?}: the port must be a number from 1 to 65535, or *"))?;
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !valid_name(domain) {
                return Err(format!("{raw:?}: {domain:?} is not a domain name"));
            }
            HostPattern::Below(domain.to_owned())
        } else {
            match Host::parse(host) {
                Some(Host::Ip(ip)) => HostPattern::Ip(ip),
                Some(Host::Name(name)) => HostPattern::Name(name),
                None => {
                    return Err(format!(
                        "{raw:?} is not a host name, `*.domain`, `*` or an IP address (with an optional :port)"
                    ));
                }
            }
        };
        Ok(Entry { host, port, shown })
    }

    /// The entry as written (lowercased).
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// Whether a connection to `host:port` is allowed by this entry.
    pub fn allows(&self, host: &Host, port: u16) -> bool {
        self.port.allows(port)
            && match (&self.host, host) {
                (HostPattern::Any, Host::Name(_)) => true,
                (HostPattern::Below(domain), Host::Name(name)) => is_below(name, domain),
                (HostPattern::Name(own), Host::Name(name)) => own == name,
                (HostPattern::Ip(own), Host::Ip(ip)) => own == ip,
                _ => false,
            }
    }

    /// Whether everything `other` allows, this entry allows too (an operator's
    /// entry covering a sandbox's).
    pub fn covers(&self, other: &Entry) -> bool {
        self.port.covers(other.port)
            && match (&self.host, &other.host) {
                (
                    HostPattern::Any,
                    HostPattern::Any | HostPattern::Below(_) | HostPattern::Name(_),
                ) => true,
                (HostPattern::Below(own), HostPattern::Below(theirs)) => {
                    own == theirs || is_below(theirs, own)
                }
                (HostPattern::Below(own), HostPattern::Name(name)) => is_below(name, own),
                (HostPattern::Name(own), HostPattern::Name(theirs)) => own == theirs,
                (HostPattern::Ip(own), HostPattern::Ip(theirs)) => own == theirs,
                _ => false,
            }
    }

    /// Whether this entry names an IP address (which may then be private).
    pub fn names_address(&self) -> bool {
        matches!(self.host, HostPattern::Ip(_))
    }
}

fn is_below(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// `host[:port]` or `[v6][:port]` into its host and ports.
fn split_port(entry: &str) -> Option<(&str, Ports)> {
    let parse_port = |port: &str| -> Option<Ports> {
        if port == "*" {
            return Some(Ports::Any);
        }
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        port.parse::<u16>().ok().filter(|p| *p != 0).map(Ports::One)
    };
    if entry.starts_with('[') {
        let end = entry.find(']')?;
        let host = &entry[..=end];
        return match &entry[end + 1..] {
            "" => Some((host, Ports::Default)),
            rest => Some((host, parse_port(rest.strip_prefix(':')?)?)),
        };
    }
    match entry.rsplit_once(':') {
        // A bare IPv6 address has several colons: no port.
        Some((host, _)) if host.contains(':') => Some((entry, Ports::Default)),
        Some((host, port)) => Some((host, parse_port(port)?)),
        None => Some((entry, Ports::Default)),
    }
}

/// Parses a whole list (at most `max` entries); a 400 names the first bad entry.
pub fn parse_list(entries: &[String], max: usize) -> Result<Vec<Entry>> {
    if entries.len() > max {
        return Err(Error::invalid(format!(
            "network.allow lists {} entries; at most {max}",
            entries.len()
        )));
    }
    entries
        .iter()
        .map(|raw| Entry::parse(raw).map_err(|why| Error::invalid(format!("network.allow: {why}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(raw: &str) -> Entry {
        Entry::parse(raw).unwrap()
    }

    fn host(raw: &str) -> Host {
        Host::parse(raw).unwrap()
    }

    #[test]
    fn entries_allow_their_hosts_on_their_ports() {
        assert!(entry("pypi.org").allows(&host("PyPI.org."), 443));
        assert!(entry("pypi.org").allows(&host("pypi.org"), 80));
        assert!(!entry("pypi.org").allows(&host("pypi.org"), 22));
        assert!(!entry("pypi.org").allows(&host("evil-pypi.org"), 443));
        assert!(entry("*.pythonhosted.org").allows(&host("files.pythonhosted.org"), 443));
        assert!(!entry("*.pythonhosted.org").allows(&host("pythonhosted.org"), 443));
        assert!(!entry("*.pythonhosted.org").allows(&host("xpythonhosted.org"), 443));
        assert!(entry("git.example:8443").allows(&host("git.example"), 8443));
        assert!(!entry("git.example:8443").allows(&host("git.example"), 443));
        assert!(entry("*").allows(&host("anything.example"), 443));
        assert!(entry("*:*").allows(&host("anything.example"), 8443));
        assert!(entry("git.example:*").allows(&host("git.example"), 22));
        // `*` is names only: an address must be named.
        assert!(!entry("*").allows(&host("10.0.0.1"), 443));
        assert!(entry("10.0.0.1:8080").allows(&host("10.0.0.1"), 8080));
        assert!(entry("[::1]:8080").allows(&host("[::1]"), 8080));
        assert!(entry("::1").allows(&host("::1"), 443));
    }

    #[test]
    fn operators_entries_cover_narrower_ones() {
        assert!(entry("*").covers(&entry("pypi.org")));
        assert!(entry("*").covers(&entry("*.pythonhosted.org")));
        assert!(!entry("*").covers(&entry("10.0.0.1")));
        assert!(entry("*.org").covers(&entry("*.pythonhosted.org")));
        assert!(entry("*.org").covers(&entry("pypi.org")));
        assert!(!entry("*.pythonhosted.org").covers(&entry("*.org")));
        assert!(entry("pypi.org").covers(&entry("pypi.org:443")));
        assert!(!entry("pypi.org").covers(&entry("pypi.org:22")));
        assert!(!entry("pypi.org:443").covers(&entry("pypi.org")));
        assert!(entry("10.0.0.1:8080").covers(&entry("10.0.0.1:8080")));
        assert!(entry("*:*").covers(&entry("git.example:8443")));
        assert!(entry("*:*").covers(&entry("git.example:*")));
        assert!(!entry("*").covers(&entry("git.example:*")));
        assert!(!entry("git.example:8443").covers(&entry("git.example:*")));
    }

    #[test]
    fn malformed_entries_and_numeric_names_are_refused() {
        for bad in [
            "",
            "pypi.org:0",
            "pypi.org:99999",
            "pypi.org:x",
            "*.",
            "*.*.org",
            "a..b",
            "-a.org",
            "a b",
            "http://pypi.org",
            "pypi.org/simple",
            "167772161",
            "0x0a.0.0.1",
            "[::1",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad:?} was taken");
        }
        // A resolver would read these as addresses: they are not names.
        assert_eq!(Host::parse("167772161"), None);
        assert_eq!(Host::parse("0x7f.1"), None);
    }
}
