//! The sandbox registry: records in memory, persisted one JSON file per sandbox under
//! `DATA_DIR/sandboxes`, and ids that are never reused.
//!
//! A record is written (atomically: temp file + rename) only once its sandbox is
//! usable, so a record on disk is the commit point of a create: a labelled container
//! without one is the leftover of an interrupted create. The in-memory map sits behind a
//! std `RwLock` that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Network;
use crate::error::{Error, Result};
use crate::exec::ExecResult;
use crate::id::{EngineId, SandboxId};
use crate::sync::{Locked as _, RwLocked as _};

/// Resources granted to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// CPUs (fractions allowed).
    pub cpus: f64,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Process limit.
    pub pids: i64,
    /// What the sandbox may write, in MiB (`None`: not limited, because the engine
    /// cannot enforce it).
    #[serde(default)]
    pub disk_mb: Option<u64>,
}

/// What the server keeps about one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    /// Our id (also the container's name).
    pub id: SandboxId,
    /// The backend's id for it (a container's id, a child process's own id); records
    /// written before the backend split call it `docker_id`.
    #[serde(alias = "docker_id")]
    pub engine_id: EngineId,
    /// Repository URL, without credentials.
    pub repo_url: String,
    /// Branch checked out (`None`: detached HEAD).
    pub branch: Option<String>,
    /// Commit as requested.
    pub commit: Option<String>,
    /// Full SHA of HEAD after checkout.
    pub resolved_commit: String,
    /// When the create was accepted.
    pub created_at: DateTime<Utc>,
    /// When the sandbox is destroyed automatically.
    pub expires_at: Option<DateTime<Utc>>,
    /// Image it runs.
    pub image: String,
    /// Network mode.
    pub network: Network,
    /// Resource limits.
    pub resources: Resources,
    /// Result of the initial command, if one was given.
    pub initial_command_result: Option<ExecResult>,
    /// `environment_vars`: given by the agent to every command (a command's own
    /// `environment` wins). Records from before the pool have none here: their
    /// containers carry it instead.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The job this sandbox runs an entry of (`None`: made by a client).
    #[serde(default)]
    pub job_id: Option<String>,
    /// The built image (`POST /images`) it runs on.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Commits of history its checkout's `.git` holds (`None`: all).
    #[serde(default)]
    pub depth: Option<u32>,
    /// Hosts it reaches through the egress proxy (`network` is then none); `None`: no
    /// proxy.
    #[serde(default)]
    pub egress: Option<Vec<String>>,
    /// Its proxy's recent decisions (not stored: they start over with the server).
    #[serde(skip)]
    pub egress_log: crate::egress::EgressLog,
}

impl Sandbox {
    /// The environment of a command in this sandbox: the sandbox's, then the
    /// command's own over it.
    pub fn command_env(&self, own: Vec<(String, String)>) -> Vec<(String, String)> {
        if self.env.is_empty() {
            return own;
        }
        let mut merged = self.env.clone();
        merged.extend(own);
        merged.into_iter().collect()
    }
}

/// Ids are `repo-container-<unix seconds>-<sequence>`; the sequence never repeats,
/// across restarts too, because blocks of it are reserved on disk before use.
const ID_BLOCK: u64 = 1000;

struct IdSequence {
    next: u64,
    reserved_until: u64,
}

/// All live sandboxes.
pub struct Registry {
    instance: String,
    dir: PathBuf,
    seq_file: PathBuf,
    sandboxes: RwLock<HashMap<SandboxId, Arc<Sandbox>>>,
    ids: Mutex<IdSequence>,
    /// Creates under way. Read and changed only under `admission`, together with the
    /// map's length, so that the two are never seen half-updated.
    pending: AtomicUsize,
    /// Held while admitting a create and while a create turns into a record: the
    /// `MAX_CONTAINERS` check sees live and pending sandboxes as one count.
    admission: Mutex<()>,
    creating: Mutex<HashSet<SandboxId>>,
}

impl Registry {
    /// Opens the store under `data_dir`, loading every record. Unreadable records are
    /// set aside (renamed `*.corrupt`), never silently deleted.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("sandboxes");
        std::fs::create_dir_all(&dir)?;
        let seq_file = data_dir.join("id-sequence");
        let start = match std::fs::read_to_string(&seq_file) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(err.into()),
        };
        let mut sandboxes = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            match path.extension().and_then(|ext| ext.to_str()) {
                Some("json") => {}
                Some("tmp") => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                _ => continue,
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<Sandbox>(&bytes)?))
            {
                Ok(sandbox) => {
                    sandboxes.insert(sandbox.id.clone(), Arc::new(sandbox));
                }
                Err(err) => {
                    tracing::error!(path = %path.display(), %err, "unreadable sandbox record set aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        let instance = instance_id(data_dir)?;
        let registry = Self {
            instance,
            dir,
            seq_file,
            sandboxes: RwLock::new(sandboxes),
            ids: Mutex::new(IdSequence {
                next: start,
                reserved_until: start,
            }),
            pending: AtomicUsize::new(0),
            admission: Mutex::new(()),
            creating: Mutex::new(HashSet::new()),
        };
        Ok(registry)
    }

    /// This instance's id: made once, kept in `DATA_DIR/instance-id`, and put on every
    /// container as a label so that reconciliation only ever touches our own.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A new id, unique forever.
    pub fn next_id(&self, now: DateTime<Utc>) -> Result<String> {
        let mut ids = self.ids.locked();
        if ids.next >= ids.reserved_until {
            let until = ids.next + ID_BLOCK;
            write_atomically(&self.seq_file, until.to_string().as_bytes())
                .map_err(|err| Error::internal(format!("reserving ids: {err}")))?;
            ids.reserved_until = until;
        }
        let seq = ids.next;
        ids.next += 1;
        Ok(format!("repo-container-{}-{seq}", now.timestamp()))
    }

    /// Reserves room for one more sandbox, or answers 429. The slot is freed when
    /// the returned guard is dropped (a create that fails) or turns into a record.
    pub fn reserve(&self, max: usize) -> Result<Slot<'_>> {
        let _admission = self.admission.locked();
        if self.len() + self.pending.load(Ordering::SeqCst) >= max {
            return Err(Error::TooManyContainers(max));
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            registry: self,
            id: None,
            pending: true,
        })
    }

    /// Whether a create of `id` is under way (its container may exist, its record not
    /// yet): reconciliation must leave such a container alone.
    pub fn is_creating(&self, id: &SandboxId) -> bool {
        self.creating.locked().contains(id)
    }

    /// Number of live sandboxes.
    pub fn len(&self) -> usize {
        self.sandboxes.read_locked().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One sandbox.
    pub fn get(&self, id: &SandboxId) -> Option<Arc<Sandbox>> {
        self.sandboxes.read_locked().get(id).cloned()
    }

    /// Every sandbox, oldest first.
    pub fn all(&self) -> Vec<Arc<Sandbox>> {
        let mut all: Vec<_> = self.sandboxes.read_locked().values().cloned().collect();
        all.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        all
    }

    /// Replaces a live sandbox's record: written to disk (atomically) before the map
    /// changes, so what a client is told has been persisted. `None` when it is gone.
    pub async fn update(
        &self,
        id: &SandboxId,
        change: impl FnOnce(&mut Sandbox),
    ) -> Result<Option<Arc<Sandbox>>> {
        let Some(current) = self.get(id) else {
            return Ok(None);
        };
        let mut sandbox = (*current).clone();
        change(&mut sandbox);
        self.persist(&sandbox).await?;
        let sandbox = Arc::new(sandbox);
        let mut map = self.sandboxes.write_locked();
        if !map.contains_key(id) {
            // Destroyed meanwhile: its record must not come back.
            drop(map);
            let _ = std::fs::remove_file(self.record_path(id));
            return Ok(None);
        }
        map.insert(sandbox.id.clone(), sandbox.clone());
        Ok(Some(sandbox))
    }

    /// Writes a sandbox's record (atomically, on a blocking thread).
    async fn persist(&self, sandbox: &Sandbox) -> Result<()> {
        let path = self.record_path(&sandbox.id);
        let bytes = serde_json::to_vec_pretty(sandbox)
            .map_err(|err| Error::internal(format!("encoding record: {err}")))?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|err| Error::internal(format!("record writer: {err}")))?
            .map_err(|err| Error::internal(format!("writing sandbox record: {err}")))
    }

    /// Persists and registers a sandbox whose create has finished.
    pub async fn insert(&self, sandbox: Sandbox, mut slot: Slot<'_>) -> Result<Arc<Sandbox>> {
        self.persist(&sandbox).await?;
        let sandbox = Arc::new(sandbox);
        {
            // From pending to live in one step, as the admission check sees it.
            let _admission = self.admission.locked();
            self.sandboxes
                .write_locked()
                .insert(sandbox.id.clone(), sandbox.clone());
            self.pending.fetch_sub(1, Ordering::SeqCst);
            slot.pending = false;
        }
        drop(slot);
        Ok(sandbox)
    }

    /// Forgets a sandbox and deletes its record; returns it if it was there.
    pub fn remove(&self, id: &SandboxId) -> Option<Arc<Sandbox>> {
        // Only ids we registered name files: a client's id never becomes a path.
        let removed = self.sandboxes.write_locked().remove(id)?;
        let path = self.record_path(&removed.id);
        let id = id.to_owned();
        crate::off_the_workers(move || {
            if let Err(err) = std::fs::remove_file(&path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%id, %err, "could not delete sandbox record");
            }
        });
        Some(removed)
    }

    fn record_path(&self, id: &SandboxId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
}

/// A reserved place for a sandbox being created.
pub struct Slot<'a> {
    registry: &'a Registry,
    id: Option<SandboxId>,
    /// Still counted as a pending create.
    pending: bool,
}

impl Slot<'_> {
    /// Takes a new id for the sandbox being created, marking it as being created
    /// until the slot is dropped.
    pub fn assign_id(&mut self, now: DateTime<Utc>) -> Result<SandboxId> {
        let id = SandboxId::new(self.registry.next_id(now)?);
        self.registry.creating.locked().insert(id.clone());
        self.id = Some(id.clone());
        Ok(id)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            self.registry.creating.locked().remove(id);
        }
        if self.pending {
            let _admission = self.registry.admission.locked();
            self.registry.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err.into()),
    }
    // Unique enough without a random source: where, who and when.
    use sha2::Digest;
    let seed = format!(
        "{}:{}:{:?}",
        std::fs::canonicalize(data_dir)?.display(),
        std::process::id(),
        std::time::SystemTime::now()
    );
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let id: String = digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    write_atomically(&path, id.as_bytes())?;
    Ok(id)
}

/// Writes a whole file or nothing. Readable by the owner only: a record holds the
/// sandbox's environment, which may carry secrets.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let first: Vec<String> = {
            let registry = Registry::open(dir.path()).unwrap();
            (0..3).map(|_| registry.next_id(now).unwrap()).collect()
        };
        let registry = Registry::open(dir.path()).unwrap();
        let second = registry.next_id(now).unwrap();
        assert!(!first.contains(&second), "{second} reused");
        assert!(second.starts_with(&format!("repo-container-{}-", now.timestamp())));
        assert_eq!(registry.instance().len(), 16);
        assert_eq!(
            Registry::open(dir.path()).unwrap().instance(),
            registry.instance(),
            "instance id is stable"
        );
    }

    #[test]
    fn slots_enforce_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let a = registry.reserve(2).unwrap();
        let _b = registry.reserve(2).unwrap();
        assert!(matches!(
            registry.reserve(2),
            Err(Error::TooManyContainers(2))
        ));
        drop(a);
        assert!(registry.reserve(2).is_ok());
    }

    fn record(id: SandboxId) -> Sandbox {
        Sandbox {
            id,
            engine_id: "engine".into(),
            repo_url: "https://example.com/r".into(),
            branch: None,
            commit: None,
            resolved_commit: "0".repeat(40),
            created_at: Utc::now(),
            expires_at: None,
            image: "img".into(),
            network: Network::None,
            resources: Resources {
                cpus: 1.0,
                memory_mb: 64,
                pids: 64,
                disk_mb: None,
            },
            initial_command_result: None,
            job_id: None,
            image_id: None,
            env: BTreeMap::new(),
            depth: None,
            egress: None,
            egress_log: Default::default(),
        }
    }

    #[test]
    fn records_written_before_the_backend_split_still_read() {
        let mut old = serde_json::to_value(record("a".into())).unwrap();
        let object = old.as_object_mut().unwrap();
        let id = object.remove("engine_id").unwrap();
        object.insert("docker_id".into(), id);
        let read: Sandbox = serde_json::from_value(old).unwrap();
        assert_eq!(read.engine_id, "engine");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_never_pass_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::open(dir.path()).unwrap());
        let attempts = (0..60).map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let Ok(mut slot) = registry.reserve(5) else {
                    return false;
                };
                let id = slot.assign_id(Utc::now()).unwrap();
                tokio::task::yield_now().await;
                registry.insert(record(id), slot).await.unwrap();
                true
            })
        });
        let admitted = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|ok| *ok.as_ref().unwrap())
            .count();
        assert_eq!(admitted, 5);
        assert_eq!(registry.len(), 5);
    }
}

#[cfg(test)]
mod creating {
    use super::*;

    #[test]
    fn an_assigned_id_is_creating_until_its_slot_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let mut slot = registry.reserve(5).unwrap();
        let id = slot.assign_id(Utc::now()).unwrap();
        assert!(registry.is_creating(&id));
        drop(slot);
        assert!(!registry.is_creating(&id));
    }
}
