//! Tar streams: packing a server-side directory for upload into a sandbox.
//!
//! Packing runs on a blocking thread that writes into an in-memory pipe of bounded
//! size; the read end is the upload body. Memory stays at the pipe's size however
//! large the tree is, and the upload starts before packing ends.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio_util::io::{ReaderStream, SyncIoBridge};

use crate::docker::BodyStream;

/// Size of the pipe between the packer and the upload.
const PIPE_BYTES: usize = 256 * 1024;

/// Streams a tar of `dir` and everything under it, named `name` in the archive
/// (symlinks kept as links; modes and times preserved). Unpacked at `/`, the tar
/// makes `/<name>` exactly `dir`, including the ownership of `/<name>` itself (which
/// an upload *into* an existing directory would leave as the image had it). A
/// packing error ends the stream with an error, which makes the engine reject the
/// upload.
pub fn pack_dir(dir: PathBuf, name: &str) -> BodyStream {
    let name = PathBuf::from(name);
    let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
    let handle = tokio::runtime::Handle::current();
    let (error_tx, error_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    handle.spawn_blocking(move || {
        let bridge = SyncIoBridge::new(writer);
        let mut builder = tar::Builder::new(bridge);
        let result = append_tree(&mut builder, &dir, &name)
            .and_then(|()| builder.into_inner())
            .and_then(|mut bridge| {
                use std::io::Write;
                bridge.flush()?;
                bridge.shutdown()
            });
        if let Err(err) = result {
            let _ = error_tx.send(err);
        }
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
        let bytes: Vec<u8> = pack_dir(dir.path().to_owned(), "workspace")
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
