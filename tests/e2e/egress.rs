//! Egress by allow-list (`network: {"allow": [...]}`): the sandbox has no network, only
//! the server's proxy on its loopback, which lets through exactly the hosts on its list
//! (within the operator's `EGRESS_ALLOW`) and logs what it refused. The hosts of these
//! tests live in network namespaces of their own ([`TestHost`]); the server resolves
//! their names from an `/etc/hosts` of its own (it runs in a mount namespace where one
//! is bound over the host's).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::netns::TestHost;
use crate::support::{
    Binary, TestApp, containers_with_label, free_port, scratch, spawn_app, start_binary_under,
    test_config, world,
};

/// Allow-lists are the operator's to grant: refused with 403 when `EGRESS_ALLOW` is
/// empty or does not cover an entry, 400 when an entry is malformed; jobs too. An
/// accepted list is reported, lowercased and without repeats.
#[tokio::test]
async fn allow_lists_are_checked_against_the_operators_list() {
    let world = world();
    let url = world.git.url("egress-policy", "simple");
    let create = |network: Value| json!({"repo_url": url, "network": network});

    // The shared server has no EGRESS_ALLOW.
    let (status, body) = world
        .app
        .post(
            "/api/v1/containers",
            &create(json!({"allow": ["pypi.org"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("EGRESS_ALLOW"),
        "{body}"
    );

    let dir = scratch();
    let mut config = test_config(dir.path());
    config.egress_allow =
        repobox::config::EgressAllow::parse("*.test,pypi.org,10.1.2.3:8080").unwrap();
    let server = spawn_app(config).await;
    let app = &server.app;
    for (allow, expected) in [
        // Not within EGRESS_ALLOW.
        (json!(["example.org"]), StatusCode::FORBIDDEN),
        (json!(["*.org"]), StatusCode::FORBIDDEN),
        (json!(["pypi.org:22"]), StatusCode::FORBIDDEN),
        // `*.test` covers names, never an address.
        (json!(["10.9.9.9"]), StatusCode::FORBIDDEN),
        (json!(["10.1.2.3"]), StatusCode::FORBIDDEN),
        // Malformed.
        (json!(["http://pypi.org/simple"]), StatusCode::BAD_REQUEST),
        (json!(["pypi.org:0"]), StatusCode::BAD_REQUEST),
        (json!(["2130706433"]), StatusCode::BAD_REQUEST),
        (json!([""]), StatusCode::BAD_REQUEST),
        (json!("pypi.org"), StatusCode::BAD_REQUEST),
        (json!([42]), StatusCode::BAD_REQUEST),
    ] {
        let network = if allow.is_array() {
            json!({"allow": allow})
        } else {
            allow.clone()
        };
        let (status, body) = app.post("/api/v1/containers", &create(network)).await;
        assert_eq!(status, expected, "{allow}: {body}");
        assert!(body["code"].is_string(), "{allow}: {body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/containers",
            &create(json!({"allow": ["pypi.org"], "deny": ["x"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let many: Vec<String> = (0..101).map(|i| format!("h{i}.test")).collect();
    let (status, body) = app
        .post("/api/v1/containers", &create(json!({ "allow": many })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A job's entries are held to the same list.
    let (status, body) = app
        .post(
            "/api/v1/jobs",
            &json!({"repos": [{"repo_url": url}], "command": "true", "network": {"allow": ["example.org"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        containers_with_label("repobox.instance", &app.instance().await).is_empty(),
        "a refused create left a container"
    );

    // Accepted: reported as given, lowercased, without repeats.
    let (created, _guard) = app
        .sandbox(create(
            json!({"allow": ["PyPI.org", "files.test", "pypi.org", "10.1.2.3:8080"]}),
        ))
        .await;
    let expected = json!({"allow": ["pypi.org", "files.test", "10.1.2.3:8080"]});
    assert_eq!(created["network"], expected, "{created}");
    let id = created["container_id"].as_str().unwrap();
    let (_, shown) = app.get(&format!("/api/v1/containers/{id}")).await;
    assert_eq!(shown["network"], expected, "{shown}");
    let (status, egress) = app.get(&format!("/api/v1/containers/{id}/egress")).await;
    assert_eq!(status, StatusCode::OK, "{egress}");
    assert_eq!(egress["allow"], expected["allow"], "{egress}");
    assert_eq!(egress["decisions"], json!([]), "{egress}");
    // Every command is pointed at the proxy; the sandbox has no network of its own.
    let env = app
        .exec(
            id,
            "echo $HTTP_PROXY $HTTPS_PROXY $NO_PROXY; ls /sys/class/net",
        )
        .await;
    assert_eq!(
        env["stdout"], "http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1,::1\nlo\n",
        "{env}"
    );
    // A sandbox without a list has no proxy.
    let (plain, _plain_guard) = app.sandbox(json!({"repo_url": url})).await;
    assert_eq!(plain["network"], "none", "{plain}");
    let plain_id = plain["container_id"].as_str().unwrap();
    let (_, egress) = app
        .get(&format!("/api/v1/containers/{plain_id}/egress"))
        .await;
    assert_eq!(egress, json!({"allow": null, "decisions": []}));
    let probe = app
        .exec(plain_id, "echo $HTTP_PROXY; (exec 3<>/dev/tcp/127.0.0.1/3128) 2>/dev/null && echo open || echo closed")
        .await;
    assert_eq!(probe["stdout"], "\nclosed\n", "{probe}");
}

/// Runs `command` in sandbox `id`; returns its stdout, with the exit code after it.
async fn run(app: &TestApp, id: &str, command: &str) -> String {
    let result = app
        .exec_with(id, json!({"command": command, "timeout_secs": 60}))
        .await;
    format!(
        "{}{}exit={}",
        result["stdout"].as_str().unwrap_or_default(),
        result["stderr"].as_str().unwrap_or_default(),
        result["exit_code"]
    )
}

/// A `repobox serve` that resolves names from `hosts` (bound over `/etc/hosts` in a
/// mount namespace of its own), with `env` over the test settings.
fn start_resolving(
    dir: &std::path::Path,
    port: u16,
    hosts: &std::path::Path,
    env: &[(&str, String)],
) -> Binary {
    let bind = format!(
        "mount --bind {} /etc/hosts && exec \"$0\" \"$@\"",
        hosts.display()
    );
    start_binary_under(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &bind,
        ],
        dir,
        port,
        env,
    )
}

/// The attacker's view and the user's: a sandbox with `{"allow": [...]}` reaches its
/// hosts over HTTP and HTTPS (`curl`, `pip download` from an index), and nothing else:
/// a host not on the list is refused and logged, a listed name that resolves to a
/// private address is refused (an entry naming the address, or the operator's
/// `EGRESS_HOSTS`, reaches it), a TLS server name not on the list is refused inside an
/// allowed tunnel, and without the proxy there is no route and no DNS, whatever the
/// sandbox does with its variables. After a restart the proxy serves again.
#[tokio::test]
async fn an_allow_list_reaches_exactly_its_hosts() {
    let world = world();
    let listed = TestHost::start(&["pypi.test", "mirror.test"]);
    let unlisted = TestHost::start(&["other.test"]);
    let dir = scratch();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost\n{} pypi.test\n{} other.test\n{} internal.test\n",
            listed.public(),
            unlisted.public(),
            listed.private()
        ),
    )
    .unwrap();
    let port = free_port();
    let env = [
        ("EGRESS_ALLOW", format!("*,{}", listed.private())),
        ("EGRESS_HOSTS", format!("mirror.test={}", listed.private())),
    ];
    let mut server = start_resolving(dir.path(), port, &hosts, &env);
    let app = TestApp::at(format!("http://127.0.0.1:{port}"));
    app.wait_live().await;
    let url = world.git.url("egress", "simple");
    let allow = json!([
        "pypi.test",
        "internal.test",
        "mirror.test",
        "localhost",
        listed.private().to_string()
    ]);
    let (created, _guard) = app
        .sandbox(json!({"repo_url": url, "network": {"allow": allow}}))
        .await;
    let id = created["container_id"].as_str().unwrap().to_owned();
    let ca = listed.ca_pem();
    let wrote = run(&app, &id, &format!("cat > /tmp/ca.pem <<'PEM'\n{ca}PEM\n")).await;
    assert_eq!(wrote, "exit=0", "{wrote}");

    // Allowed: HTTP, HTTPS (CONNECT), and a package index.
    let http = run(&app, &id, "curl -sS -m 20 http://pypi.test/hello").await;
    assert_eq!(http, "hello from pypi.test\nexit=0", "{http}");
    // The Host header is the URL's, whatever the sandbox says (a CDN would route by it).
    let fronted = run(
        &app,
        &id,
        "curl -sS -m 20 -H 'Host: other.test' http://pypi.test/hello",
    )
    .await;
    assert_eq!(fronted, "hello from pypi.test\nexit=0", "{fronted}");
    let last = listed.requests().pop().unwrap_or_default();
    assert_eq!(last, "GET /hello pypi.test", "{:?}", listed.requests());
    let https = run(
        &app,
        &id,
        "curl -sS -m 20 --cacert /tmp/ca.pem https://pypi.test/hello",
    )
    .await;
    assert_eq!(https, "hello from pypi.test\nexit=0", "{https}");
    let pip = run(
        &app,
        &id,
        "pip download -q --disable-pip-version-check --no-deps --index-url https://pypi.test/simple/ --cert /tmp/ca.pem -d /tmp/dl tinypkg && ls /tmp/dl",
    )
    .await;
    assert!(
        pip.ends_with("tinypkg-1.0-py3-none-any.whl\nexit=0"),
        "{pip}"
    );
    // A named address, and a name the operator pinned to it, reach the private address.
    let named = run(
        &app,
        &id,
        &format!("curl -sS -m 20 http://{}/hello", listed.private()),
    )
    .await;
    assert_eq!(named, "hello from pypi.test\nexit=0", "{named}");
    let pinned = run(&app, &id, "curl -sS -m 20 http://mirror.test/hello").await;
    assert_eq!(pinned, "hello from pypi.test\nexit=0", "{pinned}");

    // Refused: a host not on the list, over HTTP and HTTPS; it sees nothing.
    let other = run(
        &app,
        &id,
        "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://other.test/hello",
    )
    .await;
    assert_eq!(other, "403exit=0", "{other}");
    let other_tls = run(&app, &id, "curl -sS -m 20 https://other.test/hello 2>&1").await;
    assert!(
        other_tls.contains("403") && !other_tls.ends_with("exit=0"),
        "{other_tls}"
    );
    assert!(unlisted.requests().is_empty(), "{:?}", unlisted.requests());
    // A listed name that resolves to a private address, and `localhost`.
    let private = run(&app, &id, "curl -sS -m 20 http://internal.test/hello").await;
    assert!(private.contains("no public address"), "{private}");
    let loopback = run(
        &app,
        &id,
        "curl -sS -m 20 --proxy http://127.0.0.1:3128 --noproxy '' http://localhost:80/ 2>&1",
    )
    .await;
    assert!(loopback.contains("no public address"), "{loopback}");
    // Inside an allowed tunnel, a TLS server name not on the list.
    let sni = r#"python3 - <<'PY'
import socket, ssl
for name in ("other.test", "pypi.test"):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(b"CONNECT pypi.test:443 HTTP/1.1\r\nHost: pypi.test:443\r\n\r\n")
    print(s.recv(64).split(b"\r\n")[0].decode())
    ctx = ssl.create_default_context(cafile="/tmp/ca.pem")
    ctx.check_hostname = False
    try:
        ctx.wrap_socket(s, server_hostname=name)
        print(name, "handshake")
    except (OSError, ssl.SSLError):
        print(name, "refused")
PY"#;
    let sni = run(&app, &id, sni).await;
    assert_eq!(
        sni,
        "HTTP/1.1 200 Connection established\nother.test refused\nHTTP/1.1 200 Connection established\npypi.test handshake\nexit=0",
        "{sni}"
    );

    // A request head past the proxy's bound is answered, not buffered.
    let huge = run(
        &app,
        &id,
        r#"python3 -c '
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
try:
    s.sendall(b"GET http://pypi.test/hello HTTP/1.1\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
except OSError:
    pass
print(s.recv(64).split(b"\r\n")[0].decode())'"#,
    )
    .await;
    assert_eq!(
        huge, "HTTP/1.1 431 Request Header Fields Too Large\nexit=0",
        "{huge}"
    );

    // Without the proxy: no route, no DNS, whatever the variables say.
    let seen = listed.requests().len();
    let bypass = run(
        &app,
        &id,
        &format!(
            "unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy; \
             curl -sS -m 5 http://{}/hello; echo curl=$?; \
             curl -sS -m 5 http://pypi.test/hello; echo curl=$?; \
             getent hosts pypi.test; echo getent=$?; \
             python3 -c 'import socket; socket.create_connection((\"{}\", 443), timeout=5)' 2>&1 | tail -1; \
             ls /sys/class/net",
            listed.public(),
            listed.public()
        ),
    )
    .await;
    assert!(bypass.contains("curl=7"), "{bypass}");
    assert!(bypass.contains("curl=6"), "{bypass}");
    assert!(bypass.contains("getent=2"), "{bypass}");
    assert!(bypass.contains("Network is unreachable"), "{bypass}");
    assert!(bypass.contains("\nlo\n"), "{bypass}");
    assert_eq!(listed.requests().len(), seen, "{:?}", listed.requests());

    // Refusals the sandbox causes by the hundred do not grow the server's log: they
    // are kept in the sandbox's ring and counted.
    let log = dir.path().join("server.log");
    let before = std::fs::metadata(&log).unwrap().len();
    let flood = run(
        &app,
        &id,
        "for i in $(seq 200); do curl -s -o /dev/null http://other.test/$i; done",
    )
    .await;
    assert_eq!(flood, "exit=0", "{flood}");
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    assert!(grown < 4096, "the server's log grew by {grown} bytes");

    // Every decision is logged, refusals counted.
    let (_, egress) = app.get(&format!("/api/v1/containers/{id}/egress")).await;
    let decisions = egress["decisions"].as_array().unwrap();
    let denied: Vec<&Value> = decisions.iter().filter(|d| d["allowed"] == false).collect();
    let hosts_denied: Vec<&str> = denied.iter().map(|d| d["host"].as_str().unwrap()).collect();
    for host in ["other.test", "internal.test", "localhost"] {
        assert!(hosts_denied.contains(&host), "{host} not logged: {egress}");
    }
    assert!(
        denied
            .iter()
            .all(|d| d["time"].is_string() && d["port"].is_u64()),
        "{egress}"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["allowed"] == true && d["host"] == "pypi.test" && d["port"] == 443),
        "{egress}"
    );
    let metrics = app.text("/metrics").await;
    let counted: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("repobox_egress_denied_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        counted >= denied.len() as u64,
        "{counted} < {}",
        denied.len()
    );

    // The CLI shows the same, and creates with an allow-list.
    let cli = |args: Vec<String>| {
        let base = app.base.clone();
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
                .arg("--url")
                .arg(&base)
                .args(&args)
                .env_remove("REPOBOX_URL")
                .env_remove("REPOBOX_API_KEY")
                .output()
                .await
                .unwrap();
            assert!(output.status.success(), "{args:?}: {output:?}");
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let shown = cli(vec!["egress".to_owned(), id.clone()]).await;
    assert!(
        shown.starts_with("allow: pypi.test, internal.test"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|line| line.contains("other.test:80") && line.contains("refused")),
        "{shown}"
    );
    let made = cli(vec![
        "create".to_owned(),
        url.clone(),
        "--allow".to_owned(),
        "pypi.test".to_owned(),
    ])
    .await;
    let made = made.trim().to_owned();
    let _made_guard = app.guard(&json!({"container_id": made})).await;
    let (_, made_info) = app.get(&format!("/api/v1/containers/{made}")).await;
    assert_eq!(
        made_info["network"],
        json!({"allow": ["pypi.test"]}),
        "{made_info}"
    );

    // A job's entries get the list too.
    let (status, job) = app
        .post(
            "/api/v1/jobs",
            &json!({"repos": [{"repo_url": url}], "command": "curl -sS -m 20 http://pypi.test/hello && curl -sS -m 20 -o /dev/null -w '%{http_code}' http://other.test/",
                    "network": {"allow": ["pypi.test"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["job_id"].as_str().unwrap();
    let job = crate::jobs::wait_finished(&app, job_id, std::time::Duration::from_secs(120)).await;
    assert_eq!(job["counts"]["succeeded"], 1, "{job}");
    let (_, results) = app.get(&format!("/api/v1/jobs/{job_id}/results")).await;
    assert_eq!(
        results["results"][0]["stdout"], "hello from pypi.test\n403",
        "{results}"
    );

    // A new server adopts the sandbox, and its proxy with it.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let _server = start_resolving(dir.path(), port, &hosts, &env);
    app.wait_live().await;
    let again = run(
        &app,
        &id,
        "curl -sS -m 20 --cacert /tmp/ca.pem https://pypi.test/hello",
    )
    .await;
    assert_eq!(again, "hello from pypi.test\nexit=0", "{again}");
}
