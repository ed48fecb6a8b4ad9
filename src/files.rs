//! A sandbox's files: listing directories, reading and writing files, moving trees.
//!
//! Everything goes through the engine: bytes move as tar streams of its archive API
//! (stat, download, upload), and the two things that API cannot do are one exec
//! each, given as an argv and never through a shell: listing a directory (GNU
//! `find -printf`, one NUL-separated record per entry, so that no name can be
//! misread) and creating missing parent directories (`mkdir -p`). Nothing here
//! touches the host's files, except the spool file of an upload of unknown length.
//!
//! Paths are data: absolute, without NUL bytes, at most [`MAX_PATH_BYTES`]; a symlink
//! at the end of a path is resolved by the engine inside the container's root.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::io::{ReaderStream, StreamReader};
use utoipa::ToSchema;

use crate::archive::{self, FirstEntry};
use crate::docker::{BodyStream, ByteStream, ExecSpec, Output, PathKind, PathStat, Runtime};
use crate::error::{Error, Result};

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Mode of a file written by [`WriteTarget::write`].
pub const WRITTEN_FILE_MODE: u32 = 0o644;
/// Bound on listing one directory.
const LIST_BOUND: Duration = Duration::from_secs(60);
/// Bound on the listing's size: a directory with hundreds of thousands of entries is
/// refused rather than held in memory whole.
const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;
/// Bound on creating parent directories.
const MKDIR_BOUND: Duration = Duration::from_secs(30);
/// How much of a tool's stderr is kept for error messages.
const MAX_STDERR_BYTES: usize = 16 * 1024;
/// Chunk size when streaming a file out.
const CHUNK_BYTES: usize = 64 * 1024;
/// `find -printf` format: type, size, mtime, `ls`-style mode, link target, name; each
/// followed by NUL, the one byte no name or target can contain. `find` interprets the
/// `\0` escapes itself.
const FIND_FORMAT: &str = r"%y\0%s\0%T@\0%M\0%l\0%P\0";
/// Fields per `find` record.
const FIND_FIELDS: usize = 6;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemType {
    /// A regular file (or a device, fifo or socket).
    File,
    /// A directory.
    Directory,
    /// (ext) A symbolic link (not followed).
    Symlink,
}

/// One directory entry (the spec's *FileSystemItem*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileSystemItem {
    /// Name (UTF-8; bytes that are not become U+FFFD).
    pub name: String,
    /// `file`, `directory` or `symlink`.
    #[serde(rename = "type")]
    pub kind: ItemType,
    /// Size in bytes (of the link itself for a symlink); null for directories.
    pub size: Option<u64>,
    /// Last modification (RFC 3339, UTC).
    pub modified_at: DateTime<Utc>,
    /// Type and permissions as `ls -l` shows them, e.g. `-rw-r--r--`.
    #[schema(example = "-rw-r--r--")]
    pub permissions: String,
    /// (ext) Where a symlink points, as written in the link; null otherwise.
    pub symlink_target: Option<String>,
}

/// Checks a path a client sent: absolute, no NUL byte, not too long.
pub fn validate_path(field: &str, path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::invalid(format!("{field} must not be empty")));
    }
    if path.contains('\0') {
        return Err(Error::invalid(format!(
            "{field} must not contain NUL bytes"
        )));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(Error::invalid(format!(
            "{field} is {} bytes long; at most {MAX_PATH_BYTES} are allowed",
            path.len()
        )));
    }
    if !path.starts_with('/') {
        return Err(Error::invalid(format!(
            "{field} must be an absolute path (starting with /), got {path:?}"
        )));
    }
    Ok(())
}

/// Splits a file path into its directory and its name. The name must be a real
/// name: not empty (a trailing `/`), `.` or `..`.
pub fn split_file_path(path: &str) -> Result<(&str, &str)> {
    let (dir, name) = path
        .rsplit_once('/')
        .ok_or_else(|| Error::invalid(format!("{path:?} is not an absolute path")))?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::invalid(format!(
            "{path:?} does not name a file (it ends in {:?})",
            if name.is_empty() { "/" } else { name }
        )));
    }
    Ok((if dir.is_empty() { "/" } else { dir }, name))
}

/// [`Runtime::stat`], with a path through a file (`/etc/hostname/x`) answered as
/// the client's mistake (400). The engine answers it with a bare 500 (a HEAD request
/// has no body to say why), so on a 500 the nearest existing ancestor is looked for:
/// when it is not a directory, that is the cause.
// Better done in `Runtime::stat`; kept here to leave the Docker boundary as it is.
async fn stat_path(runtime: &Runtime, container: &str, path: &str) -> Result<Option<PathStat>> {
    /// Bound on the walk up: a path deeper below a file than this is left a 500.
    const MAX_ANCESTORS: usize = 32;
    let error = match runtime.stat(container, path).await {
        Err(Error::Internal(source)) => source,
        other => return other,
    };
    let mut ancestor = path.trim_end_matches('/');
    for _ in 0..MAX_ANCESTORS {
        let Some((parent, _)) = ancestor.rsplit_once('/') else {
            break;
        };
        if parent.is_empty() {
            break;
        }
        ancestor = parent;
        let found = match runtime.stat(container, parent).await {
            Ok(Some(stat)) => stat,
            // Missing, or itself below a file: further up.
            Ok(None) | Err(Error::Internal(_)) => continue,
            Err(other) => return Err(other),
        };
        let is_directory = match (found.kind, &found.link_target) {
            (PathKind::Directory, _) => true,
            (PathKind::Symlink, Some(target)) => {
                matches!(runtime.stat(container, target).await, Ok(Some(t)) if t.kind == PathKind::Directory)
            }
            _ => false,
        };
        if is_directory {
            break;
        }
        return Err(Error::invalid(format!(
            "{path}: {parent} is not a directory"
        )));
    }
    Err(Error::Internal(error))
}

/// Stats `path`, following a symlink at its end: the engine reports a link's target
/// already resolved inside the container's root, as an absolute path. Returns the
/// path that was finally stat'ed and its stat; `None` when either is missing.
pub async fn resolve(
    runtime: &Runtime,
    container: &str,
    path: &str,
) -> Result<Option<(String, PathStat)>> {
    let Some(stat) = stat_path(runtime, container, path).await? else {
        return Ok(None);
    };
    match (stat.kind, &stat.link_target) {
        (PathKind::Symlink, Some(target)) => Ok(stat_path(runtime, container, target)
            .await?
            .map(|resolved| (target.clone(), resolved))),
        _ => Ok(Some((path.to_owned(), stat))),
    }
}

/// Every entry of the directory `path` (hidden ones too, not `.` or `..`), sorted by
/// name (byte order). A symlink to a directory lists that directory.
pub async fn list_directory(
    runtime: &Runtime,
    container: &str,
    path: &str,
) -> Result<Vec<FileSystemItem>> {
    match resolve(runtime, container, path).await? {
        None => return Err(Error::PathNotFound(path.to_owned())),
        Some((_, stat)) if stat.kind != PathKind::Directory => {
            return Err(Error::invalid(format!(
                "{path} is a file, not a directory; read it with /files"
            )));
        }
        Some(_) => {}
    }
    let cmd = listing_command(path);
    let output = run_tool(runtime, container, &cmd, LIST_BOUND, MAX_LISTING_BYTES).await?;
    let missing_find = || {
        Error::MissingTool(format!(
            "listing a directory needs GNU find (findutils) with -printf in the sandbox image: {}",
            output.message()
        ))
    };
    if output.could_not_start() {
        return Err(missing_find());
    }
    if output.stdout_truncated {
        return Err(Error::TooLarge(format!(
            "{path} has too many entries to list (over {MAX_LISTING_BYTES} bytes of listing)"
        )));
    }
    if output.exit_code != 0 {
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        if ["printf", "unrecognized", "unknown", "invalid"]
            .iter()
            .any(|word| stderr.contains(word))
        {
            return Err(missing_find());
        }
        if stat_path(runtime, container, path).await?.is_none() {
            return Err(Error::PathNotFound(path.to_owned()));
        }
        // `find` also fails when an entry vanishes while it runs; what it did list is
        // still right. With nothing listed, the failure is the answer.
        if output.stdout.is_empty() {
            return Err(Error::internal(format!(
                "find {path:?} failed with exit code {}: {}",
                output.exit_code,
                output.message()
            )));
        }
    }
    parse_find_output(&output.stdout).map_err(|err| {
        Error::internal(format!(
            "unexpected output of find: {err} (is it GNU find?)"
        ))
    })
}

/// The command browse runs to list `path`: GNU find, one NUL-separated record per
/// entry. `-H`: a symlink given as the start point is followed (the entries are not).
pub fn listing_command(path: &str) -> [&str; 9] {
    [
        "find",
        "-H",
        path,
        "-mindepth",
        "1",
        "-maxdepth",
        "1",
        "-printf",
        FIND_FORMAT,
    ]
}

/// Parses `find -printf FIND_FORMAT` output into items sorted by name (byte order).
fn parse_find_output(output: &[u8]) -> std::result::Result<Vec<FileSystemItem>, String> {
    let Some(output) = output.strip_suffix(b"\0") else {
        return if output.is_empty() {
            Ok(Vec::new())
        } else {
            Err("the output does not end with NUL".to_owned())
        };
    };
    let fields: Vec<&[u8]> = output.split(|&b| b == 0).collect();
    if fields.len() % FIND_FIELDS != 0 {
        return Err(format!(
            "{} fields, not a multiple of {FIND_FIELDS}",
            fields.len()
        ));
    }
    let mut items = fields
        .chunks_exact(FIND_FIELDS)
        .map(|record| {
            let &[kind, size, mtime, permissions, target, name] = record else {
                unreachable!("chunks_exact gives {FIND_FIELDS} fields");
            };
            let kind = match kind {
                b"d" => ItemType::Directory,
                b"l" => ItemType::Symlink,
                _ => ItemType::File,
            };
            let size = match kind {
                ItemType::Directory => None,
                _ => Some(
                    text(size)
                        .parse()
                        .map_err(|_| format!("bad size {:?}", text(size)))?,
                ),
            };
            let item = FileSystemItem {
                name: text(name).into_owned(),
                kind,
                size,
                modified_at: parse_epoch(&text(mtime))
                    .ok_or_else(|| format!("bad time {:?}", text(mtime)))?,
                permissions: text(permissions).into_owned(),
                symlink_target: (kind == ItemType::Symlink).then(|| text(target).into_owned()),
            };
            Ok((name, item))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    items.sort_by(|a, b| a.0.cmp(b.0));
    Ok(items.into_iter().map(|(_, item)| item).collect())
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Parses `find`'s `%T@`: seconds since the epoch with a fraction
/// (`1700000000.1234567890`), possibly negative.
fn parse_epoch(value: &str) -> Option<DateTime<Utc>> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let seconds: i64 = whole.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    if whole.starts_with('-') && nanos > 0 {
        // -1.25 is 1.25 s before the epoch: -2 s plus 0.75 s.
        return DateTime::from_timestamp(seconds - 1, 1_000_000_000 - nanos);
    }
    DateTime::from_timestamp(seconds, nanos)
}

/// `ls -l` style type and permission string (`-rw-r--r--`) from a kind and the
/// permission bits (set-id and sticky bits included when present).
pub fn permissions(kind: PathKind, mode: u32) -> String {
    let mut out = String::with_capacity(10);
    out.push(match kind {
        PathKind::File => '-',
        PathKind::Directory => 'd',
        PathKind::Symlink => 'l',
    });
    let special = [(0o4000, 's'), (0o2000, 's'), (0o1000, 't')];
    for (who, (special_bit, special_char)) in special.into_iter().enumerate() {
        let shift = 6 - 3 * who;
        let bits = (mode >> shift) & 0o7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        out.push(match (mode & special_bit != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// An item for `path` from its stat (as the engine reports it).
fn item_from_stat(stat: &PathStat) -> FileSystemItem {
    let kind = match stat.kind {
        PathKind::File => ItemType::File,
        PathKind::Directory => ItemType::Directory,
        PathKind::Symlink => ItemType::Symlink,
    };
    FileSystemItem {
        name: stat.name.clone(),
        kind,
        size: (kind != ItemType::Directory).then_some(stat.size),
        modified_at: stat.modified_at.unwrap_or_default(),
        permissions: permissions(stat.kind, stat.mode),
        symlink_target: stat.link_target.clone(),
    }
}

/// A file being read out of a sandbox: its size and its bytes, as they arrive.
pub struct OpenFile {
    /// Size in bytes.
    pub size: u64,
    /// Exactly `size` bytes (fewer only if the engine's stream breaks).
    pub data: Pin<Box<dyn AsyncRead + Send>>,
}

impl OpenFile {
    /// The bytes as a stream (for a response body).
    pub fn into_stream(self) -> ByteStream {
        Box::pin(ReaderStream::with_capacity(self.data, CHUNK_BYTES).map_err(io_to_error))
    }
}

/// Opens the regular file at `path` (a symlink is read through to its target). With
/// `limit`, a file above it is refused with `Error::TooLarge` before any byte moves.
pub async fn open_file(
    runtime: &Runtime,
    container: &str,
    path: &str,
    limit: Option<u64>,
) -> Result<OpenFile> {
    let (resolved, stat) = resolve(runtime, container, path)
        .await?
        .ok_or_else(|| Error::PathNotFound(path.to_owned()))?;
    if stat.kind == PathKind::Directory {
        return Err(Error::invalid(format!(
            "{path} is a directory, not a file; list it with /browse"
        )));
    }
    let too_large = |size: u64| {
        limit.filter(|&limit| size > limit).map(|limit| {
            Error::TooLarge(format!(
                "{path} is {size} bytes, above the limit of {limit} bytes"
            ))
        })
    };
    if let Some(error) = too_large(stat.size) {
        return Err(error);
    }
    let tar = runtime
        .get_archive(container, &resolved)
        .map_err(error_to_io);
    let reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(StreamReader::new(tar));
    match archive::first_entry(reader).await.map_err(io_to_error)? {
        FirstEntry::File { size, data } => {
            // Checked again: the file may have grown since the stat.
            if let Some(error) = too_large(size) {
                return Err(error);
            }
            Ok(OpenFile {
                size,
                data: Box::pin(data),
            })
        }
        FirstEntry::Other(kind) => Err(Error::invalid(format!(
            "{path} is not a regular file (tar entry type {kind:?})"
        ))),
        FirstEntry::Empty => Err(Error::internal(format!(
            "the engine sent an empty archive for {path}"
        ))),
    }
}

/// Reads a whole file of at most `limit` bytes.
pub async fn read_file(
    runtime: &Runtime,
    container: &str,
    path: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let mut file = open_file(runtime, container, path, Some(limit)).await?;
    let mut content = Vec::with_capacity(usize::try_from(file.size).unwrap_or(0));
    file.data
        .read_to_end(&mut content)
        .await
        .map_err(io_to_error)?;
    if content.len() as u64 != file.size {
        return Err(Error::internal(format!(
            "the engine sent {} of the {} bytes of {path}",
            content.len(),
            file.size
        )));
    }
    Ok(content)
}

/// Where a file upload goes, checked before any byte of the body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTarget {
    dir: String,
    name: String,
    /// The directory is missing: it is created (with its parents) at the write.
    create_dir: bool,
}

impl WriteTarget {
    /// Checks that `path` can be written as a file: not a directory (nor a link to
    /// one), its directory not a file. A symlink at `path` is written through to its
    /// target, as a shell's `>` would.
    pub async fn check(runtime: &Runtime, container: &str, path: &str) -> Result<Self> {
        let (mut dir, mut name) = split_file_path(path)?;
        let target;
        if let Some(stat) = stat_path(runtime, container, path).await? {
            match (stat.kind, stat.link_target) {
                (PathKind::Directory, _) => {
                    return Err(Error::invalid(format!(
                        "{path} is a directory; give the path of a file"
                    )));
                }
                (PathKind::Symlink, Some(link_target)) => {
                    if let Some(resolved) = stat_path(runtime, container, &link_target).await?
                        && resolved.kind == PathKind::Directory
                    {
                        return Err(Error::invalid(format!(
                            "{path} is a link to a directory; give the path of a file"
                        )));
                    }
                    target = link_target;
                    (dir, name) = split_file_path(&target)?;
                }
                _ => {}
            }
        }
        let create_dir = match resolve(runtime, container, dir).await? {
            None => true,
            Some((_, stat)) if stat.kind == PathKind::Directory => false,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{dir} is not a directory, so {path} cannot be written"
                )));
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            create_dir,
        })
    }

    /// Writes `body` (exactly `size` bytes) to the file: mode 0644, owned by root,
    /// missing parent directories created. Returns the written file's item.
    pub async fn write(
        &self,
        runtime: &Runtime,
        container: &str,
        size: u64,
        body: Upload,
    ) -> Result<FileSystemItem> {
        let Self {
            dir,
            name,
            create_dir,
        } = self;
        if *create_dir {
            create_directory(runtime, container, dir).await?;
        }
        let mtime = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let fault = body.fault.clone();
        let tar = archive::single_file(name, size, WRITTEN_FILE_MODE, mtime, body.stream)
            .map_err(|err| Error::invalid(format!("cannot write {name:?}: {err}")))?;
        if let Err(err) = runtime.put_archive(container, dir, tar).await {
            return Err(fault.take().unwrap_or(err));
        }
        let written = format!("{}/{name}", dir.trim_end_matches('/'));
        let stat = stat_path(runtime, container, &written)
            .await?
            .ok_or_else(|| {
                Error::internal(format!("{written} is missing right after its upload"))
            })?;
        Ok(item_from_stat(&stat))
    }
}

/// Creates the directory `dir` and its missing parents (`mkdir -p`).
async fn create_directory(runtime: &Runtime, container: &str, dir: &str) -> Result<()> {
    let output = run_tool(
        runtime,
        container,
        &["mkdir", "-p", "--", dir],
        MKDIR_BOUND,
        MAX_STDERR_BYTES,
    )
    .await?;
    if output.could_not_start() {
        return Err(Error::MissingTool(format!(
            "creating parent directories needs mkdir in the sandbox image: {}",
            output.message()
        )));
    }
    if output.exit_code != 0 {
        return Err(Error::invalid(format!(
            "cannot create the directory {dir}: {}",
            output.message()
        )));
    }
    Ok(())
}

/// A tar of `path` (a directory with everything under it, a file, or a link as a
/// link), streamed as the engine produces it.
pub async fn download_archive(
    runtime: &Runtime,
    container: &str,
    path: &str,
) -> Result<ByteStream> {
    if stat_path(runtime, container, path).await?.is_none() {
        return Err(Error::PathNotFound(path.to_owned()));
    }
    let mut tar = runtime.get_archive(container, path);
    // The engine's refusal comes as the stream's first item: answer it as a status,
    // before the response has started.
    let first = match tar.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(err)) => return Err(err),
        None => Bytes::new(),
    };
    Ok(Box::pin(
        futures_util::stream::once(async move { Ok(first) }).chain(tar),
    ))
}

/// Unpacks the tar `body` into the existing directory `path` (or the directory a
/// link there points to).
pub async fn upload_archive(
    runtime: &Runtime,
    container: &str,
    path: &str,
    body: Upload,
) -> Result<()> {
    let (resolved, stat) = resolve(runtime, container, path)
        .await?
        .ok_or_else(|| Error::PathNotFound(path.to_owned()))?;
    if stat.kind != PathKind::Directory {
        return Err(Error::invalid(format!(
            "{path} is not a directory; an archive is unpacked into a directory"
        )));
    }
    let fault = body.fault.clone();
    match runtime.put_archive(container, &resolved, body.stream).await {
        Ok(()) => Ok(()),
        Err(err) => Err(fault.take().unwrap_or(err)),
    }
}

/// Why an upload's body was cut off. Recorded by the stream itself, because the
/// engine call that consumes it only sees a broken body.
#[derive(Clone, Default)]
pub struct BodyFault(Arc<Mutex<Option<Error>>>);

impl BodyFault {
    fn set(&self, error: Error) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(error);
        }
    }

    fn take(&self) -> Option<Error> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// A request body on its way into a sandbox, checked as it streams.
pub struct Upload {
    stream: BodyStream,
    fault: BodyFault,
}

impl Upload {
    /// Watches `body`: it fails (and records why) when it goes over `limit` bytes,
    /// breaks, or ends at another length than `expected` (when known).
    pub fn new(body: BodyStream, expected: Option<u64>, limit: u64) -> Self {
        let fault = BodyFault::default();
        let recorder = fault.clone();
        let stream =
            futures_util::stream::unfold((body, 0u64, false), move |(mut body, mut seen, done)| {
                let fault = recorder.clone();
                async move {
                    if done {
                        return None;
                    }
                    let failure = match body.next().await {
                        Some(Ok(chunk)) => {
                            seen += chunk.len() as u64;
                            if seen > limit {
                                Error::TooLarge(format!(
                                    "the upload is above the limit of {limit} bytes"
                                ))
                            } else if let Some(expected) = expected
                                && seen > expected
                            {
                                Error::invalid(format!(
                                    "the body is longer than its Content-Length ({expected} bytes)"
                                ))
                            } else {
                                return Some((Ok(chunk), (body, seen, false)));
                            }
                        }
                        Some(Err(err)) => {
                            Error::invalid(format!("the request body could not be read: {err}"))
                        }
                        None => match expected {
                            Some(expected) if seen != expected => Error::invalid(format!(
                                "the body has {seen} bytes, its Content-Length says {expected}"
                            )),
                            _ => return None,
                        },
                    };
                    let io = std::io::Error::other(failure.to_string());
                    fault.set(failure);
                    Some((Err(io), (body, seen, true)))
                }
            });
        Self {
            stream: Box::pin(stream),
            fault,
        }
    }
}

/// A request body of unknown length, written to a file on the server so that its
/// length is known before the upload into the sandbox starts. The file is removed
/// when this is dropped.
pub struct Spooled {
    path: PathBuf,
    /// Its length in bytes.
    pub size: u64,
}

impl Spooled {
    /// Writes `body` to a new file under `dir`, refusing (and removing it) above
    /// `limit` bytes.
    pub async fn write(body: BodyStream, dir: &Path, limit: u64) -> Result<Self> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|err| Error::internal(format!("cannot create {}: {err}", dir.display())))?;
        let path = dir.join(format!("upload-{}", unique_suffix()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(|err| Error::internal(format!("cannot create {}: {err}", path.display())))?;
        // From here on, dropping `spooled` removes the file, on every return path.
        let mut spooled = Self { path, size: 0 };
        let mut body = Upload::new(body, None, limit);
        while let Some(chunk) = body.stream.next().await {
            let Ok(chunk) = chunk else {
                return Err(body
                    .fault
                    .take()
                    .unwrap_or_else(|| Error::invalid("the request body could not be read")));
            };
            file.write_all(&chunk)
                .await
                .map_err(|err| Error::internal(format!("cannot spool an upload: {err}")))?;
            spooled.size += chunk.len() as u64;
        }
        file.flush()
            .await
            .map_err(|err| Error::internal(format!("cannot spool an upload: {err}")))?;
        Ok(spooled)
    }

    /// The spooled bytes, read back as a stream.
    pub async fn stream(&self) -> Result<BodyStream> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|err| Error::internal(format!("cannot reopen a spooled upload: {err}")))?;
        Ok(Box::pin(ReaderStream::with_capacity(file, CHUNK_BYTES)))
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "could not remove a spooled upload");
        }
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a helper program run by [`run_tool`] did.
struct ToolOutput {
    exit_code: i64,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    stderr: Vec<u8>,
}

impl ToolOutput {
    /// The runtime could not start the program (missing binary): exit 126/127, with
    /// the runtime's message on stdout.
    fn could_not_start(&self) -> bool {
        matches!(self.exit_code, 126 | 127) || self.stdout.starts_with(b"OCI runtime exec failed")
    }

    /// The program's complaint, for an error message.
    fn message(&self) -> String {
        let stream = if self.stderr.is_empty() && self.could_not_start() {
            &self.stdout
        } else {
            &self.stderr
        };
        String::from_utf8_lossy(&stream[..stream.len().min(MAX_STDERR_BYTES)])
            .trim()
            .to_owned()
    }
}

/// Runs `argv` (no shell) in the container as root, from `/`, within `bound`,
/// keeping at most `cap` bytes of stdout. Past the bound the output is abandoned
/// (these tools finish on their own, and nothing waits for them).
async fn run_tool(
    runtime: &Runtime,
    container: &str,
    argv: &[&str],
    bound: Duration,
    cap: usize,
) -> Result<ToolOutput> {
    let spec = ExecSpec {
        cmd: argv.iter().map(|&arg| arg.to_owned()).collect(),
        // The C locale: `find` prints `%T@` with a dot whatever the image's locale.
        env: vec!["LC_ALL=C".to_owned()],
        working_dir: Some("/".to_owned()),
    };
    let deadline = Instant::now() + bound;
    let (exec_id, mut output) = runtime.exec(container, spec).await?;
    let mut result = ToolOutput {
        exit_code: 0,
        stdout: Vec::new(),
        stdout_truncated: false,
        stderr: Vec::new(),
    };
    loop {
        let item = tokio::time::timeout_at(deadline, output.next())
            .await
            .map_err(|_| Error::internal(format!("{} took longer than {bound:?}", argv[0])))?;
        match item {
            Some(Ok(Output::Stdout(bytes))) => {
                if result.stdout.len() + bytes.len() > cap {
                    result.stdout_truncated = true;
                    return Ok(result);
                }
                result.stdout.extend_from_slice(&bytes);
            }
            Some(Ok(Output::Stderr(bytes))) => {
                let room = MAX_STDERR_BYTES.saturating_sub(result.stderr.len());
                result
                    .stderr
                    .extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Some(Err(err)) => return Err(err),
            None => break,
        }
    }
    match crate::exec::wait_exit_code(runtime, &exec_id, deadline).await? {
        Some(code) => {
            result.exit_code = code;
            Ok(result)
        }
        None => Err(Error::internal(format!(
            "the engine did not report the exit code of {}",
            argv[0]
        ))),
    }
}

/// Carries a service error through an I/O stream.
fn error_to_io(error: Error) -> std::io::Error {
    std::io::Error::other(error)
}

/// Gets back a service error carried through an I/O stream; any other I/O failure
/// on a stream from the engine is a surprise.
fn io_to_error(error: std::io::Error) -> Error {
    match error.get_ref().map(|inner| inner.is::<Error>()) {
        Some(true) => match error.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(error)) => *error,
            _ => Error::internal("lost an error on the way out of a stream"),
        },
        _ => Error::internal(format!("unreadable archive from the engine: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_bounded_and_nul_free() {
        let longest = format!("/{}", "a".repeat(4095));
        let too_long = format!("/{}", "a".repeat(4096));
        for ok in ["/", "/workspace", "/a b/ü\n\"q\"", &longest] {
            assert!(validate_path("path", ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "workspace", "./x", "/a\0b", &too_long] {
            let err = validate_path("path", bad).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn file_paths_split_into_directory_and_name() {
        assert_eq!(split_file_path("/a/b.txt").unwrap(), ("/a", "b.txt"));
        assert_eq!(split_file_path("/top").unwrap(), ("/", "top"));
        assert_eq!(split_file_path("/a/ b \n").unwrap(), ("/a", " b \n"));
        for bad in ["/", "/a/", "/a/.", "/a/..", "relative"] {
            assert!(split_file_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn find_records_parse_exactly_and_sort_by_name() {
        let output = b"f\x0012\x001700000000.5000000000\x00-rw-r--r--\x00\x00b \"q\"\nline\x00\
d\x004096\x001700000001.0000000000\x00drwxr-xr-x\x00\x00.hidden\x00\
l\x009\x001700000002\x00lrwxrwxrwx\x00README.md\x00a-link\x00\
f\x000\x00-1.25\x00-rwsr-x--T\x00\x00\xc3\xbc\x00";
        let items = parse_find_output(output).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, [".hidden", "a-link", "b \"q\"\nline", "ü"]);
        assert_eq!(items[0].kind, ItemType::Directory);
        assert_eq!(items[0].size, None);
        assert_eq!(items[0].permissions, "drwxr-xr-x");
        assert_eq!(items[1].kind, ItemType::Symlink);
        assert_eq!(items[1].symlink_target.as_deref(), Some("README.md"));
        assert_eq!(items[1].size, Some(9));
        assert_eq!(items[2].kind, ItemType::File);
        assert_eq!(items[2].size, Some(12));
        assert_eq!(items[2].symlink_target, None);
        assert_eq!(
            items[2].modified_at.to_rfc3339(),
            "2023-11-14T22:13:20.500+00:00"
        );
        assert_eq!(
            items[3].modified_at,
            DateTime::from_timestamp(-2, 750_000_000).unwrap()
        );
        assert_eq!(parse_find_output(b"").unwrap(), Vec::new());
    }

    #[test]
    fn malformed_find_output_is_refused() {
        for bad in [
            &b"f\x001\x000\x00-rw-r--r--\x00\x00name"[..],
            b"f\x001\x000\x00-rw-r--r--\x00name\x00",
            b"f\x00x\x000\x00-rw-r--r--\x00\x00name\x00",
            b"f\x001\x00yesterday\x00-rw-r--r--\x00\x00name\x00",
            b"find: unrecognized: -printf\n",
        ] {
            assert!(parse_find_output(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permissions_look_like_ls() {
        assert_eq!(permissions(PathKind::File, 0o644), "-rw-r--r--");
        assert_eq!(permissions(PathKind::Directory, 0o755), "drwxr-xr-x");
        assert_eq!(permissions(PathKind::Symlink, 0o777), "lrwxrwxrwx");
        assert_eq!(permissions(PathKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(permissions(PathKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(permissions(PathKind::Directory, 0o1777), "drwxrwxrwt");
        assert_eq!(permissions(PathKind::Directory, 0o1770), "drwxrwx--T");
    }

    #[tokio::test]
    async fn uploads_are_checked_against_their_length_and_the_limit() {
        async fn run(chunks: &[&'static [u8]], expected: Option<u64>, limit: u64) -> Result<u64> {
            let body: BodyStream = Box::pin(futures_util::stream::iter(
                chunks
                    .iter()
                    .map(|&chunk| Ok(Bytes::from_static(chunk)))
                    .collect::<Vec<_>>(),
            ));
            let mut upload = Upload::new(body, expected, limit);
            let mut total = 0;
            while let Some(chunk) = upload.stream.next().await {
                match chunk {
                    Ok(chunk) => total += chunk.len() as u64,
                    Err(_) => return Err(upload.fault.take().expect("a recorded fault")),
                }
            }
            Ok(total)
        }
        assert_eq!(run(&[b"abc", b"de"], Some(5), 10).await.unwrap(), 5);
        assert_eq!(run(&[b"abc", b"de"], None, 5).await.unwrap(), 5);
        let status = |result: Result<u64>| result.unwrap_err().status().as_u16();
        assert_eq!(status(run(&[b"abc", b"de"], None, 4).await), 413);
        assert_eq!(status(run(&[b"abc", b"de"], Some(4), 10).await), 400);
        assert_eq!(status(run(&[b"abc"], Some(4), 10).await), 400);
    }

    #[tokio::test]
    async fn spooled_uploads_are_removed_when_dropped_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let body = |n: usize| -> BodyStream {
            Box::pin(futures_util::stream::iter(
                (0..n).map(|_| Ok(Bytes::from_static(b"0123456789"))),
            ))
        };
        let spooled = Spooled::write(body(3), dir.path(), 100).await.unwrap();
        assert_eq!(spooled.size, 30);
        let back: Vec<u8> = spooled
            .stream()
            .await
            .unwrap()
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .unwrap();
        assert_eq!(back, b"0123456789".repeat(3));
        drop(spooled);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let err = Spooled::write(body(20), dir.path(), 100)
            .await
            .err()
            .unwrap();
        assert_eq!(err.status().as_u16(), 413);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn service_errors_survive_an_io_stream() {
        let error = io_to_error(error_to_io(Error::PathNotFound("/x".into())));
        assert!(matches!(error, Error::PathNotFound(path) if path == "/x"));
        let error = io_to_error(std::io::ErrorKind::UnexpectedEof.into());
        assert_eq!(error.status().as_u16(), 500);
    }
}
