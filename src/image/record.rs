//! A built image's record and its build: what `/images` shows, the build's log, and
//! the request that made it.

use super::*;

/// What an image is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildFrom {
    /// The repository's `Dockerfile` (or the one given).
    Dockerfile,
    /// `.devcontainer/devcontainer.json` or `.devcontainer.json`.
    Devcontainer,
}

/// An image's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// Being built (or pulled).
    Building,
    /// Usable by sandboxes.
    Ready,
    /// The build failed (see `error`).
    Failed,
}

/// An image made from a repository's recipe.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// `img-<hash>`: the same repository, tree and recipe give the same id.
    pub image_id: String,
    /// `building`, `ready` or `failed`.
    pub status: ImageStatus,
    /// The repository (credentials removed).
    pub repo_url: String,
    /// The branch the commit was found on (null for a commit given alone and off
    /// the default branch).
    pub branch: Option<String>,
    /// The commit the recipe and context were read from.
    pub resolved_commit: String,
    /// `dockerfile` or `devcontainer`.
    pub from: BuildFrom,
    /// The image's reference on the engine.
    pub image: String,
    /// Its size on the engine in bytes (0 until ready).
    pub size_bytes: u64,
    /// When the build was asked for.
    pub created_at: DateTime<Utc>,
    /// When it ended (null while building).
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, with the tail of the build's output.
    pub error: Option<String>,
    /// (ext) Path of the Dockerfile in the repository (null for a devcontainer's
    /// `image`).
    pub dockerfile: Option<String>,
    /// (ext) The devcontainer's `containerEnv`: the environment of sandboxes made
    /// from the image (a create's own `environment_vars` win).
    #[serde(default)]
    pub container_env: BTreeMap<String, String>,
    /// (ext) The devcontainer's `postCreateCommand`: the `initial_command` of
    /// sandboxes made from the image that give none.
    pub post_create_command: Option<String>,
    /// Built here (not a devcontainer's `image`, pulled): the image is ours to remove.
    #[serde(default)]
    #[schema(ignore)]
    pub built: bool,
}

/// A validated `POST /images`.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The repository.
    pub repo: RepoUrl,
    /// Branch (`None`: the default branch).
    pub branch: Option<String>,
    /// Commit (lowercase hex).
    pub commit: Option<String>,
    /// The recipe.
    pub from: BuildFrom,
    /// Path of the Dockerfile (`from: dockerfile`).
    pub dockerfile: Option<String>,
    /// Build arguments (over a devcontainer's `build.args`).
    pub build_args: BTreeMap<String, String>,
}

/// A build's output so far, the newest [`LOG_BYTES`] of it.
#[derive(Default)]
pub(super) struct BuildLog {
    pub(super) text: String,
    /// Bytes dropped from the front: offsets are counted from the first byte ever.
    pub(super) dropped: usize,
}

impl BuildLog {
    pub(super) fn push(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        if self.text.len() > LOG_BYTES {
            let mut cut = self.text.len() - LOG_BYTES;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.dropped += cut;
        }
    }

    /// What follows absolute offset `from`, and the offset after it.
    pub(super) fn since(&self, from: usize) -> (String, usize) {
        let start = from.saturating_sub(self.dropped).min(self.text.len());
        let mut start = start;
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        (
            self.text[start..].to_owned(),
            self.dropped + self.text.len(),
        )
    }

    pub(super) fn tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// One image: its record, its output, and a signal of changes to either.
pub struct Build {
    pub(super) record: RwLock<Image>,
    pub(super) log: Mutex<BuildLog>,
    pub(super) changed: tokio::sync::watch::Sender<u64>,
}

impl Build {
    pub(super) fn new(record: Image, log: String) -> Self {
        let mut kept = BuildLog::default();
        kept.push(&log);
        Self {
            record: RwLock::new(record),
            log: Mutex::new(kept),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// The record as it is now.
    pub fn record(&self) -> Image {
        self.record.read_locked().clone()
    }

    /// The output after absolute offset `from`, the next offset, and whether the
    /// build has ended (so nothing more will come).
    pub fn output_since(&self, from: usize) -> (String, usize, bool) {
        let finished = self.record().status != ImageStatus::Building;
        let (text, next) = self.lock_log().since(from);
        (text, next, finished)
    }

    /// Resolves when the record or the output changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(super) fn lock_log(&self) -> std::sync::MutexGuard<'_, BuildLog> {
        self.log.locked()
    }

    pub(super) fn append(&self, chunk: &str) {
        self.lock_log().push(chunk);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut Image)) -> Image {
        let record = {
            let mut record = self.record.write_locked();
            change(&mut record);
            record.clone()
        };
        self.changed.send_modify(|n| *n += 1);
        record
    }
}
