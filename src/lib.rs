//! repobox: give it a git repository URL, get back an isolated sandbox with exactly
//! that checkout at `/workspace`; run commands and move files in it over HTTP.
//!
//! Map of the crate, from the edge inwards (the import graph has no cycle:
//! `tests/architecture.rs` checks it):
//! - [`server`]: wiring (the one place an engine is chosen), background tasks,
//!   graceful shutdown; [`connections`]: the accept loop (connection cap, eviction,
//!   header timeout).
//! - [`api`]: router, middleware and handlers (one file per resource): they parse,
//!   call the service and render. [`mcp`]: the same API as tools for AI agents
//!   (`repobox mcp` on stdio, `/mcp` over HTTP). [`cli`]: the command line (`serve`
//!   and the client commands, over the `repobox-client` crate).
//! - [`request`]: what a client asks of a sandbox, validated (API, jobs, CLI).
//! - [`sandbox`]: the service: sandbox lifecycle (create, status, destroy, expiry,
//!   reconcile). [`job`]: one command across many repositories. [`pool`]: the warm
//!   pool and its task; [`reaper`]: the expiry task (both reach the service through
//!   narrow traits of their own).
//! - [`session`], [`exec`], [`files`], [`repo`]: sessions, commands (timeouts that
//!   kill, capped and streamed output), a sandbox's files, its repository's git
//!   operations, all through the agent. [`policy`]: which programs a command may
//!   start (`COMMAND_ALLOWLIST`). [`egress`]: a sandbox's allow-list and the proxy
//!   that serves it through the agent.
//! - [`image`]: pulls and builds; [`snapshot`]: snapshot records; [`git`]: URL and
//!   ref policy, the mirror cache, checkouts; [`archive`]: tar streams into sandboxes.
//! - [`registry`]: sandbox records under `DATA_DIR`; [`id`]: typed ids.
//! - [`agent`]: the server's end of the protocol to the agent in each sandbox.
//! - [`backend`]: the engine boundary (placement, and an image store a backend may
//!   lack), with the local test backend; [`docker`]: the Docker backend and its
//!   hardening; [`kubernetes`]: the Kubernetes backend (pods, `pods/attach`).
//! - [`config`], [`error`], [`metrics`]: settings, the one error type and its JSON
//!   shape, Prometheus metrics; `sync`: locks that survive a panic, used everywhere.

pub mod agent;
pub mod api;
pub mod archive;
pub mod backend;
pub mod cli;
pub mod config;
pub mod connections;
pub mod docker;
pub mod egress;
pub mod error;
pub mod exec;
pub mod files;
pub mod git;
pub mod id;
pub mod image;
pub mod job;
pub mod kubernetes;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod reaper;
pub mod registry;
pub mod repo;
pub mod request;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod snapshot;
mod sync;

/// Runs blocking filesystem work (removing a checkout, a record) on tokio's blocking
/// threads when called on the runtime, so the async workers never wait on the disk;
/// inline otherwise (at shutdown, in plain tests).
pub(crate) fn off_the_workers(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(work);
        }
        Err(_) => work(),
    }
}
