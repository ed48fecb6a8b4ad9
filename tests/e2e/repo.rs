//! Repository operations: status, diff → apply round trips, and an exact reset.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{SandboxGuard, TestApp, unique, world};

async fn sandbox(app: &TestApp, prefix: &str) -> (String, SandboxGuard) {
    let url = world().git.url(&unique(prefix), "simple");
    let (_, guard) = app.sandbox(json!({ "repo_url": url })).await;
    (url, guard)
}

async fn sh(app: &TestApp, id: &str, command: &str) -> Value {
    let result = app.exec(id, command).await;
    assert_eq!(result["exit_code"], 0, "{command}: {result}");
    result
}

async fn diff(app: &TestApp, id: &str, query: &str) -> (StatusCode, Vec<u8>) {
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/containers/{id}/git/diff{query}"),
        )
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn apply(app: &TestApp, id: &str, patch: Vec<u8>) -> (StatusCode, Value) {
    let response = app
        .request(Method::POST, &format!("/api/v1/containers/{id}/git/apply"))
        .header("content-type", "text/x-diff")
        .body(patch)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every file of the working tree (not `.git`) with its type, mode, content hash or
/// link target: equal manifests are identical trees.
const MANIFEST: &str = "find . -path ./.git -prune -o -print0 | sort -z | \
    while IFS= read -r -d '' f; do \
      if [ -L \"$f\" ]; then echo \"L $f -> $(readlink \"$f\")\"; \
      elif [ -d \"$f\" ]; then echo \"D $f\"; \
      else echo \"F $(stat -c %a \"$f\") $(sha256sum < \"$f\" | cut -c1-16) $f\"; fi; \
    done";

#[tokio::test]
async fn status_lists_each_kind_of_change() {
    let app = &world().app;
    let (_, sandbox) = sandbox(app, "git-status").await;
    let id = &sandbox.id;
    let (status, clean) = app
        .get(&format!("/api/v1/containers/{id}/git/status"))
        .await;
    assert_eq!(status, StatusCode::OK, "{clean}");
    assert_eq!(clean["clean"], true);
    assert_eq!(clean["branch"], "trunk");
    assert_eq!(clean["head"], world().simple.trunk_head.as_str());
    assert_eq!(clean["base_commit"], world().simple.trunk_head.as_str());

    sh(
        app,
        id,
        "echo more >> README.md && rm .hidden && git mv src/main.py src/app.py \
         && echo new > staged.txt && git add staged.txt && mkdir -p new/dir \
         && echo a > new/dir/a.txt && echo b > 'new/b c.txt'",
    )
    .await;
    let (_, changed) = app
        .get(&format!("/api/v1/containers/{id}/git/status"))
        .await;
    assert_eq!(changed["clean"], false);
    let mut changes: Vec<(String, String, String)> = changed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
                c["old_path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    changes.sort();
    let expected = [
        (".hidden", "deleted", ""),
        ("README.md", "modified", ""),
        ("new/b c.txt", "untracked", ""),
        ("new/dir/a.txt", "untracked", ""),
        ("src/app.py", "renamed", "src/main.py"),
        ("staged.txt", "added", ""),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(changes, expected, "{changed}");
}

#[tokio::test]
async fn a_diff_applied_to_a_fresh_sandbox_gives_an_identical_tree() {
    let app = &world().app;
    let (url, a) = sandbox(app, "git-diff").await;
    let (_, b) = app.sandbox(json!({ "repo_url": url })).await;
    // Nothing changed: an empty patch.
    let (status, empty) = diff(app, &a.id, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(empty.is_empty(), "{}", String::from_utf8_lossy(&empty));

    sh(
        app,
        &a.id,
        "git -c user.name=t -c user.email=t@e commit -q --allow-empty -m empty \
         && echo changed >> README.md && git -c user.name=t -c user.email=t@e commit -qam 'a commit in the sandbox' \
         && printf 'tail\\n' >> 'name with spaces.txt' \
         && printf '\\000\\377\\001binary\\n' > new.bin && printf '\\377\\376' >> binary.bin \
         && rm .hidden && mv src/main.py src/renamed.py && chmod +x link-to-readme README.md \
         && ln -s src/renamed.py new-link && mkdir -p deep/er && printf 'latin \\351\\n' > deep/er/latin1.txt",
    )
    .await;
    let (status, patch) = diff(app, &a.id, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!patch.is_empty());
    let (status, applied) = apply(app, &b.id, patch.clone()).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    let left = sh(app, &a.id, MANIFEST).await["stdout"].clone();
    let right = sh(app, &b.id, MANIFEST).await["stdout"].clone();
    assert_eq!(left, right, "the trees differ");
    assert!(
        left.as_str()
            .unwrap()
            .contains("L ./new-link -> src/renamed.py")
    );
    assert!(left.as_str().unwrap().contains("F 755"), "{left}");
    // HEAD did not move in the sandbox the patch went to.
    let head = sh(app, &b.id, "git rev-parse HEAD").await;
    assert_eq!(head["stdout"], format!("{}\n", world().simple.trunk_head));

    // Without untracked files: the new ones are not in it.
    let (_, tracked) = diff(app, &a.id, "?untracked=false").await;
    let tracked = String::from_utf8_lossy(&tracked).into_owned();
    assert!(
        tracked.contains("README.md") && !tracked.contains("new.bin"),
        "{tracked}"
    );
    // From another base, and an unknown one.
    let (status, from_first) = diff(app, &a.id, &format!("?base={}", world().simple.first)).await;
    assert_eq!(status, StatusCode::OK);
    // Any revision, as users write them: a branch, an expression (two commits were
    // made in the sandbox on top of the checkout, itself one commit after the first).
    let (_, from_checkout) = diff(app, &a.id, "").await;
    let (status, from_branch) = diff(app, &a.id, "?base=origin/trunk").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        from_branch, from_checkout,
        "origin/trunk is the checkout's commit"
    );
    let (status, from_expression) = diff(app, &a.id, "?base=HEAD~2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        from_expression, from_checkout,
        "HEAD~2 is the checkout's commit"
    );
    let (_, from_parent) = diff(app, &a.id, "?base=HEAD~3").await;
    assert_eq!(from_parent, from_first, "HEAD~3 is trunk's first commit");
    let (status, body) = diff(app, &a.id, "?base=no-such-branch").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = diff(app, &a.id, &format!("?base={}", "ab".repeat(20))).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _) = diff(app, &a.id, "?base=--output=/etc/x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The same patch again does not apply: 422, and nothing changed.
    let before = sh(app, &b.id, MANIFEST).await["stdout"].clone();
    let (status, error) = apply(app, &b.id, patch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(sh(app, &b.id, MANIFEST).await["stdout"], before);
    let (status, error) = apply(app, &b.id, b"not a patch at all\n".to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let left = sh(app, &b.id, "ls -A /.repobox/tmp 2>/dev/null | wc -l").await;
    assert_eq!(left["stdout"], "0\n", "temporary patches left behind");
}

#[tokio::test]
async fn reset_brings_back_the_checkout_and_ends_what_runs() {
    let app = &world().app;
    let (_, sandbox) = sandbox(app, "git-reset").await;
    let id = sandbox.id.clone();
    let pristine = sh(app, &id, MANIFEST).await["stdout"].clone();
    sh(
        app,
        &id,
        "echo edit >> README.md && rm binary.bin && echo x > untracked.txt \
         && echo node_modules >> .git/info/exclude && mkdir -p node_modules/pkg && echo m > node_modules/pkg/i.js \
         && git checkout -q -b elsewhere && git -c user.name=t -c user.email=t@e commit -qam moved",
    )
    .await;
    let session = app
        .post(&format!("/api/v1/containers/{id}/sessions"), &json!({}))
        .await
        .1["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A command still running when the reset comes.
    let running = {
        let app = app.clone();
        let id = id.clone();
        tokio::spawn(async move {
            app.post(
                &format!("/api/v1/containers/{id}/execute"),
                &json!({"command": "sleep 300.5", "timeout_secs": 600}),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sh(app, &id, "ps -eo args").await["stdout"]
        .as_str()
        .unwrap()
        .contains("sleep 300.5")
    {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let (status, body) = app
        .post(
            &format!("/api/v1/containers/{id}/reset"),
            &json!({"processes": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["container_id"], id.as_str());
    let (_, killed) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the running command ended")
        .unwrap();
    assert_ne!(killed["exit_code"], 0, "{killed}");
    eprintln!("reset took {:?}", started.elapsed());

    let check = sh(
        app,
        &id,
        "git status --porcelain --ignored; git rev-parse HEAD; git branch --show-current; ps -eo args | grep -c '[s]leep 300.5' || true",
    )
    .await;
    assert_eq!(
        check["stdout"],
        format!("{}\ntrunk\n0\n", world().simple.trunk_head)
    );
    assert_eq!(sh(app, &id, MANIFEST).await["stdout"], pristine);
    let (status, _) = app
        .post(
            &format!("/api/v1/containers/{id}/sessions/{session}/execute"),
            &json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "sessions end with a reset");
    let (status, error) = app
        .post(
            &format!("/api/v1/containers/{id}/reset"),
            &json!({"processes": "yes"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
}

/// The sandbox image without git.
fn image_without_git() -> String {
    const TAG: &str = "repobox-test/nogit:1";
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap()
    };
    if !docker(&["image", "inspect", TAG]).status.success() {
        let name = unique("nogit-build");
        let base = repobox::config::DEFAULT_BASE_IMAGE;
        let ran = docker(&[
            "run",
            "--name",
            &name,
            "--network",
            "none",
            base,
            "rm",
            "-f",
            "/usr/bin/git",
        ]);
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let committed = docker(&["commit", &name, TAG]);
        docker(&["rm", "-f", &name]);
        assert!(committed.status.success());
    }
    TAG.to_owned()
}

#[tokio::test]
async fn without_git_in_the_image_repository_operations_are_409() {
    let world = world();
    let app = &world.app;
    let url = world.git.url(&unique("nogit"), "simple");
    let (_, sandbox) = app
        .sandbox(json!({ "repo_url": url, "image": image_without_git() }))
        .await;
    let id = &sandbox.id;
    let (status, error) = app
        .get(&format!("/api/v1/containers/{id}/git/status"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(
        error["detail"].as_str().unwrap().contains("no git"),
        "{error}"
    );
    let (status, _) = diff(app, id, "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .post(&format!("/api/v1/containers/{id}/reset"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}
