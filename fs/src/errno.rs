//! The one place where errors become errno values.
//!
//! Every callback returns `Result<_, Errno>`; these functions are how a proxy error, a name
//! error or a local I/O error (the spool) gets there. Anything that means "the data could
//! not be moved or checked" is EIO, so `cp` and `close()` report it.

use fuser::Errno;
use oss_proto::name::NameError;
use oss_proto::{Error, WireError};

/// A proxy call failed.
pub fn from_proto(e: &Error) -> Errno {
    match e {
        Error::Remote(w) => from_wire(w),
        // The connection to the proxy broke, timed out or spoke garbage.
        Error::Io(_) | Error::Protocol(_) | Error::Closed | Error::Timeout => Errno::EIO,
    }
}

/// An error the proxy answered with.
pub fn from_wire(w: &WireError) -> Errno {
    match w {
        WireError::NotFound => Errno::ENOENT,
        WireError::InvalidName(n) => from_name(n),
        // Metadata over Swift's limits (it is ours: mode and mtime): a bad argument.
        WireError::InvalidAttrs(_) => Errno::EINVAL,
        WireError::BadRequest(_) => Errno::EINVAL,
        WireError::DiskFull => Errno::ENOSPC,
        WireError::Refused(_) => Errno::EPERM,
        // Another user's files, or a key that stopped working.
        WireError::PermissionDenied(_) | WireError::AuthFailed(_) => Errno::EACCES,
        // Unreachable proxy or servers, corruption that could not be repaired, a lost race
        // with a newer write, a failed MD5: the bytes did not make it, say so.
        WireError::Corrupt(_)
        | WireError::Unavailable(_)
        | WireError::Stale { .. }
        | WireError::Md5Mismatch { .. }
        | WireError::Version { .. }
        | WireError::Io(_)
        | WireError::Internal(_) => Errno::EIO,
    }
}

/// A user or file name the object store does not accept.
pub fn from_name(n: &NameError) -> Errno {
    match n {
        NameError::TooLong(_) | NameError::SegmentTooLong | NameError::FileTooLong => {
            Errno::ENAMETOOLONG
        }
        _ => Errno::EINVAL,
    }
}

/// The largest file the mount holds: 1 TiB (2^40 bytes). The rule is a fixed maximum, not
/// the spool directory's free space: a `truncate -s` spool is sparse, so free space would
/// not bound it, and a fixed limit answers the same on every machine without a system call.
/// A bigger file would also have to go to the proxy as one object streamed from the spool
/// (every byte of it, holes included).
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// EFBIG if a file would end at `end` bytes, beyond [`MAX_FILE_SIZE`] (`truncate -s`,
/// `ftruncate`, a write far past the end). Checked before anything changes.
pub fn check_file_size(end: u64) -> Result<(), Errno> {
    if end > MAX_FILE_SIZE {
        Err(Errno::EFBIG)
    } else {
        Ok(())
    }
}

/// A local I/O error (the spool file in the cache directory).
pub fn from_io(e: &std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => Errno::ENOSPC,
        Some(libc::EDQUOT) => Errno::from_i32(libc::EDQUOT),
        // The spool's file system cannot hold a file this large.
        Some(libc::EFBIG) => Errno::EFBIG,
        _ => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::name::Part;

    #[test]
    fn proxy_errors() {
        let cases = [
            (WireError::NotFound, Errno::ENOENT),
            (
                WireError::InvalidName(NameError::Slash(Part::File)),
                Errno::EINVAL,
            ),
            (
                WireError::InvalidName(NameError::TooLong(Part::File)),
                Errno::ENAMETOOLONG,
            ),
            (WireError::Corrupt("block 3".into()), Errno::EIO),
            (WireError::Unavailable("down".into()), Errno::EIO),
            (WireError::Stale { current: 3 }, Errno::EIO),
            (
                WireError::Md5Mismatch {
                    expected: "a".into(),
                    actual: "b".into(),
                },
                Errno::EIO,
            ),
            (WireError::DiskFull, Errno::ENOSPC),
            (WireError::BadRequest("x".into()), Errno::EINVAL),
            (WireError::Internal("x".into()), Errno::EIO),
        ];
        for (w, want) in cases {
            assert_eq!(from_proto(&Error::Remote(w.clone())), want, "{w:?}");
        }
    }

    #[test]
    fn local_and_connection_errors() {
        assert_eq!(from_proto(&Error::Closed), Errno::EIO);
        assert_eq!(from_proto(&Error::Timeout), Errno::EIO);
        assert_eq!(from_proto(&Error::Protocol("x".into())), Errno::EIO);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(from_proto(&Error::Io(refused)), Errno::EIO);
        assert_eq!(
            from_io(&std::io::Error::from_raw_os_error(libc::ENOSPC)),
            Errno::ENOSPC
        );
        assert_eq!(
            from_io(&std::io::Error::from_raw_os_error(libc::EFBIG)),
            Errno::EFBIG
        );
        assert_eq!(
            from_io(&std::io::Error::from_raw_os_error(libc::EBADF)),
            Errno::EIO
        );
    }

    #[test]
    fn file_size_limit() {
        assert_eq!(check_file_size(0), Ok(()));
        assert_eq!(check_file_size(MAX_FILE_SIZE), Ok(()));
        assert_eq!(check_file_size(MAX_FILE_SIZE + 1), Err(Errno::EFBIG));
        // What pjdfstest and `truncate -s 999999999999999` ask for.
        assert_eq!(check_file_size(999_999_999_999_999), Err(Errno::EFBIG));
        assert_eq!(check_file_size(u64::MAX), Err(Errno::EFBIG));
    }

    #[test]
    fn names() {
        assert_eq!(from_name(&NameError::Dot(Part::User)), Errno::EINVAL);
        assert_eq!(from_name(&NameError::FileTooLong), Errno::ENAMETOOLONG);
        assert_eq!(from_name(&NameError::SegmentTooLong), Errno::ENAMETOOLONG);
        assert_eq!(from_name(&NameError::DotSegment), Errno::EINVAL);
        assert_eq!(from_name(&NameError::Empty(Part::File)), Errno::EINVAL);
        assert_eq!(from_name(&NameError::Nul(Part::File)), Errno::EINVAL);
        assert_eq!(
            from_name(&NameError::TooLong(Part::User)),
            Errno::ENAMETOOLONG
        );
    }
}
