//! oss-storaged: a storage server. Keeps objects on its local disk with their MD5 and
//! per-block CRCs, verifies every block before sending it, and answers the proxy.
//!
//! - [`server`]: [`run`] and [`Server`]: the accept loop, one task per connection, graceful
//!   shutdown.
//! - [`handler`]: one function per [`oss_proto::wire::StorageRequest`]; streaming Put and Get.
//! - [`store`]: the on-disk layout (documented byte by byte there), crash-safe writes,
//!   verified reads, the in-memory index, quarantine.
//! - [`audit`]: the background auditor (rate-limited full re-reads; tombstone reclaim).
//! - [`error`]: typed errors and their one mapping to [`oss_proto::WireError`].

pub mod audit;
pub mod error;
pub mod handler;
pub mod server;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use oss_proto::auth::Key;

pub use error::{Error, StoreError};
pub use server::{run, Server};
pub use store::Store;

/// How a server runs. [`Config::new`] gives the command line's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory (created if missing).
    pub data: PathBuf,
    /// The cluster secret: only a peer that proves it holds it (the proxy) is served.
    pub secret: Key,
    /// Time between background audit passes; `None` = only when asked.
    pub audit_interval: Option<Duration>,
    /// Audit read rate in bytes per second; 0 = unlimited.
    pub audit_rate: u64,
    /// Longest wait for one frame from a peer in the middle of a request, or for a peer to
    /// take one of ours. A stalled client cannot pin a temp file or a descriptor longer.
    pub frame_timeout: Duration,
    /// A logged-in connection that sends no next request header within this long is
    /// closed, and a login must finish within it (and within `frame_timeout`). Long by
    /// default: the proxy pools its connections, pings through them every 500 ms, and
    /// notices a closed one before reusing it, so only forgotten connections reach it.
    pub idle_timeout: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn new(data: impl Into<PathBuf>, secret: Key) -> Self {
        Config {
            data: data.into(),
            secret,
            audit_interval: Some(Duration::from_secs(600)),
            audit_rate: 50_000_000,
            frame_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
