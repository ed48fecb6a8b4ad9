//! repobox: give it a git repository URL, get back an isolated Docker container with
//! exactly that checkout at `/workspace`; run commands and move files in it over HTTP.
//!
//! Map of the crate:
//! - [`config`]: settings, read once at start-up.
//! - [`error`]: the one error type and its JSON shape.
//! - [`api`]: router, middleware and handlers (one file per resource).
//! - [`sandbox`]: sandbox lifecycle (create, status, destroy, expiry, reconcile).
//! - [`registry`]: sandbox records, persisted under `DATA_DIR`, and ids.
//! - [`git`]: URL and ref policy, the mirror cache, checkouts.
//! - [`archive`]: tar streams between the server and sandboxes.
//! - [`docker`]: the Docker boundary (every engine call) and container hardening.
//! - [`exec`]: running commands: timeouts that kill, capped and streamed output.
//! - [`files`]: a sandbox's files: listing, reading, writing, archives.
//! - [`reaper`]: the expiry task.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: wiring, background tasks and graceful shutdown.

pub mod api;
pub mod archive;
pub mod config;
pub mod docker;
pub mod error;
pub mod exec;
pub mod files;
pub mod git;
pub mod metrics;
pub mod reaper;
pub mod registry;
pub mod sandbox;
pub mod server;
