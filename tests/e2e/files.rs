//! Files: listings that match `stat`, exact round trips both ways, 200 MB streams,
//! archives, and every error a client can cause.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{SandboxGuard, TestApp, scratch, spawn_app, test_config, unique, world};

async fn sandbox(app: &TestApp) -> SandboxGuard {
    let url = world().git.url(&unique("files"), "simple");
    app.sandbox(json!({ "repo_url": url })).await.1
}

/// `/api/v1/containers/{id}/{route}?{key}={value}`, the value form-encoded.
fn route(id: &str, route: &str, key: &str, value: &str) -> String {
    let value: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("/api/v1/containers/{id}/{route}?{key}={value}")
}

/// Runs `command` (bash) in the sandbox; it must exit 0. Returns its stdout.
async fn sh(app: &TestApp, id: &str, command: &str) -> String {
    let result = app
        .exec_with(id, json!({ "command": command, "timeout_secs": 300 }))
        .await;
    assert_eq!(result["exit_code"], 0, "{command}: {result}");
    result["stdout"].as_str().unwrap().to_owned()
}

/// sha256 of a file, computed inside the sandbox.
async fn sha256_inside(app: &TestApp, id: &str, path: &str) -> String {
    let out = sh(app, id, &format!("sha256sum -- '{path}'")).await;
    out.split_whitespace().next().unwrap().to_owned()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// PUT `body` to `/files/raw`; returns status and JSON.
async fn put_raw(app: &TestApp, id: &str, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = app
        .request(Method::PUT, &route(id, "files/raw", "file_path", path))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GET `/files/raw`, whole (small files only).
async fn get_raw(app: &TestApp, id: &str, path: &str) -> (StatusCode, Vec<u8>) {
    let response = app
        .request(Method::GET, &route(id, "files/raw", "file_path", path))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

/// What `stat` (and `readlink`) say about every entry of `dir`, by name:
/// (type, size, permissions, mtime seconds, link target).
async fn stat_inside(
    app: &TestApp,
    id: &str,
    dir: &str,
) -> Vec<(String, String, u64, String, i64, String)> {
    let script = format!(
        "cd '{dir}' && shopt -s dotglob nullglob && for f in *; do \
         stat --printf '%n\\0%F\\0%s\\0%A\\0%Y\\0' -- \"$f\"; \
         if [ -L \"$f\" ]; then readlink -n -- \"$f\"; fi; printf '\\0'; done"
    );
    let out = sh(app, id, &script).await;
    let fields: Vec<&str> = out.split('\0').collect();
    assert_eq!(fields.len() % 6, 1, "{out:?}");
    let mut entries: Vec<_> = fields
        .chunks_exact(6)
        .map(|f| {
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].parse().unwrap(),
                f[3].to_owned(),
                f[4].parse().unwrap(),
                f[5].to_owned(),
            )
        })
        .collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries
}

async fn assert_listing_matches_stat(app: &TestApp, id: &str, dir: &str) -> Value {
    let (status, listing) = app.get(&route(id, "browse", "path", dir)).await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    assert_eq!(listing["path"], dir);
    let items = listing["items"].as_array().unwrap();
    assert_eq!(listing["total_items"], items.len());
    let expected = stat_inside(app, id, dir).await;
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    let expected_names: Vec<&str> = expected.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, expected_names, "same entries, in byte order");
    for (item, (name, kind, size, permissions, mtime, target)) in items.iter().zip(&expected) {
        let what = format!("{name:?}: {item}");
        let kind = match kind.as_str() {
            "directory" => "directory",
            "symbolic link" => "symlink",
            "regular file" | "regular empty file" => "file",
            other => panic!("unexpected kind {other} for {what}"),
        };
        assert_eq!(item["type"], kind, "{what}");
        if kind == "directory" {
            assert_eq!(item["size"], Value::Null, "{what}");
        } else {
            assert_eq!(item["size"], *size, "{what}");
        }
        assert_eq!(item["permissions"], *permissions, "{what}");
        let modified =
            chrono::DateTime::parse_from_rfc3339(item["modified_at"].as_str().unwrap()).unwrap();
        assert_eq!(modified.offset().local_minus_utc(), 0, "UTC: {what}");
        assert_eq!(modified.timestamp(), *mtime, "{what}");
        if kind == "symlink" {
            assert_eq!(item["symlink_target"], *target, "{what}");
        } else {
            assert_eq!(item["symlink_target"], Value::Null, "{what}");
        }
    }
    listing
}

#[tokio::test]
async fn browse_lists_every_entry_as_stat_sees_it() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    sh(
        app,
        id,
        r#"mkdir -p /workspace/odd/empty && cd /workspace/odd &&
           printf 'x' > "$(printf 'new\nline "double" '"'"'single'"'"'')" &&
           printf 'hidden' > .dot && chmod 600 .dot &&
           printf 'ü' > 'ça va → ok.txt' && chmod 4755 'ça va → ok.txt' &&
           touch -h -d '2001-02-03 04:05:06 UTC' 'ça va → ok.txt' &&
           ln -s ../README.md rel-link && ln -s /workspace/src abs-dir-link &&
           ln -s nowhere dangling && mkdir sticky && chmod 1777 sticky"#,
    )
    .await;
    let root = assert_listing_matches_stat(app, id, "/workspace").await;
    let names: Vec<&str> = root["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for fixture in [
        ".hidden",
        "name with spaces.txt",
        "ünïcødé.txt",
        "binary.bin",
        "link-to-readme",
        ".git",
    ] {
        assert!(names.contains(&fixture), "{fixture} missing from {names:?}");
    }
    let odd = assert_listing_matches_stat(app, id, "/workspace/odd").await;
    let odd_names: Vec<&str> = odd["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        odd_names.contains(&"new\nline \"double\" 'single'"),
        "{odd_names:?}"
    );
    let (status, empty) = app
        .get(&route(id, "browse", "path", "/workspace/odd/empty"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["items"], json!([]));
    assert_eq!(empty["total_items"], 0);

    // The default path is /workspace; a link to a directory lists the directory.
    let (status, default) = app.get(&format!("/api/v1/containers/{id}/browse")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(default["path"], "/workspace");
    assert_eq!(default["items"], root["items"]);
    let (status, through) = app
        .get(&route(id, "browse", "path", "/workspace/odd/abs-dir-link"))
        .await;
    assert_eq!(status, StatusCode::OK, "{through}");
    assert_eq!(through["items"][0]["name"], "main.py");
    let (status, slash) = app
        .get(&format!("/api/v1/containers/{id}/browse/?path=/"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        slash["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "workspace")
    );
}

#[tokio::test]
async fn files_round_trip_exactly_binary_and_text() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;

    // The fixture, through both endpoints.
    let (status, file) = app
        .get(&route(id, "files", "file_path", "/workspace/README.md"))
        .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    let readme = "# simple\n\nA fixture repository.\n";
    assert_eq!(
        file,
        json!({"path": "/workspace/README.md", "content": readme, "size": readme.len(),
               "encoding": "utf-8", "is_binary": false})
    );
    let (status, file) = app
        .get(&route(id, "files", "file_path", "/workspace/binary.bin"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(file["is_binary"], true);
    assert_eq!(file["encoding"], "base64");
    assert_eq!(file["size"], 7);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(file["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, [0u8, 159, 146, 150, 255, 0, 1]);

    // Symlinks, relative and absolute, are read through.
    sh(app, id, "ln -s /workspace/README.md /tmp/abs-readme").await;
    for link in ["/workspace/link-to-readme", "/tmp/abs-readme"] {
        let (status, file) = app.get(&route(id, "files", "file_path", link)).await;
        assert_eq!(status, StatusCode::OK, "{link}: {file}");
        assert_eq!(file["content"], readme, "{link}");
        assert_eq!(file["path"], link);
        assert_eq!(get_raw(app, id, link).await.1, readme.as_bytes(), "{link}");
    }

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let text = "héllo → wörld 🎉\n\"quotes\" and 'more'\r\n\ttabs\n".repeat(50);
    let cases: [(&str, Vec<u8>); 4] = [
        ("/workspace/new/deeper/data.bin", binary),
        ("/workspace/ünï côdé \"q\".txt", text.clone().into_bytes()),
        ("/top-level.txt", b"at the root".to_vec()),
        ("/workspace/empty", Vec::new()),
    ];
    for (path, content) in cases {
        let (status, item) = put_raw(app, id, path, content.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {item}");
        assert_eq!(item["name"], path.rsplit('/').next().unwrap());
        assert_eq!(item["type"], "file");
        assert_eq!(item["size"], content.len());
        assert_eq!(item["permissions"], "-rw-r--r--");
        assert_eq!(item["symlink_target"], Value::Null);
        assert!(
            item["modified_at"].as_str().unwrap().ends_with('Z'),
            "{item}"
        );
        let sha = hex(&Sha256::digest(&content));
        assert_eq!(sha256_inside(app, id, path).await, sha, "{path}");
        assert_eq!(
            sh(
                app,
                id,
                &format!("stat -c '%U:%G %a' -- '{}'", path.replace('\'', "'\\''"))
            )
            .await,
            "root:root 644\n"
        );

        let response = app
            .request(Method::GET, &route(id, "files/raw", "file_path", path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        assert_eq!(
            response.headers()["content-length"],
            content.len().to_string().as_str()
        );
        assert_eq!(hex(&Sha256::digest(response.bytes().await.unwrap())), sha);

        let (status, file) = app.get(&route(id, "files", "file_path", path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(file["size"], content.len());
        let back = match std::str::from_utf8(&content) {
            Ok(_) => {
                assert_eq!(file["encoding"], "utf-8");
                assert_eq!(file["is_binary"], false);
                file["content"].as_str().unwrap().as_bytes().to_vec()
            }
            Err(_) => {
                assert_eq!(file["encoding"], "base64");
                assert_eq!(file["is_binary"], true);
                base64::engine::general_purpose::STANDARD
                    .decode(file["content"].as_str().unwrap())
                    .unwrap()
            }
        };
        assert_eq!(hex(&Sha256::digest(back)), sha, "{path}");
    }

    // Overwriting replaces the content; a body without Content-Length is spooled.
    let path = "/workspace/new/deeper/data.bin";
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(b"chunked ".to_vec()), Ok(b"upload".to_vec())];
    let response = app
        .request(Method::PUT, &route(id, "files/raw", "file_path", path))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(get_raw(app, id, path).await.1, b"chunked upload");

    // Writing to a symlink writes through to its target; the link stays a link.
    let (status, _) = put_raw(app, id, "/workspace/link-to-readme", b"new readme".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(sh(app, id, "cat /workspace/README.md").await, "new readme");
    assert_eq!(
        sh(app, id, "readlink /workspace/link-to-readme").await,
        "README.md\n"
    );
}

/// A deterministic, incompressible stream of `total` bytes, hashed as it is produced.
fn generated_body(total: usize, hasher: Arc<Mutex<Sha256>>) -> reqwest::Body {
    const CHUNK: usize = 1024 * 1024;
    let stream = futures_util::stream::unfold(
        (0usize, 0x9E37_79B9_7F4A_7C15u64),
        move |(sent, mut state)| {
            let hasher = hasher.clone();
            async move {
                if sent == total {
                    return None;
                }
                let len = CHUNK.min(total - sent);
                let mut chunk = Vec::with_capacity(len + 8);
                while chunk.len() < len {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.extend_from_slice(&state.to_le_bytes());
                }
                chunk.truncate(len);
                hasher.lock().unwrap().update(&chunk);
                Some((Ok::<_, std::io::Error>(chunk), (sent + len, state)))
            }
        },
    );
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn two_hundred_megabytes_stream_both_ways_exactly() {
    const SIZE: usize = 200 * 1024 * 1024;
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;

    // Download: made in the sandbox, hashed here as it streams.
    sh(app, id, "head -c 200M /dev/urandom > /tmp/big.bin").await;
    let inside = sha256_inside(app, id, "/tmp/big.bin").await;
    let response = app
        .request(
            Method::GET,
            &route(id, "files/raw", "file_path", "/tmp/big.bin"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        SIZE.to_string().as_str()
    );
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, SIZE);
    assert_eq!(hex(&hasher.finalize()), inside);

    // Upload: generated here, never whole in memory, far above the JSON body limit.
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let response = app
        .request(
            Method::PUT,
            &route(id, "files/raw", "file_path", "/tmp/up/big.bin"),
        )
        .header("content-length", SIZE)
        .body(generated_body(SIZE, hasher.clone()))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let item: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{item}");
    assert_eq!(item["size"], SIZE);
    let sent = hex(&hasher.lock().unwrap().clone().finalize());
    assert_eq!(sha256_inside(app, id, "/tmp/up/big.bin").await, sent);
}

#[tokio::test]
async fn an_archive_round_trips_a_directory() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    sh(
        app,
        id,
        r#"mkdir -p /srv/tree/a/b /srv/tree/empty && cd /srv/tree &&
           printf 'one' > 'a/b/file one' && head -c 100000 /dev/urandom > a/random.bin &&
           printf 'q' > "$(printf 'line\nbreak "q"')" && printf 'ü' > 'ünï.txt' &&
           ln -s 'a/b/file one' link && chmod 700 a && mkdir /srv/copy"#,
    )
    .await;
    let response = app
        .request(Method::GET, &route(id, "archive", "path", "/srv/tree"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let tar = response.bytes().await.unwrap();

    let response = app
        .request(Method::PUT, &route(id, "archive", "path", "/srv/copy"))
        .body(tar.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let summary = |dir: &str| {
        format!(
            "cd {dir} && find . -type f -exec sha256sum {{}} + | sort && \
             find . -printf '%y %m %s %l %p\\n' | sort"
        )
    };
    let original = sh(app, id, &summary("/srv/tree")).await;
    let copy = sh(app, id, &summary("/srv/copy/tree")).await;
    assert!(original.contains("file one"), "{original}");
    assert_eq!(copy, original);

    // Unpacking needs an existing directory and a real tar.
    for (path, body, expected) in [
        ("/srv/missing", tar.to_vec(), StatusCode::NOT_FOUND),
        ("/srv/tree/ünï.txt", tar.to_vec(), StatusCode::BAD_REQUEST),
        (
            "/srv/copy",
            b"not a tar at all".repeat(100),
            StatusCode::BAD_REQUEST,
        ),
        ("relative", tar.to_vec(), StatusCode::BAD_REQUEST),
    ] {
        let response = app
            .request(Method::PUT, &route(id, "archive", "path", path))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let error: Value = response.json().await.unwrap();
        assert_eq!(status, expected, "{path}: {error}");
        assert!(error["detail"].is_string(), "{error}");
    }
    let (status, _) = app.get(&route(id, "archive", "path", "/srv/missing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_client_mistake_is_a_json_4xx() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let long = format!("/{}", "a".repeat(5000));
    let base = format!("/api/v1/containers/{id}");
    let cases: Vec<(Method, String, StatusCode)> = vec![
        (
            Method::GET,
            route(id, "browse", "path", "workspace"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("{base}/browse?path=/work%00space"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "browse", "path", &long),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "browse", "path", ""),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "browse", "path", "/no/such/dir"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            route(id, "browse", "path", "/workspace/README.md"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "browse", "path", "/workspace/link-to-readme"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "browse", "path", "/workspace/README.md/x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "files", "file_path", "/workspace/README.md/x/y"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "files", "file_path", "README.md"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("{base}/files?file_path=/workspace/README.md%00"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "files", "file_path", &long),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("{base}/files"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "files", "file_path", "/workspace/nope"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            route(id, "files", "file_path", "/workspace/src"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "files", "file_path", "/workspace"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "files/raw", "file_path", "/workspace/nope"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            route(id, "files/raw", "file_path", "/workspace/src"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "files/raw", "file_path", "rel"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            route(id, "files/raw", "file_path", "/workspace/src"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            route(id, "files/raw", "file_path", "/workspace/new/"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            route(id, "files/raw", "file_path", "/workspace/README.md/x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            route(id, "files/raw", "file_path", "rel.txt"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            format!("{base}/files/raw?file_path=/tmp/a%00b"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "archive", "path", "rel"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            route(id, "archive", "path", "/no/such"),
            StatusCode::NOT_FOUND,
        ),
    ];
    let unknown = "/api/v1/containers/repo-container-0-0";
    let unknown_cases = [
        (Method::GET, format!("{unknown}/browse")),
        (
            Method::GET,
            format!("{unknown}/files?file_path=/workspace/README.md"),
        ),
        (
            Method::GET,
            format!("{unknown}/files/raw?file_path=/workspace/README.md"),
        ),
        (
            Method::PUT,
            format!("{unknown}/files/raw?file_path=/workspace/x"),
        ),
        (Method::GET, format!("{unknown}/archive?path=/workspace")),
        (Method::PUT, format!("{unknown}/archive?path=/workspace")),
    ];
    let all = cases.into_iter().chain(
        unknown_cases
            .into_iter()
            .map(|(method, path)| (method, path, StatusCode::NOT_FOUND)),
    );
    for (method, path, expected) in all {
        let response = app
            .request(method.clone(), &path)
            .body(if method == Method::PUT {
                b"data".to_vec()
            } else {
                Vec::new()
            })
            .send()
            .await
            .unwrap();
        let status = response.status();
        let error: Value = response.json().await.unwrap_or(Value::Null);
        let shown = &path[..path.len().min(120)];
        assert_eq!(status, expected, "{method} {shown}: {error}");
        for field in ["error", "detail", "timestamp", "code"] {
            assert!(error[field].is_string(), "{method} {shown}: {error}");
        }
    }
    // Nothing was written by the refused uploads.
    let listing = sh(
        app,
        id,
        "ls -d /workspace/new /workspace/rel.txt 2>&1 || true",
    )
    .await;
    assert_eq!(listing.matches("No such file").count(), 2, "{listing}");

    // A container removed behind the server's back: the sandbox is the problem, not
    // the path.
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &sandbox.docker_name()])
        .output()
        .unwrap();
    assert!(removed.status.success());
    for path in [
        route(id, "files", "file_path", "/workspace/README.md"),
        route(id, "browse", "path", "/workspace"),
        route(id, "archive", "path", "/workspace"),
    ] {
        let (status, error) = app.get(&path).await;
        assert!(
            status == StatusCode::CONFLICT || status == StatusCode::NOT_FOUND,
            "{path}: {error}"
        );
        assert_ne!(error["code"], "path_not_found", "{path}: {error}");
    }
}

/// The app on a config of the test's own, driven without a socket.
fn own_app(config: repobox::config::Config) -> axum::Router {
    let config = Arc::new(config);
    let metrics = Arc::new(repobox::metrics::Metrics::new());
    let backend: Arc<dyn repobox::backend::Backend> =
        Arc::new(repobox::docker::Runtime::connect(&config.docker_host).unwrap());
    let sandboxes = Arc::new(
        repobox::sandbox::Sandboxes::open(config.clone(), backend, metrics.clone()).unwrap(),
    );
    let jobs = Arc::new(
        repobox::job::Jobs::open(config.clone(), sandboxes.clone(), metrics.clone()).unwrap(),
    );
    repobox::api::app(repobox::api::AppState {
        config,
        sandboxes,
        metrics,
        jobs,
        started: std::time::Instant::now(),
        readiness: Default::default(),
    })
}

/// Over HTTP/1.1 a body can only be shorter than its Content-Length by the client
/// hanging up, and then no answer reaches it; the router is driven directly instead.
#[tokio::test]
async fn a_body_of_another_length_than_its_content_length_is_refused() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let dir = scratch();
    let app = own_app(test_config(dir.path()));
    let send = |request: Request<Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    let url = world().git.url(&unique("files-length"), "simple");
    let (status, created) = send(
        Request::post("/api/v1/containers")
            .header("content-type", "application/json")
            .body(Body::from(json!({ "repo_url": url }).to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["container_id"].as_str().unwrap().to_owned();
    let instance = std::fs::read_to_string(dir.path().join("data/instance-id")).unwrap();
    let sandbox = SandboxGuard {
        name: format!("{id}.{}", instance.trim()),
        id,
    };
    let path = route(&sandbox.id, "files/raw", "file_path", "/tmp/length.bin");
    for (declared, actual) in [(100, 50), (10, 50), (50, 50)] {
        let (status, answer) = send(
            Request::put(&path)
                .header("content-length", declared)
                .body(Body::from(vec![b'x'; actual]))
                .unwrap(),
        )
        .await;
        let expected = if declared == actual {
            StatusCode::CREATED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(
            status, expected,
            "{declared} declared, {actual} sent: {answer}"
        );
        if expected == StatusCode::BAD_REQUEST {
            assert!(
                answer["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Content-Length"),
                "{answer}"
            );
        }
    }
}

#[tokio::test]
async fn files_above_the_limits_are_refused_with_a_way_out() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.max_file_bytes = 1000;
    config.max_upload_bytes = 5000;
    let server = spawn_app(config).await;
    let app = &server.app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    sh(
        app,
        id,
        "head -c 1001 /dev/zero > '/tmp/big file'; head -c 1000 /dev/zero > /tmp/fits",
    )
    .await;

    let (status, error) = app
        .get(&route(id, "files", "file_path", "/tmp/big file"))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    let raw = format!("/api/v1/containers/{id}/files/raw?file_path=%2Ftmp%2Fbig+file");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains(&raw), "{detail}");
    let (status, bytes) = get_raw(app, id, "/tmp/big file").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, vec![0u8; 1001], "the raw endpoint has no such limit");
    let (status, _) = app.get(&route(id, "files", "file_path", "/tmp/fits")).await;
    assert_eq!(status, StatusCode::OK);

    // Uploads: at the limit fine, above it refused, with or without Content-Length.
    let (status, _) = put_raw(app, id, "/tmp/up", vec![1; 5000]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, error) = put_raw(app, id, "/tmp/up2", vec![1; 5001]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..6).map(|_| Ok(vec![2u8; 1000])).collect();
    let response = app
        .request(
            Method::PUT,
            &route(id, "files/raw", "file_path", "/tmp/up3"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let response = app
        .request(Method::PUT, &route(id, "archive", "path", "/tmp"))
        .body(vec![0u8; 6000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(sh(app, id, "ls /tmp").await, "big file\nfits\nup\n");
    // The spool directory is left empty.
    let spool = dir.path().join("cache/tmp");
    assert_eq!(std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0), 0);
}

#[tokio::test]
async fn files_need_nothing_from_the_image() {
    // The agent lists, reads and writes with system calls: no find, no mkdir, no tar.
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    sh(
        app,
        id,
        "mv /usr/bin/find /usr/bin/find.moved && mv /bin/mkdir /bin/mkdir.moved && mv /bin/tar /bin/tar.moved",
    )
    .await;
    let (status, listing) = app.get(&route(id, "browse", "path", "/workspace")).await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let (status, _) = put_raw(app, id, "/workspace/new/deeper/x.txt", b"x".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        get_raw(app, id, "/workspace/new/deeper/x.txt").await.1,
        b"x"
    );
}
