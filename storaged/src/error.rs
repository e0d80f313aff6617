//! The library's typed errors and their one mapping to [`WireError`].

use std::io;

use oss_proto::{Timestamp, WireError};

/// What a store operation can fail with. Callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("a version with timestamp {current} is held")]
    Stale { current: Timestamp },
    #[error("MD5 mismatch: sender says {expected}, body has {actual}")]
    Md5Mismatch { expected: String, actual: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request's name, query or metadata broke the protocol's rules; sent back as is.
    #[error("{0}")]
    Invalid(WireError),
    /// The object failed verification (and was quarantined).
    #[error("corrupted: {0}")]
    Corrupt(String),
    /// Not enough free space for an upload of announced size.
    #[error("disk full: {needed} bytes announced, {free} free")]
    DiskFull { needed: u64, free: u64 },
    /// The data directory is missing, has an unknown format, or is not usable.
    #[error("{0}")]
    Unusable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// True for "no space left" (and quota exhaustion, which looks the same to a client).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }
}

pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// The one place where local failures become values on the wire.
impl From<StoreError> for WireError {
    fn from(e: StoreError) -> WireError {
        match e {
            StoreError::NotFound => WireError::NotFound,
            StoreError::Stale { current } => WireError::Stale { current },
            StoreError::Md5Mismatch { expected, actual } => {
                WireError::Md5Mismatch { expected, actual }
            }
            StoreError::BadRequest(s) => WireError::BadRequest(s),
            StoreError::Invalid(w) => w,
            StoreError::Corrupt(s) => WireError::Corrupt(s),
            StoreError::DiskFull { .. } => WireError::DiskFull,
            StoreError::Unusable(s) => WireError::Unavailable(s),
            ref e @ StoreError::Io { ref source, .. } => {
                if is_disk_full(source) {
                    WireError::DiskFull
                } else {
                    WireError::Io(e.to_string())
                }
            }
            StoreError::Internal(s) => WireError::Internal(s),
        }
    }
}

/// Errors of [`crate::run`] and [`crate::Server`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_disk_full() {
        let e = StoreError::io("write", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(e.is_disk_full());
        assert_eq!(WireError::from(e), WireError::DiskFull);
        let e = StoreError::io("write", io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(WireError::from(e), WireError::Io(s) if s.contains("write")));
    }
}
