//! Containment, tried as an attacker inside a sandbox: every way into the agent and
//! the pipes of its protocol fails or changes nothing the server reports; a git bomb
//! is refused without the host's disk growing; a command of a megabyte runs; errnos of
//! the sandbox's own files answer 4xx.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    SandboxGuard, TestApp, fixtures, scratch, spawn_app, test_config, unique, world,
};

async fn sandbox(app: &TestApp) -> SandboxGuard {
    let url = world().git.url(&unique("contain"), "simple");
    app.sandbox(json!({ "repo_url": url })).await.1
}

/// Every way a process of the sandbox could reach the agent (PID 1) or the pipes of
/// its protocol; each prints `REACHED <how>` if it got through.
const ATTACKS: &str = r#"
import ctypes, errno, os, signal, glob

def reached(how):
    print("REACHED", how, flush=True)

def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def is_command(pid):
    # A command's processes (ours and the background process's): a supervisor and
    # everything under one. They are the sandbox's own; the agent is not one of them.
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"supervise" in f.read().split(b"\0")[:2]:
                    return True
            pid = parent(pid)
        except OSError:
            return True
    return False

# Pipes of every process that is not a command's (the agent's, whatever else runs),
# written with a forged frame and read.
forged = b"\x7e" + b"\x00" * 9 + b"\x00\x00\x00\x02{}" + b"\x7e"
tried = 0
for fd in glob.glob("/proc/[0-9]*/fd/*"):
    pid = int(fd.split("/")[2])
    if is_command(pid):
        continue
    tried += 1
    try:
        target = os.readlink(fd)
    except OSError:
        target = "?"
    try:
        with open(fd, "wb", buffering=0) as f:
            f.write(forged)
        reached(f"write {fd} -> {target}")
    except OSError:
        pass
    try:
        with open(fd, "rb", buffering=0) as f:
            os.set_blocking(f.fileno(), False)
            f.read(1)
        reached(f"read {fd} -> {target}")
    except OSError:
        pass
if tried == 0:
    reached("nothing: no pipe of the agent was even listed")
# The agent's memory and environment.
for path in ["/proc/1/mem", "/proc/1/environ", "/proc/1/maps"]:
    try:
        with open(path, "rb") as f:
            f.read(16)
        reached(f"read {path}")
    except OSError:
        pass
# ptrace and process_vm_readv on the agent.
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, 1, 0, 0) == 0:  # PTRACE_ATTACH
    reached("ptrace attach")
if libc.ptrace(0x4206, 1, 0, 0) == 0:  # PTRACE_SEIZE
    reached("ptrace seize")
buf = ctypes.create_string_buffer(16)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 16)
remote = iovec(0x400000, 16)
if libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:
    reached("process_vm_readv")
# Terminals: the agent has none, and no terminal belongs to it.
for tty in glob.glob("/dev/pts/[0-9]*"):
    try:
        with open(tty, "wb", buffering=0) as f:
            f.write(forged)
        reached(f"write {tty}")
    except OSError:
        pass
# Signals: stop and kill the agent (PID 1 ignores them from inside).
for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL):
    try:
        os.kill(1, sig)
    except OSError:
        pass
print("done", flush=True)
"#;

#[tokio::test]
async fn nothing_a_command_does_reaches_the_agent_or_its_pipes() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    // A background process runs meanwhile: it is the sandbox's own (a command may
    // write into another command's output, as on any machine), the agent is not.
    let (status, _) = app
        .post(
            &format!("/api/v1/containers/{id}/processes"),
            &json!({ "command": "sleep 30" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let attack = app
        .exec_with(
            id,
            json!({ "command": "python3 -", "stdin": ATTACKS, "timeout": 60 }),
        )
        .await;
    assert_eq!(attack["exit_code"], 0, "{attack}");
    let stdout = attack["stdout"].as_str().unwrap();
    assert!(stdout.ends_with("done\n"), "{attack}");
    let reached: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("REACHED"))
        .collect();
    assert!(reached.is_empty(), "the attack got through: {reached:#?}");

    // The agent is untouched: it answers at once, reports exit codes as they are,
    // and the sandbox is running (not failed, not stopped).
    let started = Instant::now();
    let after = app.exec(id, "echo alive; exit 7").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(after["stdout"], "alive\n");
    assert_eq!(after["exit_code"], 7);
    let (status, info) = app.get(&format!("/api/v1/containers/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["status"], "running", "{info}");
    // PID 1 is the agent, alone with its pipes.
    let ps = app.exec(id, "cat /proc/1/cmdline | tr '\\0' ' '").await;
    assert!(ps["stdout"].as_str().unwrap().contains("agent"), "{ps}");
}

#[tokio::test]
async fn a_command_of_a_megabyte_runs() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.max_request_bytes = 2 * 1024 * 1024;
    let server = spawn_app(config).await;
    let app = &server.app;
    let url = world().git.url(&unique("long"), "simple");
    let (_, sandbox) = app.sandbox(json!({ "repo_url": url })).await;
    let payload = "a".repeat(1024 * 1024);
    let result = app
        .exec(&sandbox.id, &format!("x='{payload}'; echo ${{#x}}; exit 3"))
        .await;
    assert_eq!(result["stdout"], "1048576\n", "{}", result["stderr"]);
    assert_eq!(result["exit_code"], 3);
    // As a background process too.
    let (status, process) = app
        .post(
            &format!("/api/v1/containers/{}/processes", sandbox.id),
            &json!({ "command": format!("x='{payload}'; echo ${{#x}}") }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{process}");
    drop(sandbox);
    server.stop().await;
}

#[tokio::test]
async fn errnos_of_the_sandbox_answer_4xx() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    for path in ["/proc/self/mem", "/proc/1/mem", "/proc/self/fd/0"] {
        let (status, body) = app
            .get(&format!("/api/v1/containers/{id}/files?file_path={path}"))
            .await;
        assert!(status.is_client_error(), "{path}: {status} {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_large_directory_is_listed_whole_in_pages() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let made = app
        .exec(
            id,
            "mkdir /tmp/many && cd /tmp/many && seq -w 1 2500 | xargs touch && ls | wc -l",
        )
        .await;
    assert_eq!(made["stdout"], "2500\n", "{made}");
    let (status, listing) = app
        .get(&format!("/api/v1/containers/{id}/browse?path=/tmp/many"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listing["total_items"], 2500);
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.first().unwrap()["name"], "0001");
    assert_eq!(items.last().unwrap()["name"], "2500");
}

/// Bytes of the files under `dir`.
fn du(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[tokio::test]
async fn a_git_bomb_is_refused_and_the_host_disk_stays_flat() {
    let world = world();
    let name = unique("bomb");
    // 412 KiB of repository, 500 MiB of checkout.
    fixtures::git_bomb(&world.git.root, &name, 40, 50);
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.default_disk_mb = 100;
    let cache = config.cache_dir.clone();
    let server = spawn_app(config).await;
    let app = &server.app;
    let before = du(&cache);
    let started = Instant::now();
    let (status, body, guard) = app
        .create(json!({ "repo_url": world.git.url(&unique("bomb"), &name) }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "too_large", "{body}");
    assert!(guard.is_none());
    assert!(started.elapsed() < Duration::from_secs(30));
    let grown = du(&cache).saturating_sub(before);
    // The mirror (a few hundred KiB) and nothing of the checkout.
    assert!(grown < 8 * 1024 * 1024, "the cache grew by {grown} bytes");
    // Nothing is left running for it.
    let instance = app.instance().await;
    let left = crate::support::containers_with_label("repobox.instance", &instance);
    assert!(left.is_empty(), "{left:?}");
    // A small repository still fits the same limit.
    let (status, body, _guard) = app
        .create(json!({ "repo_url": world.git.url(&unique("fits"), "simple") }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn an_image_with_volumes_is_refused() {
    // VOLUMEs would sit outside the container's disk limit.
    let reference = format!("repobox-test-volume:{}", unique("v"));
    let context = scratch();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM repobox/sandbox:bookworm\nVOLUME /data /cache\n",
    )
    .unwrap();
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &reference])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let app = &world().app;
    let url = world().git.url(&unique("vol"), "simple");
    let (status, body, guard) = app
        .create(json!({ "repo_url": url, "image": reference }))
        .await;
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", "-f", &reference])
        .output();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(guard.is_none());
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("/cache, /data"), "{body}");
}

#[tokio::test]
async fn resources_beyond_the_host_are_refused_with_409() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.max_memory_mb = 16 * 1024 * 1024;
    config.max_disk_mb = 1024 * 1024 * 1024;
    config.memory_overcommit = 1.0;
    let server = spawn_app(config).await;
    let app = &server.app;
    let url = || world().git.url(&unique("cap"), "simple");
    let (_, info) = app.get("/api/v1/info").await;
    let host_mb = info["disk_limits"]["memory_bytes"].as_u64().unwrap() / (1024 * 1024);
    // One sandbox asking more memory than the host has.
    let (status, body, guard) = app
        .create(json!({ "repo_url": url(), "resources": { "memory_mb": host_mb + 1024 } }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "no_capacity", "{body}");
    assert!(guard.is_none());
    // More disk than the engine's store holds (where the engine limits disk at all).
    if let Some(store) = info["disk_limits"]["store_bytes"].as_u64()
        && info["disk_limits"]["enforced"] == true
    {
        let (status, body, _) = app
            .create(json!({
                "repo_url": url(),
                "resources": { "disk_mb": store / (1024 * 1024) + 1024 }
            }))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "no_capacity", "{body}");
    }
    // Together: two sandboxes of 45 % of the host fit a budget of 1.0, a third does not.
    let share = host_mb * 45 / 100;
    let (status, body, _a) = app
        .create(json!({ "repo_url": url(), "resources": { "memory_mb": share } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, _b) = app
        .create(json!({ "repo_url": url(), "resources": { "memory_mb": share } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, c) = app
        .create(json!({ "repo_url": url(), "resources": { "memory_mb": share } }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "no_capacity", "{body}");
    assert!(c.is_none());
    drop((_a, _b));
    server.stop().await;
}
