//! The engine may restart: with `live-restore` (set by `scripts/setup-docker.sh`),
//! sandboxes keep running while dockerd is away, and repobox re-attaches to their
//! agents afterwards. A test binary of its own, because it stops the engine that
//! every other test uses (cargo runs test binaries one at a time).

#[allow(
    dead_code,
    reason = "the e2e harness, shared; this binary uses part of it"
)]
#[path = "e2e/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use support::{scratch, spawn_app, test_config, unique, world};

fn live_restore() -> bool {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.LiveRestoreEnabled}}"])
        .output()
        .expect("docker info");
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

/// Stops dockerd and starts it again with the project's set-up script.
fn restart_engine() {
    let out = Command::new("pgrep")
        .args(["-x", "dockerd"])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "no local dockerd to restart");
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "dockerd did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-docker.sh");
    let status = Command::new("bash").arg(script).status().unwrap();
    assert!(
        status.success(),
        "setup-docker.sh could not start the engine again"
    );
}

// Ignored by a plain `cargo test` (it needs an engine with live-restore, and it
// restarts that engine); `make test` runs it, after `scripts/setup-docker.sh` has set
// live-restore, and there it fails rather than skip when the setting is missing.
#[tokio::test]
#[ignore = "needs live-restore and restarts the engine; make test runs it"]
async fn sandboxes_survive_a_restart_of_the_engine() {
    assert!(
        live_restore(),
        "the engine runs without live-restore (scripts/setup-docker.sh sets it)"
    );
    let world = world();
    let dir = scratch();
    let server = spawn_app(test_config(dir.path())).await;
    let app = &server.app;
    let url = world.git.url(&unique("engine-restart"), "simple");
    let (_, sandbox) = app.sandbox(json!({ "repo_url": url })).await;
    let written = app
        .exec(&sandbox.id, "echo kept > /tmp/state; cat /tmp/state")
        .await;
    assert_eq!(written["stdout"], "kept\n");

    tokio::task::spawn_blocking(restart_engine).await.unwrap();

    // The same sandbox answers again, with its files, and reads running.
    let result = app
        .exec(&sandbox.id, "cat /tmp/state; git rev-parse HEAD")
        .await;
    assert_eq!(
        result["stdout"],
        format!("kept\n{}\n", world.simple.trunk_head),
        "{result}"
    );
    let (status, body) = app.get(&format!("/api/v1/containers/{}", sandbox.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "running", "{body}");
    // And new sandboxes can be made.
    let (_, again) = app.sandbox(json!({ "repo_url": url })).await;
    assert_eq!(app.exec(&again.id, "true").await["exit_code"], 0);

    // A restart during a create (its initial command still runs): the create fails
    // with a clear error, or succeeds with a usable sandbox; nothing is left of it.
    let create = {
        let app = app.clone();
        let url = url.clone();
        tokio::spawn(async move {
            app.create(json!({ "repo_url": url, "initial_command": "sleep 4" }))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(restart_engine).await.unwrap();
    let (status, body, guard) = create.await.unwrap();
    eprintln!("a create cut by an engine restart answered {status}: {body}");
    let mut expected = vec![sandbox.id.clone(), again.id.clone()];
    match status {
        StatusCode::CREATED => {
            let id = body["container_id"].as_str().unwrap().to_owned();
            assert_eq!(app.exec(&id, "true").await["exit_code"], 0);
            expected.push(id);
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
            assert!(body["detail"].is_string(), "{body}");
        }
        other => panic!("a create cut by an engine restart answered {other}: {body}"),
    }
    let instance = app.instance().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--format",
                "{{.Names}}",
                "--filter",
                &format!("label=repobox.instance={instance}"),
            ])
            .output()
            .unwrap();
        let mut sandboxes: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|name| !name.starts_with("pool-"))
            .map(|name| name.trim_end_matches(&format!(".{instance}")).to_owned())
            .collect();
        sandboxes.sort();
        expected.sort();
        if sandboxes == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "containers left by the cut create: {sandboxes:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, list) = app.get("/api/v1/containers").await;
    assert_eq!(list["total_count"], expected.len(), "{list}");
    drop(guard);
}
