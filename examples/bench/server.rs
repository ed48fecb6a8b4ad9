//! repobox under test: the release binary as a child process, its memory as the
//! kernel reports it, and a client of its HTTP API.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Where a sandbox's checkout is.
pub(crate) const WORKSPACE: &str = "/workspace";

/// Starts `binary` serving on 127.0.0.1:`port`, with its data and cache under `root`,
/// its output appended to `log`. The child has a process group of its own, so a
/// Ctrl-C at the terminal reaches only the benchmark, which then stops it.
pub(crate) fn spawn(binary: &Path, root: &Path, port: u16, log: &Path) -> Result<Child> {
    spawn_with(binary, root, port, log, &[])
}

/// [`spawn`] with more settings (they win over the defaults set here).
pub(crate) fn spawn_with(
    binary: &Path,
    root: &Path,
    port: u16,
    log: &Path,
    settings: &[(&str, String)],
) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Command::new(binary);
    command
        .arg("serve")
        // No `.env` there: only what is set here (and the inherited environment) counts.
        .current_dir(root)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", root.join("data"))
        .env("CACHE_DIR", root.join("cache"))
        .env("ALLOWED_GIT_HOSTS", "127.0.0.1")
        .env("MAX_CONTAINERS", "256")
        // As many sandboxes as the floor runs raw: their memory limits together may
        // pass the host's memory by far (they use a few MiB each).
        .env("MEMORY_OVERCOMMIT", "16")
        // The pool of figure 10 (the user's POOL_SIZE, when set, wins).
        .env(
            "POOL_SIZE",
            std::env::var("POOL_SIZE").unwrap_or_else(|_| "4".to_owned()),
        )
        .env("LOG_FORMAT", "human")
        .envs(settings.iter().map(|(key, value)| (*key, value.as_str())))
        .env_remove("API_KEYS")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// A free TCP port on 127.0.0.1 (free when asked; nothing else here binds ports).
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident memory of a process, from `/proc/<pid>/status`, in MiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now.
    pub rss: f64,
    /// `VmHWM`: the most ever resident.
    pub hwm: f64,
}

/// Reads [`Memory`] of `pid`.
pub(crate) fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// CPU time a process has used, in milliseconds (user + system).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    /// The process itself (all its threads).
    pub own: f64,
    /// Its children that it has waited for (for repobox: the git processes).
    pub children: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;

    fn sub(self, earlier: Cpu) -> Cpu {
        Cpu {
            own: self.own - earlier.own,
            children: self.children - earlier.children,
        }
    }
}

/// Reads [`Cpu`] of `pid` from `/proc/<pid>/stat`.
pub(crate) fn cpu(pid: u32) -> Result<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, and ends at the last ')').
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .context("malformed /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    let [utime, stime, cutime, cstime] = fields[..] else {
        bail!("malformed /proc/{pid}/stat");
    };
    let tick = 1e3 / clock_ticks();
    Ok(Cpu {
        own: (utime + stime) * tick,
        children: (cutime + cstime) * tick,
    })
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once (100 nearly everywhere).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A client of repobox's API. Cheap to clone (one connection pool).
#[derive(Clone)]
pub(crate) struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of the server at `base` (`http://127.0.0.1:PORT`).
    pub(crate) fn new(base: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { base, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// Waits until `/health/ready` answers 200 (Docker reachable, image present,
    /// reconciled), or `bound` passes.
    pub(crate) async fn wait_ready(&self, bound: Duration) -> Result<()> {
        let give_up = Instant::now() + bound;
        loop {
            if let Ok(response) = self.http.get(self.url("/health/ready")).send().await
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > give_up {
                bail!("repobox did not become ready within {bound:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a request, reads the whole body (the part that is timed), then checks
    /// the status and parses the JSON.
    async fn call(&self, request: reqwest::RequestBuilder, expect: StatusCode) -> Result<Value> {
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if status != expect {
            bail!(
                "repobox answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(2000)])
            );
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// `POST /containers/{id}/reset` (processes too).
    pub(crate) async fn reset(&self, id: &str) -> Result<()> {
        self.call(
            self.http
                .post(self.url(&format!("/containers/{id}/reset")))
                .json(&json!({ "processes": true })),
            StatusCode::OK,
        )
        .await
        .map(drop)
    }

    /// `POST /containers/{id}/snapshots`; returns the snapshot id.
    pub(crate) async fn snapshot(&self, id: &str) -> Result<String> {
        let made = self
            .call(
                self.http
                    .post(self.url(&format!("/containers/{id}/snapshots")))
                    .json(&json!({})),
                StatusCode::CREATED,
            )
            .await?;
        made["snapshot_id"]
            .as_str()
            .map(str::to_owned)
            .context("no snapshot_id")
    }

    /// `POST /containers/{id}/fork`; returns the snapshot id and the copies' ids (an
    /// error for any copy that failed).
    pub(crate) async fn fork(&self, id: &str, count: usize) -> Result<(String, Vec<String>)> {
        let forked = self
            .call(
                self.http
                    .post(self.url(&format!("/containers/{id}/fork")))
                    .json(&json!({ "count": count })),
                StatusCode::CREATED,
            )
            .await?;
        let snapshot = forked["snapshot_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut ids = Vec::new();
        for entry in forked["forks"].as_array().into_iter().flatten() {
            match entry["container"]["container_id"].as_str() {
                Some(id) => ids.push(id.to_owned()),
                None => bail!("a copy failed: {entry}"),
            }
        }
        Ok((snapshot, ids))
    }

    /// `DELETE /snapshots/{id}`.
    pub(crate) async fn delete_snapshot(&self, id: &str) -> Result<()> {
        let response = self
            .http
            .delete(self.url(&format!("/snapshots/{id}")))
            .send()
            .await?;
        if response.status() != StatusCode::NO_CONTENT {
            bail!("deleting snapshot {id}: {}", response.status());
        }
        Ok(())
    }

    /// `GET /info`.
    pub(crate) async fn info(&self) -> Result<Value> {
        self.call(self.http.get(self.url("/info")), StatusCode::OK)
            .await
    }

    /// Waits until every pool member is ready (untimed); returns the pool's size.
    pub(crate) async fn wait_pool_full(&self, bound: Duration) -> Result<u64> {
        let deadline = Instant::now() + bound;
        loop {
            let info = self.info().await?;
            let pool = &info["pool"];
            let full = pool["size"].as_u64().unwrap_or(0)
                * pool["images"].as_array().map_or(0, Vec::len) as u64;
            if pool["ready"].as_u64() == Some(full) {
                return Ok(pool["size"].as_u64().unwrap_or(0));
            }
            if Instant::now() > deadline {
                bail!("the warm pool did not fill within {bound:?}: {pool}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A counter of `/metrics` with one `kind` label (0 when absent).
    pub(crate) async fn counter(&self, name: &str, kind: &str) -> Result<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        let prefix = format!("{name}{{kind=\"{kind}\"}} ");
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64))
    }

    /// `GET /health`.
    pub(crate) async fn health(&self) -> Result<Value> {
        self.call(self.http.get(self.url("/health")), StatusCode::OK)
            .await
    }

    /// Creates a sandbox of `repo_url`; returns its id.
    pub(crate) async fn create(&self, repo_url: &str) -> Result<String> {
        self.create_with(json!({ "repo_url": repo_url })).await
    }

    /// Creates a sandbox from a whole request body; returns its id.
    pub(crate) async fn create_with(&self, body: Value) -> Result<String> {
        let repo_url = body["repo_url"].as_str().unwrap_or("?").to_owned();
        let created = self
            .call(
                self.http.post(self.url("/containers")).json(&body),
                StatusCode::CREATED,
            )
            .await
            .with_context(|| format!("creating a sandbox of {repo_url}"))?;
        created["container_id"]
            .as_str()
            .map(str::to_owned)
            .context("no container_id in the create response")
    }

    /// Runs `command` through `/execute`; returns the ExecResult.
    pub(crate) async fn exec(&self, id: &str, command: &str) -> Result<Value> {
        self.call(
            self.http
                .post(self.url(&format!("/containers/{id}/execute")))
                .json(&json!({ "command": command, "timeout_secs": 300 })),
            StatusCode::OK,
        )
        .await
        .with_context(|| format!("running {command:?} in {id}"))
    }

    /// Runs `command` through `/execute/stream` and reads every event; returns the
    /// bytes of the event stream and the exit code from its `exit` event.
    pub(crate) async fn stream(&self, id: &str, command: &str) -> Result<(u64, i64)> {
        let response = self
            .http
            .post(self.url(&format!("/containers/{id}/execute/stream")))
            .json(&json!({ "command": command, "timeout_secs": 300 }))
            .send()
            .await?;
        if response.status() != StatusCode::OK {
            bail!("repobox answered {} to a stream", response.status());
        }
        let mut body = response.bytes_stream();
        let mut bytes = 0u64;
        // Only the end of the stream is kept: it holds the exit event.
        let mut tail: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            tail.extend_from_slice(&chunk);
            if tail.len() > 64 * 1024 {
                tail.drain(..tail.len() - 16 * 1024);
            }
        }
        let tail = String::from_utf8_lossy(&tail);
        let exit = tail
            .rfind("event: exit")
            .and_then(|at| {
                tail[at..]
                    .lines()
                    .find_map(|line| line.strip_prefix("data:"))
            })
            .context("the event stream has no exit event")?;
        let exit: Value = serde_json::from_str(exit.trim())?;
        Ok((bytes, exit["exit_code"].as_i64().unwrap_or(-1)))
    }

    /// `POST /jobs`; returns the job id.
    pub(crate) async fn job(&self, body: Value) -> Result<String> {
        let job = self
            .call(
                self.http.post(self.url("/jobs")).json(&body),
                StatusCode::ACCEPTED,
            )
            .await?;
        job["job_id"]
            .as_str()
            .map(str::to_owned)
            .context("no job_id")
    }

    /// Polls a job every 20 ms until it is finished or `bound` passes; returns it.
    pub(crate) async fn wait_job(&self, id: &str, bound: Duration) -> Result<Value> {
        let give_up = Instant::now() + bound;
        loop {
            let job = self
                .call(
                    self.http.get(self.url(&format!("/jobs/{id}"))),
                    StatusCode::OK,
                )
                .await?;
            if job["status"] == "completed" || job["status"] == "cancelled" {
                return Ok(job);
            }
            if Instant::now() > give_up {
                bail!("job {id} did not finish within {bound:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `DELETE /jobs/{id}`.
    pub(crate) async fn delete_job(&self, id: &str) -> Result<()> {
        self.call(
            self.http.delete(self.url(&format!("/jobs/{id}"))),
            StatusCode::NO_CONTENT,
        )
        .await
        .map(drop)
    }

    /// Destroys a sandbox.
    pub(crate) async fn destroy(&self, id: &str) -> Result<()> {
        self.call(
            self.http.delete(self.url(&format!("/containers/{id}"))),
            StatusCode::NO_CONTENT,
        )
        .await
        .with_context(|| format!("destroying {id}"))
        .map(drop)
    }

    /// `GET /browse?path=…`: status and body size. A 404 whose `code` says the
    /// route is unknown means the endpoint is not there (yet).
    pub(crate) async fn browse(&self, id: &str, path: &str) -> Result<Fetched> {
        self.fetch(self.url(&format!("/containers/{id}/browse?path={path}")))
            .await
    }

    /// `GET /files?file_path=…`.
    pub(crate) async fn read(&self, id: &str, path: &str) -> Result<Fetched> {
        self.fetch(self.url(&format!("/containers/{id}/files?file_path={path}")))
            .await
    }

    async fn fetch(&self, url: String) -> Result<Fetched> {
        let response = self.http.get(url).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok(Fetched { status, body })
    }

    /// The sum and count of a Prometheus histogram on `/metrics`.
    pub(crate) async fn histogram(&self, name: &str) -> Result<(f64, f64)> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        let read = |suffix: &str| {
            let key = format!("{name}_{suffix} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&key))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((read("sum"), read("count")))
    }
}

/// A GET answered.
pub(crate) struct Fetched {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: bytes::Bytes,
}

impl Fetched {
    /// Whether the route does not exist on this server (as opposed to a missing path).
    pub(crate) fn route_missing(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && serde_json::from_slice::<Value>(&self.body)
                .is_ok_and(|body| body["code"] == "route_not_found")
    }
}
