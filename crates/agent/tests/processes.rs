//! Background processes through the real agent binary.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Op, processes_with};
use repobox_protocol::{ErrorKind, ProcessInfo, ProcessStatus, Reply, Request, Tag};

/// Longest any test waits for a process to reach a state.
const BOUND: Duration = Duration::from_secs(20);

/// A start request with defaults: cwd /, no stdin, no terminal, 1 MiB rings.
struct Start {
    command: String,
    stdin_open: bool,
    tty: bool,
    timeout_ms: Option<u64>,
    output_bytes: u64,
    max_running: Option<u32>,
}

impl Start {
    fn new(command: &str) -> Self {
        Self {
            command: command.to_owned(),
            stdin_open: false,
            tty: false,
            timeout_ms: None,
            output_bytes: 1 << 20,
            max_running: None,
        }
    }

    fn request(&self) -> Request {
        Request::ProcessStart {
            command: self.command.clone(),
            cwd: "/".to_owned(),
            env: vec![("REPOBOX_TEST".to_owned(), "yes".to_owned())],
            stdin_open: self.stdin_open,
            tty: self.tty,
            cols: None,
            rows: None,
            timeout_ms: self.timeout_ms,
            output_bytes: self.output_bytes,
            max_running: self.max_running,
        }
    }

    async fn run(&self, agent: &Agent) -> ProcessInfo {
        match call(agent, &self.request()).await {
            Reply::Process { info } => info,
            other => panic!("not started: {other:?}"),
        }
    }
}

/// Opens `request` and returns its final reply.
async fn call(agent: &Agent, request: &Request) -> Reply {
    agent.open(request).final_reply().await
}

async fn info(agent: &Agent, id: u64) -> ProcessInfo {
    match call(agent, &Request::ProcessGet { id }).await {
        Reply::Process { info } => info,
        other => panic!("{other:?}"),
    }
}

/// Polls until the process ended.
async fn wait_end(agent: &Agent, id: u64) -> ProcessInfo {
    let start = Instant::now();
    loop {
        let info = info(agent, id).await;
        if info.status != ProcessStatus::Running {
            return info;
        }
        assert!(start.elapsed() < BOUND, "still running: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kept output from the offsets: (stdout chunk offset, stdout, stderr).
async fn output(agent: &Agent, id: u64, stdout_offset: u64, stderr_offset: u64) -> Reply {
    call(
        agent,
        &Request::ProcessOutput {
            id,
            stdout_offset,
            stderr_offset,
            max_bytes: 1 << 20,
        },
    )
    .await
}

fn stdout_of(reply: &Reply) -> (u64, String, u64) {
    match reply {
        Reply::ProcessOutput { stdout, .. } => (
            stdout.offset,
            String::from_utf8_lossy(&stdout.data).into_owned(),
            stdout.end,
        ),
        other => panic!("{other:?}"),
    }
}

/// Polls the output until stdout contains `text`; returns all of stdout.
async fn wait_output(agent: &Agent, id: u64, text: &str) -> String {
    let start = Instant::now();
    loop {
        let (_, out, _) = stdout_of(&output(agent, id, 0, 0).await);
        if out.contains(text) {
            return out;
        }
        assert!(start.elapsed() < BOUND, "no {text:?} in {out:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a follow gave.
#[derive(Debug, Default)]
struct Followed {
    start: (u64, u64),
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    end: Option<ProcessInfo>,
}

/// Opens a follow and reads its first reply.
async fn open_follow(agent: &Agent, id: u64, offsets: (u64, u64)) -> (Op, Followed) {
    let mut op = agent.open(&Request::ProcessFollow {
        id,
        stdout_offset: offsets.0,
        stderr_offset: offsets.1,
    });
    let start = match op.reply().await {
        Reply::Following {
            stdout_offset,
            stderr_offset,
        } => (stdout_offset, stderr_offset),
        other => panic!("{other:?}"),
    };
    (
        op,
        Followed {
            start,
            ..Followed::default()
        },
    )
}

/// Reads a follow until the process ended, or until `enough` says so.
async fn read_follow(op: &mut Op, followed: &mut Followed, enough: impl Fn(&Followed) -> bool) {
    while !enough(followed) {
        let frame = op.next().await;
        match frame.tag {
            Tag::Stdout => followed.stdout.extend_from_slice(&frame.body),
            Tag::Stderr => followed.stderr.extend_from_slice(&frame.body),
            Tag::Data => panic!("data frame in a follow"),
            Tag::Control => match frame.parse::<Reply>().unwrap() {
                Reply::ProcessEnded { info } => {
                    followed.end = Some(info);
                    return;
                }
                other => panic!("{other:?}"),
            },
        }
    }
}

async fn follow_to_end(agent: &Agent, id: u64, offsets: (u64, u64)) -> Followed {
    let (mut op, mut followed) = open_follow(agent, id, offsets).await;
    read_follow(&mut op, &mut followed, |_| false).await;
    followed
}

/// Writes `data` to the process's stdin (closing it with `close`); the final reply.
async fn write_stdin(agent: &Agent, id: u64, data: &[u8], close: bool) -> Reply {
    agent
        .open(&Request::ProcessStdin { id, close })
        .upload(data)
        .await
}

/// Waits (briefly: dead processes may take a moment to leave /proc) until no process
/// has `marker` in its command line.
async fn assert_gone(marker: &str) {
    for _ in 0..50 {
        if processes_with(marker).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still running: {:?}", processes_with(marker));
}

/// A `sleep` argument unique to this test run.
fn marker(tag: &str) -> String {
    format!("30{tag}.{}", std::process::id())
}

fn error_kind(reply: &Reply) -> ErrorKind {
    match reply {
        Reply::Error { kind, .. } => *kind,
        other => panic!("not an error: {other:?}"),
    }
}

#[tokio::test]
async fn a_process_survives_its_connection_and_a_new_hello() {
    let agent = Agent::start().await;
    let mut op = agent.open(&Start::new("echo first; read x < /dev/null; sleep 30").request());
    let started = match op.final_reply().await {
        Reply::Process { info } => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(started.id, 1);
    assert_eq!(started.status, ProcessStatus::Running);
    assert!(started.pid > 0 && started.started_at > 0 && started.exit_code.is_none());
    // The starting operation goes away (as a client would: a cancel), then a new
    // server connects.
    op.send(&Request::Cancel);
    drop(op);
    agent.hello(100).await;
    wait_output(&agent, started.id, "first\n").await;
    let again = info(&agent, started.id).await;
    assert_eq!(again.status, ProcessStatus::Running);
    assert_eq!(again.stdout_end, 6);
    let Reply::Processes { processes } = call(&agent, &Request::ProcessList).await else {
        panic!()
    };
    assert_eq!(processes.len(), 1);
    assert_eq!(
        call(&agent, &Request::ProcessRemove { id: 1 }).await,
        Reply::Done { stat: None }
    );
}

#[tokio::test]
async fn output_offsets_return_only_new_text() {
    let agent = Agent::start().await;
    let started = Start::new("echo one; echo err >&2; read x; echo two")
        .stdin_open_too()
        .run(&agent)
        .await;
    let first = wait_output(&agent, started.id, "one\n").await;
    assert_eq!(first, "one\n");
    let reply = output(&agent, started.id, 0, 0).await;
    let Reply::ProcessOutput { stderr, status, .. } = &reply else {
        panic!()
    };
    assert_eq!(stderr.data, b"err\n");
    assert_eq!(*status, ProcessStatus::Running);
    write_stdin(&agent, started.id, b"go\n", false).await;
    let ended = wait_end(&agent, started.id).await;
    assert_eq!(ended.exit_code, Some(0));
    assert_eq!(ended.status, ProcessStatus::Exited);
    let (offset, new, end) = stdout_of(&output(&agent, started.id, 4, 4).await);
    assert_eq!((offset, new.as_str(), end), (4, "two\n", 8));
    // Past the end: nothing.
    let (offset, new, _) = stdout_of(&output(&agent, started.id, 50, 0).await);
    assert_eq!((offset, new.as_str()), (50, ""));
}

impl Start {
    fn stdin_open_too(mut self) -> Self {
        self.stdin_open = true;
        self
    }
}

#[tokio::test]
async fn a_follow_misses_nothing_and_repeats_nothing_across_a_reconnect() {
    let agent = Agent::start().await;
    let command = "for i in $(seq 1 60); do echo line $i; echo e$i >&2; sleep 0.01; done";
    let started = Start::new(command).run(&agent).await;
    let (mut op, mut first) = open_follow(&agent, started.id, (0, 0)).await;
    assert_eq!(first.start, (0, 0));
    read_follow(&mut op, &mut first, |f| f.stdout.len() > 40).await;
    // A new connection ends the follow (not the process); a new follow goes on from
    // where the first one got to.
    agent.hello(200).await;
    drop(op);
    let offsets = (first.stdout.len() as u64, first.stderr.len() as u64);
    let rest = follow_to_end(&agent, started.id, offsets).await;
    assert_eq!(rest.start, offsets);
    let mut stdout = first.stdout;
    stdout.extend_from_slice(&rest.stdout);
    let mut stderr = first.stderr;
    stderr.extend_from_slice(&rest.stderr);
    let expected: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    let expected_err: String = (1..=60).map(|i| format!("e{i}\n")).collect();
    assert_eq!(String::from_utf8(stdout).unwrap(), expected);
    assert_eq!(String::from_utf8(stderr).unwrap(), expected_err);
    let end = rest.end.unwrap();
    assert_eq!(
        (end.status, end.exit_code),
        (ProcessStatus::Exited, Some(0))
    );
    assert_eq!(end.stdout_end, expected.len() as u64);
    // A follow of an ended process replays and ends at once.
    let replay = follow_to_end(&agent, started.id, (0, 0)).await;
    assert_eq!(replay.stdout, expected.as_bytes());
}

#[tokio::test]
async fn several_follows_at_once() {
    let agent = Agent::start().await;
    let started = Start::new("sleep 0.3; seq 1 20000").run(&agent).await;
    let follows = (0..3).map(|_| follow_to_end(&agent, started.id, (0, 0)));
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    for followed in futures_util::future::join_all(follows).await {
        assert_eq!(String::from_utf8(followed.stdout).unwrap(), expected);
        assert_eq!(followed.end.unwrap().exit_code, Some(0));
    }
}

#[tokio::test]
async fn a_small_ring_moves_an_old_offset_up() {
    let agent = Agent::start().await;
    let mut start = Start::new("seq 1 1000");
    start.output_bytes = 100;
    let started = start.run(&agent).await;
    let ended = wait_end(&agent, started.id).await;
    let total: u64 = (1..=1000)
        .map(|i: u32| i.to_string().len() as u64 + 1)
        .sum();
    assert_eq!(ended.stdout_end, total);
    let (offset, kept, end) = stdout_of(&output(&agent, started.id, 0, 0).await);
    assert_eq!((offset, end), (total - 100, total));
    assert_eq!(kept.len(), 100);
    assert!(kept.ends_with("999\n1000\n"), "{kept}");
    let followed = follow_to_end(&agent, started.id, (10, 0)).await;
    assert_eq!(followed.start, (total - 100, 0));
    assert_eq!(String::from_utf8(followed.stdout).unwrap(), kept);
}

#[tokio::test]
async fn a_megabyte_through_stdin_arrives_exactly() {
    let agent = Agent::start().await;
    let path = format!("/tmp/repobox-process-stdin-{}", std::process::id());
    let started = Start::new(&format!("cat > {path}"))
        .stdin_open_too()
        .run(&agent)
        .await;
    assert!(started.stdin_open);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        write_stdin(&agent, started.id, &data, true).await,
        Reply::Done { stat: None }
    );
    let ended = wait_end(&agent, started.id).await;
    assert_eq!(ended.exit_code, Some(0));
    assert!(!ended.stdin_open);
    let written = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(written == data, "{} bytes arrived", written.len());
}

#[tokio::test]
async fn stdin_eof_ends_cat_and_an_ended_process_takes_no_stdin() {
    let agent = Agent::start().await;
    let started = Start::new("cat").stdin_open_too().run(&agent).await;
    write_stdin(&agent, started.id, b"hello\n", false).await;
    wait_output(&agent, started.id, "hello\n").await;
    assert!(info(&agent, started.id).await.stdin_open);
    write_stdin(&agent, started.id, b"bye\n", true).await;
    let ended = wait_end(&agent, started.id).await;
    assert_eq!(
        (ended.status, ended.exit_code),
        (ProcessStatus::Exited, Some(0))
    );
    assert_eq!(
        stdout_of(&output(&agent, started.id, 0, 0).await).1,
        "hello\nbye\n"
    );
    let reply = write_stdin(&agent, started.id, b"late\n", false).await;
    assert_eq!(error_kind(&reply), ErrorKind::Conflict);
    // Never open, the same.
    let closed = Start::new("sleep 0.1").run(&agent).await;
    let reply = write_stdin(&agent, closed.id, b"x", false).await;
    assert_eq!(error_kind(&reply), ErrorKind::Conflict);
}

#[tokio::test]
async fn sigterm_kills_with_143_and_takes_background_children() {
    let agent = Agent::start().await;
    let marker = marker("1");
    let started = Start::new(&format!("sleep {marker} & echo up; wait"))
        .run(&agent)
        .await;
    wait_output(&agent, started.id, "up\n").await;
    assert!(!processes_with(&format!("sleep {marker}")).is_empty());
    let reply = call(
        &agent,
        &Request::ProcessSignal {
            id: started.id,
            signal: 15,
        },
    )
    .await;
    assert_eq!(reply, Reply::Done { stat: None });
    let ended = wait_end(&agent, started.id).await;
    assert_eq!(
        (ended.status, ended.exit_code),
        (ProcessStatus::Killed, Some(143))
    );
    assert!(ended.ended_at.unwrap() >= ended.started_at);
    assert_gone(&format!("sleep {marker}")).await;
    // Its own exit code 143 is an exit, not a kill.
    let exited = Start::new("exit 143").run(&agent).await;
    let exited = wait_end(&agent, exited.id).await;
    assert_eq!(
        (exited.status, exited.exit_code),
        (ProcessStatus::Exited, Some(143))
    );
}

#[tokio::test]
async fn a_signal_reaches_processes_that_left_the_group_or_session() {
    a_signal_reaches_escaped_processes_with(&[], "4").await;
}

#[tokio::test]
async fn escaped_processes_end_with_a_signalled_process_without_a_subreaper() {
    a_signal_reaches_escaped_processes_with(&[("REPOBOX_AGENT_NO_SUBREAPER", "1")], "5").await;
}

async fn a_signal_reaches_escaped_processes_with(env: &[(&str, &str)], tag: &str) {
    let agent = Agent::start_with_env(env).await;
    let marker = marker(tag);
    let command = format!(
        "setsid sleep {marker}1 & ( (sleep {marker}2 &) & ); nohup sleep {marker}3 >/dev/null 2>&1 & echo up; wait"
    );
    let started = Start::new(&command).run(&agent).await;
    wait_output(&agent, started.id, "up\n").await;
    let signal = Request::ProcessSignal {
        id: started.id,
        signal: 15,
    };
    assert_eq!(call(&agent, &signal).await, Reply::Done { stat: None });
    let ended = wait_end(&agent, started.id).await;
    assert_eq!(ended.status, ProcessStatus::Killed);
    assert_gone(&marker).await;
    // Signalling an ended process changes nothing.
    assert_eq!(call(&agent, &signal).await, Reply::Done { stat: None });
}

#[tokio::test]
async fn the_timeout_kills_with_124() {
    let agent = Agent::start().await;
    let marker = marker("2");
    let mut start = Start::new(&format!("sleep {marker} & sleep {marker}"));
    start.timeout_ms = Some(300);
    let started = start.run(&agent).await;
    let begun = Instant::now();
    let ended = wait_end(&agent, started.id).await;
    assert!(begun.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (ended.status, ended.exit_code),
        (ProcessStatus::TimedOut, Some(124))
    );
    assert_gone(&format!("sleep {marker}")).await;
}

#[tokio::test]
async fn remove_kills_and_forgets() {
    let agent = Agent::start().await;
    let marker = marker("3");
    let started = Start::new(&format!("sleep {marker} & echo up; wait"))
        .run(&agent)
        .await;
    wait_output(&agent, started.id, "up\n").await;
    let reply = call(&agent, &Request::ProcessRemove { id: started.id }).await;
    assert_eq!(reply, Reply::Done { stat: None });
    assert_gone(&format!("sleep {marker}")).await;
    let reply = call(&agent, &Request::ProcessGet { id: started.id }).await;
    assert_eq!(error_kind(&reply), ErrorKind::NotFound);
    let Reply::Processes { processes } = call(&agent, &Request::ProcessList).await else {
        panic!()
    };
    assert!(processes.is_empty());
    // Ids are never reused.
    assert_eq!(Start::new("true").run(&agent).await.id, started.id + 1);
}

#[tokio::test]
async fn an_unknown_id_is_not_found() {
    let agent = Agent::start().await;
    let requests = [
        Request::ProcessGet { id: 9 },
        Request::ProcessOutput {
            id: 9,
            stdout_offset: 0,
            stderr_offset: 0,
            max_bytes: 10,
        },
        Request::ProcessFollow {
            id: 9,
            stdout_offset: 0,
            stderr_offset: 0,
        },
        Request::ProcessSignal { id: 9, signal: 15 },
        Request::ProcessResize {
            id: 9,
            cols: 1,
            rows: 1,
        },
        Request::ProcessRemove { id: 9 },
    ];
    for request in requests {
        let reply = call(&agent, &request).await;
        assert_eq!(error_kind(&reply), ErrorKind::NotFound, "{request:?}");
    }
    let reply = write_stdin(&agent, 9, b"x", true).await;
    assert_eq!(error_kind(&reply), ErrorKind::NotFound);
}

#[tokio::test]
async fn max_running_refuses_and_list_keeps_order() {
    let agent = Agent::start().await;
    let mut start = Start::new("sleep 30");
    start.max_running = Some(2);
    let first = start.run(&agent).await;
    let second = start.run(&agent).await;
    let reply = call(&agent, &start.request()).await;
    assert_eq!(error_kind(&reply), ErrorKind::Limit);
    call(&agent, &Request::ProcessRemove { id: first.id }).await;
    let third = start.run(&agent).await;
    // A refused start takes no id.
    assert_eq!(third.id, 3);
    let Reply::Processes { processes } = call(&agent, &Request::ProcessList).await else {
        panic!()
    };
    let ids: Vec<u64> = processes.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![second.id, third.id]);
    for id in ids {
        call(&agent, &Request::ProcessRemove { id }).await;
    }
}

#[tokio::test]
async fn only_the_most_recent_ended_ones_are_listed() {
    let agent = Agent::start().await;
    for _ in 0..70 {
        Start::new("true").run(&agent).await;
    }
    wait_end(&agent, 70).await;
    let start = Instant::now();
    loop {
        let Reply::Processes { processes } = call(&agent, &Request::ProcessList).await else {
            panic!()
        };
        let ids: Vec<u64> = processes.iter().map(|p| p.id).collect();
        if ids == (7..=70).collect::<Vec<_>>() {
            break;
        }
        assert!(start.elapsed() < BOUND, "{ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_terminal_shows_its_path_size_and_echo() {
    let agent = Agent::start().await;
    let mut start = Start::new("tty; stty size; read x; stty size; cat");
    start.tty = true;
    start.stdin_open = true;
    let started = start.run(&agent).await;
    assert!(started.tty);
    let shown = wait_output(&agent, started.id, "\n").await;
    assert!(shown.starts_with("/dev/pts/"), "{shown:?}");
    // The default size first.
    wait_output(&agent, started.id, "\r\n24 80\r\n").await;
    let reply = call(
        &agent,
        &Request::ProcessResize {
            id: started.id,
            cols: 123,
            rows: 45,
        },
    )
    .await;
    assert_eq!(reply, Reply::Done { stat: None });
    write_stdin(&agent, started.id, b"go\n", false).await;
    wait_output(&agent, started.id, "45 123\r\n").await;
    write_stdin(&agent, started.id, b"typed\n", false).await;
    // Echoed by the terminal, then again by cat.
    wait_output(&agent, started.id, "typed\r\ntyped\r\n").await;
    // Eof typed on the terminal ends cat.
    write_stdin(&agent, started.id, b"", true).await;
    let ended = wait_end(&agent, started.id).await;
    assert_eq!(ended.exit_code, Some(0));
    let Reply::ProcessOutput { stderr, .. } = output(&agent, started.id, 0, 0).await else {
        panic!()
    };
    assert!(stderr.data.is_empty());
    // No terminal, no resize.
    let plain = Start::new("sleep 0.1").run(&agent).await;
    let reply = call(
        &agent,
        &Request::ProcessResize {
            id: plain.id,
            cols: 1,
            rows: 1,
        },
    )
    .await;
    assert_eq!(error_kind(&reply), ErrorKind::Conflict);
}

#[tokio::test]
async fn cwd_and_env_as_for_exec() {
    let agent = Agent::start().await;
    let mut request = Start::new("pwd; echo $REPOBOX_TEST").request();
    if let Request::ProcessStart { cwd, .. } = &mut request {
        *cwd = "/tmp".to_owned();
    }
    let Reply::Process { info: started } = call(&agent, &request).await else {
        panic!()
    };
    assert_eq!(started.cwd, "/tmp");
    wait_end(&agent, started.id).await;
    assert_eq!(
        stdout_of(&output(&agent, started.id, 0, 0).await).1,
        "/tmp\nyes\n"
    );
    let mut request = Start::new("true").request();
    if let Request::ProcessStart { cwd, .. } = &mut request {
        *cwd = "/nonexistent-dir".to_owned();
    }
    assert_eq!(
        error_kind(&call(&agent, &request).await),
        ErrorKind::NotFound
    );
}
