//! End-to-end tests: real `oss-storaged`, `oss-proxy` and `oss` processes on loopback.
//!
//! Build the binaries first (`cargo build --bins`); `scripts/test` does. Each test starts its
//! own cluster in its own temporary directory on port-0 listeners, so tests run in parallel.
//!
//! - [`core`]: round trips, overwrite, delete, list, replica placement.
//! - [`restart`]: the proxy and storage servers die and come back.
//! - [`bad_input`]: invalid names, missing files, unreachable proxy, garbage on the wire,
//!   failed downloads.
//! - [`fuzz`]: damaged frames after login, to the proxy and a storage server (seeded).
//! - [`concurrency`]: many clients at once; racing writers.
//! - [`fuse`], [`fuse_dirs`]: a real `ossfs` mount; `fuse_dirs` drives a directory tree
//!   with `cp -r`, `tar`, `rsync` and `git`.
//! - [`keys`]: per-user keys, the admin key and the cluster secret.
//! - [`swift`]: the Swift door over HTTP: tokens, statuses, listings, ranges, healing.
//! - [`swift_clients`]: python-swiftclient and rclone against the door.
//! - [`tree`]: nested names, listings by directory, `mkdir`, `copy` and `move`.

mod bad_input;
mod concurrency;
mod core;
mod fuse;
mod fuse_dirs;
mod fuzz;
mod heal;
mod keys;
mod rebalance;
mod replicator;
mod restart;
mod swift;
mod swift_clients;
mod tree;
mod util2;
