//! Commands through the real agent binary.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, exec_request, processes_with};

/// See the agent's supervisor.
const NO_SUBREAPER: &str = "REPOBOX_AGENT_NO_SUBREAPER";
use repobox_protocol::{ErrorKind, Reply, Request, Tag, WINDOW};

#[tokio::test]
async fn hello_and_ping() {
    let agent = Agent::start().await;
    let mut ping = agent.open(&Request::Ping);
    assert_eq!(ping.reply().await, Reply::Pong);
    let ack = agent.hello(8).await;
    let Reply::HelloAck { agent_version, .. } = ack else {
        panic!()
    };
    assert_eq!(agent_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn garbage_is_ignored() {
    let agent = Agent::start().await;
    // A control frame that is not a request, then an unknown id's data and credit.
    let bogus = agent.open(&Request::Ping);
    bogus.send_data(b"nobody listens");
    let mut op = agent.open_with(&Request::Ping, true);
    op.send(&Request::Credit { bytes: 5 });
    op.send(&Request::Cancel);
    assert_eq!(op.reply().await, Reply::Pong);
    assert_eq!(agent.exec("echo still here").await.out(), "still here\n");
}

#[tokio::test]
async fn output_and_exit_code() {
    let agent = Agent::start().await;
    let output = agent.exec("echo hi; echo err >&2; exit 3").await;
    assert_eq!(output.stdout, b"hi\n");
    assert_eq!(output.stderr, b"err\n");
    assert_eq!(output.code(), 3);
    assert!(output.pid > 0);
}

#[tokio::test]
async fn exit_by_signal() {
    let agent = Agent::start().await;
    assert_eq!(agent.exec("kill -9 $$").await.code(), 137);
}

#[tokio::test]
async fn a_true_round_trip_is_quick() {
    let agent = Agent::start().await;
    agent.exec("true").await;
    let start = Instant::now();
    for _ in 0..10 {
        assert_eq!(agent.exec("true").await.code(), 0);
    }
    let each = start.elapsed() / 10;
    eprintln!("true round trip: {each:?}");
    assert!(each < Duration::from_millis(200), "{each:?}");
}

#[tokio::test]
async fn cwd_and_env() {
    let agent = Agent::start().await;
    let mut op = agent.open(&Request::Exec {
        command: "pwd; echo $REPOBOX_TEST_VAR; test -n \"$PATH\" && echo path".into(),
        cwd: "/tmp".into(),
        env: vec![("REPOBOX_TEST_VAR".into(), "v a l".into())],
        stdin: false,
        timeout_ms: None,
        output_cap: None,
    });
    let output = op.exec_output().await;
    assert_eq!(output.out(), "/tmp\nv a l\npath\n");

    let mut op = agent.open(&Request::Exec {
        command: "true".into(),
        cwd: "/nonexistent/dir".into(),
        env: vec![],
        stdin: false,
        timeout_ms: None,
        output_cap: None,
    });
    let output = op.exec_output().await;
    assert!(
        matches!(
            output.end,
            Some(Reply::Error {
                kind: ErrorKind::NotFound,
                ..
            })
        ),
        "{output:?}"
    );
    let mut op = agent.open(&Request::Exec {
        command: "true".into(),
        cwd: "/etc/passwd".into(),
        env: vec![],
        stdin: false,
        timeout_ms: None,
        output_cap: None,
    });
    let output = op.exec_output().await;
    assert!(
        matches!(
            output.end,
            Some(Reply::Error {
                kind: ErrorKind::NotDirectory,
                ..
            })
        ),
        "{output:?}"
    );
}

#[tokio::test]
async fn timeout_kills_and_reports_124() {
    let agent = Agent::start().await;
    let start = Instant::now();
    let mut op = agent.open(&Request::Exec {
        command: "sleep 100".into(),
        cwd: "/".into(),
        env: vec![],
        stdin: false,
        timeout_ms: Some(300),
        output_cap: None,
    });
    let output = op.exec_output().await;
    let elapsed = start.elapsed();
    assert!(
        matches!(
            output.end,
            Some(Reply::Exit {
                exit_code: 124,
                timed_out: true,
                ..
            })
        ),
        "{output:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

/// Commands that leave a `sleep <marker>` behind in ways that escape a process group.
fn escapes(marker: &str) -> Vec<String> {
    vec![
        format!("env -i sleep {marker}1 &"),
        format!("setsid sleep {marker}2 &"),
        format!("( (sleep {marker}3 &) & )"),
        format!("nohup sleep {marker}4 >/dev/null 2>&1 &"),
    ]
}

async fn assert_gone(marker: &str) {
    // Dead processes may take a moment to leave /proc.
    for _ in 0..50 {
        if processes_with(marker).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still running: {:?}", processes_with(marker));
}

#[tokio::test]
async fn escaped_processes_die_with_the_shell() {
    escaped_processes_die_with_the_shell_with(&[], "1").await;
}

#[tokio::test]
async fn escaped_processes_die_with_the_shell_without_a_subreaper() {
    escaped_processes_die_with_the_shell_with(&[(NO_SUBREAPER, "1")], "2").await;
}

async fn escaped_processes_die_with_the_shell_with(env: &[(&str, &str)], tag: &str) {
    let agent = Agent::start_with_env(env).await;
    let marker = format!("300.{}{tag}", std::process::id());
    let command = format!("{}\necho started", escapes(&marker).join("\n"));
    let start = Instant::now();
    let output = agent.exec(&command).await;
    assert_eq!(output.out(), "started\n");
    assert_eq!(output.code(), 0);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_gone(&marker).await;
}

#[tokio::test]
async fn escaped_processes_die_at_the_timeout() {
    escaped_processes_die_at_the_timeout_with(&[], "1").await;
}

#[tokio::test]
async fn escaped_processes_die_at_the_timeout_without_a_subreaper() {
    escaped_processes_die_at_the_timeout_with(&[(NO_SUBREAPER, "1")], "2").await;
}

async fn escaped_processes_die_at_the_timeout_with(env: &[(&str, &str)], tag: &str) {
    let agent = Agent::start_with_env(env).await;
    let marker = format!("301.{}{tag}", std::process::id());
    let command = format!("{}\nsleep 100", escapes(&marker).join("\n"));
    let mut op = agent.open(&Request::Exec {
        command,
        cwd: "/".into(),
        env: vec![],
        stdin: false,
        timeout_ms: Some(500),
        output_cap: None,
    });
    let output = op.exec_output().await;
    assert!(
        matches!(
            output.end,
            Some(Reply::Exit {
                exit_code: 124,
                timed_out: true,
                ..
            })
        ),
        "{output:?}"
    );
    assert_gone(&marker).await;
}

#[tokio::test]
async fn escaped_processes_die_on_cancel() {
    escaped_processes_die_on_cancel_with(&[], "1").await;
}

#[tokio::test]
async fn escaped_processes_die_on_cancel_without_a_subreaper() {
    escaped_processes_die_on_cancel_with(&[(NO_SUBREAPER, "1")], "2").await;
}

async fn escaped_processes_die_on_cancel_with(env: &[(&str, &str)], tag: &str) {
    let agent = Agent::start_with_env(env).await;
    let marker = format!("302.{}{tag}", std::process::id());
    let command = format!("{}\necho ready; sleep 100", escapes(&marker).join("\n"));
    let mut op = agent.open(&exec_request(&command));
    assert!(matches!(op.reply().await, Reply::Started { .. }));
    let frame = op.next().await;
    assert_eq!(frame.tag, Tag::Stdout);
    // All four are started (they may still be exec'ing).
    let sleeping = || {
        processes_with(&marker)
            .iter()
            .filter(|(_, c)| c.starts_with("sleep"))
            .count()
    };
    for _ in 0..100 {
        if sleeping() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sleeping(), 4);
    op.send(&Request::Cancel);
    assert_gone(&marker).await;
    assert!(
        op.next_within(Duration::from_millis(300)).await.is_none(),
        "a frame after cancel"
    );
}

#[tokio::test]
async fn a_new_hello_kills_commands_of_the_old_connection() {
    let agent = Agent::start().await;
    let marker = format!("303.{}", std::process::id());
    let mut op = agent.open(&exec_request(&format!("echo ready; sleep {marker}")));
    assert!(matches!(op.reply().await, Reply::Started { .. }));
    assert_eq!(op.next().await.tag, Tag::Stdout);
    agent.hello(99).await;
    assert_gone(&marker).await;
    assert!(op.next_within(Duration::from_millis(300)).await.is_none());
    assert_eq!(agent.exec("echo after").await.out(), "after\n");
}

#[tokio::test]
async fn stdin_round_trip() {
    let agent = Agent::start().await;
    let input: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut op = agent.open(&Request::Exec {
        command: "cat".into(),
        cwd: "/".into(),
        env: vec![],
        stdin: true,
        timeout_ms: None,
        output_cap: None,
    });
    let output = op.exec_with_input(Some(&input)).await;
    assert_eq!(output.code(), 0);
    assert!(
        output.stdout == input,
        "stdout differs ({} bytes)",
        output.stdout.len()
    );
}

#[tokio::test]
async fn a_command_that_ignores_stdin_does_not_block() {
    let agent = Agent::start().await;
    let input = vec![b'x'; 3 * 1024 * 1024];
    let mut op = agent.open(&Request::Exec {
        command: "echo done".into(),
        cwd: "/".into(),
        env: vec![],
        stdin: true,
        timeout_ms: Some(20_000),
        output_cap: None,
    });
    let output = op.exec_with_input(Some(&input)).await;
    assert_eq!(output.out(), "done\n");
    assert_eq!(output.code(), 0);
}

#[tokio::test]
async fn without_stdin_reads_get_eof() {
    let agent = Agent::start().await;
    let start = Instant::now();
    let output = agent.exec("cat; echo end").await;
    assert_eq!(output.out(), "end\n");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn output_cap() {
    let agent = Agent::start().await;
    let cap = 1024 * 1024;
    let mut op = agent.open(&Request::Exec {
        command: "head -c 20000000 /dev/zero; head -c 20000000 /dev/zero >&2".into(),
        cwd: "/".into(),
        env: vec![],
        stdin: false,
        timeout_ms: None,
        output_cap: Some(cap),
    });
    let output = op.exec_output().await;
    assert_eq!(output.stdout.len() as u64, cap);
    assert_eq!(output.stderr.len() as u64, cap);
    assert!(
        matches!(
            output.end,
            Some(Reply::Exit {
                exit_code: 0,
                timed_out: false,
                stdout_truncated: true,
                stderr_truncated: true
            })
        ),
        "{:?}",
        output.end
    );
}

#[tokio::test]
async fn the_window_holds_output_until_credit() {
    let agent = Agent::start().await;
    let mut op = agent.open_with(&exec_request("head -c 3000000 /dev/zero"), false);
    assert!(matches!(op.reply().await, Reply::Started { .. }));
    let mut received = 0u64;
    let mut charged = 0u64;
    while let Some(frame) = op.next_within(Duration::from_millis(500)).await {
        assert_eq!(frame.tag, Tag::Stdout);
        received += frame.body.len() as u64;
        charged += repobox_protocol::frame_cost(frame.body.len());
    }
    // Every frame costs its body and FRAME_COST: the window is full, not more.
    assert!(charged <= WINDOW && charged + repobox_protocol::FRAME_COST >= WINDOW - 64 * 1024);
    assert!(received < WINDOW);
    // Enough credit for the rest at once.
    op.send(&Request::Credit { bytes: 4_000_000 });
    let output = op.exec_output().await;
    assert_eq!(received + output.stdout.len() as u64, 3_000_000);
    assert_eq!(output.code(), 0);
}

#[tokio::test]
async fn a_large_stream_does_not_hold_up_a_small_command() {
    let agent = Agent::start().await;
    let size: u64 = 200 * 1024 * 1024;
    let mut big = agent.open(&exec_request(&format!("head -c {size} /dev/zero")));
    assert!(matches!(big.reply().await, Reply::Started { .. }));
    // Let the stream get going.
    let mut received = 0u64;
    while received < 4 * WINDOW {
        received += big.next().await.body.len() as u64;
    }
    let start = Instant::now();
    let small = agent.exec("echo small").await;
    let latency = start.elapsed();
    assert_eq!(small.out(), "small\n");
    let rest = big.exec_output().await;
    received += rest.stdout.len() as u64;
    assert_eq!(rest.code(), 0);
    assert_eq!(received, size);
    eprintln!("small exec during a 200 MiB stream: {latency:?}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
}

#[tokio::test]
async fn fifty_concurrent_commands() {
    let agent = Agent::start().await;
    let mut ops: Vec<_> = (0..50)
        .map(|i| {
            agent.open(&exec_request(&format!(
                "sleep 0.2; echo {i}; echo e{i} >&2; exit {}",
                i % 7
            )))
        })
        .collect();
    for (i, op) in ops.iter_mut().enumerate() {
        let output = op.exec_output().await;
        assert_eq!(output.out(), format!("{i}\n"));
        assert_eq!(output.stderr, format!("e{i}\n").into_bytes());
        assert_eq!(output.code(), (i % 7) as i64);
    }
}

#[tokio::test]
#[ignore = "timing breakdown, run by hand"]
async fn timing_breakdown() {
    let agent = Agent::start().await;
    agent.exec("true").await;
    for _ in 0..5 {
        let start = Instant::now();
        let mut op = agent.open(&exec_request("true"));
        op.reply().await;
        let started = start.elapsed();
        op.exec_output().await;
        eprintln!("started {started:?} exit {:?}", start.elapsed());
        let start = Instant::now();
        let mut op = agent.open(&Request::Ping);
        op.reply().await;
        eprintln!("ping {:?}", start.elapsed());
    }
}

#[tokio::test]
async fn a_command_longer_than_an_argument_may_be_runs_and_leaves_no_file() {
    let agent = Agent::start().await;
    // An argument is at most 128 KiB: this line must reach the shell another way.
    let payload = "a".repeat(1024 * 1024);
    let output = agent
        .exec(&format!(
            "x='{payload}'; echo ${{#x}}; echo \"$0\" >&2; exit 7"
        ))
        .await;
    assert_eq!(output.out(), "1048576\n");
    assert_eq!(output.code(), 7);
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("repobox-command-{}-", agent.pid()))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
