//! Proxy settings, from the command line.

use std::path::PathBuf;
use std::time::Duration;

use oss_proto::auth::Key;
/// Shared with `oss-storaged`, which takes durations the same way.
pub use oss_proto::flags::parse_duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the ring and the cluster state live.
    pub state_dir: PathBuf,
    /// The cluster secret shared with the storage servers.
    pub secret: Key,
    /// Only used the first time a state directory is used (then the persisted ring rules).
    pub partitions: Option<u32>,
    pub replicas: Option<u8>,
    pub disks: Vec<String>,
    /// How often every storage server gets a disk check.
    pub check_interval: Duration,
    /// A server that has not answered for this long is declared offline.
    pub offline_after: Duration,
    /// Connect + login deadline towards a storage server (the login is two round trips).
    /// Short: loopback or LAN, and a hung server (SIGSTOP) must not hang clients; long
    /// enough that a loaded machine does not turn a slow accept into a failing server.
    pub connect_timeout: Duration,
    /// Deadline for a storage server's answer to a short request (Swift's node_timeout is
    /// 3 s for the same reason: long enough for a busy disk, short enough for a hung server).
    pub io_timeout: Duration,
    /// Deadline for each piece of a body moving to or from a storage server.
    pub stream_timeout: Duration,
    /// Deadline for a storage server to make an upload durable after its last byte (the
    /// fsync of a large file takes seconds).
    pub commit_timeout: Duration,
    /// How often the repair worker asks servers for what their auditors quarantined.
    pub quarantine_poll: Duration,
    /// A client connection that has not sent its next request header (or finished its
    /// login) within this long is closed: silent and trickling connections do not pile up.
    pub idle_timeout: Duration,
    /// How often the replicator asks every server which partitions it holds, to find
    /// stand-in copies no write recorded (a proxy restart forgets them).
    pub replicate_interval: Duration,
}

impl Config {
    pub fn new(state_dir: impl Into<PathBuf>, secret: Key) -> Self {
        Config {
            state_dir: state_dir.into(),
            secret,
            partitions: None,
            replicas: None,
            disks: Vec::new(),
            check_interval: Duration::from_millis(500),
            offline_after: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(3),
            stream_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(120),
            quarantine_poll: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            replicate_interval: Duration::from_secs(30),
        }
    }
}
