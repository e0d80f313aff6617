//! oss-fs: `ossfs`, the FUSE view of the object store. `/USER/A/B/FILE` on the mount is the
//! object `USER/A/B/FILE` on the proxy; directories are the names' prefixes and explicit
//! markers (see [`fs`]).
//!
//! - [`inode`]: the inode table (inode numbers ↔ root / directory / file, lookup counts).
//! - [`cache`]: per-directory listings and attributes remembered for a short TTL, and the
//!   folding of a listing page (files, markers, prefixes) into entries; pure data.
//! - [`dirtimes`]: directories' mtime and ctime as changed by this mount (in memory only).
//! - [`attrs`]: the modification and access times and the mode a file carries in its
//!   object's metadata.
//! - [`rename`]: the plan of a directory rename (copy everything, then delete), pure.
//! - [`handle`]: open files: the write spool (a local temp file) and read-ahead streams.
//! - [`fs`]: the FUSE callbacks, thin wrappers over helpers returning `Result<_, Errno>`.
//! - [`errno`]: the one mapping from proxy, name and spool errors to errno values.
//! - [`mount`]: start-up checks (stale mounts, the proxy), mounting, signals, unmounting.
//!
//! Consistency is close-to-open, like NFS: what is written becomes visible to other clients
//! when `close()` (or `fsync()`) returns; what other clients write becomes visible here
//! within the cache TTL (1 s by default), every new directory listing (`ls`) asks the proxy,
//! and a file opened here reads the proxy's current version.

pub mod attrs;
pub mod cache;
pub mod dirtimes;
pub mod errno;
pub mod fs;
pub mod handle;
pub mod inode;
pub mod mount;
pub mod rename;
