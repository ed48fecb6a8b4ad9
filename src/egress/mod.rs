//! Egress by allow-list: a sandbox with `network: {"allow": [...]}` has no network of
//! its own (as `none`), and one way out: an HTTP proxy on `127.0.0.1:`[`PROXY_PORT`]
//! inside it, where its agent listens ([`AgentClient::accept`]) and hands each
//! connection to the server, which decides by the requested host (and a TLS
//! ClientHello's server name), resolves the name itself (refusing private and
//! loopback addresses unless an entry names the address, or the operator pinned it
//! in `EGRESS_HOSTS`) and makes the upstream connection. Every command gets
//! `HTTP_PROXY`/`HTTPS_PROXY`; a process that ignores them finds no route and no DNS.
//! Each decision is kept (the last [`LOG_SIZE`] per sandbox) and refusals are counted.

pub mod allow;
mod proxy;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use crate::agent::AgentClient;
use crate::metrics::Metrics;
use crate::sync::Locked as _;
pub use allow::{Entry, Host};

/// The port the proxy listens on inside a sandbox (its loopback).
pub const PROXY_PORT: u16 = 3128;
/// Decisions kept per sandbox.
pub const LOG_SIZE: usize = 1000;
/// Most entries in one sandbox's allow-list.
pub const MAX_ENTRIES: usize = 100;
/// Connections through one sandbox's proxy at once; more wait in the agent's backlog.
const MAX_CONNECTIONS: usize = 64;

/// The variables every command of a sandbox with an allow-list gets.
pub fn proxy_env() -> Vec<(String, String)> {
    let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    vec![
        ("HTTP_PROXY".to_owned(), proxy.clone()),
        ("HTTPS_PROXY".to_owned(), proxy.clone()),
        ("http_proxy".to_owned(), proxy.clone()),
        ("https_proxy".to_owned(), proxy),
        ("NO_PROXY".to_owned(), no_proxy.clone()),
        ("no_proxy".to_owned(), no_proxy),
    ]
}

/// One decision of a sandbox's proxy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// The host asked for (a name or an address).
    pub host: String,
    /// The port asked for.
    pub port: u16,
    /// Whether the connection was made.
    pub allowed: bool,
    /// Why it was refused, or why an allowed connection failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Decision {
    fn allowed(host: &Host, port: u16) -> Self {
        Self::new(host, port, true, None)
    }

    fn denied(host: &Host, port: u16, reason: String) -> Self {
        Self::new(host, port, false, Some(reason))
    }

    /// Allowed, but the connection could not be made.
    fn failed(host: &Host, port: u16, reason: String) -> Self {
        Self::new(host, port, true, Some(reason))
    }

    fn new(host: &Host, port: u16, allowed: bool, reason: Option<String>) -> Self {
        Self {
            time: Utc::now(),
            host: host.to_string(),
            port,
            allowed,
            reason,
        }
    }
}

/// The last [`LOG_SIZE`] decisions of one sandbox's proxy, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EgressLog(Arc<Mutex<VecDeque<Decision>>>);

impl EgressLog {
    fn push(&self, decision: Decision) {
        let mut log = self.0.locked();
        if log.len() == LOG_SIZE {
            log.pop_front();
        }
        log.push_back(decision);
    }

    /// The decisions kept, oldest first.
    pub fn entries(&self) -> Vec<Decision> {
        self.0.locked().iter().cloned().collect()
    }
}

/// The proxy of one sandbox: its list, its log, and the server's settings.
pub struct SandboxEgress {
    sandbox: String,
    allow: Vec<Entry>,
    log: EgressLog,
    pinned: Arc<HashMap<String, IpAddr>>,
    metrics: Arc<Metrics>,
}

impl SandboxEgress {
    /// The proxy of sandbox `sandbox` with its `allow`-list; `pinned` are the
    /// operator's `EGRESS_HOSTS`.
    pub fn new(
        sandbox: String,
        allow: Vec<Entry>,
        log: EgressLog,
        pinned: Arc<HashMap<String, IpAddr>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            sandbox,
            allow,
            log,
            pinned,
            metrics,
        }
    }

    fn allowed(&self, host: &Host, port: u16) -> bool {
        self.allow.iter().any(|entry| entry.allows(host, port))
    }

    fn record(&self, decision: Decision) {
        if decision.allowed {
            self.metrics.egress_allowed.inc();
        } else {
            // At debug only: a sandbox decides how many refusals it causes, and its
            // ring and the counter keep them without growing the server's log.
            tracing::debug!(sandbox = %self.sandbox, host = %decision.host, port = decision.port, reason = ?decision.reason, "egress refused");
            self.metrics.egress_denied.inc();
        }
        self.log.push(decision);
    }

    /// Where a connection to `host:port` may go: the addresses to try, or why not.
    async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, String> {
        if !self.allowed(host, port) {
            return Err("not on the sandbox's allow-list".to_owned());
        }
        match host {
            // Only an entry naming the address allows it (`*` does not).
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(name) => {
                if let Some(ip) = self.pinned.get(name) {
                    return Ok(vec![SocketAddr::new(*ip, port)]);
                }
                let resolved = proxy::lookup(name, port).await?;
                let public: Vec<SocketAddr> = resolved
                    .iter()
                    .copied()
                    .filter(|address| proxy::is_public(address.ip()))
                    .collect();
                if public.is_empty() {
                    let shown: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
                    return Err(format!(
                        "{name} resolves to no public address ({}); only an entry naming an address reaches a private or loopback one",
                        shown.join(", ")
                    ));
                }
                Ok(public)
            }
        }
    }
}

/// Serves a sandbox's proxy over its agent connection until the connection ends: keeps
/// one accept open, hands each connection to a task of its own (at most
/// [`MAX_CONNECTIONS`] at once). Attach the returned task to the client
/// ([`AgentClient::attach`]), so that it ends with it.
pub fn serve(agent: &Arc<AgentClient>, egress: Arc<SandboxEgress>) -> tokio::task::AbortHandle {
    let agent: Weak<AgentClient> = Arc::downgrade(agent);
    let task = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let accepted = match agent.upgrade() {
                Some(client) => client.accept_later(PROXY_PORT),
                None => return,
            };
            let tunnel = match accepted {
                Ok(waiting) => match waiting.await {
                    Ok(tunnel) => tunnel,
                    Err(err) => {
                        tracing::debug!(sandbox = %egress.sandbox, %err, "egress proxy stops");
                        return;
                    }
                },
                Err(err) => {
                    tracing::debug!(sandbox = %egress.sandbox, %err, "egress proxy stops");
                    return;
                }
            };
            let egress = egress.clone();
            tokio::spawn(async move {
                proxy::serve(tunnel, &egress).await;
                drop(slot);
            });
        }
    });
    task.abort_handle()
}

/// Parses `EGRESS_HOSTS` (`name=address,...`).
pub fn parse_pinned(raw: &str) -> Result<HashMap<String, IpAddr>, String> {
    let mut pinned = HashMap::new();
    for item in raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (name, address) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not name=address"))?;
        let Some(Host::Name(name)) = Host::parse(name) else {
            return Err(format!("{name:?} is not a host name"));
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        pinned.insert(name, address);
    }
    Ok(pinned)
}
