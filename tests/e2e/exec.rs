//! Commands: exact results, timeouts that kill, bounded output, live streaming.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{SandboxGuard, TestApp, scratch, spawn_app, test_config, unique, world};

async fn sandbox(app: &TestApp, body: Value) -> SandboxGuard {
    let mut body = body;
    body["repo_url"] = json!(world().git.url(&unique("exec"), "simple"));
    app.sandbox(body).await.1
}

/// Processes in the sandbox other than PID 1 and the probe itself.
async fn stray_processes(app: &TestApp, id: &str, pattern: &str) -> String {
    let probe = format!("ps -eo pid,args | grep -F -- '{pattern}' | grep -v grep || true");
    app.exec(id, &probe).await["stdout"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn exit_codes_output_streams_and_environment() {
    let app = &world().app;
    let sandbox = sandbox(
        app,
        json!({"environment_vars": {"FROM_SANDBOX": "sandbox", "BOTH": "sandbox"}}),
    )
    .await;
    let id = &sandbox.id;
    let cases = [
        ("true", 0),
        ("exit 3", 3),
        ("no-such-command-here", 127),
        ("kill -9 $$", 137),
        ("kill -TERM $$", 143),
    ];
    for (command, code) in cases {
        let result = app.exec(id, command).await;
        assert_eq!(result["exit_code"], code, "{command}: {result}");
        assert_eq!(result["timed_out"], false);
        assert_eq!(result["command"], command);
    }
    let result = app
        .exec(id, "echo out; echo err >&2; printf 'no newline'")
        .await;
    assert_eq!(result["stdout"], "out\nno newline");
    assert_eq!(result["stderr"], "err\n");
    assert_eq!(result["stdout_truncated"], false);
    assert!(result["execution_time_secs"].as_f64().unwrap() > 0.0);
    assert!(chrono::DateTime::parse_from_rfc3339(result["timestamp"].as_str().unwrap()).is_ok());

    let result = app
        .exec_with(id, json!({"command": "echo $FROM_SANDBOX $BOTH $ONLY_HERE; pwd", "environment": {"BOTH": "command", "ONLY_HERE": "here"}}))
        .await;
    assert_eq!(result["stdout"], "sandbox command here\n/workspace\n");
    let result = app
        .exec_with(id, json!({"command": "pwd", "working_directory": "/tmp"}))
        .await;
    assert_eq!(result["stdout"], "/tmp\n");
    let result = app.exec(id, "printf '\\xff\\xfeok'").await;
    assert_eq!(
        result["stdout"], "\u{fffd}\u{fffd}ok",
        "invalid UTF-8 is converted lossily"
    );
}

#[tokio::test]
async fn invalid_commands_are_refused() {
    let app = &world().app;
    let sandbox = sandbox(app, json!({})).await;
    let path = format!("/api/v1/containers/{}/execute", sandbox.id);
    for (body, expected) in [
        (json!({"command": ""}), StatusCode::BAD_REQUEST),
        (json!({"command": "   "}), StatusCode::BAD_REQUEST),
        (
            json!({"command": "pwd", "working_directory": "relative/dir"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"command": "pwd", "timeout_secs": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"command": "pwd", "timeout_secs": 1_000_000}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"command": "pwd", "environment": {"BAD-NAME": "x"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            // The request's field is wrong, not the route: 400, as for a session (a
            // 404 would say the sandbox is gone).
            json!({"command": "pwd", "working_directory": "/no/such/dir"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"timeout_secs": 5}), StatusCode::BAD_REQUEST),
    ] {
        let (status, error) = app.post(&path, &body).await;
        assert_eq!(status, expected, "{body} -> {error}");
        assert!(error["detail"].as_str().is_some(), "{error}");
    }
    let (status, _) = app
        .post(
            "/api/v1/containers/repo-container-0-0/execute",
            &json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            "/api/v1/containers/repo-container-0-0/execute/stream",
            &json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_everything_it_started() {
    let app = &world().app;
    let sandbox = sandbox(app, json!({})).await;
    let started = Instant::now();
    let result = app
        .exec_with(
            &sandbox.id,
            json!({"command": "echo before; sleep 301 & (sleep 302; echo never) & sleep 30", "timeout_secs": 2}),
        )
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "returned after {took:?}");
    assert_eq!(result["timed_out"], true, "{result}");
    assert_eq!(result["exit_code"], 124);
    assert_eq!(
        result["stdout"], "before\n",
        "output captured before the deadline is kept"
    );
    for pattern in ["sleep 30", "sleep 301", "sleep 302"] {
        let left = stray_processes(app, &sandbox.id, pattern).await;
        assert!(left.is_empty(), "still running after the timeout: {left}");
    }
}

#[tokio::test]
async fn output_beyond_the_cap_is_discarded_and_flagged() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.max_output_bytes = 1024 * 1024;
    let server = spawn_app(config).await;
    let sandbox = sandbox(&server.app, json!({})).await;
    let result = server
        .app
        .exec_with(
            &sandbox.id,
            json!({"command": "head -c 20000000 /dev/zero | tr '\\0' a; echo done >&2", "timeout_secs": 60}),
        )
        .await;
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert!(
        result["stdout"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b == b'a')
    );
    assert_eq!(result["stdout_truncated"], true);
    assert_eq!(result["stderr"], "done\n", "the command ran to its end");
    assert_eq!(result["stderr_truncated"], false);
    drop(sandbox);
    server.stop().await;
}

/// Reads an SSE response, calling `on_event(name, data)` for each event.
async fn read_events(response: reqwest::Response, mut on_event: impl FnMut(&str, Value)) {
    let mut body = response.bytes_stream();
    let mut buffer = Vec::<u8>::new();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk.unwrap());
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8(block).unwrap();
            let (mut name, mut data) = ("message", String::new());
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = match value.trim() {
                        "stdout" => "stdout",
                        "stderr" => "stderr",
                        "exit" => "exit",
                        "error" => "error",
                        _ => "other",
                    };
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                on_event(name, serde_json::from_str(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn a_hundred_megabytes_stream_complete_and_in_order() {
    let app = &world().app;
    let sandbox = sandbox(app, json!({})).await;
    let response = app
        .request(
            Method::POST,
            &format!("/api/v1/containers/{}/execute/stream", sandbox.id),
        )
        .json(&json!({"command": "seq 1 13000000; echo finished >&2", "timeout_secs": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (mut next, mut partial, mut bytes, mut stderr, mut exit) =
        (1u64, String::new(), 0usize, String::new(), None);
    read_events(response, |name, data| match name {
        "stdout" => {
            let text = data["data"].as_str().unwrap();
            bytes += text.len();
            partial.push_str(text);
            let complete = partial.rfind('\n').map_or(0, |i| i + 1);
            for line in partial[..complete].lines() {
                assert_eq!(line.parse::<u64>().unwrap(), next, "out of order");
                next += 1;
            }
            partial.drain(..complete);
        }
        "stderr" => stderr.push_str(data["data"].as_str().unwrap()),
        "exit" => exit = Some(data),
        other => panic!("unexpected event {other}: {data}"),
    })
    .await;
    assert_eq!(next, 13_000_001, "lines missing");
    assert!(bytes > 100_000_000, "{bytes} bytes");
    assert_eq!(stderr, "finished\n");
    let exit = exit.expect("exit event");
    assert_eq!(exit["exit_code"], 0);
    assert_eq!(exit["timed_out"], false);
    assert!(exit.get("stdout").is_none());
}

#[tokio::test]
async fn a_streamed_command_times_out_with_an_exit_event() {
    let app = &world().app;
    let sandbox = sandbox(app, json!({})).await;
    let response = app
        .request(
            Method::POST,
            &format!("/api/v1/containers/{}/execute/stream", sandbox.id),
        )
        .json(&json!({"command": "echo hi; sleep 30", "timeout_secs": 1}))
        .send()
        .await
        .unwrap();
    let mut events = Vec::new();
    read_events(response, |name, data| events.push((name.to_owned(), data))).await;
    assert_eq!(events.first().map(|e| e.0.as_str()), Some("stdout"));
    let (name, exit) = events.last().unwrap();
    assert_eq!(name, "exit");
    assert_eq!(exit["exit_code"], 124);
    assert_eq!(exit["timed_out"], true);
    assert!(
        stray_processes(app, &sandbox.id, "sleep 30")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn disconnecting_a_stream_kills_the_command() {
    let app = &world().app;
    let sandbox = sandbox(app, json!({})).await;
    let response = app
        .request(
            Method::POST,
            &format!("/api/v1/containers/{}/execute/stream", sandbox.id),
        )
        .json(&json!({"command": "echo started; sleep 123", "timeout_secs": 300}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("started"));
    assert!(
        !stray_processes(app, &sandbox.id, "sleep 123")
            .await
            .is_empty(),
        "the command should be running"
    );
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if stray_processes(app, &sandbox.id, "sleep 123")
            .await
            .is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the command survived its client");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn fifty_concurrent_commands_do_not_cross_talk() {
    let app = &world().app;
    let sandboxes = [sandbox(app, json!({})).await, sandbox(app, json!({})).await];
    let runs = (0..50).map(|i| {
        let id = sandboxes[i % 2].id.clone();
        async move {
            let token = format!("token-{i}-{}", unique("t"));
            let result = app
                .exec(
                    &id,
                    &format!("sleep 0.$((RANDOM % 5)); echo {token}; echo {token} >&2"),
                )
                .await;
            (token, result)
        }
    });
    for (token, result) in futures_util::future::join_all(runs).await {
        assert_eq!(result["stdout"], format!("{token}\n"));
        assert_eq!(result["stderr"], format!("{token}\n"));
        assert_eq!(result["exit_code"], 0);
    }
}

#[tokio::test]
async fn the_initial_command_result_is_kept_and_failure_keeps_the_sandbox() {
    let app = &world().app;
    let url = world().git.url(&unique("initial"), "simple");
    let (body, sandbox) = app
        .sandbox(json!({
            "repo_url": url,
            "environment_vars": {"GREETING": "hello"},
            "initial_command": "echo $GREETING from $(pwd) > made.txt; cat made.txt; echo oops >&2; exit 3"
        }))
        .await;
    let initial = &body["initial_command_result"];
    assert_eq!(initial["exit_code"], 3, "{body}");
    assert_eq!(initial["stdout"], "hello from /workspace\n");
    assert_eq!(initial["stderr"], "oops\n");
    assert_eq!(body["status"], "running");
    let (status, got) = app.get(&format!("/api/v1/containers/{}", sandbox.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got["initial_command_result"]["exit_code"], 3,
        "kept on the sandbox"
    );
    assert_eq!(
        app.exec(&sandbox.id, "cat made.txt").await["stdout"],
        "hello from /workspace\n"
    );
}

#[tokio::test]
async fn a_command_that_closes_its_output_is_still_timed() {
    let app = &world().app;
    let sandbox = sandbox(app, json!({})).await;
    let started = Instant::now();
    let result = app
        .exec_with(
            &sandbox.id,
            json!({"command": "echo bye; exec >&- 2>&-; sleep 40", "timeout_secs": 2}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(result["timed_out"], true, "{result}");
    assert_eq!(result["exit_code"], 124);
    assert_eq!(result["stdout"], "bye\n");
    assert!(
        stray_processes(app, &sandbox.id, "sleep 40")
            .await
            .is_empty()
    );
    let result = app
        .exec(&sandbox.id, "exec >&- 2>&-; sleep 1; exit 7")
        .await;
    assert_eq!(result["exit_code"], 7, "{result}");
}

#[tokio::test]
async fn the_command_allowlist_refuses_before_anything_runs() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.command_allowlist = repobox::config::List(
        ["git", "ls", "cat", "wc", "touch"]
            .map(str::to_owned)
            .to_vec(),
    );
    let server = spawn_app(config).await;
    let app = &server.app;
    let sandbox = sandbox(
        app,
        json!({"initial_command": "git status --short | wc -l"}),
    )
    .await;
    let path = format!("/api/v1/containers/{}/execute", sandbox.id);
    let result = app
        .exec(&sandbox.id, "git log --oneline | wc -l && ls")
        .await;
    assert_eq!(result["exit_code"], 0, "{result}");
    for refused in [
        "touch /tmp/ran; curl http://x",
        "touch /tmp/ran && $(echo rm) -rf /tmp",
        "touch /tmp/ran | sh -c 'rm -rf /'",
        "eval 'touch /tmp/ran'",
        "f() { rm /tmp/ran; }; touch /tmp/ran",
        "touch /tmp/ran; cat $(python3 -c 1)",
        "if (",
    ] {
        let (status, error) = app.post(&path, &json!({ "command": refused })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}: {error}");
        assert_eq!(error["error"], "Command not allowed");
    }
    let (status, error) = app
        .post(
            &path,
            &json!({"command": "ls", "environment": {"PATH": "/tmp"}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    let (status, _) = app
        .post(&format!("{path}/stream"), &json!({"command": "curl x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing of the refused commands ran.
    let result = app.exec(&sandbox.id, "ls /tmp").await;
    assert!(
        !result["stdout"].as_str().unwrap().contains("ran"),
        "{result}"
    );
    // A create whose initial command is refused makes nothing.
    let url = world().git.url(&unique("policy"), "simple");
    let (status, error, _guard) = app
        .create(json!({"repo_url": url, "initial_command": "make install"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    let (_, info) = app.get("/api/v1/info").await;
    assert_eq!(info["command_policy"]["enforced"], true);
    assert_eq!(info["command_policy"]["allowlist"][0], "git");
}
