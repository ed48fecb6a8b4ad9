//! The cases: each takes the backend's kind and holds for every backend.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::Kind;
use crate::harness::{app, config, git, simple_url};
use crate::support::{TestApp, scratch, spawn_app};

/// A sandbox of the shared server of `kind`, destroyed when dropped.
struct Sandbox {
    app: TestApp,
    id: String,
}

impl Sandbox {
    async fn new(kind: Kind, body: Value) -> (Self, Value) {
        let app = app(kind);
        let mut body = body;
        if body.get("repo_url").is_none() {
            body["repo_url"] = json!(simple_url("conformance"));
        }
        let (status, created) = app.post("/api/v1/containers", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{kind:?}: {created}");
        let id = created["container_id"].as_str().unwrap().to_owned();
        (Self { app, id }, created)
    }

    fn path(&self, rest: &str) -> String {
        format!("/api/v1/containers/{}{rest}", self.id)
    }

    async fn exec(&self, command: &str) -> Value {
        self.app.exec(&self.id, command).await
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let app = self.app.clone();
        let path = self.path("");
        // On a thread of its own: the test's runtime may be ending.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let _ = app.request(Method::DELETE, &path).send().await;
                })
        })
        .join();
    }
}

pub(crate) async fn creates_from_a_repository(kind: Kind) {
    let (sandbox, created) =
        Sandbox::new(kind, json!({"initial_command": "echo ready > made"})).await;
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["resolved_commit"], git().simple.trunk_head.as_str());
    assert_eq!(created["branch"], "trunk");
    assert_eq!(
        created["initial_command_result"]["exit_code"], 0,
        "{created}"
    );
    let (status, got) = sandbox.app.get(&sandbox.path("")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["status"], "running");
    let result = sandbox
        .exec("pwd; git rev-parse HEAD; cat made; head -1 README.md")
        .await;
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(
        result["stdout"],
        format!("/workspace\n{}\nready\n# simple\n", git().simple.trunk_head)
    );
    // The agent is PID 1 of the sandbox, as in a container.
    let init = sandbox.exec("cat /proc/1/cmdline | tr '\\0' ' '").await;
    assert!(init["stdout"].as_str().unwrap().contains("agent"), "{init}");
    let (_, list) = sandbox.app.get("/api/v1/containers").await;
    assert!(
        list["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["container_id"] == sandbox.id.as_str()),
        "{list}"
    );
}

pub(crate) async fn executes_whole_and_streamed(kind: Kind) {
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let result = sandbox
        .app
        .exec_with(
            &sandbox.id,
            json!({"command": "echo out; echo err >&2; read -r x; echo $x $GREETING; exit 3",
                   "stdin": "fed\n", "environment": {"GREETING": "hi"}}),
        )
        .await;
    assert_eq!(result["exit_code"], 3, "{result}");
    assert_eq!(result["stdout"], "out\nfed hi\n");
    assert_eq!(result["stderr"], "err\n");
    let timed_out = sandbox
        .app
        .exec_with(
            &sandbox.id,
            json!({"command": "sleep 30", "timeout_secs": 1}),
        )
        .await;
    assert_eq!(timed_out["exit_code"], 124, "{timed_out}");

    let response = sandbox
        .app
        .request(Method::POST, &sandbox.path("/execute/stream"))
        .json(&json!({"command": "for i in 1 2 3; do echo line $i; done; echo done >&2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let mut stdout = String::new();
    let mut exit = Value::Null;
    for block in text.split("\n\n") {
        let event = block
            .lines()
            .find_map(|line| line.strip_prefix("event:"))
            .map(str::trim);
        let data: String = block
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.strip_prefix(' ').unwrap_or(data))
            .collect();
        match event {
            Some("stdout") => {
                let data: Value = serde_json::from_str(&data).unwrap();
                stdout.push_str(data["data"].as_str().unwrap_or_default());
            }
            Some("exit") => exit = serde_json::from_str(&data).unwrap(),
            _ => {}
        }
    }
    assert_eq!(stdout, "line 1\nline 2\nline 3\n", "{text}");
    assert_eq!(exit["exit_code"], 0, "{text}");
}

pub(crate) async fn runs_processes(kind: Kind) {
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let base = sandbox.path("/processes");
    let (status, process) = sandbox
        .app
        .post(&base, &json!({"command": "echo started; sleep 300"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{process}");
    assert_eq!(process["working_directory"], "/workspace");
    let pid = process["process_id"].as_str().unwrap().to_owned();
    let (_, list) = sandbox.app.get(&base).await;
    assert!(
        list["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["process_id"] == pid.as_str() && p["status"] == "running"),
        "{list}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, out) = sandbox
            .app
            .get(&format!(
                "{base}/{pid}/output?stdout_offset=0&stderr_offset=0"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
        if out["stdout"] == "started\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no output: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = sandbox
        .app
        .post(
            &format!("{base}/{pid}/signal"),
            &json!({"signal": "SIGTERM"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let info = loop {
        let (_, info) = sandbox.app.get(&format!("{base}/{pid}")).await;
        if info["status"] != "running" {
            break info;
        }
        assert!(Instant::now() < deadline, "never ended: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(info["status"], "killed", "{info}");
    let left = sandbox
        .exec("ps -eo args | grep -c '[s]leep 300' || true")
        .await;
    assert_eq!(left["stdout"], "0\n", "the process's child survived");
    let deleted = sandbox
        .app
        .request(Method::DELETE, &format!("{base}/{pid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

pub(crate) async fn keeps_session_state(kind: Kind) {
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let (status, session) = sandbox
        .app
        .post(&sandbox.path("/sessions"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let session = session["session_id"].as_str().unwrap().to_owned();
    let run = |command: &'static str| {
        let app = sandbox.app.clone();
        let path = sandbox.path(&format!("/sessions/{session}/execute"));
        async move {
            let (status, result) = app.post(&path, &json!({"command": command})).await;
            assert_eq!(status, StatusCode::OK, "{result}");
            result
        }
    };
    assert_eq!(run("cd src && export X=1").await["exit_code"], 0);
    assert_eq!(
        run("echo \"$(pwd) $X\"").await["stdout"],
        "/workspace/src 1\n"
    );
}

pub(crate) async fn reads_writes_lists_and_tars_files(kind: Kind) {
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let raw = |path: &str| sandbox.path(&format!("/files/raw?file_path={path}"));
    let put = sandbox
        .app
        .request(Method::PUT, &raw("/workspace/notes/new.txt"))
        .body("written\n")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let got = sandbox
        .app
        .request(Method::GET, &raw("/workspace/notes/new.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.text().await.unwrap(), "written\n");
    assert_eq!(
        sandbox.exec("cat notes/new.txt").await["stdout"],
        "written\n"
    );
    let (status, file) = sandbox
        .app
        .get(&sandbox.path("/files?file_path=/workspace/README.md"))
        .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert!(file.to_string().contains("# simple"), "{file}");
    let (status, listing) = sandbox
        .app
        .get(&sandbox.path("/browse?path=/workspace"))
        .await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let text = listing.to_string();
    assert!(
        text.contains("README.md") && text.contains("notes"),
        "{listing}"
    );
    let (status, missing) = sandbox
        .app
        .get(&sandbox.path("/files?file_path=/workspace/nope"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let tar = sandbox
        .app
        .request(Method::GET, &sandbox.path("/archive?path=/workspace/notes"))
        .send()
        .await
        .unwrap();
    assert_eq!(tar.status(), StatusCode::OK);
    let bytes = tar.bytes().await.unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|entry| entry.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|name| name.ends_with("new.txt")),
        "{names:?}"
    );
}

pub(crate) async fn reports_and_resets_git_state(kind: Kind) {
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let (status, clean) = sandbox.app.get(&sandbox.path("/git/status")).await;
    assert_eq!(status, StatusCode::OK, "{clean}");
    assert_eq!(clean["clean"], true, "{clean}");
    assert_eq!(clean["head"], git().simple.trunk_head.as_str());
    sandbox
        .exec("echo changed >> README.md && echo new > added.txt")
        .await;
    let (_, changed) = sandbox.app.get(&sandbox.path("/git/status")).await;
    assert_eq!(changed["clean"], false, "{changed}");
    let diff = sandbox
        .app
        .request(Method::GET, &sandbox.path("/git/diff"))
        .send()
        .await
        .unwrap();
    assert_eq!(diff.status(), StatusCode::OK);
    let diff = diff.text().await.unwrap();
    assert!(diff.contains("+changed"), "{diff}");
    let (status, reset) = sandbox.app.post(&sandbox.path("/reset"), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    let (_, after) = sandbox.app.get(&sandbox.path("/git/status")).await;
    assert_eq!(after["clean"], true, "{after}");
}

pub(crate) async fn destroys(kind: Kind) {
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    assert_eq!(
        sandbox.app.destroy(&sandbox.id).await,
        StatusCode::NO_CONTENT
    );
    let (status, _) = sandbox.app.get(&sandbox.path("")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sandbox
        .app
        .post(&sandbox.path("/execute"), &json!({"command": "true"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

pub(crate) async fn expires(kind: Kind) {
    let (sandbox, created) = Sandbox::new(kind, json!({"max_runtime_secs": 1})).await;
    assert!(created["expires_at"].is_string(), "{created}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = sandbox.app.get(&sandbox.path("")).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "the sandbox never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a restart a sandbox is adopted and usable where the backend can adopt, and
/// cleanly forgotten where it says it cannot.
pub(crate) async fn reconciles_after_a_restart(kind: Kind) {
    let dir = scratch();
    let first = spawn_app(config(kind, dir.path())).await;
    let url = simple_url("restart");
    let (status, created) = first
        .app
        .post("/api/v1/containers", &json!({"repo_url": url}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["container_id"].as_str().unwrap().to_owned();
    let (_, info) = first.app.get("/api/v1/info").await;
    let adopts = !info["backend"]["unsupported"]
        .as_array()
        .unwrap()
        .contains(&json!("adoption after a restart"));
    first.stop().await;

    let second = spawn_app(config(kind, dir.path())).await;
    let path = format!("/api/v1/containers/{id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, got) = second.app.get(&path).await;
        match (adopts, status) {
            (true, StatusCode::OK) if got["status"] == "running" => {
                let result = second.app.exec(&id, "git rev-parse HEAD").await;
                assert_eq!(result["stdout"], format!("{}\n", git().simple.trunk_head));
                assert_eq!(second.app.destroy(&id).await, StatusCode::NO_CONTENT);
                break;
            }
            (false, StatusCode::NOT_FOUND) => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} (adopts: {adopts}): {status} {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = second.app.get("/api/v1/containers").await;
    assert_eq!(list["total_count"], 0, "{list}");
    second.stop().await;
}

/// What a backend cannot do, it says in `/info` and refuses with 501; what it can, it
/// serves.
pub(crate) async fn answers_for_what_it_cannot_do(kind: Kind) {
    let app = app(kind);
    let (status, info) = app.get("/api/v1/info").await;
    assert_eq!(status, StatusCode::OK);
    let backend = &info["backend"];
    assert_eq!(
        backend["kind"],
        match kind {
            Kind::Docker => "docker",
            Kind::Local => "local",
            Kind::Kubernetes => "kubernetes",
        },
        "{info}"
    );
    assert!(backend["version"].is_string(), "{info}");
    let unsupported: Vec<&str> = backend["unsupported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|route| route.as_str().unwrap())
        .collect();
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let fork = sandbox.path("/fork");
    let snapshot = sandbox.path("/snapshots");
    let probes: [(&str, &str, String); 4] = [
        ("/api/v1/images", "GET", "/api/v1/images".to_owned()),
        ("/api/v1/snapshots", "GET", "/api/v1/snapshots".to_owned()),
        (
            "/api/v1/containers/{container_id}/snapshots",
            "POST",
            snapshot,
        ),
        ("/api/v1/containers/{container_id}/fork", "POST", fork),
    ];
    for (template, method, path) in probes {
        let listed = unsupported.contains(&template);
        // What a backend serves is only looked at (a snapshot or a fork would make
        // things); what it does not must be refused whatever the body.
        if !listed && method != "GET" {
            continue;
        }
        let response = app
            .request(method.parse().unwrap(), &path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if listed {
            assert_eq!(
                status,
                StatusCode::NOT_IMPLEMENTED,
                "{method} {path}: {body}"
            );
            assert_eq!(body["code"], "not_supported", "{body}");
        } else {
            assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
        }
    }
    if kind == Kind::Kubernetes {
        assert!(unsupported.contains(&"/api/v1/images"), "{info}");
        // Eviction after the fact is no cap: refused, as on any engine without one.
        assert_eq!(info["disk_limits"]["enforced"], false, "{info}");
        let (status, refused) = app
            .post(
                "/api/v1/containers",
                &json!({"repo_url": simple_url("disk"), "resources": {"disk_mb": 100}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    }
    if kind == Kind::Local {
        assert!(unsupported.contains(&"/api/v1/images"), "{info}");
        assert!(unsupported.contains(&"isolation"), "{info}");
        assert_eq!(info["disk_limits"]["enforced"], false, "{info}");
    }
}

/// Where a backend isolates (every one but the local test backend, which says it does
/// not): a sandbox of `network: none` has no route out and reaches none of the host's
/// addresses nor another sandbox, holds no credentials of its engine, and keeps the capabilities
/// `/info` lists and no more, with no way to gain privileges.
pub(crate) async fn contains_its_sandboxes(kind: Kind) {
    let app = app(kind);
    let (_, info) = app.get("/api/v1/info").await;
    if info["backend"]["unsupported"]
        .as_array()
        .unwrap()
        .contains(&json!("isolation"))
    {
        assert_eq!(
            kind,
            Kind::Local,
            "only the local test backend may not isolate"
        );
        return;
    }
    // A listener on every address of the host.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let addresses = host_addresses();
    assert!(
        !addresses.is_empty(),
        "the host has no address but loopback"
    );

    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let probes: String = addresses
        .iter()
        .map(|address| {
            format!("timeout 3 bash -c 'echo > /dev/tcp/{address}/{port}' 2>/dev/null && echo reached {address}; ")
        })
        .collect();
    let reached = sandbox.exec(&format!("{probes}true")).await;
    assert_eq!(reached["stdout"], "", "{addresses:?}: {reached}");
    assert!(
        listener.accept().is_err(),
        "the host's listener was reached from the sandbox"
    );
    // No default route (`/proc/net/route`'s destination 00000000).
    let routes = sandbox
        .exec("awk 'NR > 1 && $2 == \"00000000\"' /proc/net/route")
        .await;
    assert_eq!(routes["stdout"], "", "{routes}");

    // Nor another sandbox, at whatever address it has: a server listening in one
    // is not reached from the other.
    let (status, _) = sandbox
        .app
        .post(
            &sandbox.path("/processes"),
            &json!({"command": "exec python3 -m http.server 8099"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (other, _) = Sandbox::new(kind, json!({})).await;
    let served = sandbox
        .exec("for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/8099) 2>/dev/null && break; sleep 0.1; done; hostname -I")
        .await;
    let theirs: Vec<&str> = served["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .filter(|address| !address.starts_with("127."))
        .collect();
    if kind == Kind::Kubernetes {
        // Every pod has an address of the pod network.
        assert!(!theirs.is_empty(), "{served}");
    }
    for address in &theirs {
        let reached = other
            .exec(&format!(
                "timeout 3 bash -c 'echo > /dev/tcp/{address}/8099' 2>/dev/null && echo reached"
            ))
            .await;
        assert_eq!(reached["stdout"], "", "{address}: {reached}");
    }

    // (Kubernetes gives every pod the API server's address, KUBERNETES_SERVICE_HOST:
    // an address without a route to it, and no token.)
    let credentials = sandbox
        .exec(
            "ls -d /var/run/secrets/kubernetes.io /run/secrets/kubernetes.io /var/run/docker.sock 2>/dev/null; \
             env | grep -E '^DOCKER_' ; true",
        )
        .await;
    assert_eq!(credentials["stdout"], "", "{credentials}");

    let kept: u64 = info["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| 1u64 << capability_bit(name.as_str().unwrap()))
        .sum();
    let status = sandbox
        .exec("grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status")
        .await;
    let expected = format!("CapEff:\t{kept:016x}\nCapBnd:\t{kept:016x}\nNoNewPrivs:\t1\n");
    assert_eq!(status["stdout"], expected, "{status}");
}

/// The host's IPv4 addresses but loopback's.
fn host_addresses() -> Vec<String> {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip (iproute2)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .filter(|address| !address.starts_with("127."))
        .map(str::to_owned)
        .collect()
}

/// A capability's bit (linux/capability.h), for those a backend may keep.
fn capability_bit(name: &str) -> u32 {
    match name {
        "CHOWN" => 0,
        "DAC_OVERRIDE" => 1,
        "DAC_READ_SEARCH" => 2,
        "FOWNER" => 3,
        "FSETID" => 4,
        "KILL" => 5,
        "SETGID" => 6,
        "SETUID" => 7,
        "SETPCAP" => 8,
        "NET_BIND_SERVICE" => 10,
        "NET_RAW" => 13,
        "SYS_CHROOT" => 18,
        "MKNOD" => 27,
        "AUDIT_WRITE" => 29,
        "SETFCAP" => 31,
        other => panic!("a capability this test does not know: {other}"),
    }
}

/// A warm pool on the backend: a create is served from it (a pool hit), the sandbox
/// is a whole one, the pool refills; a create asking for other limits is served too
/// (on a backend whose members' limits are fixed, by a new sandbox).
pub(crate) async fn serves_from_its_warm_pool(kind: Kind) {
    let dir = scratch();
    let mut settings = config(kind, dir.path());
    settings.pool_size = 1;
    let server = spawn_app(settings).await;
    let app = &server.app;
    wait_pool_ready(app).await;
    let hits = pool_claims(app, "hit").await;
    let url = simple_url("pool");
    let (status, created) = app
        .post("/api/v1/containers", &json!({"repo_url": url}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        pool_claims(app, "hit").await,
        hits + 1,
        "not served by the pool"
    );
    let id = created["container_id"].as_str().unwrap().to_owned();
    let head = app.exec(&id, "git rev-parse HEAD").await;
    assert_eq!(head["stdout"], format!("{}\n", git().simple.trunk_head));
    wait_pool_ready(app).await;

    let (status, other) = app
        .post(
            "/api/v1/containers",
            &json!({"repo_url": url, "resources": {"memory_mb": 300}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let other_id = other["container_id"].as_str().unwrap().to_owned();
    let head = app.exec(&other_id, "git rev-parse HEAD").await;
    assert_eq!(head["stdout"], format!("{}\n", git().simple.trunk_head));
    for id in [&id, &other_id] {
        assert_eq!(app.destroy(id).await, StatusCode::NO_CONTENT);
    }
    server.stop().await;
}

/// Waits until the pool of `app` has a ready member.
async fn wait_pool_ready(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, info) = app.get("/api/v1/info").await;
        if info["pool"]["ready"] == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "the pool never warmed: {info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pool's claims counter of `outcome` (`hit`, `miss`).
async fn pool_claims(app: &TestApp, outcome: &str) -> u64 {
    app.text("/metrics")
        .await
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("repobox_pool_claims_total{{kind=\"{outcome}\"}} "))
                .map(|value| value.trim().parse::<f64>().unwrap() as u64)
        })
        .unwrap_or(0)
}

/// A job on the backend: one command over several checkouts, each entry's result in
/// order, and no sandbox left after it.
pub(crate) async fn runs_a_job(kind: Kind) {
    let app = app(kind);
    let (one, other) = (simple_url("job"), simple_url("job"));
    let body = json!({
        "command": "git rev-parse HEAD",
        "repos": [
            {"repo_url": one},
            {"repo_url": other, "commit": &git().simple.first[..10]},
            {"repo_url": other, "branch": "no-such-branch"},
        ],
        "concurrency": 2,
        "timeout_secs": 60,
    });
    let (status, job) = app.post("/api/v1/jobs", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let (_, job) = app.get(&format!("/api/v1/jobs/{id}")).await;
        if job["status"] == "completed" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job never finished: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["counts"]["succeeded"], 2, "{job}");
    assert_eq!(job["counts"]["errored"], 1, "{job}");
    let (_, results) = app.get(&format!("/api/v1/jobs/{id}/results")).await;
    let results = results["results"].as_array().unwrap();
    assert_eq!(
        results[0]["stdout"],
        format!("{}\n", git().simple.trunk_head)
    );
    assert_eq!(results[1]["stdout"], format!("{}\n", git().simple.first));
    assert_eq!(results[2]["status"], "errored", "{}", results[2]);
    let (_, list) = app.get("/api/v1/containers").await;
    let left: Vec<&Value> = list["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|sandbox| sandbox["job_id"] == id.as_str())
        .collect();
    assert!(left.is_empty(), "the job's sandboxes outlived it: {left:?}");
}

/// The terminal: a login shell on a pseudo-terminal over a WebSocket, in
/// `/workspace`, sized as asked, its exit code reported.
pub(crate) async fn opens_a_terminal(kind: Kind) {
    use tokio_tungstenite::tungstenite::Message;
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let ws = sandbox.app.base.replacen("http://", "ws://", 1);
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "{ws}{}?cols=100&rows=30",
        sandbox.path("/terminal")
    ))
    .await
    .expect("the terminal opens");
    socket
        .send(Message::Binary(
            "stty size; pwd; tty; exit 3\r".as_bytes().to_vec().into(),
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    let exit = loop {
        let next = tokio::time::timeout_at(deadline.into(), socket.next()).await;
        match next {
            Ok(Some(Ok(Message::Binary(bytes)))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Some(Ok(Message::Text(text)))) => {
                break serde_json::from_str::<Value>(&text).unwrap();
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("{kind:?}: no exit message ({other:?}); saw {seen:?}"),
        }
    };
    assert_eq!(exit, json!({"type": "exit", "exit_code": 3}), "{seen:?}");
    assert!(seen.contains("30 100"), "{seen:?}");
    assert!(seen.contains("/workspace"), "{seen:?}");
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
}

/// A server on the host's loopback that answers every connection with `hello` and
/// counts them; stopped when dropped.
struct LoopbackServer {
    port: u16,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LoopbackServer {
    fn start() -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, done) = (served.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n")
                            && stream.read(&mut byte).unwrap_or(0) == 1
                        {
                            head.push(byte[0]);
                        }
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, served, stop }
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `network: {"allow": [...]}` works alike on every backend, since the proxy is the
/// server's, reached through the agent: the listed host (a name the operator pinned to
/// the host's loopback) is reached, another name pinned to the same address is refused
/// with a 403 and logged, and without the proxy nothing is reached.
pub(crate) async fn reaches_only_its_allow_list(kind: Kind) {
    let server = LoopbackServer::start();
    let port = server.port;
    let (sandbox, created) = Sandbox::new(
        kind,
        json!({"network": {"allow": [format!("allowed.test:{port}")]}}),
    )
    .await;
    assert_eq!(
        created["network"],
        json!({"allow": [format!("allowed.test:{port}")]}),
        "{created}"
    );
    let fetch = |host: &str| {
        format!(
            "python3 -c 'import urllib.request as u\ntry: print(u.urlopen(\"http://{host}:{port}/\", timeout=20).read().decode(), end=\"\")\nexcept Exception as e: print(\"failed\", getattr(e, \"code\", e))'"
        )
    };
    let allowed = sandbox.exec(&fetch("allowed.test")).await;
    assert_eq!(allowed["stdout"], "hello\n", "{kind:?}: {allowed}");
    assert_eq!(server.served(), 1);
    let refused = sandbox.exec(&fetch("refused.test")).await;
    assert_eq!(refused["stdout"], "failed 403\n", "{kind:?}: {refused}");
    let bypass = sandbox
        .exec(&format!(
            "(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached; env -u HTTP_PROXY -u http_proxy {}",
            fetch("allowed.test")
        ))
        .await;
    assert!(
        bypass["stdout"].as_str().unwrap().starts_with("failed"),
        "{kind:?}: {bypass}"
    );
    assert_eq!(
        server.served(),
        1,
        "{kind:?}: the server was reached past the proxy"
    );
    let (_, egress) = sandbox.app.get(&sandbox.path("/egress")).await;
    let decisions: Vec<(String, bool)> = egress["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["host"].as_str().unwrap().to_owned(), d["allowed"] == true))
        .collect();
    assert_eq!(
        decisions,
        [
            ("allowed.test".to_owned(), true),
            ("refused.test".to_owned(), false)
        ],
        "{kind:?}: {egress}"
    );
}

/// A server in the sandbox is reached through `/ports/{port}/` and listed by `/ports`,
/// with the sandbox's network `none`, alike on every backend (the agent connects to its
/// own loopback); nothing listening is a 502.
pub(crate) async fn forwards_a_port(kind: Kind) {
    let (sandbox, _) = Sandbox::new(kind, json!({})).await;
    let (status, _) = sandbox
        .app
        .post(
            &sandbox.path("/processes"),
            &json!({"command": "mkdir -p /tmp/site && echo served > /tmp/site/page.txt && cd /tmp/site && exec python3 -m http.server 3000 --bind 127.0.0.1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{kind:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (status, ports) = sandbox.app.get(&sandbox.path("/ports")).await;
        assert_eq!(status, StatusCode::OK, "{kind:?}: {ports}");
        if let Some(port) = ports
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["port"] == 3000))
        {
            break port.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: 3000 never listed: {ports}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        listed["process"]
            .as_str()
            .unwrap_or_default()
            .contains("http.server 3000"),
        "{kind:?}: {listed}"
    );
    let page = sandbox
        .app
        .request(Method::GET, &sandbox.path("/ports/3000/page.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK, "{kind:?}");
    assert_eq!(page.text().await.unwrap(), "served\n", "{kind:?}");
    let (status, closed) = sandbox.app.get(&sandbox.path("/ports/3999/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{kind:?}: {closed}");
    assert_eq!(closed["code"], "port_closed", "{kind:?}: {closed}");
}
