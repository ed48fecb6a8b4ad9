//! repobox: give it a git repository URL, get back an isolated Docker container with
//! exactly that checkout at `/workspace`; run commands and move files in it over HTTP.
//!
//! Map of the crate:
//! - [`config`]: settings, read once at start-up.
//! - [`error`]: the one error type and its JSON shape.
//! - [`api`]: router, middleware and handlers (one file per resource).
//! - [`sandbox`]: sandbox lifecycle (create, status, destroy, expiry, reconcile).
//! - [`id`]: typed ids (a sandbox's, the engine's reference to it).
//! - [`registry`]: sandbox records, persisted under `DATA_DIR`, and ids.
//! - [`git`]: URL and ref policy, the mirror cache, checkouts.
//! - [`archive`]: tar streams between the server and sandboxes.
//! - [`backend`]: the backend boundary (container lifecycle, the stream to the agent).
//! - [`docker`]: the Docker backend (every engine call) and container hardening.
//! - [`agent`]: the server's end of the protocol to the agent in each sandbox.
//! - [`exec`]: running commands: timeouts that kill, capped and streamed output.
//! - [`policy`]: the command policy (COMMAND_ALLOWLIST): which programs a command may start.
//! - [`files`]: a sandbox's files: listing, reading, writing, archives.
//! - [`request`]: what a client asks of a sandbox, validated (API, jobs, CLI).
//! - [`job`]: jobs: one command across many repositories.
//! - [`reaper`]: the expiry task.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: wiring, background tasks and graceful shutdown.
//! - [`connections`]: the accept loop: connection cap, eviction, header timeout.
//! - [`cli`]: the command line: `serve` and the client commands.
//! - [`mcp`]: the tools for AI agents over MCP (`repobox mcp` on stdio, `/mcp` over HTTP).

pub mod agent;
pub mod api;
pub mod archive;
pub mod backend;
pub mod cli;
pub mod config;
pub mod connections;
pub mod docker;
pub mod error;
pub mod exec;
pub mod files;
pub mod git;
pub mod id;
pub mod image;
pub mod job;
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
