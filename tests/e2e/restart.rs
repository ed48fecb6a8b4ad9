//! Restarts: `kill -9` of the real binary at any moment loses no sandbox and leaks no
//! container; the next process adopts what exists and keeps its deadlines.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    TestApp, containers_with_label, free_port, remove_after_exit, scratch, unique, world,
};

/// A server process, killed when dropped (also when the test fails).
type Server = crate::support::Binary;

/// The `repobox` binary, started with the settings of a test server and a warm pool
/// of `pool_size` (0 for the tests of the ordinary path: their interrupted create
/// must make its own container).
fn start_binary(dir: &std::path::Path, port: u16, pool_size: usize) -> Server {
    crate::support::start_binary(dir, port, &[("POOL_SIZE", pool_size.to_string())])
}

fn kill_9(server: &mut Server) {
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
}

#[tokio::test]
async fn kill_9_loses_no_sandbox_and_leaks_no_container() {
    let world = world();
    let dir = scratch();
    let port = free_port();
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    let url = world.git.url(&unique("restart"), "simple");

    let mut server = start_binary(dir.path(), port, 0);
    app.wait_live().await;
    let (created, sandbox) = app
        .sandbox(json!({ "repo_url": url, "max_runtime_secs": 15 }))
        .await;
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        app.exec(&sandbox.id, "echo before > /tmp/state").await["exit_code"],
        0
    );

    // A create that is still running (its initial command sleeps) when the server dies.
    let interrupted = {
        let app = app.clone();
        let url = url.clone();
        tokio::spawn(async move {
            app.create(json!({ "repo_url": url, "initial_command": "sleep 30" }))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while containers_with_label("repobox.repo_url", &url).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second create never made its container"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And a command in flight.
    let in_flight = {
        let app = app.clone();
        let id = sandbox.id.clone();
        tokio::spawn(async move {
            app.request(
                reqwest::Method::POST,
                &format!("/api/v1/containers/{id}/execute"),
            )
            .json(&json!({"command": "setsid sleep 300.777 & sleep 300.777", "timeout_secs": 600}))
            .send()
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.exec(&sandbox.id, "ps -eo args").await["stdout"]
        .as_str()
        .unwrap()
        .contains("sleep 300.777")
    {
        assert!(
            Instant::now() < deadline,
            "the in-flight command never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill_9(&mut server);
    let _ = interrupted.await;
    let _ = in_flight.await;

    let mut server = start_binary(dir.path(), port, 0);
    app.wait_live().await;
    // Reconciliation runs as soon as the engine answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while containers_with_label("repobox.repo_url", &url).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the interrupted create's container was not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, list) = app.get("/api/v1/containers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total_count"], 1, "{list}");
    assert_eq!(list["containers"][0]["container_id"], sandbox.id.as_str());
    assert_eq!(list["containers"][0]["status"], "running");
    let result = app
        .exec(&sandbox.id, "cat /tmp/state; git rev-parse HEAD")
        .await;
    assert_eq!(
        result["stdout"],
        format!("before\n{}\n", world.simple.trunk_head),
        "the adopted sandbox is usable"
    );
    // The command the dead server had in flight was ended when the agent was
    // re-attached, children included.
    let left = app
        .exec(
            &sandbox.id,
            "ps -eo args | grep -F 'sleep 300.777' | grep -v grep || true",
        )
        .await;
    assert_eq!(left["stdout"], "", "the old command survived the restart");

    // Its deadline survived the restart.
    let path = format!("/api/v1/containers/{}", sandbox.id);
    loop {
        let (status, _) = app.get(&path).await;
        let now = chrono::Utc::now();
        if status == StatusCode::NOT_FOUND {
            assert!(now.signed_duration_since(expires_at) < chrono::Duration::milliseconds(1500));
            break;
        }
        assert!(
            now < expires_at + chrono::Duration::seconds(5),
            "adopted sandbox did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(containers_with_label("repobox.repo_url", &url).is_empty());
    kill_9(&mut server);
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "temporary checkouts left: {tmp:?}");
}

#[tokio::test]
async fn graceful_shutdown_keeps_sandboxes() {
    let world = world();
    let dir = scratch();
    let port = free_port();
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    let url = world.git.url(&unique("graceful"), "simple");
    let mut server = start_binary(dir.path(), port, 0);
    app.wait_live().await;
    let (_, sandbox) = app.sandbox(json!({ "repo_url": url })).await;
    let started = Instant::now();
    // SIGTERM: the process ends on its own, promptly, and leaves the sandbox running.
    assert!(
        Command::new("kill")
            .args(["-TERM", &server.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        sandbox.containers().len(),
        1,
        "shutdown destroyed a sandbox"
    );
    let mut server = start_binary(dir.path(), port, 0);
    app.wait_live().await;
    assert_eq!(app.exec(&sandbox.id, "true").await["exit_code"], 0);
    kill_9(&mut server);
}

/// Containers of `instance` (running or not), by engine id.
fn instance_containers(instance: &str, extra: &[&str]) -> Vec<String> {
    let mut command = Command::new("docker");
    command.args([
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=repobox.instance={instance}"),
    ]);
    for filter in extra {
        command.args(["--filter", filter]);
    }
    let out = command.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn pool_ready(app: &TestApp) -> u64 {
    app.get("/api/v1/info").await.1["pool"]["ready"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn kill_9_with_a_full_pool_and_a_claim_in_flight_leaks_nothing() {
    let world = world();
    let dir = scratch();
    let port = free_port();
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    let url = world.git.url(&unique("restart-pool"), "simple");
    let mut server = start_binary(dir.path(), port, 2);
    app.wait_live().await;
    let instance = app.instance().await;
    remove_after_exit(&instance);
    let wait = |what: &'static str, ready: u64, containers: usize| {
        let app = app.clone();
        let instance = instance.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while pool_ready(&app).await != ready
                || instance_containers(&instance, &["status=running"]).len() != containers
            {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait("the pool never filled", 2, 2).await;
    let (_, kept) = app.sandbox(json!({ "repo_url": url })).await;
    app.exec(&kept.id, "echo kept > /tmp/state").await;
    // A background process, which the agent owns: it outlives the server.
    let (status, process) = app
        .post(
            &format!("/api/v1/containers/{}/processes", kept.id),
            &json!({"command": "for i in $(seq 1 600); do echo tick$i; sleep 0.1; done"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{process}");
    let process_path = format!(
        "/api/v1/containers/{}/processes/{}",
        kept.id,
        process["process_id"].as_str().unwrap()
    );
    wait("the pool never refilled", 2, 3).await;

    // A create whose claim is under way (its initial command sleeps) when the server
    // dies, with the pool full again behind it.
    let interrupted = {
        let app = app.clone();
        let url = url.clone();
        tokio::spawn(async move {
            app.create(json!({ "repo_url": url, "initial_command": "sleep 30" }))
                .await
        })
    };
    wait("the claim never happened or the pool never refilled", 2, 4).await;
    let before = instance_containers(&instance, &[]);
    kill_9(&mut server);
    let _ = interrupted.await;

    let mut server = start_binary(dir.path(), port, 2);
    app.wait_live().await;
    // The claimed member and the old members are removed, the pool refills, and the
    // sandbox is adopted with its files.
    wait("after the restart: not one sandbox and a full pool", 2, 3).await;
    let after = instance_containers(&instance, &[]);
    assert_eq!(after.len(), 3, "leaked: {after:?}");
    let survivors: Vec<_> = after.iter().filter(|id| before.contains(id)).collect();
    assert_eq!(
        survivors.len(),
        1,
        "only the sandbox survives: {survivors:?}"
    );
    let (_, list) = app.get("/api/v1/containers").await;
    assert_eq!(list["total_count"], 1, "{list}");
    assert_eq!(list["containers"][0]["container_id"], kept.id.as_str());
    assert_eq!(
        app.exec(&kept.id, "cat /tmp/state").await["stdout"],
        "kept\n"
    );
    let (_, info) = app.get(&process_path).await;
    assert_eq!(
        info["status"], "running",
        "the process died with the server: {info}"
    );
    let (_, out) = app.get(&format!("{process_path}/output")).await;
    assert!(
        out["stdout"]
            .as_str()
            .unwrap()
            .starts_with("tick1\ntick2\n"),
        "{out}"
    );

    // SIGTERM: the members go, the sandbox stays.
    assert!(
        Command::new("kill")
            .args(["-TERM", &server.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.0.wait().unwrap().success());
    assert_eq!(instance_containers(&instance, &[]).len(), 1);
    assert_eq!(kept.containers().len(), 1);
}

#[tokio::test]
async fn kill_9_mid_job_then_a_restart_completes_the_job_and_leaks_nothing() {
    let world = world();
    let dir = scratch();
    let port = free_port();
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    let url = world.git.url(&unique("restart-job"), "simple");

    let mut server = start_binary(dir.path(), port, 0);
    app.wait_live().await;
    let instance = app.instance().await;
    remove_after_exit(&instance);
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &json!({
                "command": "sleep 1.5; git rev-parse HEAD",
                "repos": vec![json!({"repo_url": url}); 6],
                "concurrency": 2,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let job_path = format!("/api/v1/jobs/{id}");

    // Killed with entries finished and entries running (their sandboxes up).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, job) = app.get(&job_path).await;
        if job["counts"]["succeeded"].as_u64().unwrap() >= 1
            && job["counts"]["running"].as_u64().unwrap() >= 1
            && !instance_containers(&instance, &[]).is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the job never got going: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, before) = app.get(&format!("{job_path}/results")).await;
    kill_9(&mut server);
    let done_before: Vec<Value> = before["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .cloned()
        .collect();

    let _server = start_binary(dir.path(), port, 0);
    app.wait_live().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let (status, job) = app.get(&job_path).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the job survives the restart: {job}"
        );
        if job["status"] == "completed" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job never completed: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["counts"]["succeeded"], 6, "{job}");
    let (_, after) = app.get(&format!("{job_path}/results")).await;
    for result in after["results"].as_array().unwrap() {
        assert_eq!(
            result["stdout"],
            format!("{}\n", world.simple.trunk_head),
            "{result}"
        );
    }
    for kept in &done_before {
        let index = kept["index"].as_u64().unwrap() as usize;
        assert_eq!(
            &after["results"][index], kept,
            "a result finished before the kill is kept, not run again"
        );
    }
    // Leftovers of creates the kill interrupted are removed by reconciliation (in
    // the background: a container killed mid-start can take the engine a while).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !instance_containers(&instance, &[]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "a sandbox of the job is left: {:?}",
            instance_containers(&instance, &[])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
