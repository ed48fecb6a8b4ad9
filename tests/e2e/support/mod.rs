//! The end-to-end harness: one shared repobox server and git server for the whole
//! test binary (started once, on a runtime of their own), plus `spawn_app` for tests
//! that need a server configured their own way.

pub(crate) mod fixtures;
pub(crate) mod git_server;
pub(crate) mod netns;
pub(crate) mod registry;

use std::sync::OnceLock;
use std::time::Duration;

use repobox::config::Config;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use self::fixtures::Simple;
use self::git_server::GitServer;

/// Things shared by every test: the git server and its fixtures.
pub(crate) struct World {
    /// The git server.
    pub git: GitServer,
    /// Commits of the `simple` fixture.
    pub simple: Simple,
    /// The shared repobox server.
    pub app: TestApp,
    _dirs: tempfile::TempDir,
}

static WORLD: OnceLock<World> = OnceLock::new();
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The runtime that owns the shared servers (tests' own runtimes come and go).
fn background() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The shared world, started on first use.
pub(crate) fn world() -> &'static World {
    // Built on a thread of its own: tests call this from inside their runtimes.
    WORLD.get_or_init(|| {
        std::thread::spawn(build_world)
            .join()
            .expect("starting the test world")
    })
}

fn build_world() -> World {
    {
        let dirs = tempfile::tempdir().unwrap();
        let repos = dirs.path().join("repos");
        std::fs::create_dir_all(&repos).unwrap();
        let simple = fixtures::simple(&repos);
        let git = background().block_on(GitServer::start(repos));
        let root = dirs.path().to_owned();
        let app = background().block_on(start_app(test_config(&root.join("shared")), None));
        app.0.wait_live_blocking();
        // The shared server never stops (the process just ends): what it leaves (a
        // sandbox of a test that failed before its guard ran) is removed once this
        // process is gone.
        remove_after_exit(&background().block_on(app.0.instance()));
        World {
            git,
            simple,
            app: app.0,
            _dirs: dirs,
        }
    }
}

/// Settings for a test server: loopback git allowed, private data and cache dirs, and
/// no warm pool. A pool keeps starting containers (one per claim, to refill), which on
/// a small machine slows every other test down; the tests about the pool, and those
/// that need a warm create, set `pool_size` on a server of their own.
pub(crate) fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::defaults();
    config.pool_size = 0;
    config.host = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.allowed_git_hosts = repobox::config::List(vec!["127.0.0.1".to_owned()]);
    config.data_dir = dir.join("data");
    config.cache_dir = dir.join("cache");
    config.shutdown_timeout_secs = 5;
    config
}

async fn start_app(
    config: Config,
    stop: Option<oneshot::Receiver<()>>,
) -> (TestApp, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = background().spawn(async move {
        let shutdown = async move {
            match stop {
                Some(stop) => {
                    let _ = stop.await;
                }
                None => std::future::pending().await,
            }
        };
        repobox::server::run(listener, config, shutdown)
            .await
            .expect("server failed");
    });
    (TestApp::new(base), handle)
}

/// A server of a test's own, stopped (gracefully) when dropped or by [`Self::stop`].
pub(crate) struct OwnedApp {
    /// Its client.
    pub app: TestApp,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl OwnedApp {
    /// Stops the server and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for OwnedApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a server with `config` (see [`test_config`]).
pub(crate) async fn spawn_app(config: Config) -> OwnedApp {
    let (tx, rx) = oneshot::channel();
    let data_dir = config.data_dir.clone();
    let (app, handle) = start_app(config, Some(rx)).await;
    app.wait_live().await;
    // A server still stopping when the test process ends (its last test dropped it)
    // would leave its warm pool behind.
    if let Ok(instance) = std::fs::read_to_string(data_dir.join("instance-id")) {
        remove_after_exit(instance.trim());
    }
    OwnedApp {
        app,
        stop: Some(tx),
        handle: Some(handle),
    }
}

/// A client of one repobox server.
#[derive(Clone)]
pub(crate) struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client.
    pub client: Client,
    /// Bearer key to send, if any.
    pub key: Option<String>,
    /// The server's instance id (from `/info`, asked once).
    instance: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl TestApp {
    /// A client of the server at `base`.
    pub(crate) fn at(base: String) -> Self {
        Self::new(base)
    }

    fn new(base: String) -> Self {
        // No pooling: tests run on runtimes of their own, and a pooled connection dies with
        // the runtime that opened it.
        let client = Client::builder()
            .timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Self {
            base,
            client,
            key: None,
            instance: Default::default(),
        }
    }

    /// The server's instance id: its containers are named `<sandbox id>.<instance>`.
    pub(crate) async fn instance(&self) -> String {
        self.instance
            .get_or_init(|| async {
                let (status, info) = self.get("/api/v1/info").await;
                assert_eq!(status, StatusCode::OK, "{info}");
                info["instance"].as_str().unwrap().to_owned()
            })
            .await
            .clone()
    }

    fn wait_live_blocking(&self) {
        background().block_on(self.wait_live());
    }

    /// Waits until the server answers.
    pub(crate) async fn wait_live(&self) {
        for _ in 0..200 {
            if let Ok(response) = self
                .client
                .get(format!("{}/api/v1/health/live", self.base))
                .send()
                .await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server at {} never came up", self.base);
    }

    /// A request builder for `path` (absolute, e.g. `/api/v1/info`).
    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// GET `path`, returning status and JSON body (`Null` when not JSON).
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.request(Method::GET, path).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET `path` as text (e.g. `/metrics`).
    pub(crate) async fn text(&self, path: &str) -> String {
        let response = self.request(Method::GET, path).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// POST JSON to `path`.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .request(Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST /containers with `body`; on 201 the sandbox is removed when the guard drops.
    pub(crate) async fn create(&self, body: Value) -> (StatusCode, Value, Option<SandboxGuard>) {
        let (status, value) = self.post("/api/v1/containers", &body).await;
        let guard = if status == StatusCode::CREATED {
            Some(self.guard(&value).await)
        } else {
            None
        };
        (status, value, guard)
    }

    /// Guards the sandbox a create answered with.
    pub(crate) async fn guard(&self, created: &Value) -> SandboxGuard {
        let id = created["container_id"].as_str().unwrap().to_owned();
        let name = format!("{id}.{}", self.instance().await);
        SandboxGuard { id, name }
    }

    /// Creates a sandbox that must succeed.
    pub(crate) async fn sandbox(&self, body: Value) -> (Value, SandboxGuard) {
        let (status, value, guard) = self.create(body).await;
        assert_eq!(status, StatusCode::CREATED, "create failed: {value}");
        (value, guard.unwrap())
    }

    /// Runs `command` in sandbox `id` (status must be 200); returns the ExecResult.
    pub(crate) async fn exec(&self, id: &str, command: &str) -> Value {
        self.exec_with(id, json!({ "command": command })).await
    }

    /// Runs a full execute request body; status must be 200.
    pub(crate) async fn exec_with(&self, id: &str, body: Value) -> Value {
        let (status, value) = self
            .post(&format!("/api/v1/containers/{id}/execute"), &body)
            .await;
        assert_eq!(status, StatusCode::OK, "execute failed: {value}");
        value
    }

    /// DELETE a sandbox; returns the status.
    pub(crate) async fn destroy(&self, id: &str) -> StatusCode {
        self.request(Method::DELETE, &format!("/api/v1/containers/{id}"))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Removes a sandbox's container when dropped, whatever the test's outcome. The
/// server forgets it once it is gone.
pub(crate) struct SandboxGuard {
    /// Sandbox id.
    pub id: String,
    /// Its container's name, `<id>.<instance>`: unique on the engine (ids are unique
    /// per server, not per engine). Labels cannot tell: a sandbox made from a pool
    /// member carries the member's.
    pub name: String,
}

impl SandboxGuard {
    /// Docker names of the sandbox's container (none once it is gone).
    pub(crate) fn containers(&self) -> Vec<String> {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-a",
                "--format",
                "{{.Names}}",
                "--filter",
                "label=repobox.managed=true",
                "--filter",
                &format!("name={}", self.name),
            ])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|name| *name == self.name)
            .map(str::to_owned)
            .collect()
    }

    /// The Docker name of the sandbox's container.
    pub(crate) fn docker_name(&self) -> String {
        self.containers().pop().expect("the sandbox's container")
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        for name in self.containers() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &name])
                .output();
        }
    }
}

/// Names of containers (running or not) carrying repobox's labels and `label=value`.
pub(crate) fn containers_with_label(label: &str, value: &str) -> Vec<String> {
    containers_with_labels(&[(label, value)])
}

/// Names of repobox's containers carrying every `label=value` given.
pub(crate) fn containers_with_labels(labels: &[(&str, &str)]) -> Vec<String> {
    let mut command = std::process::Command::new("docker");
    command.args([
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        "label=repobox.managed=true",
    ]);
    for (label, value) in labels {
        command.args(["--filter", &format!("label={label}={value}")]);
    }
    let out = command.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes every container and snapshot image of repobox instance `instance` once
/// this test process has exited (however it ends), by a watchdog shell of its own.
pub(crate) fn remove_after_exit(instance: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         docker ps -aq --filter label=repobox.instance={instance} | xargs -r docker rm -f; \
         docker images -q --filter label=repobox.snapshot.instance={instance} | xargs -r docker rmi -f",
        pid = std::process::id()
    );
    let _ = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// A fresh directory for a test's own server.
pub(crate) fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("repobox-test-")
        .disable_cleanup(std::env::var_os("KEEP_SCRATCH").is_some())
        .tempdir()
        .unwrap()
}

/// A unique name for this test's URLs.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `repobox serve` process of the test binary, killed (and waited for) when dropped,
/// also when the test fails.
pub(crate) struct Binary(pub std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `repobox` binary on `port` with the settings of a test server (data and
/// cache in `dir`, loopback git, no warm pool) and then `env` over them; its log goes
/// to `dir/server.log` (`KEEP_SCRATCH=1` keeps it).
pub(crate) fn start_binary(dir: &std::path::Path, port: u16, env: &[(&str, String)]) -> Binary {
    start_binary_under(&[], dir, port, env)
}

/// [`start_binary`] run through `wrapper` (a command and its arguments, such as
/// `prlimit --nofile=1024:1024 --`).
pub(crate) fn start_binary_under(
    wrapper: &[&str],
    dir: &std::path::Path,
    port: u16,
    env: &[(&str, String)],
) -> Binary {
    let log = || -> std::process::Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap()
            .into()
    };
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(env!("CARGO_BIN_EXE_repobox"));
            command
        }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_repobox")),
    };
    command
        .arg("serve")
        .env("POOL_SIZE", "0")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", dir.join("data"))
        .env("CACHE_DIR", dir.join("cache"))
        .env("ALLOWED_GIT_HOSTS", "127.0.0.1")
        .env("LOG_LEVEL", "info")
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdout(log())
        .stderr(log());
    for (name, value) in env {
        command.env(name, value);
    }
    Binary(command.spawn().expect("start repobox"))
}

/// A port free at the moment of asking.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
