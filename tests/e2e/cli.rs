//! The `repobox` command line as a user runs it: the built binary against a real
//! server, sandboxes on the real engine, the terminal on a real pseudo-terminal
//! (python3's `pty`, which every machine of ours has).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::support::{TestApp, scratch, spawn_app, test_config, unique, world};

/// Runs the `repobox` binary against `app` in `cwd`, with nothing of the caller's
/// environment that would change where it goes.
async fn repobox(app: &TestApp, cwd: &Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_repobox"));
    command
        .arg("--url")
        .arg(&app.base)
        .args(args)
        .current_dir(cwd)
        .env_remove("REPOBOX_URL")
        .env_remove("REPOBOX_API_KEY")
        .stdin(std::process::Stdio::null());
    if let Some(key) = &app.key {
        command.env("REPOBOX_API_KEY", key);
    }
    command.output().await.expect("running repobox")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a zero exit; returns stdout.
#[track_caller]
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Every entry under `root`: relative path → (kind and mode, content or link target).
fn tree(root: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = meta.permissions().mode() & 0o7777;
            let value = if meta.file_type().is_symlink() {
                (
                    "link".to_owned(),
                    std::fs::read_link(&path)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                        .into_bytes(),
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                (format!("dir {mode:o}"), Vec::new())
            } else {
                (format!("file {mode:o}"), std::fs::read(&path).unwrap())
            };
            entries.insert(name, value);
        }
    }
    entries
}

/// A tree with nested directories, an empty one, a binary file, odd names, an
/// executable and a link.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), "deep\n").unwrap();
    std::fs::write(root.join("name with spaces ü.txt"), "spaces\n").unwrap();
    let mut binary: Vec<u8> = (0..=255u8).collect();
    let mut state = 0x2545_f491_u32;
    binary.extend((0..300_000).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state.to_le_bytes()[0]
    }));
    std::fs::write(root.join("a/blob.bin"), &binary).unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link")).unwrap();
}

#[tokio::test]
async fn the_cli_creates_runs_copies_and_removes_a_sandbox() {
    let world = world();
    let app = &world.app;
    let dir = scratch();
    let cwd = dir.path();
    let url = world.git.url(&unique("cli"), "simple");

    // create: the id alone on stdout (no spinner: stderr is not a terminal).
    let created = repobox(
        app,
        cwd,
        &[
            "create",
            &url,
            "--branch",
            "trunk",
            "--ttl",
            "600",
            "--env",
            "GREETING=hello there",
        ],
    )
    .await;
    let id = ok(&created).trim().to_owned();
    let guard = app.guard(&json!({ "container_id": id })).await;
    assert!(id.starts_with("repo-container-"), "{id:?}");
    assert_eq!(stderr(&created), "");

    let status: Value =
        serde_json::from_str(&ok(&repobox(app, cwd, &["status", &id, "--json"]).await)).unwrap();
    assert_eq!(status["status"], "running");
    assert_eq!(status["branch"], "trunk");
    assert_eq!(status["resolved_commit"], world.simple.trunk_head);
    let text = ok(&repobox(app, cwd, &["status", &id]).await);
    assert!(text.contains(&world.simple.trunk_head), "{text}");
    let listing = ok(&repobox(app, cwd, &["ls"]).await);
    let line = listing
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.contains("running") && line.contains(&url), "{line}");

    // exec: stdout and stderr apart, the exit status the command's.
    let run = repobox(
        app,
        cwd,
        &[
            "exec",
            &id,
            "--",
            "echo out; echo err >&2; echo \"$GREETING\"; exit 3",
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    assert_eq!(stdout(&run), "out\nhello there\n");
    assert_eq!(stderr(&run), "err\n");
    let run = repobox(
        app,
        cwd,
        &[
            "exec",
            &id,
            "--workdir",
            "/tmp",
            "-e",
            "X=1",
            "--",
            "sh",
            "-c",
            "pwd; echo $X; exit 7",
        ],
    )
    .await;
    // Several arguments run exactly as given (not joined into `sh -c pwd; …`).
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
    assert_eq!(stdout(&run), "/tmp\n1\n");
    let run = repobox(app, cwd, &["exec", &id, "--timeout", "1", "--", "sleep 30"]).await;
    assert_eq!(run.status.code(), Some(124), "{}", stderr(&run));
    assert!(stderr(&run).contains("timed out"), "{}", stderr(&run));
    let run = repobox(
        app,
        cwd,
        &["--json", "exec", &id, "--", "echo json; exit 4"],
    )
    .await;
    assert_eq!(run.status.code(), Some(4));
    let result: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(result["exit_code"], 4);
    assert_eq!(result["stdout"], "json\n");

    // cp up: under a new name, and into an existing directory.
    let local = cwd.join("tree");
    make_tree(&local);
    ok(&repobox(app, cwd, &["cp", "./tree", &format!("{id}:/workspace/up")]).await);
    app.exec(&id, "mkdir /workspace/into").await;
    ok(&repobox(app, cwd, &["cp", "tree", &format!("{id}:/workspace/into")]).await);
    // Kinds, modes, link targets and contents, the same here and there.
    let summary = "find . -printf '%y %m %l %p\\n' | LC_ALL=C sort && \
                   find . -type f -exec sha256sum {} + | LC_ALL=C sort";
    let here = std::process::Command::new("sh")
        .args(["-c", summary])
        .current_dir(&local)
        .output()
        .unwrap();
    let here = stdout(&here);
    assert!(here.contains("l 777 a/b/c/deep.txt ./link"), "{here}");
    assert!(here.contains("./name with spaces ü.txt"), "{here}");
    for copy in ["/workspace/up", "/workspace/into/tree"] {
        let there = app.exec(&id, &format!("cd {copy} && {summary}")).await;
        assert_eq!(there["exit_code"], 0, "{there}");
        assert_eq!(there["stdout"].as_str().unwrap(), here, "{copy}");
    }
    let owner = app
        .exec(
            &id,
            "stat -c %U /workspace/up/run.sh && /workspace/up/run.sh",
        )
        .await;
    assert_eq!(owner["stdout"], "root\nran\n", "{owner}");

    // cp down: a new name, into an existing directory, a single file.
    ok(&repobox(app, cwd, &["cp", &format!("{id}:/workspace/up"), "./down"]).await);
    assert_eq!(tree(&cwd.join("down")), tree(&local));
    let into = cwd.join("into");
    std::fs::create_dir(&into).unwrap();
    ok(&repobox(app, &into, &["cp", &format!("{id}:/workspace/up/a"), "."]).await);
    assert_eq!(
        std::fs::read(into.join("a/blob.bin")).unwrap(),
        std::fs::read(local.join("a/blob.bin")).unwrap()
    );
    ok(&repobox(app, cwd, &["cp", &format!("{id}:README.md"), "readme.txt"]).await);
    assert_eq!(
        std::fs::read_to_string(cwd.join("readme.txt")).unwrap(),
        "# simple\n\nA fixture repository.\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".repobox-cp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A missing path: the server's 404, and nothing written.
    let missing = repobox(app, cwd, &["cp", &format!("{id}:/no/such"), "nothing"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("/no/such"),
        "{}",
        stderr(&missing)
    );
    assert!(!cwd.join("nothing").exists());

    // extend, then rm: the container is gone and the id unknown.
    let extended: Value =
        serde_json::from_str(&ok(
            &repobox(app, cwd, &["extend", &id, "1200", "--json"]).await
        ))
        .unwrap();
    assert!(extended["expires_at"].is_string(), "{extended}");
    assert_eq!(
        ok(&repobox(app, cwd, &["rm", &id]).await),
        format!("{id}\n")
    );
    assert!(guard.containers().is_empty(), "{:?}", guard.containers());
    let gone = repobox(app, cwd, &["status", &id]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains(&format!("no container with id {id}")),
        "{}",
        stderr(&gone)
    );
}

#[tokio::test]
async fn cli_errors_carry_the_servers_detail_and_usage_errors_exit_2() {
    let app = &world().app;
    let dir = scratch();
    let cwd = dir.path();
    let unknown = "repo-container-0-0";
    std::fs::write(cwd.join("here.txt"), "here\n").unwrap();
    for args in [
        vec!["status", unknown],
        vec!["exec", unknown, "--", "true"],
        vec!["rm", unknown],
        vec!["cp", "here.txt", "repo-container-0-0:/tmp"],
        vec!["shell", unknown],
    ] {
        let output = repobox(app, cwd, &args).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(
            err.contains("Container not found") && err.contains(unknown),
            "{args:?}: {err}"
        );
        assert_eq!(stdout(&output), "", "{args:?}");
    }
    // With --json the error is still on stderr, and stdout stays empty.
    let output = repobox(app, cwd, &["--json", "status", unknown]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("Container not found"));

    // A server that is not there.
    let unreachable = TestApp::at("http://127.0.0.1:1".to_owned());
    let output = repobox(&unreachable, cwd, &["ls"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot reach the server at http://127.0.0.1:1"));

    // Usage: clap's, and ours.
    for args in [
        vec!["exec", "x"],
        vec!["create"],
        vec!["create", "u", "--env", "1BAD=x"],
        vec!["cp", "a", "b"],
        vec!["cp", "x:/a", "y:/b"],
        vec!["--port", "1", "ls"],
    ] {
        let output = repobox(app, cwd, &args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let completions = ok(&repobox(app, cwd, &["completions", "bash"]).await);
    assert!(completions.contains("repobox"), "{completions}");
}

/// Drives `repobox shell` on a pseudo-terminal of 80×24: types `echo hi`, checks the
/// size, resizes the window to 123×45 (the kernel sends SIGWINCH), checks again,
/// exits 7. Afterwards `stty -a` shows whether the terminal was restored. Prints the
/// whole transcript; exits with the status of the shell command line (repobox's).
const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time

argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.execvp("sh", ["sh", "-c", '"$@"; code=$?; echo; echo STTY $(stty -a); exit $code', "sh"] + argv)

seen = b""
def read_until(needle, timeout=60, count=1):
    global seen
    deadline = time.time() + timeout
    while seen.count(needle) < count or not seen:
        left = deadline - time.time()
        if left <= 0:
            sys.stdout.write(seen.decode(errors="replace"))
            sys.exit("timed out waiting for %r" % needle)
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                sys.stdout.write(seen.decode(errors="replace"))
                sys.exit("the terminal closed while waiting for %r" % needle)
            seen += data

read_until(b"")                       # anything: repobox is connected, in raw mode
time.sleep(1)
os.write(fd, b"echo hi\r")
read_until(b"hi\r\n", count=2)      # the line typed, then the command's output
os.write(fd, b"stty size\r")
read_until(b"24 80")
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 123, 0, 0))
time.sleep(0.5)
os.write(fd, b"stty size\r")
read_until(b"45 123")
os.write(fd, b"exit 7\r")
read_until(b"STTY")
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    seen += data
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[tokio::test]
async fn the_shell_is_a_terminal_with_the_api_key() {
    let world = world();
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.api_keys = repobox::config::List(vec!["shell-key".to_owned()]);
    let server = spawn_app(config).await;
    let mut app = server.app.clone();
    app.key = Some("shell-key".to_owned());
    let url = world.git.url(&unique("cli-shell"), "simple");
    let (_, sandbox) = app.sandbox(json!({ "repo_url": url })).await;

    // On a pseudo-terminal (the key from REPOBOX_API_KEY).
    let script = dir.path().join("pty_driver.py");
    std::fs::write(&script, PTY_DRIVER).unwrap();
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_repobox"))
        .args(["--url", &app.base, "shell", &sandbox.id])
        .env("REPOBOX_API_KEY", "shell-key")
        .env_remove("REPOBOX_URL")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let transcript = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(7),
        "{transcript}\n{}",
        stderr(&output)
    );
    // The terminal is back in its cooked mode once repobox is gone.
    let stty = transcript.split("STTY").nth(1).unwrap_or_default();
    let flags: Vec<&str> = stty.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig", "opost"] {
        assert!(flags.contains(&flag), "{flag} not restored: {stty}");
    }

    // Input piped: sent as typed, its end is Ctrl-D; the key from --api-key.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
        .args([
            "--url",
            &app.base,
            "--api-key",
            "shell-key",
            "shell",
            &sandbox.id,
        ])
        .env_remove("REPOBOX_API_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"echo piped-$((6*7)); exit 5\n")
            .await
            .unwrap();
    }
    let piped = child.wait_with_output().await.unwrap();
    assert_eq!(piped.status.code(), Some(5), "{}", stderr(&piped));
    assert!(stdout(&piped).contains("piped-42"), "{}", stdout(&piped));

    // Without the key: the server's 401.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
        .args(["--url", &app.base, "shell", &sandbox.id])
        .env_remove("REPOBOX_API_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("Unauthorized"),
        "{}",
        stderr(&refused)
    );
    drop(sandbox);
    server.stop().await;
}

#[tokio::test]
async fn snapshot_and_fork_print_the_new_ids() {
    let world = world();
    let app = &world.app;
    let dir = scratch();
    let cwd = dir.path();
    let url = world.git.url(&unique("cli-fork"), "simple");
    let (_, source) = app.sandbox(json!({ "repo_url": url })).await;
    app.exec(&source.id, "echo set-up > /workspace/state").await;

    let snapshot = ok(&repobox(app, cwd, &["snapshot", &source.id, "--name", "cli"]).await);
    let snapshot = snapshot.trim();
    let (_, record) = app.get(&format!("/api/v1/snapshots/{snapshot}")).await;
    assert_eq!(record["name"], "cli", "{record}");

    let forked = ok(&repobox(app, cwd, &["fork", &source.id, "-n", "2"]).await);
    let ids: Vec<&str> = forked.lines().collect();
    assert_eq!(ids.len(), 2, "{forked}");
    let mut guards = Vec::new();
    for id in &ids {
        guards.push(app.guard(&json!({ "container_id": id })).await);
        let run = repobox(app, cwd, &["exec", id, "--", "cat /workspace/state"]).await;
        assert_eq!(ok(&run), "set-up\n");
    }
    let mut rm = vec!["rm"];
    rm.extend(&ids);
    assert_eq!(ok(&repobox(app, cwd, &rm).await), forked);
    for guard in &guards {
        assert!(guard.containers().is_empty(), "{}", guard.id);
    }
    // One of several unknown: the others are still removed, and the exit status is 1.
    let (_, other) = app.sandbox(json!({ "repo_url": url })).await;
    let mixed = repobox(app, cwd, &["rm", "repo-container-0-0", &other.id]).await;
    assert_eq!(mixed.status.code(), Some(1));
    assert_eq!(stdout(&mixed), format!("{}\n", other.id));
    assert!(other.containers().is_empty());
    let _ = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/snapshots/{snapshot}"),
        )
        .send()
        .await;
}

#[tokio::test]
async fn job_run_follows_a_job_to_its_summary_and_results_agree() {
    let world = world();
    let app = &world.app;
    let dir = scratch();
    let url = world.git.url(&unique("cli-job"), "simple");
    std::fs::write(
        dir.path().join("repos.txt"),
        format!("# three entries\n{url}\n{url} feature\n{url} no-such-branch\n"),
    )
    .unwrap();
    let run = repobox(
        app,
        dir.path(),
        &[
            "job",
            "run",
            "--repos",
            "repos.txt",
            "-j",
            "2",
            "--",
            "git rev-parse HEAD",
        ],
    )
    .await;
    assert_eq!(
        run.status.code(),
        Some(1),
        "one entry errored: {}",
        stderr(&run)
    );
    let table = stdout(&run);
    assert!(
        table.contains("2 succeeded, 0 failed, 1 errored, 0 cancelled of 3"),
        "{table}"
    );
    assert!(table.contains(&world.simple.trunk_head[..7]), "{table}");
    assert!(table.contains(&world.simple.feature_head[..7]), "{table}");
    let job_id = stderr(&run)
        .split_whitespace()
        .find(|word| word.starts_with("job-"))
        .map(|word| word.trim_end_matches(':').to_owned())
        .expect("the job's id on stderr");

    let status = ok(&repobox(app, dir.path(), &["--json", "job", "status", &job_id]).await);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(status["counts"]["succeeded"], 2);
    let jsonl = ok(&repobox(app, dir.path(), &["job", "results", &job_id, "--jsonl"]).await);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (_, json) = app.get(&format!("/api/v1/jobs/{job_id}/results")).await;
    assert_eq!(lines, json["results"].as_array().unwrap().clone());
    assert_eq!(
        lines[1]["stdout"],
        format!("{}\n", world.simple.feature_head)
    );

    // Cancel of a finished job: the server's 409 detail, exit 1.
    let cancel = repobox(app, dir.path(), &["job", "cancel", &job_id]).await;
    assert_eq!(cancel.status.code(), Some(1));
    assert!(
        stderr(&cancel).contains("already completed"),
        "{}",
        stderr(&cancel)
    );
}
