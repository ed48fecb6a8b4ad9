//! Failures of operations, as the protocol reports them.

use std::fmt::Display;
use std::io;

use nix::errno::Errno;
use repobox_protocol::{ErrorKind, Reply};

/// Why an operation failed: what goes into [`Reply::Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// The protocol's classification.
    pub kind: ErrorKind,
    /// For a person.
    pub message: String,
}

impl OpError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// An error from a system call on `what` (usually a path).
    pub fn errno(errno: Errno, what: impl Display) -> Self {
        let kind = kind_of(errno);
        let text = io::Error::from_raw_os_error(errno as i32);
        Self::new(kind, format!("{what}: {text}"))
    }

    /// An error from std's I/O on `what`.
    pub fn io(error: &io::Error, what: impl Display) -> Self {
        match error.raw_os_error() {
            Some(code) => Self::errno(Errno::from_raw(code), what),
            None => Self::new(ErrorKind::Other, format!("{what}: {error}")),
        }
    }

    /// The reply that carries it.
    pub fn reply(&self) -> Reply {
        Reply::error(self.kind, self.message.clone())
    }
}

impl From<OpError> for io::Error {
    fn from(error: OpError) -> Self {
        io::Error::other(error.message)
    }
}

/// The protocol's kind for an errno.
pub(crate) fn kind_of(errno: Errno) -> ErrorKind {
    match errno {
        Errno::ENOENT => ErrorKind::NotFound,
        Errno::ENOTDIR => ErrorKind::NotDirectory,
        Errno::EISDIR => ErrorKind::IsDirectory,
        Errno::ELOOP | Errno::ENAMETOOLONG | Errno::EINVAL => ErrorKind::Invalid,
        Errno::EACCES | Errno::EPERM | Errno::EROFS => ErrorKind::PermissionDenied,
        Errno::ENOSPC | Errno::EDQUOT => ErrorKind::NoSpace,
        _ => ErrorKind::Other,
    }
}

/// Result of an operation's work.
pub(crate) type OpResult<T> = Result<T, OpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_says_so() {
        let error = OpError::io(&io::Error::from_raw_os_error(28), "/x");
        assert_eq!(error.kind, ErrorKind::NoSpace);
        assert!(
            error.message.contains("No space left on device"),
            "{}",
            error.message
        );
    }
}
