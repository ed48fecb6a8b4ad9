//! Jobs: one command across many repositories, with results in order, three ways to
//! read them that agree, cancellation that leaves nothing, and room for other users.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::git_server::GitServer;
use crate::support::{TestApp, fixtures, scratch, spawn_app, test_config, unique, world};

/// Waits until the job is finished (completed or cancelled); returns it.
pub(crate) async fn wait_finished(app: &TestApp, job_id: &str, bound: Duration) -> Value {
    let deadline = Instant::now() + bound;
    loop {
        let (status, job) = app.get(&format!("/api/v1/jobs/{job_id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["status"] == "completed" || job["status"] == "cancelled" {
            return job;
        }
        assert!(Instant::now() < deadline, "job never finished: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole SSE feed of a job, as (event, data) pairs, until the server ends it.
async fn events(app: &TestApp, job_id: &str) -> Vec<(String, Value)> {
    let response = app
        .request(Method::GET, &format!("/api/v1/jobs/{job_id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = tokio::time::timeout(Duration::from_secs(120), response.text())
        .await
        .expect("the feed ends after `done`")
        .unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            }
        }
        if let Some(name) = name {
            events.push((name, serde_json::from_str(&data).unwrap()));
        }
    }
    events
}

/// Containers of a server's instance (a server without a pool has only sandboxes).
fn containers_of(instance: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=repobox.instance={instance}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_job_runs_every_entry_and_reports_each_in_order_three_ways() {
    let world = world();
    let app = &world.app;
    let simple = &world.simple;
    let (one, other) = (
        world.git.url(&unique("job"), "simple"),
        world.git.url(&unique("job"), "simple"),
    );
    let body = json!({
        "command": "git rev-parse HEAD && test ! -f FEATURE",
        "repos": [
            {"repo_url": one},
            {"repo_url": one, "branch": "feature"},
            {"repo_url": other, "commit": &simple.first[..10]},
            {"repo_url": other, "branch": "no-such-branch"},
            {"repo_url": other, "branch": "trunk"},
        ],
        "concurrency": 3,
        "timeout_secs": 60,
        "environment_vars": {"JOB_MARK": "x"},
    });
    let (status, job) = app.post("/api/v1/jobs", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job["total"], 5);
    assert_eq!(job["command"], body["command"]);
    let counts = &job["counts"];
    let sum: u64 = [
        "pending",
        "running",
        "succeeded",
        "failed",
        "errored",
        "cancelled",
    ]
    .iter()
    .map(|k| counts[k].as_u64().unwrap())
    .sum();
    assert_eq!(sum, 5, "counts add up to the total: {job}");

    let feed = events(app, &id).await;
    let job = wait_finished(app, &id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["counts"]["succeeded"], 3, "{job}");
    assert_eq!(job["counts"]["failed"], 1, "{job}");
    assert_eq!(job["counts"]["errored"], 1, "{job}");
    assert!(job["finished_at"].is_string() && job["started_at"].is_string());

    let (status, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
    assert_eq!(status, StatusCode::OK);
    let results = results["results"].as_array().unwrap().clone();
    let indices: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3, 4], "request order");
    let expect = [
        ("succeeded", Some(&simple.trunk_head)),
        ("failed", Some(&simple.feature_head)),
        ("succeeded", Some(&simple.first)),
        ("errored", None),
        ("succeeded", Some(&simple.trunk_head)),
    ];
    for (result, (status, commit)) in results.iter().zip(expect) {
        assert_eq!(result["status"], status, "{result}");
        match commit {
            Some(sha) => {
                assert_eq!(result["resolved_commit"], sha.as_str(), "{result}");
                assert_eq!(result["stdout"], format!("{sha}\n"), "{result}");
                assert!(result["error"].is_null());
                assert!(result["execution_time_secs"].as_f64().unwrap() >= 0.0);
            }
            None => {
                assert!(result["exit_code"].is_null(), "{result}");
                assert_eq!(result["error"]["code"], "checkout_failed", "{result}");
                assert!(
                    result["error"]["detail"]
                        .as_str()
                        .unwrap()
                        .contains("no-such-branch"),
                    "{result}"
                );
            }
        }
    }
    assert_eq!(results[1]["exit_code"], 1);
    assert_eq!(results[1]["branch"], "feature");
    assert_eq!(
        results[0]["branch"], "trunk",
        "the default branch, as checked out"
    );

    // JSON Lines: the same results, one per line.
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/jobs/{id}/results?format=jsonl"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, results, "JSON Lines agree with JSON");

    // The feed: one `result` per entry (as each finished), then `done`.
    let (last, done) = feed.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done["status"], "completed");
    let mut streamed: Vec<Value> = feed
        .iter()
        .filter(|(name, _)| name == "result")
        .map(|(_, data)| data.clone())
        .collect();
    assert_eq!(streamed.len(), 5, "{feed:?}");
    streamed.sort_by_key(|r| r["index"].as_u64().unwrap());
    assert_eq!(streamed, results, "the feed agrees with JSON");
    // A finished job's feed answers at once, everything included.
    let again = events(app, &id).await;
    assert_eq!(again.len(), 6);

    // No sandbox of the job is left.
    let (_, listed) = app.get("/api/v1/containers").await;
    assert!(
        !listed["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["job_id"] == id.as_str()),
        "{listed}"
    );
    let (status, listed) = app.get("/api/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["job_id"] == id.as_str())
    );

    let delete = |id: String| async move {
        app.request(Method::DELETE, &format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(delete(id.clone()).await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/jobs/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete(id.clone()).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_invalid_entry_refuses_the_whole_job_and_starts_nothing() {
    let world = world();
    let app = &world.app;
    let url = world.git.url(&unique("job-invalid"), "simple");
    let (_, before) = app.get("/api/v1/jobs").await;
    for (body, needle) in [
        (
            json!({"command": "true", "repos": [{"repo_url": url}, {"repo_url": "file:///etc"}]}),
            "repos[1]",
        ),
        (
            json!({"command": "true", "repos": [{"repo_url": url, "branch": "--upload-pack=x"}]}),
            "repos[0]",
        ),
        (json!({"command": "true", "repos": []}), "repos"),
        (
            json!({"command": "  ", "repos": [{"repo_url": url}]}),
            "command",
        ),
        (
            json!({"command": "true", "repos": [{"repo_url": url}], "concurrency": 0}),
            "concurrency",
        ),
        (
            json!({"command": "true", "repos": [{"repo_url": url}], "timeout_secs": 0}),
            "timeout_secs",
        ),
    ] {
        let (status, error) = app.post("/api/v1/jobs", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert!(
            error["detail"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let (_, after) = app.get("/api/v1/jobs").await;
    let ids = |list: &Value| -> Vec<String> {
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Other tests may add jobs meanwhile; none of ours is among them.
    let known = ids(&before);
    for id in ids(&after).iter().filter(|id| !known.contains(id)) {
        let (_, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
        assert!(
            !results.to_string().contains(&url),
            "a refused job was started: {results}"
        );
    }
    for path in ["/api/v1/jobs/job-0-0", "/api/v1/jobs/job-0-0/results"] {
        let (status, error) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error["code"], "job_not_found");
    }
}

#[tokio::test]
async fn cancel_mid_job_leaves_no_sandbox_and_no_process() {
    let world = world();
    let dir = scratch();
    let server = spawn_app(test_config(dir.path())).await;
    let app = &server.app;
    let instance = app.instance().await;
    let url = world.git.url(&unique("job-cancel"), "simple");
    let marker = "sleep 300.4242";
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &json!({
                "command": format!("setsid {marker} & {marker}"),
                "repos": vec![json!({"repo_url": url}); 6],
                "concurrency": 2,
                "timeout_secs": 600,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, listed) = app.get("/api/v1/containers").await;
        let running = listed["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["job_id"] == id.as_str())
            .count();
        let ps = std::process::Command::new("pgrep")
            .args(["-fc", marker])
            .output()
            .unwrap();
        let processes: usize = String::from_utf8_lossy(&ps.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if running == 2 && processes >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "two entries never ran: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, job) = app.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "running");
    assert_eq!(job["counts"]["running"], 2, "{job}");
    assert_eq!(job["counts"]["pending"], 4, "{job}");

    let (status, job) = app
        .post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["counts"]["cancelled"], 6, "{job}");
    let (_, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
    for result in results["results"].as_array().unwrap() {
        assert_eq!(result["status"], "cancelled", "{result}");
    }
    assert_eq!(
        containers_of(&instance),
        Vec::<String>::new(),
        "no sandbox left"
    );
    let ps = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "no process left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    let (_, listed) = app.get("/api/v1/containers").await;
    assert_eq!(listed["total_count"], 0, "{listed}");
    // Cancelling again is harmless; the feed of a cancelled job ends with `done`.
    let (status, _) = app
        .post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let feed = events(app, &id).await;
    assert_eq!(feed.len(), 7);
    assert_eq!(feed[6].1["status"], "cancelled");
    server.stop().await;
}

/// A job much larger than `MAX_CONTAINERS`, over more mirrors than `CACHE_MB` holds:
/// it waits for room instead of failing, leaves a place for interactive creates, and
/// every result is right although mirrors are evicted under it.
#[tokio::test]
async fn a_job_larger_than_max_containers_completes_under_mirror_eviction() {
    let world = world();
    let dir = scratch();
    let repos = dir.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    // About 400 KiB of incompressible content: two mirrors fill a 1 MiB cache.
    fixtures::generated(&repos, "big", 40, 400 * 1024);
    let git = GitServer::start(repos).await;
    let mut config = test_config(dir.path());
    config.max_containers = 3;
    config.max_job_containers = 2;
    config.cache_mb = 1;
    let server = spawn_app(config).await;
    let app = &server.app;
    let urls: Vec<String> = (0..8).map(|_| git.url(&unique("evict"), "big")).collect();
    let repos: Vec<Value> = urls.iter().map(|url| json!({"repo_url": url})).collect();
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &json!({
                "command": "git ls-files | wc -l && git status --porcelain | wc -l",
                "repos": repos,
                "concurrency": 8,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();

    // Meanwhile an interactive create still finds room (MAX_JOB_CONTAINERS = 2 of 3).
    let simple = world.git.url(&unique("interactive"), "simple");
    let (created, _guard) = app.sandbox(json!({"repo_url": simple})).await;
    let (_, listed) = app.get("/api/v1/containers").await;
    let of_job = listed["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["job_id"] == id.as_str())
        .count();
    assert!(of_job <= 2, "jobs keep to MAX_JOB_CONTAINERS: {listed}");
    assert_eq!(
        app.destroy(created["container_id"].as_str().unwrap()).await,
        StatusCode::NO_CONTENT
    );

    let job = wait_finished(app, &id, Duration::from_secs(240)).await;
    assert_eq!(job["counts"]["succeeded"], 8, "{job}");
    let (_, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
    let head = results["results"][0]["resolved_commit"].clone();
    assert!(head.is_string());
    for result in results["results"].as_array().unwrap() {
        assert_eq!(
            result["stdout"], "40\n0\n",
            "every checkout whole and clean: {result}"
        );
        assert_eq!(result["resolved_commit"], head, "{result}");
    }
    let mirrors = std::fs::read_dir(dir.path().join("cache/mirrors"))
        .unwrap()
        .count();
    assert!(
        mirrors < 8,
        "mirrors were evicted under CACHE_MB=1 ({mirrors} of 8 left)"
    );
    let metrics = app.text("/metrics").await;
    assert!(
        metrics.contains("repobox_job_entries_total{kind=\"succeeded\"}"),
        "{metrics}"
    );
    server.stop().await;
}
