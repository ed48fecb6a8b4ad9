//! Tar archives in and out ([`Request::ArchiveOut`], [`Request::ArchiveIn`]).
//!
//! The `tar` crate's path helpers and unpacking stat with `statx` (refused by the old
//! gVisor in production), so headers are built here from `lstat`, and entries are
//! created one by one.
//!
//! [`Request::ArchiveOut`]: repobox_protocol::Request::ArchiveOut
//! [`Request::ArchiveIn`]: repobox_protocol::Request::ArchiveIn

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, Mode, UtimensatFlags, fchmod, futimens, lstat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::mkdir;
use nix::unistd::{Gid, Uid, fchown, fchownat};
use repobox_protocol::{ErrorKind, Kind, Reply, Stat};
use tar::{EntryType, Header};

use crate::error::{OpError, OpResult};
use crate::files::{absolute, is_dir, kind, require_dir, sorted_names, to_stat};
use crate::stream::{ChannelReader, ChunkSink};

// ---------------------------------------------------------------------------------
// Out

/// The `lstat` of what an archive-out sends.
pub(crate) fn open_out(path: &str) -> OpResult<(PathBuf, Stat)> {
    let path = absolute(path)?;
    let st = lstat(&path).map_err(|errno| OpError::errno(errno, path.display()))?;
    let stat = to_stat(&st, &path);
    Ok((path, stat))
}

/// Reads exactly `remaining` bytes from a file that may shrink meanwhile (zeros make up
/// the difference) or grow (the rest is not read).
struct Exact {
    file: Option<File>,
    remaining: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let got = loop {
            match self.file.as_mut().map(|file| file.read(&mut buf[..want])) {
                Some(Ok(n)) if n > 0 => break n,
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    // End of file (or an error) before the size in the header: zeros.
                    self.file = None;
                    buf[..want].fill(0);
                    break want;
                }
            }
        };
        self.remaining -= got as u64;
        Ok(got)
    }
}

fn header(st: &FileStat, entry_type: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_size(size);
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_mtime(st.st_mtime.max(0) as u64);
    header
}

fn tar_error(error: &io::Error) -> OpError {
    OpError::new(ErrorKind::Other, format!("writing the archive: {error}"))
}

/// Appends `path` (and, for a directory, what is below it on the same file system as
/// `root_dev`: like `tar --one-file-system`, a mount point such as `/proc` is archived
/// as an empty directory, so archiving `/` never walks into the kernel's files).
fn append(
    builder: &mut tar::Builder<ChunkSink>,
    path: &Path,
    name: &Path,
    st: &FileStat,
    root_dev: u64,
) -> OpResult<()> {
    match kind(st.st_mode) {
        Kind::Directory => {
            if !name.as_os_str().is_empty() {
                let mut header = header(st, EntryType::Directory, 0);
                builder
                    .append_data(&mut header, name, io::empty())
                    .map_err(|e| tar_error(&e))?;
            }
            if st.st_dev != root_dev {
                return Ok(());
            }
            let names = match sorted_names(path) {
                Ok(names) => names,
                // Removed meanwhile.
                Err(error) if error.kind == ErrorKind::NotFound => return Ok(()),
                Err(error) => return Err(error),
            };
            for child_name in names {
                let child = path.join(&child_name);
                let Ok(child_st) = lstat(&child) else {
                    continue;
                };
                append(
                    builder,
                    &child,
                    &name.join(&child_name),
                    &child_st,
                    root_dev,
                )?;
            }
        }
        Kind::File => {
            let file = match OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(path)
            {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(error) => return Err(OpError::io(&error, path.display())),
            };
            let size = st.st_size.max(0) as u64;
            let mut header = header(st, EntryType::Regular, size);
            let data = Exact {
                file: Some(file),
                remaining: size,
            };
            builder
                .append_data(&mut header, name, data)
                .map_err(|e| tar_error(&e))?;
        }
        Kind::Symlink => {
            let Ok(target) = std::fs::read_link(path) else {
                return Ok(());
            };
            let mut header = header(st, EntryType::Symlink, 0);
            builder
                .append_link(&mut header, name, &target)
                .map_err(|e| tar_error(&e))?;
        }
        // Devices, fifos and sockets are not archived.
        Kind::Other => {}
    }
    Ok(())
}

/// Writes the tar of `path` into `sink`: entries named from `path`'s base name down.
pub(crate) fn produce(path: &Path, sink: ChunkSink) -> OpResult<()> {
    let st = lstat(path).map_err(|errno| OpError::errno(errno, path.display()))?;
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    let mut builder = tar::Builder::new(sink);
    append(&mut builder, path, &name, &st, st.st_dev)?;
    let mut sink = builder.into_inner().map_err(|e| tar_error(&e))?;
    sink.flush().map_err(|e| tar_error(&e))
}

// ---------------------------------------------------------------------------------
// In

/// An entry's path inside the destination: relative, without `.` components; refused
/// when absolute or with `..`.
fn entry_path(raw: &[u8]) -> OpResult<PathBuf> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.first() == Some(&b'/') {
        return Err(OpError::new(
            ErrorKind::Invalid,
            format!("archive entry {:?} is an absolute path", shown()),
        ));
    }
    let mut path = PathBuf::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                return Err(OpError::new(
                    ErrorKind::Invalid,
                    format!(
                        "archive entry {:?} would land outside the directory",
                        shown()
                    ),
                ));
            }
            name => path.push(OsStr::from_bytes(name)),
        }
    }
    Ok(path)
}

fn malformed(error: &io::Error) -> OpError {
    OpError::new(ErrorKind::Invalid, format!("malformed archive: {error}"))
}

fn time(secs: u64) -> TimeSpec {
    TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
}

/// Unpacks into one destination directory.
struct Unpacker {
    dest: PathBuf,
    /// Relative paths known to be real directories (not symlinks) under `dest`.
    dirs: HashSet<PathBuf>,
    /// Directories to give their mode and mtime at the end (after their contents).
    dir_meta: Vec<(PathBuf, u32, u64)>,
}

impl Unpacker {
    /// Makes sure `rel` is a real directory under `dest`, creating it (and its parents)
    /// as needed. A symlink on the way is refused: it could lead outside `dest`.
    fn ensure_dir(&mut self, rel: &Path) -> OpResult<()> {
        if rel.as_os_str().is_empty() || self.dirs.contains(rel) {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let full = self.dest.join(rel);
        match lstat(&full) {
            Ok(st) if is_dir(&st) => {}
            Ok(st) if kind(st.st_mode) == Kind::Symlink => {
                return Err(OpError::new(
                    ErrorKind::Invalid,
                    format!(
                        "{}: an archive entry would go through this symlink",
                        full.display()
                    ),
                ));
            }
            Ok(_) => {
                return Err(OpError::new(
                    ErrorKind::NotDirectory,
                    format!("{}: Not a directory", full.display()),
                ));
            }
            Err(Errno::ENOENT) => match mkdir(&full, Mode::from_bits_truncate(0o755)) {
                Ok(()) => {}
                Err(Errno::EEXIST) if lstat(&full).is_ok_and(|st| is_dir(&st)) => {}
                Err(errno) => return Err(OpError::errno(errno, full.display())),
            },
            Err(errno) => return Err(OpError::errno(errno, full.display())),
        }
        self.dirs.insert(rel.to_path_buf());
        Ok(())
    }

    /// Clears the way for a non-directory at `full`: removes what is there unless it
    /// is a directory. Called after a create failed with EEXIST.
    fn remove_existing(full: &Path) -> OpResult<()> {
        match lstat(full) {
            Ok(st) if is_dir(&st) => Err(OpError::new(
                ErrorKind::Invalid,
                format!(
                    "cannot overwrite directory {} with a non-directory",
                    full.display()
                ),
            )),
            Ok(_) => std::fs::remove_file(full).map_err(|e| OpError::io(&e, full.display())),
            Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(OpError::errno(errno, full.display())),
        }
    }

    fn file(
        full: &Path,
        entry: &mut tar::Entry<'_, ChannelReader>,
        buf: &mut [u8],
    ) -> OpResult<()> {
        let header = entry.header();
        let mode = header.mode().map_err(|e| malformed(&e))? & 0o7777;
        let uid = header.uid().ok();
        let gid = header.gid().ok();
        let mtime = header.mtime().ok();
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(full)
        };
        let mut file = match open() {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Self::remove_existing(full)?;
                open().map_err(|e| OpError::io(&e, full.display()))?
            }
            Err(error) => return Err(OpError::io(&error, full.display())),
        };
        loop {
            let n = match entry.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(malformed(&e)),
            };
            file.write_all(&buf[..n])
                .map_err(|e| OpError::io(&e, full.display()))?;
        }
        let fd = file.as_raw_fd();
        if let (Some(uid), Some(gid)) = (uid, gid) {
            // Without CAP_CHOWN (or for ids outside the namespace) the owner stays root.
            let _ = fchown(
                fd,
                Some(Uid::from_raw(uid as u32)),
                Some(Gid::from_raw(gid as u32)),
            );
        }
        fchmod(fd, Mode::from_bits_truncate(mode))
            .map_err(|errno| OpError::errno(errno, full.display()))?;
        if let Some(mtime) = mtime {
            let _ = futimens(fd, &time(mtime), &time(mtime));
        }
        Ok(())
    }

    fn symlink(full: &Path, target: &Path, header: &Header) -> OpResult<()> {
        match std::os::unix::fs::symlink(target, full) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Self::remove_existing(full)?;
                std::os::unix::fs::symlink(target, full)
                    .map_err(|e| OpError::io(&e, full.display()))?;
            }
            Err(error) => return Err(OpError::io(&error, full.display())),
        }
        if let (Ok(uid), Ok(gid)) = (header.uid(), header.gid()) {
            let _ = fchownat(
                None,
                full,
                Some(Uid::from_raw(uid as u32)),
                Some(Gid::from_raw(gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        if let Ok(mtime) = header.mtime() {
            let _ = utimensat(
                None,
                full,
                &time(mtime),
                &time(mtime),
                UtimensatFlags::NoFollowSymlink,
            );
        }
        Ok(())
    }

    fn hard_link(full: &Path, target: &Path) -> OpResult<()> {
        match std::fs::hard_link(target, full) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Self::remove_existing(full)?;
                std::fs::hard_link(target, full).map_err(|e| OpError::io(&e, full.display()))
            }
            Err(error) => Err(OpError::io(&error, full.display())),
        }
    }

    fn directory(&mut self, rel: &Path, header: &Header) -> OpResult<()> {
        if rel.as_os_str().is_empty() {
            // The destination itself: left as it is.
            return Ok(());
        }
        let full = self.dest.join(rel);
        if !self.dirs.contains(rel) {
            if let Some(parent) = rel.parent() {
                self.ensure_dir(parent)?;
            }
            match lstat(&full) {
                Ok(st) if is_dir(&st) => {}
                Ok(_) => {
                    std::fs::remove_file(&full).map_err(|e| OpError::io(&e, full.display()))?;
                    mkdir(&full, Mode::from_bits_truncate(0o755))
                        .map_err(|errno| OpError::errno(errno, full.display()))?;
                }
                Err(Errno::ENOENT) => {
                    mkdir(&full, Mode::from_bits_truncate(0o755))
                        .map_err(|errno| OpError::errno(errno, full.display()))?;
                }
                Err(errno) => return Err(OpError::errno(errno, full.display())),
            }
            self.dirs.insert(rel.to_path_buf());
        }
        if let (Ok(uid), Ok(gid)) = (header.uid(), header.gid()) {
            let _ = fchownat(
                None,
                &full,
                Some(Uid::from_raw(uid as u32)),
                Some(Gid::from_raw(gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        let mode = header.mode().map_err(|e| malformed(&e))? & 0o7777;
        self.dir_meta
            .push((full, mode, header.mtime().unwrap_or(0)));
        Ok(())
    }

    fn entry(&mut self, entry: &mut tar::Entry<'_, ChannelReader>, buf: &mut [u8]) -> OpResult<()> {
        let raw = entry.path_bytes().into_owned();
        let rel = entry_path(&raw)?;
        let entry_type = entry.header().entry_type();
        if entry_type.is_dir() {
            let header = entry.header().clone();
            return self.directory(&rel, &header);
        }
        if !(entry_type.is_file()
            || entry_type.is_symlink()
            || entry_type.is_hard_link()
            || entry_type == EntryType::Continuous)
        {
            // Devices, fifos, extension headers of other kinds: skipped.
            return Ok(());
        }
        if rel.as_os_str().is_empty() {
            return Err(OpError::new(
                ErrorKind::Invalid,
                format!(
                    "cannot overwrite directory {} with a non-directory",
                    self.dest.display()
                ),
            ));
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let full = self.dest.join(&rel);
        if entry_type.is_symlink() || entry_type.is_hard_link() {
            let Some(link) = entry.link_name_bytes().map(|l| l.into_owned()) else {
                return Err(OpError::new(
                    ErrorKind::Invalid,
                    format!(
                        "archive entry {:?} is a link without a target",
                        String::from_utf8_lossy(&raw)
                    ),
                ));
            };
            if entry_type.is_symlink() {
                let header = entry.header().clone();
                return Self::symlink(&full, Path::new(OsStr::from_bytes(&link)), &header);
            }
            let target_rel = entry_path(&link)?;
            // Its directories too must be real ones inside, not symlinks leading out.
            if let Some(parent) = target_rel.parent() {
                self.ensure_dir(parent)?;
            }
            return Self::hard_link(&full, &self.dest.join(target_rel));
        }
        Self::file(&full, entry, buf)
    }
}

/// [`Request::ArchiveIn`](repobox_protocol::Request::ArchiveIn), on a blocking thread:
/// the tar comes from `reader`.
pub(crate) fn op_archive_in(path: &str, reader: ChannelReader) -> OpResult<Reply> {
    let dest = absolute(path)?;
    require_dir(&dest)?;
    let mut unpacker = Unpacker {
        dest,
        dirs: HashSet::new(),
        dir_meta: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut buf = vec![0u8; 128 * 1024];
    for entry in archive.entries().map_err(|e| malformed(&e))? {
        let mut entry = entry.map_err(|e| malformed(&e))?;
        unpacker.entry(&mut entry, &mut buf)?;
    }
    // What follows the end of the archive, up to Eof.
    archive.into_inner().drain().map_err(|e| malformed(&e))?;
    for (full, mode, mtime) in unpacker.dir_meta.iter().rev() {
        let _ = nix::sys::stat::fchmodat(
            None,
            full,
            Mode::from_bits_truncate(*mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
        let _ = utimensat(
            None,
            full,
            &time(*mtime),
            &time(*mtime),
            UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(Reply::Done { stat: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_inside() {
        assert_eq!(
            entry_path(b"workspace/src/a.rs").unwrap(),
            PathBuf::from("workspace/src/a.rs")
        );
        assert_eq!(entry_path(b"./a//b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(entry_path(b"./").unwrap(), PathBuf::new());
        assert!(entry_path(b"../evil").is_err());
        assert!(entry_path(b"a/../../evil").is_err());
        assert!(entry_path(b"/etc/passwd").is_err());
    }
}
