//! `repobox cp SRC DST`: files and directories between here and a sandbox, through
//! the archive endpoints (`GET`/`PUT /containers/{id}/archive`), streamed both ways.
//!
//! The rules are `cp -r`'s (and `docker cp`'s): a destination that is an existing
//! directory receives the source under its own name; any other destination is the
//! new name of the copy (its parent must exist). A destination ending in `/` must be
//! an existing directory. Modes and modification times are kept; files uploaded are
//! owned by root in the sandbox, files downloaded by whoever runs `repobox`. Inside a
//! directory, symbolic links are copied as links.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::{Client, encode};
use super::output::print_json;
use super::{CliError, CliResult};
use crate::backend::WORKSPACE;

/// Arguments of `repobox cp`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    repobox cp ./dir ID:/workspace/dir     upload a directory\n  \
    repobox cp ID:/workspace/out .         download into the current directory\n  \
    repobox cp notes.txt ID:               into /workspace\n\n\
    A path in a sandbox that is not absolute is taken under /workspace.")]
pub struct CpArgs {
    /// What to copy: a local path, or `ID:/path` in a sandbox.
    pub src: String,
    /// Where to: a local path, or `ID:/path` in a sandbox.
    pub dst: String,
}

/// One end of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine.
    Local(PathBuf),
    /// An absolute path in a sandbox.
    Remote {
        /// Sandbox id.
        id: String,
        /// Absolute path in it.
        path: String,
    },
}

/// Reads `ID:/path` (remote; a relative path is under `/workspace`, an empty one is
/// `/workspace`) or anything else (local). A colon after a `/` is part of a local
/// path (`./a:b`), as is an empty id (`:x`).
pub fn parse_location(raw: &str) -> Location {
    if let Some((id, path)) = raw.split_once(':')
        && !id.is_empty()
        && !id.contains('/')
    {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else if path.is_empty() {
            WORKSPACE.to_owned()
        } else {
            format!("{WORKSPACE}/{path}")
        };
        return Location::Remote {
            id: id.to_owned(),
            path,
        };
    }
    Location::Local(PathBuf::from(raw))
}

/// Runs `repobox cp`.
pub async fn run(client: &Client, args: CpArgs, json: bool) -> CliResult {
    let bytes = match (parse_location(&args.src), parse_location(&args.dst)) {
        (Location::Local(src), Location::Remote { id, path }) => {
            upload(client, &src, &id, &path).await?
        }
        (Location::Remote { id, path }, Location::Local(dst)) => {
            download(client, &id, &path, &dst, args.dst.ends_with('/')).await?
        }
        (Location::Local(_), Location::Local(_)) => {
            return Err(CliError::Usage(
                "one of SRC and DST must be in a sandbox (ID:/path); for local copies use cp"
                    .to_owned(),
            ));
        }
        (Location::Remote { .. }, Location::Remote { .. }) => {
            return Err(CliError::Usage(
                "copies between sandboxes are not supported: copy through a local directory"
                    .to_owned(),
            ));
        }
    };
    if json {
        print_json(&json!({"source": args.src, "destination": args.dst, "bytes": bytes}));
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------
// Up

/// Splits an absolute remote path into its parent directory and last name.
fn split_remote(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// What `path` is in the sandbox: `Some(true)` a directory, `Some(false)` something
/// else, `None` nothing (its parent exists). Any other error (unknown sandbox, missing
/// parent) is the server's.
async fn remote_kind(client: &Client, id: &str, path: &str) -> CliResult<Option<bool>> {
    let Some((parent, name)) = split_remote(path) else {
        // `/` or a path ending in `.`/`..`: a directory if it is one at all.
        browse(client, id, path).await?;
        return Ok(Some(true));
    };
    let listing = browse(client, id, parent).await?;
    let entry = listing["items"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name));
    match entry.map(|entry| entry["type"].as_str().unwrap_or_default()) {
        None => Ok(None),
        Some("directory") => Ok(Some(true)),
        // A link to a directory is a directory to copy into.
        Some("symlink") => Ok(Some(browse(client, id, path).await.is_ok())),
        Some(_) => Ok(Some(false)),
    }
}

async fn browse(client: &Client, id: &str, path: &str) -> CliResult<Value> {
    client
        .get(&format!("/containers/{id}/browse?path={}", encode(path)))
        .await
}

/// Uploads `src` to `path` in sandbox `id`; returns the bytes of tar sent.
async fn upload(client: &Client, src: &Path, id: &str, path: &str) -> CliResult<u64> {
    let meta = fs::metadata(src).with_context(|| format!("cannot copy {}", src.display()))?;
    let src_name = local_name(src)?;
    let must_be_dir = path.ends_with('/');
    let (dir, name) = match remote_kind(client, id, path).await? {
        Some(true) => (path.to_owned(), src_name),
        Some(false) if must_be_dir => {
            return Err(anyhow!("{id}:{path} is not a directory").into());
        }
        Some(false) if meta.is_dir() => {
            return Err(anyhow!(
                "cannot overwrite {id}:{path}, not a directory, with directory {}",
                src.display()
            )
            .into());
        }
        None if must_be_dir => {
            return Err(anyhow!("directory {id}:{path} does not exist").into());
        }
        Some(false) | None => {
            let (parent, name) = split_remote(path).ok_or_else(|| anyhow!("bad path {path}"))?;
            (parent.to_owned(), name.to_owned())
        }
    };

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let src = src.to_owned();
    let packer = tokio::task::spawn_blocking(move || {
        let mut sink = ChannelWriter::new(tx.clone());
        let packed = pack(&src, &name, &mut sink).and_then(|()| {
            sink.flush()?;
            Ok(sink.written)
        });
        if let Err(err) = &packed {
            // Abort the request body, so the server never takes a cut tar for whole.
            let _ = tx.blocking_send(Err(io::Error::other(err.to_string())));
        }
        packed
    });
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let request = client
        .request(
            Method::PUT,
            &format!("/containers/{id}/archive?path={}", encode(&dir)),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .body(body);
    let sent = client.send(request).await;
    let packed = packer.await.context("the archiving task failed")?;
    match (sent, packed) {
        (_, Err(err)) => Err(anyhow::Error::new(err).context("archiving").into()),
        (Err(err), Ok(_)) => Err(err),
        (Ok(_), Ok(bytes)) => Ok(bytes),
    }
}

/// The name a local path is copied under: its last component (of its canonical
/// form, for `.` and `..`).
fn local_name(path: &Path) -> CliResult<String> {
    let canonical;
    let named = match path.file_name() {
        Some(_) => path,
        _ => {
            canonical = fs::canonicalize(path)
                .with_context(|| format!("cannot copy {}", path.display()))?;
            &canonical
        }
    };
    named
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("cannot copy {}: it has no name", path.display()).into())
}

/// Writes the tar of `src` with its root named `name` (regular files, directories and
/// symbolic links; other kinds are skipped with a warning).
fn pack(src: &Path, name: &str, sink: &mut impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(sink);
    // The top is followed if it is a link (`cp -r link dst` copies what it names).
    let meta = fs::metadata(src)?;
    append(&mut builder, src, Path::new(name), &meta)?;
    builder.into_inner()?.flush()
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    meta: &fs::Metadata,
) -> io::Result<()> {
    let with_path =
        |err: io::Error| io::Error::new(err.kind(), format!("{}: {err}", path.display()));
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    // Root's in the sandbox, as `PUT /files/raw` makes them.
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root")?;
    header.set_groupname("root")?;
    let kind = meta.file_type();
    if kind.is_dir() {
        header.set_size(0);
        builder.append_data(&mut header, name, io::empty())?;
        let mut children: Vec<_> = fs::read_dir(path)
            .map_err(with_path)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<io::Result<_>>()
            .map_err(with_path)?;
        children.sort();
        for child in children {
            let child_path = path.join(&child);
            let child_meta = fs::symlink_metadata(&child_path).map_err(with_path)?;
            append(builder, &child_path, &name.join(&child), &child_meta)?;
        }
    } else if kind.is_file() {
        let file = fs::File::open(path).map_err(with_path)?;
        // The size in the header is the size now; a file that changes meanwhile gets
        // exactly that many bytes (zeros if it shrank), so the archive stays whole.
        let data = file.take(meta.len()).chain(io::repeat(0)).take(meta.len());
        builder.append_data(&mut header, name, data)?;
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(with_path)?;
        header.set_size(0);
        builder.append_link(&mut header, name, target)?;
    } else {
        eprintln!(
            "repobox: skipping {}: not a file, directory or link",
            path.display()
        );
    }
    Ok(())
}

/// A `Write` into the request body's channel, in chunks (called on a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
    written: u64,
}

const CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buffer: Vec::with_capacity(CHUNK),
            written: 0,
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.written += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload was cut"))
    }
}

// ---------------------------------------------------------------------------------
// Down

/// Downloads `path` of sandbox `id` to `dst`; returns the bytes of tar received.
async fn download(
    client: &Client,
    id: &str,
    path: &str,
    dst: &Path,
    must_be_dir: bool,
) -> CliResult<u64> {
    let into_dir = dst.is_dir();
    if must_be_dir && !into_dir {
        return Err(anyhow!("{} is not an existing directory", dst.display()).into());
    }
    let response = client
        .send(client.request(
            Method::GET,
            &format!("/containers/{id}/archive?path={}", encode(path)),
        ))
        .await?;
    if response.status() != StatusCode::OK {
        return Err(anyhow!("the server answered {} to a download", response.status()).into());
    }
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = counted.clone();
    let stream = response
        .bytes_stream()
        .inspect_ok(move |chunk| {
            count.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        })
        .map_err(io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let dst = dst.to_owned();
    tokio::task::spawn_blocking(move || unpack(reader, &dst, into_dir))
        .await
        .context("the unpacking task failed")??;
    Ok(counted.load(std::sync::atomic::Ordering::Relaxed))
}

fn unpack(reader: impl Read, dst: &Path, into_dir: bool) -> CliResult<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    if into_dir {
        return archive
            .unpack(dst)
            .with_context(|| format!("unpacking into {}", dst.display()))
            .map_err(Into::into);
    }
    // A new name (or a file to replace): unpack beside it, then rename into place.
    let parent = match dst.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let staging = Staging::new(&parent)?;
    archive
        .unpack(&staging.0)
        .with_context(|| format!("unpacking into {}", parent.display()))?;
    let mut entries = fs::read_dir(&staging.0)
        .context("reading the unpacked copy")?
        .collect::<io::Result<Vec<_>>>()
        .context("reading the unpacked copy")?;
    let root = match entries.len() {
        1 => entries.remove(0).path(),
        // The archive of `/`: its children, no root entry.
        _ => staging.0.clone(),
    };
    let root_is_dir = fs::symlink_metadata(&root)
        .context("reading the unpacked copy")?
        .is_dir();
    if root_is_dir && dst.exists() {
        return Err(anyhow!(
            "cannot overwrite {}, not a directory, with a directory",
            dst.display()
        )
        .into());
    }
    fs::rename(&root, dst).with_context(|| format!("moving the copy to {}", dst.display()))?;
    Ok(())
}

/// A directory of our own beside the destination, removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(parent: &Path) -> CliResult<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(".repobox-cp-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("cannot write in {}", parent.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: &str, path: &str) -> Location {
        Location::Remote {
            id: id.to_owned(),
            path: path.to_owned(),
        }
    }

    #[test]
    fn locations_name_a_sandbox_before_the_colon() {
        assert_eq!(
            parse_location("box-1:/workspace/dir"),
            remote("box-1", "/workspace/dir")
        );
        assert_eq!(parse_location("box-1:"), remote("box-1", "/workspace"));
        assert_eq!(
            parse_location("box-1:out"),
            remote("box-1", "/workspace/out")
        );
        assert_eq!(parse_location("box-1:/a:b"), remote("box-1", "/a:b"));
        for local in ["./dir", "dir", "/abs/path", "./a:b", "/x/y:z", ":x", ""] {
            assert_eq!(
                parse_location(local),
                Location::Local(local.into()),
                "{local}"
            );
        }
    }

    #[test]
    fn remote_paths_split_into_parent_and_name() {
        assert_eq!(split_remote("/workspace/out"), Some(("/workspace", "out")));
        assert_eq!(split_remote("/workspace/out/"), Some(("/workspace", "out")));
        assert_eq!(split_remote("/top"), Some(("/", "top")));
        assert_eq!(split_remote("/"), None);
        assert_eq!(split_remote("/a/.."), None);
    }

    #[test]
    fn a_packed_tree_unpacks_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/deep.txt"), "deep\n").unwrap();
        let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        fs::write(src.join("bin.dat"), &binary).unwrap();
        std::os::unix::fs::symlink("a/b/deep.txt", src.join("link")).unwrap();
        let mut tar = Vec::new();
        pack(&src, "copy", &mut tar).unwrap();

        // Under a new name.
        let new = dir.path().join("new");
        unpack(tar.as_slice(), &new, false).unwrap();
        assert_eq!(fs::read(new.join("a/b/deep.txt")).unwrap(), b"deep\n");
        assert_eq!(fs::read(new.join("bin.dat")).unwrap(), binary);
        assert_eq!(
            fs::read_link(new.join("link")).unwrap(),
            Path::new("a/b/deep.txt")
        );
        // Into an existing directory: under the archive's name.
        unpack(tar.as_slice(), &new, true).unwrap();
        assert_eq!(fs::read(new.join("copy/bin.dat")).unwrap(), binary);
        // No staging directory is left behind.
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "{left:?}");
        // A directory never replaces a file.
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(unpack(tar.as_slice(), &file, false).is_err());
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn local_names_are_last_components() {
        assert_eq!(local_name(Path::new("a/b.txt")).unwrap(), "b.txt");
        assert_eq!(local_name(Path::new("dir/")).unwrap(), "dir");
        let cwd = std::env::current_dir().unwrap();
        let own = cwd.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(local_name(Path::new(".")).unwrap(), own);
    }
}
