//! The sandbox agent: processes that cannot escape their command, stdin, concurrency
//! without cross-talk or head-of-line blocking, a dead agent, an image with nothing in
//! it. Each escape is checked with `ps` inside the sandbox, as a user would.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{SandboxGuard, TestApp, unique, world};

async fn sandbox(app: &TestApp) -> SandboxGuard {
    let url = world().git.url(&unique("agent"), "simple");
    app.sandbox(json!({ "repo_url": url })).await.1
}

/// Lines of `ps` naming `marker` (the probe itself excluded).
async fn running(app: &TestApp, id: &str, marker: &str) -> String {
    let probe =
        format!("ps -eo pid,ppid,pgid,sid,args | grep -F -- '{marker}' | grep -v grep || true");
    app.exec(id, &probe).await["stdout"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits (bounded) until nothing names `marker`; returns what is still there.
async fn gone(app: &TestApp, id: &str, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = running(app, id, marker).await;
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ways a process can try to outlive its command; `{}` is a unique sleep duration.
const ESCAPES: &[(&str, &str)] = &[
    ("background", "sleep {} &"),
    ("env -i", "env -i sleep {} &"),
    ("setsid", "setsid sleep {} &"),
    ("double fork", "( (sleep {} &) & )"),
    ("nohup", "nohup sleep {} >/dev/null 2>&1 &"),
    ("setsid double fork", "setsid sh -c '(sleep {} &) &' &"),
];

#[tokio::test]
async fn background_children_end_with_their_command_however_they_escape() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    for (n, (how, template)) in ESCAPES.iter().enumerate() {
        let marker = format!("300.{n}1");
        let command = format!("{}\necho started", template.replace("{}", &marker));
        let started = Instant::now();
        let result = app.exec(&sandbox.id, &command).await;
        let took = started.elapsed();
        assert_eq!(result["stdout"], "started\n", "{how}: {result}");
        assert_eq!(result["exit_code"], 0, "{how}: {result}");
        assert!(
            took < Duration::from_secs(5),
            "{how}: the call waited for the background child ({took:?})"
        );
        let left = gone(app, &sandbox.id, &marker).await;
        assert!(
            left.is_empty(),
            "{how}: still running after the command ended:\n{left}"
        );
    }
}

#[tokio::test]
async fn a_timeout_kills_whatever_escaped() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    for (n, (how, template)) in ESCAPES.iter().enumerate() {
        let marker = format!("300.{n}2");
        let command = format!("{}\nsleep 30", template.replace("{}", &marker));
        let result = app
            .exec_with(&sandbox.id, json!({"command": command, "timeout_secs": 1}))
            .await;
        assert_eq!(result["timed_out"], true, "{how}: {result}");
        assert_eq!(result["exit_code"], 124);
        let left = gone(app, &sandbox.id, &marker).await;
        assert!(
            left.is_empty(),
            "{how}: still running after the timeout:\n{left}"
        );
    }
}

#[tokio::test]
async fn a_sync_client_that_goes_away_kills_its_command() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let marker = "300.913";
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let sent = client
        .post(format!(
            "{}/api/v1/containers/{}/execute",
            app.base, sandbox.id
        ))
        .json(&json!({"command": format!("setsid sleep {marker} & sleep {marker}"), "timeout_secs": 600}))
        .send()
        .await;
    assert!(
        sent.is_err(),
        "the command should still run when the client gives up"
    );
    let left = gone(app, &sandbox.id, marker).await;
    assert!(
        left.is_empty(),
        "still running after the client left:\n{left}"
    );
}

#[tokio::test]
async fn stdin_round_trips_exactly_and_is_empty_when_not_given() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    // A megabyte of text with every printable byte and line breaks.
    let input: String = (0..1024 * 1024)
        .map(|i| match i % 97 {
            0 => '\n',
            k => char::from(b' ' + (k as u8 % 95)),
        })
        .collect();
    let result = app
        .exec_with(&sandbox.id, json!({"command": "cat", "stdin": input}))
        .await;
    assert_eq!(result["exit_code"], 0, "{}", result["stderr"]);
    assert!(
        result["stdout"] == input,
        "stdin did not come back byte for byte"
    );

    let result = app
        .exec_with(&sandbox.id, json!({"command": "wc -c", "stdin": "héllo"}))
        .await;
    assert_eq!(result["stdout"].as_str().unwrap().trim(), "6");

    // Without stdin, a command that reads it sees end-of-file at once.
    let started = Instant::now();
    let result = app
        .exec_with(
            &sandbox.id,
            json!({"command": "cat; read line; echo eof $?", "timeout_secs": 20}),
        )
        .await;
    assert_eq!(result["stdout"], "eof 1\n");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Above MAX_STDIN_BYTES: 413, and nothing runs.
    let (status, error) = app
        .post(
            &format!("/api/v1/containers/{}/execute", sandbox.id),
            &json!({"command": "cat", "stdin": "x".repeat(8 * 1024 * 1024 + 1)}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
}

#[tokio::test]
async fn two_hundred_commands_over_ten_sandboxes_do_not_cross_talk() {
    let app = &world().app;
    let sandboxes = futures_util::future::join_all((0..10).map(|_| sandbox(app))).await;
    let runs = (0..200).map(|i| {
        let id = sandboxes[i % 10].id.clone();
        async move {
            let command = format!("echo out-{i} $HOSTNAME; echo err-{i} >&2; exit {}", i % 7);
            let result = app.exec(&id, &command).await;
            (i, id, result)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut hostnames = std::collections::HashMap::new();
    for (i, id, result) in results {
        let stdout = result["stdout"].as_str().unwrap();
        let (out, host) = stdout.trim().split_once(' ').unwrap();
        assert_eq!(out, format!("out-{i}"), "{result}");
        assert_eq!(result["stderr"], format!("err-{i}\n"));
        assert_eq!(result["exit_code"], i % 7);
        // Each sandbox has a host name of its own.
        assert_eq!(hostnames.entry(id).or_insert_with(|| host.to_owned()), host);
    }
    let distinct: std::collections::HashSet<_> = hostnames.values().collect();
    assert_eq!(distinct.len(), 10, "{hostnames:?}");
}

#[tokio::test]
async fn small_commands_are_not_stuck_behind_a_large_stream() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let response = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/containers/{}/execute/stream", sandbox.id),
        )
        .json(&json!({"command": "head -c 200000000 /dev/zero | tr '\\0' x", "timeout_secs": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    // Read the stream slowly enough that it stays busy the whole time.
    let reader = tokio::spawn(async move {
        let mut total = 0usize;
        while let Some(chunk) = body.next().await {
            total += chunk.unwrap().len();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        total
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let result = app.exec(&sandbox.id, &format!("echo {i}")).await;
        worst = worst.max(started.elapsed());
        assert_eq!(result["stdout"], format!("{i}\n"));
    }
    assert!(
        !reader.is_finished(),
        "the stream ended before the small commands ran"
    );
    assert!(
        worst < Duration::from_secs(2),
        "a small command took {worst:?} beside the stream"
    );
    reader.abort();
}

#[tokio::test]
async fn a_sandbox_whose_agent_dies_reads_failed_with_a_reason() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    // From inside, the agent (PID 1) cannot be killed: the command's shell → its
    // supervisor → the agent gets nothing.
    let result = app
        .exec(
            &sandbox.id,
            "kill -9 $(ps -o ppid= -p $PPID); kill -9 1; echo $?",
        )
        .await;
    assert_eq!(result["exit_code"], 0, "{result}");
    let (_, body) = app.get(&format!("/api/v1/containers/{}", sandbox.id)).await;
    assert_eq!(body["status"], "running", "{body}");
    // From outside (the host's OOM killer, an operator), it can.
    let killed = std::process::Command::new("docker")
        .args(["kill", "--signal", "KILL", &sandbox.docker_name()])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = app.get(&format!("/api/v1/containers/{}", sandbox.id)).await;
        if body["status"] != "running" || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["status_reason"].as_str().unwrap().contains("agent"),
        "{body}"
    );
    let (status, error) = app
        .post(
            &format!("/api/v1/containers/{}/execute", sandbox.id),
            &json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
}

/// An image with nothing in it but a marker file: no shell, no libc, no coreutils.
fn empty_image() -> String {
    const TAG: &str = "repobox-test/empty:1";
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", TAG])
        .output()
        .unwrap()
        .status
        .success();
    if !present {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/marker"), "empty image\n").unwrap();
        let tar = dir.path().join("root.tar");
        let status = std::process::Command::new("tar")
            .args(["-C"])
            .arg(dir.path())
            .args(["-cf"])
            .arg(&tar)
            .arg("etc")
            .status()
            .unwrap();
        assert!(status.success());
        let status = std::process::Command::new("docker")
            .args(["import", "--change", "WORKDIR /workspace"])
            .arg(&tar)
            .arg(TAG)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "docker import of the empty image");
    }
    TAG.to_owned()
}

#[tokio::test]
async fn an_image_with_no_shell_still_serves_its_files() {
    let world = world();
    let app = &world.app;
    let image = empty_image();
    let url = world.git.url(&unique("empty"), "simple");
    let (created, sandbox) = app
        .sandbox(json!({ "repo_url": url, "image": image }))
        .await;
    assert_eq!(created["image"], image.as_str());
    let id = &sandbox.id;
    let (status, listing) = app
        .get(&format!("/api/v1/containers/{id}/browse?path=/workspace"))
        .await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let names: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"README.md") && names.contains(&".git"),
        "{names:?}"
    );
    let (status, file) = app
        .get(&format!(
            "/api/v1/containers/{id}/files?file_path=/etc/marker"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(file["content"], "empty image\n");
    let written = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/containers/{id}/files/raw?file_path=/new/dir/x.bin"),
        )
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), StatusCode::CREATED);
    let read = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/containers/{id}/files/raw?file_path=/new/dir/x.bin"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(read.bytes().await.unwrap().as_ref(), &[0u8, 1, 2, 255]);
    // Commands need a shell: a clear 422, not a 500.
    let (status, error): (StatusCode, Value) = app
        .post(
            &format!("/api/v1/containers/{id}/execute"),
            &json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["detail"].as_str().unwrap().contains("/bin/sh"),
        "{error}"
    );
}
