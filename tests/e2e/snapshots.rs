//! Snapshots and forks: files written after the clone are in every copy, copies are
//! independent, and snapshots survive restarts and go with their images.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, scratch, spawn_app, test_config, unique, world};

fn image_exists(reference: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .unwrap()
        .status
        .success()
}

async fn delete(app: &TestApp, path: &str) -> StatusCode {
    app.request(Method::DELETE, path)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_snapshot_holds_what_was_written_and_every_copy_is_its_own() {
    let world = world();
    let app = &world.app;
    let url = world.git.url(&unique("snap"), "simple");
    let (_, source) = app
        .sandbox(json!({ "repo_url": url, "environment_vars": {"ORIGIN": "source"} }))
        .await;
    let setup = app
        .exec(
            &source.id,
            "echo built > /workspace/artifact.txt && mkdir -p /opt/tool && echo v1 > /opt/tool/version && rm README.md",
        )
        .await;
    assert_eq!(setup["exit_code"], 0, "{setup}");

    let (status, snapshot) = app
        .post(
            &format!("/api/v1/containers/{}/snapshots", source.id),
            &json!({"name": "prepared"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{snapshot}");
    assert_eq!(snapshot["name"], "prepared");
    assert_eq!(snapshot["source_container_id"], source.id.as_str());
    assert_eq!(snapshot["repo_url"], url.as_str());
    assert_eq!(
        snapshot["resolved_commit"],
        world.simple.trunk_head.as_str()
    );
    let snapshot_id = snapshot["snapshot_id"].as_str().unwrap().to_owned();
    let image = snapshot["image"].as_str().unwrap().to_owned();
    assert!(image_exists(&image));
    let (_, listed) = app.get("/api/v1/snapshots").await;
    assert!(
        listed["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["snapshot_id"] == snapshot_id.as_str())
    );
    let (status, fetched) = app.get(&format!("/api/v1/snapshots/{snapshot_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["image"], image.as_str());

    // The source keeps running, unchanged, and can change on its own.
    let after = app
        .exec(
            &source.id,
            "cat /workspace/artifact.txt; echo later > /opt/tool/version",
        )
        .await;
    assert_eq!(after["stdout"], "built\n");

    // A sandbox from the snapshot.
    let (created, copy) = app.sandbox(json!({ "snapshot_id": snapshot_id })).await;
    assert_eq!(created["repo_url"], url.as_str());
    assert_eq!(created["resolved_commit"], world.simple.trunk_head.as_str());
    assert_eq!(created["image"], image.as_str());
    let seen = app
        .exec(
            &copy.id,
            "cat /workspace/artifact.txt /opt/tool/version; test -e README.md || echo no-readme; git rev-parse HEAD; echo \"[$ORIGIN]\"",
        )
        .await;
    assert_eq!(
        seen["stdout"],
        format!("built\nv1\nno-readme\n{}\n[]\n", world.simple.trunk_head),
        "{seen}"
    );
    // In use: the snapshot cannot go.
    let status = delete(app, &format!("/api/v1/snapshots/{snapshot_id}")).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A fork of 3: three independent copies, with the source's environment.
    let (status, forked) = app
        .post(
            &format!("/api/v1/containers/{}/fork", source.id),
            &json!({"count": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{forked}");
    let forks = forked["forks"].as_array().unwrap();
    assert_eq!(forks.len(), 3, "{forked}");
    let mut guards = Vec::new();
    for (i, entry) in forks.iter().enumerate() {
        let container = &entry["container"];
        assert!(container.is_object(), "{entry}");
        let guard = app.guard(container).await;
        app.exec(&guard.id, &format!("echo {i} > /workspace/mine"))
            .await;
        guards.push(guard);
    }
    for (i, guard) in guards.iter().enumerate() {
        let seen = app
            .exec(
                &guard.id,
                "cat /workspace/mine /opt/tool/version; echo $ORIGIN",
            )
            .await;
        assert_eq!(seen["stdout"], format!("{i}\nlater\nsource\n"));
    }
    let (_, source_view) = (
        0,
        app.exec(&source.id, "test -e /workspace/mine || echo untouched")
            .await,
    );
    assert_eq!(source_view["stdout"], "untouched\n");

    // Once no sandbox runs on it, a snapshot goes with its image.
    drop(copy);
    let status = app.destroy(created["container_id"].as_str().unwrap()).await;
    assert!(status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND);
    let status = delete(app, &format!("/api/v1/snapshots/{snapshot_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!image_exists(&image), "the image outlived its snapshot");
    let (status, _) = app.get(&format!("/api/v1/snapshots/{snapshot_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for guard in &guards {
        assert_eq!(app.destroy(&guard.id).await, StatusCode::NO_CONTENT);
    }
    let fork_snapshot = forked["snapshot_id"].as_str().unwrap();
    assert_eq!(
        delete(app, &format!("/api/v1/snapshots/{fork_snapshot}")).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn bad_snapshot_requests_are_4xx_and_a_fork_past_the_limit_fails_alone() {
    let world = world();
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.max_containers = 3;
    let owned = spawn_app(config).await;
    let app = &owned.app;
    let url = world.git.url(&unique("snap-bad"), "simple");
    let (_, source) = app.sandbox(json!({ "repo_url": url })).await;

    for (body, expected) in [
        (json!({"snapshot_id": "snap-999999"}), StatusCode::NOT_FOUND),
        (
            json!({"snapshot_id": "snap-1", "repo_url": url}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({}), StatusCode::BAD_REQUEST),
    ] {
        let (status, error) = app.post("/api/v1/containers", &body).await;
        assert_eq!(status, expected, "{body}: {error}");
    }
    let (status, _) = app
        .post(
            "/api/v1/containers/repo-container-0-0/snapshots",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let fork_path = format!("/api/v1/containers/{}/fork", source.id);
    for bad in [json!({"count": 0}), json!({"count": 1000}), json!({})] {
        let (status, error) = app.post(&fork_path, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
    }

    // MAX_CONTAINERS is 3 and the source is one: of 3 copies, 2 are made.
    let (status, forked) = app.post(&fork_path, &json!({"count": 3})).await;
    assert_eq!(status, StatusCode::CREATED, "{forked}");
    let forks = forked["forks"].as_array().unwrap();
    assert_eq!(forks.len(), 3);
    let made: Vec<&Value> = forks
        .iter()
        .filter(|f| f["container"].is_object())
        .collect();
    let failed: Vec<&Value> = forks.iter().filter(|f| f["error"].is_object()).collect();
    assert_eq!((made.len(), failed.len()), (2, 1), "{forked}");
    assert_eq!(failed[0]["error"]["code"], "too_many_containers");
    let mut guards = Vec::new();
    for entry in made {
        guards.push(app.guard(&entry["container"]).await);
    }
    let (_, list) = app.get("/api/v1/containers").await;
    assert_eq!(list["total_count"], 3, "nothing half-made is left: {list}");

    // Snapshots survive a restart.
    let snapshot_id = forked["snapshot_id"].as_str().unwrap().to_owned();
    owned.stop().await;
    // While it is down: an image of its with no record (an interrupted snapshot), and
    // a record whose image is gone.
    let instance = std::fs::read_to_string(dir.path().join("data/instance-id")).unwrap();
    let instance = instance.trim();
    let orphan_image = format!("repobox-snapshot/{instance}:snap-999");
    let builder = unique("orphan");
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    docker(&[
        "create",
        "--name",
        &builder,
        repobox::config::DEFAULT_BASE_IMAGE,
        "true",
    ]);
    docker(&[
        "commit",
        "-c",
        &format!("LABEL repobox.snapshot.instance={instance} repobox.snapshot.id=snap-999"),
        &builder,
        &orphan_image,
    ]);
    docker(&["rm", "-f", &builder]);
    let record = std::fs::read_to_string(
        dir.path()
            .join(format!("data/snapshots/{snapshot_id}.json")),
    )
    .unwrap()
    .replace(&snapshot_id, "snap-998");
    std::fs::write(dir.path().join("data/snapshots/snap-998.json"), record).unwrap();

    let owned = spawn_app(test_config(dir.path())).await;
    let app = &owned.app;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while image_exists(&orphan_image)
        || app.get("/api/v1/snapshots/snap-998").await.0 == StatusCode::OK
    {
        assert!(
            std::time::Instant::now() < deadline,
            "reconciliation left an image without a record or a record without an image"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, snapshot) = app.get(&format!("/api/v1/snapshots/{snapshot_id}")).await;
        if status == StatusCode::OK {
            assert!(image_exists(snapshot["image"].as_str().unwrap()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot was lost: {snapshot}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for guard in &guards {
        assert_eq!(app.destroy(&guard.id).await, StatusCode::NO_CONTENT);
    }
    assert_eq!(
        delete(app, &format!("/api/v1/snapshots/{snapshot_id}")).await,
        StatusCode::NO_CONTENT
    );
}
