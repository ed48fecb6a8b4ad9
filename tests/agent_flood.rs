//! The server's memory under a flooding agent, measured: a fake agent that obeys the
//! flow control to the letter but sends 2 GiB of output for a command whose answer is
//! capped at 64 KiB, and fifty such agents at once. The server must read it all (the
//! command runs to its end), keep at most the cap, and stay within its windows: the
//! process's resident memory may grow by 16 MiB at most for one flood.
//!
//! A test binary of its own, so that nothing else runs in the process it measures.

#[path = "../examples/bench/flood.rs"]
mod flood;

use flood::{command, flooding_agent, rss};

const CAP: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_memory_stays_flat_under_output_floods() {
    // Warm up the allocator and the runtime with a small flood first.
    let client = flooding_agent(8 * 1024 * 1024).await;
    repobox::exec::run(&client, command(), CAP).await.unwrap();
    drop(client);
    let before = rss();

    // One flood of 2 GiB.
    let client = flooding_agent(2 << 30).await;
    let started = std::time::Instant::now();
    let result = repobox::exec::run(&client, command(), CAP).await.unwrap();
    let took = started.elapsed();
    assert_eq!(result.stdout.len(), CAP);
    assert!(result.stdout_truncated, "the server flags the cut itself");
    let one = rss().saturating_sub(before);
    println!(
        "one 2 GiB flood: {:.1} s ({:.0} MiB/s), RSS {} MiB -> +{:.1} MiB",
        took.as_secs_f64(),
        2048.0 / took.as_secs_f64(),
        before >> 20,
        one as f64 / (1 << 20) as f64
    );
    assert!(one <= 16 << 20, "RSS grew by {one} bytes under one flood");
    drop(client);

    // Fifty at once, 64 MiB each: at most their windows at a time.
    let before = rss();
    let mut floods = Vec::new();
    for _ in 0..50 {
        floods.push(tokio::spawn(async {
            let client = flooding_agent(64 << 20).await;
            let result = repobox::exec::run(&client, command(), CAP).await.unwrap();
            assert_eq!(result.stdout.len(), CAP);
            rss()
        }));
    }
    let mut peak = 0;
    for flood in floods {
        peak = peak.max(flood.await.unwrap());
    }
    let fifty = peak.saturating_sub(before);
    println!(
        "fifty 64 MiB floods at once: RSS {} MiB -> peak +{:.1} MiB",
        before >> 20,
        fifty as f64 / (1 << 20) as f64
    );
    // Each holds at most a window and a frame; fifty of them with the fake agents'
    // own buffers (which live in this process too) fit well within 50 × 4 MiB.
    assert!(
        fifty <= 200 << 20,
        "RSS grew by {fifty} bytes under fifty floods"
    );
}
