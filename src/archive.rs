//! Tar streams from the server to sandboxes: packing a server-side directory for
//! upload into a sandbox.
//!
//! Packing runs on a blocking thread that writes into an in-memory pipe of bounded
//! size; the read end is the upload body. Memory stays at the pipe's size however
//! large the tree is, and the upload starts before packing ends.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use tokio_util::io::{ReaderStream, SyncIoBridge};

use crate::backend::BodyStream;

/// Size of the pipe between the packer and the upload.
const PIPE_BYTES: usize = 256 * 1024;

/// Streams a tar of `dir` and everything under it, named `name` in the archive
/// (symlinks kept as links; modes and times preserved). Unpacked at `/`, the tar
/// makes `/<name>` exactly `dir`, including the ownership of `/<name>` itself (which
/// an upload *into* an existing directory would leave as the image had it). A
/// packing error ends the stream with an error, which makes the engine reject the
/// upload.
///
/// The tar is also written to `copy` (when given) as it goes, and `done` is called on the
/// packing thread with the outcome once everything is written (or has failed,
/// including because the reader went away). `done` owns whatever must live until
/// then (e.g. the directory being packed) and may do blocking work.
pub fn pack_dir_with(
    dir: PathBuf,
    name: &str,
    copy: Option<std::fs::File>,
    done: impl FnOnce(std::io::Result<()>) + Send + 'static,
) -> BodyStream {
    let name = PathBuf::from(name);
    let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
    let handle = tokio::runtime::Handle::current();
    let (error_tx, error_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    handle.spawn_blocking(move || {
        use std::io::Write;
        let tee = Tee {
            pipe: SyncIoBridge::new(writer),
            copy: copy.map(|file| std::io::BufWriter::with_capacity(PIPE_BYTES, file)),
        };
        let mut builder = tar::Builder::new(tee);
        let result = append_tree(&mut builder, &dir, &name)
            .and_then(|()| builder.into_inner())
            .and_then(|mut tee| {
                tee.flush()?;
                // The upload completes first; the copy is made durable after.
                tee.pipe.shutdown()?;
                match tee.copy.take() {
                    Some(copy) => copy
                        .into_inner()
                        .map_err(std::io::IntoInnerError::into_error)?
                        .sync_data(),
                    None => Ok(()),
                }
            });
        let reported = result
            .as_ref()
            .map(|_| ())
            .map_err(|err| std::io::Error::new(err.kind(), err.to_string()));
        if let Err(err) = result {
            let _ = error_tx.send(err);
        }
        done(reported);
    });
    let data = ReaderStream::with_capacity(reader, 64 * 1024);
    // After the data, surface a packing error (if any) as the stream's last item.
    let tail = futures_util::stream::once(async move {
        match error_rx.await {
            Ok(err) => Some(Err(err)),
            Err(_) => None,
        }
    })
    .filter_map(|item| async move { item });
    Box::pin(data.chain(tail))
}

/// Streams an open file (a cached tar) as an upload body.
pub fn stream_open_file(file: tokio::fs::File) -> BodyStream {
    Box::pin(ReaderStream::with_capacity(file, 64 * 1024))
}

/// Writes to the upload pipe and, when there is one, to a copy.
struct Tee<W: std::io::Write> {
    pipe: W,
    copy: Option<std::io::BufWriter<std::fs::File>>,
}

impl<W: std::io::Write> std::io::Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.pipe.write(buf)?;
        if let Some(copy) = &mut self.copy {
            copy.write_all(&buf[..written])?;
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.pipe.flush()?;
        if let Some(copy) = &mut self.copy {
            copy.flush()?;
        }
        Ok(())
    }
}

/// Appends `dir` (as `name`) and everything under it, in name order. Entries are
/// owned by root: the sandbox's commands run as root, and git refuses to work in a
/// repository owned by another user.
fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    builder.append_data(&mut header_for(&meta), name, std::io::empty())?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let child = name.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            append_tree(builder, &path, &child)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path)?;
            builder.append_link(&mut header_for(&meta), &child, target)?;
        } else if kind.is_file() {
            builder.append_data(&mut header_for(&meta), &child, std::fs::File::open(&path)?)?;
        }
        // Sockets, fifos and devices have no place in a checkout: skipped.
    }
    Ok(())
}

fn header_for(meta: &std::fs::Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_uid(0);
    header.set_gid(0);
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[tokio::test]
    async fn packs_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/empty")).unwrap();
        std::fs::write(dir.path().join("sub/a file"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/a file", dir.path().join("link")).unwrap();
        let bytes: Vec<u8> = pack_dir_with(dir.path().to_owned(), "workspace", None, |_| {})
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            seen.push((path, entry.header().entry_type()));
        }
        assert!(
            seen.contains(&("workspace/sub/a file".to_owned(), tar::EntryType::Regular)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("workspace/link".to_owned(), tar::EntryType::Symlink)),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|(p, t)| p.starts_with("workspace/sub/empty")
                    && *t == tar::EntryType::Directory),
            "{seen:?}"
        );
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries().unwrap() {
            assert_eq!(
                entry.unwrap().header().uid().unwrap(),
                0,
                "entries are owned by root"
            );
        }
    }
}
