//! Sessions: state carries from one command to the next; each command behaves as
//! `execute` does.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{SandboxGuard, TestApp, unique, world};

async fn sandbox(app: &TestApp) -> SandboxGuard {
    let url = world().git.url(&unique("sessions"), "simple");
    app.sandbox(json!({ "repo_url": url })).await.1
}

async fn session(app: &TestApp, id: &str, body: Value) -> String {
    let (status, created) = app
        .post(&format!("/api/v1/containers/{id}/sessions"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["session_id"].as_str().unwrap().to_owned()
}

async fn run(app: &TestApp, id: &str, session: &str, body: Value) -> Value {
    let (status, result) = app
        .post(
            &format!("/api/v1/containers/{id}/sessions/{session}/execute"),
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    result
}

#[tokio::test]
async fn state_carries_over_and_each_command_behaves_as_execute() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let s = session(app, id, json!({"environment": {"START": "yes"}})).await;
    let cmd = |command: &str| json!({ "command": command });

    let first = run(
        app,
        id,
        &s,
        cmd("cd src && X=1 && export Y=2 && greet() { echo \"hi $1\"; } && alias ll='echo listed' && arr=(a 'b c') && set -o pipefail"),
    )
    .await;
    assert_eq!(first["exit_code"], 0, "{first}");
    let second = run(
        app,
        id,
        &s,
        cmd("pwd; echo \"$X $Y $START ${arr[1]}\"; greet you; ll; bash -c 'echo child sees $Y'; [[ -o pipefail ]] && echo pipefail on"),
    )
    .await;
    assert_eq!(
        second["stdout"],
        "/workspace/src\n1 2 yes b c\nhi you\nlisted\nchild sees 2\npipefail on\n",
        "{second}"
    );
    // Exit codes and streams are the command's own; `exit n` ends only the command.
    let failed = run(app, id, &s, cmd("echo out; echo err >&2; exit 7")).await;
    assert_eq!(failed["exit_code"], 7);
    assert_eq!(failed["stdout"], "out\n");
    assert_eq!(failed["stderr"], "err\n");
    assert_eq!(failed["command"], "echo out; echo err >&2; exit 7");
    // A heredoc, a multi-line script and stdin.
    let script =
        "cat <<'EOF' > note.txt\nline $X\nEOF\nread -r word\necho \"$word $(cat note.txt)\"";
    let fed = run(app, id, &s, json!({"command": script, "stdin": "fed\n"})).await;
    assert_eq!(fed["stdout"], "fed line $X\n", "{fed}");
    // A command's own environment wins for it, and is not kept.
    let own = run(
        app,
        id,
        &s,
        json!({"command": "echo $X; X=changed", "environment": {"X": "mine"}}),
    )
    .await;
    assert_eq!(own["stdout"], "mine\n");
    assert_eq!(run(app, id, &s, cmd("echo $X")).await["stdout"], "1\n");
    // An explicit working directory moves the session.
    let moved = run(
        app,
        id,
        &s,
        json!({"command": "pwd", "working_directory": "/tmp"}),
    )
    .await;
    assert_eq!(moved["stdout"], "/tmp\n");
    let (_, list) = app.get(&format!("/api/v1/containers/{id}/sessions")).await;
    assert_eq!(list["sessions"][0]["session_id"], s.as_str());
    assert_eq!(list["sessions"][0]["working_directory"], "/tmp");

    // Sessions are separate.
    let other = session(app, id, json!({})).await;
    assert_ne!(other, s);
    assert_eq!(
        run(app, id, &other, cmd("pwd; echo \"[$X]\"")).await["stdout"],
        "/workspace\n[]\n"
    );
}

#[tokio::test]
async fn a_session_keeps_state_across_100_commands_and_survives_a_timeout() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let s = session(app, id, json!({})).await;
    run(app, id, &s, json!({"command": "n=0"})).await;
    for _ in 0..100 {
        let result = run(app, id, &s, json!({"command": "n=$((n + 1))"})).await;
        assert_eq!(result["exit_code"], 0, "{result}");
    }
    assert_eq!(
        run(app, id, &s, json!({"command": "echo $n"})).await["stdout"],
        "100\n"
    );
    let timed_out = run(
        app,
        id,
        &s,
        json!({"command": "n=lost; sleep 30", "timeout_secs": 1}),
    )
    .await;
    assert_eq!(timed_out["exit_code"], 124);
    assert_eq!(timed_out["timed_out"], true);
    assert_eq!(
        run(
            app,
            id,
            &s,
            json!({"command": "echo $n; ps -eo args | grep -c '[s]leep 30'"})
        )
        .await["stdout"],
        "100\n0\n",
        "the timed-out command is gone and the session goes on from before it"
    );
}

#[tokio::test]
async fn commands_of_one_session_run_in_order_one_at_a_time() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = sandbox.id.clone();
    let s = session(app, &id, json!({})).await;
    run(app, &id, &s, json!({"command": "log=''"})).await;
    let mut handles = Vec::new();
    for i in 0..5 {
        let (app, id, s) = (app.clone(), id.clone(), s.clone());
        handles.push(tokio::spawn(async move {
            run(
                &app,
                &id,
                &s,
                json!({"command": format!("log=\"${{log}}{i}\"; sleep 0.2")}),
            )
            .await
        }));
        // Arrival order.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(
        run(app, &id, &s, json!({"command": "echo $log"})).await["stdout"],
        "01234\n"
    );
}

#[tokio::test]
async fn unknown_and_deleted_sessions_are_404_and_bad_input_400() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let base = format!("/api/v1/containers/{id}/sessions");
    for unknown in ["sess-999", "nope", "..%2Fx"] {
        let (status, body) = app
            .post(
                &format!("{base}/{unknown}/execute"),
                &json!({"command": "true"}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {body}");
    }
    let (status, _) = app
        .post("/api/v1/containers/repo-container-0-0/sessions", &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [
        json!({"working_directory": "relative"}),
        json!({"working_directory": "/does/not/exist"}),
        json!({"environment": {"1BAD": "x"}}),
        json!({"unknown": true}),
    ] {
        let (status, body) = app.post(&base, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let s = session(app, id, json!({})).await;
    let (status, body) = app
        .post(&format!("{base}/{s}/execute"), &json!({"command": ""}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let deleted = app
        .request(reqwest::Method::DELETE, &format!("{base}/{s}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, _) = app
        .post(&format!("{base}/{s}/execute"), &json!({"command": "true"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let again = app
        .request(reqwest::Method::DELETE, &format!("{base}/{s}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    // Ids are not reused.
    let next = session(app, id, json!({})).await;
    assert_ne!(next, s);
    let (_, list) = app.get(&base).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
}
