//! A sandbox's files: listing directories, reading and writing files, moving trees.
//!
//! Everything goes through the sandbox's agent, which works on the container's own
//! filesystem (so a symlink resolves inside the container's root) and needs nothing
//! from the image: listing, stat and reading are system calls, archives are packed
//! and unpacked by the agent itself. Bytes stream both ways with memory bounded by
//! the agent protocol's flow control, whatever their size.
//!
//! Paths are data: absolute, without NUL bytes, at most [`MAX_PATH_BYTES`].

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agent::{AgentClient, Entry, Kind, Stat};
use crate::backend::{BodyStream, ByteStream};
use crate::error::{Error, Result};
use crate::sync::Locked as _;

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Mode of a file written by [`write_file`].
pub const WRITTEN_FILE_MODE: u32 = 0o644;
/// `find -printf` format of the raw-engine benchmark's listing (the floor repobox is
/// measured against): type, size, mtime, `ls`-style mode, link target, name; each
/// followed by NUL.
const FIND_FORMAT: &str = r"%y\0%s\0%T@\0%M\0%l\0%P\0";

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

/// The command the benchmark's raw-engine floor runs to list `path`: GNU find, one
/// NUL-separated record per entry. `-H`: a symlink given as the start point is followed (the entries are not).
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

/// `ls -l` style type and permission string (`-rw-r--r--`) from a kind and the
/// permission bits (set-id and sticky bits included when present).
pub fn permissions(kind: Kind, mode: u32) -> String {
    let mut out = String::with_capacity(10);
    out.push(match kind {
        Kind::File | Kind::Other => '-',
        Kind::Directory => 'd',
        Kind::Symlink => 'l',
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

/// An item from an entry's `lstat`.
fn item(name: String, stat: &Stat) -> FileSystemItem {
    let kind = match stat.kind {
        Kind::Directory => ItemType::Directory,
        Kind::Symlink => ItemType::Symlink,
        Kind::File | Kind::Other => ItemType::File,
    };
    FileSystemItem {
        name,
        kind,
        size: (kind != ItemType::Directory).then_some(stat.size),
        modified_at: DateTime::from_timestamp(stat.mtime_secs, stat.mtime_nanos)
            .unwrap_or_default(),
        permissions: permissions(stat.kind, stat.mode),
        symlink_target: stat.link_target.clone(),
    }
}

/// Every entry of the directory `path` (hidden ones too, not `.` or `..`), sorted by
/// name (byte order). A symlink to a directory lists that directory.
pub async fn list_directory(agent: &AgentClient, path: &str) -> Result<Vec<FileSystemItem>> {
    let entries = agent.list(path).await.map_err(|err| match err {
        Error::Invalid(detail) => {
            Error::invalid(format!("{detail} (read a file with /files, not /browse)"))
        }
        other => other,
    })?;
    Ok(entries
        .into_iter()
        .map(|Entry { name, stat }| item(name, &stat))
        .collect())
}

/// A file being read out of a sandbox: its size and its bytes, as they arrive.
pub struct OpenFile {
    /// Size in bytes when opened.
    pub size: u64,
    /// The bytes.
    pub data: ByteStream,
}

/// Opens the regular file at `path` (a symlink is read through to its target). With
/// `limit`, a file above it is refused with `Error::TooLarge` before its bytes move.
pub async fn open_file(agent: &AgentClient, path: &str, limit: Option<u64>) -> Result<OpenFile> {
    let (stat, data) = agent.read(path).await?;
    if let Some(limit) = limit
        && stat.size > limit
    {
        return Err(Error::TooLarge(format!(
            "{path} is {} bytes, above the limit of {limit} bytes",
            stat.size
        )));
    }
    Ok(OpenFile {
        size: stat.size,
        data,
    })
}

/// Reads a whole file of at most `limit` bytes.
pub async fn read_file(agent: &AgentClient, path: &str, limit: u64) -> Result<Vec<u8>> {
    let mut file = open_file(agent, path, Some(limit)).await?;
    let mut content = Vec::with_capacity(usize::try_from(file.size).unwrap_or(0));
    while let Some(chunk) = file.data.next().await {
        content.extend_from_slice(&chunk?);
        // The file may grow while it is read.
        if content.len() as u64 > limit {
            return Err(Error::TooLarge(format!(
                "{path} is above the limit of {limit} bytes"
            )));
        }
    }
    Ok(content)
}

/// Writes `body` to the file `path`: mode 0644, owned by root, missing parent
/// directories created, a symlink there written through. Returns the file's item.
pub async fn write_file(agent: &AgentClient, path: &str, body: Upload) -> Result<FileSystemItem> {
    let (_, name) = split_file_path(path)?;
    let fault = body.fault.clone();
    match agent
        .write(path, WRITTEN_FILE_MODE, true, body.stream)
        .await
    {
        Ok(stat) => Ok(item(name.to_owned(), &stat)),
        Err(err) => Err(fault.take().unwrap_or(err)),
    }
}

/// A tar of `path` (a directory with everything under it, a file, or a link as a
/// link), streamed as the agent packs it.
pub async fn download_archive(agent: &AgentClient, path: &str) -> Result<ByteStream> {
    let (_, tar) = agent.archive_out(path).await?;
    Ok(tar)
}

/// Unpacks the tar `body` into the existing directory `path` (or the directory a
/// link there points to).
pub async fn upload_archive(agent: &AgentClient, path: &str, body: Upload) -> Result<()> {
    let fault = body.fault.clone();
    match agent.archive_in(path, body.stream).await {
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
        {
            let mut slot = self.0.locked();
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
    fn permissions_look_like_ls() {
        assert_eq!(permissions(Kind::File, 0o644), "-rw-r--r--");
        assert_eq!(permissions(Kind::Directory, 0o755), "drwxr-xr-x");
        assert_eq!(permissions(Kind::Symlink, 0o777), "lrwxrwxrwx");
        assert_eq!(permissions(Kind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(permissions(Kind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(permissions(Kind::Directory, 0o1777), "drwxrwxrwt");
        assert_eq!(permissions(Kind::Directory, 0o1770), "drwxrwx--T");
    }

    #[tokio::test]
    async fn uploads_are_checked_against_their_length_and_the_limit() {
        async fn run(chunks: &[&'static [u8]], expected: Option<u64>, limit: u64) -> Result<u64> {
            let body: BodyStream = Box::pin(futures_util::stream::iter(
                chunks
                    .iter()
                    .map(|&chunk| Ok(bytes::Bytes::from_static(chunk)))
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
}
