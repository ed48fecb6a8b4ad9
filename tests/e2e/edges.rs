//! The edges of the service, tried as an attacker would (issue #26): each attack
//! either fails with the right 4xx or changes nothing.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support;

/// Half-open connections the slow-loris holds: more than the server's open-file limit.
const LORIS_SOCKETS: usize = 1100;
/// The server's open-file limit in the load test (a common default).
const SERVER_NOFILE: u64 = 1024;

/// Raises this process's soft open-file limit to its hard limit when it is below
/// `needed` (through `prlimit`: the crate forbids `unsafe`, so no `setrlimit`).
fn raise_nofile(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft: u64 = fields.next().unwrap().parse().unwrap();
    let hard = fields.next().unwrap().to_owned();
    if soft >= needed {
        return;
    }
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("prlimit");
    assert!(status.success(), "could not raise the open-file limit");
}

/// One slow-loris socket, reconnected whenever the server closes it, until `until`.
/// Returns how many times the server closed it.
async fn loris(port: u16, until: Instant) -> usize {
    let mut closed = 0;
    while Instant::now() < until {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if stream
            .write_all(b"GET /api/v1/containers HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            closed += 1;
            continue;
        }
        // Never finish the request; wait for the server to give up on it.
        let mut buf = [0u8; 256];
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(_) => closed += 1,
            Err(_) => return closed,
        }
    }
    closed
}

/// The load test: 1,100 half-open connections (more than the server's 1,024 open
/// files), re-opened as soon as the server closes them, while a keyed client's
/// requests keep answering within a second. Loopback only, bounded in time.
#[tokio::test]
async fn a_slow_loris_cannot_lock_out_a_keyed_client() {
    raise_nofile(LORIS_SOCKETS as u64 * 2 + 256);
    let dir = support::scratch();
    let port = support::free_port();
    let nofile = format!("--nofile={SERVER_NOFILE}:{SERVER_NOFILE}");
    let _server = support::start_binary_under(
        &["prlimit", &nofile, "--"],
        dir.path(),
        port,
        &[("API_KEYS", "edge-key".to_owned())],
    );
    let app = support::TestApp::at(format!("http://127.0.0.1:{port}"));
    app.wait_live().await;

    let until = Instant::now() + Duration::from_secs(15);
    let lorises: Vec<_> = (0..LORIS_SOCKETS)
        .map(|_| tokio::spawn(loris(port, until)))
        .collect();
    // Let the sockets pile up first.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let response = client
            .get(format!("http://127.0.0.1:{port}/api/v1/containers"))
            .bearer_auth("edge-key")
            .send()
            .await
            .expect("the keyed client was locked out");
        assert_eq!(response.status(), 200);
        eprintln!("keyed request: {:?}", started.elapsed());
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a keyed request took {slowest:?} under the slow-loris"
    );
    let mut closed = 0;
    for loris in lorises {
        closed += loris.await.unwrap();
    }
    // The server shed half-open connections instead of holding them all.
    assert!(closed > 0, "the server closed no half-open connection");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(
        !log.contains("accepting a connection failed"),
        "the server ran out of descriptors:\n{log}"
    );
}

/// The allow-list of the issue's report.
fn allowlisted_config(dir: &std::path::Path) -> repobox::config::Config {
    let mut config = support::test_config(dir);
    config.command_allowlist =
        repobox::config::List(["ls", "cat", "echo", "true"].map(str::to_owned).to_vec());
    config
}

/// Whether `path` exists in the sandbox, asked through an allowed command.
async fn exists(app: &support::TestApp, id: &str, path: &str) -> bool {
    let result = app
        .exec(id, &format!("ls -d {path} 2>/dev/null || true"))
        .await;
    result["stdout"].as_str().unwrap_or_default().contains(path)
}

#[tokio::test]
async fn the_allowlist_holds_for_the_terminal_and_for_forged_session_state() {
    let dir = support::scratch();
    let server = support::spawn_app(allowlisted_config(dir.path())).await;
    let app = &server.app;
    let url = support::world()
        .git
        .url(&support::unique("edges"), "simple");
    let (_, sandbox) = app.sandbox(serde_json::json!({ "repo_url": url })).await;
    let id = &sandbox.id;

    // The terminal would be a shell running anything: refused while `bash` is not listed.
    let response = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/containers/{id}/terminal"),
        )
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let session = |body: serde_json::Value| async move {
        let (status, created) = app
            .post(&format!("/api/v1/containers/{id}/sessions"), &body)
            .await;
        assert_eq!(status, 201, "{created}");
        created["session_id"].as_str().unwrap().to_owned()
    };
    let run = |session: String, command: String| async move {
        app.post(
            &format!("/api/v1/containers/{id}/sessions/{session}/execute"),
            &serde_json::json!({ "command": command }),
        )
        .await
    };

    // An honest session still carries its state under the allow-list.
    let honest = session(serde_json::json!({})).await;
    let (status, result) = run(
        honest.clone(),
        "x='a b'; arr=(1 2); cd /workspace && set -o pipefail".to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    let (status, result) = run(
        honest.clone(),
        "echo \"hi $x ${arr[1]} $PWD\"; [[ -o pipefail ]] && echo on".to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["stdout"], "hi a b 2 /workspace\non\n", "{result}");

    // 1. The state rewritten through the files API, then an allowed command.
    let forged = session(serde_json::json!({})).await;
    let state = format!("/.repobox/sessions/{forged}/state");
    let written = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/containers/{id}/files/raw?file_path={state}"),
        )
        .header("content-type", "application/octet-stream")
        .body("touch /workspace/pwned-by-files-api\n")
        .send()
        .await
        .unwrap();
    let (status, result) = run(forged.clone(), "true".to_owned()).await;
    if written.status().is_success() {
        assert_eq!(status, 403, "{result}");
        assert_eq!(result["code"], "command_not_allowed", "{result}");
    }
    assert!(!exists(app, id, "/workspace/pwned-by-files-api").await);

    // 2. The state appended by an allowed command that also disarms the save hook.
    let appended = session(serde_json::json!({})).await;
    let path = format!(
        "unset -f __rb_save; echo 'touch /workspace/pwned-by-append' >> /.repobox/sessions/{appended}/state"
    );
    let (status, result) = run(appended.clone(), path).await;
    assert_eq!(status, 200, "{result}");
    let (status, result) = run(appended.clone(), "true".to_owned()).await;
    assert_eq!(status, 403, "{result}");
    assert!(!exists(app, id, "/workspace/pwned-by-append").await);
}

/// A page in a developer's browser against a keyless loopback server: a rebound name,
/// a cross-site plain-text POST and a cross-site WebSocket are all refused.
#[tokio::test]
async fn a_web_page_cannot_reach_a_keyless_loopback_server() {
    let app = &support::world().app;
    let id = "repo-container-1-999";
    let client = reqwest::Client::new();
    let rebound = client
        .get(format!("{}/api/v1/containers", app.base))
        .header("host", "rebind.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    for path in [
        format!("/api/v1/containers/{id}/git/apply"),
        "/api/v1/jobs/job-1/cancel".to_owned(),
    ] {
        let posted = client
            .post(format!("{}{path}", app.base))
            .header("content-type", "text/plain")
            .header("origin", "https://attacker.example")
            .body("diff --git a/x b/x")
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 415, "{path}");
    }
    let upgrade = client
        .get(format!("{}/api/v1/containers/{id}/terminal", app.base))
        .header("origin", "https://attacker.example")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 403);
}

/// Credentials in a job's repository URL, for an entry that fails before its sandbox
/// exists: not in its results, neither answered nor in the results file on disk.
#[tokio::test]
async fn credentials_in_a_job_url_are_not_in_its_results() {
    let dir = support::scratch();
    let server = support::spawn_app(support::test_config(dir.path())).await;
    let app = &server.app;
    let base = support::world().git.url("edges-creds", "missing");
    let url = base.replacen("http://", "http://token-user:s3cr3t-T0KEN@", 1);
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &serde_json::json!({"repos": [{"repo_url": url}], "command": "true"}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    crate::jobs::wait_finished(app, &id, Duration::from_secs(60)).await;
    let (status, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
    assert_eq!(status, 200);
    assert_eq!(results["results"][0]["status"], "errored", "{results}");
    assert!(!results.to_string().contains("s3cr3t"), "{results}");
    let on_disk = dir
        .path()
        .join("data")
        .join("jobs")
        .join(format!("{id}.results.jsonl"));
    let written = std::fs::read_to_string(&on_disk).unwrap();
    assert!(
        !written.is_empty() && !written.contains("s3cr3t"),
        "{written}"
    );
}

/// Programs the repository's own config names for git, in the config itself and in a
/// file it includes, plus a hook: each touches a marker when git runs it.
const HOSTILE_GIT_CONFIG: &str = r#"set -e
cat >> .git/config <<'C'
[core]
	fsmonitor = "touch /tmp/rb-marker-fsmonitor; false"
	pager = "touch /tmp/rb-marker-pager; cat"
	sshCommand = "touch /tmp/rb-marker-ssh"
[filter "evil"]
	clean = "touch /tmp/rb-marker-clean; cat"
	smudge = "touch /tmp/rb-marker-smudge; cat"
	process = "touch /tmp/rb-marker-process"
[diff "evil"]
	textconv = "touch /tmp/rb-marker-textconv; cat"
	command = "touch /tmp/rb-marker-diffcommand"
[diff]
	external = "touch /tmp/rb-marker-external"
[include]
	path = more-config
C
printf '[filter "more"]\n\tclean = "touch /tmp/rb-marker-included; cat"\n' > .git/more-config
for hook in post-checkout post-index-change reference-transaction; do
  printf '#!/bin/sh\ntouch /tmp/rb-marker-hook\n' > .git/hooks/$hook && chmod +x .git/hooks/$hook
done
printf '* filter=evil diff=evil\n*.md filter=more\n' > .git/info/attributes
echo more >> README.md && echo new > new.txt
"#;

/// The server's own git commands (status, diff, apply, reset) run none of the programs
/// a repository's config names for git, while answering as usual.
#[tokio::test]
async fn the_servers_git_runs_nothing_the_repository_config_names() {
    let app = &support::world().app;
    let url = support::world()
        .git
        .url(&support::unique("edges-gitcfg"), "simple");
    let (_, sandbox) = app.sandbox(serde_json::json!({ "repo_url": url })).await;
    let id = &sandbox.id;
    let set_up = app.exec(id, HOSTILE_GIT_CONFIG).await;
    assert_eq!(set_up["exit_code"], 0, "{set_up}");

    let (status, before) = app
        .get(&format!("/api/v1/containers/{id}/git/status"))
        .await;
    assert_eq!(status, 200, "{before}");
    let paths: Vec<&str> = before["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"README.md") && paths.contains(&"new.txt"),
        "{before}"
    );

    let response = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/containers/{id}/git/diff"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patch = response.bytes().await.unwrap().to_vec();
    let text = String::from_utf8_lossy(&patch);
    assert!(
        text.contains("+more") && text.contains("+new"),
        "a plain diff, not a driver's output: {text}"
    );

    let (status, reset) = app
        .post(
            &format!("/api/v1/containers/{id}/reset"),
            &serde_json::json!({"processes": false}),
        )
        .await;
    assert_eq!(status, 200, "{reset}");

    let response = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/containers/{id}/git/apply"),
        )
        .header("content-type", "text/x-diff")
        .body(patch)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let applied: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["changes"], before["changes"], "{applied}");

    let markers = app
        .exec(
            id,
            "ls /tmp | grep rb-marker- || true; cat .git/config | grep -c fsmonitor",
        )
        .await;
    assert_eq!(
        markers["stdout"].as_str().unwrap().trim(),
        "1",
        "no marker, and the hostile config still in place: {markers}"
    );
}

/// The server's log lines, from the moment this is first called (one subscriber for
/// the test binary: lines of other tests running at the same time land here too).
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let installed = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        assert!(installed.is_ok(), "another subscriber is installed");
        logs
    })
    .clone()
}

struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => todo.push(path),
                Ok(kind)
                    if kind.is_file()
                        && std::fs::read(&path).is_ok_and(|bytes| {
                            bytes.windows(needle.len()).any(|w| w == needle)
                        }) =>
                {
                    found.push(path);
                }
                _ => {}
            }
        }
    }
    found
}

/// A job whose repository URL carries a token, run to its end: the token is in no
/// file of the server's data and cache directories (job request, results, sandbox
/// records, mirrors), neither while the entry runs nor after, nor in its log lines.
#[tokio::test]
async fn credentials_in_a_job_url_are_never_written() {
    let logs = captured_logs();
    let dir = support::scratch();
    let server = support::spawn_app(support::test_config(dir.path())).await;
    let app = &server.app;
    let base = support::world()
        .git
        .url(&support::unique("edges-creds-disk"), "simple");
    let url = base.replacen("http://", "http://token-user:s3cr3t-T0KEN@", 1);
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &serde_json::json!({"repos": [{"repo_url": url}], "command": "sleep 2; git log -1 --format=%H"}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view) = app.get(&format!("/api/v1/jobs/{id}")).await;
        if view["counts"]["running"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never ran: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let while_running = files_containing(dir.path(), b"s3cr3t-T0KEN");
    assert!(while_running.is_empty(), "{while_running:?}");
    crate::jobs::wait_finished(app, &id, Duration::from_secs(60)).await;
    let (_, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
    assert_eq!(results["results"][0]["status"], "succeeded", "{results}");
    assert!(
        dir.path()
            .join("data/jobs")
            .join(format!("{id}.json"))
            .exists(),
        "the job is on disk"
    );
    let after = files_containing(dir.path(), b"s3cr3t-T0KEN");
    assert!(after.is_empty(), "{after:?}");
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains(&id), "the job's lines were captured");
    assert!(!logs.contains("s3cr3t"), "a log line holds the token");
}

/// With the default `ALLOWED_IMAGES` (any image), a reference to a registry on a
/// host-only address is refused before the engine is asked: a listener standing in
/// for a service of the host's sees no connection.
#[tokio::test]
async fn an_image_on_a_host_only_registry_is_not_pulled() {
    let app = &support::world().app;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = support::world()
        .git
        .url(&support::unique("edges-hostonly"), "simple");
    for image in [
        format!("127.0.0.1:{port}/x:1"),
        format!("localhost:{port}/x:1"),
        format!("127.1:{port}/x:1"),
        format!("2130706433:{port}/x:1"),
        format!("[::ffff:127.0.0.1]:{port}/x:1"),
        "169.254.169.254/latest:1".to_owned(),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/containers",
                &serde_json::json!({"repo_url": url, "image": image}),
            )
            .await;
        assert_eq!(status, 400, "{image}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("ALLOWED_IMAGES"),
            "{body}"
        );
        let (status, body) = app
            .post(
                "/api/v1/jobs",
                &serde_json::json!({"repos": [{"repo_url": url}], "command": "true", "image": image}),
            )
            .await;
        assert_eq!(status, 400, "{image}: {body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
        "the host-only service was reached: {accepted:?}"
    );
}

/// A build may fetch nothing a create could not: a base outside `ALLOWED_IMAGES` (by
/// `FROM`, through a variable, or by `COPY --from`) and an `ADD` of a URL on the
/// host's network are refused with the reason before the engine sees the Dockerfile;
/// the HTTP listener standing in for a host service sees no connection.
#[tokio::test]
async fn a_build_fetches_no_base_outside_the_list_and_no_url() {
    let world = support::world();
    let dir = support::scratch();
    let mut config = support::test_config(dir.path());
    config.allow_image_builds = true;
    config.allowed_images = repobox::config::List(vec!["docker.io/library/debian:*".to_owned()]);
    let server = support::spawn_app(config).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = repobox::config::DEFAULT_BASE_IMAGE;
    for (dockerfile, reason) in [
        ("FROM evil/base:1\nRUN true\n".to_owned(), "ALLOWED_IMAGES"),
        ("ARG B=evil/base:1\nFROM $B\n".to_owned(), "variable"),
        (
            format!("FROM {base} AS one\ncopy \\\n  --from=evil/base:1 /x /x\n"),
            "ALLOWED_IMAGES",
        ),
        (
            format!("FROM {base}\nADD http://127.0.0.1:{port}/secret /secret\n"),
            "BUILD_NETWORK",
        ),
    ] {
        let name = support::unique("edges-build");
        support::fixtures::bare_repo(
            &world.git.root,
            &name,
            &[("Dockerfile", dockerfile.clone())],
        );
        let url = world.git.url(&support::unique("edges-build"), &name);
        let (status, body) = server
            .app
            .post(
                "/api/v1/images",
                &serde_json::json!({"repo_url": url, "from": "dockerfile"}),
            )
            .await;
        assert_eq!(status, 400, "{dockerfile}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(reason),
            "{dockerfile}: {body}"
        );
    }
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
        "the build reached the host's service: {accepted:?}"
    );
    server.stop().await;
}
