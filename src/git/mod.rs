//! Git, done on the server: input policy, the mirror cache, and checkouts.
//!
//! A repository is fetched into a bare mirror under `CACHE_DIR/mirrors` (one per URL,
//! keyed by a hash of it). Creates of the same repository share one fetch: they queue
//! on the mirror's lock, and whoever gets it after a fetch that *started after they
//! arrived* reuses that fetch instead of running another. A checkout is a local clone
//! of the mirror (hard links, no copying of objects) into a private temporary
//! directory, which is then streamed into the container as a tar and removed.
//!
//! Everything a client sends is data: URLs are parsed and matched against
//! `ALLOWED_GIT_HOSTS`, ref names are validated the way `git check-ref-format` does,
//! every argument is passed after `--` or in a position git cannot read as an option,
//! nothing goes through a shell, prompts are disabled, protocols are restricted to
//! http(s), and every git process has a deadline.

mod credentials;
pub use credentials::Credentials;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::process::Command;
use url::Url;

use crate::archive;
use crate::error::{Error, Result};
use crate::sync::Locked as _;

/// Longest ref name or URL we accept.
const MAX_NAME_LEN: usize = 255;
const MAX_URL_LEN: usize = 2048;
/// Longest piece of git's stderr we put into an error.
const MAX_GIT_MESSAGE: usize = 1000;

/// A repository URL that passed the policy.
#[derive(Clone)]
pub struct RepoUrl {
    url: Url,
    redacted: String,
}

impl std::fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl RepoUrl {
    /// Parses `raw` and checks it against the allowed hosts.
    pub fn parse(raw: &str, allowed_hosts: &[String]) -> Result<Self> {
        if raw.len() > MAX_URL_LEN {
            return Err(Error::invalid(format!(
                "repo_url is longer than {MAX_URL_LEN} characters"
            )));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::invalid(
                "repo_url must not contain whitespace or control characters",
            ));
        }
        let url = Url::parse(raw).map_err(|err| {
            Error::invalid(format!("repo_url is not an absolute http(s) URL ({err}); scp-style and local paths are not accepted"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(format!(
                "repo_url scheme {:?} is not allowed; use http or https",
                url.scheme()
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(Error::invalid("repo_url has no host"));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let redacted = redact(&url);
        if !host_allowed(&host, port, allowed_hosts) {
            return Err(Error::invalid(format!(
                "repo_url host {host:?} is not in ALLOWED_GIT_HOSTS ({})",
                allowed_hosts.join(", ")
            )));
        }
        Ok(Self { url, redacted })
    }

    /// The URL without credentials: safe to log, store and return.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The URL as given (may hold credentials): only ever passed to git.
    fn secret(&self) -> &str {
        self.url.as_str()
    }

    /// The URL's credentials as git's `http.extraHeader` setting (basic auth), so that
    /// a clone can name the URL without them: `clone` writes the URL it is given into
    /// the new repository's config, on the server's disk. `None` without credentials.
    fn auth_setting(&self) -> Option<String> {
        use base64::Engine as _;
        if self.url.username().is_empty() && self.url.password().is_none() {
            return None;
        }
        let user = percent_decoded(self.url.username());
        let password = percent_decoded(self.url.password().unwrap_or(""));
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("http.extraHeader=Authorization: Basic {token}"))
    }

    /// Cache key: a hash of the full URL, so two credentials never share a mirror.
    fn key(&self) -> String {
        let digest = Sha256::digest(self.url.as_str().as_bytes());
        digest
            .iter()
            .take(12)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// `%XX` escapes decoded (lossy UTF-8); a malformed escape is kept as it is.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn redact(url: &Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

fn host_allowed(host: &str, port: u16, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry == "*" {
            return true;
        }
        // `host`, `host:port`, `[v6]` or `[v6]:port`.
        let (entry_host, entry_port) = match entry.rsplit_once(':') {
            Some((h, p))
                if !h.is_empty()
                    && p.chars().all(|c| c.is_ascii_digit())
                    && (!h.contains(':') || h.ends_with(']')) =>
            {
                (h, p.parse::<u16>().ok())
            }
            _ => (entry.as_str(), None),
        };
        let entry_host = entry_host.trim_start_matches('[').trim_end_matches(']');
        entry_host == host && entry_port.is_none_or(|p| p == port)
    })
}

/// Checks a branch name the way `git check-ref-format --branch` would.
pub fn validate_branch(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "branch {name:?} is not a valid branch name: {why}"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is too long");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    if name == "@" || name == "HEAD" {
        return bad("it is reserved");
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return bad("it contains '..', '@{' or '//'");
    }
    if name.ends_with('/') || name.ends_with('.') || name.starts_with('/') {
        return bad("it starts or ends with '/' or ends with '.'");
    }
    if name
        .chars()
        .any(|c| c.is_ascii_control() || c == '\u{7f}' || " ~^:?*[\\".contains(c))
    {
        return bad("it contains a space, a control character or one of ~^:?*[\\");
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return bad("a component starts with '.' or ends with '.lock'");
    }
    Ok(())
}

/// Checks a commit: 7 to 64 hex digits. Returns it lowercased.
pub fn validate_commit(commit: &str) -> Result<String> {
    if !(7..=64).contains(&commit.len()) || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "commit {commit:?} is not a commit SHA: use 7 to 40 hexadecimal digits"
        )));
    }
    Ok(commit.to_ascii_lowercase())
}

/// Checks a commit-ish a client names (`main`, `v1.2`, `HEAD~3`, a SHA): any git
/// revision that cannot be read as an option or hold what a shell or git's own syntax
/// would take for more than one revision; whether it resolves is git's to say (422).
pub fn validate_commitish(rev: &str) -> Result<String> {
    let bad = rev.is_empty()
        || rev.len() > MAX_NAME_LEN
        || rev.starts_with('-')
        || rev.contains("..")
        || rev
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, ':' | '\\'));
    if bad {
        return Err(Error::invalid(format!(
            "base {rev:?} is not a revision: name a commit, branch, tag or an expression such as HEAD~3 (no leading '-', no '..', ':', spaces or control characters)"
        )));
    }
    Ok(rev.to_owned())
}

/// What `git ls-remote --symref` says of a remote.
#[derive(Debug, Default, PartialEq, Eq)]
struct Advertised {
    /// The branch `HEAD` names.
    head: Option<String>,
    /// Branches and tags (not their peeled `^{}` lines), by name.
    refs: BTreeMap<String, String>,
}

impl Advertised {
    fn parse(out: &str) -> Self {
        let mut advertised = Self::default();
        for line in out.lines() {
            if let Some(symref) = line.strip_prefix("ref: ") {
                if let Some((target, "HEAD")) = symref.split_once('\t') {
                    advertised.head = target.strip_prefix("refs/heads/").map(str::to_owned);
                }
                continue;
            }
            let Some((sha, name)) = line.split_once('\t') else {
                continue;
            };
            if (name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
                && !name.ends_with("^{}")
            {
                advertised.refs.insert(name.to_owned(), sha.to_owned());
            }
        }
        advertised
    }
}

/// A checkout ready to be put into a container.
#[derive(Debug)]
pub struct Checkout {
    /// Where its tree is.
    pub tree: Tree,
    /// The branch checked out; `None` for a detached HEAD.
    pub branch: Option<String>,
    /// Full SHA of HEAD.
    pub commit: String,
    /// Whether the mirror was already there (no full fetch was needed).
    pub cache_hit: bool,
}

/// Where a checkout's tree (working tree with `.git`) is.
#[derive(Debug)]
pub enum Tree {
    /// Already packed: a tar in the tree cache, from an earlier create of the same
    /// repository state, held open from the lookup so that an eviction meanwhile
    /// cannot take it away.
    Cached(std::fs::File),
    /// Freshly checked out into a temporary directory (removed on drop); packing it
    /// also stores the tar at `cache_as` for the next create.
    Fresh {
        /// The working tree.
        dir: TempDir,
        /// Where its tar goes in the tree cache.
        cache_as: PathBuf,
    },
}

/// A repository state resolved in its mirror.
struct Located {
    mirror: PathBuf,
    key: String,
    branch: Option<String>,
    commit: String,
    cache_hit: bool,
    _in_use: MirrorUse,
}

/// A commit of a mirrored repository, read without a checkout (see
/// [`GitCache::source`]). Its mirror is kept from eviction while it lives.
pub struct Source<'a> {
    cache: &'a GitCache,
    located: Located,
}

impl Source<'_> {
    /// The full SHA of the commit.
    pub fn commit(&self) -> &str {
        &self.located.commit
    }

    /// The branch it was found on; `None` for a commit off the default branch.
    pub fn branch(&self) -> Option<&str> {
        self.located.branch.as_deref()
    }

    /// The contents of the file at `path` (relative to the repository's root) in the
    /// commit; `None` when there is no file there.
    pub async fn read(&self, path: &str) -> Result<Option<String>> {
        let spec = format!("{}:{path}", self.located.commit);
        match self.object_type(&spec).await?.as_deref() {
            Some("blob") => {}
            _ => return Ok(None),
        }
        let text = self
            .cache
            .git(
                Some(&self.located.mirror),
                &["cat-file", "blob", &spec],
                None,
            )
            .await?;
        Ok(Some(text))
    }

    /// The id of the tree at `path` (`""`: the root) in the commit; `None` when that
    /// is not a directory.
    pub async fn tree(&self, path: &str) -> Result<Option<String>> {
        let spec = format!("{}:{path}", self.located.commit);
        if self.object_type(&spec).await?.as_deref() != Some("tree") {
            return Ok(None);
        }
        // (`<commit>:<path>` names the tree itself: a suffix would be part of the path.)
        self.cache.resolve(&self.located.mirror, &spec).await
    }

    async fn object_type(&self, spec: &str) -> Result<Option<String>> {
        match self
            .cache
            .git_raw(Some(&self.located.mirror), &["cat-file", "-t", spec], None)
            .await
        {
            Ok(out) => Ok(Some(out.trim().to_owned())),
            // No such path in the commit.
            Err(GitFailure::Exit { .. }) => Ok(None),
            Err(failure) => Err(failure.into_error(None)),
        }
    }

    /// The tree `tree` (an id from [`Self::tree`]) as a tar stream (`git archive`),
    /// entries relative to it, without `.git`. The stream ends with an error if git
    /// fails; `git` is killed when the stream is dropped.
    pub fn archive(self, tree: &str) -> Result<crate::backend::BodyStream> {
        let mut command = GitCache::command(Some(&self.located.mirror));
        command.args(["archive", "--format=tar", tree]);
        let (mut child, stdout) = spawn_reading(command)?;
        let body = tokio_util::io::ReaderStream::new(stdout);
        // The mirror stays in use (never evicted) until the archive has been read.
        let in_use = self.located;
        let ended = futures_util::StreamExt::filter_map(
            futures_util::stream::once(async move {
                let _in_use = in_use;
                match child.wait().await {
                    Ok(status) if status.success() => None,
                    Ok(status) => Some(Err(std::io::Error::other(format!(
                        "git archive failed ({status})"
                    )))),
                    Err(err) => Some(Err(err)),
                }
            }),
            std::future::ready,
        );
        Ok(Box::pin(futures_util::StreamExt::chain(body, ended)))
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.0);
        crate::off_the_workers(move || {
            if let Err(err) = std::fs::remove_dir_all(&path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %err, "could not remove a temporary checkout");
            }
        });
    }
}

/// What one mirror's lock guards.
#[derive(Default)]
struct MirrorState {
    /// When the last successful fetch started.
    fetched_at: Option<Instant>,
}

/// The mirrors in use, by key: each one's lock and how many checkouts use it. An
/// entry lives while a checkout uses its mirror (the table stays as small as the
/// work in flight), and a mirror with an entry is never evicted.
type MirrorTable = Arc<Mutex<HashMap<String, (Arc<tokio::sync::Mutex<MirrorState>>, usize)>>>;

/// One checkout's use of a mirror: keeps it from eviction until dropped.
struct MirrorUse {
    table: MirrorTable,
    key: String,
}

impl MirrorUse {
    fn new(table: &MirrorTable, key: &str) -> (Self, Arc<tokio::sync::Mutex<MirrorState>>) {
        let mut locks = table.locked();
        let entry = locks.entry(key.to_owned()).or_default();
        entry.1 += 1;
        let lock = entry.0.clone();
        (
            Self {
                table: table.clone(),
                key: key.to_owned(),
            },
            lock,
        )
    }
}

impl Drop for MirrorUse {
    fn drop(&mut self) {
        let mut locks = self.table.locked();
        if let Some(entry) = locks.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                locks.remove(&self.key);
            }
        }
    }
}

/// Starts `command` (stderr dropped) for its stdout, which the caller reads.
fn spawn_reading(
    mut command: Command,
) -> Result<(tokio::process::Child, tokio::process::ChildStdout)> {
    command.stderr(Stdio::null());
    let mut child = command
        .spawn()
        .map_err(|err| Error::internal(format!("cannot run git: {err}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::internal("git has no stdout"))?;
    Ok((child, stdout))
}

/// Bytes an entry of `git ls-tree -l -z` takes in a tar: its size rounded up to tar's
/// 512-byte blocks (`-` for trees and submodules: nothing).
fn tree_entry_bytes(line: &[u8]) -> u64 {
    // `<mode> SP <type> SP <object> SP+ <size> TAB <path>`
    let meta = line.split(|&b| b == b'\t').next().unwrap_or_default();
    let size = meta
        .rsplit(|&b| b == b' ')
        .next()
        .and_then(|size| std::str::from_utf8(size).ok())
        .and_then(|size| size.trim().parse::<u64>().ok())
        .unwrap_or(0);
    size.div_ceil(512) * 512
}

/// Bytes of the files under `dir` (its own, not followed through links).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total += entry.metadata().map_or(0, |meta| meta.len());
                }
                _ => {}
            }
        }
    }
    total
}

/// What a mirror fetches: every branch and tag.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// In a shallow mirror: how many commits of each branch it holds.
const DEPTH_FILE: &str = "repobox-depth";

/// A shallow mirror's depth (`None`: the whole history, or no mirror).
fn mirror_depth(mirror: &Path) -> Option<u32> {
    std::fs::read_to_string(mirror.join(DEPTH_FILE))
        .ok()
        .and_then(|depth| depth.trim().parse().ok())
}

/// The mirror cache under `CACHE_DIR`.
pub struct GitCache {
    mirrors: PathBuf,
    trees: PathBuf,
    tree_cache_bytes: u64,
    /// Budget of the mirrors (`CACHE_MB`).
    cache_bytes: u64,
    tmp: PathBuf,
    timeout: Duration,
    locks: MirrorTable,
    /// `GIT_CREDENTIALS_FILE`'s, for the fetches of URLs without their own.
    credentials: Credentials,
}

impl GitCache {
    /// The hosts `GIT_CREDENTIALS_FILE` has credentials for (what `/info` shows).
    pub fn credential_hosts(&self) -> Vec<String> {
        self.credentials.hosts()
    }

    /// Opens the cache, creating its directories and clearing what an interrupted
    /// earlier run left: temporary checkouts, half-made mirrors, and git lock files.
    pub fn open(
        root: &Path,
        timeout: Duration,
        tree_cache_bytes: u64,
        cache_bytes: u64,
        credentials: Credentials,
    ) -> anyhow::Result<Self> {
        let mirrors = root.join("mirrors");
        let trees = root.join("trees");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&mirrors)?;
        std::fs::create_dir_all(&trees)?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&mirrors)? {
            let path = entry?.path();
            if path.extension() == Some(OsStr::new("git")) {
                remove_lock_files(&path);
            } else {
                // A mirror whose first fetch never finished.
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(Self {
            mirrors,
            trees,
            tree_cache_bytes,
            cache_bytes,
            tmp,
            timeout,
            locks: Arc::new(Mutex::new(HashMap::new())),
            credentials,
        })
    }

    /// Fetches (or reuses) the mirror of `repo` and checks out the requested state
    /// into a fresh temporary directory named after `label`.
    /// A checkout larger than `max_bytes` (its files, their tar headers and its
    /// history) is refused with [`Error::TooLarge`] before anything is written: the
    /// tree's size is read from the mirror's objects, so a small repository that
    /// expands (a tree of many references to one large blob) costs the host nothing.
    ///
    /// With `depth`, the checkout's `.git` holds that many commits of history (a
    /// shallow clone). A mirror made for such a request is itself shallow (a shallow
    /// fetch); it is deepened when a later request asks for more, and made whole when
    /// one asks for the whole history or for a commit by its id. A whole mirror serves
    /// any depth.
    #[allow(clippy::too_many_arguments)]
    pub async fn checkout(
        &self,
        repo: &RepoUrl,
        branch: Option<&str>,
        commit: Option<&str>,
        depth: Option<u32>,
        label: &str,
        max_bytes: u64,
    ) -> Result<Checkout> {
        let Located {
            mirror,
            key,
            branch: checkout_branch,
            commit: sha,
            cache_hit,
            _in_use,
        } = self.locate(repo, branch, commit, depth).await?;
        self.check_size(&mirror, &sha, max_bytes, depth).await?;
        self.check_out(
            repo,
            &mirror,
            &key,
            checkout_branch,
            sha,
            depth,
            cache_hit,
            label,
        )
        .await
    }

    /// Fetches (or reuses) the mirror of `repo` and resolves the requested state to a
    /// commit, without checking anything out: what a build reads its recipe and
    /// context from. The mirror is kept from eviction while the answer lives.
    pub async fn source(
        &self,
        repo: &RepoUrl,
        branch: Option<&str>,
        commit: Option<&str>,
    ) -> Result<Source<'_>> {
        Ok(Source {
            cache: self,
            located: self.locate(repo, branch, commit, None).await?,
        })
    }

    /// The mirror of `repo`, up to date, and the branch and commit requested.
    async fn locate(
        &self,
        repo: &RepoUrl,
        branch: Option<&str>,
        commit: Option<&str>,
        depth: Option<u32>,
    ) -> Result<Located> {
        // The history the mirror must hold: `depth` commits of every branch, or all
        // of it (a commit asked for by id may be anywhere in it).
        let wanted = if commit.is_some() { None } else { depth };
        let arrived = Instant::now();
        let key = repo.key();
        let mirror = self.mirrors.join(format!("{key}.git"));
        // Held to the end: the mirror is read after its lock is released.
        let (_in_use, lock) = MirrorUse::new(&self.locks, &key);
        let mut fetched = false;

        let (cache_hit, default_branch, target) = {
            let mut state = lock.lock().await;
            let cache_hit = mirror.exists();
            // A full SHA already in the mirror names immutable content: no fetch needed,
            // unless a branch must be checked for it.
            let known_commit = match (commit, branch, cache_hit) {
                (Some(sha), None, true) if sha.len() >= 40 => {
                    self.resolve(&mirror, &format!("{sha}^{{commit}}")).await?
                }
                _ => None,
            };
            let shared = state.fetched_at.is_some_and(|started| started >= arrived);
            let need_default = branch.is_none();
            let mut default_branch = None;
            if known_commit.is_none() && !shared {
                let started = Instant::now();
                if cache_hit {
                    // One round trip: the remote's refs (and its HEAD) against the
                    // mirror's; a fetch only when they differ.
                    let (remote, local) =
                        tokio::join!(self.remote_refs(repo), self.mirror_refs(&mirror));
                    let remote = remote?;
                    if remote.refs != local? {
                        // A shallow mirror stays as deep as it is.
                        self.fetch(repo, &mirror, &key, true, mirror_depth(&mirror))
                            .await?;
                        fetched = true;
                    }
                    if need_default {
                        default_branch = Some(remote.head.ok_or_else(|| {
                            Error::Checkout(
                                "the repository has no default branch (its HEAD names no branch)"
                                    .to_owned(),
                            )
                        })?);
                    }
                } else {
                    self.fetch(repo, &mirror, &key, false, wanted).await?;
                    fetched = true;
                }
                state.fetched_at = Some(started);
            }
            // A shallow mirror (made by an earlier request with `depth`) deepened to
            // what this one needs, whoever fetched last.
            if let Some(have) = mirror_depth(&mirror) {
                match wanted {
                    None => {
                        self.deepen(repo, &mirror, None).await?;
                        fetched = true;
                    }
                    Some(depth) if depth > have => {
                        self.deepen(repo, &mirror, Some(depth)).await?;
                        fetched = true;
                    }
                    Some(_) => {}
                }
            }
            if need_default && default_branch.is_none() {
                default_branch = Some(self.mirror_head(&mirror).await?);
            }
            (cache_hit, default_branch, known_commit)
        };
        // Recently used mirrors are the last to be evicted.
        if let Ok(dir) = std::fs::File::open(&mirror) {
            let _ = dir.set_modified(std::time::SystemTime::now());
        }
        if fetched {
            let (mirrors, tmp, table, budget) = (
                self.mirrors.clone(),
                self.tmp.clone(),
                self.locks.clone(),
                self.cache_bytes,
            );
            crate::off_the_workers(move || evict_mirrors(&mirrors, &tmp, &table, budget));
        }

        // Decide what to check out. The lock is released: a concurrent fetch only adds
        // objects and moves refs, and we resolve each ref once.
        let (checkout_branch, sha) = match (branch, commit) {
            (Some(branch), None) => (
                Some(branch.to_owned()),
                self.branch_head(&mirror, branch).await?,
            ),
            (Some(branch), Some(commit)) => {
                let head = self.branch_head(&mirror, branch).await?;
                let sha = self.commit(&mirror, commit).await?;
                if !self.is_ancestor(&mirror, &sha, &head).await? {
                    return Err(Error::Checkout(format!(
                        "commit {commit} is not on branch {branch:?} (not reachable from its head {head})"
                    )));
                }
                (Some(branch.to_owned()), sha)
            }
            (None, Some(commit)) => {
                let sha = match target {
                    Some(sha) => sha,
                    None => self.commit(&mirror, commit).await?,
                };
                // The seed's "default branch, specific commit": check out the default
                // branch at that commit when it is on it, else a detached HEAD.
                let default = match default_branch {
                    Some(name) => name,
                    None => self.mirror_head(&mirror).await?,
                };
                let on_default = match self.branch_head(&mirror, &default).await {
                    Ok(head) => self.is_ancestor(&mirror, &sha, &head).await?,
                    Err(_) => false,
                };
                (on_default.then_some(default), sha)
            }
            (None, None) => {
                let default = default_branch.unwrap_or_default();
                (
                    Some(default.clone()),
                    self.branch_head(&mirror, &default).await?,
                )
            }
        };

        Ok(Located {
            mirror,
            key,
            branch: checkout_branch,
            commit: sha,
            cache_hit,
            _in_use,
        })
    }

    /// Checks out `sha` (on `checkout_branch`) from `mirror`, or finds the tar of the
    /// same state in the tree cache.
    #[allow(clippy::too_many_arguments)]
    async fn check_out(
        &self,
        repo: &RepoUrl,
        mirror: &Path,
        key: &str,
        checkout_branch: Option<String>,
        sha: String,
        depth: Option<u32>,
        cache_hit: bool,
        label: &str,
    ) -> Result<Checkout> {
        let depth_key = depth.map(|depth| depth.to_string()).unwrap_or_default();
        // The tree cache is keyed by everything that goes into the tar: the mirror
        // (URL), what is checked out, and every ref the clone copies into `.git`.
        let refs = self
            .git(
                Some(mirror),
                &["for-each-ref", "--format=%(objectname) %(refname)"],
                None,
            )
            .await?;
        let tree_key = {
            let mut hasher = Sha256::new();
            for part in [
                key,
                checkout_branch.as_deref().unwrap_or(""),
                &sha,
                repo.redacted(),
                &refs,
                &depth_key,
            ] {
                hasher.update(part.as_bytes());
                hasher.update([0]);
            }
            hasher
                .finalize()
                .iter()
                .take(16)
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        };
        let cache_as = self.trees.join(format!("{tree_key}.tar"));
        if let Ok(file) = std::fs::File::open(&cache_as) {
            // Recently used trees are the last to be evicted.
            let _ = file.set_modified(std::time::SystemTime::now());
            return Ok(Checkout {
                tree: Tree::Cached(file),
                branch: checkout_branch,
                commit: sha,
                cache_hit,
            });
        }

        let dir = TempDir(self.tmp.join(label));
        let path = dir
            .path()
            .to_str()
            .ok_or_else(|| Error::internal("non-UTF-8 cache path"))?
            .to_owned();
        let mirror_path = mirror
            .to_str()
            .ok_or_else(|| Error::internal("non-UTF-8 cache path"))?;
        match depth {
            None => {
                self.git(
                    None,
                    &[
                        "clone",
                        "--quiet",
                        "--local",
                        "--no-checkout",
                        "--",
                        mirror_path,
                        &path,
                    ],
                    None,
                )
                .await?;
            }
            Some(depth) => {
                self.shallow_clone(
                    mirror_path,
                    dir.path(),
                    &sha,
                    checkout_branch.as_deref(),
                    depth,
                )
                .await?;
            }
        }
        match &checkout_branch {
            Some(name) => {
                self.git(
                    Some(dir.path()),
                    &["checkout", "--quiet", "-B", name, &sha, "--"],
                    None,
                )
                .await?
            }
            None => {
                self.git(
                    Some(dir.path()),
                    &["checkout", "--quiet", "--detach", &sha, "--"],
                    None,
                )
                .await?
            }
        };
        // Point origin at the real repository (never at our cache, never with credentials).
        self.git(
            Some(dir.path()),
            &[
                "remote",
                if depth.is_some() { "add" } else { "set-url" },
                "origin",
                repo.redacted(),
            ],
            None,
        )
        .await?;
        if let Some(name) = &checkout_branch {
            let upstream = format!("origin/{name}");
            self.git(
                Some(dir.path()),
                &["branch", "--quiet", "--set-upstream-to", &upstream, name],
                None,
            )
            .await?;
        }
        Ok(Checkout {
            tree: Tree::Fresh { dir, cache_as },
            branch: checkout_branch,
            commit: sha,
            cache_hit,
        })
    }

    /// Refuses (413) a checkout of `sha` that would take more than `max_bytes`: the
    /// sizes of its files as `git ls-tree` reads them from the objects (streamed, and
    /// stopped as soon as the sum is over), 512 bytes of tar header per entry, and the
    /// mirror's objects that the clone carries.
    async fn check_size(
        &self,
        mirror: &Path,
        sha: &str,
        max_bytes: u64,
        depth: Option<u32>,
    ) -> Result<()> {
        use tokio::io::AsyncBufReadExt;
        // A shallow checkout carries its commits' objects, not the mirror's: counted as
        // its files once more (compressed, they take no more).
        let (history, per_file) = match depth {
            None => (dir_bytes(&mirror.join("objects")), 1),
            Some(_) => (0, 2),
        };
        let too_large = |what: String| {
            Error::TooLarge(format!(
                "the checkout would take {what}, more than the sandbox's disk allows ({} MiB); \
                 ask for a larger resources.disk_mb",
                max_bytes / (1024 * 1024)
            ))
        };
        if history > max_bytes {
            return Err(too_large(format!(
                "over {} MiB of history",
                history / (1024 * 1024)
            )));
        }
        let mut command = Self::command(Some(mirror));
        command.args(["ls-tree", "-r", "-l", "-z", "--full-tree", sha, "--"]);
        let (mut child, stdout) = spawn_reading(command)?;
        let mut lines = tokio::io::BufReader::new(stdout).split(0);
        let mut total = history;
        let mut entries = 0u64;
        let counted = tokio::time::timeout(self.timeout, async {
            while let Some(line) = lines.next_segment().await.transpose() {
                let line = line.map_err(|err| Error::internal(format!("git ls-tree: {err}")))?;
                entries += 1;
                total = total.saturating_add(512 + per_file * tree_entry_bytes(&line));
                if total > max_bytes {
                    return Err(too_large(format!(
                        "over {} MiB in at least {entries} files",
                        total / (1024 * 1024)
                    )));
                }
            }
            Ok(())
        })
        .await;
        // Done with it either way (kill_on_drop for the error paths).
        let _ = child.start_kill();
        let _ = child.wait().await;
        match counted {
            Ok(result) => result,
            Err(_) => Err(Error::Checkout(format!(
                "sizing the checkout took longer than {:?}",
                self.timeout
            ))),
        }
    }

    /// The checkout as a tar stream whose entries are named `name/…`. A fresh tree is
    /// packed while it uploads, and its tar kept for the next create of the same
    /// state (only once complete: an upload that fails leaves nothing).
    pub fn tar(&self, tree: Tree, name: &str) -> crate::backend::BodyStream {
        match tree {
            Tree::Cached(file) => archive::stream_open_file(tokio::fs::File::from_std(file)),
            Tree::Fresh { dir, cache_as } => {
                let partial = self.tmp.join(format!(
                    "{}.partial",
                    cache_as
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("tree")
                ));
                let copy = std::fs::File::create(&partial)
                    .map_err(|err| tracing::warn!(%err, "not caching a checkout"))
                    .ok();
                let (trees, budget) = (self.trees.clone(), self.tree_cache_bytes);
                let keep = copy.is_some();
                archive::pack_dir_with(dir.path().to_owned(), name, copy, move |packed| {
                    drop(dir);
                    if !keep {
                        return;
                    }
                    match packed.and_then(|()| std::fs::rename(&partial, &cache_as)) {
                        Ok(()) => evict(&trees, budget),
                        Err(_) => {
                            let _ = std::fs::remove_file(&partial);
                        }
                    }
                })
            }
        }
    }

    /// Brings the mirror up to date (`exists`) or makes it, `depth` commits deep
    /// (`None`: all; a shallow mirror records its depth in [`DEPTH_FILE`]).
    async fn fetch(
        &self,
        repo: &RepoUrl,
        mirror: &Path,
        key: &str,
        exists: bool,
        depth: Option<u32>,
    ) -> Result<()> {
        let depth_arg = depth.map(|depth| depth.to_string());
        if exists {
            let mut args = vec!["fetch", "--quiet", "--prune", "--no-write-fetch-head"];
            if let Some(depth) = &depth_arg {
                args.extend(["--depth", depth.as_str()]);
            }
            args.extend(["--", repo.secret()]);
            args.extend(MIRROR_REFSPECS);
            self.git(Some(mirror), &args, Some(repo)).await.map(drop)
        } else {
            // Build the mirror beside its final place and rename it in: a mirror either
            // exists whole or not at all.
            let building = self.mirrors.join(format!("{key}.building"));
            let _ = tokio::fs::remove_dir_all(&building).await;
            let building_str = building
                .to_str()
                .ok_or_else(|| Error::internal("non-UTF-8 cache path"))?;
            let result = async {
                // The URL without its credentials (they go in a header, on the command
                // line only): `clone` writes the URL into the mirror's config.
                let auth = repo.auth_setting();
                let mut args = Vec::new();
                if let Some(auth) = &auth {
                    args.extend(["-c", auth.as_str()]);
                }
                args.extend(["clone", "--quiet", "--mirror"]);
                if let Some(depth) = &depth_arg {
                    args.extend(["--depth", depth.as_str()]);
                }
                args.extend(["--", repo.redacted(), building_str]);
                self.git(None, &args, Some(repo)).await?;
                if let Some(depth) = &depth_arg {
                    tokio::fs::write(building.join(DEPTH_FILE), depth)
                        .await
                        .map_err(|err| {
                            Error::internal(format!("recording a mirror's depth: {err}"))
                        })?;
                }
                // The origin URL may hold credentials; later fetches name the URL explicitly.
                self.git(Some(&building), &["remote", "remove", "origin"], None)
                    .await?;
                tokio::fs::rename(&building, mirror)
                    .await
                    .map_err(|err| Error::internal(format!("installing mirror: {err}")))
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_dir_all(&building).await;
            }
            result
        }
    }

    /// Deepens a shallow mirror to `depth` commits, or (`None`) fetches the rest of
    /// its history; records what it now holds.
    async fn deepen(&self, repo: &RepoUrl, mirror: &Path, depth: Option<u32>) -> Result<()> {
        let depth_arg = depth.map(|depth| depth.to_string());
        let mut args = vec!["fetch", "--quiet", "--prune", "--no-write-fetch-head"];
        match &depth_arg {
            Some(depth) => args.extend(["--depth", depth.as_str()]),
            None => args.push("--unshallow"),
        }
        args.extend(["--", repo.secret()]);
        args.extend(MIRROR_REFSPECS);
        self.git(Some(mirror), &args, Some(repo)).await?;
        let recorded = match &depth_arg {
            Some(depth) => tokio::fs::write(mirror.join(DEPTH_FILE), depth).await,
            None => tokio::fs::remove_file(mirror.join(DEPTH_FILE)).await,
        };
        recorded.map_err(|err| Error::internal(format!("recording a mirror's depth: {err}")))
    }

    /// A shallow clone of `sha` (and of `branch`'s head, its upstream) from the mirror
    /// into the empty directory `path`, `depth` commits deep, nothing checked out.
    async fn shallow_clone(
        &self,
        mirror: &str,
        path: &Path,
        sha: &str,
        branch: Option<&str>,
        depth: u32,
    ) -> Result<()> {
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::internal("non-UTF-8 cache path"))?;
        self.git(None, &["init", "--quiet", "--", path_str], None)
            .await?;
        let depth = depth.to_string();
        let source = format!("file://{mirror}");
        let upstream = branch.map(|name| format!("+refs/heads/{name}:refs/remotes/origin/{name}"));
        let mut args = vec![
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--depth",
            depth.as_str(),
            // Our own mirror, read by our own upload-pack: any commit of it may be asked for.
            "--upload-pack",
            "git -c uploadpack.allowAnySHA1InWant=true upload-pack",
            "--",
            source.as_str(),
            sha,
        ];
        if let Some(upstream) = &upstream {
            args.push(upstream.as_str());
        }
        self.git(Some(path), &args, None).await.map(drop)
    }

    /// The remote's branches and tags, and the branch its `HEAD` names.
    async fn remote_refs(&self, repo: &RepoUrl) -> Result<Advertised> {
        let out = self
            .git(
                None,
                &["ls-remote", "--symref", "--", repo.secret()],
                Some(repo),
            )
            .await?;
        Ok(Advertised::parse(&out))
    }

    /// The mirror's branches and tags (what [`Self::fetch`] keeps in step).
    async fn mirror_refs(&self, mirror: &Path) -> Result<BTreeMap<String, String>> {
        let out = self
            .git(
                Some(mirror),
                &[
                    "for-each-ref",
                    "--format=%(objectname) %(refname)",
                    "refs/heads",
                    "refs/tags",
                ],
                None,
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let (sha, name) = line.split_once(' ')?;
                Some((name.to_owned(), sha.to_owned()))
            })
            .collect())
    }

    /// The mirror's `HEAD`, as set from the remote when it was first cloned.
    async fn mirror_head(&self, mirror: &Path) -> Result<String> {
        let no_default = || Error::Checkout("the repository has no default branch".to_owned());
        let out = match self
            .git_raw(Some(mirror), &["symbolic-ref", "--quiet", "HEAD"], None)
            .await
        {
            Ok(out) => out,
            // Exit 1: HEAD is not a symbolic ref.
            Err(GitFailure::Exit { code: Some(1), .. }) => return Err(no_default()),
            Err(failure) => return Err(failure.into_error(None)),
        };
        out.trim()
            .strip_prefix("refs/heads/")
            .map(str::to_owned)
            .ok_or_else(no_default)
    }

    async fn branch_head(&self, mirror: &Path, branch: &str) -> Result<String> {
        let spec = format!("refs/heads/{branch}^{{commit}}");
        self.resolve(mirror, &spec).await?.ok_or_else(|| {
            Error::Checkout(format!(
                "branch {branch:?} does not exist in the repository"
            ))
        })
    }

    /// The full SHA of the commit `commit` (full or abbreviated) names. An
    /// abbreviation that fits several commits is refused as ambiguous, decided by
    /// git's own list of candidates, not by its messages.
    async fn commit(&self, mirror: &Path, commit: &str) -> Result<String> {
        /// Candidates looked at before an abbreviation is called ambiguous outright.
        const MAX_CANDIDATES: usize = 16;
        let missing =
            || Error::Checkout(format!("commit {commit} does not exist in the repository"));
        if commit.len() >= 40 {
            return self
                .resolve(mirror, &format!("{commit}^{{commit}}"))
                .await?
                .ok_or_else(missing);
        }
        let arg = format!("--disambiguate={commit}");
        let candidates = match self.git_raw(Some(mirror), &["rev-parse", &arg], None).await {
            Ok(out) => out,
            // No object at all has this prefix.
            Err(GitFailure::Exit { .. }) => return Err(missing()),
            Err(failure) => return Err(failure.into_error(None)),
        };
        let candidates: Vec<&str> = candidates.split_whitespace().collect();
        if candidates.len() > MAX_CANDIDATES {
            return Err(Error::Checkout(format!(
                "commit {commit} is ambiguous: give more digits"
            )));
        }
        let mut commits = Vec::new();
        for candidate in candidates {
            let kind = self
                .git(Some(mirror), &["cat-file", "-t", candidate], None)
                .await?;
            if kind.trim() == "commit" {
                commits.push(candidate.to_owned());
            }
        }
        match commits.len() {
            0 => Err(missing()),
            1 => Ok(commits.remove(0)),
            _ => Err(Error::Checkout(format!(
                "commit {commit} is ambiguous: give more digits"
            ))),
        }
    }

    /// What `spec` names, or `None` when it names nothing.
    async fn resolve(&self, mirror: &Path, spec: &str) -> Result<Option<String>> {
        match self
            .git_raw(
                Some(mirror),
                &["rev-parse", "--verify", "--quiet", "--end-of-options", spec],
                None,
            )
            .await
        {
            Ok(out) => Ok(Some(out.trim().to_owned())),
            // `--verify --quiet` exits 1, silently, for a name that resolves to nothing.
            Err(GitFailure::Exit { code: Some(1), .. }) => Ok(None),
            Err(failure) => Err(failure.into_error(None)),
        }
    }

    async fn is_ancestor(&self, mirror: &Path, ancestor: &str, head: &str) -> Result<bool> {
        match self
            .git_raw(
                Some(mirror),
                &["merge-base", "--is-ancestor", ancestor, head],
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            // Exit 1 means "no"; anything else is a failure (a timeout, a broken mirror).
            Err(GitFailure::Exit { code: Some(1), .. }) => Ok(false),
            Err(failure) => Err(failure.into_error(None)),
        }
    }

    /// Runs a git step, its failure in the client's terms (see [`GitFailure::into_error`]).
    async fn git(
        &self,
        cwd: Option<&Path>,
        args: &[&str],
        remote: Option<&RepoUrl>,
    ) -> Result<String> {
        self.git_raw(cwd, args, remote)
            .await
            .map_err(|failure| failure.into_error(remote))
    }

    /// A git command with the settings every step gets: no hooks, no credentials
    /// helper, no prompts, no system or global configuration, output piped.
    fn command(cwd: Option<&Path>) -> Command {
        let mut command = Command::new("git");
        command
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "advice.detachedHead=false",
                "-c",
                "credential.helper=",
            ])
            .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        command
    }

    /// Runs git with a deadline. `remote` marks a network step: only http(s) is
    /// allowed, redirects are not followed, and messages are scrubbed of credentials.
    async fn git_raw(
        &self,
        cwd: Option<&Path>,
        args: &[&str],
        remote: Option<&RepoUrl>,
    ) -> std::result::Result<String, GitFailure> {
        let mut command = Self::command(cwd);
        if remote.is_some() {
            command
                .args([
                    "-c",
                    "http.followRedirects=false",
                    "-c",
                    "protocol.version=2",
                    // A server that stalls (under 1 KiB/s for 20 s) fails the
                    // fetch long before GIT_TIMEOUT_SECS.
                    "-c",
                    "http.lowSpeedLimit=1024",
                    "-c",
                    "http.lowSpeedTime=20",
                ])
                .env("GIT_ALLOW_PROTOCOL", "http:https")
                .env("GIT_PROTOCOL_FROM_USER", "0");
        }
        // A URL without credentials of its own gets GIT_CREDENTIALS_FILE's, as a
        // header handed over in git's environment (never on its command line).
        let authorization = remote
            .filter(|repo| repo.url.username().is_empty() && repo.url.password().is_none())
            .and_then(|repo| self.credentials.for_url(&repo.url));
        if let Some(authorization) = &authorization {
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: {}", authorization.header),
                );
        }
        command.args(args);
        let child = command.spawn().map_err(GitFailure::Spawn)?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(result) => result.map_err(GitFailure::Spawn)?,
            Err(_) => {
                return Err(GitFailure::Timeout {
                    step: (*args.first().unwrap_or(&"")).to_owned(),
                    secs: self.timeout.as_secs(),
                });
            }
        };
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if let Some(repo) = remote {
            message = message.replace(repo.secret(), repo.redacted());
            if let Some(password) = repo.url.password() {
                message = message.replace(password, "***");
            }
        }
        if let Some(authorization) = &authorization {
            message = message
                .replace(&authorization.header, "Basic ***")
                .replace(&authorization.token, "***");
        }
        if message.len() > MAX_GIT_MESSAGE {
            let mut end = MAX_GIT_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Err(GitFailure::Exit {
            code: output.status.code(),
            message,
        })
    }
}

/// How a git step failed, so that callers decide by what happened, never by the
/// wording of a message.
#[derive(Debug)]
enum GitFailure {
    /// git could not be started (or waited for).
    Spawn(std::io::Error),
    /// The step ran past `GIT_TIMEOUT_SECS`.
    Timeout {
        /// The git command (`fetch`, `clone`, …).
        step: String,
        /// The bound.
        secs: u64,
    },
    /// git ran and failed.
    Exit {
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// Its stderr, scrubbed of credentials and bounded.
        message: String,
    },
}

impl GitFailure {
    /// In the client's terms: a remote that fails or stalls cannot be checked out
    /// (422), and so can a step that runs past its bound; a local step that fails is
    /// ours (500).
    fn into_error(self, remote: Option<&RepoUrl>) -> Error {
        match self {
            GitFailure::Spawn(err) => Error::internal(format!("cannot run git: {err}")),
            GitFailure::Timeout { step, secs } => {
                Error::Checkout(format!("git {step} did not finish within {secs} s"))
            }
            GitFailure::Exit { message, code } => match remote {
                Some(repo) => Error::Checkout(format!(
                    "cannot fetch {}: {}",
                    repo.redacted(),
                    if message.is_empty() {
                        "git failed without a message"
                    } else {
                        &message
                    }
                )),
                None => Error::internal(format!(
                    "git failed (exit code {}): {message}",
                    code.map_or_else(|| "none".to_owned(), |code| code.to_string())
                )),
            },
        }
    }
}

/// Removes the least recently used tars until the tree cache fits in `budget` bytes.
/// A tar being read while it is removed stays readable to its reader.
fn evict(trees: &Path, budget: u64) {
    let Ok(entries) = std::fs::read_dir(trees) else {
        return;
    };
    let mut tars: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), entry.path()))
        })
        .collect();
    let mut total: u64 = tars.iter().map(|(_, len, _)| len).sum();
    tars.sort();
    for (_, len, path) in tars {
        if total <= budget {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// Removes the least recently used mirrors not in use until the mirrors fit in
/// `budget` bytes. A mirror is moved aside under the table's lock (so no checkout can
/// start on it meanwhile), then deleted.
fn evict_mirrors(mirrors: &Path, tmp: &Path, table: &MirrorTable, budget: u64) {
    let Ok(entries) = std::fs::read_dir(mirrors) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|entry| entry.path().extension() == Some(OsStr::new("git")))
        .filter_map(|entry| {
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, dir_size(&entry.path()), entry.path()))
        })
        .collect();
    let mut total: u64 = found.iter().map(|(_, size, _)| size).sum();
    if total <= budget {
        return;
    }
    found.sort();
    for (_, size, path) in found {
        if total <= budget {
            break;
        }
        let Some(key) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let aside = tmp.join(format!("evicted-{key}"));
        {
            let locks = table.locked();
            if locks.contains_key(key) || std::fs::rename(&path, &aside).is_err() {
                continue;
            }
        }
        tracing::info!(mirror = %key, bytes = size, "evicting a mirror (CACHE_MB)");
        let _ = std::fs::remove_dir_all(&aside);
        total = total.saturating_sub(size);
    }
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            Ok(_) => entry.metadata().map(|meta| meta.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn remove_lock_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => remove_lock_files(&path),
            Ok(_) if path.extension() == Some(OsStr::new("lock")) => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|&h| h.to_owned()).collect()
    }

    #[test]
    fn only_http_urls_on_allowed_hosts() {
        let allowed = hosts(&["github.com", "127.0.0.1:9000"]);
        assert!(RepoUrl::parse("https://github.com/a/b", &allowed).is_ok());
        assert!(RepoUrl::parse("https://GitHub.com:443/a/b.git", &allowed).is_ok());
        assert!(RepoUrl::parse("http://127.0.0.1:9000/r.git", &allowed).is_ok());
        for bad in [
            "http://127.0.0.1:9001/r.git",
            "https://gitlab.com/a/b",
            "file:///etc",
            "ssh://github.com/a/b",
            "git://github.com/a/b",
            "ext::sh -c id",
            "git@github.com:a/b.git",
            "/srv/repo",
            "https://github.com/a b",
            "https://evil.com\n@github.com/",
            "--upload-pack=touch /tmp/x",
        ] {
            assert!(
                matches!(RepoUrl::parse(bad, &allowed), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn star_and_bare_hosts_match_any_port() {
        assert!(host_allowed("example.org", 8080, &hosts(&["*"])));
        assert!(host_allowed("127.0.0.1", 8080, &hosts(&["127.0.0.1"])));
        assert!(host_allowed("::1", 80, &hosts(&["[::1]:80"])));
        assert!(!host_allowed("::1", 81, &hosts(&["[::1]:80"])));
        assert!(!host_allowed(
            "github.com.evil.org",
            443,
            &hosts(&["github.com"])
        ));
    }

    #[test]
    fn credentials_become_a_header_never_part_of_the_url() {
        let allowed = vec!["example.com".to_owned()];
        let url = RepoUrl::parse("https://us%40er:p%3Ass@example.com/a/b", &allowed).unwrap();
        let setting = url.auth_setting().unwrap();
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(
            setting,
            format!("http.extraHeader=Authorization: Basic {token}")
        );
        let plain = RepoUrl::parse("https://example.com/a/b", &allowed).unwrap();
        assert!(plain.auth_setting().is_none());
        assert_eq!(percent_decoded("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn credentials_are_redacted() {
        let url = RepoUrl::parse(
            "https://user:hunter2@github.com/a/b",
            &hosts(&["github.com"]),
        )
        .unwrap();
        assert_eq!(url.redacted(), "https://github.com/a/b");
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn branch_names_follow_git_rules() {
        // `$(id)` is a valid (if odd) name: it is refused later as a branch that does not exist.
        for good in [
            "main",
            "feature/x",
            "release-1.2",
            "ünïcode",
            "a@b",
            "$(id)",
        ] {
            assert!(validate_branch(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=x",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a/",
            "/a",
            "a.",
            "a//b",
            ".a",
            "a/.b",
            "x.lock",
            "@",
            "a@{1}",
            "main; rm -rf /",
            "a\nb",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commits_are_hex_of_sensible_length() {
        assert_eq!(validate_commit("ABCDEF1").unwrap(), "abcdef1");
        assert!(validate_commit(&"a".repeat(40)).is_ok());
        for bad in ["abc", "zzzzzzz", "--upload-pack", &"a".repeat(65), "HEAD~1"] {
            assert!(validate_commit(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tree_cache {

    #[test]
    fn commitishes_are_revisions_never_options_or_ranges() {
        for good in [
            "main",
            "v1.2",
            "HEAD~3",
            "HEAD^",
            "feature/x",
            "abc1234",
            "@{-1}",
        ] {
            assert_eq!(validate_commitish(good).unwrap(), good);
        }
        for bad in [
            "",
            "-p",
            "--output=/x",
            "a..b",
            "HEAD:file",
            "a b",
            "a\nb",
            "x\\y",
        ] {
            assert!(validate_commitish(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn ls_remote_gives_branches_tags_and_the_default_branch() {
        let out = "ref: refs/heads/trunk\tHEAD\n\
                   aaa\tHEAD\n\
                   aaa\trefs/heads/trunk\n\
                   bbb\trefs/heads/feature\n\
                   ccc\trefs/tags/v1\n\
                   aaa\trefs/tags/v1^{}\n\
                   ddd\trefs/pull/1/head\n";
        let advertised = Advertised::parse(out);
        assert_eq!(advertised.head.as_deref(), Some("trunk"));
        assert_eq!(
            advertised.refs.into_iter().collect::<Vec<_>>(),
            [
                ("refs/heads/feature", "bbb"),
                ("refs/heads/trunk", "aaa"),
                ("refs/tags/v1", "ccc")
            ]
            .map(|(name, sha)| (name.to_owned(), sha.to_owned()))
        );
        assert_eq!(Advertised::parse("ref: refs/tags/x\tHEAD\n").head, None);
    }

    #[test]
    fn eviction_keeps_the_most_recently_used_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        for (name, age) in [("old", 30), ("mid", 20), ("new", 10)] {
            let path = dir.path().join(format!("{name}.tar"));
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        evict(dir.path(), 250);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["mid.tar", "new.tar"]);
    }

    #[test]
    fn mirror_eviction_removes_the_least_recently_used_idle_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        let (mirrors, tmp) = (dir.path().join("mirrors"), dir.path().join("tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let now = std::time::SystemTime::now();
        for (name, age) in [("oldest", 40), ("busy", 30), ("mid", 20), ("new", 10)] {
            let path = mirrors.join(format!("{name}.git"));
            std::fs::create_dir_all(path.join("objects")).unwrap();
            std::fs::write(path.join("objects/pack"), vec![0u8; 100]).unwrap();
            let handle = std::fs::File::open(&path).unwrap();
            handle.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        let table: MirrorTable = Arc::default();
        let (in_use, _lock) = MirrorUse::new(&table, "busy");
        evict_mirrors(&mirrors, &tmp, &table, 250);
        let mut left: Vec<_> = std::fs::read_dir(&mirrors)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["busy.git", "new.git"], "in use is never evicted");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing left aside"
        );
        drop(in_use);
        assert!(table.lock().unwrap().is_empty(), "the lock table is pruned");
    }
}
