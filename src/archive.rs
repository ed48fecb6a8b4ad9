//! Tar streams between the server and sandboxes: packing a server-side directory for
//! upload into a sandbox, reading the one file of a tar the engine sends back, and
//! wrapping a byte stream as a one-file tar.
//!
//! Packing runs on a blocking thread that writes into an in-memory pipe of bounded
//! size; the read end is the upload body. Memory stays at the pipe's size however
//! large the tree is, and the upload starts before packing ends. Reading and wrapping
//! single files work on streams too: the file's bytes pass through, never buffered.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
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
pub fn pack_dir(dir: PathBuf, name: &str) -> BodyStream {
    pack_dir_with(dir, name, None, |_| {})
}

/// [`pack_dir`], also writing the tar to `copy` as it goes, and calling `done` on the
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

/// Size of a tar block.
const BLOCK: usize = 512;
/// Bound on the data of a PAX or GNU long-name header: a name is at most a few KiB,
/// and nothing the engine sends needs more.
const MAX_EXTENSION_BYTES: u64 = 1024 * 1024;

/// What a tar stream starts with, once extension headers (PAX, GNU long names) are
/// skipped.
pub enum FirstEntry<R> {
    /// A regular file: its size and a reader of exactly its bytes.
    File {
        /// Size in bytes (from a PAX `size` record when there is one).
        size: u64,
        /// The file's bytes, read from the stream as they are asked for.
        data: tokio::io::Take<R>,
    },
    /// Something other than a regular file (directory, link, device…).
    Other(tar::EntryType),
    /// No entry at all.
    Empty,
}

/// Reads headers from `reader` up to the first real entry. A file's data is left in
/// the reader, so the caller streams it out without buffering it.
pub async fn first_entry<R: AsyncRead + Unpin>(mut reader: R) -> std::io::Result<FirstEntry<R>> {
    let mut pax_size = None;
    loop {
        let mut block = [0u8; BLOCK];
        if !read_block(&mut reader, &mut block).await? || block.iter().all(|&b| b == 0) {
            return Ok(FirstEntry::Empty);
        }
        let header = parse_header(&block)?;
        let entry_size = header.entry_size()?;
        match header.entry_type() {
            tar::EntryType::XHeader => {
                let data = read_extension(&mut reader, entry_size).await?;
                if let Some(size) = pax_record(&data, b"size") {
                    let size = std::str::from_utf8(size)
                        .ok()
                        .and_then(|size| size.parse().ok())
                        .ok_or_else(|| invalid_data("malformed PAX size record"))?;
                    pax_size = Some(size);
                }
            }
            // Global headers and long names/link targets: not needed for the data.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {
                read_extension(&mut reader, entry_size).await?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = pax_size.unwrap_or(entry_size);
                return Ok(FirstEntry::File {
                    size,
                    data: reader.take(size),
                });
            }
            other => return Ok(FirstEntry::Other(other)),
        }
    }
}

/// Fills `block`; `false` on a clean end of stream before its first byte.
async fn read_block<R: AsyncRead + Unpin>(
    reader: &mut R,
    block: &mut [u8; BLOCK],
) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        let n = reader.read(&mut block[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(false)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        filled += n;
    }
    Ok(true)
}

/// Reads the data of an extension header and the padding after it.
async fn read_extension<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: u64,
) -> std::io::Result<Vec<u8>> {
    if size > MAX_EXTENSION_BYTES {
        return Err(invalid_data("tar extension header too large"));
    }
    let padded = size.next_multiple_of(BLOCK as u64);
    let mut data = vec![0; usize::try_from(padded).unwrap_or(usize::MAX)];
    reader.read_exact(&mut data).await?;
    data.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    Ok(data)
}

/// A header block, checked against its checksum (so that garbage is not taken for a
/// header).
fn parse_header(block: &[u8; BLOCK]) -> std::io::Result<&tar::Header> {
    let header = tar::Header::from_byte_slice(block);
    // The checksum is the sum of the block's bytes, its own field counted as spaces.
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    if header.cksum()? != sum {
        return Err(invalid_data("tar header checksum mismatch"));
    }
    Ok(header)
}

/// The value of `key` in PAX records (`"<len> <key>=<value>\n"`, repeated).
fn pax_record<'a>(mut data: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut found = None;
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > data.len() {
            return None;
        }
        let record = &data[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=')
            && &record[..eq] == key
        {
            // A later record overrides an earlier one.
            found = Some(&record[eq + 1..]);
        }
        data = &data[len..];
    }
    found
}

fn invalid_data(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

/// The header blocks of a regular file `name` of `size` bytes: one ustar/GNU block, or,
/// for a name longer than the header's 100 bytes, a GNU long-name entry before it.
/// Owner root, the given mode and mtime (seconds since the epoch).
pub fn file_header(name: &str, size: u64, mode: u32, mtime: u64) -> std::io::Result<Vec<u8>> {
    if name.is_empty() || name.contains(['/', '\0']) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    let new_header = |size: u64, kind: tar::EntryType| -> std::io::Result<tar::Header> {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        Ok(header)
    };
    let mut blocks = Vec::with_capacity(3 * BLOCK);
    let name_bytes = name.as_bytes();
    let name_field_len = tar::Header::new_gnu().as_old().name.len();
    if name_bytes.len() > name_field_len {
        let long_len = name_bytes.len() as u64 + 1;
        let mut long = new_header(long_len, tar::EntryType::GNULongName)?;
        set_name(&mut long, b"././@LongLink");
        long.set_cksum();
        blocks.extend_from_slice(long.as_bytes());
        blocks.extend_from_slice(name_bytes);
        blocks.push(0);
        blocks.resize(blocks.len().next_multiple_of(BLOCK), 0);
    }
    let mut header = new_header(size, tar::EntryType::Regular)?;
    set_name(
        &mut header,
        &name_bytes[..name_bytes.len().min(name_field_len)],
    );
    header.set_cksum();
    blocks.extend_from_slice(header.as_bytes());
    Ok(blocks)
}

/// Writes `name` into the name field as raw bytes (`set_path` would reinterpret it).
fn set_name(header: &mut tar::Header, name: &[u8]) {
    let field = &mut header.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

/// A one-file tar: `name` (see [`file_header`]) holding the bytes of `data`, which
/// must be exactly `size` bytes long. The data passes through as it arrives; a stream
/// that turns out shorter or longer ends the tar with an error instead, so the engine
/// never unpacks a file of the wrong length as if it were whole.
pub fn single_file(
    name: &str,
    size: u64,
    mode: u32,
    mtime: u64,
    data: BodyStream,
) -> std::io::Result<BodyStream> {
    let header = Bytes::from(file_header(name, size, mode, mtime)?);
    let padding = usize::try_from(size.next_multiple_of(BLOCK as u64) - size).unwrap_or(0);
    // Padding to a whole block, then the end-of-archive marker (two zero blocks).
    let trailer = Bytes::from(vec![0u8; padding + 2 * BLOCK]);
    // `Some(trailer)` until the data has ended; nothing is sent after an error.
    let checked = futures_util::stream::unfold(
        (data, 0u64, Some(trailer)),
        move |(mut data, mut seen, trailer)| async move {
            let trailer = trailer?;
            let item = match data.next().await {
                Some(Ok(chunk)) => {
                    seen += chunk.len() as u64;
                    if seen > size {
                        let error = invalid_data("the data is longer than the size announced");
                        return Some((Err(error), (data, seen, None)));
                    }
                    Ok(chunk)
                }
                Some(Err(error)) => return Some((Err(error), (data, seen, None))),
                None if seen < size => {
                    let error = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the data is shorter than the size announced",
                    );
                    return Some((Err(error), (data, seen, None)));
                }
                None => return Some((Ok(trailer), (data, seen, None))),
            };
            Some((item, (data, seen, Some(trailer))))
        },
    );
    Ok(Box::pin(
        futures_util::stream::once(async move { Ok(header) }).chain(checked),
    ))
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

    fn stream_of(bytes: Vec<u8>, chunk: usize) -> BodyStream {
        let chunks: Vec<std::io::Result<Bytes>> = bytes
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    async fn collect(stream: BodyStream) -> std::io::Result<Vec<u8>> {
        stream.map_ok(|chunk| chunk.to_vec()).try_concat().await
    }

    async fn first_file_of(tar: Vec<u8>) -> (u64, Vec<u8>) {
        // Tiny reads: every header and boundary is split across chunks.
        let reader = tokio_util::io::StreamReader::new(stream_of(tar, 7));
        match first_entry(reader).await.unwrap() {
            FirstEntry::File { size, mut data } => {
                let mut content = Vec::new();
                data.read_to_end(&mut content).await.unwrap();
                (size, content)
            }
            FirstEntry::Other(kind) => panic!("not a file: {kind:?}"),
            FirstEntry::Empty => panic!("empty archive"),
        }
    }

    #[tokio::test]
    async fn the_first_file_is_found_behind_long_name_headers() {
        let long_name = "é".repeat(120);
        let content: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &long_name, content.as_slice())
            .unwrap();
        let tar = builder.into_inner().unwrap();
        assert_eq!(first_file_of(tar).await, (1500, content));
    }

    #[tokio::test]
    async fn a_pax_size_record_wins_over_the_header() {
        let pax = b"30 mtime=1700000000.123456789\n10 size=5\n";
        let mut blocks = Vec::new();
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_path("PaxHeaders.0/f").unwrap();
        x.set_size(pax.len() as u64);
        x.set_cksum();
        blocks.extend_from_slice(x.as_bytes());
        blocks.extend_from_slice(pax);
        blocks.resize(blocks.len().next_multiple_of(BLOCK), 0);
        let mut file = tar::Header::new_ustar();
        file.set_path("f").unwrap();
        file.set_size(0);
        file.set_cksum();
        blocks.extend_from_slice(file.as_bytes());
        blocks.extend_from_slice(b"hello");
        blocks.resize(blocks.len().next_multiple_of(BLOCK) + 2 * BLOCK, 0);
        assert_eq!(first_file_of(blocks).await, (5, b"hello".to_vec()));
        assert_eq!(pax_record(pax, b"size"), Some(&b"5"[..]));
        assert_eq!(pax_record(pax, b"path"), None);
        assert_eq!(
            pax_record(b"99 size=5\n", b"size"),
            None,
            "a record past the end"
        );
    }

    #[tokio::test]
    async fn directories_empty_archives_and_garbage_are_told_apart() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder
            .append_data(&mut header, "dir/", std::io::empty())
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let entry = first_entry(tar.as_slice()).await.unwrap();
        assert!(matches!(
            entry,
            FirstEntry::Other(tar::EntryType::Directory)
        ));
        assert!(matches!(
            first_entry(&[0u8; 1024][..]).await.unwrap(),
            FirstEntry::Empty
        ));
        assert!(matches!(
            first_entry(&[][..]).await.unwrap(),
            FirstEntry::Empty
        ));
        assert!(first_entry(&[b'x'; 512][..]).await.is_err(), "bad checksum");
        assert!(first_entry(&[b'x'; 100][..]).await.is_err(), "cut short");
    }

    #[tokio::test]
    async fn a_single_file_tar_unpacks_with_name_mode_and_owner() {
        for name in [
            "short.txt",
            "name with spaces\nand \"quotes\"",
            &"ü".repeat(100),
        ] {
            let content = b"some bytes\0\xff".repeat(100);
            let data = stream_of(content.clone(), 333);
            let tar = collect(
                single_file(name, content.len() as u64, 0o644, 1_700_000_000, data).unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(tar.len() % BLOCK, 0);
            let mut archive = tar::Archive::new(tar.as_slice());
            let mut entries = archive.entries().unwrap();
            let mut entry = entries.next().unwrap().unwrap();
            assert_eq!(&*entry.path_bytes(), name.as_bytes());
            assert_eq!(entry.header().mode().unwrap(), 0o644);
            assert_eq!(entry.header().uid().unwrap(), 0);
            assert_eq!(entry.header().mtime().unwrap(), 1_700_000_000);
            assert_eq!(entry.header().entry_type(), tar::EntryType::Regular);
            let mut read = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut read).unwrap();
            assert_eq!(read, content);
            drop(entry);
            assert!(entries.next().is_none());
            // And our own reader agrees.
            assert_eq!(first_file_of(tar).await, (content.len() as u64, content));
        }
    }

    #[tokio::test]
    async fn a_single_file_tar_fails_on_the_wrong_length() {
        let short = single_file("f", 10, 0o644, 0, stream_of(b"123".to_vec(), 2)).unwrap();
        let err = collect(short).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let long = single_file("f", 2, 0o644, 0, stream_of(b"123".to_vec(), 2)).unwrap();
        assert_eq!(
            collect(long).await.unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        assert!(single_file("a/b", 0, 0o644, 0, stream_of(Vec::new(), 1)).is_err());
        assert!(file_header("", 0, 0o644, 0).is_err());
        let empty = collect(single_file("e", 0, 0o644, 0, stream_of(Vec::new(), 1)).unwrap())
            .await
            .unwrap();
        assert_eq!(empty.len(), 3 * BLOCK, "a header and the end marker");
    }
}
