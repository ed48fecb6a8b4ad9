//! `make bench`: what repobox costs on top of the Docker Engine API, in one run.
//!
//! Starts the fixture git server and the release build of repobox (a child process
//! with its own `DATA_DIR`/`CACHE_DIR` in a temporary directory), then measures each
//! figure of issue #6 twice — through repobox's HTTP API, and directly against the
//! engine over the same socket with the same image (the *floor*) — interleaving the
//! two sample by sample so that machine noise hits both alike. Prints a table
//! (figure, repobox, floor, ratio, target, met) and writes it as JSON to
//! `target/bench/latest.json`; repobox's log goes to `target/bench/repobox.log`.
//!
//! Every container it makes is removed at the end, also on Ctrl-C or SIGTERM: floor
//! containers by their `repobox.bench.run` label, repobox's sandboxes by its instance
//! label or the run token in their repository URL. A later run also removes what a
//! killed (SIGKILL) run left. It never fails on a number: the exit status is non-zero
//! only when the benchmark itself could not run.
//!
//! `bench --quick` runs every figure with a handful of samples (a smoke test of the
//! benchmark, not a measurement), `--only GROUP,…` a subset of the figures, and
//! `--serve` sets everything up and waits, for profiling repobox by hand (`--help`).
//! See docs/PERFORMANCE.md.

#[path = "bench/engine.rs"]
mod engine;
#[expect(
    dead_code,
    reason = "the e2e fixtures record commits the benchmark does not need"
)]
#[path = "../tests/e2e/support/fixtures.rs"]
mod fixtures;
#[path = "bench/flood.rs"]
mod flood;
#[path = "../tests/e2e/support/git_server.rs"]
mod git_server;
#[path = "bench/kube.rs"]
mod kube;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/server.rs"]
mod server;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use tokio::process::Child;
use tokio::sync::Mutex;

use engine::{Engine, Limits};
use git_server::GitServer;
use report::{Report, Row, Samples, Target, latency_rows};
use server::{Api, WORKSPACE};

/// The first command of a new sandbox: cheap, and proves the checkout and its
/// `.git` are there.
const FIRST_COMMAND: &str = "git rev-parse HEAD";
/// Size of the output of the streaming figure.
const STREAM_BYTES: u64 = 50 * 1024 * 1024;
/// Size of the file of the read figure.
const BIG_FILE_BYTES: u64 = 1024 * 1024;
/// Where that file goes.
const BIG_FILE: &str = "/workspace/big.txt";
/// Section titles.
const FIGURES: &str = "Figures (issue #6)";
const SCALING: &str = "How cost grows (repository size, sandboxes alive)";
const KUBERNETES: &str =
    "Kubernetes: repobox with BACKEND=kubernetes against the raw Kubernetes API (same API server)";

const USAGE: &str = "usage: bench [--quick] [--only GROUP[,GROUP...]] [--serve]

Measures repobox against the raw Docker Engine API (see docs/PERFORMANCE.md).
  --quick   a few samples of everything: checks the benchmark, measures nothing
  --only    run only these groups of figures: exec (1), create (2, 3, 7 and the
            size table), pool (10), throughput (4), stream (5, 8 streaming), files (6),
            alive (8 with 100 sandboxes, exec latency by sandboxes alive),
            flood (14: the server's agent client against fake agents that send
            all the output the flow control allows), kube (K: the Kubernetes
            backend against the raw Kubernetes API, on the cluster of
            REPOBOX_BENCH_KUBECONFIG, default the test cluster's; `make bench`
            brings that up)
  --serve   set up (fixtures, git server, repobox) and wait for Ctrl-C instead of
            measuring: for profiling repobox by hand; cleans up as usual
A full run writes target/bench/latest.json; --quick and --only write
target/bench/partial.json.
Environment: REPOBOX_BIN (default: target/release/repobox beside this binary),
DOCKER_HOST and the sandbox settings repobox reads (DOCKER_BASE_IMAGE, DEFAULT_CPUS, ...).";

/// Groups of figures, in the order they run (streaming last: its sync part leaves
/// repobox's heap larger, which would inflate the later RSS figures).
const PHASES: [&str; 10] = [
    "exec",
    "create",
    "pool",
    "jobs",
    "throughput",
    "files",
    "alive",
    "stream",
    "flood",
    "kube",
];

/// How many samples of what. The full plan keeps a run near 7 minutes on 2 cores.
#[derive(Debug, Clone, serde::Serialize)]
struct Plan {
    quick: bool,
    /// Groups of figures to run; empty: all.
    only: Vec<String>,
    /// Set up, then wait instead of measuring.
    serve: bool,
    exec_warmup: usize,
    exec_samples: usize,
    small_warm: usize,
    small_cold: usize,
    large_warm: usize,
    large_cold: usize,
    size_warm: usize,
    pool_warm: usize,
    pool_off: usize,
    pool_burst: usize,
    throughput_levels: Vec<usize>,
    throughput_sandboxes: usize,
    throughput_secs: f64,
    throughput_rounds: usize,
    file_samples: usize,
    alive: Vec<usize>,
    alive_samples: usize,
    stream_samples: usize,
    job_entries: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            quick: false,
            only: Vec::new(),
            serve: false,
            exec_warmup: 10,
            exec_samples: 200,
            small_warm: 20,
            small_cold: 10,
            large_warm: 5,
            large_cold: 3,
            size_warm: 4,
            pool_warm: 20,
            pool_off: 10,
            pool_burst: 20,
            throughput_levels: vec![1, 8, 32],
            throughput_sandboxes: 8,
            throughput_secs: 3.0,
            throughput_rounds: 2,
            file_samples: 50,
            alive: vec![1, 50, 100],
            alive_samples: 40,
            stream_samples: 9,
            job_entries: 100,
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            only: Vec::new(),
            serve: false,
            exec_warmup: 2,
            exec_samples: 20,
            small_warm: 3,
            small_cold: 2,
            large_warm: 1,
            large_cold: 1,
            size_warm: 1,
            pool_warm: 3,
            pool_off: 2,
            pool_burst: 20,
            throughput_levels: vec![1, 8, 32],
            throughput_sandboxes: 8,
            throughput_secs: 1.0,
            throughput_rounds: 1,
            file_samples: 5,
            alive: vec![1, 10, 20],
            alive_samples: 5,
            stream_samples: 1,
            job_entries: 8,
        }
    }
}

/// A fixture repository: served by the git server, and checked out once on this
/// side for the floor's uploads.
#[derive(Debug, Clone)]
struct Repo {
    /// Name on the git server (`<name>.git`).
    name: String,
    /// For the table: `simple` or `5,000 files / 50 MB`.
    label: String,
    /// The floor's checkout (with `.git`).
    checkout: PathBuf,
    /// Head of the default branch: what `git rev-parse HEAD` must print.
    head: String,
}

/// Everything the figures share.
struct Ctx {
    plan: Plan,
    api: Api,
    engine: Engine,
    git: GitServer,
    run: String,
    instance: String,
    pid: u32,
    repos: Vec<Repo>,
    report: Report,
}

impl Ctx {
    fn repo(&self, name: &str) -> &Repo {
        self.repos
            .iter()
            .find(|repo| repo.name == name)
            .expect("fixture repository")
    }

    /// A URL of `repo` that repobox has fetched (or will fetch) before: the warm cache.
    fn warm_url(&self, repo: &str) -> String {
        self.git.url(&format!("{}-warm", self.run), repo)
    }

    /// A URL of `repo` repobox has never seen: the git server ignores the prefix, so
    /// a new prefix is a cold mirror.
    fn cold_url(&self, repo: &str, sample: usize) -> String {
        self.git
            .url(&format!("{}-cold-{repo}-{sample}", self.run), repo)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut plan = Plan::full();
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--serve" => plan.serve = true,
            "--only" => only.extend(
                args.next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned),
            ),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => match other.strip_prefix("--only=") {
                Some(list) => only.extend(list.split(',').map(str::to_owned)),
                None => {
                    eprintln!("bench: unknown argument {other:?} (try --help)");
                    return ExitCode::from(2);
                }
            },
        }
    }
    if let Some(unknown) = only.iter().find(|key| !PHASES.contains(&key.as_str())) {
        eprintln!(
            "bench: unknown figure group {unknown:?}; known: {}",
            PHASES.join(", ")
        );
        return ExitCode::from(2);
    }
    plan.only = only;
    match run(plan).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up what must be cleaned up, runs the figures in a task of their own, and
/// cleans up however that task ends (done, failed, panicked, or interrupted).
async fn run(plan: Plan) -> Result<()> {
    let interrupted = interrupted()?;
    let paths = Paths::find()?;
    std::fs::create_dir_all(&paths.out)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let run = format!("rbbench-{}-{:x}", std::process::id(), nanos % (1 << 40));
    // repobox reads its instance id from DATA_DIR/instance-id when it is there.
    let instance = format!("{:016x}", (nanos as u64) ^ u64::from(std::process::id()));

    // The sandbox settings repobox will use (same environment, same defaults).
    let defaults = repobox::config::Config::defaults();
    let limits = Limits {
        image: defaults.docker_base_image.clone(),
        cpus: defaults.default_cpus,
        memory_mb: defaults.default_memory_mb,
        pids: defaults.default_pids,
        runtime: defaults.docker_runtime.clone(),
    };
    let engine = Engine::connect(&defaults.docker_host, limits, &run).await?;
    let stale = engine.sweep(&instance, true).await?;
    if stale > 0 {
        eprintln!("bench: removed {stale} containers left by an earlier, killed run");
    }

    let root = tempfile::Builder::new()
        .prefix("repobox-bench-")
        .tempdir()
        .context("making a temporary directory")?;
    let child: Arc<Mutex<Option<Child>>> = Arc::default();
    let mut work = tokio::spawn(Box::pin(bench(
        plan,
        paths.clone(),
        root.path().to_owned(),
        run,
        instance.clone(),
        engine.clone(),
        child.clone(),
    )));
    tokio::pin!(interrupted);
    let outcome = tokio::select! {
        joined = &mut work => match joined {
            Ok(result) => result,
            Err(err) if err.is_panic() => Err(anyhow::anyhow!("the benchmark panicked")),
            Err(err) => Err(err.into()),
        },
        signal = &mut interrupted => {
            eprintln!("\nbench: {signal}: stopping, removing every container this run made");
            // Dropping a JoinHandle would leave the task running: abort it, and wait
            // until it is gone so that it starts nothing more.
            work.abort();
            let _ = (&mut work).await;
            Err(anyhow::anyhow!("interrupted by {signal}"))
        }
    };

    // Stop repobox first, so that nothing makes new containers while we sweep; then
    // sweep twice: a create the engine was still working on shows up a moment later.
    if let Some(mut child) = child.lock().await.take() {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    let mut removed = engine.sweep(&instance, false).await.unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    removed += engine.sweep(&instance, false).await.unwrap_or(0);
    if removed > 0 {
        eprintln!("bench: cleanup removed {removed} containers");
    }
    drop(root);

    let report = outcome?;
    print!("{}", report.render());
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM, with the signal's name. Installed before
/// anything is started, so that no signal kills the process before cleanup.
fn interrupted() -> Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

/// Where things are.
#[derive(Debug, Clone)]
struct Paths {
    /// The repobox binary.
    repobox: PathBuf,
    /// `target/bench`.
    out: PathBuf,
}

impl Paths {
    fn find() -> Result<Self> {
        // This binary is target/<profile>/examples/bench.
        let exe = std::env::current_exe()?;
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .context("cannot place this binary in a target directory")?;
        let repobox =
            std::env::var_os("REPOBOX_BIN").map_or_else(|| profile.join("repobox"), PathBuf::from);
        ensure!(
            repobox.is_file(),
            "{} is missing: build it first (`make bench` does: cargo build --release --bins --examples)",
            repobox.display()
        );
        let target = profile.parent().unwrap_or(profile);
        Ok(Self {
            repobox,
            out: target.join("bench"),
        })
    }
}

/// The whole run, from fixtures to report.
async fn bench(
    plan: Plan,
    paths: Paths,
    root: PathBuf,
    run: String,
    instance: String,
    engine: Engine,
    child_slot: Arc<Mutex<Option<Child>>>,
) -> Result<Report> {
    let started = Instant::now();
    eprintln!("bench: making fixture repositories in {}", root.display());
    let repos_dir = root.join("repos");
    let checkouts = root.join("checkouts");
    let repos = {
        let (repos_dir, checkouts) = (repos_dir.clone(), checkouts.clone());
        let generated =
            plan.serve || plan.only.is_empty() || plan.only.iter().any(|only| only == "create");
        tokio::task::spawn_blocking(move || make_fixtures(&repos_dir, &checkouts, generated))
            .await??
    };
    let git = GitServer::start(repos_dir).await;

    let data = root.join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("instance-id"), &instance)?;
    let port = server::free_port()?;
    let log = paths.out.join("repobox.log");
    let _ = std::fs::remove_file(&log);
    let child = server::spawn(&paths.repobox, &root, port, &log)?;
    let pid = child.id().context("repobox exited at once")?;
    *child_slot.lock().await = Some(child);
    let api = Api::new(format!("http://127.0.0.1:{port}"))?;
    api.wait_ready(Duration::from_secs(60))
        .await
        .with_context(|| format!("see {}", log.display()))?;
    let health = api.health().await?;
    eprintln!(
        "bench: repobox {} ({}) pid {pid} on port {port}; engine {}",
        health["version"].as_str().unwrap_or("?"),
        paths.repobox.display(),
        engine.version().await?,
    );

    if plan.serve {
        println!(
            "repobox: http://127.0.0.1:{port} (pid {pid}, log {})",
            log.display()
        );
        for repo in &repos {
            println!(
                "{} ({}): {} (any other first path segment is a cold mirror)",
                repo.name,
                repo.label,
                git.url(&format!("{run}-warm"), &repo.name)
            );
        }
        println!("floor checkouts: {}", checkouts.display());
        println!("waiting; Ctrl-C removes every container of this run and stops repobox");
        std::future::pending::<()>().await;
    }
    let mut ctx = Ctx {
        plan,
        api,
        engine,
        git,
        run,
        instance,
        pid,
        repos,
        report: Report::default(),
    };

    // Figure 8, idle: right after start, before any sandbox exists.
    let idle = server::memory(pid)?;
    ctx.report.add(
        FIGURES,
        [Row::new(
            "8 repobox RSS, idle",
            "MiB",
            1,
            idle.rss,
            None,
            Some(Target::AtMost(30.0)),
        )],
    );

    // One sandbox and one floor container serve figures 1, 5, 6 and the exec scaling.
    eprintln!("bench: first sandbox (this also fills the warm mirror of `simple`)");
    let simple = ctx.repo("simple").clone();
    let sandbox = ctx.api.create(&ctx.warm_url("simple")).await?;
    let floor = ctx.engine.create_started().await?;
    ctx.engine
        .upload(&floor, tar_of(&simple.checkout).await?)
        .await?;
    match ctx.engine.drift(&sandbox, &ctx.instance, &floor).await {
        Ok(drift) if drift.is_empty() => {}
        Ok(drift) => ctx.report.note(format!(
            "floor containers are configured unlike repobox's sandboxes: {}",
            drift.join("; ")
        )),
        Err(err) => ctx
            .report
            .note(format!("could not compare configurations: {err:#}")),
    }

    let phases: [(&str, Phase); 10] = [
        ("1 exec round trip", |ctx, s, f| {
            Box::pin(exec_latency(ctx, s, f))
        }),
        ("2, 3, 7 create and destroy", |ctx, _, _| {
            Box::pin(creates(ctx))
        }),
        ("10 the warm pool", |ctx, _, _| Box::pin(pool(ctx))),
        ("13 jobs", |ctx, _, _| Box::pin(jobs(ctx))),
        ("4 exec throughput", |ctx, s, _| {
            Box::pin(throughput(ctx, s))
        }),
        ("6 browse and read", |ctx, s, f| Box::pin(files(ctx, s, f))),
        ("8 sandboxes alive", |ctx, s, f| Box::pin(alive(ctx, s, f))),
        ("5 streaming", |ctx, s, f| Box::pin(streaming(ctx, s, f))),
        ("14 a flooding agent", |ctx, _, _| Box::pin(flooding(ctx))),
        ("K the Kubernetes backend", |ctx, _, _| {
            Box::pin(kubernetes(ctx))
        }),
    ];
    for (key, (name, phase)) in PHASES.into_iter().zip(phases) {
        if !ctx.plan.only.is_empty() && !ctx.plan.only.iter().any(|only| only == key) {
            continue;
        }
        let at = Instant::now();
        eprintln!("bench: [{name}]");
        if let Err(err) = phase(&mut ctx, &sandbox, &floor).await {
            ctx.report.note(format!("{name}: failed: {err:#}"));
        }
        eprintln!("bench: [{name}] took {:.0} s", at.elapsed().as_secs_f64());
    }
    let end = server::memory(pid)?;
    ctx.report.add(
        FIGURES,
        [Row::new(
            "8 repobox RSS peak over the whole run (VmHWM)",
            "MiB",
            1,
            end.hwm,
            None,
            None,
        )],
    );
    let _ = ctx.api.destroy(&sandbox).await;
    let _ = ctx.engine.remove(&floor).await;

    // Rows were added in the order the phases ran; the table goes by figure number.
    for section in &mut ctx.report.sections {
        section.rows.sort_by_key(|row| {
            let number = row.figure.split(' ').next().unwrap_or("");
            (number.parse::<u32>().unwrap_or(u32::MAX), number.to_owned())
        });
    }
    let took = started.elapsed().as_secs_f64();
    ctx.report.note(format!(
        "whole run: {took:.0} s (plan: {})",
        if ctx.plan.quick { "quick" } else { "full" }
    ));
    let partial = ctx.plan.quick || !ctx.plan.only.is_empty();
    let json = paths.out.join(if partial {
        "partial.json"
    } else {
        "latest.json"
    });
    write_json(&ctx, &json, took, &health).await?;
    ctx.report.note(format!("JSON: {}", json.display()));
    Ok(ctx.report)
}

/// One phase of the run: the shared state, the sandbox and the floor container.
type Phase = for<'a> fn(
    &'a mut Ctx,
    &'a str,
    &'a str,
) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Makes the fixture repositories and the floor's checkouts of them; the generated
/// ones only when `generated` (the create figures are the only ones that use them).
fn make_fixtures(repos_dir: &Path, checkouts: &Path, generated: bool) -> Result<Vec<Repo>> {
    std::fs::create_dir_all(repos_dir)?;
    std::fs::create_dir_all(checkouts)?;
    fixtures::simple(repos_dir);
    let mut repos = vec![("simple".to_owned(), "simple fixture".to_owned())];
    let sizes: &[(usize, usize)] = if generated {
        &[(500, 5), (2_000, 20), (5_000, 50)]
    } else {
        &[]
    };
    for &(files, megabytes) in sizes {
        let name = format!("gen{files}");
        fixtures::generated(repos_dir, &name, files, megabytes * 1_000_000);
        repos.push((name, format!("{files} files / {megabytes} MB")));
    }
    repos
        .into_iter()
        .map(|(name, label)| {
            let checkout = checkouts.join(&name);
            let bare = repos_dir.join(format!("{name}.git"));
            // `--no-local`: objects travel as one pack, as in repobox's mirror (fetched
            // over HTTP). A local clone would hard-link the fixture's thousands of
            // loose objects, and the floor would upload and unpack twice the files.
            git(&[
                "clone",
                "-q",
                "--no-local",
                path_str(&bare)?,
                path_str(&checkout)?,
            ])?;
            let head = git(&["-C", path_str(&checkout)?, "rev-parse", "HEAD"])?;
            Ok(Repo {
                name,
                label,
                checkout,
                head,
            })
        })
        .collect()
}

fn git(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("git").args(args).output()?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 temporary path")
}

/// A tar of `dir` named `workspace` (unpacked at `/`, it is `/workspace`), made on
/// a blocking thread. Owner root, as repobox packs it (git refuses a repository
/// owned by someone else).
async fn tar_of(dir: &Path) -> Result<Bytes> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        builder.append_dir_all("workspace", &dir)?;
        Ok(Bytes::from(builder.into_inner()?))
    })
    .await?
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Runs one repobox sample and one floor sample, alternating which goes first.
async fn both<A, B>(
    i: usize,
    repobox: impl Future<Output = A>,
    floor: impl Future<Output = B>,
) -> (A, B) {
    if i.is_multiple_of(2) {
        let a = repobox.await;
        (a, floor.await)
    } else {
        let b = floor.await;
        (repobox.await, b)
    }
}

/// `/execute` of `command`; must exit 0. Returns the round trip in ms.
async fn repobox_exec(api: &Api, id: &str, command: &str) -> Result<f64> {
    let at = Instant::now();
    let result = api.exec(id, command).await?;
    let took = ms(at);
    ensure!(result["exit_code"] == 0, "{command:?} failed: {result}");
    Ok(took)
}

/// The same through the engine: `bash -c command` in /workspace, as repobox runs it.
async fn floor_exec(engine: &Engine, id: &str, command: &str) -> Result<f64> {
    let at = Instant::now();
    let ran = engine
        .exec(id, &["/bin/bash", "-c", command], &[], WORKSPACE)
        .await?;
    let took = ms(at);
    ensure!(
        ran.exit_code == 0,
        "{command:?} failed with {}",
        ran.exit_code
    );
    Ok(took)
}

/// Figure 1: sequential round trips of `true`.
async fn exec_latency(ctx: &mut Ctx, sandbox: &str, floor: &str) -> Result<()> {
    let (api, engine) = (&ctx.api, &ctx.engine);
    for _ in 0..ctx.plan.exec_warmup {
        repobox_exec(api, sandbox, "true").await?;
        floor_exec(engine, floor, "true").await?;
    }
    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    let cpu = server::cpu(ctx.pid)?;
    for i in 0..ctx.plan.exec_samples {
        let (a, b) = both(
            i,
            repobox_exec(api, sandbox, "true"),
            floor_exec(engine, floor, "true"),
        )
        .await;
        ours.push(a?);
        theirs.push(b?);
    }
    let cpu = server::cpu(ctx.pid)? - cpu;
    let mut rows = latency_rows(
        "1 exec `true` round trip",
        &ours,
        &theirs,
        Some(Target::AtMost(3.0)),
    );
    rows.push(Row::new(
        "1 repobox CPU per exec (user + system, /proc/<pid>/stat)",
        "ms",
        ours.len(),
        cpu.own / ours.len() as f64,
        None,
        Some(Target::AtMost(0.3)),
    ));
    ctx.report.add(FIGURES, rows);
    Ok(())
}

/// Creates a sandbox and runs the first command; returns the time to a successful
/// first command, and the sandbox id.
async fn repobox_create(api: &Api, url: &str, head: &str) -> Result<(f64, String)> {
    let at = Instant::now();
    let id = api.create(url).await?;
    let result = api.exec(&id, FIRST_COMMAND).await?;
    let took = ms(at);
    ensure!(
        result["exit_code"] == 0 && result["stdout"].as_str().map(str::trim) == Some(head),
        "the first command in a new sandbox failed: {result}"
    );
    Ok((took, id))
}

/// The floor of a create: container create + start while the checkout is packed,
/// upload of the tar (with `.git`), the same first command.
async fn floor_create(engine: &Engine, checkout: &Path, head: &str) -> Result<(f64, String)> {
    let at = Instant::now();
    let (tar, id) = tokio::join!(tar_of(checkout), engine.create_started());
    let id = id?;
    engine.upload(&id, tar?).await?;
    let ran = engine
        .exec(&id, &["/bin/bash", "-c", FIRST_COMMAND], &[], WORKSPACE)
        .await?;
    let took = ms(at);
    ensure!(
        ran.exit_code == 0 && String::from_utf8_lossy(&ran.stdout).trim() == head,
        "the first command in a floor container failed ({})",
        ran.exit_code
    );
    Ok((took, id))
}

async fn repobox_destroy(api: &Api, id: &str) -> Result<f64> {
    let at = Instant::now();
    api.destroy(id).await?;
    Ok(ms(at))
}

async fn floor_destroy(engine: &Engine, id: &str) -> Result<f64> {
    let at = Instant::now();
    engine.remove(id).await?;
    Ok(ms(at))
}

/// Sandboxes and floor containers made by create figures. They are destroyed only
/// once the creates are done: on this machine's ext4, creating thousands of files
/// shortly after deleting thousands is several times slower (the inode allocator
/// skips recently deleted inodes; see docs/PERFORMANCE.md), so destroys between
/// samples would make each create pay for the previous sample's destroy.
#[derive(Default)]
struct Made {
    repobox: Vec<String>,
    floor: Vec<String>,
}

/// Create samples of one repository (repobox and floor interleaved).
struct CreateRun {
    create: (Samples, Samples),
    /// Mean server-side git time per create (fetch + local clone + checkout, or the
    /// lookup of a kept tar), from repobox's `clone_duration_seconds` histogram.
    git_ms: f64,
    /// CPU per create: repobox's own, and its git processes'.
    cpu: server::Cpu,
}

async fn create_run(
    ctx: &Ctx,
    repo: &Repo,
    samples: usize,
    url: impl Fn(usize) -> String,
    made: &mut Made,
) -> Result<CreateRun> {
    let metric = "repobox_clone_duration_seconds";
    let (sum0, count0) = ctx.api.histogram(metric).await?;
    let cpu = server::cpu(ctx.pid)?;
    let mut run = CreateRun {
        create: (Samples::new(), Samples::new()),
        git_ms: f64::NAN,
        cpu: server::Cpu::default(),
    };
    for i in 0..samples {
        let (a, b) = both(
            i,
            repobox_create(&ctx.api, &url(i), &repo.head),
            floor_create(&ctx.engine, &repo.checkout, &repo.head),
        )
        .await;
        // Record what was made before looking at failures, so that it is removed.
        if let Ok((_, id)) = &a {
            made.repobox.push(id.clone());
        }
        if let Ok((_, id)) = &b {
            made.floor.push(id.clone());
        }
        run.create.0.push(a?.0);
        run.create.1.push(b?.0);
    }
    let cpu = server::cpu(ctx.pid)? - cpu;
    let per = samples.max(1) as f64;
    run.cpu = server::Cpu {
        own: cpu.own / per,
        children: cpu.children / per,
    };
    let (sum1, count1) = ctx.api.histogram(metric).await?;
    if count1 > count0 {
        run.git_ms = (sum1 - sum0) / (count1 - count0) * 1e3;
    }
    Ok(run)
}

/// Destroys what `made` holds, pair by pair (interleaved); returns the times.
async fn destroy_run(ctx: &Ctx, made: &mut Made) -> Result<(Samples, Samples)> {
    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    let mut i = 0;
    while let (Some(a), Some(b)) = (made.repobox.pop(), made.floor.pop()) {
        let (x, y) = both(
            i,
            repobox_destroy(&ctx.api, &a),
            floor_destroy(&ctx.engine, &b),
        )
        .await;
        ours.push(x?);
        theirs.push(y?);
        i += 1;
    }
    Ok((ours, theirs))
}

/// Removes what `made` holds, untimed.
async fn remove_all(ctx: &Ctx, made: Made) {
    let api = &ctx.api;
    let engine = &ctx.engine;
    futures_util::stream::iter(made.repobox)
        .map(|id| async move {
            let _ = api.destroy(&id).await;
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    futures_util::stream::iter(made.floor)
        .map(|id| async move {
            let _ = engine.remove(&id).await;
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

/// Where a create's time and CPU went, on repobox's side.
fn create_note(figure: &str, repo: &Repo, cache: &str, run: &CreateRun) -> String {
    format!(
        "{figure}: {}, {cache} cache: repobox's git work (fetch, then a kept tar or a local clone and checkout; overlaps the container's create and start) took {:.0} ms of the {:.0} ms p50; CPU per create: repobox {:.0} ms, its git processes {:.0} ms",
        repo.label,
        run.git_ms,
        run.create.0.p50(),
        run.cpu.own,
        run.cpu.children
    )
}

/// One untimed create on each side: fills repobox's mirror and checkout cache (for
/// the warm URL) and the page cache (for both).
async fn warm_up(ctx: &Ctx, repo: &Repo, made: &mut Made) -> Result<()> {
    let (_, ours) = repobox_create(&ctx.api, &ctx.warm_url(&repo.name), &repo.head).await?;
    made.repobox.push(ours);
    let (_, theirs) = floor_create(&ctx.engine, &repo.checkout, &repo.head).await?;
    made.floor.push(theirs);
    Ok(())
}

/// Figures 2, 3 and 7, and the repository-size scaling table.
async fn creates(ctx: &mut Ctx) -> Result<()> {
    let mut small = Made::default();
    let mut large = Made::default();
    let mut other = Made::default();
    let result = create_figures(ctx, &mut small, &mut large, &mut other).await;
    let destroyed = async {
        result.as_ref().map_err(|err| anyhow::anyhow!("{err:#}"))?;
        let simple = destroy_run(ctx, &mut small).await?;
        let big = destroy_run(ctx, &mut large).await?;
        Ok::<_, anyhow::Error>((simple, big))
    }
    .await;
    for made in [small, large, other] {
        remove_all(ctx, made).await;
    }
    result?;
    let (simple, big) = destroyed?;
    let mut rows = latency_rows("7 destroy, simple sandbox", &simple.0, &simple.1, None);
    rows.extend(latency_rows(
        &format!("7 destroy, {} sandbox", ctx.repo("gen5000").label),
        &big.0,
        &big.1,
        None,
    ));
    ctx.report.add(FIGURES, rows);
    Ok(())
}

async fn create_figures(
    ctx: &mut Ctx,
    small: &mut Made,
    large: &mut Made,
    other: &mut Made,
) -> Result<()> {
    let plan = ctx.plan.clone();
    let simple = ctx.repo("simple").clone();
    let big = ctx.repo("gen5000").clone();
    let sizes = [ctx.repo("gen500").clone(), ctx.repo("gen2000").clone()];
    for repo in sizes.iter().chain([&big]) {
        warm_up(ctx, repo, other).await?;
    }

    let warm = create_run(
        ctx,
        &simple,
        plan.small_warm,
        |_| ctx.warm_url("simple"),
        small,
    )
    .await?;
    let cold = create_run(
        ctx,
        &simple,
        plan.small_cold,
        |i| ctx.cold_url("simple", i),
        small,
    )
    .await?;
    let mut rows = latency_rows(
        "2 create -> first command, simple, warm cache",
        &warm.create.0,
        &warm.create.1,
        Some(Target::RatioAtMost(1.5)),
    );
    rows.extend(latency_rows(
        "2 create -> first command, simple, cold cache",
        &cold.create.0,
        &cold.create.1,
        None,
    ));
    ctx.report.add(FIGURES, rows);
    ctx.report.note(create_note("2", &simple, "warm", &warm));
    ctx.report.note(create_note("2", &simple, "cold", &cold));

    // Scaling with repository size: warm creates of the two smaller generated
    // repositories, beside the 5,000-file figure.
    let mut size_rows = Vec::new();
    for repo in &sizes {
        let run = create_run(
            ctx,
            repo,
            plan.size_warm,
            |_| ctx.warm_url(&repo.name),
            other,
        )
        .await?;
        size_rows.push(Row::new(
            format!("size: warm create, {}, p50", repo.label),
            "ms",
            run.create.0.len(),
            run.create.0.p50(),
            Some(run.create.1.p50()),
            Some(Target::RatioAtMost(1.5)),
        ));
        ctx.report.note(create_note("size", repo, "warm", &run));
    }

    let big_warm = create_run(
        ctx,
        &big,
        plan.large_warm,
        |_| ctx.warm_url(&big.name),
        large,
    )
    .await?;
    let big_cold = create_run(
        ctx,
        &big,
        plan.large_cold,
        |i| ctx.cold_url(&big.name, i),
        large,
    )
    .await?;
    let mut rows = latency_rows(
        &format!("3 create -> first command, {}, warm cache", big.label),
        &big_warm.create.0,
        &big_warm.create.1,
        Some(Target::RatioAtMost(1.5)),
    );
    rows.extend(latency_rows(
        &format!("3 create -> first command, {}, cold cache", big.label),
        &big_cold.create.0,
        &big_cold.create.1,
        None,
    ));
    ctx.report.add(FIGURES, rows);
    ctx.report
        .add(FIGURES, reset_rows(ctx, &big, large, &big_warm).await?);
    ctx.report
        .add(FIGURES, snapshot_rows(ctx, &big, large, &big_warm).await?);
    ctx.report.note(create_note("3", &big, "warm", &big_warm));
    ctx.report.note(create_note("3", &big, "cold", &big_cold));
    size_rows.push(Row::new(
        format!("size: warm create, {}, p50", big.label),
        "ms",
        big_warm.create.0.len(),
        big_warm.create.0.p50(),
        Some(big_warm.create.1.p50()),
        Some(Target::RatioAtMost(1.5)),
    ));
    ctx.report.add(SCALING, size_rows);
    Ok(())
}

/// The base image under a second name: an image the pool does not keep, so that a
/// create of it takes the ordinary path (pool off) with the same layers.
const UNPOOLED_TAG: &str = "repobox/sandbox:bench-unpooled";

/// Figure 10: creates served by the warm pool, creates it cannot serve, and a burst.
async fn pool(ctx: &mut Ctx) -> Result<()> {
    let size = ctx.api.wait_pool_full(Duration::from_secs(120)).await?;
    ensure!(size > 0, "repobox runs without a pool (POOL_SIZE=0)");
    let base = ctx.api.info().await?["docker_base_image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ctx.engine.tag(&base, UNPOOLED_TAG).await?;
    let mut made = Made::default();
    let result = pool_figures(ctx, size, &mut made).await;
    remove_all(ctx, made).await;
    let _ = ctx.engine.untag(UNPOOLED_TAG).await;
    result
}

async fn pool_figures(ctx: &mut Ctx, size: u64, made: &mut Made) -> Result<()> {
    let plan = ctx.plan.clone();
    let simple = ctx.repo("simple").clone();
    let url = ctx.warm_url("simple");
    let hits = || async { ctx.api.counter("repobox_pool_claims_total", "hit").await };

    // Warm: every sample finds the pool full (refilled, untimed, in between).
    let hits_before = hits().await?;
    let git_before = ctx.api.histogram("repobox_clone_duration_seconds").await?;
    let claim_before = ctx
        .api
        .histogram("repobox_pool_claim_duration_seconds")
        .await?;
    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    for i in 0..plan.pool_warm {
        ctx.api.wait_pool_full(Duration::from_secs(60)).await?;
        let (a, b) = both(
            i,
            repobox_create(&ctx.api, &url, &simple.head),
            floor_create(&ctx.engine, &simple.checkout, &simple.head),
        )
        .await;
        if let Ok((_, id)) = &a {
            made.repobox.push(id.clone());
        }
        if let Ok((_, id)) = &b {
            made.floor.push(id.clone());
        }
        ours.push(a?.0);
        theirs.push(b?.0);
    }
    let served = hits().await? - hits_before;
    let mean_ms = |before: (f64, f64), after: (f64, f64)| {
        (after.0 - before.0) / (after.1 - before.1).max(1.0) * 1e3
    };
    let git_ms = mean_ms(
        git_before,
        ctx.api.histogram("repobox_clone_duration_seconds").await?,
    );
    let claim_ms = mean_ms(
        claim_before,
        ctx.api
            .histogram("repobox_pool_claim_duration_seconds")
            .await?,
    );
    let mut rows = latency_rows(
        "10 create -> first command, simple, warm cache, pool warm",
        &ours,
        &theirs,
        Some(Target::AtMost(100.0)),
    );

    // Off: an image the pool does not keep takes the ordinary path.
    let (mut off, mut floor_off) = (Samples::new(), Samples::new());
    let body = json!({ "repo_url": url, "image": UNPOOLED_TAG });
    for i in 0..plan.pool_off {
        ctx.api.wait_pool_full(Duration::from_secs(60)).await?;
        let (a, b) = both(
            i,
            async {
                let at = Instant::now();
                let id = ctx.api.create_with(body.clone()).await?;
                let result = ctx.api.exec(&id, FIRST_COMMAND).await?;
                ensure!(result["exit_code"] == 0, "{result}");
                Ok((ms(at), id))
            },
            floor_create(&ctx.engine, &simple.checkout, &simple.head),
        )
        .await;
        if let Ok((_, id)) = &a {
            made.repobox.push(id.clone());
        }
        if let Ok((_, id)) = &b {
            made.floor.push(id.clone());
        }
        off.push(a?.0);
        floor_off.push(b?.0);
    }
    rows.extend(latency_rows(
        "10 create -> first command, simple, warm cache, pool off (image not pooled)",
        &off,
        &floor_off,
        Some(Target::RatioAtMost(1.05)),
    ));

    // A burst: `pool_burst` creates at once against a full pool, then as many floor
    // creates at once.
    ctx.api.wait_pool_full(Duration::from_secs(60)).await?;
    let burst = plan.pool_burst;
    let at = Instant::now();
    let results = futures_util::future::join_all(
        (0..burst).map(|_| repobox_create(&ctx.api, &url, &simple.head)),
    )
    .await;
    let all_ours = ms(at);
    let mut each_ours = Samples::new();
    let mut failed = 0;
    for result in results {
        match result {
            Ok((took, id)) => {
                each_ours.push(took);
                made.repobox.push(id);
            }
            Err(_) => failed += 1,
        }
    }
    let at = Instant::now();
    let results = futures_util::future::join_all(
        (0..burst).map(|_| floor_create(&ctx.engine, &simple.checkout, &simple.head)),
    )
    .await;
    let all_theirs = ms(at);
    let mut each_theirs = Samples::new();
    for result in results {
        let (took, id) = result?;
        each_theirs.push(took);
        made.floor.push(id);
    }
    ensure!(failed == 0, "{failed} of {burst} creates at once failed");
    rows.push(Row::new(
        format!("10 {burst} creates at once (POOL_SIZE={size}), until all usable"),
        "ms",
        1,
        all_ours,
        Some(all_theirs),
        None,
    ));
    rows.push(Row::new(
        format!("10 {burst} creates at once (POOL_SIZE={size}), each, p50"),
        "ms",
        burst,
        each_ours.p50(),
        Some(each_theirs.p50()),
        None,
    ));
    ctx.report.add(FIGURES, rows);
    ctx.report.note(format!(
        "10: {served} of {} warm-pool creates were served by the pool; in them, the git work (one ls-remote, then a kept tar) took {git_ms:.0} ms and the claim (rename, agent ping; overlaps the git work) {claim_ms:.0} ms on average; the floor is the ordinary path of today without repobox (container create + start, upload of the checkout, the first command by docker exec)",
        plan.pool_warm
    ));
    Ok(())
}

/// Figure 11: a reset of a sandbox of the large repository with a few files changed,
/// against a warm create of the same repository (repobox's own, just measured).
async fn reset_rows(ctx: &Ctx, big: &Repo, large: &Made, warm: &CreateRun) -> Result<Vec<Row>> {
    let id = large
        .repobox
        .last()
        .context("no sandbox of the large repository")?;
    let mut resets = Samples::new();
    for _ in 0..ctx.plan.large_warm.max(3) {
        let changed = ctx
            .api
            .exec(
                id,
                "find . -path ./.git -prune -o -type f -print | head -3 | while read -r f; do echo x >> \"$f\"; done; \
                 echo new > new-file.txt; mkdir -p build && echo o > build/out.o",
            )
            .await?;
        ensure!(changed["exit_code"] == 0, "{changed}");
        let at = Instant::now();
        ctx.api.reset(id).await?;
        resets.push(ms(at));
        let left = ctx.api.exec(id, "git status --porcelain --ignored").await?;
        ensure!(
            left["stdout"] == "",
            "the reset left changes: {}",
            left["stdout"]
        );
    }
    Ok(vec![Row::new(
        format!(
            "11 reset, {}, 3 files changed + new files (floor: repobox's warm create), p50",
            big.label
        ),
        "ms",
        resets.len(),
        resets.p50(),
        Some(warm.create.0.p50()),
        Some(Target::RatioAtMost(0.25)),
    )])
}

/// Figure 12: a snapshot of a sandbox of the large repository plus 50 MB of new files,
/// a create from it, and a fork of 8; against a warm create of the same repository.
async fn snapshot_rows(
    ctx: &Ctx,
    big: &Repo,
    large: &mut Made,
    warm: &CreateRun,
) -> Result<Vec<Row>> {
    let source = large
        .repobox
        .first()
        .cloned()
        .context("no sandbox of the large repository")?;
    let wrote = ctx
        .api
        .exec(
            &source,
            "mkdir -p /workspace/build && for i in 1 2 3 4 5; do head -c 10485760 /dev/urandom > /workspace/build/blob$i; done",
        )
        .await?;
    ensure!(wrote["exit_code"] == 0, "{wrote}");
    let at = Instant::now();
    let snapshot = ctx.api.snapshot(&source).await?;
    let snapshot_ms = ms(at);
    let mut from_snapshot = Samples::new();
    for _ in 0..ctx.plan.large_warm.max(3) {
        let at = Instant::now();
        let id = ctx
            .api
            .create_with(json!({ "snapshot_id": snapshot }))
            .await?;
        large.repobox.push(id.clone());
        let result = ctx.api.exec(&id, FIRST_COMMAND).await?;
        ensure!(
            result["stdout"].as_str().map(str::trim) == Some(big.head.as_str()),
            "{result}"
        );
        from_snapshot.push(ms(at));
    }
    let at = Instant::now();
    let (fork_snapshot, copies) = ctx.api.fork(&source, 8).await?;
    let fork_ms = ms(at);
    large.repobox.extend(copies);
    let label = &big.label;
    let rows = vec![
        Row::new(
            format!("12 snapshot, {label} + 50 MB written"),
            "ms",
            1,
            snapshot_ms,
            None,
            None,
        ),
        Row::new(
            "12 create from that snapshot -> first command (floor: repobox's warm create), p50",
            "ms",
            from_snapshot.len(),
            from_snapshot.p50(),
            Some(warm.create.0.p50()),
            Some(Target::RatioAtMost(1.0)),
        ),
        Row::new(
            "12 fork count=8 (snapshot + 8 copies), until all usable (floor: 8 warm creates one after another)",
            "ms",
            1,
            fork_ms,
            Some(warm.create.0.p50() * 8.0),
            None,
        ),
    ];
    // The copies go with the other sandboxes of the large repository; the snapshots
    // once nothing runs on them any more (after the destroys of `creates`).
    let api = ctx.api.clone();
    let snapshots = [snapshot, fork_snapshot];
    tokio::spawn(async move {
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut left = 0;
            for id in &snapshots {
                if api.delete_snapshot(id).await.is_err() {
                    left += 1;
                }
            }
            if left == 0 {
                return;
            }
        }
    });
    Ok(rows)
}

/// Concurrency of figure 13, on both sides.
const JOB_CONCURRENCY: usize = 8;
/// The command of figure 13.
const JOB_COMMAND: &str = "git log --oneline | wc -l";

/// Figure 13: one job over N entries of `simple` at distinct URLs (so N mirrors, all
/// cold), against the same N done by a client through the API (create, exec,
/// destroy) with as many threads as the job's concurrency, over N other URLs.
async fn jobs(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.plan.job_entries;
    let (api, pid) = (&ctx.api, ctx.pid);
    let simple = ctx.repo("simple").clone();
    let urls = |side: &str| -> Vec<String> {
        (0..n)
            .map(|i| ctx.git.url(&format!("{}-{side}-{i}", ctx.run), "simple"))
            .collect()
    };
    let (job_urls, client_urls) = (urls("job"), urls("client"));
    let commits = git(&[
        "-C",
        path_str(&simple.checkout)?,
        "rev-list",
        "--count",
        "HEAD",
    ])?;

    let (stop, watcher) = watch_memory(pid);
    let at = Instant::now();
    let id = api
        .job(json!({
            "command": JOB_COMMAND,
            "repos": job_urls.iter().map(|url| json!({"repo_url": url})).collect::<Vec<_>>(),
            "concurrency": JOB_CONCURRENCY,
        }))
        .await?;
    let job = api.wait_job(&id, Duration::from_secs(1800)).await;
    let job_ms = ms(at);
    stop.store(true, Ordering::Relaxed);
    let peak = watcher.await?;
    let job = job?;
    ensure!(
        job["counts"]["succeeded"] == n as u64,
        "the job's entries did not all succeed: {job}"
    );
    api.delete_job(&id).await?;

    let commits = commits.as_str();
    let at = Instant::now();
    let ran: Vec<Result<()>> = futures_util::stream::iter(client_urls)
        .map(|url| async move {
            let id = api.create(&url).await?;
            let result = api.exec(&id, JOB_COMMAND).await;
            api.destroy(&id).await?;
            let result = result?;
            ensure!(
                result["exit_code"] == 0
                    && result["stdout"].as_str().map(str::trim) == Some(commits),
                "{result}"
            );
            Ok(())
        })
        .buffer_unordered(JOB_CONCURRENCY)
        .collect()
        .await;
    let client_ms = ms(at);
    ran.into_iter().collect::<Result<Vec<()>>>()?;

    ctx.report.add(
        FIGURES,
        [
            Row::new(
                format!(
                    "13 job over {n} repositories (distinct URLs, cold mirrors), concurrency {JOB_CONCURRENCY}, wall time (floor: a client creating, running and destroying through the API with {JOB_CONCURRENCY} threads)"
                ),
                "ms",
                1,
                job_ms,
                Some(client_ms),
                Some(Target::RatioAtMost(1.1)),
            ),
            Row::new(
                format!("13 job over {n} repositories, entries per second"),
                "1/s",
                1,
                n as f64 / (job_ms / 1000.0),
                Some(n as f64 / (client_ms / 1000.0)),
                None,
            ),
            Row::new(
                format!("13 repobox RSS peak during the job of {n}"),
                "MiB",
                1,
                peak,
                None,
                None,
            ),
        ],
    );
    Ok(())
}

/// Figure 4: `true` at concurrency c over N sandboxes, for a fixed time.
async fn throughput(ctx: &mut Ctx, sandbox: &str) -> Result<()> {
    let plan = ctx.plan.clone();
    let simple = ctx.repo("simple").clone();
    let mut ours = vec![sandbox.to_owned()];
    let mut theirs = Vec::new();
    while ours.len() < plan.throughput_sandboxes {
        ours.push(ctx.api.create(&ctx.warm_url("simple")).await?);
    }
    while theirs.len() < plan.throughput_sandboxes {
        let (_, id) = floor_create(&ctx.engine, &simple.checkout, &simple.head).await?;
        theirs.push(id);
    }
    let result = async {
        let mut rows = Vec::new();
        for &concurrency in &plan.throughput_levels {
            let (mut a, mut b) = (Rate::default(), Rate::default());
            for round in 0..plan.throughput_rounds {
                let (x, y) = both(
                    round,
                    rate(
                        &Caller::Repobox(ctx.api.clone(), ctx.pid),
                        &ours,
                        concurrency,
                        plan.throughput_secs,
                    ),
                    rate(
                        &Caller::Floor(ctx.engine.clone()),
                        &theirs,
                        concurrency,
                        plan.throughput_secs,
                    ),
                )
                .await;
                a.add(x?);
                b.add(y?);
            }
            ctx.report.note(format!(
                "4: at c={concurrency}, repobox used {:.2} ms of CPU per exec",
                a.cpu_ms / a.ops.max(1) as f64
            ));
            if a.errors + b.errors > 0 {
                ctx.report.note(format!(
                    "4: at c={concurrency}, {} repobox and {} floor calls failed",
                    a.errors, b.errors
                ));
            }
            rows.push(Row::new(
                format!(
                    "4 exec throughput, c={concurrency}, {} sandboxes",
                    plan.throughput_sandboxes
                ),
                "ops/s",
                plan.throughput_rounds,
                a.per_second(),
                Some(b.per_second()),
                (concurrency >= 8).then_some(Target::RatioAtLeast(10.0)),
            ));
        }
        ctx.report.add(FIGURES, rows);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    for id in &ours[1..] {
        ctx.api.destroy(id).await?;
    }
    for id in &theirs {
        ctx.engine.remove(id).await?;
    }
    result
}

/// Who runs the throughput calls (for repobox: its client and its pid).
enum Caller {
    Repobox(Api, u32),
    Floor(Engine),
}

/// Calls and time of throughput runs.
#[derive(Default)]
struct Rate {
    ops: usize,
    errors: usize,
    secs: f64,
    /// CPU repobox used meanwhile (repobox runs only).
    cpu_ms: f64,
}

impl Rate {
    fn add(&mut self, other: Rate) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.secs += other.secs;
        self.cpu_ms += other.cpu_ms;
    }

    fn per_second(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// `concurrency` workers run `true` round-robin over `ids` until `secs` have passed;
/// the rate counts the calls that finished, over the time until the last one did.
async fn rate(who: &Caller, ids: &[String], concurrency: usize, secs: f64) -> Result<Rate> {
    let next = Arc::new(AtomicUsize::new(0));
    let ids: Arc<[String]> = ids.into();
    let pid = match who {
        Caller::Repobox(_, pid) => Some(*pid),
        Caller::Floor(_) => None,
    };
    let cpu = pid.map(server::cpu).transpose()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, ids) = (next.clone(), ids.clone());
            let who = match who {
                Caller::Repobox(api, pid) => Caller::Repobox(api.clone(), *pid),
                Caller::Floor(engine) => Caller::Floor(engine.clone()),
            };
            tokio::spawn(async move {
                let (mut ops, mut errors) = (0, 0);
                while Instant::now() < deadline {
                    let id = &ids[next.fetch_add(1, Ordering::Relaxed) % ids.len()];
                    let ok = match &who {
                        Caller::Repobox(api, _) => repobox_exec(api, id, "true").await.is_ok(),
                        Caller::Floor(engine) => floor_exec(engine, id, "true").await.is_ok(),
                    };
                    if ok {
                        ops += 1;
                    } else {
                        errors += 1;
                    }
                }
                (ops, errors)
            })
        })
        .collect();
    let mut rate = Rate::default();
    for worker in workers {
        let (ops, errors) = worker.await?;
        rate.ops += ops;
        rate.errors += errors;
    }
    rate.secs = start.elapsed().as_secs_f64();
    if let (Some(pid), Some(cpu)) = (pid, cpu) {
        rate.cpu_ms = (server::cpu(pid)? - cpu).own;
    }
    Ok(rate)
}

/// Figure 6: browse /workspace, read a 1 MiB text file.
async fn files(ctx: &mut Ctx, sandbox: &str, floor: &str) -> Result<()> {
    let make = format!("base64 -w 76 /dev/urandom | head -c {BIG_FILE_BYTES} > {BIG_FILE}");
    repobox_exec(&ctx.api, sandbox, &make).await?;
    floor_exec(&ctx.engine, floor, &make).await?;
    // What repobox's browse runs, for the floor of the browse figure.
    let find = repobox::files::listing_command(WORKSPACE);

    let probe = ctx.api.browse(sandbox, WORKSPACE).await?;
    if probe.route_missing() {
        ctx.report.add(
            FIGURES,
            [
                Row::missing("6 browse /workspace, p50", "ms", None),
                Row::missing("6 read 1 MiB file, p50", "ms", None),
            ],
        );
        ctx.report
            .note("6: this build of repobox has no /browse or /files endpoint yet");
        return Ok(());
    }

    let (api, engine) = (&ctx.api, &ctx.engine);
    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    for i in 0..ctx.plan.file_samples {
        let (a, b) = both(
            i,
            async {
                let at = Instant::now();
                let fetched = api.browse(sandbox, WORKSPACE).await?;
                let took = ms(at);
                ensure!(fetched.status == 200, "browse answered {}", fetched.status);
                let body: serde_json::Value = serde_json::from_slice(&fetched.body)?;
                ensure!(
                    body["total_items"].as_u64() > Some(0),
                    "empty listing: {body}"
                );
                Ok::<_, anyhow::Error>(took)
            },
            async {
                let at = Instant::now();
                let ran = engine.exec(floor, &find, &["LC_ALL=C"], "/").await?;
                let took = ms(at);
                ensure!(ran.exit_code == 0 && ran.stdout_bytes > 0, "find failed");
                Ok::<_, anyhow::Error>(took)
            },
        )
        .await;
        ours.push(a?);
        theirs.push(b?);
    }
    let mut rows = latency_rows(
        "6 browse /workspace",
        &ours,
        &theirs,
        Some(Target::AtMost(3.0)),
    );

    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    for i in 0..ctx.plan.file_samples {
        let (a, b) = both(
            i,
            async {
                let at = Instant::now();
                let fetched = api.read(sandbox, BIG_FILE).await?;
                let took = ms(at);
                ensure!(fetched.status == 200, "read answered {}", fetched.status);
                let body: serde_json::Value = serde_json::from_slice(&fetched.body)?;
                ensure!(
                    body["size"] == BIG_FILE_BYTES,
                    "wrong size: {}",
                    body["size"]
                );
                Ok::<_, anyhow::Error>(took)
            },
            async {
                let at = Instant::now();
                let bytes = engine.archive(floor, BIG_FILE).await?;
                let took = ms(at);
                ensure!(bytes > BIG_FILE_BYTES, "short archive: {bytes} bytes");
                Ok::<_, anyhow::Error>(took)
            },
        )
        .await;
        ours.push(a?);
        theirs.push(b?);
    }
    rows.extend(latency_rows(
        "6 read 1 MiB file",
        &ours,
        &theirs,
        Some(Target::AtMost(5.0)),
    ));
    ctx.report.add(FIGURES, rows);
    Ok(())
}

/// Figure 8 with sandboxes alive, and exec latency as their number grows.
async fn alive(ctx: &mut Ctx, sandbox: &str, floor: &str) -> Result<()> {
    let plan = ctx.plan.clone();
    let url = ctx.warm_url("simple");
    let mut extra: Vec<String> = Vec::new();
    let result = async {
        let mut rows = Vec::new();
        for &count in &plan.alive {
            let missing = count.saturating_sub(1 + extra.len());
            let (api, url) = (&ctx.api, url.as_str());
            let made: Vec<Result<String>> = futures_util::stream::iter(0..missing)
                .map(|_| async move { api.create(url).await })
                .buffer_unordered(4)
                .collect()
                .await;
            for id in made {
                extra.push(id?);
            }
            // Let the creates' background work (checkout removal) finish.
            tokio::time::sleep(Duration::from_secs(2)).await;
            if Some(&count) == plan.alive.last() {
                let memory = server::memory(ctx.pid)?;
                ctx.report.add(
                    FIGURES,
                    [Row::new(
                        format!("8 repobox RSS, {count} idle sandboxes"),
                        "MiB",
                        1,
                        memory.rss,
                        None,
                        Some(Target::AtMost(60.0)),
                    )],
                );
            }
            let (mut ours, mut theirs) = (Samples::new(), Samples::new());
            for i in 0..plan.alive_samples {
                let (a, b) = both(
                    i,
                    repobox_exec(&ctx.api, sandbox, "true"),
                    floor_exec(&ctx.engine, floor, "true"),
                )
                .await;
                ours.push(a?);
                theirs.push(b?);
            }
            rows.push(Row::new(
                format!("alive: exec `true` p50, sandboxes alive: {count}"),
                "ms",
                ours.len(),
                ours.p50(),
                Some(theirs.p50()),
                Some(Target::RatioAtMost(1.15)),
            ));
        }
        ctx.report.add(SCALING, rows);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let api = &ctx.api;
    let destroyed: Vec<Result<()>> = futures_util::stream::iter(extra)
        .map(|id| async move { api.destroy(&id).await })
        .buffer_unordered(8)
        .collect()
        .await;
    result?;
    destroyed.into_iter().collect()
}

/// Polls repobox's RSS every 5 ms until stopped; the highest value seen.
fn watch_memory(pid: u32) -> (Arc<AtomicBool>, tokio::task::JoinHandle<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut peak = 0f64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(memory) = server::memory(pid) {
                    peak = peak.max(memory.rss);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        }
    });
    (stop, handle)
}

/// Figure 14: the server's memory when sandboxes send all they may. Measured in this
/// process (the server's agent client and `exec` against fake agents over in-memory
/// pipes, which the protocol makes indistinguishable from a sandbox): one agent sending
/// 2 GiB for a command whose answer is capped at 64 KiB, and fifty sending 64 MiB each
/// at once. The floor is the honest case: the same bytes taken whole as a stream.
async fn flooding(ctx: &mut Ctx) -> Result<()> {
    const CAP: usize = 64 * 1024;
    let (one, fifty) = if ctx.plan.quick {
        (64u64 << 20, 8u64 << 20)
    } else {
        (2u64 << 30, 64u64 << 20)
    };
    // Warm the allocator first.
    let client = flood::flooding_agent(8 << 20).await;
    repobox::exec::run(&client, flood::command(), CAP).await?;
    drop(client);

    let honest = |total: u64| async move {
        let client = flood::flooding_agent(total).await;
        let mut events = repobox::exec::stream(&client, flood::command()).await?;
        let mut peak = flood::rss();
        while let Some(event) = events.recv().await {
            if let repobox::exec::Event::Exit(_) = event {
                break;
            }
            peak = peak.max(flood::rss());
        }
        anyhow::Ok(peak)
    };
    let capped = |total: u64| async move {
        let client = flood::flooding_agent(total).await;
        let result = repobox::exec::run(&client, flood::command(), CAP).await?;
        ensure!(result.stdout.len() <= CAP, "the answer passed its cap");
        anyhow::Ok(flood::rss())
    };
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);

    let before = flood::rss();
    let at = Instant::now();
    let after = capped(one).await?;
    let rate = mib(one) / at.elapsed().as_secs_f64();
    let flood_growth = mib(after.saturating_sub(before));
    let before = flood::rss();
    let honest_growth = mib(honest(one).await?.saturating_sub(before));

    let before = flood::rss();
    let floods: Vec<_> = (0..50).map(|_| tokio::spawn(capped(fifty))).collect();
    let mut peak = before;
    for flood in floods {
        peak = peak.max(flood.await??);
    }
    let floods_growth = mib(peak.saturating_sub(before));
    let before = flood::rss();
    let streams: Vec<_> = (0..50).map(|_| tokio::spawn(honest(fifty))).collect();
    let mut peak = before;
    for stream in streams {
        peak = peak.max(stream.await??);
    }
    let streams_growth = mib(peak.saturating_sub(before));

    ctx.report.add(
        FIGURES,
        [
            Row::new(
                format!("14 RSS growth, one agent sending {} MiB for a 64 KiB answer (floor: taken whole as a stream)", one >> 20),
                "MiB",
                1,
                flood_growth,
                Some(honest_growth),
                None,
            ),
            Row::new(
                format!("14 RSS growth, 50 agents sending {} MiB each at once (floor: 50 honest streams; fake agents included)", fifty >> 20),
                "MiB",
                1,
                floods_growth,
                Some(streams_growth),
                None,
            ),
            Row::new(
                "14 a flood read and discarded by the server",
                "MiB/s",
                1,
                rate,
                None,
                None,
            ),
        ],
    );
    Ok(())
}

/// Figure 5 and the streaming part of figure 8.
async fn streaming(ctx: &mut Ctx, sandbox: &str, floor: &str) -> Result<()> {
    let command = format!(
        "yes abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c {STREAM_BYTES}"
    );
    let (api, engine, pid) = (&ctx.api, &ctx.engine, ctx.pid);
    let floor_drain = || async {
        let at = Instant::now();
        let ran = engine
            .exec(floor, &["/bin/bash", "-c", &command], &[], WORKSPACE)
            .await?;
        let took = ms(at);
        ensure!(
            ran.exit_code == 0 && ran.stdout_bytes == STREAM_BYTES,
            "floor stream: exit {}, {} bytes",
            ran.exit_code,
            ran.stdout_bytes
        );
        Ok::<_, anyhow::Error>(took)
    };

    let before = server::memory(pid)?.rss;
    let (mut ours, mut theirs, mut peaks) = (Samples::new(), Samples::new(), Samples::new());
    for i in 0..ctx.plan.stream_samples {
        let (a, b) = both(
            i,
            async {
                let (stop, watcher) = watch_memory(pid);
                let at = Instant::now();
                let streamed = api.stream(sandbox, &command).await;
                let took = ms(at);
                stop.store(true, Ordering::Relaxed);
                let peak = watcher.await?;
                let (bytes, exit) = streamed?;
                ensure!(
                    exit == 0 && bytes > STREAM_BYTES,
                    "stream: exit {exit}, {bytes} bytes"
                );
                Ok::<_, anyhow::Error>((took, peak))
            },
            floor_drain(),
        )
        .await;
        let (took, peak) = a?;
        ours.push(took);
        peaks.push(peak);
        theirs.push(b?);
    }
    let mut rows = latency_rows(
        "5 50 MiB of stdout, streaming endpoint",
        &ours,
        &theirs,
        Some(Target::RatioAtMost(1.0)),
    );
    let mib = STREAM_BYTES as f64 / (1024.0 * 1024.0);
    ctx.report.note(format!(
        "5: streaming moves {:.0} MiB/s through repobox, {:.0} MiB/s straight from the engine (p50)",
        mib / ours.p50() * 1e3,
        mib / theirs.p50() * 1e3
    ));
    let stream_peak = peaks.max();

    let sync_before = server::memory(pid)?.rss;
    let (mut ours, mut theirs, mut sync_peaks) = (Samples::new(), Samples::new(), Samples::new());
    for i in 0..ctx.plan.stream_samples {
        let (a, b) = both(
            i,
            async {
                let (stop, watcher) = watch_memory(pid);
                let at = Instant::now();
                let result = api.exec(sandbox, &command).await;
                let took = ms(at);
                stop.store(true, Ordering::Relaxed);
                let peak = watcher.await?;
                let result = result?;
                ensure!(
                    result["exit_code"] == 0 && result["stdout_truncated"] == true,
                    "sync: {}",
                    json!({"exit_code": result["exit_code"], "stdout_truncated": result["stdout_truncated"]})
                );
                Ok::<_, anyhow::Error>((took, peak))
            },
            floor_drain(),
        )
        .await;
        let (took, peak) = a?;
        ours.push(took);
        sync_peaks.push(peak);
        theirs.push(b?);
    }
    rows.extend(latency_rows(
        "5 50 MiB of stdout, sync endpoint (10 MiB cap)",
        &ours,
        &theirs,
        None,
    ));
    rows.push(Row::new(
        "8 repobox RSS added while streaming 50 MiB (peak - before)",
        "MiB",
        peaks.len(),
        stream_peak - before,
        None,
        Some(Target::AtMost(16.0)),
    ));
    rows.push(Row::new(
        "8 repobox RSS added by a sync /execute of 50 MiB (peak - before)",
        "MiB",
        sync_peaks.len(),
        sync_peaks.max() - sync_before,
        None,
        None,
    ));
    rows.extend(beside_a_stream(ctx, sandbox, floor).await?);
    ctx.report.add(FIGURES, rows);
    ctx.report.note(format!(
        "8: RSS before streaming {before:.1} MiB, peak while streaming {stream_peak:.1} MiB; before sync {sync_before:.1} MiB, peak during sync {:.1} MiB",
        sync_peaks.max()
    ));
    Ok(())
}

/// Figure 9: small commands while another client streams 200 MiB from the same
/// sandbox (head-of-line blocking would show as a long tail).
async fn beside_a_stream(ctx: &Ctx, sandbox: &str, floor: &str) -> Result<Vec<Row>> {
    const BIG: u64 = 200 * 1024 * 1024;
    let command = format!("head -c {BIG} /dev/zero | tr '\\0' x");
    let (api, engine) = (&ctx.api, &ctx.engine);
    let mut ours = Samples::new();
    let mut theirs = Samples::new();
    let samples = ctx.plan.exec_samples.min(100);
    {
        let big = api.stream(sandbox, &command);
        tokio::pin!(big);
        let mut taken = 0;
        while taken < samples {
            tokio::select! {
                finished = &mut big => {
                    finished?;
                    // The stream ended first: start another.
                    big.set(api.stream(sandbox, &command));
                }
                took = repobox_exec(api, sandbox, "true") => {
                    ours.push(took?);
                    taken += 1;
                }
            }
        }
    }
    {
        let argv = ["/bin/bash", "-c", command.as_str()];
        let big = engine.exec(floor, &argv, &[], WORKSPACE);
        tokio::pin!(big);
        let mut taken = 0;
        while taken < samples {
            tokio::select! {
                finished = &mut big => {
                    finished?;
                    big.set(engine.exec(floor, &argv, &[], WORKSPACE));
                }
                took = floor_exec(engine, floor, "true") => {
                    theirs.push(took?);
                    taken += 1;
                }
            }
        }
    }
    let mut rows = latency_rows(
        "9 exec `true` beside a 200 MiB stream from the same sandbox",
        &ours,
        &theirs,
        None,
    );
    rows.push(Row::new(
        "9 exec `true` beside a 200 MiB stream, p99",
        "ms",
        ours.len(),
        ours.percentile(99.0),
        Some(theirs.percentile(99.0)),
        Some(Target::AtMost(20.0)),
    ));
    Ok(rows)
}

async fn write_json(ctx: &Ctx, path: &Path, took: f64, health: &serde_json::Value) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let document = json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "duration_secs": took,
        "machine": {
            "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            "kernel": kernel.trim(),
            "engine": ctx.engine.version().await.unwrap_or_default(),
        },
        "repobox_version": health["version"],
        "plan": ctx.plan,
        "sections": ctx.report.sections,
        "notes": ctx.report.notes,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&document)?)?;
    Ok(())
}

/// The Kubernetes column: exec round trip, create → first command (pooled and not),
/// 20 creates at once, each against the raw Kubernetes API doing the same (a pod of
/// the sandbox image made Running, `pods/exec`), on the cluster of
/// [`kube::kubeconfig`].
async fn kubernetes(ctx: &mut Ctx) -> Result<()> {
    let Some(kubeconfig) = kube::kubeconfig() else {
        ctx.report.note(
            "K: no cluster (REPOBOX_BENCH_KUBECONFIG, or the test cluster: make kube-up): no Kubernetes figures",
        );
        return Ok(());
    };
    let defaults = repobox::config::Config::defaults();
    let mut cluster = kube::Cluster::connect(
        &kubeconfig,
        &ctx.run,
        &defaults.docker_base_image,
        defaults.default_cpus,
        defaults.default_memory_mb,
    )
    .await?;
    let paths = Paths::find()?;
    let root = tempfile::Builder::new()
        .prefix("repobox-bench-kube-")
        .tempdir()?;
    // Its own instance: its sandboxes are found (and swept) by that label.
    let instance = format!(
        "{:016x}",
        u64::from_str_radix(&ctx.instance, 16)? ^ 0x6b75_6265
    );
    let result = Box::pin(kubernetes_figures(
        ctx,
        &mut cluster,
        &paths,
        root.path(),
        &kubeconfig,
        &instance,
    ))
    .await;
    let swept = cluster.sweep().await
        + cluster
            .sweep_selector(&format!("repobox.managed=true,repobox.instance={instance}"))
            .await;
    if swept > 0 {
        eprintln!("bench: K: removed {swept} pods");
    }
    result
}

/// A create and its first command through repobox (timed), then its destroy.
async fn repobox_create_destroy(api: &Api, url: &str, head: &str) -> Result<f64> {
    let (took, id) = repobox_create(api, url, head).await?;
    api.destroy(&id).await?;
    Ok(took)
}

/// The floor of a create on Kubernetes: a pod made Running and its first
/// `pods/exec` (timed), then its removal.
async fn floor_pod_first_command(cluster: &mut kube::Cluster) -> Result<f64> {
    let at = Instant::now();
    let name = cluster.create_running().await?;
    cluster.exec(&name, "true").await?;
    let took = ms(at);
    cluster.remove(&name).await;
    Ok(took)
}

async fn kubernetes_figures(
    ctx: &mut Ctx,
    cluster: &mut kube::Cluster,
    paths: &Paths,
    root: &Path,
    kubeconfig: &Path,
    instance: &str,
) -> Result<()> {
    let simple = ctx.repo("simple").clone();
    let url = ctx.warm_url("simple");
    // A repobox on the cluster, with a warm pool of `pool` pods (0: none).
    let start = |name: &str, pool: usize| -> Result<(Child, Api)> {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("data").join("instance-id"), instance)?;
        let port = server::free_port()?;
        let child = server::spawn_with(
            &paths.repobox,
            &dir,
            port,
            &paths.out.join(format!("repobox-kube-{name}.log")),
            &[
                ("BACKEND", "kubernetes".to_owned()),
                ("KUBECONFIG", kubeconfig.display().to_string()),
                ("KUBE_NAMESPACE", kube::NAMESPACE.to_owned()),
                ("POOL_SIZE", pool.to_string()),
            ],
        )?;
        Ok((child, Api::new(format!("http://127.0.0.1:{port}"))?))
    };

    // Not pooled: exec, cold creates, 20 at once.
    let (mut child, api) = start("cold", 0)?;
    api.wait_ready(Duration::from_secs(60)).await?;
    let sandbox = api.create(&url).await?;
    let floor = cluster.create_running().await?;
    let samples = ctx.plan.exec_samples.min(100);
    for _ in 0..ctx.plan.exec_warmup {
        repobox_exec(&api, &sandbox, "true").await?;
        cluster.exec(&floor, "true").await?;
    }
    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    for i in 0..samples {
        let (a, b) = both(
            i,
            repobox_exec(&api, &sandbox, "true"),
            cluster.exec(&floor, "true"),
        )
        .await;
        ours.push(a?);
        theirs.push(b?);
    }
    ctx.report.add(
        KUBERNETES,
        latency_rows(
            "K1 exec `true` round trip (floor: pods/exec)",
            &ours,
            &theirs,
            None,
        ),
    );
    let _ = api.destroy(&sandbox).await;
    cluster.remove(&floor).await;

    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    for i in 0..ctx.plan.small_cold {
        let (a, b) = both(
            i,
            repobox_create_destroy(&api, &url, &simple.head),
            floor_pod_first_command(cluster),
        )
        .await;
        ours.push(a?);
        theirs.push(b?);
    }
    ctx.report.add(
        KUBERNETES,
        latency_rows(
            "K2 create -> first command, no pool (floor: pod Running + pods/exec)",
            &ours,
            &theirs,
            None,
        ),
    );

    // 20 at once: each side's time until all 20 answered their first command.
    let burst = 20;
    let at = Instant::now();
    let made = futures_util::future::join_all(
        (0..burst).map(|_| repobox_create(&api, &url, &simple.head)),
    )
    .await;
    let ours_all = ms(at);
    let mut ours_each = Samples::new();
    let mut ids = Vec::new();
    for made in made {
        let (took, id) = made?;
        ours_each.push(took);
        ids.push(id);
    }
    let placement = cluster
        .placement(&format!("repobox.managed=true,repobox.instance={instance}"))
        .await;
    for id in &ids {
        let _ = api.destroy(id).await;
    }
    let at = Instant::now();
    let mut names = Vec::new();
    for _ in 0..burst {
        names.push(cluster.next_name());
    }
    let floors = futures_util::future::join_all(names.iter().map(|name| async {
        let at = Instant::now();
        cluster.create_running_named(name).await?;
        cluster.exec(name, "true").await?;
        Ok::<_, anyhow::Error>(ms(at))
    }))
    .await;
    let theirs_all = ms(at);
    let mut theirs_each = Samples::new();
    for took in floors {
        theirs_each.push(took?);
    }
    for name in &names {
        cluster.remove(name).await;
    }
    ctx.report.add(
        KUBERNETES,
        [
            Row::new(
                "K4 20 creates at once, all usable",
                "ms",
                1,
                ours_all,
                Some(theirs_all),
                None,
            ),
            Row::new(
                "K4 20 creates at once, p50 time to first command",
                "ms",
                burst,
                ours_each.p50(),
                Some(theirs_each.p50()),
                None,
            ),
        ],
    );
    ctx.report.note(format!(
        "K4: repobox's 20 pods by node: {}",
        placement
            .iter()
            .map(|(node, count)| format!("{node} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let _ = child.start_kill();
    let _ = child.wait().await;

    // Pooled: a server whose pool is refilled before each create.
    let (mut child, api) = start("pooled", 2)?;
    api.wait_ready(Duration::from_secs(60)).await?;
    let (mut ours, mut theirs) = (Samples::new(), Samples::new());
    for i in 0..ctx.plan.pool_warm.min(10) {
        api.wait_pool_full(Duration::from_secs(120)).await?;
        let (a, b) = both(
            i,
            repobox_create_destroy(&api, &url, &simple.head),
            floor_pod_first_command(cluster),
        )
        .await;
        ours.push(a?);
        theirs.push(b?);
    }
    let hits = api.counter("repobox_pool_claims_total", "hit").await?;
    ctx.report.add(
        KUBERNETES,
        latency_rows(
            "K3 create -> first command from the warm pool (floor: pod Running + pods/exec)",
            &ours,
            &theirs,
            None,
        ),
    );
    ctx.report.note(format!(
        "K3: {hits} of {} creates were pool hits; the floor has no pool and no checkout (repobox's includes its clone)",
        ours.len()
    ));
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(())
}
