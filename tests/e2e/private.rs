//! Private repositories (`GIT_CREDENTIALS_FILE`): the server fetches with the file's
//! token, and the token goes nowhere else — not into the sandbox, an answer, or the
//! server's disk.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{scratch, spawn_app, test_config, unique, world};

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(path),
                Ok(kind) if kind.is_file() => {
                    if let Ok(bytes) = std::fs::read(&path)
                        && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                    {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

#[tokio::test]
async fn a_private_repository_is_fetched_with_the_files_token_which_goes_nowhere_else() {
    let world = world();
    let prefix = unique("private");
    let token = unique("tok").replace(['-', '_'], "x");
    world.git.guard(&prefix, "bot", &token);
    let url = world.git.url(&prefix, "simple");

    // Without credentials the repository is refused, with a clear 4xx.
    let (status, refused) = world
        .app
        .post("/api/v1/containers", &json!({"repo_url": url}))
        .await;
    assert!(status.is_client_error(), "{status}: {refused}");

    // A server whose file has the token for that path.
    let dir = scratch();
    let file = dir.path().join("git-credentials");
    let host = world.git.base.trim_start_matches("http://").to_owned();
    std::fs::write(
        &file,
        format!("# the CI bot\nhttp://someone:wrong@{host}/elsewhere\nhttp://bot:{token}@{host}/{prefix}\n"),
    )
    .unwrap();
    let mut config = test_config(dir.path());
    config.git_credentials_file = file.display().to_string();
    let server = spawn_app(config).await;
    let app = &server.app;

    let (_, info) = app.get("/api/v1/info").await;
    assert_eq!(info["git_credential_hosts"], json!([host]), "{info}");
    assert!(!info.to_string().contains(&token));

    let (status, created) = app
        .post("/api/v1/containers", &json!({"repo_url": url}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains(&token), "{created}");
    let id = created["container_id"].as_str().unwrap().to_owned();
    let head = app.exec(&id, "git rev-parse HEAD").await;
    assert_eq!(head["stdout"], format!("{}\n", world.simple.trunk_head));

    // Nowhere in the sandbox: its repository's config, its files, its environment.
    let inside = app
        .exec(
            &id,
            &format!(
                "git config --list --show-origin; env; grep -rls '{token}' /workspace /root /tmp /etc /.repobox 2>/dev/null; true"
            ),
        )
        .await;
    let stdout = inside["stdout"].as_str().unwrap();
    assert!(!stdout.contains(&token), "{stdout}");
    assert!(
        stdout.contains(&url),
        "origin is the URL as given: {stdout}"
    );
    let (_, shown) = app.get(&format!("/api/v1/containers/{id}")).await;
    assert!(!shown.to_string().contains(&token), "{shown}");

    // Nor on the server's disk: records, mirrors, cached trees.
    assert_eq!(
        files_containing(dir.path(), &token),
        std::slice::from_ref(&file),
        "the token was written down"
    );
    assert_eq!(app.destroy(&id).await, StatusCode::NO_CONTENT);
    server.stop().await;
}
