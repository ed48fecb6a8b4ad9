//! One server per backend kind, shared by the cases (started on first use, on a
//! runtime of its own), and one git server with the `simple` fixture.

use std::sync::OnceLock;

use crate::Kind;
use crate::support::fixtures::{self, Simple};
use crate::support::git_server::GitServer;
use crate::support::{OwnedApp, TestApp, spawn_app, test_config};

/// The git server and what the fixture holds.
pub(crate) struct Git {
    /// The server.
    pub server: GitServer,
    /// The `simple` fixture's commits.
    pub simple: Simple,
    _dir: tempfile::TempDir,
}

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static GIT: OnceLock<Git> = OnceLock::new();
static DOCKER: OnceLock<(OwnedApp, tempfile::TempDir)> = OnceLock::new();
static LOCAL: OnceLock<(OwnedApp, tempfile::TempDir)> = OnceLock::new();
static KUBERNETES: OnceLock<(OwnedApp, tempfile::TempDir)> = OnceLock::new();

/// The test cluster's kubeconfig (`scripts/kubernetes.sh up` prints it).
const KUBECONFIG: &str = "/var/lib/repobox-kube/admin.kubeconfig";

/// The runtime that owns the shared servers (each test's own runtime ends with it).
fn background() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Runs `future` on the background runtime, from a thread of its own (tests call
/// this from inside their runtimes).
fn on_background<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || background().block_on(future))
        .join()
        .expect("starting a shared server")
}

/// The shared git server.
pub(crate) fn git() -> &'static Git {
    GIT.get_or_init(|| {
        on_background(async {
            let dir = tempfile::tempdir().unwrap();
            let repos = dir.path().join("repos");
            std::fs::create_dir_all(&repos).unwrap();
            let simple = fixtures::simple(&repos);
            let server = GitServer::start(repos).await;
            Git {
                server,
                simple,
                _dir: dir,
            }
        })
    })
}

/// A URL of the `simple` fixture of this test's own.
pub(crate) fn simple_url(prefix: &str) -> String {
    git().server.url(&crate::support::unique(prefix), "simple")
}

/// Settings of a test server on `kind` in `dir`.
pub(crate) fn config(kind: Kind, dir: &std::path::Path) -> repobox::config::Config {
    let mut config = test_config(dir);
    config.backend = kind;
    // For `reaches_only_its_allow_list`: any name, and two names the proxy resolves to
    // the host's loopback (where the test's server listens) as an operator's mirror.
    config.egress_allow = repobox::config::EgressAllow::parse("*:*").unwrap();
    config.egress_hosts = repobox::config::EgressHosts(std::sync::Arc::new(
        [
            ("allowed.test".to_owned(), "127.0.0.1".parse().unwrap()),
            ("refused.test".to_owned(), "127.0.0.1".parse().unwrap()),
        ]
        .into(),
    ));
    if kind == Kind::Kubernetes {
        config.kubeconfig =
            std::env::var("REPOBOX_TEST_KUBECONFIG").unwrap_or(KUBECONFIG.to_owned());
        // The namespace `scripts/kubernetes.sh up` makes.
        config.kube_namespace = "repobox".to_owned();
        // The test cluster's images are the node's own.
        config.kube_image_pull_policy = "Never".to_owned();
    }
    config
}

/// The shared server of backend `kind`.
pub(crate) fn app(kind: Kind) -> TestApp {
    let cell = match kind {
        Kind::Docker => &DOCKER,
        Kind::Local => &LOCAL,
        Kind::Kubernetes => &KUBERNETES,
    };
    cell.get_or_init(|| {
        on_background(async move {
            let dir = crate::support::scratch();
            let app = spawn_app(config(kind, dir.path())).await;
            (app, dir)
        })
    })
    .0
    .app
    .clone()
}
