//! Prometheus metrics: one registry, typed handles, and the text encoder behind `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Route template (`/api/v1/containers/{container_id}`), never the raw path.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels carrying one `kind` word (outcome, reason, result).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The outcome, reason or result.
    pub kind: &'static str,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by method and route.
    pub request_seconds: Family<RequestLabels, Histogram>,
    /// 1 while the Docker engine answers, else 0.
    pub docker_up: Gauge,
    /// Sandboxes currently running.
    pub sandboxes_active: Gauge,
    /// Sandbox creates by outcome (`ok`, `failed`).
    pub creates: Family<KindLabels, Counter>,
    /// Sandbox destroys by reason (`api`, `expired`, `reconcile`).
    pub destroys: Family<KindLabels, Counter>,
    /// Commands run, by kind (`sync`, `stream`, `timeout`).
    pub execs: Family<KindLabels, Counter>,
    /// Command duration.
    pub exec_seconds: Histogram,
    /// Time to fetch and check out a repository.
    pub clone_seconds: Histogram,
    /// Cache lookups by result: the mirror (`hit`, `miss`) and the checkout tars
    /// (`tree_hit`, `tree_miss`).
    pub cache: Family<KindLabels, Counter>,
    /// Time to make a snapshot.
    pub snapshot_seconds: Histogram,
    /// Forks by outcome of each copy (`ok`, `failed`).
    pub forks: Family<KindLabels, Counter>,
    /// Time of a whole fork (snapshot and every copy).
    pub fork_seconds: Histogram,
    /// Warm pool members ready to be claimed.
    pub pool_ready: Gauge,
    /// Creates' claims on the pool by result (`hit`, `miss`, `unpooled`).
    pub pool_claims: Family<KindLabels, Counter>,
    /// Time to make a claimed member the sandbox (rename, limits).
    pub pool_claim_seconds: Histogram,
    /// Time to make a pool member (create, start, agent hello).
    pub pool_refill_seconds: Histogram,
    /// Jobs kept, by status (`queued`, `running`, `completed`, `cancelled`).
    pub jobs_by_status: Family<KindLabels, Gauge>,
    /// Jobs submitted and finished (`submitted`, `completed`, `cancelled`).
    pub jobs: Family<KindLabels, Counter>,
    /// Job entries by outcome (`succeeded`, `failed`, `errored`, `cancelled`).
    pub job_entries: Family<KindLabels, Counter>,
    /// Time of one job entry (create, command, destroy).
    pub job_entry_seconds: Histogram,
    /// Image pulls by outcome (`ok`, `failed`).
    pub image_pulls: Family<KindLabels, Counter>,
    /// Bytes of the layers pulled.
    pub image_pull_bytes: Counter,
    /// Time of one image pull.
    pub image_pull_seconds: Histogram,
    /// Image builds by outcome (`ready`, `failed`, `cached`).
    pub image_builds: Family<KindLabels, Counter>,
    /// Time of one image build.
    pub image_build_seconds: Histogram,
    /// Connections through the egress proxies that were allowed.
    pub egress_allowed: Counter,
    /// Connections through the egress proxies that were refused.
    pub egress_denied: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("repobox");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let docker_up = Gauge::default();
        let sandboxes_active = Gauge::default();
        let creates = Family::<KindLabels, Counter>::default();
        let destroys = Family::<KindLabels, Counter>::default();
        let execs = Family::<KindLabels, Counter>::default();
        let exec_seconds = latency_histogram();
        let clone_seconds = latency_histogram();
        let cache = Family::<KindLabels, Counter>::default();
        let snapshot_seconds = latency_histogram();
        let forks = Family::<KindLabels, Counter>::default();
        registry.register(
            "snapshot_duration_seconds",
            "Time to make a snapshot",
            snapshot_seconds.clone(),
        );
        registry.register("fork_copies", "Fork copies by outcome", forks.clone());
        let fork_seconds = latency_histogram();
        registry.register(
            "fork_duration_seconds",
            "Time of a whole fork (snapshot and every copy)",
            fork_seconds.clone(),
        );
        let pool_ready = Gauge::default();
        let pool_claims = Family::<KindLabels, Counter>::default();
        let pool_claim_seconds = latency_histogram();
        let pool_refill_seconds = latency_histogram();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            request_seconds.clone(),
        );
        registry.register(
            "docker_up",
            "Whether the Docker engine answered the last check",
            docker_up.clone(),
        );
        registry.register(
            "sandboxes_active",
            "Sandboxes currently running",
            sandboxes_active.clone(),
        );
        registry.register(
            "sandbox_creates",
            "Sandbox creates by outcome",
            creates.clone(),
        );
        registry.register(
            "sandbox_destroys",
            "Sandbox destroys by reason",
            destroys.clone(),
        );
        registry.register("execs", "Commands run, by kind", execs.clone());
        registry.register(
            "exec_duration_seconds",
            "Command duration",
            exec_seconds.clone(),
        );
        registry.register(
            "clone_duration_seconds",
            "Time to fetch and check out a repository",
            clone_seconds.clone(),
        );
        registry.register(
            "git_cache_lookups",
            "Mirror cache lookups by result",
            cache.clone(),
        );
        registry.register(
            "pool_ready",
            "Warm pool members ready to be claimed",
            pool_ready.clone(),
        );
        registry.register(
            "pool_claims",
            "Claims on the warm pool by result",
            pool_claims.clone(),
        );
        registry.register(
            "pool_claim_duration_seconds",
            "Time to make a claimed pool member the sandbox",
            pool_claim_seconds.clone(),
        );
        registry.register(
            "pool_refill_duration_seconds",
            "Time to make a pool member",
            pool_refill_seconds.clone(),
        );
        let jobs_by_status = Family::<KindLabels, Gauge>::default();
        registry.register("jobs", "Jobs kept, by status", jobs_by_status.clone());
        let jobs = Family::<KindLabels, Counter>::default();
        registry.register(
            "job_transitions",
            "Jobs submitted and finished",
            jobs.clone(),
        );
        let job_entries = Family::<KindLabels, Counter>::default();
        registry.register("job_entries", "Job entries by outcome", job_entries.clone());
        // Entries include a checkout and a command: up to ~18 minutes.
        let job_entry_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 17));
        registry.register(
            "job_entry_duration_seconds",
            "Time of one job entry (create, command, destroy)",
            job_entry_seconds.clone(),
        );
        let image_pulls = Family::<KindLabels, Counter>::default();
        registry.register("image_pulls", "Image pulls by outcome", image_pulls.clone());
        let image_pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Bytes of the image layers pulled",
            image_pull_bytes.clone(),
        );
        let image_pull_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 15));
        registry.register(
            "image_pull_duration_seconds",
            "Time of one image pull",
            image_pull_seconds.clone(),
        );
        let image_builds = Family::<KindLabels, Counter>::default();
        registry.register(
            "image_builds",
            "Image builds by outcome",
            image_builds.clone(),
        );
        let image_build_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 15));
        registry.register(
            "image_build_duration_seconds",
            "Time of one image build",
            image_build_seconds.clone(),
        );
        let egress_allowed = Counter::default();
        registry.register(
            "egress_allowed",
            "Connections through the egress proxies that were allowed",
            egress_allowed.clone(),
        );
        let egress_denied = Counter::default();
        registry.register(
            "egress_denied",
            "Connections through the egress proxies that were refused",
            egress_denied.clone(),
        );
        Self {
            egress_allowed,
            egress_denied,
            image_pulls,
            image_pull_bytes,
            image_pull_seconds,
            image_builds,
            image_build_seconds,
            registry,
            requests,
            request_seconds,
            docker_up,
            sandboxes_active,
            creates,
            destroys,
            execs,
            exec_seconds,
            clone_seconds,
            cache,
            snapshot_seconds,
            forks,
            fork_seconds,
            pool_ready,
            pool_claims,
            pool_claim_seconds,
            pool_refill_seconds,
            jobs_by_status,
            jobs,
            job_entries,
            job_entry_seconds,
        }
    }

    /// Counts one event of a [`KindLabels`] family.
    pub fn count(family: &Family<KindLabels, Counter>, kind: &'static str) {
        family.get_or_create(&KindLabels { kind }).inc();
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}
