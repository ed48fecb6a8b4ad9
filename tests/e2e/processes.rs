//! Background processes: a dev server polled and killed with its children, output by
//! offsets and streams, stdin, signals, timeouts, and bad input.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{SandboxGuard, TestApp, unique, world};

async fn sandbox(app: &TestApp) -> SandboxGuard {
    let url = world().git.url(&unique("procs"), "simple");
    app.sandbox(json!({ "repo_url": url })).await.1
}

async fn start(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, process) = app
        .post(&format!("/api/v1/containers/{id}/processes"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{process}");
    process
}

/// Polls the process until it is no longer running.
async fn ended(app: &TestApp, id: &str, process: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, info) = app
            .get(&format!("/api/v1/containers/{id}/processes/{process}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{info}");
        if info["status"] != "running" {
            return info;
        }
        assert!(Instant::now() < deadline, "{process} never ended: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn output(app: &TestApp, id: &str, process: &str, from: (u64, u64)) -> Value {
    let (status, out) = app
        .get(&format!(
            "/api/v1/containers/{id}/processes/{process}/output?stdout_offset={}&stderr_offset={}",
            from.0, from.1
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out
}

#[tokio::test]
async fn a_dev_server_is_started_polled_and_killed_with_its_children() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let server = start(
        app,
        id,
        json!({"command": "python3 -m http.server 8765 --bind 127.0.0.1 & echo started; wait"}),
    )
    .await;
    assert_eq!(server["status"], "running");
    assert_eq!(server["working_directory"], "/workspace");
    let pid = server["process_id"].as_str().unwrap().to_owned();

    // Another command reaches it on loopback.
    let fetch = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8765/README.md').read().decode().splitlines()[0])\"";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = app.exec(id, fetch).await;
        if result["exit_code"] == 0 {
            assert_eq!(result["stdout"], "# simple\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never answered: {result}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = app.get(&format!("/api/v1/containers/{id}/processes")).await;
    assert!(
        list["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["process_id"] == pid.as_str() && p["status"] == "running"),
        "{list}"
    );

    let sent = app
        .post(
            &format!("/api/v1/containers/{id}/processes/{pid}/signal"),
            &json!({"signal": "SIGTERM"}),
        )
        .await;
    assert_eq!(sent.0, StatusCode::NO_CONTENT, "{}", sent.1);
    let info = ended(app, id, &pid).await;
    assert_eq!(info["status"], "killed", "{info}");
    assert_eq!(info["exit_code"], 143);
    let left = app
        .exec(id, "ps -eo args | grep -c '[h]ttp.server' || true")
        .await;
    assert_eq!(left["stdout"], "0\n", "the server's child survived");
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/v1/containers/{id}/processes/{pid}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, _) = app
        .get(&format!("/api/v1/containers/{id}/processes/{pid}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn output_by_offsets_and_streams_miss_nothing_and_repeat_nothing() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let process = start(
        app,
        id,
        json!({"command": "for i in $(seq 1 30); do echo line$i; echo err$i >&2; sleep 0.05; done"}),
    )
    .await;
    let pid = process["process_id"].as_str().unwrap().to_owned();
    // Incremental polling: each call gives only what is new.
    let mut stdout = String::new();
    let mut from = (0, 0);
    loop {
        let out = output(app, id, &pid, from).await;
        assert_eq!(out["stdout_offset"], from.0);
        stdout.push_str(out["stdout"].as_str().unwrap());
        from = (
            out["stdout_end"].as_u64().unwrap(),
            out["stderr_end"].as_u64().unwrap(),
        );
        if out["status"] != "running" {
            let last = output(app, id, &pid, from).await;
            stdout.push_str(last["stdout"].as_str().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let expected: String = (1..=30).map(|i| format!("line{i}\n")).collect();
    assert_eq!(stdout, expected);

    // A stream from an offset, after the end: replays from there, then `exit`.
    let offset = "line1\nline2\n".len();
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/containers/{id}/processes/{pid}/stream?stdout_offset={offset}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let mut streamed = String::new();
    let mut exit = Value::Null;
    let mut event = "";
    for line in body.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name;
        } else if let Some(data) = line.strip_prefix("data: ") {
            let data: Value = serde_json::from_str(data).unwrap();
            match event {
                "stdout" => {
                    assert_eq!(data["offset"], (offset + streamed.len()) as u64);
                    streamed.push_str(data["data"].as_str().unwrap());
                }
                "exit" => exit = data,
                _ => {}
            }
        }
    }
    assert_eq!(streamed, expected[offset..]);
    assert_eq!(exit["exit_code"], 0, "{body}");
    assert_eq!(exit["process_id"], pid.as_str());
    assert_eq!(exit["status"], "exited");
}

#[tokio::test]
async fn a_megabyte_through_stdin_arrives_exactly_and_eof_ends_it() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let process = start(app, id, json!({"command": "sha256sum", "stdin_open": true})).await;
    let pid = process["process_id"].as_str().unwrap().to_owned();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
    let path = format!("/api/v1/containers/{id}/processes/{pid}/stdin");
    let (status, body) = app
        .post(&path, &json!({"data_base64": encoded, "eof": true}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let info = ended(app, id, &pid).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    let out = output(app, id, &pid, (0, 0)).await;
    let expected = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&data);
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(out["stdout"], format!("{expected}  -\n"), "{out}");
    // Stdin of an ended process: 409.
    let (status, _) = app.post(&path, &json!({"data": "more"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn timeouts_and_bad_input() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let process = start(app, id, json!({"command": "sleep 60", "timeout_secs": 1})).await;
    let pid = process["process_id"].as_str().unwrap().to_owned();
    let info = ended(app, id, &pid).await;
    assert_eq!(
        (info["status"].clone(), info["exit_code"].clone()),
        (json!("timed_out"), json!(124))
    );

    let base = format!("/api/v1/containers/{id}/processes");
    for unknown in ["proc-999", "nope"] {
        let (status, _) = app.get(&format!("{base}/{unknown}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    }
    let running = start(app, id, json!({"command": "sleep 30"})).await;
    let rid = running["process_id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            &format!("{base}/{rid}/signal"),
            &json!({"signal": "SIGBOGUS"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = app
        .post(&format!("{base}/{rid}/stdin"), &json!({"data": "x"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "stdin was not opened");
    let reader = start(
        app,
        id,
        json!({"command": "cat > /dev/null", "stdin_open": true}),
    )
    .await;
    let reader = reader["process_id"].as_str().unwrap().to_owned();
    let too_much = "x".repeat(8 * 1024 * 1024 + 1);
    let (status, body) = app
        .post(
            &format!("{base}/{reader}/stdin"),
            &json!({"data": too_much}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, body) = app
        .post(
            &format!("{base}/{reader}/stdin"),
            &json!({"data_base64": "not base64!"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let deleted = app
        .request(Method::DELETE, &format!("{base}/{reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    for bad in [
        json!({"command": ""}),
        json!({"command": "true", "working_directory": "rel"}),
        json!({"command": "true", "working_directory": "/no/such/dir"}),
        json!({"command": "true", "timeout_secs": 0}),
        json!({"command": "true", "unknown": 1}),
    ] {
        let (status, body) = app.post(&base, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = app
        .post(
            "/api/v1/containers/repo-container-0-0/processes",
            &json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let deleted = app
        .request(Method::DELETE, &format!("{base}/{rid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let left = app
        .exec(id, "ps -eo args | grep -c '^sleep 30' || true")
        .await;
    assert_eq!(left["stdout"], "0\n");
}
