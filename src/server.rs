//! Wiring: build the state, start the background tasks, serve until a shutdown
//! signal, then stop within a bound. Shutting down never destroys a sandbox: they
//! outlive the process and are adopted by the next one.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool;
use crate::reaper;
use crate::sandbox::Sandboxes;

/// How often the Docker watcher checks the engine.
const DOCKER_CHECK_PERIOD: Duration = Duration::from_secs(5);
/// How long after reconciling the engine is checked, at every [`DOCKER_CHECK_PERIOD`],
/// for containers of creates that the previous process had sent (see
/// `Sandboxes::sweep_leftovers`).
const LATE_SWEEP_WINDOW: Duration = Duration::from_secs(60);

/// The shortest listen queue.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `HOST:PORT` and serves until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let address = std::net::SocketAddr::new(config.host, config.port);
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    // A listen queue longer than the connection cap: while a flood of half-open
    // connections is shed (see `connections`), a new client waits in it instead of
    // having its handshake dropped (the kernel caps it at `net.core.somaxconn`).
    let backlog = u32::try_from(config.max_connections.saturating_mul(4))
        .unwrap_or(u32::MAX)
        .max(LISTEN_BACKLOG);
    let listener = socket.listen(backlog)?;
    run(listener, config, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let backend = connect_backend(&config).await?;
    let sandboxes = Arc::new(Sandboxes::open(config.clone(), backend, metrics.clone())?);
    let jobs = Arc::new(crate::job::Jobs::open(
        config.clone(),
        sandboxes.clone(),
        metrics.clone(),
    )?);
    jobs.start();
    let stop = CancellationToken::new();

    let readiness = Arc::new(api::health::Readiness::default());
    let mut tasks = JoinSet::new();
    tasks.spawn(reaper::run(sandboxes.clone(), stop.clone()));
    tasks.spawn(pool::run(sandboxes.clone(), stop.clone()));
    tasks.spawn(watch_docker(
        sandboxes.clone(),
        metrics.clone(),
        readiness.clone(),
        config.docker_base_image.clone(),
        stop.clone(),
    ));

    let state = AppState {
        config: config.clone(),
        sandboxes: sandboxes.clone(),
        metrics,
        jobs: jobs.clone(),
        started: Instant::now(),
        readiness,
    };
    let address = listener.local_addr()?;
    tracing::info!(%address, version = env!("CARGO_PKG_VERSION"), agent = crate::backend::AGENT_VERSION, "repobox listening");
    if !address.ip().is_loopback() && config.api_keys.is_empty() {
        tracing::warn!(
            %address,
            "serving on a non-loopback address without API_KEYS: anyone who can reach this port can run code in sandboxes; set API_KEYS or bind HOST=127.0.0.1"
        );
    }

    let signalled = CancellationToken::new();
    let limits = crate::connections::Limits::fitted(
        config.max_connections,
        Duration::from_secs(config.header_read_timeout_secs),
    );
    let server = crate::connections::serve(listener, api::app(state), limits, {
        let signalled = signalled.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            signalled.cancel();
        }
    });
    let bound = Duration::from_secs(config.shutdown_timeout_secs);
    tokio::select! {
        () = server => {}
        () = async { signalled.cancelled().await; tokio::time::sleep(bound).await } => {
            tracing::warn!(?bound, "requests still in flight at the shutdown bound; dropping them");
        }
    }
    stop.cancel();
    jobs.shutdown().await;
    sandboxes.images().shutdown().await;
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// Keeps the readiness finding and the `docker_up` gauge current and reconciles with Docker as soon as the
/// engine is reachable (at start, or later if it was down then).
async fn watch_docker(
    sandboxes: Arc<Sandboxes>,
    metrics: Arc<Metrics>,
    readiness: Arc<api::health::Readiness>,
    base_image: String,
    stop: CancellationToken,
) {
    let mut reconciled_at: Option<tokio::time::Instant> = None;
    loop {
        let reason = readiness.refresh(&sandboxes, &base_image).await;
        // Up: the engine answers (a missing base image is not the engine's fault).
        let up = match &reason {
            None => true,
            Some(_) => sandboxes
                .backend()
                .ping(Duration::from_secs(2))
                .await
                .is_ok(),
        };
        metrics.docker_up.set(i64::from(up));
        if up && !sandboxes.is_reconciled() {
            match sandboxes.reconcile().await {
                Ok(()) => {
                    tracing::info!(sandboxes = sandboxes.count(), "reconciled with the engine");
                    reconciled_at = Some(tokio::time::Instant::now());
                }
                Err(err) => tracing::warn!(%err, "reconciling with the engine failed; will retry"),
            }
        } else if up && reconciled_at.is_some_and(|at| at.elapsed() < LATE_SWEEP_WINDOW) {
            // A create the previous process sent goes on in the engine without it and
            // may finish after reconciliation listed the containers.
            if let Err(err) = sandboxes.sweep_leftovers().await {
                tracing::warn!(%err, "looking for leftovers of interrupted creates failed");
            }
        } else if !up {
            tracing::warn!("engine unreachable");
        }
        tokio::select! {
            () = tokio::time::sleep(DOCKER_CHECK_PERIOD) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The backend `config` names (`BACKEND`), connected: the one place an engine is
/// chosen.
async fn connect_backend(
    config: &crate::config::Config,
) -> anyhow::Result<std::sync::Arc<dyn crate::backend::Backend>> {
    Ok(match config.backend {
        crate::backend::BackendKind::Docker => std::sync::Arc::new(
            crate::docker::Runtime::connect(&config.docker_host)?
                .with_build_cgroup_root(&config.build_cgroup_root),
        ),
        crate::backend::BackendKind::Local => {
            let root = if config.local_root.is_empty() {
                config.data_dir.join("local")
            } else {
                std::path::PathBuf::from(&config.local_root)
            };
            std::sync::Arc::new(crate::backend::local::Local::new(&root)?)
        }
        crate::backend::BackendKind::Kubernetes => {
            let settings = crate::kubernetes::Settings {
                kubeconfig: (!config.kubeconfig.is_empty())
                    .then(|| std::path::PathBuf::from(&config.kubeconfig)),
                namespace: config.kube_namespace.clone(),
                agent_image: (!config.kube_agent_image.is_empty())
                    .then(|| config.kube_agent_image.clone()),
                pull_policy: config.kube_image_pull_policy.clone(),
                runtime_class: (!config.kube_runtime_class.is_empty())
                    .then(|| config.kube_runtime_class.clone()),
                request_percent: config.kube_request_percent,
                start_timeout: std::time::Duration::from_secs(config.kube_start_timeout_secs),
            };
            std::sync::Arc::new(crate::kubernetes::Kubernetes::connect(settings).await?)
        }
    })
}
