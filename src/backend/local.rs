//! The local backend (`BACKEND=local`): a **test backend with no isolation**, never for
//! production. It exists so that the conformance suite (and a developer without
//! Docker) can run every sandbox route in seconds, and so that the boundary in
//! [`super`] is proven by a second implementation.
//!
//! A sandbox is the agent ([`super::AGENT_BINARY`], written once to
//! `<root>/agent`) run as a child process of the server under util-linux's
//! `unshare --mount --pid --uts [--net] --fork --mount-proc`: PID 1 of a PID namespace
//! of its own as in a container (it reaps orphans; when it ends, everything in the
//! sandbox ends), its directory `<root>/sandboxes/<name>/workspace` bind-mounted at
//! [`WORKSPACE`], and with `network: none` a network
//! namespace holding loopback alone. Its stdin and stdout are the transport.
//!
//! What it does not do: the processes run as the server's user, with its
//! capabilities, on the host's filesystem (every path but `/workspace` is the
//! host's, `/tmp` too); no CPU, memory, process or disk limit is applied (`/info` says so:
//! `disk_limits.enforced` is false and `backend.unsupported` lists them); there is no
//! image store (images, snapshots and forks answer 501; a sandbox's image is ignored);
//! and sandboxes end with the server (`setpriv --pdeathsig KILL`), so a restarted
//! server finds none and forgets their records.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{
    Backend, BackendKind, ContainerInfo, ContainerState, DiskLimits, ImageStore, LABEL_INSTANCE,
    LABEL_POOL, Limits, ManagedContainer, Network, SandboxSpec, Transport, WORKSPACE,
};
use crate::error::{Error, Result};
use crate::id::EngineId;
use crate::sync::Locked as _;

/// How long a removed sandbox's agent has to die after SIGKILL.
const KILL_BOUND: Duration = Duration::from_secs(5);

/// Runs in the new namespaces (as `sh -c`, then replaced by the agent): `$1` the
/// sandbox's directory, `$2` its host name, `$3` the agent.
const START_SCRIPT: &str = r#"set -e
mount --bind "$1" /workspace
hostname "$2"
ip link set lo up 2>/dev/null || true
cd /workspace
exec "$3""#;

/// The local backend: sandboxes as child processes in namespaces of their own.
pub struct Local {
    root: PathBuf,
    agent: PathBuf,
    version: String,
    sandboxes: Mutex<HashMap<String, Arc<Entry>>>,
}

/// One sandbox: its process, the pipes to its agent (lent to one connection at a
/// time), its labels.
struct Entry {
    name: Mutex<String>,
    labels: HashMap<String, String>,
    dir: PathBuf,
    child: Mutex<Child>,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    stdout: Arc<Mutex<Option<ChildStdout>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.locked()
}

impl Local {
    /// Prepares `root` (the agent's binary, an empty sandboxes directory: the
    /// sandboxes of an earlier server ended with it) and the host's `/workspace`
    /// mount point. Fails when `unshare` (util-linux) is missing.
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        let output = std::process::Command::new("unshare")
            .arg("--version")
            .output()
            .map_err(|err| anyhow::anyhow!("BACKEND=local needs unshare (util-linux): {err}"))?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let sandboxes = root.join("sandboxes");
        if sandboxes.exists() {
            std::fs::remove_dir_all(&sandboxes)?;
        }
        std::fs::create_dir_all(&sandboxes)?;
        // Written aside and renamed: an agent of an earlier server may still be
        // running from the old file.
        let agent = root.join("agent");
        let staged = root.join(format!("agent.{}", std::process::id()));
        std::fs::write(&staged, super::AGENT_BINARY)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&staged, &agent)?;
        // The mount point the sandboxes' directories are bound to (in their own mount
        // namespaces: the host's stays empty).
        std::fs::create_dir_all(WORKSPACE)?;
        tracing::warn!(root = %root.display(), "BACKEND=local: sandboxes run as child processes with NO isolation; a test backend, never for production");
        Ok(Self {
            root: root.to_owned(),
            agent,
            version,
            sandboxes: Mutex::new(HashMap::new()),
        })
    }

    /// The sandbox known by `key`: its engine id, or (before its create answered, or
    /// after an assign) its name.
    fn find(&self, key: &str) -> Option<(String, Arc<Entry>)> {
        let sandboxes = lock(&self.sandboxes);
        if let Some(entry) = sandboxes.get(key) {
            return Some((key.to_owned(), entry.clone()));
        }
        sandboxes
            .iter()
            .find(|(_, entry)| *lock(&entry.name) == key)
            .map(|(id, entry)| (id.clone(), entry.clone()))
    }

    fn spawn(&self, spec: &SandboxSpec, dir: &Path) -> std::io::Result<Child> {
        let workspace = dir.join("workspace");
        let home = dir.join("home");
        std::fs::create_dir_all(&workspace)?;
        std::fs::create_dir_all(&home)?;
        let mut command = Command::new("setpriv");
        // The sandbox ends with the server: SIGKILL to `unshare` when the server dies,
        // and `--kill-child` passes it on to the agent (PID 1: its namespace goes).
        command.args([
            "--pdeathsig",
            "KILL",
            "--",
            "unshare",
            "--mount",
            "--pid",
            "--uts",
        ]);
        if spec.network == Network::None {
            command.arg("--net");
        }
        command
            .args([
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--",
                "/bin/sh",
                "-c",
            ])
            .arg(START_SCRIPT)
            .arg("sh")
            .arg(&workspace)
            .arg(&spec.hostname)
            .arg(&self.agent)
            // What an image's environment would give.
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("HOME", &home)
            // The sandbox image trusts every repository (`safe.directory`); so here.
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn()
    }
}

#[async_trait::async_trait]
impl Backend for Local {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn images(&self) -> Option<&dyn ImageStore> {
        None
    }

    fn capabilities(&self) -> &'static [&'static str] {
        // Nothing is dropped: the agent runs with the server's own.
        &["ALL"]
    }

    fn unsupported(&self) -> Vec<String> {
        [
            "isolation",
            "resources.cpus",
            "resources.memory_mb",
            "resources.pids",
            "resources.disk_mb",
            "image",
            "adoption after a restart",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    async fn ping(&self, _bound: Duration) -> Result<()> {
        if self.agent.exists() {
            Ok(())
        } else {
            Err(Error::EngineUnavailable(format!(
                "the local backend's agent is gone from {}",
                self.agent.display()
            )))
        }
    }

    async fn version(&self) -> Result<String> {
        Ok(self.version.clone())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<EngineId> {
        let dir = self.root.join("sandboxes").join(&spec.name);
        let mut child = self.spawn(spec, &dir).map_err(|err| {
            Error::internal(format!("cannot start a local sandbox's agent: {err}"))
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        if let Some(stderr) = child.stderr.take() {
            let name = spec.name.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(sandbox = %name, "{line}");
                }
            });
        }
        let mut labels = spec.identity_labels();
        labels.entry(LABEL_POOL.to_owned()).or_default();
        let entry = Arc::new(Entry {
            name: Mutex::new(spec.name.clone()),
            labels,
            dir,
            child: Mutex::new(child),
            stdin: Arc::new(Mutex::new(stdin)),
            stdout: Arc::new(Mutex::new(stdout)),
        });
        lock(&self.sandboxes).insert(spec.name.clone(), entry);
        tracing::debug!(sandbox = %spec.name, "local sandbox started");
        Ok(spec.name.clone().into())
    }

    async fn assign(
        &self,
        engine_id: &EngineId,
        spec: &SandboxSpec,
        _current: Limits,
    ) -> Result<()> {
        let engine_id = engine_id.as_str();
        let (_, entry) = self
            .find(engine_id)
            .ok_or_else(|| Error::NotRunning(format!("no local sandbox {engine_id}")))?;
        *lock(&entry.name) = spec.name.clone();
        Ok(())
    }

    async fn attach(&self, engine_id: &EngineId) -> Result<Transport> {
        let engine_id = engine_id.as_str();
        let (_, entry) = self
            .find(engine_id)
            .ok_or_else(|| Error::NotRunning(format!("no local sandbox {engine_id}")))?;
        let (Some(writer), Some(reader)) = (lock(&entry.stdin).take(), lock(&entry.stdout).take())
        else {
            return Err(Error::NotRunning(format!(
                "the agent of local sandbox {engine_id} is attached already"
            )));
        };
        Ok(Transport {
            reader: Box::pin(Lent::new(reader, entry.stdout.clone())),
            writer: Box::pin(Lent::new(writer, entry.stdin.clone())),
        })
    }

    async fn remove(&self, engine_id: &EngineId) -> Result<()> {
        let engine_id = engine_id.as_str();
        let Some((key, entry)) = self.find(engine_id) else {
            return Ok(());
        };
        lock(&self.sandboxes).remove(&key);
        let _ = lock(&entry.child).start_kill();
        let deadline = tokio::time::Instant::now() + KILL_BOUND;
        while matches!(lock(&entry.child).try_wait(), Ok(None))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let dir = entry.dir.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(Error::internal)?;
        match removed {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::internal(format!(
                "cannot remove local sandbox {key}'s directory: {err}"
            ))),
        }
    }

    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>> {
        let entries: Vec<(String, Arc<Entry>)> = lock(&self.sandboxes)
            .iter()
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        Ok(entries
            .into_iter()
            .filter(|(_, entry)| {
                entry.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(instance)
            })
            .map(|(engine_id, entry)| ManagedContainer {
                engine_id: engine_id.into(),
                labels: entry.labels.clone(),
                state: state_of(&entry).state,
            })
            .collect())
    }

    async fn disk_limits(&self) -> Result<DiskLimits> {
        Ok(DiskLimits {
            enforced: false,
            reason: Some(
                "the local backend (a test backend) enforces no limits: a sandbox writes to the host's disk"
                    .to_owned(),
            ),
            memory_bytes: None,
            store_bytes: None,
        })
    }

    async fn inspect(&self, engine_id: &EngineId) -> Result<Option<ContainerInfo>> {
        let engine_id = engine_id.as_str();
        Ok(self.find(engine_id).map(|(_, entry)| state_of(&entry)))
    }
}

/// A sandbox's state, from its process.
fn state_of(entry: &Entry) -> ContainerInfo {
    match lock(&entry.child).try_wait() {
        Ok(None) => ContainerInfo {
            state: ContainerState::Running,
            oom_killed: false,
            exit_code: None,
        },
        Ok(Some(status)) => ContainerInfo {
            state: ContainerState::Exited,
            oom_killed: false,
            exit_code: status
                .code()
                .map(i64::from)
                .or_else(|| status.signal().map(|signal| 128 + i64::from(signal))),
        },
        Err(_) => ContainerInfo {
            state: ContainerState::Exited,
            oom_killed: false,
            exit_code: None,
        },
    }
}

/// One end of a pipe to an agent, lent to a connection: dropped, it goes back to its
/// sandbox, so that a later connection can attach again (the agent keeps serving
/// across a closed stdin, as it does across a Docker detach).
struct Lent<T> {
    inner: Option<T>,
    home: Arc<Mutex<Option<T>>>,
}

impl<T> Lent<T> {
    fn new(inner: T, home: Arc<Mutex<Option<T>>>) -> Self {
        Self {
            inner: Some(inner),
            home,
        }
    }

    fn inner(&mut self) -> std::io::Result<&mut T> {
        self.inner
            .as_mut()
            .ok_or_else(|| std::io::Error::other("returned to its sandbox"))
    }
}

impl<T> Drop for Lent<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            *lock(&self.home) = Some(inner);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lent<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_read(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Lent<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Not passed on: shutting the agent's stdin would end what a later
        // connection could read from it; the pipe stays open for a re-attach.
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_lent_pipe_goes_back_to_its_sandbox_when_dropped() {
        let (near, mut far) = tokio::io::duplex(64);
        let home = Arc::new(Mutex::new(None));
        let mut lent = Lent::new(near, home.clone());
        lent.write_all(b"first").await.unwrap();
        // A shutdown is not passed on: the pipe stays open for the next connection.
        lent.shutdown().await.unwrap();
        drop(lent);
        let mut again = Lent::new(lock(&home).take().expect("returned"), home.clone());
        again.write_all(b" second").await.unwrap();
        drop(again);
        let mut read = vec![0; 12];
        far.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"first second");
        assert!(lock(&home).is_some());
    }
}
