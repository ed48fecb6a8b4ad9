//! File operations: stat, list, read, write, mkdir.
//!
//! Metadata comes from `nix`'s `stat`/`lstat`/`fstat` only: std's metadata calls use
//! `statx`, which the old gVisor in production refuses.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, lstat, stat};
use nix::unistd::{Gid, Uid, fchown, mkdir};
use repobox_protocol::{Entry, ErrorKind, Kind, Reply, Stat};

use crate::error::{OpError, OpResult};
use crate::stream::{ChannelReader, ChunkSink};

/// The file type bits of a mode.
pub(crate) fn file_type(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits())
}

/// The protocol's kind for a mode.
pub(crate) fn kind(mode: u32) -> Kind {
    match file_type(mode) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Directory,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// Whether a stat is of a directory.
pub(crate) fn is_dir(st: &FileStat) -> bool {
    file_type(st.st_mode) == SFlag::S_IFDIR
}

/// The protocol's stat of `path` from its `FileStat` (reading the link of a symlink).
pub(crate) fn to_stat(st: &FileStat, path: &Path) -> Stat {
    let kind = kind(st.st_mode);
    let link_target = (kind == Kind::Symlink)
        .then(|| std::fs::read_link(path).ok())
        .flatten()
        .map(|target| target.as_os_str().to_string_lossy().into_owned());
    Stat {
        kind,
        size: st.st_size.max(0) as u64,
        mode: st.st_mode & 0o7777,
        mtime_secs: st.st_mtime,
        mtime_nanos: st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        link_target,
    }
}

/// Checks that a path from the server is absolute.
pub(crate) fn absolute(path: &str) -> OpResult<PathBuf> {
    if path.starts_with('/') && !path.contains('\0') {
        Ok(PathBuf::from(path))
    } else {
        Err(OpError::new(
            ErrorKind::Invalid,
            format!("{path:?} is not an absolute path"),
        ))
    }
}

/// [`Request::Stat`](repobox_protocol::Request::Stat).
pub(crate) fn op_stat(path: &str, follow: bool) -> OpResult<Reply> {
    let path = absolute(path)?;
    let result = if follow { stat(&path) } else { lstat(&path) };
    match result {
        Ok(st) => Ok(Reply::Stat {
            stat: Some(to_stat(&st, &path)),
        }),
        Err(Errno::ENOENT) => Ok(Reply::Stat { stat: None }),
        Err(errno) => Err(OpError::errno(errno, path.display())),
    }
}

/// Stats a path that must be an existing directory (following symlinks).
pub(crate) fn require_dir(path: &Path) -> OpResult<FileStat> {
    match stat(path) {
        Ok(st) if is_dir(&st) => Ok(st),
        Ok(_) => Err(OpError::new(
            ErrorKind::NotDirectory,
            format!("{}: Not a directory", path.display()),
        )),
        Err(errno) => Err(OpError::errno(errno, path.display())),
    }
}

/// The names in a directory, sorted by their bytes.
pub(crate) fn sorted_names(path: &Path) -> OpResult<Vec<std::ffi::OsString>> {
    let dir = std::fs::read_dir(path).map_err(|e| OpError::io(&e, path.display()))?;
    let mut names: Vec<_> = dir
        .filter_map(|entry| entry.ok().map(|e| e.file_name()))
        .collect();
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// [`Request::List`](repobox_protocol::Request::List).
pub(crate) fn op_list(path: &str, offset: u64) -> OpResult<Reply> {
    let path = absolute(path)?;
    require_dir(&path)?;
    let mut entries = Vec::new();
    let names = sorted_names(&path)?;
    let total = names.len() as u64;
    let mut bytes = 0;
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let mut next = offset.min(total);
    for name in names
        .into_iter()
        .skip(skip)
        .take(repobox_protocol::LIST_PAGE as usize)
    {
        let child = path.join(&name);
        // An entry removed meanwhile is skipped.
        let Ok(st) = lstat(&child) else {
            next += 1;
            continue;
        };
        let entry = Entry {
            name: name.to_string_lossy().into_owned(),
            stat: to_stat(&st, &child),
        };
        bytes += serde_json::to_vec(&entry).map_or(0, |json| json.len());
        if bytes > repobox_protocol::LIST_PAGE_BYTES && !entries.is_empty() {
            break;
        }
        entries.push(entry);
        next += 1;
    }
    Ok(Reply::Listing {
        entries,
        total,
        next,
    })
}

/// Opens a file to read (symlinks followed): the file and its stat.
pub(crate) fn open_read(path: &str) -> OpResult<(File, Stat)> {
    let path = absolute(path)?;
    let not_regular = |st: &FileStat| match kind(st.st_mode) {
        Kind::Directory => Some(OpError::new(
            ErrorKind::IsDirectory,
            format!("{}: Is a directory", path.display()),
        )),
        Kind::File => None,
        _ => Some(OpError::new(
            ErrorKind::Invalid,
            format!("{}: not a regular file", path.display()),
        )),
    };
    // Checked before opening: opening a fifo would block.
    let st = stat(&path).map_err(|errno| OpError::errno(errno, path.display()))?;
    if let Some(error) = not_regular(&st) {
        return Err(error);
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| OpError::io(&e, path.display()))?;
    let st = fstat(file.as_raw_fd()).map_err(|errno| OpError::errno(errno, path.display()))?;
    if let Some(error) = not_regular(&st) {
        return Err(error);
    }
    Ok((file, to_stat(&st, &path)))
}

/// Copies an opened file into the sink.
pub(crate) fn produce_file(mut file: File, mut sink: ChunkSink, path: &str) -> OpResult<()> {
    let mut buf = vec![0u8; repobox_protocol::MAX_CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(OpError::io(&e, path)),
        };
        sink.write_all(&buf[..n])
            .map_err(|e| OpError::new(ErrorKind::Other, e.to_string()))?;
    }
    sink.flush()
        .map_err(|e| OpError::new(ErrorKind::Other, e.to_string()))
}

/// `mkdir -p` with mode 0755.
pub(crate) fn mkdir_p(path: &Path) -> OpResult<()> {
    let mode = Mode::from_bits_truncate(0o755);
    let exists = |path: &Path| match stat(path) {
        Ok(st) if is_dir(&st) => Ok(()),
        Ok(_) => Err(OpError::new(
            ErrorKind::NotDirectory,
            format!("{}: exists and is not a directory", path.display()),
        )),
        Err(errno) => Err(OpError::errno(errno, path.display())),
    };
    match mkdir(path, mode) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => exists(path),
        Err(Errno::ENOENT) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                mkdir_p(parent)?;
            }
            match mkdir(path, mode) {
                Ok(()) => Ok(()),
                Err(Errno::EEXIST) => exists(path),
                Err(errno) => Err(OpError::errno(errno, path.display())),
            }
        }
        Err(errno) => Err(OpError::errno(errno, path.display())),
    }
}

/// [`Request::Mkdir`](repobox_protocol::Request::Mkdir).
pub(crate) fn op_mkdir(path: &str) -> OpResult<Reply> {
    mkdir_p(&absolute(path)?)?;
    Ok(Reply::Done { stat: None })
}

/// Where a write to `path` lands: through symlinks at `path`, as a shell's `>` does;
/// with the stat of the file there, if there is one.
fn write_target(path: &Path) -> OpResult<(PathBuf, Option<FileStat>)> {
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match lstat(&target) {
            Ok(st) => match kind(st.st_mode) {
                Kind::Symlink => {
                    let link = std::fs::read_link(&target)
                        .map_err(|e| OpError::io(&e, target.display()))?;
                    target = match target.parent() {
                        Some(parent) if link.is_relative() => parent.join(link),
                        _ => link,
                    };
                }
                Kind::Directory => {
                    return Err(OpError::new(
                        ErrorKind::IsDirectory,
                        format!("{}: Is a directory", target.display()),
                    ));
                }
                _ => return Ok((target, Some(st))),
            },
            Err(Errno::ENOENT) => return Ok((target, None)),
            Err(errno) => return Err(OpError::errno(errno, target.display())),
        }
    }
    Err(OpError::new(
        ErrorKind::Invalid,
        format!("{}: Too many levels of symbolic links", path.display()),
    ))
}

/// A name for a temporary file beside `target`.
pub(crate) fn temp_path(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().unwrap_or(OsStr::new("file"));
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".repobox-{}-{n}-{nanos:08x}", std::process::id()));
    target.with_file_name(temp)
}

/// A temporary file removed unless kept.
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// [`Request::Write`](repobox_protocol::Request::Write), on a blocking thread: the data
/// comes from `reader`.
pub(crate) fn op_write(
    path: &str,
    mode: u32,
    create_parents: bool,
    mut reader: ChannelReader,
) -> OpResult<Reply> {
    let path = absolute(path)?;
    let (target, existing) = write_target(&path)?;
    let parent = target.parent().unwrap_or(Path::new("/"));
    match stat(parent) {
        Ok(st) if is_dir(&st) => {}
        Ok(_) => {
            return Err(OpError::new(
                ErrorKind::NotDirectory,
                format!("{}: Not a directory", parent.display()),
            ));
        }
        Err(Errno::ENOENT) if create_parents => mkdir_p(parent)?,
        Err(Errno::ENOENT) => {
            return Err(OpError::new(
                ErrorKind::NotFound,
                format!("{}: the parent directory does not exist", parent.display()),
            ));
        }
        Err(errno) => return Err(OpError::errno(errno, parent.display())),
    }
    let temp_name = temp_path(&target);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_name)
        .map_err(|e| OpError::io(&e, temp_name.display()))?;
    let mut temp = TempFile {
        path: Some(temp_name.clone()),
    };
    if let Some(existing) = existing {
        // The replaced file's owner stays (as with a shell's `>`); before the chmod,
        // which a chown would undo for set-id bits.
        let _ = fchown(
            file.as_raw_fd(),
            Some(Uid::from_raw(existing.st_uid)),
            Some(Gid::from_raw(existing.st_gid)),
        );
    }
    fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode & 0o7777))
        .map_err(|errno| OpError::errno(errno, temp_name.display()))?;
    let mut buf = vec![0u8; repobox_protocol::MAX_CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // Cancelled: the temporary file goes.
            Err(e) => return Err(OpError::new(ErrorKind::Other, e.to_string())),
        };
        file.write_all(&buf[..n])
            .map_err(|e| OpError::io(&e, target.display()))?;
    }
    drop(file);
    std::fs::rename(&temp_name, &target).map_err(|e| OpError::io(&e, target.display()))?;
    temp.path = None;
    let st = lstat(&target).map_err(|errno| OpError::errno(errno, target.display()))?;
    Ok(Reply::Done {
        stat: Some(to_stat(&st, &target)),
    })
}
