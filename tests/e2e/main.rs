//! End-to-end tests: the real server, a real Docker engine, real git over HTTP.
//!
//! Run with `cargo test` (one process: the servers are shared between tests).

mod agent;
mod cli;
mod containers;
mod containment;
mod depth;
mod edges;
mod egress;
mod exec;
mod files;
mod health;
mod images;
mod jobs;
mod mcp;
mod netns_hosts;
mod pool;
mod ports;
mod private;
mod processes;
mod repo;
mod restart;
mod sessions;
mod snapshots;
mod support;
mod terminal;
