//! Images: pulled on demand from real registries (Debian's `docker-registry` on
//! 127.0.0.1, one of them with basic auth), and built from fixture repositories'
//! Dockerfile and devcontainer on the real engine.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::registry;
use crate::support::{
    TestApp, fixtures, free_port, scratch, spawn_app, start_binary, test_config, unique, world,
};

/// The sandbox image, which the registries serve under other names.
const SANDBOX_IMAGE: &str = repobox::config::DEFAULT_BASE_IMAGE;
/// A ~1 MB image of busybox alone: nothing of repobox's, no bash, no git.
const TINY_IMAGE: &str = "repobox-test/tiny:1";

/// Removes a local image (by reference) when dropped: a pulled one must not make the
/// next run's create find it.
struct LocalImage(String);

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

fn local_image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The count of `repobox_image_pulls_total{kind=…}` on the server.
async fn pulls(app: &TestApp, kind: &str) -> u64 {
    let metrics = app.text("/metrics").await;
    let needle = format!("repobox_image_pulls_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_missing_registry_image_is_pulled_once_for_concurrent_creates() {
    let world = world();
    let registry = registry::start(None);
    let reference = registry.push(SANDBOX_IMAGE, &format!("{}:1", unique("pulled")), None);
    let _cleanup = LocalImage(reference.clone());
    assert!(
        !local_image_exists(&reference),
        "the pushed name must not be local"
    );
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.allowed_images = naming(&registry);
    let server = spawn_app(config).await;
    let app = &server.app;
    let url = world.git.url(&unique("pull"), "simple");

    let body = json!({ "repo_url": url, "image": reference });
    let ((first, a), (second, b)) = tokio::join!(
        async { app.post("/api/v1/containers", &body).await },
        async { app.post("/api/v1/containers", &body).await },
    );
    assert_eq!(first, StatusCode::CREATED, "{a}");
    assert_eq!(second, StatusCode::CREATED, "{b}");
    let _guards = (app.guard(&a).await, app.guard(&b).await);
    assert_eq!(a["image"], reference.as_str());
    assert_eq!(
        pulls(app, "ok").await,
        1,
        "two concurrent creates share one pull"
    );
    assert!(local_image_exists(&reference));
    let id = a["container_id"].as_str().unwrap();
    let out = app.exec(id, "cat README.md && git rev-parse HEAD").await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(
        out["stdout"].as_str().unwrap().contains("# simple"),
        "{out}"
    );
    assert!(
        out["stdout"]
            .as_str()
            .unwrap()
            .contains(&world.simple.trunk_head),
        "{out}"
    );

    // Present now: the next create pulls nothing.
    let (status, c, _guard) = app.create(body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(pulls(app, "ok").await, 1);
    let metrics = app.text("/metrics").await;
    assert!(
        metrics.contains("repobox_image_pull_duration_seconds_count 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn refused_pulls_are_422_with_the_reason_and_leave_nothing() {
    let world = world();
    let registry = registry::start(None);
    let reference = registry.push(tiny(), &format!("{}:1", unique("never")), None);
    let _cleanup = LocalImage(reference.clone());
    let url = world.git.url(&unique("refused"), "simple");

    // IMAGE_PULL_POLICY=never: a missing image is refused, not pulled.
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.image_pull_policy = repobox::config::PullPolicy::Never;
    config.allowed_images = naming(&registry);
    let server = spawn_app(config).await;
    let (status, body, _) = server
        .app
        .create(json!({ "repo_url": url, "image": reference }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "image_unavailable", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("IMAGE_PULL_POLICY=never"),
        "{body}"
    );
    assert!(!local_image_exists(&reference));
    assert_eq!(pulls(&server.app, "ok").await, 0);
    server.stop().await;

    // The default policy pulls, and the registry's refusal comes back as the reason.
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.allowed_images = naming(&registry);
    let server = spawn_app(config).await;
    let missing = format!("{}/{}:1", registry.host, unique("no-such-repo"));
    let (status, body, _) = server
        .app
        .create(json!({ "repo_url": url, "image": missing }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("cannot pull image") && detail.contains(&missing),
        "{body}"
    );
    assert!(
        detail.contains("manifest unknown") || detail.contains("not found"),
        "the registry's reason: {body}"
    );
    server.stop().await;
    // A reference the engine cannot parse.
    let app = &world.app;
    let (status, body, _) = app
        .create(json!({ "repo_url": url, "image": "Not/A:Valid:Reference" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("invalid reference format"),
        "{body}"
    );
    let (_, list) = app.get("/api/v1/containers").await;
    assert!(
        !list["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|sandbox| sandbox["repo_url"] == url.as_str()),
        "a refused create left a sandbox: {list}"
    );
}

/// `ALLOWED_IMAGES` naming a test registry: one on 127.0.0.1 is refused otherwise.
fn naming(registry: &registry::Registry) -> repobox::config::List {
    repobox::config::List(vec![format!("{}/*", registry.host)])
}

/// The busybox image (made when missing): small, so that pushing it is quick.
fn tiny() -> &'static str {
    registry::tiny_image(TINY_IMAGE);
    TINY_IMAGE
}

#[tokio::test]
async fn registry_credentials_pull_and_never_show() {
    const USER: &str = "alice";
    const PASSWORD: &str = "pw-7f3a9c-never-shown";
    let world = world();
    let registry = registry::start(Some((USER, PASSWORD)));
    let reference = registry.push(
        tiny(),
        &format!("{}:1", unique("private")),
        Some((USER, PASSWORD)),
    );
    let _cleanup = LocalImage(reference.clone());
    let url = world.git.url(&unique("auth"), "simple");
    let body = json!({ "repo_url": url, "image": reference });

    // Without credentials the registry refuses, and the create says why.
    let plain = scratch();
    let mut config = test_config(plain.path());
    config.allowed_images = naming(&registry);
    let server = spawn_app(config).await;
    let (status, refused, _) = server.app.create(body.clone()).await;
    server.stop().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let detail = refused["detail"].as_str().unwrap().to_lowercase();
    assert!(
        detail.contains("unauthorized")
            || detail.contains("authentication required")
            || detail.contains("no basic auth"),
        "{refused}"
    );

    let dir = scratch();
    let auth = registry::auth_file(dir.path(), &registry.host, USER, PASSWORD);
    let port = free_port();
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    let binary = start_binary(
        dir.path(),
        port,
        &[
            ("REGISTRY_AUTH_FILE", auth.display().to_string()),
            ("ALLOWED_IMAGES", format!("{}/*", registry.host)),
            ("LOG_LEVEL", "debug".to_owned()),
        ],
    );
    app.wait_live().await;
    let (status, created, _guard) = app.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["container_id"].as_str().unwrap();
    // The agent runs in an image with nothing of ours (busybox, no bash).
    let out = app
        .exec(
            id,
            "echo hello from $(cat /workspace/src/main.py | wc -l) line",
        )
        .await;
    assert_eq!(out["stdout"], "hello from 1 line\n", "{out}");

    let mut seen = String::new();
    for path in [
        "/api/v1/containers",
        "/api/v1/info",
        "/metrics",
        &format!("/api/v1/containers/{id}"),
    ] {
        seen.push_str(&app.text(path).await);
    }
    seen.push_str(&created.to_string());
    drop(binary);
    seen.push_str(&std::fs::read_to_string(dir.path().join("server.log")).unwrap());
    assert!(seen.contains("pulled an image"), "the pull is logged");
    assert!(!seen.contains(PASSWORD), "the password leaked");
    let encoded = base64_of(&format!("{USER}:{PASSWORD}"));
    assert!(!seen.contains(&encoded), "the encoded credential leaked");
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A server that builds images.
async fn builder(dir: &std::path::Path) -> crate::support::OwnedApp {
    let mut config = test_config(dir);
    config.allow_image_builds = true;
    spawn_app(config).await
}

/// Follows `/images/{id}/logs` to its `done` event; returns the output and the Image.
async fn follow(app: &TestApp, image_id: &str) -> (String, Value) {
    let response = app
        .request(Method::GET, &format!("/api/v1/images/{image_id}/logs"))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let mut output = String::new();
    let mut done = None;
    for event in text.split("\n\n") {
        let mut name = "";
        let mut data = Vec::new();
        for line in event.lines() {
            if let Some(value) = line.strip_prefix("event: ") {
                name = value;
            } else if let Some(value) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push(value);
            }
        }
        match name {
            "log" => {
                output.push_str(&data.join("\n"));
                output.push('\n');
            }
            "done" => done = Some(serde_json::from_str(&data.join("\n")).unwrap()),
            _ => {}
        }
    }
    (output, done.expect("a done event"))
}

/// Removes a built image's engine image when dropped (a failed test leaves none).
struct BuiltImage(String);

impl Drop for BuiltImage {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
        }
    }
}

#[tokio::test]
async fn a_dockerfile_build_makes_sandboxes_with_its_marker_env_and_checkout_and_is_cached() {
    let world = world();
    let name = unique("dockerfile");
    let head = fixtures::dockerfile_repo(&world.git.root, &name, SANDBOX_IMAGE);
    let url = world.git.url(&unique("build"), &name);
    let dir = scratch();
    let server = builder(dir.path()).await;
    let app = &server.app;

    let request = json!({ "repo_url": url, "from": "dockerfile" });
    let (status, image) = app.post("/api/v1/images", &request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{image}");
    assert_eq!(image["status"], "building", "{image}");
    assert_eq!(image["resolved_commit"], head.as_str());
    let image_id = image["image_id"].as_str().unwrap().to_owned();
    let _cleanup = BuiltImage(image["image"].as_str().unwrap().to_owned());
    let (output, done) = follow(app, &image_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{output}");
    assert!(
        output.contains("built-by-repobox"),
        "the build's output: {output}"
    );
    assert!(done["size_bytes"].as_u64().unwrap() > 0, "{done}");
    assert!(done["finished_at"].is_string(), "{done}");

    let (created, _guard) = app
        .sandbox(json!({ "image_id": image_id, "max_runtime_secs": 300 }))
        .await;
    assert_eq!(created["image_id"], image_id.as_str());
    assert_eq!(created["resolved_commit"], head.as_str());
    let id = created["container_id"].as_str().unwrap();
    let out = app
        .exec(
            id,
            "cat /marker; echo $FROM_DOCKERFILE; pwd; git rev-parse HEAD; ls",
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let stdout = out["stdout"].as_str().unwrap();
    assert!(
        stdout.starts_with("built-by-repobox\nyes\n/workspace\n"),
        "{out}"
    );
    assert!(
        stdout.contains(&head) && stdout.contains("Dockerfile"),
        "{out}"
    );

    // The same build again: the same image, at once.
    let started = Instant::now();
    let (status, again) = app.post("/api/v1/images", &request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["image_id"], image_id.as_str());
    assert_eq!(again["status"], "ready");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let (_, list) = app.get("/api/v1/images").await;
    assert_eq!(list["images"].as_array().unwrap().len(), 1, "{list}");

    // A job on the image: every entry runs on it, each with its own repository.
    let simple = world.git.url(&unique("job-on-image"), "simple");
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &json!({ "command": "cat /marker && ls", "image_id": image_id,
                     "repos": [{"repo_url": url}, {"repo_url": simple}] }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["job_id"].as_str().unwrap();
    crate::jobs::wait_finished(app, job_id, Duration::from_secs(120)).await;
    let (_, results) = app.get(&format!("/api/v1/jobs/{job_id}/results")).await;
    let results = results["results"].as_array().unwrap();
    assert_eq!(results[0]["resolved_commit"], head.as_str(), "{results:?}");
    for (result, file) in results.iter().zip(["Dockerfile", "README.md"]) {
        assert_eq!(result["exit_code"], 0, "{result}");
        let stdout = result["stdout"].as_str().unwrap();
        assert!(
            stdout.starts_with("built-by-repobox\n") && stdout.contains(file),
            "{result}"
        );
    }

    // Another repository than the image's is refused; in use, the image stays.
    let (status, body, _) = app
        .create(json!({ "image_id": image_id, "repo_url": world.git.url("other", "simple") }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let path = format!("/api/v1/images/{image_id}");
    let deleted = app.request(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::CONFLICT);
    assert_eq!(app.destroy(id).await, StatusCode::NO_CONTENT);
    let deleted = app.request(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(!local_image_exists(image["image"].as_str().unwrap()));
    let (status, _) = app.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn a_failed_build_reads_failed_with_the_tail_of_its_output() {
    let world = world();
    let name = unique("failing");
    fixtures::bare_repo(
        &world.git.root,
        &name,
        &[(
            "Dockerfile",
            format!("FROM {SANDBOX_IMAGE}\nRUN echo about-to-fail && exit 3\n"),
        )],
    );
    let url = world.git.url(&unique("fail"), &name);
    let dir = scratch();
    let server = builder(dir.path()).await;
    let app = &server.app;
    let (status, image) = app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "dockerfile" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{image}");
    let image_id = image["image_id"].as_str().unwrap();
    let (_, done) = follow(app, image_id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("about-to-fail"), "the log's tail: {error}");
    assert!(error.contains("3"), "the exit code: {error}");
    let (status, body, _) = app.create(json!({ "image_id": image_id })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // No Dockerfile where asked, and a path out of the repository.
    let (status, body) = app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "dockerfile", "dockerfile": "nope/Dockerfile" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "dockerfile", "dockerfile": "../../etc/passwd" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_devcontainer_gives_its_build_env_and_post_create_command_and_features_are_refused() {
    let world = world();
    let name = unique("devcontainer");
    fixtures::devcontainer_repo(&world.git.root, &name, SANDBOX_IMAGE);
    let url = world.git.url(&unique("dev"), &name);
    let dir = scratch();
    let server = builder(dir.path()).await;
    let app = &server.app;
    let (status, image) = app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "devcontainer" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{image}");
    let image_id = image["image_id"].as_str().unwrap();
    let _cleanup = BuiltImage(image["image"].as_str().unwrap().to_owned());
    let (output, done) = follow(app, image_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{output}");
    assert_eq!(done["container_env"]["FROM_DEVCONTAINER"], "yes", "{done}");

    let (created, _guard) = app
        .sandbox(json!({ "image_id": image_id, "environment_vars": {"OWN": "1"} }))
        .await;
    assert_eq!(
        created["initial_command_result"]["exit_code"], 0,
        "{created}"
    );
    let id = created["container_id"].as_str().unwrap();
    let out = app
        .exec(
            id,
            "cat /greeting; echo $FROM_DEVCONTAINER $OWN; cat /workspace/.post-create",
        )
        .await;
    assert_eq!(out["stdout"], "hi\nyes 1\npost-create\n", "{out}");

    let features = unique("features");
    fixtures::devcontainer_with_features(&world.git.root, &features, SANDBOX_IMAGE);
    let (status, body) = app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": world.git.url(&unique("feat"), &features), "from": "devcontainer" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("features"),
        "{body}"
    );
    let (_, list) = app.get("/api/v1/images").await;
    assert_eq!(
        list["images"].as_array().unwrap().len(),
        1,
        "a refused build left a record: {list}"
    );
    server.stop().await;
}

#[tokio::test]
async fn builds_are_off_unless_allowed() {
    let world = world();
    let url = world.git.url(&unique("off"), "simple");
    let (status, body) = world
        .app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "dockerfile" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "builds_disabled", "{body}");
    let (status, body, _) = world
        .app
        .create(json!({ "repo_url": url, "image_id": "img-0000" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_pooled_registry_image_warms_after_its_pull() {
    let registry = registry::start(None);
    let reference = registry.push(tiny(), &format!("{}:1", unique("pooled")), None);
    let _cleanup = LocalImage(reference.clone());
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.pool_size = 1;
    config.pool_images = repobox::config::List(vec![reference.clone()]);
    config.allowed_images = naming(&registry);
    let server = spawn_app(config).await;
    let app = &server.app;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, info) = app.get("/api/v1/info").await;
        if info["pool"]["ready"].as_u64() == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the pool never warmed: {info}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(pulls(app, "ok").await, 1);
    let url = world().git.url(&unique("pooled"), "simple");
    let (created, _guard) = app
        .sandbox(json!({ "repo_url": url, "image": reference }))
        .await;
    let metrics = app.text("/metrics").await;
    assert!(
        metrics.contains("repobox_pool_claims_total{kind=\"hit\"} 1"),
        "the create took the warm member: {metrics}"
    );
    let out = app
        .exec(created["container_id"].as_str().unwrap(), "cat README.md")
        .await;
    assert!(
        out["stdout"].as_str().unwrap().contains("# simple"),
        "{out}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restart_forgets_vanished_images_and_removes_unrecorded_ones() {
    let world = world();
    let name = unique("reconcile");
    fixtures::dockerfile_repo(&world.git.root, &name, SANDBOX_IMAGE);
    let url = world.git.url(&unique("reconcile"), &name);
    let dir = scratch();
    let server = builder(dir.path()).await;
    let (status, image) = server
        .app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "dockerfile" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{image}");
    let image_id = image["image_id"].as_str().unwrap().to_owned();
    let reference = image["image"].as_str().unwrap().to_owned();
    let _cleanup = BuiltImage(reference.clone());
    let (_, done) = follow(&server.app, &image_id).await;
    assert_eq!(done["status"], "ready", "{done}");
    let instance = server.app.instance().await;
    server.stop().await;

    // While it is down: its image goes, and an image of its own appears unrecorded.
    let removed = Command::new("docker")
        .args(["rmi", &reference])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");
    let orphan = format!("repobox-test/orphan:{}", unique("o"));
    let _orphan = BuiltImage(orphan.clone());
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", &orphan, "--label"])
        .arg(format!("repobox.image.instance={instance}"))
        .args(["--label", "repobox.image.id=img-unrecorded", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    build
        .stdin
        .take()
        .unwrap()
        .write_all(format!("FROM {SANDBOX_IMAGE}\nLABEL orphan=1\n").as_bytes())
        .unwrap();
    assert!(build.wait().unwrap().success());

    let server = builder(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, record) = server.app.get(&format!("/api/v1/images/{image_id}")).await;
        if record["status"] == "failed" && !local_image_exists(&orphan) {
            assert!(
                record["error"]
                    .as_str()
                    .unwrap()
                    .contains("no longer on the engine"),
                "{record}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reconciled: {record}, orphan present: {}",
            local_image_exists(&orphan)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Asked again, it builds again.
    let (status, again) = server
        .app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "dockerfile" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["status"], "building", "{again}");
    let (_, done) = follow(&server.app, &image_id).await;
    assert_eq!(done["status"], "ready", "{done}");
    server.stop().await;
}

/// A build step is a process bomb's home no more: a step that forks 1,500 sleeping
/// processes (1,505 ran before builds had a limit) starts fewer than the server's
/// `BUILD_PIDS_LIMIT` of 64, the build still ends, and its cgroup is gone after it.
#[tokio::test]
async fn a_build_step_cannot_start_more_processes_than_the_build_limit() {
    let world = world();
    let name = unique("fork-bomb");
    let perl = "my $n = 0; for (1..1500) { my $pid = fork; last unless defined $pid; \
                if (!$pid) { sleep 20; exit 0 } $n++ } print qq(started $n children\\n);";
    fixtures::bare_repo(
        &world.git.root,
        &name,
        &[(
            "Dockerfile",
            format!("FROM {SANDBOX_IMAGE}\nRUN perl -e '{perl}'\n"),
        )],
    );
    let url = world.git.url(&unique("fork-bomb"), &name);
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.allow_image_builds = true;
    config.build_pids_limit = 64;
    let server = spawn_app(config).await;
    let app = &server.app;
    let (status, image) = app
        .post(
            "/api/v1/images",
            &json!({ "repo_url": url, "from": "dockerfile" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{image}");
    let _cleanup = BuiltImage(image["image"].as_str().unwrap().to_owned());
    let (output, done) = follow(app, image["image_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "ready", "{done}\n{output}");
    let started: u32 = output
        .rsplit("started ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the step's count is in its output: {output}"));
    assert!(
        (1..64).contains(&started),
        "the step started {started} processes"
    );
    // This build's cgroup (the only one limited to 64: other tests' builds, which may
    // run meanwhile, have the default) is gone once the build has ended.
    let builds = std::path::Path::new("/sys/fs/cgroup/pids/repobox-builds");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = std::fs::read_dir(builds)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|dir| {
                        std::fs::read_to_string(dir.join("pids.max"))
                            .is_ok_and(|max| max.trim() == "64")
                    })
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "build cgroups left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}
