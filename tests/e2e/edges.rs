//! The edges of the service, tried as an attacker would (issue #26): each attack
//! either fails with the right 4xx or changes nothing.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support;

/// Half-open connections the slow-loris holds: more than the server's open-file limit.
const LORIS_SOCKETS: usize = 1100;
/// The server's open-file limit in the load test (a common default).
const SERVER_NOFILE: u64 = 1024;

/// Raises this process's soft open-file limit to its hard limit when it is below
/// `needed` (through `prlimit`: the crate forbids `unsafe`, so no `setrlimit`).
fn raise_nofile(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft: u64 = fields.next().unwrap().parse().unwrap();
    let hard = fields.next().unwrap().to_owned();
    if soft >= needed {
        return;
    }
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("prlimit");
    assert!(status.success(), "could not raise the open-file limit");
}

/// One slow-loris socket, reconnected whenever the server closes it, until `until`.
/// Returns how many times the server closed it.
async fn loris(port: u16, until: Instant) -> usize {
    let mut closed = 0;
    while Instant::now() < until {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if stream
            .write_all(b"GET /api/v1/containers HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            closed += 1;
            continue;
        }
        // Never finish the request; wait for the server to give up on it.
        let mut buf = [0u8; 256];
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(_) => closed += 1,
            Err(_) => return closed,
        }
    }
    closed
}

/// The load test: 1,100 half-open connections (more than the server's 1,024 open
/// files), re-opened as soon as the server closes them, while a keyed client's
/// requests keep answering within a second. Loopback only, bounded in time.
#[tokio::test]
async fn a_slow_loris_cannot_lock_out_a_keyed_client() {
    raise_nofile(LORIS_SOCKETS as u64 * 2 + 256);
    let dir = support::scratch();
    let port = support::free_port();
    let nofile = format!("--nofile={SERVER_NOFILE}:{SERVER_NOFILE}");
    let _server = support::start_binary_under(
        &["prlimit", &nofile, "--"],
        dir.path(),
        port,
        &[("API_KEYS", "edge-key".to_owned())],
    );
    let app = support::TestApp::at(format!("http://127.0.0.1:{port}"));
    app.wait_live().await;

    let until = Instant::now() + Duration::from_secs(15);
    let lorises: Vec<_> = (0..LORIS_SOCKETS)
        .map(|_| tokio::spawn(loris(port, until)))
        .collect();
    // Let the sockets pile up first.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let response = client
            .get(format!("http://127.0.0.1:{port}/api/v1/containers"))
            .bearer_auth("edge-key")
            .send()
            .await
            .expect("the keyed client was locked out");
        assert_eq!(response.status(), 200);
        eprintln!("keyed request: {:?}", started.elapsed());
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a keyed request took {slowest:?} under the slow-loris"
    );
    let mut closed = 0;
    for loris in lorises {
        closed += loris.await.unwrap();
    }
    // The server shed half-open connections instead of holding them all.
    assert!(closed > 0, "the server closed no half-open connection");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(
        !log.contains("accepting a connection failed"),
        "the server ran out of descriptors:\n{log}"
    );
}
