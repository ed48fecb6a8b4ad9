//! Sandboxes: create from git, checkout rules, hostile input, limits, expiry, restarts.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    TestApp, containers_with_label, scratch, spawn_app, test_config, unique, world,
};

/// `git` facts from inside a sandbox: (branch --show-current, rev-parse HEAD).
async fn git_state(app: &TestApp, id: &str) -> (String, String) {
    let result = app
        .exec(
            id,
            "echo \"$(git branch --show-current)\"; git rev-parse HEAD; git status --porcelain | wc -l",
        )
        .await;
    assert_eq!(result["exit_code"], 0, "{result}");
    let out = result["stdout"].as_str().unwrap().to_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[2], "0", "working tree is not clean: {result}");
    (lines[0].to_owned(), lines[1].to_owned())
}

#[tokio::test]
async fn default_branch_is_the_remotes_head() {
    let world = world();
    let url = world.git.url(&unique("default"), "simple");
    let (body, sandbox) = world.app.sandbox(json!({ "repo_url": url })).await;
    assert_eq!(body["status"], "running");
    assert_eq!(body["repo_url"], url);
    assert_eq!(body["branch"], "trunk");
    assert_eq!(body["commit"], Value::Null);
    assert_eq!(body["resolved_commit"], world.simple.trunk_head);
    assert_eq!(body["working_directory"], "/workspace");
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(body["image"], repobox::config::DEFAULT_BASE_IMAGE);
    assert_eq!(body["initial_command_result"], Value::Null);
    assert!(
        body["container_id"]
            .as_str()
            .unwrap()
            .starts_with("repo-container-")
    );
    assert_eq!(
        git_state(&world.app, &sandbox.id).await,
        ("trunk".to_owned(), world.simple.trunk_head.clone())
    );

    let log = world
        .app
        .exec(
            &sandbox.id,
            "git log --oneline | wc -l; cat README.md; git remote get-url origin",
        )
        .await;
    assert_eq!(
        log["stdout"].as_str().unwrap(),
        format!("2\n# simple\n\nA fixture repository.\n{url}\n")
    );

    let (status, got) = world
        .app
        .get(&format!("/api/v1/containers/{}", sandbox.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["status"], "running");
    assert_eq!(got["resolved_commit"], world.simple.trunk_head);

    let (status, list) = world.app.get("/api/v1/containers/").await;
    assert_eq!(status, StatusCode::OK);
    let listed = list["containers"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c["container_id"] == sandbox.id.as_str()),
        "{list}"
    );
    assert_eq!(list["total_count"].as_u64().unwrap() as usize, listed.len());
    assert!(list["active_count"].as_u64().unwrap() >= 1);

    assert_eq!(world.app.destroy(&sandbox.id).await, StatusCode::NO_CONTENT);
    assert_eq!(
        world
            .app
            .get(&format!("/api/v1/containers/{}", sandbox.id))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(world.app.destroy(&sandbox.id).await, StatusCode::NOT_FOUND);
    assert!(
        sandbox.containers().is_empty(),
        "container survived its destroy"
    );
    let (_, list) = world.app.get("/api/v1/containers").await;
    assert!(
        !list["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["container_id"] == sandbox.id.as_str())
    );
}

#[tokio::test]
async fn branch_and_commit_matrix() {
    let world = world();
    let simple = &world.simple;
    let url = world.git.url(&unique("matrix"), "simple");
    let cases = [
        (
            json!({"branch": "feature"}),
            Some("feature"),
            simple.feature_head.as_str(),
        ),
        (
            json!({"commit": simple.first}),
            Some("trunk"),
            simple.first.as_str(),
        ),
        (
            json!({"commit": &simple.first[..7]}),
            Some("trunk"),
            simple.first.as_str(),
        ),
        (
            json!({"commit": simple.feature_head.to_uppercase()}),
            None,
            simple.feature_head.as_str(),
        ),
        (
            json!({"branch": "feature", "commit": &simple.first[..10]}),
            Some("feature"),
            simple.first.as_str(),
        ),
        (
            json!({"branch": "trunk", "commit": simple.trunk_head}),
            Some("trunk"),
            simple.trunk_head.as_str(),
        ),
    ];
    for (mut request, branch, head) in cases {
        request["repo_url"] = json!(url);
        let (body, sandbox) = world.app.sandbox(request.clone()).await;
        assert_eq!(body["branch"], json!(branch), "{request}");
        assert_eq!(body["resolved_commit"], head, "{request}");
        assert_eq!(
            body["commit"],
            request.get("commit").cloned().unwrap_or(Value::Null),
            "{request}"
        );
        let (current, actual) = git_state(&world.app, &sandbox.id).await;
        assert_eq!(current, branch.unwrap_or(""), "{request}");
        assert_eq!(actual, head, "{request}");
    }
}

#[tokio::test]
async fn checkout_failures_are_clean_4xx_and_leave_nothing() {
    let world = world();
    let dir = scratch();
    let server = spawn_app(test_config(dir.path())).await;
    let app = &server.app;
    let prefix = unique("hostile");
    let url = world.git.url(&prefix, "simple");
    let missing = world.git.url(&prefix, "missing");
    let cases = [
        (
            json!({"repo_url": url, "branch": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "branch",
        ),
        (
            json!({"repo_url": url, "commit": "0123456789abcdef0123456789abcdef01234567"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "commit",
        ),
        (
            json!({"repo_url": url, "commit": "abcdef1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "commit",
        ),
        (
            json!({"repo_url": url, "branch": "trunk", "commit": world.simple.feature_head}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not on branch",
        ),
        (
            json!({"repo_url": missing}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing",
        ),
        (
            json!({"repo_url": "https://example.com/a/b.git"}),
            StatusCode::BAD_REQUEST,
            "ALLOWED_GIT_HOSTS",
        ),
        (
            json!({"repo_url": "file:///etc"}),
            StatusCode::BAD_REQUEST,
            "scheme",
        ),
        (
            json!({"repo_url": "ssh://127.0.0.1/x.git"}),
            StatusCode::BAD_REQUEST,
            "scheme",
        ),
        (
            json!({"repo_url": "git://127.0.0.1/x.git"}),
            StatusCode::BAD_REQUEST,
            "scheme",
        ),
        (
            json!({"repo_url": "ext::sh -c touch% /tmp/pwned"}),
            StatusCode::BAD_REQUEST,
            "repo_url",
        ),
        (
            json!({"repo_url": "git@127.0.0.1:x.git"}),
            StatusCode::BAD_REQUEST,
            "repo_url",
        ),
        (
            json!({"repo_url": "--upload-pack=touch /tmp/pwned"}),
            StatusCode::BAD_REQUEST,
            "repo_url",
        ),
        (
            json!({"repo_url": url, "branch": "--upload-pack=touch /tmp/pwned"}),
            StatusCode::BAD_REQUEST,
            "branch",
        ),
        (
            json!({"repo_url": url, "branch": "main; rm -rf /"}),
            StatusCode::BAD_REQUEST,
            "branch",
        ),
        (
            json!({"repo_url": url, "branch": "$(id)"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "does not exist",
        ),
        (
            json!({"repo_url": url, "branch": "-c core.sshCommand=touch"}),
            StatusCode::BAD_REQUEST,
            "branch",
        ),
        (
            json!({"repo_url": url, "commit": "--upload-pack=x"}),
            StatusCode::BAD_REQUEST,
            "commit",
        ),
        (
            json!({"repo_url": url, "commit": "$(id)"}),
            StatusCode::BAD_REQUEST,
            "commit",
        ),
        (
            json!({"repo_url": url, "max_runtime_secs": 0}),
            StatusCode::BAD_REQUEST,
            "max_runtime_secs",
        ),
        (
            json!({"repo_url": url, "max_runtime_secs": -5}),
            StatusCode::BAD_REQUEST,
            "max_runtime_secs",
        ),
        (
            json!({"repo_url": url, "max_runtime_secs": 10_000_000}),
            StatusCode::BAD_REQUEST,
            "max_runtime_secs",
        ),
        (
            json!({"repo_url": url, "environment_vars": {"1BAD": "x"}}),
            StatusCode::BAD_REQUEST,
            "environment_vars",
        ),
        (
            json!({"repo_url": url, "network": "bridge"}),
            StatusCode::BAD_REQUEST,
            "ALLOW_NETWORK",
        ),
        (
            json!({"repo_url": url, "network": "host"}),
            StatusCode::BAD_REQUEST,
            "network",
        ),
        (
            json!({"repo_url": url, "resources": {"memory_mb": 1_000_000}}),
            StatusCode::BAD_REQUEST,
            "memory_mb",
        ),
        (
            // Pulled (IMAGE_PULL_POLICY=if-missing), and the registry cannot be had.
            json!({"repo_url": url, "image": "no-such-image:never"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot pull image \"no-such-image:never\"",
        ),
    ];
    for (request, expected, needle) in cases {
        let started = Instant::now();
        let (status, body) = app.post("/api/v1/containers", &request).await;
        assert_eq!(status, expected, "{request} -> {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{request}: detail {detail:?} should mention {needle:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{request} took {:?}",
            started.elapsed()
        );
    }
    assert!(
        !std::path::Path::new("/tmp/pwned").exists(),
        "an injected command ran"
    );
    for repo in [&url, &missing] {
        assert!(
            containers_with_label("repobox.repo_url", repo).is_empty(),
            "containers left for {repo}"
        );
    }
    let (_, list) = app.get("/api/v1/containers").await;
    assert_eq!(list["total_count"], 0, "{list}");
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "temporary checkouts left: {tmp:?}");
    let records: Vec<_> = std::fs::read_dir(dir.path().join("data/sandboxes"))
        .unwrap()
        .collect();
    assert!(records.is_empty(), "records left: {records:?}");
    let locks = std::process::Command::new("find")
        .arg(dir.path().join("cache"))
        .args(["-name", "*.lock"])
        .output()
        .unwrap();
    assert!(
        locks.stdout.is_empty(),
        "git locks left: {}",
        String::from_utf8_lossy(&locks.stdout)
    );
    server.stop().await;
}

#[tokio::test]
async fn credentials_in_urls_are_never_returned() {
    let world = world();
    let url = world
        .git
        .url(&unique("creds"), "simple")
        .replace("http://", "http://user:s3cret@");
    let (body, sandbox) = world.app.sandbox(json!({ "repo_url": url })).await;
    assert!(!body.to_string().contains("s3cret"), "{body}");
    let origin = world
        .app
        .exec(&sandbox.id, "git remote get-url origin; cat .git/config")
        .await;
    assert!(
        !origin["stdout"].as_str().unwrap().contains("s3cret"),
        "{origin}"
    );
}

#[tokio::test]
async fn concurrent_creates_of_one_repository_are_all_correct() {
    let world = world();
    let url = world.git.url(&unique("concurrent"), "simple");
    let creates = (0..10).map(|i| {
        let branch = if i % 2 == 0 { "trunk" } else { "feature" };
        let app = world.app.clone();
        let url = url.clone();
        async move {
            (
                branch,
                app.create(json!({ "repo_url": url, "branch": branch }))
                    .await,
            )
        }
    });
    let results = futures_util::future::join_all(creates).await;
    let mut ids = std::collections::HashSet::new();
    let mut guards = Vec::new();
    for (branch, (status, body, guard)) in results {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let expected = if branch == "trunk" {
            &world.simple.trunk_head
        } else {
            &world.simple.feature_head
        };
        assert_eq!(&body["resolved_commit"], expected);
        let guard = guard.unwrap();
        assert_eq!(
            git_state(&world.app, &guard.id).await,
            (branch.to_owned(), expected.clone())
        );
        assert!(ids.insert(guard.id.clone()), "duplicate id {}", guard.id);
        guards.push(guard);
    }
}

#[tokio::test]
async fn a_second_create_reuses_the_mirror() {
    let dir = scratch();
    let server = spawn_app(test_config(dir.path())).await;
    let world = world();
    let url = world.git.url(&unique("cache"), "simple");
    let lookups = |kind: &'static str| {
        let app = server.app.clone();
        async move {
            let text = app.text("/metrics").await;
            let line = format!("repobox_git_cache_lookups_total{{kind=\"{kind}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map_or(0, |n| n.parse::<u64>().unwrap())
        }
    };
    let started = Instant::now();
    let (_, first) = server.app.sandbox(json!({ "repo_url": url })).await;
    let cold = started.elapsed();
    assert_eq!((lookups("miss").await, lookups("hit").await), (1, 0));
    assert_eq!(
        (lookups("tree_miss").await, lookups("tree_hit").await),
        (1, 0)
    );
    let trees = || {
        std::fs::read_dir(dir.path().join("cache/trees"))
            .unwrap()
            .count()
    };
    assert_eq!(trees(), 1, "the checkout's tar is kept for the next create");
    let started = Instant::now();
    let (_, second) = server.app.sandbox(json!({ "repo_url": url })).await;
    let warm = started.elapsed();
    assert_eq!(
        (lookups("miss").await, lookups("hit").await),
        (1, 1),
        "the second create fetched from scratch"
    );
    assert_eq!(
        (lookups("tree_miss").await, lookups("tree_hit").await),
        (1, 1),
        "the second create checked out again"
    );
    assert_eq!(
        git_state(&server.app, &second.id).await.1,
        world.simple.trunk_head
    );
    // Not a timing assertion: the benchmark measures speed; these are for the log.
    eprintln!("create cold {cold:?}, warm {warm:?}");
    drop((first, second));
    server.stop().await;
}

#[tokio::test]
async fn sandboxes_expire_on_time() {
    let world = world();
    let url = world.git.url(&unique("expiry"), "simple");
    let (body, sandbox) = world
        .app
        .sandbox(json!({ "repo_url": url, "max_runtime_secs": 3 }))
        .await;
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let created_at =
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires_at - created_at).num_seconds(), 3);
    let path = format!("/api/v1/containers/{}", sandbox.id);
    loop {
        let (status, _) = world.app.get(&path).await;
        let now = chrono::Utc::now();
        if status == StatusCode::NOT_FOUND {
            let late = now.signed_duration_since(expires_at);
            assert!(
                late < chrono::Duration::milliseconds(1500),
                "destroyed {late} after expires_at"
            );
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            now < expires_at + chrono::Duration::seconds(5),
            "still there long after expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sandbox.containers().is_empty(),
        "expired container still exists"
    );
    let (_, list) = world.app.get("/api/v1/containers").await;
    assert!(!list.to_string().contains(&sandbox.id));
}

#[tokio::test]
async fn the_container_cap_answers_429() {
    let world = world();
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.max_containers = 1;
    let server = spawn_app(config).await;
    let url = world.git.url(&unique("cap"), "simple");
    let (_, first) = server.app.sandbox(json!({ "repo_url": url })).await;
    let (status, body, _) = server.app.create(json!({ "repo_url": url })).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(containers_with_label("repobox.repo_url", &url).len(), 1);
    assert_eq!(server.app.destroy(&first.id).await, StatusCode::NO_CONTENT);
    let (status, _, _second) = server.app.create(json!({ "repo_url": url })).await;
    assert_eq!(status, StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn hardening_is_visible_from_inside() {
    let world = world();
    let url = world.git.url(&unique("hardening"), "simple");
    let (_, sandbox) = world
        .app
        .sandbox(
            json!({ "repo_url": url, "resources": {"memory_mb": 300, "pids": 100, "cpus": 0.5} }),
        )
        .await;
    let probe = world
        .app
        .exec(
            &sandbox.id,
            r#"grep CapEff /proc/self/status | awk '{print $2}'
ls /sys/class/net | tr '\n' ' '; echo
cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max
cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
grep NoNewPrivs /proc/self/status | awk '{print $2}'
ps -o comm= -p 1
test -S /var/run/docker.sock && echo socket || echo no-socket"#,
        )
        .await;
    let out = probe["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{probe}");
    let cap_eff = u64::from_str_radix(lines[0], 16).unwrap();
    // CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7.
    assert_eq!(cap_eff, 0b1111_1011, "CapEff {}", lines[0]);
    assert_eq!(lines[1].trim(), "lo", "network interfaces: {}", lines[1]);
    assert_eq!(lines[2], "100");
    assert_eq!(lines[3], (300u64 * 1024 * 1024).to_string());
    assert_eq!(lines[4], "1", "no_new_privs");
    assert_ne!(
        lines[5], "sleep",
        "PID 1 should be an init, not the keep-alive"
    );
    assert_eq!(lines[6], "no-socket");
}

#[tokio::test]
async fn a_stopped_container_reads_failed_with_a_reason_and_refuses_commands() {
    let world = world();
    let url = world.git.url(&unique("stopped"), "simple");
    let (_, sandbox) = world.app.sandbox(json!({ "repo_url": url })).await;
    let out = std::process::Command::new("docker")
        .args(["stop", "-t", "0", &sandbox.docker_name()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (status, body) = world
        .app
        .get(&format!("/api/v1/containers/{}", sandbox.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Its agent is gone with it: the sandbox failed, and says why.
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["status_reason"].as_str().unwrap().contains("agent"),
        "{body}"
    );
    let (status, body) = world
        .app
        .post(
            &format!("/api/v1/containers/{}/execute", sandbox.id),
            &json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(world.app.destroy(&sandbox.id).await, StatusCode::NO_CONTENT);
}

/// Whether the engine has the gVisor runtime registered (`scripts/setup-docker.sh`
/// registers it where Debian's `runsc` works).
fn runsc_registered() -> bool {
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .expect("docker info");
    String::from_utf8_lossy(&out.stdout).contains("\"runsc\"")
}

// Ignored by a plain `cargo test` (not every engine has gVisor); `make test` runs it,
// after `scripts/setup-docker.sh` has registered runsc, and there it fails rather than
// skip when the runtime is missing.
#[tokio::test]
#[ignore = "needs Docker's runsc runtime; make test runs it"]
async fn sandboxes_run_under_gvisor_with_docker_runtime_runsc() {
    assert!(
        runsc_registered(),
        "the engine has no runsc runtime (scripts/setup-docker.sh registers it)"
    );
    let world = world();
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.docker_runtime = "runsc".to_owned();
    // What is checked below is how the pool copes with gVisor.
    config.pool_size = 2;
    let server = spawn_app(config).await;
    let url = world.git.url(&unique("gvisor"), "simple");
    let (_, sandbox) = server.app.sandbox(json!({ "repo_url": url })).await;
    let result = server
        .app
        .exec(
            &sandbox.id,
            "dmesg | head -1; git rev-parse HEAD; cat README.md | head -1",
        )
        .await;
    assert_eq!(
        result["stdout"],
        format!(
            "[    0.000000] Starting gVisor...\n{}\n# simple\n",
            world.simple.trunk_head
        ),
        "{result}"
    );
    let started = Instant::now();
    let result = server
        .app
        .exec_with(
            &sandbox.id,
            json!({"command": "sleep 300 & sleep 30", "timeout_secs": 1}),
        )
        .await;
    assert_eq!(result["timed_out"], true);
    assert!(started.elapsed() < Duration::from_secs(5));
    let left = server
        .app
        .exec(&sandbox.id, "ps -eo args | grep -c '^sleep 30' || true")
        .await;
    assert_eq!(left["stdout"], "0\n", "{left}");
    // gVisor's runtime cannot change a running container's limits (`docker update`):
    // a create with other limits than the defaults still works (the first one finds
    // out and takes the ordinary path), and after it such creates skip the pool.
    let custom = json!({ "repo_url": url, "resources": {"memory_mb": 300, "pids": 77} });
    for _ in 0..2 {
        let (_, other) = server.app.sandbox(custom.clone()).await;
        assert_eq!(server.app.exec(&other.id, "true").await["exit_code"], 0);
    }
    let metrics = server.app.text("/metrics").await;
    assert!(
        metrics.contains("repobox_pool_claims_total{kind=\"unpooled\"} 1"),
        "{metrics}"
    );
    drop(sandbox);
    server.stop().await;
}

#[tokio::test]
async fn a_git_server_that_hangs_fails_the_create_in_bounded_time() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stuck.git", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.git_timeout_secs = 2;
    let server = spawn_app(config).await;
    let started = Instant::now();
    let (status, body, _) = server.app.create(json!({ "repo_url": url })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("did not finish"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(containers_with_label("repobox.repo_url", &url).is_empty());
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    held.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_new_commit_upstream_is_seen_by_the_next_create() {
    let world = world();
    let name = unique("moving");
    let bare = world.git.root.join(format!("{name}.git"));
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(world.git.root.join("simple.git"))
        .arg(&bare)
        .status()
        .unwrap();
    assert!(copied.success());
    let url = world.git.url("x", &name);
    let (first, _a) = world.app.sandbox(json!({ "repo_url": url })).await;
    assert_eq!(first["resolved_commit"], world.simple.trunk_head);

    // A new commit on trunk, made in the bare repository itself.
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&bare)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let tree = git(&["rev-parse", "trunk^{tree}"]);
    let new = git(&["commit-tree", &tree, "-p", "trunk", "-m", "upstream moved"]);
    git(&["update-ref", "refs/heads/trunk", &new]);

    let (second, b) = world.app.sandbox(json!({ "repo_url": url })).await;
    assert_eq!(second["resolved_commit"], new.as_str());
    assert_eq!(
        git_state(&world.app, &b.id).await,
        ("trunk".to_owned(), new.clone())
    );
    let log = world
        .app
        .exec(&b.id, "git log -1 --format=%s; git rev-parse origin/trunk")
        .await;
    assert_eq!(log["stdout"], format!("upstream moved\n{new}\n"));
}

#[tokio::test]
async fn an_unchanged_cached_repository_costs_one_look_at_the_remote() {
    let world = world();
    let prefix = unique("one-look");
    let url = world.git.url(&prefix, "simple");
    let (_, _first) = world.app.sandbox(json!({ "repo_url": url })).await;
    let cloned = world.git.commands(&prefix).len();
    assert!(cloned >= 1);
    // Unchanged: the remote's refs are listed once and nothing is fetched.
    let (_, _second) = world.app.sandbox(json!({ "repo_url": url })).await;
    assert_eq!(world.git.commands(&prefix)[cloned..], ["ls-refs"]);
    // A full commit already in the mirror: the remote is not asked at all.
    let (_, _third) = world
        .app
        .sandbox(json!({ "repo_url": url, "commit": world.simple.first }))
        .await;
    assert_eq!(world.git.commands(&prefix).len(), cloned + 1);
}

/// What `dd` wrote before it stopped, in MiB, from its `N bytes (…) copied` line.
fn mib_written(dd_output: &str) -> u64 {
    let line = dd_output
        .lines()
        .find(|line| line.contains("bytes") && line.contains("copied"))
        .unwrap_or_else(|| panic!("no dd summary in {dd_output:?}"));
    let bytes: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    bytes / (1024 * 1024)
}

#[tokio::test]
async fn disk_limits_are_enforced_or_refused_never_pretended() {
    let world = world();
    let app = &world.app;
    let (_, info) = app.get("/api/v1/info").await;
    let limits = &info["disk_limits"];
    // Whether the engine can: its storage driver says (scripts/setup-docker.sh puts
    // it on btrfs where it starts the engine, as in CI).
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{.Driver}} {{json .DriverStatus}}"])
        .output()
        .unwrap();
    let storage = String::from_utf8_lossy(&out.stdout).into_owned();
    let can = storage.starts_with("btrfs")
        || (storage.starts_with("overlay2") && storage.contains(r#"["Backing Filesystem","xfs"]"#));
    assert_eq!(limits["enforced"] == true, can, "{limits} on {storage}");
    let url = world.git.url(&unique("disk"), "simple");
    let request = json!({"repo_url": url, "resources": {"disk_mb": 64}});
    if can {
        let (_, small) = app.sandbox(request).await;
        let (_, other) = app.sandbox(json!({ "repo_url": url })).await;
        let fill = json!({"command": "dd if=/dev/zero of=/workspace/big bs=1M count=200 2>&1", "timeout_secs": 60});
        let result = app.exec_with(&small.id, fill.clone()).await;
        let output = result["stdout"].as_str().unwrap();
        // ENOSPC with overlay2's project quotas, EDQUOT with btrfs quota groups.
        assert!(
            output.contains("No space left on device") || output.contains("Disk quota exceeded"),
            "{result}"
        );
        // The limit is what the sandbox may write: the image's own files do not
        // count against it, and nothing much past it gets through.
        let written = mib_written(output);
        assert!(
            (48..=64).contains(&written),
            "wrote {written} MiB: {output}"
        );
        // The sandbox goes on working (its files read, a removal frees its space),
        // and the sandbox beside it writes what it likes.
        assert_eq!(app.exec(&small.id, "cat README.md").await["exit_code"], 0);
        let freed = app
            .exec(
                &small.id,
                "rm /workspace/big && dd if=/dev/zero of=/workspace/again bs=1M count=16 2>&1",
            )
            .await;
        assert_eq!(freed["exit_code"], 0, "{freed}");
        let result = app.exec_with(&other.id, fill).await;
        assert_eq!(result["exit_code"], 0, "{result}");
        assert_eq!(mib_written(result["stdout"].as_str().unwrap()), 200);
    } else {
        // Said plainly in /info, and a create that asks for a limit is refused.
        let reason = limits["reason"].as_str().unwrap();
        assert!(reason.contains("btrfs"), "{limits}");
        let (status, error, _guard) = app.create(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert!(
            error["detail"]
                .as_str()
                .unwrap()
                .contains("cannot be enforced"),
            "{error}"
        );
        eprintln!("disk limits not enforced on this engine: {reason}");
    }
}

#[tokio::test]
async fn lifetimes_can_be_extended_shortened_and_removed() {
    let world = world();
    let dir = scratch();
    let server = spawn_app(test_config(dir.path())).await;
    let app = &server.app;
    let url = world.git.url(&unique("lifetime"), "simple");
    let (created, kept) = app
        .sandbox(json!({"repo_url": url, "max_runtime_secs": 6}))
        .await;
    let deadline =
        chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    let (_, shortened) = app.sandbox(json!({"repo_url": url})).await;
    let (_, forever) = app
        .sandbox(json!({"repo_url": url, "max_runtime_secs": 8}))
        .await;
    let patch = |id: &str, body: Value| {
        let app = app.clone();
        let id = id.to_owned();
        async move {
            let response = app
                .request(reqwest::Method::PATCH, &format!("/api/v1/containers/{id}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // Bad input first: nothing changes.
    for body in [
        json!({}),
        json!({"max_runtime_secs": 0}),
        json!({"max_runtime_secs": "x"}),
        json!({"max_runtime_secs": 86401}),
    ] {
        let (status, error) = patch(&kept.id, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
    }
    let (status, _) = patch("repo-container-1-999999", json!({"max_runtime_secs": 5})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Extended at the last moment before its deadline: it lives on.
    let left =
        deadline.signed_duration_since(chrono::Utc::now()) - chrono::Duration::milliseconds(300);
    tokio::time::sleep(left.to_std().unwrap_or_default()).await;
    let (status, body) = patch(&kept.id, json!({"max_runtime_secs": 600})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        expires > chrono::Utc::now() + chrono::Duration::seconds(590),
        "{body}"
    );
    let (status, body) = patch(&forever.id, json!({"max_runtime_secs": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["expires_at"].is_null());
    let (status, _) = patch(&shortened.id, json!({"max_runtime_secs": 1})).await;
    assert_eq!(status, StatusCode::OK);
    // Gone a second from now; the old deadline of `kept` (just before the patch) has
    // passed by then, so what follows also sees whether it was reaped at it.
    let until = Instant::now() + Duration::from_secs(10);
    while app
        .get(&format!("/api/v1/containers/{}", shortened.id))
        .await
        .0
        != StatusCode::NOT_FOUND
    {
        assert!(
            Instant::now() < until,
            "the shortened sandbox did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in [&kept.id, &forever.id] {
        let (status, body) = app.get(&format!("/api/v1/containers/{id}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{id} was reaped at its old deadline: {body}"
        );
    }
    // The new deadlines are on disk: a restarted server keeps them.
    let (_, before) = app.get(&format!("/api/v1/containers/{}", kept.id)).await;
    server.stop().await;
    let server = spawn_app(test_config(dir.path())).await;
    let (_, after) = server
        .app
        .get(&format!("/api/v1/containers/{}", kept.id))
        .await;
    assert_eq!(after["expires_at"], before["expires_at"]);
    let (_, after) = server
        .app
        .get(&format!("/api/v1/containers/{}", forever.id))
        .await;
    assert!(after["expires_at"].is_null(), "{after}");
}
