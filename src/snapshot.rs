//! Snapshot records: one JSON file per snapshot under `DATA_DIR/snapshots`, each
//! naming an image of the engine's made from a sandbox (`repobox-snapshot/<instance>:
//! <id>`). A record is written only once its image exists, and the image is removed
//! if the record cannot be: reconciliation at start removes images without a record
//! and forgets records without an image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::registry::write_atomically;
use crate::sync::{Locked as _, RwLocked as _};

/// A sandbox's filesystem at one moment, as an image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// `snap-<n>`, never reused.
    pub snapshot_id: String,
    /// A name given at creation (the id when none was).
    pub name: String,
    /// The sandbox it was made from.
    pub source_container_id: String,
    /// The source's repository (credentials removed).
    pub repo_url: String,
    /// The source's branch (null for a detached HEAD).
    pub branch: Option<String>,
    /// The source's checked-out commit.
    pub resolved_commit: String,
    /// The snapshot's image on the engine.
    pub image: String,
    /// What the image adds to the engine's disk, in bytes.
    pub size_bytes: u64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The engine's id of the image.
    #[serde(default)]
    pub image_id: String,
}

/// All snapshots of this instance.
pub struct Snapshots {
    dir: PathBuf,
    seq_file: PathBuf,
    records: RwLock<HashMap<String, Arc<Snapshot>>>,
    /// Held from a snapshot's number to its record (or its failure): the count and the
    /// sequence change together.
    admission: Mutex<Admission>,
}

struct Admission {
    next: u64,
    pending: std::collections::HashSet<String>,
}

/// A snapshot being made: counted until it is recorded or dropped.
pub struct Pending<'a> {
    snapshots: &'a Snapshots,
    /// Its id.
    pub id: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut admission = self.snapshots.admission.locked();
        admission.pending.remove(&self.id);
    }
}

impl Snapshots {
    /// Opens the store under `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&dir)?;
        let seq_file = data_dir.join("snapshot-sequence");
        let next = match std::fs::read_to_string(&seq_file) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(1),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 1,
            Err(err) => return Err(err.into()),
        };
        let mut records = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<Snapshot>(&bytes)?))
            {
                Ok(snapshot) => {
                    records.insert(snapshot.snapshot_id.clone(), Arc::new(snapshot));
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "setting aside an unreadable snapshot record");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        Ok(Self {
            dir,
            seq_file,
            records: RwLock::new(records),
            admission: Mutex::new(Admission {
                next,
                pending: std::collections::HashSet::new(),
            }),
        })
    }

    /// Counts a new snapshot against `max` (429 beyond) and gives it an id.
    pub fn reserve(&self, max: usize) -> Result<Pending<'_>> {
        let mut admission = self.admission.locked();
        if self.len() + admission.pending.len() >= max {
            return Err(Error::LimitReached(format!(
                "the limit of {max} snapshots (MAX_SNAPSHOTS) is reached; delete one first"
            )));
        }
        let id = format!("snap-{}", admission.next);
        write_atomically(&self.seq_file, (admission.next + 1).to_string().as_bytes())
            .map_err(|err| Error::internal(format!("reserving a snapshot id: {err}")))?;
        admission.next += 1;
        admission.pending.insert(id.clone());
        Ok(Pending {
            snapshots: self,
            id,
        })
    }

    /// Writes and registers a snapshot whose image exists.
    pub async fn insert(&self, snapshot: Snapshot, pending: Pending<'_>) -> Result<Arc<Snapshot>> {
        let path = self.dir.join(format!("{}.json", snapshot.snapshot_id));
        let bytes = serde_json::to_vec_pretty(&snapshot)
            .map_err(|err| Error::internal(format!("encoding snapshot record: {err}")))?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|err| Error::internal(format!("record writer: {err}")))?
            .map_err(|err| Error::internal(format!("writing snapshot record: {err}")))?;
        let snapshot = Arc::new(snapshot);
        {
            let _admission = self.admission.locked();
            self.write()
                .insert(snapshot.snapshot_id.clone(), snapshot.clone());
        }
        drop(pending);
        Ok(snapshot)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Snapshot>>> {
        self.records.write_locked()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Snapshot>>> {
        self.records.read_locked()
    }

    /// Whether the snapshot `id` is being made.
    pub fn is_pending(&self, id: &str) -> bool {
        self.admission.locked().pending.contains(id)
    }

    /// A snapshot by id, or 404.
    pub fn get(&self, id: &str) -> Result<Arc<Snapshot>> {
        self.read()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::SnapshotNotFound(format!("no snapshot with id {id}")))
    }

    /// Every snapshot, oldest first.
    pub fn all(&self) -> Vec<Arc<Snapshot>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by_key(|snapshot| {
            (
                snapshot.created_at,
                snapshot.snapshot_id[5..].parse::<u64>().unwrap_or(0),
            )
        });
        all
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a snapshot (its record file too).
    pub fn remove(&self, id: &str) {
        if self.write().remove(id).is_some() {
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
        }
    }
}
