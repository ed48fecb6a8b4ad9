//! Configuration: read once at start-up from flags, the environment and `.env`.
//!
//! Every setting has a flag and an environment variable of the same name (the seed's
//! `DEBUG`, `HOST`, `PORT` and `DOCKER_BASE_IMAGE` keep theirs). Defaults are named
//! constants so that `example.env`, `/info` and the code cannot drift apart silently.
//! They belong to `repobox serve` (also what a bare `repobox` runs); the client
//! commands have settings of their own (see [`crate::cli`]). Nothing reads the
//! environment after [`crate::cli::Cli::load`] returns.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

pub use crate::backend::BackendKind;

/// The default sandbox image, built by `scripts/build-image.sh`.
pub const DEFAULT_BASE_IMAGE: &str = "repobox/sandbox:bookworm";

/// Largest `POOL_SIZE`: members are started containers, each holding memory.
pub const MAX_POOL_SIZE: usize = 64;

/// When images are pulled (`IMAGE_PULL_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull an image the engine lacks.
    IfMissing,
    /// Pull before every sandbox made on a named image.
    Always,
    /// Never pull: a missing image is refused.
    Never,
}

/// Where the host's cgroup tree is mounted (`BUILD_CGROUP_ROOT`).
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The network of build steps (`BUILD_NETWORK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildNetwork {
    /// No network.
    None,
    /// The engine's default bridge.
    Default,
}

/// The server's settings alone, as a command line of their own: what a bare `repobox`
/// (no subcommand) and [`Config::defaults`] read.
#[derive(Debug, Parser)]
#[command(name = "repobox")]
struct Settings {
    #[command(flatten)]
    config: Config,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The service's settings. Field docs double as `--help` text.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Debug mode: more verbose logs.
    #[arg(long, env = "DEBUG", default_value_t = false, action = clap::ArgAction::Set)]
    pub debug: bool,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,
    /// Image for sandboxes when a request names none.
    #[arg(long, env = "DOCKER_BASE_IMAGE", default_value = DEFAULT_BASE_IMAGE)]
    pub docker_base_image: String,
    /// Where sandboxes run: `docker` (the default), or `local` (a test backend: the
    /// agent as a child process of the server in namespaces of its own, with no
    /// isolation and no images; never for production).
    #[arg(long, env = "BACKEND", value_enum, default_value_t = BackendKind::Docker)]
    pub backend: BackendKind,
    /// Where the local backend keeps each sandbox's directory (`BACKEND=local`);
    /// empty: `<DATA_DIR>/local`.
    #[arg(long, env = "LOCAL_ROOT", default_value = "")]
    pub local_root: String,
    /// The kubeconfig file of the cluster (`BACKEND=kubernetes`); empty: the usual
    /// places (`~/.kube/config`, or the pod's service account when repobox runs in
    /// the cluster).
    #[arg(long, env = "KUBECONFIG", default_value = "")]
    pub kubeconfig: String,
    /// The namespace sandboxes' pods go in (`BACKEND=kubernetes`).
    #[arg(long, env = "KUBE_NAMESPACE", default_value = "repobox")]
    pub kube_namespace: String,
    /// The RuntimeClass of sandboxes' pods (e.g. one whose handler is gVisor's
    /// `runsc`); empty: the cluster's default runtime.
    #[arg(long, env = "KUBE_RUNTIME_CLASS", default_value = "")]
    pub kube_runtime_class: String,
    /// The image of the agent, copied into each pod by an init container
    /// (`BACKEND=kubernetes`); empty: `repobox/agent:<version>-<digest>`, built by
    /// `repobox agent-image | docker build -t "$(repobox agent-image --tag)" -`.
    #[arg(long, env = "KUBE_AGENT_IMAGE", default_value = "")]
    pub kube_agent_image: String,
    /// The pods' image pull policy: `IfNotPresent`, `Always` or `Never`.
    #[arg(long, env = "KUBE_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub kube_image_pull_policy: String,
    /// A pod's CPU, memory and disk requests, as a percentage of its limits (1–100).
    #[arg(long, env = "KUBE_REQUEST_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub kube_request_percent: u8,
    /// Bound on a pod's start: scheduling, image pulls, the agent's copy.
    #[arg(long, env = "KUBE_START_TIMEOUT_SECS", default_value_t = 120)]
    pub kube_start_timeout_secs: u64,
    /// Docker Engine address (`unix:///var/run/docker.sock`, `tcp://host:2375`).
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,
    /// OCI runtime for sandboxes (e.g. `runsc` for gVisor); empty: the engine's default.
    #[arg(long, env = "DOCKER_RUNTIME", default_value = "")]
    pub docker_runtime: String,
    /// Log format: `human` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `debug` when DEBUG is true.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Comma-separated API keys; when set, requests need `Authorization: Bearer <key>`.
    #[arg(long, env = "API_KEYS", default_value = "", value_parser = parse_list, hide_env_values = true)]
    pub api_keys: List,
    /// Comma-separated git hosts (`host` or `host:port`) sandboxes may clone from; `*` for any.
    #[arg(long, env = "ALLOWED_GIT_HOSTS", default_value = "github.com", value_parser = parse_list)]
    pub allowed_git_hosts: List,
    /// Comma-separated images a request may name, `*` matching any run of characters
    /// (e.g. `docker.io/library/*`); empty: any image.
    #[arg(long, env = "ALLOWED_IMAGES", default_value = "", value_parser = parse_list)]
    pub allowed_images: List,
    /// When a named image is pulled: `if-missing` (when not on the engine), `always`
    /// (before every sandbox made on it) or `never` (a missing image is refused).
    #[arg(long, env = "IMAGE_PULL_POLICY", value_enum, default_value_t = PullPolicy::IfMissing)]
    pub image_pull_policy: PullPolicy,
    /// Bound on one image pull.
    #[arg(long, env = "IMAGE_PULL_TIMEOUT_SECS", default_value_t = 600)]
    pub image_pull_timeout_secs: u64,
    /// Registry credentials for pulls: a Docker `config.json` (`auths`); read at each
    /// pull, never logged or returned. Empty: anonymous pulls.
    #[arg(long, env = "REGISTRY_AUTH_FILE", default_value = "")]
    pub registry_auth_file: String,
    /// Whether `POST /images` may build images from repositories' Dockerfiles and
    /// devcontainers (it runs the repository's own instructions on the engine).
    #[arg(long, env = "ALLOW_IMAGE_BUILDS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_image_builds: bool,
    /// Network of build steps: `none` (default) or `default` (the engine's bridge).
    #[arg(long, env = "BUILD_NETWORK", value_enum, default_value_t = BuildNetwork::None)]
    pub build_network: BuildNetwork,
    /// Most processes one build's steps may run together (a cgroup's `pids.max`).
    #[arg(long, env = "BUILD_PIDS_LIMIT", default_value_t = 512, value_parser = clap::value_parser!(i64).range(16..))]
    pub build_pids_limit: i64,
    /// Where the server sees the engine host's cgroup tree: builds make a cgroup
    /// there to limit their steps' processes (Docker's cgroupfs driver).
    #[arg(long, env = "BUILD_CGROUP_ROOT", default_value = DEFAULT_CGROUP_ROOT)]
    pub build_cgroup_root: std::path::PathBuf,
    /// Credentials for private repositories: a file of lines
    /// `https://<user>:<token>@<host>[/<path-prefix>]` (git's credential-store format);
    /// the server's fetches of a URL without credentials use the longest matching
    /// entry. Tokens never reach a sandbox, an answer, a log or a record. Empty: none.
    #[arg(long, env = "GIT_CREDENTIALS_FILE", default_value = "")]
    pub git_credentials_file: String,
    /// Bound on one image build.
    #[arg(long, env = "IMAGE_BUILD_TIMEOUT_SECS", default_value_t = 1800)]
    pub image_build_timeout_secs: u64,
    /// Most built images kept (failed ones included, until deleted); further builds
    /// answer 429.
    #[arg(long, env = "MAX_IMAGES", default_value_t = 100)]
    pub max_images: usize,
    /// Comma-separated programs commands may start (parsed as shell); empty: any command.
    #[arg(long, env = "COMMAND_ALLOWLIST", default_value = "", value_parser = parse_list)]
    pub command_allowlist: List,
    /// Comma-separated hosts sandboxes may reach through the egress proxy when they ask
    /// for `"network": {"allow": [...]}`: `host`, `*.domain`, `*` (any name), an IP
    /// address, each with an optional `:port` (default 80 and 443). A sandbox's entries
    /// must lie within these. Empty: allow-lists are refused (403).
    #[arg(long, env = "EGRESS_ALLOW", default_value = "", value_parser = EgressAllow::parse)]
    pub egress_allow: EgressAllow,
    /// Comma-separated `name=address` pairs the egress proxy resolves itself instead of
    /// asking DNS (a package mirror on a private address): the operator naming the
    /// address lets a name reach it. Empty: DNS alone.
    #[arg(long, env = "EGRESS_HOSTS", default_value = "", value_parser = parse_egress_hosts)]
    pub egress_hosts: EgressHosts,
    /// Whether a sandbox may ask for `"network": "bridge"`.
    #[arg(long, env = "ALLOW_NETWORK", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_network: bool,
    /// Most sandboxes that may exist at once; further creates answer 429.
    #[arg(long, env = "MAX_CONTAINERS", default_value_t = 50)]
    pub max_containers: usize,
    /// Largest `max_runtime_secs` a create may ask for.
    #[arg(long, env = "MAX_RUNTIME_SECS", default_value_t = 86_400)]
    pub max_runtime_secs: u64,
    /// `timeout_secs` of a command that names none.
    #[arg(long, env = "DEFAULT_EXEC_TIMEOUT_SECS", default_value_t = 30)]
    pub default_exec_timeout_secs: u64,
    /// Largest `timeout_secs` a command may ask for.
    #[arg(long, env = "MAX_EXEC_TIMEOUT_SECS", default_value_t = 3_600)]
    pub max_exec_timeout_secs: u64,
    /// Cap on each of stdout and stderr kept by `/execute`.
    #[arg(long, env = "MAX_OUTPUT_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_output_bytes: usize,
    /// Largest `stdin` of an execute request.
    #[arg(long, env = "MAX_STDIN_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_stdin_bytes: usize,
    /// Largest file `/files` returns inline; larger ones go through `/files/raw`.
    #[arg(long, env = "MAX_FILE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_file_bytes: u64,
    /// Largest JSON request body.
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Largest upload through `PUT /files/raw` or `PUT /archive`.
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// CPUs for a sandbox that asks for none.
    #[arg(long, env = "DEFAULT_CPUS", default_value_t = 1.0)]
    pub default_cpus: f64,
    /// Most CPUs a sandbox may ask for.
    #[arg(long, env = "MAX_CPUS", default_value_t = 4.0)]
    pub max_cpus: f64,
    /// Memory (MiB) for a sandbox that asks for none.
    #[arg(long, env = "DEFAULT_MEMORY_MB", default_value_t = 1024)]
    pub default_memory_mb: u64,
    /// Most memory (MiB) a sandbox may ask for.
    #[arg(long, env = "MAX_MEMORY_MB", default_value_t = 8192)]
    pub max_memory_mb: u64,
    /// How far the memory limits of all sandboxes together may go past the host's
    /// memory (a ratio: sandboxes rarely use their whole limit); a create beyond it, or
    /// one sandbox asking more than the host has, answers 409 `no_capacity`.
    #[arg(long, env = "MEMORY_OVERCOMMIT", default_value_t = 2.0)]
    pub memory_overcommit: f64,
    /// Process limit for a sandbox that asks for none.
    #[arg(long, env = "DEFAULT_PIDS", default_value_t = 512)]
    pub default_pids: i64,
    /// Largest process limit a sandbox may ask for.
    #[arg(long, env = "MAX_PIDS", default_value_t = 4096)]
    pub max_pids: i64,
    /// What (MiB) a sandbox may write (its writable layer, `/workspace` included) when
    /// it asks for no `disk_mb`; applied only where the engine can enforce it.
    #[arg(long, env = "DEFAULT_DISK_MB", default_value_t = 10240)]
    pub default_disk_mb: u64,
    /// Largest `disk_mb` a sandbox may ask for.
    #[arg(long, env = "MAX_DISK_MB", default_value_t = 102400)]
    pub max_disk_mb: u64,
    /// Most background processes running at once in one sandbox; further starts
    /// answer 429.
    #[arg(long, env = "MAX_PROCESSES", default_value_t = 64)]
    pub max_processes: usize,
    /// Bytes of each output stream of a background process kept for reading.
    #[arg(long, env = "PROCESS_OUTPUT_BYTES", default_value_t = 1024 * 1024)]
    pub process_output_bytes: u64,
    /// Most snapshots kept at once; further snapshots answer 429.
    #[arg(long, env = "MAX_SNAPSHOTS", default_value_t = 100)]
    pub max_snapshots: usize,
    /// Largest `count` of a fork.
    #[arg(long, env = "MAX_FORKS", default_value_t = 32)]
    pub max_forks: usize,
    /// Started sandboxes kept warm per pooled image, so that a create starts no
    /// container; 0 turns the pool off.
    #[arg(long, env = "POOL_SIZE", default_value_t = 2)]
    pub pool_size: usize,
    /// Comma-separated images kept warm besides `DOCKER_BASE_IMAGE` (each with
    /// `POOL_SIZE` members).
    #[arg(long, env = "POOL_IMAGES", default_value = "", value_parser = parse_list)]
    pub pool_images: List,
    /// Where sandbox records live (survives restarts).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Where mirrors of git repositories are cached.
    #[arg(long, env = "CACHE_DIR", default_value = "cache")]
    pub cache_dir: PathBuf,
    /// Disk budget (MiB) of the checkout cache: tars of recent checkouts, so that a
    /// create of an unchanged repository streams one instead of checking out again.
    #[arg(long, env = "TREE_CACHE_MB", default_value_t = 2048)]
    pub tree_cache_mb: u64,
    /// Disk budget (MiB) of the mirror cache: when the mirrors outgrow it, the least
    /// recently used ones not in use are removed (a later create fetches again).
    #[arg(long, env = "CACHE_MB", default_value_t = 20480)]
    pub cache_mb: u64,
    /// Most repositories in one job.
    #[arg(long, env = "MAX_JOB_REPOS", default_value_t = 1000)]
    pub max_job_repos: usize,
    /// Largest `concurrency` of a job.
    #[arg(long, env = "MAX_JOB_CONCURRENCY", default_value_t = 32)]
    pub max_job_concurrency: usize,
    /// Most sandboxes all jobs together hold at once (a share of `MAX_CONTAINERS`, so
    /// that a large job never starves interactive creates); 0: half of
    /// `MAX_CONTAINERS` (at least 1).
    #[arg(long, env = "MAX_JOB_CONTAINERS", default_value_t = 0)]
    pub max_job_containers: usize,
    /// Bytes of each output stream of a job entry's command kept in its result.
    #[arg(long, env = "JOB_OUTPUT_BYTES", default_value_t = 64 * 1024)]
    pub job_output_bytes: usize,
    /// Most jobs kept (finished ones included, until deleted); further jobs answer 429.
    #[arg(long, env = "MAX_JOBS", default_value_t = 200)]
    pub max_jobs: usize,
    /// Bound on each git step (fetch, checkout).
    #[arg(long, env = "GIT_TIMEOUT_SECS", default_value_t = 300)]
    pub git_timeout_secs: u64,
    /// Most client connections served at once. At the cap, a new connection closes
    /// the oldest one that has no request in progress (a client holding many
    /// half-sent requests cannot lock out another); when every connection is busy, new
    /// ones wait in the listen queue. Keep it well below the open-file limit
    /// (`ulimit -n`): it is lowered at start-up to leave room for the engine's sockets.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Bound on receiving a request's headers, counted from when the connection is
    /// ready for them (so it also closes a kept-alive connection idle that long).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Bound on a request body that sends nothing: a client that stops sending a body
    /// it announced gets an error after this long without a byte.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Comma-separated host names (the `Host` header, without the port) the server
    /// answers to when no `API_KEYS` are set, besides `localhost`, `127.0.0.1` and
    /// `[::1]`; `*` for any (not advisable: it re-opens DNS rebinding). Also the
    /// origins (by host) whose pages may open WebSockets and send state-changing
    /// requests.
    #[arg(long, env = "ALLOWED_HOSTS", default_value = "", value_parser = parse_list)]
    pub allowed_hosts: List,
    /// How long a shutdown waits for requests in flight.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,
}

/// A comma-separated list setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl List {
    /// The items.
    pub fn items(&self) -> &[String] {
        &self.0
    }
    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_list(raw: &str) -> Result<List, String> {
    Ok(List(
        raw.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

/// `EGRESS_ALLOW`, parsed once at start.
#[derive(Debug, Clone, Default)]
pub struct EgressAllow(pub std::sync::Arc<Vec<crate::egress::Entry>>);

impl EgressAllow {
    /// Parses the comma-separated entries; the error names the first bad one.
    pub fn parse(raw: &str) -> Result<EgressAllow, String> {
        parse_list(raw)?
            .items()
            .iter()
            .map(|entry| {
                crate::egress::Entry::parse(entry).map_err(|why| format!("EGRESS_ALLOW: {why}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|entries| EgressAllow(std::sync::Arc::new(entries)))
    }

    /// The entries.
    pub fn entries(&self) -> &[crate::egress::Entry] {
        &self.0
    }
}

/// `EGRESS_HOSTS`: names the egress proxy resolves itself.
#[derive(Debug, Clone, Default)]
pub struct EgressHosts(pub std::sync::Arc<std::collections::HashMap<String, std::net::IpAddr>>);

fn parse_egress_hosts(raw: &str) -> Result<EgressHosts, String> {
    crate::egress::parse_pinned(raw)
        .map(|pinned| EgressHosts(std::sync::Arc::new(pinned)))
        .map_err(|why| format!("EGRESS_HOSTS: {why}"))
}

impl Config {
    /// Settings from the environment and defaults alone, ignoring the command line:
    /// what a bare `repobox` serves with.
    pub fn defaults() -> Self {
        Settings::parse_from(["repobox"]).config
    }

    /// Checks relations between settings that clap cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(
                self.kube_image_pull_policy.as_str(),
                "IfNotPresent" | "Always" | "Never"
            ),
            "KUBE_IMAGE_PULL_POLICY must be IfNotPresent, Always or Never"
        );
        anyhow::ensure!(
            self.pool_size <= MAX_POOL_SIZE,
            "POOL_SIZE must be at most {MAX_POOL_SIZE}"
        );
        anyhow::ensure!(
            self.default_exec_timeout_secs >= 1,
            "DEFAULT_EXEC_TIMEOUT_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.default_exec_timeout_secs <= self.max_exec_timeout_secs,
            "DEFAULT_EXEC_TIMEOUT_SECS exceeds MAX_EXEC_TIMEOUT_SECS"
        );
        anyhow::ensure!(
            self.default_cpus > 0.0 && self.default_cpus <= self.max_cpus,
            "DEFAULT_CPUS must be in (0, MAX_CPUS]"
        );
        anyhow::ensure!(
            self.default_memory_mb >= 6 && self.default_memory_mb <= self.max_memory_mb,
            "DEFAULT_MEMORY_MB must be in [6, MAX_MEMORY_MB]"
        );
        anyhow::ensure!(
            self.memory_overcommit.is_finite() && self.memory_overcommit > 0.0,
            "MEMORY_OVERCOMMIT must be a positive number"
        );
        anyhow::ensure!(
            self.default_pids >= 1 && self.default_pids <= self.max_pids,
            "DEFAULT_PIDS must be in [1, MAX_PIDS]"
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "MAX_CONNECTIONS must be at least 1"
        );
        anyhow::ensure!(
            self.header_read_timeout_secs >= 1 && self.idle_timeout_secs >= 1,
            "HEADER_READ_TIMEOUT_SECS and IDLE_TIMEOUT_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.max_runtime_secs >= 1,
            "MAX_RUNTIME_SECS must be at least 1"
        );
        Ok(())
    }

    /// Sandboxes that jobs may hold at once: `MAX_JOB_CONTAINERS`, or half of
    /// `MAX_CONTAINERS`; never more than `MAX_CONTAINERS`.
    pub fn job_containers(&self) -> usize {
        let share = match self.max_job_containers {
            0 => self.max_containers.div_ceil(2),
            n => n,
        };
        share.clamp(1, self.max_containers.max(1))
    }

    /// Effective log filter.
    pub fn log_filter(&self) -> String {
        if self.debug && self.log_level == "info" {
            "debug,hyper=info,bollard=info".to_owned()
        } else {
            self.log_level.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_and_drop_blanks() {
        assert_eq!(parse_list(" a, b:80 ,,").unwrap().items(), ["a", "b:80"]);
        assert!(parse_list("").unwrap().is_empty());
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::defaults();
        config.validate().unwrap();
        assert_eq!(config.port, 8000);
        assert_eq!(config.docker_base_image, DEFAULT_BASE_IMAGE);
        assert_eq!(config.allowed_git_hosts.items(), ["github.com"]);
    }
}

#[cfg(test)]
mod example_env {
    use clap::CommandFactory;

    /// `example.env` lists every setting, with the default the code has.
    #[test]
    fn example_env_lists_every_setting_with_its_default() {
        let text = include_str!("../example.env");
        let listed: std::collections::HashMap<&str, &str> = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#') && line.contains('='))
            .filter_map(|line| line.split_once('='))
            .collect();
        let command = super::Settings::command();
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_str().unwrap();
            let value = listed
                .get(env)
                .unwrap_or_else(|| panic!("example.env does not list {env}"));
            let default: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            let default = default.join(",");
            let same = default == *value
                || default
                    .parse::<f64>()
                    .ok()
                    .zip(value.parse::<f64>().ok())
                    .is_some_and(|(a, b)| a == b);
            assert!(
                same,
                "example.env says {env}={value}, the code's default is {default:?}"
            );
        }
    }
}
