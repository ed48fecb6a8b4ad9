//! `depth`: a shallow checkout, served from a mirror that is itself only as deep as
//! requests have needed, and deepened (or made whole) when one needs more.

use reqwest::StatusCode;
use serde_json::json;

use crate::jobs::wait_finished;
use crate::support::{scratch, spawn_app, test_config, unique, world};

/// Whether the one mirror under `cache` is shallow (git's `shallow` file).
fn mirror_is_shallow(cache: &std::path::Path) -> bool {
    let mirrors: Vec<_> = std::fs::read_dir(cache.join("mirrors"))
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "git"))
        .collect();
    assert_eq!(mirrors.len(), 1, "one mirror");
    mirrors[0].path().join("shallow").exists()
}

/// HEAD, commits in its history, shallow or not, the work tree's state, the upstream.
const PROBE: &str = "git rev-parse HEAD; git rev-list --count HEAD; \
    git rev-parse --is-shallow-repository; git status --porcelain; \
    git rev-parse --abbrev-ref '@{upstream}' 2>/dev/null || echo no-upstream";

#[tokio::test]
async fn depth_gives_a_shallow_checkout_and_the_mirror_deepens_for_whoever_needs_more() {
    let world = world();
    let simple = &world.simple;
    // A server of its own, to look at its mirror cache.
    let dir = scratch();
    let config = test_config(dir.path());
    let cache = config.cache_dir.clone();
    let server = spawn_app(config).await;
    let app = &server.app;
    let url = world.git.url(&unique("depth"), "simple");

    let (created, shallow) = app.sandbox(json!({"repo_url": url, "depth": 1})).await;
    assert_eq!(created["depth"], 1, "{created}");
    let seen = app.exec(&shallow.id, PROBE).await;
    assert_eq!(
        seen["stdout"],
        format!("{}\n1\ntrue\norigin/trunk\n", simple.trunk_head),
        "{seen}"
    );
    let (_, shown) = app.get(&format!("/api/v1/containers/{}", shallow.id)).await;
    assert_eq!(shown["depth"], 1, "{shown}");
    assert!(mirror_is_shallow(&cache), "the mirror was fetched shallow");

    // The whole history of the same repository: the mirror is made whole.
    let (created, whole) = app.sandbox(json!({"repo_url": url})).await;
    assert!(created["depth"].is_null(), "{created}");
    let seen = app.exec(&whole.id, PROBE).await;
    assert_eq!(
        seen["stdout"],
        format!("{}\n2\nfalse\norigin/trunk\n", simple.trunk_head),
        "{seen}"
    );
    assert!(!mirror_is_shallow(&cache), "the mirror was made whole");

    // A whole mirror serves any depth: a branch, one commit deep.
    let (_, feature) = app
        .sandbox(json!({"repo_url": url, "branch": "feature", "depth": 1}))
        .await;
    let seen = app.exec(&feature.id, PROBE).await;
    assert_eq!(
        seen["stdout"],
        format!("{}\n1\ntrue\norigin/feature\n", simple.feature_head),
        "{seen}"
    );

    // A commit by a short id, two deep (it has no parent: one commit).
    let (_, old) = app
        .sandbox(json!({"repo_url": url, "commit": &simple.first[..10], "depth": 2}))
        .await;
    let seen = app
        .exec(&old.id, "git rev-parse HEAD; git rev-list --count HEAD")
        .await;
    assert_eq!(seen["stdout"], format!("{}\n1\n", simple.first), "{seen}");

    for depth in [json!(0), json!(1_000_001), json!(-1), json!("1")] {
        let (status, refused) = app
            .post(
                "/api/v1/containers",
                &json!({"repo_url": url, "depth": depth}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{depth}: {refused}");
        assert!(
            refused["detail"].as_str().unwrap().contains("depth"),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn a_job_entry_takes_a_depth() {
    let world = world();
    let app = &world.app;
    let url = world.git.url(&unique("depth-job"), "simple");
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &json!({
                "command": "git rev-list --count HEAD",
                "repos": [{"repo_url": url, "depth": 1}, {"repo_url": url}],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job_id"].as_str().unwrap();
    let job = wait_finished(app, id, std::time::Duration::from_secs(120)).await;
    assert_eq!(job["counts"]["succeeded"], 2, "{job}");
    let (_, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
    let results = results["results"].as_array().unwrap();
    assert_eq!(results[0]["stdout"], "1\n", "{}", results[0]);
    assert_eq!(results[1]["stdout"], "2\n", "{}", results[1]);
}
