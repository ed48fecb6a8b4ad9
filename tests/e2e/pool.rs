//! The warm pool: a create served from it is like any other, the pool refills, its
//! members are nobody's sandboxes, and a dead member is replaced, not handed out.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{OwnedApp, TestApp, scratch, spawn_app, test_config, unique, world};

/// A server of its own with `POOL_SIZE=size`.
async fn server(size: usize) -> (OwnedApp, tempfile::TempDir) {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.pool_size = size;
    (spawn_app(config).await, dir)
}

/// Engine ids of the instance's pool members that are running (claimed ones
/// included: Docker keeps a container's labels).
fn running_members(instance: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=repobox.instance={instance}"),
            "--filter",
            &format!("label=repobox.pool={}", repobox::config::DEFAULT_BASE_IMAGE),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the pool reports `ready` members.
async fn wait_ready(app: &TestApp, ready: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, info) = app.get("/api/v1/info").await;
        if info["pool"]["ready"] == ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never reached {ready} ready members: {}",
            info["pool"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the pool claims counter for `kind`.
async fn claims(app: &TestApp, kind: &str) -> u64 {
    let text = app.text("/metrics").await;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(&format!("repobox_pool_claims_total{{kind=\"{kind}\"}} "))
                .map(|value| value.trim().parse::<f64>().unwrap() as u64)
        })
        .unwrap_or(0)
}

/// What a user can see of a sandbox from inside it (everything but its host name).
const PROBE: &str = r#"echo "env=$GREETING/$OTHER"
cat /tmp/initial
git rev-parse HEAD; git status --porcelain; git branch --show-current
if [ -f /sys/fs/cgroup/memory.max ]; then
  echo "mem=$(cat /sys/fs/cgroup/memory.max) pids=$(cat /sys/fs/cgroup/pids.max) cpu=$(cat /sys/fs/cgroup/cpu.max)"
else
  echo "mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) pids=$(cat /sys/fs/cgroup/pids/pids.max) cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)/$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
fi
ls -a /workspace; id -u; pwd"#;

#[tokio::test]
async fn a_create_from_the_pool_is_indistinguishable_from_one_without() {
    let world = world();
    let url = world.git.url(&unique("pool-same"), "simple");
    let ((pooled, _a), (plain, _b)) = tokio::join!(server(1), server(0));
    wait_ready(&pooled.app, 1).await;
    // Without POOL_IMAGES the pool warms the base image.
    let (status, info): (StatusCode, Value) = pooled.app.get("/api/v1/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        info["pool"],
        json!({"size": 1, "images": [repobox::config::DEFAULT_BASE_IMAGE], "ready": 1}),
        "{info}"
    );
    let body = json!({
        "repo_url": url,
        "environment_vars": {"GREETING": "hello there", "OTHER": "x=y"},
        "resources": {"cpus": 0.5, "memory_mb": 300, "pids": 77},
        "initial_command": "echo \"initial sees $GREETING\" > /tmp/initial",
    });
    let mut seen = Vec::new();
    for app in [&pooled.app, &plain.app] {
        let hits = claims(app, "hit").await;
        let (created, sandbox) = app.sandbox(body.clone()).await;
        assert_eq!(
            created["initial_command_result"]["exit_code"], 0,
            "{created}"
        );
        let served_by_pool = claims(app, "hit").await > hits;
        assert_eq!(served_by_pool, std::ptr::eq(app, &pooled.app));
        assert_eq!(
            sandbox.containers().len(),
            1,
            "the container has the sandbox's name"
        );
        let probe = app.exec(&sandbox.id, PROBE).await;
        assert_eq!(probe["exit_code"], 0, "{probe}");
        let hostname = app.exec(&sandbox.id, "hostname").await["stdout"].clone();
        // A command's own environment still wins over the sandbox's.
        let own = app
            .exec_with(
                &sandbox.id,
                json!({"command": "echo $GREETING", "environment": {"GREETING": "own"}}),
            )
            .await;
        assert_eq!(own["stdout"], "own\n");
        seen.push((probe["stdout"].as_str().unwrap().to_owned(), hostname));
    }
    let (pooled_view, pooled_host) = &seen[0];
    let (plain_view, plain_host) = &seen[1];
    assert_eq!(pooled_view, plain_view, "the two sandboxes differ");
    assert!(pooled_view.contains("env=hello there/x=y\ninitial sees hello there\n"));
    assert!(pooled_view.contains(&format!("{}\ntrunk\n", world.simple.trunk_head)));
    assert!(
        pooled_view.contains("mem=314572800 pids=77 cpu=50000/100000")
            || pooled_view.contains("mem=314572800 pids=77 cpu=50000 100000"),
        "{pooled_view}"
    );
    assert_ne!(pooled_host, plain_host);
}

#[tokio::test]
async fn the_pool_refills_after_claims_and_its_members_are_nobodys_sandboxes() {
    let url = world().git.url(&unique("pool-refill"), "simple");
    let (owned, _dir) = server(2).await;
    let app = &owned.app;
    let instance = app.instance().await;
    wait_ready(app, 2).await;
    let (status, list) = app.get("/api/v1/containers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total_count"], 0, "a pool member is listed: {list}");
    let members = running_members(&instance);
    assert_eq!(members.len(), 2);

    // Three creates at once: two from the pool, one the ordinary way; all usable.
    // Short lives (the expiry is checked below), long enough for three creates on a
    // loaded machine.
    let creates = (0..3).map(|_| app.sandbox(json!({"repo_url": url, "max_runtime_secs": 10})));
    let created = futures_util::future::join_all(creates).await;
    for (_, sandbox) in &created {
        assert_eq!(
            app.exec(&sandbox.id, "git rev-parse HEAD").await["exit_code"],
            0
        );
    }
    assert_eq!(claims(app, "hit").await, 2);
    assert_eq!(claims(app, "miss").await, 1);
    let (_, list) = app.get("/api/v1/containers").await;
    assert_eq!(list["total_count"], 3);
    // Refilled right after the claims.
    wait_ready(app, 2).await;

    // The sandboxes expire; the members are not reaped with them.
    let deadline = Instant::now() + Duration::from_secs(40);
    while app.get("/api/v1/containers").await.1["total_count"] != 0 {
        assert!(Instant::now() < deadline, "the sandboxes never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, info) = app.get("/api/v1/info").await;
    assert_eq!(info["pool"]["ready"], 2, "{info}");
    assert_eq!(running_members(&instance).len(), 2);
    for (_, sandbox) in &created {
        assert!(
            sandbox.containers().is_empty(),
            "an expired sandbox lingers"
        );
    }

    // A graceful stop removes the members (sandboxes would outlive it).
    owned.stop().await;
    assert!(
        running_members(&instance).is_empty(),
        "members outlived their server"
    );
}

#[tokio::test]
async fn a_member_whose_agent_died_is_replaced_not_handed_out() {
    let url = world().git.url(&unique("pool-dead"), "simple");
    let (owned, _dir) = server(1).await;
    let app = &owned.app;
    let instance = app.instance().await;
    wait_ready(app, 1).await;
    let dead = running_members(&instance).pop().unwrap();
    // Its agent dies (the container's init passes that on: the container stops).
    let killed = std::process::Command::new("docker")
        .args(["kill", &dead])
        .output()
        .unwrap();
    assert!(killed.status.success());

    let (created, sandbox) = app.sandbox(json!({"repo_url": url})).await;
    let result = app.exec(&sandbox.id, "cat README.md").await;
    assert_eq!(result["exit_code"], 0, "{created} {result}");
    // Replaced: a new member, and the dead one removed.
    wait_ready(app, 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let gone = std::process::Command::new("docker")
            .args(["inspect", &dead])
            .output()
            .unwrap();
        if !gone.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the dead member was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!running_members(&instance).contains(&dead));
}

#[tokio::test]
async fn info_reports_the_pool_and_size_zero_turns_it_off() {
    let (owned, _dir) = server(0).await;
    let app = &owned.app;
    let instance = app.instance().await;
    let (_, info) = app.get("/api/v1/info").await;
    assert_eq!(info["pool"], json!({"size": 0, "images": [], "ready": 0}));
    let url = world().git.url(&unique("pool-off"), "simple");
    let (_, sandbox) = app.sandbox(json!({"repo_url": url})).await;
    assert_eq!(app.exec(&sandbox.id, "true").await["exit_code"], 0);
    assert!(running_members(&instance).is_empty());
    assert_eq!(claims(app, "hit").await, 0);
}
