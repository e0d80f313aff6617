//! The wire protocol: frames, messages and the one connection type every process uses.
//!
//! A connection is a sequence of frames. Each frame is
//!
//! ```text
//! +--------+----------------+------------------+
//! | kind u8| length u32 (BE)| payload (length) |
//! +--------+----------------+------------------+
//! ```
//!
//! * `HEADER` (0): a postcard-encoded message (a request, a response or a trailer), at most
//!   [`MAX_HEADER`] bytes. The length is checked before anything is allocated.
//! * `DATA` (1): raw body bytes, at most [`MAX_CHUNK`] bytes. Bodies are never serialized.
//! * `END` (2): the end of a body; its payload is empty.
//!
//! A body is zero or more `DATA` frames and one `END`. A sender that fails in the middle of a
//! body sends a `HEADER` frame holding an [`Response::Error`] instead; the reader sees it as
//! [`Chunk::Abort`]. Uploads end with an [`UploadTrailer`] header after `END`, carrying the
//! MD5 the sender computed, so unknown-length input (stdin) streams too.
//!
//! Every connection starts with a login (see [`crate::auth`] for the cryptography):
//!
//! ```text
//! client → server   Hello { magic, version, user, nonce }
//! server → client   Response::Challenge { salt, nonce }     (or Error: version mismatch)
//! client → server   HelloProof { proof }
//! server → client   Response::HelloOk { version, signature } (or Error: AuthFailed, close)
//! ```
//!
//! A client speaks for a user with that user's key; the proxy speaks to storage servers as
//! [`CLUSTER_USER`] with the cluster secret. The client checks the server's signature, so
//! both ends are authenticated and neither key crosses the wire. The version in `Hello` is
//! where a transport upgrade (TLS) will be negotiated: a server that does not speak the
//! client's version says so before anything else is exchanged.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::auth::{self, AuthMessage, Key, Nonce, Salt, Tag, Verifier};
use crate::name::{NameError, ObjectName};
use crate::ring::DevId;

/// Bumped whenever a message's shape changes: postcard is not self-describing, so both ends
/// must agree exactly.
pub const PROTOCOL_VERSION: u32 = 4;
/// The user the proxy logs in as on storage servers, with the cluster secret.
pub const CLUSTER_USER: &str = "oss-cluster";
/// The account owner: the user of the admin key, who may do everything (a reserved name).
pub const ADMIN_USER: &str = "admin";
/// Sent in [`Hello`] so a stray client (an HTTP probe, say) is told off quickly.
pub const MAGIC: [u8; 4] = *b"oss1";
/// Largest header frame. Listings are paged well below this; anything larger is garbage.
pub const MAX_HEADER: u32 = 4 << 20;
/// Largest data frame: big enough to amortize framing, small enough to bound memory.
pub const MAX_CHUNK: u32 = 1 << 20;
/// Size of the data frames that senders produce (four 64 KiB storage blocks).
pub const CHUNK: usize = 256 << 10;
/// Socket buffer size on each side of a connection.
const IO_BUF: usize = 256 << 10;
/// Entries per listing page when the asker sets no smaller limit.
pub const LIST_PAGE: usize = 1000;
/// Most entries one listing page may ask for (Swift's `container_listing_limit`).
pub const MAX_LIST_LIMIT: u32 = 10_000;
/// A listing page stops growing once its entries hold about this many bytes, whatever the
/// limit, so a page of entries with large metadata still fits in a [`MAX_HEADER`] frame.
pub const LIST_PAGE_BYTES: usize = 1 << 20;

/// Frame kinds: a postcard header, a piece of a body, the end of a body.
pub const KIND_HEADER: u8 = 0;
pub const KIND_DATA: u8 = 1;
pub const KIND_END: u8 = 2;

/// Microseconds since the Unix epoch, set by the proxy on every write. Newer wins.
pub type Timestamp = u64;

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn now_micros() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What is known of one version of an object (or its tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub name: ObjectName,
    pub size: u64,
    pub md5: [u8; 16],
    pub timestamp: Timestamp,
    /// A tombstone: the object was deleted at `timestamp`.
    pub deleted: bool,
    /// What the writer stored with the bytes (content type, user metadata).
    pub attrs: Attrs,
}

impl ObjectMeta {
    /// A live directory marker (see [`Attrs::DIRECTORY`]).
    pub fn is_dir_marker(&self) -> bool {
        !self.deleted && self.attrs.is_dir_marker()
    }

    /// Readable at `now`: not a tombstone and not past its `X-Delete-At` (an expired object
    /// is absent, as Swift answers before its expirer ran).
    pub fn is_live_at(&self, now: Timestamp) -> bool {
        !self.deleted && self.attrs.delete_at_micros().is_none_or(|t| t > now)
    }
}

/// What a writer stores with an object besides its bytes, as Swift does: a content type and
/// user metadata (`X-Object-Meta-*` through the Swift door). Stored in the object's footer,
/// copied with the object by every repair, refill and move, and listed with it.
///
/// The mount keeps a file's modification time and mode here, under the keys rclone and
/// python-swiftclient use: [`Attrs::MTIME`] and [`Attrs::MODE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// Empty when the writer named none.
    pub content_type: String,
    /// Lower-case keys (without `x-object-meta-`), sorted.
    pub meta: std::collections::BTreeMap<String, String>,
}

/// Why attributes were refused (Swift's limits; the same numbers in every door).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AttrsError {
    #[error("more than {} metadata items", Attrs::MAX_COUNT)]
    TooMany,
    #[error("metadata name {0:?} is empty, longer than {max} bytes or not a token", max = Attrs::MAX_NAME)]
    BadName(String),
    #[error("metadata value of {0:?} is longer than {max} bytes or holds a control character", max = Attrs::MAX_VALUE)]
    BadValue(String),
    #[error("metadata is larger than {} bytes in all", Attrs::MAX_OVERALL)]
    TooLarge,
    #[error(
        "content type is longer than {} bytes or holds a control character",
        Attrs::MAX_CONTENT_TYPE
    )]
    BadContentType,
}

impl Attrs {
    /// The content type of a directory marker: a zero-byte object named like the directory
    /// (no trailing '/'), as python-swiftclient writes them and rclone reads them.
    pub const DIRECTORY: &'static str = "application/directory";
    /// Modification time set by a client, in seconds since the epoch with a fraction
    /// (`"1700000000.123456"`), as rclone and python-swiftclient write `X-Object-Meta-Mtime`.
    pub const MTIME: &'static str = "mtime";
    /// Unix mode bits set through the mount, in octal (`"100755"`).
    pub const MODE: &'static str = "mode";
    /// Keys starting with this hold object headers Swift stores beside the user's metadata
    /// (`:content-disposition`, `:x-delete-at`, ...): ':' is not a token character, so no
    /// user metadata name can take their place, and they do not count towards its limits.
    pub const SYSTEM: char = ':';
    /// Longest value of a system header.
    pub const MAX_SYSTEM_VALUE: usize = 1024;
    /// The Swift door's `X-Delete-At` (seconds since the epoch): from then on the object
    /// reads as absent, through every door.
    pub const DELETE_AT: &'static str = ":x-delete-at";
    /// Swift's `max_meta_count`, `max_meta_name_length`, `max_meta_value_length`,
    /// `max_meta_overall_size`.
    pub const MAX_COUNT: usize = 90;
    pub const MAX_NAME: usize = 128;
    pub const MAX_VALUE: usize = 256;
    pub const MAX_OVERALL: usize = 4096;
    pub const MAX_CONTENT_TYPE: usize = 256;

    pub fn directory() -> Self {
        Attrs {
            content_type: Self::DIRECTORY.to_owned(),
            meta: Default::default(),
        }
    }

    pub fn is_dir_marker(&self) -> bool {
        self.content_type == Self::DIRECTORY
    }

    /// The client-set modification time in µs since the epoch, if any and well-formed.
    pub fn mtime_micros(&self) -> Option<Timestamp> {
        let v = self.meta.get(Self::MTIME)?;
        let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
        let secs: u64 = secs.parse().ok()?;
        let frac = frac.get(..frac.len().min(6))?;
        let micros: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().ok()?
        };
        secs.checked_mul(1_000_000)?.checked_add(micros)
    }

    pub fn set_mtime_micros(&mut self, us: Timestamp) {
        self.meta.insert(
            Self::MTIME.to_owned(),
            format!("{}.{:06}", us / 1_000_000, us % 1_000_000),
        );
    }

    /// Mode bits set through the mount (permission bits and above), if any.
    pub fn mode(&self) -> Option<u32> {
        u32::from_str_radix(self.meta.get(Self::MODE)?, 8).ok()
    }

    /// When the object expires (`X-Delete-At`), in µs since the epoch.
    pub fn delete_at_micros(&self) -> Option<Timestamp> {
        let secs: u64 = self.meta.get(Self::DELETE_AT)?.parse().ok()?;
        secs.checked_mul(1_000_000)
    }

    /// The user's metadata, without the system headers.
    pub fn user_meta(&self) -> impl Iterator<Item = (&String, &String)> {
        self.meta
            .iter()
            .filter(|(k, _)| !k.starts_with(Self::SYSTEM))
    }

    pub fn set_mode(&mut self, mode: u32) {
        self.meta.insert(Self::MODE.to_owned(), format!("{mode:o}"));
    }

    /// Checks Swift's limits. Names must be HTTP tokens (they become header names).
    pub fn validate(&self) -> Result<(), AttrsError> {
        let printable = |s: &str| !s.chars().any(|c| c.is_control());
        if self.content_type.len() > Self::MAX_CONTENT_TYPE || !printable(&self.content_type) {
            return Err(AttrsError::BadContentType);
        }
        let token = |k: &str| {
            !k.is_empty()
                && k.len() <= Self::MAX_NAME
                && k.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
                })
        };
        let mut overall = 0;
        let mut count = 0;
        for (k, v) in &self.meta {
            if let Some(header) = k.strip_prefix(Self::SYSTEM) {
                if !token(header) {
                    return Err(AttrsError::BadName(k.clone()));
                }
                if v.len() > Self::MAX_SYSTEM_VALUE || !printable(v) {
                    return Err(AttrsError::BadValue(k.clone()));
                }
                continue;
            }
            if !token(k) {
                return Err(AttrsError::BadName(k.clone()));
            }
            if v.len() > Self::MAX_VALUE || !printable(v) {
                return Err(AttrsError::BadValue(k.clone()));
            }
            overall += k.len() + v.len();
            count += 1;
        }
        if count > Self::MAX_COUNT {
            return Err(AttrsError::TooMany);
        }
        if overall > Self::MAX_OVERALL {
            return Err(AttrsError::TooLarge);
        }
        Ok(())
    }
}

/// One listing request, relative to a user. Names are compared as UTF-8 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    pub user: String,
    /// Only names starting with this (`"photos/"` lists a directory; `""` everything).
    pub prefix: String,
    /// With `Some('/')`, names with the delimiter after the prefix are rolled up into one
    /// [`ListItem::Prefix`] each (a subdirectory), as S3 and Swift do.
    pub delimiter: Option<char>,
    /// Only entries sorting after this (the last entry of the previous page).
    pub marker: String,
    /// Only entries sorting before this; empty for no bound.
    pub end_marker: String,
    /// At most this many entries (at most [`MAX_LIST_LIMIT`]); 0 means [`LIST_PAGE`].
    pub limit: u32,
}

impl ListQuery {
    /// The query's user and prefix check, and its limit clamped to what a page may hold.
    pub fn validate(&self) -> Result<usize, WireError> {
        crate::name::validate_user(&self.user).map_err(WireError::InvalidName)?;
        for s in [&self.prefix, &self.marker, &self.end_marker] {
            crate::name::validate_prefix(s).map_err(WireError::InvalidName)?;
        }
        if matches!(self.delimiter, Some('\0' | char::MAX)) {
            return Err(WireError::BadRequest(
                "the delimiter may not be NUL or U+10FFFF".into(),
            ));
        }
        if self.limit > MAX_LIST_LIMIT {
            return Err(WireError::BadRequest(format!(
                "listing limit {} is above {MAX_LIST_LIMIT}",
                self.limit
            )));
        }
        Ok(if self.limit == 0 {
            LIST_PAGE
        } else {
            self.limit as usize
        })
    }

    /// The rolled-up key of a file name under this query: the name itself, or with a
    /// delimiter after the prefix, the prefix up to and including that delimiter.
    pub fn roll_up<'a>(&self, file: &'a str) -> ListKey<'a> {
        if let Some(d) = self.delimiter {
            if let Some(rest) = file.get(self.prefix.len()..) {
                if let Some(i) = rest.find(d) {
                    return ListKey::Prefix(&file[..self.prefix.len() + i + d.len_utf8()]);
                }
            }
        }
        ListKey::Name(file)
    }
}

/// A name as a listing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKey<'a> {
    Name(&'a str),
    Prefix(&'a str),
}

/// One entry of a listing page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListItem {
    /// A file (or, in a storage server's page, possibly a tombstone).
    Object(ObjectMeta),
    /// A common prefix, ending with the delimiter: a subdirectory that holds at least one
    /// live name. Relative to the user, like [`ObjectName::file`].
    Prefix(String),
}

impl ListItem {
    /// The key a listing is sorted by and a marker names: the file name, or the prefix.
    pub fn key(&self) -> &str {
        match self {
            ListItem::Object(m) => m.name.file(),
            ListItem::Prefix(p) => p,
        }
    }

    /// A rough encoded size, for [`LIST_PAGE_BYTES`].
    pub fn approx_size(&self) -> usize {
        match self {
            ListItem::Object(m) => {
                64 + m.name.as_str().len()
                    + m.attrs.content_type.len()
                    + m.attrs
                        .meta
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 4)
                        .sum::<usize>()
            }
            ListItem::Prefix(p) => 8 + p.len(),
        }
    }
}

/// Errors that cross the wire as values. Callers branch on the variant, never on text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum WireError {
    #[error("not found")]
    NotFound,
    #[error("invalid name: {0}")]
    InvalidName(NameError),
    #[error("invalid metadata: {0}")]
    InvalidAttrs(AttrsError),
    #[error("corrupted: {0}")]
    Corrupt(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("a newer version exists (timestamp {current})")]
    Stale { current: Timestamp },
    #[error("MD5 mismatch: expected {expected}, got {actual}")]
    Md5Mismatch { expected: String, actual: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("protocol version mismatch: server speaks {server}, client {client}")]
    Version { server: u32, client: u32 },
    #[error("disk full")]
    DiskFull,
    /// The login failed: wrong key, unknown user, or (seen by a client) a server that could
    /// not prove it knows the key.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Refused(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// First frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 4],
    pub version: u32,
    /// Who the client speaks for.
    pub user: String,
    pub nonce: Nonce,
}

/// The client's third message: proof that it holds the user's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloProof {
    pub proof: Tag,
}

/// Who a connection speaks for, and the key that proves it.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub key: Key,
}

impl Credentials {
    /// The proxy's credentials towards storage servers.
    pub fn cluster(secret: Key) -> Self {
        Credentials {
            user: CLUSTER_USER.to_owned(),
            key: secret,
        }
    }

    /// A user's credentials from a key line as `oss user add` prints it: `NAME:HEX`. The
    /// whole line is the key; the name is what comes before its last ':'.
    pub fn from_key_line(text: &[u8]) -> Result<Self, auth::KeyError> {
        let key = Key::from_text(text)?;
        let line = std::str::from_utf8(key.as_text()).map_err(|_| auth::KeyError::Malformed)?;
        let (user, secret) = line.rsplit_once(':').ok_or(auth::KeyError::Malformed)?;
        if user.is_empty() || secret.len() < auth::MIN_KEY_LEN {
            return Err(auth::KeyError::Malformed);
        }
        Ok(Credentials {
            user: user.to_owned(),
            key,
        })
    }
}

/// Sent after the `END` of an upload body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTrailer {
    /// MD5 of the body as the sender computed it while sending: the receiver commits only
    /// if the bytes it got have it. `None` (the proxy to a storage server, for a writer that
    /// named no MD5): the server answers [`Response::Prepared`] with the MD5 of what it got
    /// and waits for a [`PutDecision`], so the proxy commits only replicas that agree.
    pub md5: Option<[u8; 16]>,
}

/// The proxy's word on a prepared upload (after [`Response::Prepared`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutDecision {
    /// Commit it (then the answer is `Stored`), or drop it (no answer follows).
    pub commit: bool,
}

/// Requests from a client (`oss`, `ossfs`) to the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Body and [`UploadTrailer`] follow. Answer: `Stored`.
    Upload {
        name: ObjectName,
        size: Option<u64>,
        attrs: Attrs,
    },
    /// Answer: `Object` then a body of the requested range (`len: None` = to the end).
    Download {
        name: ObjectName,
        offset: u64,
        len: Option<u64>,
    },
    /// Answer: `Object` (no body) or `NotFound`.
    Stat { name: ObjectName },
    /// Answer: `Deleted`.
    Delete { name: ObjectName },
    /// One page of a listing: live objects and common prefixes, sorted. Answer: `Page`; a
    /// client asks for the next page with `marker` set to the last key it got.
    List(ListQuery),
    /// Server-side copy: the proxy copies `src`'s newest version to `dst` (MD5-checked by
    /// every destination, stamped like any write) without the bytes reaching the client.
    /// `attrs: None` keeps the source's. `src == dst` with new attrs replaces the metadata.
    /// Answer: `Stored`.
    Copy {
        src: ObjectName,
        dst: ObjectName,
        attrs: Option<Attrs>,
    },
    /// Answer: `Users`.
    ListUsers,
    /// Answer: `Status`.
    Status,
    /// Answer: `Ok`; progress shows in `Status`.
    AddDisk { addr: String },
    /// Answer: `Ok`; progress shows in `Status`.
    RemoveDisk { addr: String },
    /// Check (and repair) every replica of one object. Answer: `Checked`.
    Check { name: ObjectName },
    /// Start a full repair pass. Answer: `Ok`; progress shows in `Status`.
    Repair,
    /// Ask every storage server to run one audit pass now. Answer: `Ok` when they are done.
    Audit,
    /// The cluster's capacity as a file system sees it (any key). Answer: `Usage`.
    Usage,
    /// Admin only: a new user with a new key. Answer: `NewKey` (shown this once).
    UserAdd { name: String },
    /// Admin only. Answer: `Users`.
    UserList,
    /// Admin only: the user's key stops working at once; their files stay. Answer: `Ok`.
    UserRemove { name: String },
    /// Admin only: a new key; the old one stops working at once. Answer: `NewKey`.
    UserRotate { name: String },
}

impl ClientRequest {
    /// Whether sending it again after an answer was lost does what sending it once did: reads,
    /// and writes whose second run leaves the same state (a delete, a copy). Admin commands
    /// that start work or mint keys are not: a client replays them only when they were never
    /// sent.
    pub fn is_replayable(&self) -> bool {
        use ClientRequest::*;
        match self {
            Stat { .. }
            | Delete { .. }
            | List(_)
            | Copy { .. }
            | ListUsers
            | Status
            | Check { .. }
            | Usage
            | UserList
            | Download { .. } => true,
            Upload { .. }
            | AddDisk { .. }
            | RemoveDisk { .. }
            | Repair
            | Audit
            | UserAdd { .. }
            | UserRemove { .. }
            | UserRotate { .. } => false,
        }
    }
}

/// Requests from the proxy to a storage server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageRequest {
    /// Body and [`UploadTrailer`] follow. Refused with `Stale` if a version with the same or
    /// a newer timestamp is held. Answer: `Stored`.
    Put {
        name: ObjectName,
        part: u32,
        timestamp: Timestamp,
        size: Option<u64>,
        attrs: Attrs,
    },
    /// Answer: `Object` and a body; every block is verified before it is sent, and a bad one
    /// aborts the body with `Corrupt`. `timestamp: Some(t)` refuses any other version
    /// with `Stale`, so a reader resuming on another replica gets the same version.
    Get {
        name: ObjectName,
        part: u32,
        offset: u64,
        len: Option<u64>,
        timestamp: Option<Timestamp>,
    },
    /// Answer: `Object` (live or tombstone, no body) or `NotFound`.
    Head { name: ObjectName, part: u32 },
    /// Writes a tombstone at `timestamp` (even if absent). Answer: `Deleted`.
    Delete {
        name: ObjectName,
        part: u32,
        timestamp: Timestamp,
    },
    /// Re-reads the whole object and compares its MD5. Answer: `Checked`.
    Check { name: ObjectName, part: u32 },
    /// One page of a user's entries by a range scan of the sorted index: objects and
    /// tombstones, and with a delimiter the common prefixes holding a live name here.
    /// Answer: `Page`.
    List(ListQuery),
    /// Answer: `Users` (users with at least one live object).
    ListUsers,
    /// Answer: `Listing` pages of everything in one partition, tombstones included.
    ListPartition { part: u32 },
    /// Deletes every file of a partition (after it moved away). Answer: `Ok`.
    DropPartition { part: u32 },
    /// Disk check. Answer: `Pong`.
    Ping,
    /// Run one audit pass now. Answer: `Audited`.
    Audit,
    /// Names quarantined by the auditor since the last ask. Answer: `Quarantined`.
    TakeQuarantined,
    /// Which partitions hold at least one file (object or tombstone). Answer: `Partitions`.
    ListPartitions,
    /// Deletes these versions of a partition's names (objects or tombstones) where this
    /// server still holds exactly them, not newer ones: the copies a stand-in handed back to
    /// the owners. Answer: `Ok`.
    DropVersions {
        part: u32,
        versions: Vec<(ObjectName, Timestamp)>,
    },
    /// The digest of every partition held, from partition `from` on: 16 bytes that two
    /// servers holding the same versions (names and timestamps) of a partition share.
    /// Answer: `Digests`, at most [`DIGEST_PAGE`] of them.
    Digests { from: u32 },
}

/// Partition digests per `Digests` answer (about 1.3 MB).
pub const DIGEST_PAGE: usize = 65_536;

/// The state of one replica, as `Check` finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    Good(ObjectMeta),
    Missing,
    /// A tombstone: deleted at `ObjectMeta::timestamp`.
    Deleted(ObjectMeta),
    Corrupt(String),
}

/// What a storage server says of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    pub objects: u64,
    pub bytes: u64,
    pub disk_total: u64,
    pub disk_free: u64,
    pub audit: AuditStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStats {
    /// Passes completed since the server started.
    pub passes: u64,
    /// When the last pass ended (µs since the epoch), 0 if none yet.
    pub last_pass_end: Timestamp,
    pub last_pass_objects: u64,
    pub last_pass_bytes: u64,
    pub quarantined_total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerState {
    /// In the ring and answering.
    Online,
    /// In the ring, missed checks but not yet declared offline.
    Suspect,
    /// Declared offline; its partitions were or are being moved away.
    Offline,
    /// Answering again after it was declared offline; out of the ring until `add-disk`.
    Back,
    /// Being drained by `remove-disk`.
    Draining,
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerState::Online => "online",
            ServerState::Suspect => "suspect",
            ServerState::Offline => "offline",
            ServerState::Back => "back (out of ring)",
            ServerState::Draining => "draining",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: Option<DevId>,
    pub addr: String,
    pub state: ServerState,
    /// When the server entered `state` (µs since the epoch).
    pub since: Timestamp,
    /// Partition replicas the ring gives it.
    pub partitions: u32,
    /// Last disk check answer, if any.
    pub stats: Option<DiskStats>,
}

/// What `df` shows of the cluster: the ring's servers' disks divided by the replica count
/// (a byte stored takes `replicas` bytes of disk), and the objects they hold, once each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub total: u64,
    pub free: u64,
    pub objects: u64,
}

/// Progress of a background job (rebalance, refill, repair).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub what: String,
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
    pub running: bool,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub epoch: u64,
    pub partitions: u32,
    pub replicas: u8,
    pub servers: Vec<ServerStatus>,
    pub jobs: Vec<Progress>,
    pub replicator: ReplicatorStatus,
}

/// The proxy's replicator: copies stand-ins took while an owner was down, going home.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatorStatus {
    /// Full passes (every server asked which partitions it holds) since the proxy started.
    pub passes: u64,
    /// When the last pass ended (µs since the epoch), 0 if none yet.
    pub last_pass_end: Timestamp,
    /// How long it took, in µs.
    pub last_pass_micros: u64,
    /// Partition copies on stand-ins still waiting for their owners (the backlog).
    pub pending: u64,
    /// Partition copies handed back to their owners since the proxy started.
    pub handed_back: u64,
    /// Partitions whose owners differed (digests) at the last pass: the sync backlog.
    pub out_of_sync: u64,
    /// Partitions whose owners a pass brought to the same versions, since the start.
    pub synced: u64,
    /// Versions (objects and tombstones) hand-backs and syncs copied, since the start.
    pub versions_copied: u64,
}

/// Every answer, from proxy or storage server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Challenge {
        salt: Salt,
        nonce: Nonce,
    },
    HelloOk {
        version: u32,
        /// The server's proof that it holds the client's verifier.
        signature: Tag,
    },
    Ok,
    Stored(ObjectMeta),
    /// An upload without an MD5 is written (not yet committed): the MD5 of its bytes.
    Prepared {
        md5: [u8; 16],
    },
    /// Object metadata; for downloads a body of `len` bytes follows.
    Object {
        meta: ObjectMeta,
        offset: u64,
        len: u64,
    },
    Deleted {
        existed: bool,
    },
    Listing {
        entries: Vec<ObjectMeta>,
        more: bool,
    },
    /// One listing page; `truncated`: more entries may follow after the last one.
    Page {
        items: Vec<ListItem>,
        truncated: bool,
    },
    Users(Vec<String>),
    Checked(Vec<(String, ReplicaState)>),
    Pong(DiskStats),
    Audited(AuditStats),
    Quarantined(Vec<ObjectName>),
    Status(ClusterStatus),
    Partitions(Vec<u32>),
    /// (partition, digest) ascending; `more`: ask again from the last partition + 1.
    Digests {
        digests: Vec<(u32, [u8; 16])>,
        more: bool,
    },
    /// A key line (`NAME:KEY`) to hand to the user; the proxy keeps only its verifier.
    NewKey(String),
    Usage(Usage),
    Error(WireError),
}

/// Local errors of the protocol layer (the remote ones arrive as [`WireError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Remote(WireError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    Timeout,
}

impl Error {
    /// The error as a value to send on (a proxy relays storage errors this way).
    pub fn to_wire(&self) -> WireError {
        match self {
            Error::Remote(w) => w.clone(),
            Error::Io(e) => WireError::Unavailable(e.to_string()),
            Error::Protocol(s) => WireError::BadRequest(s.clone()),
            Error::Closed => WireError::Unavailable("connection closed".into()),
            Error::Timeout => WireError::Unavailable("timed out".into()),
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Self {
        Error::Remote(w)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One piece of a body.
#[derive(Debug)]
pub enum Chunk {
    /// This many bytes were placed at the start of the caller's buffer.
    Data(usize),
    End,
    /// The sender gave up in the middle; this is why.
    Abort(WireError),
}

/// A framed connection. Reads and writes are buffered; call [`Connection::flush`] after
/// the last frame of a message.
pub struct Connection {
    rd: BufReader<OwnedReadHalf>,
    wr: BufWriter<OwnedWriteHalf>,
    peer: String,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let (r, w) = stream.into_split();
        Connection {
            rd: BufReader::with_capacity(IO_BUF, r),
            wr: BufWriter::with_capacity(IO_BUF, w),
            peer,
        }
    }

    /// Connects and logs in as `creds` (the client side of the handshake).
    pub async fn connect(addr: &str, timeout: Duration, creds: &Credentials) -> Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout)??;
        let mut conn = Connection::new(stream);
        match tokio::time::timeout(timeout, conn.login(creds)).await {
            Err(_) => Err(Error::Timeout),
            Ok(r) => r.map(|()| conn),
        }
    }

    async fn login(&mut self, creds: &Credentials) -> Result<()> {
        let nonce: Nonce = auth::random();
        self.write_header(&Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            user: creds.user.clone(),
            nonce,
        })
        .await?;
        self.flush().await?;
        let (salt, server_nonce) = match self.read_header::<Response>().await? {
            Some(Response::Challenge { salt, nonce }) => (salt, nonce),
            Some(Response::Error(e)) => return Err(Error::Remote(e)),
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "unexpected handshake answer {other:?}"
                )))
            }
            None => return Err(Error::Closed),
        };
        let msg = AuthMessage::new(&creds.user, &nonce, &server_nonce, &salt);
        self.write_header(&HelloProof {
            proof: auth::client_proof(&creds.key, &salt, &msg),
        })
        .await?;
        self.flush().await?;
        match self.read_header::<Response>().await? {
            Some(Response::HelloOk { signature, .. }) => {
                if auth::check_server_signature(&creds.key, &salt, &msg, &signature) {
                    Ok(())
                } else {
                    Err(Error::Remote(WireError::AuthFailed(format!(
                        "{} could not prove that it knows the key",
                        self.peer
                    ))))
                }
            }
            Some(Response::Error(e)) => Err(Error::Remote(e)),
            Some(other) => Err(Error::Protocol(format!(
                "unexpected handshake answer {other:?}"
            ))),
            None => Err(Error::Closed),
        }
    }

    /// Server side of the handshake: reads [`Hello`], challenges, checks the proof against
    /// the verifier `verifier_for(user)` returns (`None`: no such user; a decoy from
    /// `decoy_secret` is used so the exchange looks the same), and answers. Returns the
    /// logged-in user; on a mismatch it answers [`WireError::AuthFailed`] and fails.
    pub async fn accept_hello(
        &mut self,
        decoy_secret: &Key,
        verifier_for: impl FnOnce(&str) -> Option<Verifier>,
    ) -> Result<String> {
        let hello: Hello = self.read_header().await?.ok_or(Error::Closed)?;
        if hello.magic != MAGIC || hello.version != PROTOCOL_VERSION {
            let e = WireError::Version {
                server: PROTOCOL_VERSION,
                client: hello.version,
            };
            self.write_header(&Response::Error(e.clone())).await?;
            self.flush().await?;
            return Err(Error::Remote(e));
        }
        let known = verifier_for(&hello.user);
        let is_known = known.is_some();
        let verifier = known.unwrap_or_else(|| Verifier::decoy(decoy_secret, &hello.user));
        let nonce: Nonce = auth::random();
        self.write_header(&Response::Challenge {
            salt: verifier.salt,
            nonce,
        })
        .await?;
        self.flush().await?;
        let proof: HelloProof = self.read_header().await?.ok_or(Error::Closed)?;
        let msg = AuthMessage::new(&hello.user, &hello.nonce, &nonce, &verifier.salt);
        if !(verifier.check_proof(&msg, &proof.proof) && is_known) {
            let e = WireError::AuthFailed(format!("wrong key for user {:?}", hello.user));
            self.write_header(&Response::Error(WireError::AuthFailed(
                "wrong key or unknown user".into(),
            )))
            .await?;
            self.flush().await?;
            return Err(Error::Remote(e));
        }
        self.write_header(&Response::HelloOk {
            version: PROTOCOL_VERSION,
            signature: verifier.server_signature(&msg),
        })
        .await?;
        self.flush().await?;
        Ok(hello.user)
    }

    /// False when the peer has closed the connection (or sent something unasked) while it
    /// sat idle in a pool: such a connection must not be reused.
    pub fn is_reusable(&self) -> bool {
        if !self.rd.buffer().is_empty() {
            return false;
        }
        let mut b = [0u8; 1];
        match self.rd.get_ref().try_read(&mut b) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    async fn read_frame_head(&mut self) -> Result<Option<(u8, u32)>> {
        let mut head = [0u8; 5];
        // A clean close is only allowed between frames.
        let n = self.rd.read(&mut head[..1]).await?;
        if n == 0 {
            return Ok(None);
        }
        self.rd
            .read_exact(&mut head[1..])
            .await
            .map_err(eof_is_closed)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        Ok(Some((head[0], len)))
    }

    async fn read_header_payload<T: DeserializeOwned>(&mut self, len: u32) -> Result<T> {
        if len > MAX_HEADER {
            return Err(Error::Protocol(format!(
                "header of {len} bytes exceeds {MAX_HEADER}"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.rd.read_exact(&mut buf).await.map_err(eof_is_closed)?;
        postcard::from_bytes(&buf).map_err(|e| Error::Protocol(format!("malformed header: {e}")))
    }

    /// Reads one header frame; `None` on a clean close before it.
    pub async fn read_header<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.read_frame_head().await? {
            None => Ok(None),
            Some((KIND_HEADER, len)) => Ok(Some(self.read_header_payload(len).await?)),
            Some((kind, _)) => Err(Error::Protocol(format!(
                "expected a header, got frame kind {kind}"
            ))),
        }
    }

    /// Reads a header that must be there.
    pub async fn expect_header<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.read_header().await?.ok_or(Error::Closed)
    }

    /// Reads a response and turns `Response::Error` into `Err(Error::Remote)`.
    pub async fn read_response(&mut self) -> Result<Response> {
        match self.expect_header::<Response>().await? {
            Response::Error(e) => Err(Error::Remote(e)),
            r => Ok(r),
        }
    }

    pub async fn write_header<T: Serialize>(&mut self, msg: &T) -> Result<()> {
        let bytes = postcard::to_stdvec(msg).map_err(|e| Error::Protocol(e.to_string()))?;
        if bytes.len() > MAX_HEADER as usize {
            return Err(Error::Protocol(format!(
                "header of {} bytes is too large",
                bytes.len()
            )));
        }
        self.wr.write_u8(KIND_HEADER).await?;
        self.wr.write_u32(bytes.len() as u32).await?;
        self.wr.write_all(&bytes).await?;
        Ok(())
    }

    /// Reads the next piece of a body into `buf` (resized as needed, at most [`MAX_CHUNK`]).
    pub async fn read_chunk(&mut self, buf: &mut Vec<u8>) -> Result<Chunk> {
        match self.read_frame_head().await? {
            None => Err(Error::Closed),
            Some((KIND_DATA, len)) => {
                if len > MAX_CHUNK {
                    return Err(Error::Protocol(format!(
                        "data frame of {len} bytes exceeds {MAX_CHUNK}"
                    )));
                }
                if buf.len() < len as usize {
                    buf.resize(len as usize, 0);
                }
                self.rd
                    .read_exact(&mut buf[..len as usize])
                    .await
                    .map_err(eof_is_closed)?;
                Ok(Chunk::Data(len as usize))
            }
            Some((KIND_END, 0)) => Ok(Chunk::End),
            Some((KIND_END, len)) => Err(Error::Protocol(format!("end frame with {len} bytes"))),
            Some((KIND_HEADER, len)) => match self.read_header_payload::<Response>(len).await? {
                Response::Error(e) => Ok(Chunk::Abort(e)),
                other => Err(Error::Protocol(format!(
                    "unexpected {other:?} inside a body"
                ))),
            },
            Some((kind, _)) => Err(Error::Protocol(format!("unknown frame kind {kind}"))),
        }
    }

    /// Writes body bytes, split into frames of at most [`MAX_CHUNK`].
    pub async fn write_data(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = data.len().min(MAX_CHUNK as usize);
            self.wr.write_u8(KIND_DATA).await?;
            self.wr.write_u32(n as u32).await?;
            self.wr.write_all(&data[..n]).await?;
            data = &data[n..];
        }
        Ok(())
    }

    pub async fn write_end(&mut self) -> Result<()> {
        self.wr.write_u8(KIND_END).await?;
        self.wr.write_u32(0).await?;
        Ok(())
    }

    /// Ends a body early, telling the reader why.
    pub async fn write_abort(&mut self, e: WireError) -> Result<()> {
        self.write_header(&Response::Error(e)).await
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.wr.flush().await?;
        Ok(())
    }

    /// Writes raw bytes (used by tests to send garbage).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.wr.write_all(bytes).await?;
        Ok(())
    }
}

fn eof_is_closed(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Closed
    } else {
        Error::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (Connection, Connection) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (s, _) = l.accept().await.unwrap();
        (Connection::new(c.await.unwrap()), Connection::new(s))
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: ObjectName::parse("alice/f").unwrap(),
            size: 3,
            md5: [7; 16],
            timestamp: 42,
            deleted: false,
            attrs: Attrs::default(),
        }
    }

    #[tokio::test]
    async fn header_and_body_round_trip() {
        let (mut a, mut b) = pair().await;
        a.write_header(&Response::Stored(meta())).await.unwrap();
        a.write_data(&vec![9u8; (MAX_CHUNK as usize) + 10])
            .await
            .unwrap();
        a.write_end().await.unwrap();
        a.write_header(&UploadTrailer { md5: Some([1; 16]) })
            .await
            .unwrap();
        a.flush().await.unwrap();
        assert_eq!(b.read_response().await.unwrap(), Response::Stored(meta()));
        let mut buf = Vec::new();
        let mut total = 0;
        loop {
            match b.read_chunk(&mut buf).await.unwrap() {
                Chunk::Data(n) => {
                    assert!(buf[..n].iter().all(|&x| x == 9));
                    total += n
                }
                Chunk::End => break,
                Chunk::Abort(e) => panic!("{e}"),
            }
        }
        assert_eq!(total, MAX_CHUNK as usize + 10);
        let t: UploadTrailer = b.expect_header().await.unwrap();
        assert_eq!(t.md5, Some([1; 16]));
        drop(a);
        assert!(
            b.read_header::<Response>().await.unwrap().is_none(),
            "clean close"
        );
    }

    #[tokio::test]
    async fn abort_inside_body() {
        let (mut a, mut b) = pair().await;
        a.write_data(b"abc").await.unwrap();
        a.write_abort(WireError::Corrupt("block 3".into()))
            .await
            .unwrap();
        a.flush().await.unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            b.read_chunk(&mut buf).await.unwrap(),
            Chunk::Data(3)
        ));
        match b.read_chunk(&mut buf).await.unwrap() {
            Chunk::Abort(WireError::Corrupt(s)) => assert_eq!(s, "block 3"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_header_is_refused_without_allocating() {
        let (mut a, mut b) = pair().await;
        a.write_raw(&[KIND_HEADER, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        a.flush().await.unwrap();
        let e = b.read_header::<Response>().await.unwrap_err();
        assert!(
            matches!(e, Error::Protocol(ref s) if s.contains("exceeds")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn oversized_data_frame_is_refused() {
        let (mut a, mut b) = pair().await;
        a.write_raw(&[KIND_DATA, 0x10, 0, 0, 0]).await.unwrap();
        a.flush().await.unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            b.read_chunk(&mut buf).await,
            Err(Error::Protocol(_))
        ));
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors_not_panics() {
        // Malformed postcard payload.
        let (mut a, mut b) = pair().await;
        a.write_raw(&[KIND_HEADER, 0, 0, 0, 3, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        a.flush().await.unwrap();
        assert!(matches!(
            b.read_header::<ClientRequest>().await,
            Err(Error::Protocol(_))
        ));
        // Unknown frame kind.
        let (mut a, mut b) = pair().await;
        a.write_raw(&[9, 0, 0, 0, 0]).await.unwrap();
        a.flush().await.unwrap();
        assert!(matches!(
            b.read_header::<ClientRequest>().await,
            Err(Error::Protocol(_))
        ));
        // Truncated in the middle of a frame.
        let (mut a, mut b) = pair().await;
        a.write_raw(&[KIND_HEADER, 0, 0, 0, 10, 1, 2])
            .await
            .unwrap();
        a.flush().await.unwrap();
        drop(a);
        assert!(matches!(
            b.read_header::<ClientRequest>().await,
            Err(Error::Closed)
        ));
        // Every truncation of a valid frame is an error, never a panic or a wrong value.
        let full = {
            let mut v = vec![KIND_HEADER];
            let p = postcard::to_stdvec(&Response::Stored(meta())).unwrap();
            v.extend((p.len() as u32).to_be_bytes());
            v.extend(p);
            v
        };
        for cut in 1..full.len() {
            let (mut a, mut b) = pair().await;
            a.write_raw(&full[..cut]).await.unwrap();
            a.flush().await.unwrap();
            drop(a);
            assert!(b.read_header::<Response>().await.is_err(), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn invalid_names_are_refused_by_the_decoder() {
        // A header naming "alice/../x" must not decode into an ObjectName.
        #[derive(Serialize)]
        enum Fake {
            #[allow(dead_code)]
            Upload { name: String, size: Option<u64> },
        }
        let bytes = postcard::to_stdvec(&Fake::Upload {
            name: "alice/a//b".into(),
            size: None,
        })
        .unwrap();
        assert!(postcard::from_bytes::<ClientRequest>(&bytes).is_err());
    }

    #[test]
    fn roll_up_cuts_at_the_first_delimiter_after_the_prefix() {
        let q = |prefix: &str, d: Option<char>| ListQuery {
            user: "u".into(),
            prefix: prefix.into(),
            delimiter: d,
            ..Default::default()
        };
        assert_eq!(q("", Some('/')).roll_up("a/b/c"), ListKey::Prefix("a/"));
        assert_eq!(q("", Some('/')).roll_up("a-b"), ListKey::Name("a-b"));
        assert_eq!(q("a/", Some('/')).roll_up("a/b/c"), ListKey::Prefix("a/b/"));
        assert_eq!(q("a/", Some('/')).roll_up("a/b"), ListKey::Name("a/b"));
        assert_eq!(q("a", Some('/')).roll_up("a/b"), ListKey::Prefix("a/"));
        assert_eq!(q("", None).roll_up("a/b/c"), ListKey::Name("a/b/c"));
        assert_eq!(q("", Some('-')).roll_up("x-y-z"), ListKey::Prefix("x-"));
    }

    #[test]
    fn attrs_keep_mtime_and_mode_as_swift_clients_do() {
        let mut a = Attrs::default();
        a.set_mtime_micros(1_700_000_000_123_456);
        assert_eq!(a.meta["mtime"], "1700000000.123456");
        assert_eq!(a.mtime_micros(), Some(1_700_000_000_123_456));
        a.meta.insert("mtime".into(), "1700000000.5".into());
        assert_eq!(a.mtime_micros(), Some(1_700_000_000_500_000));
        a.meta.insert("mtime".into(), "1700000000".into());
        assert_eq!(a.mtime_micros(), Some(1_700_000_000_000_000));
        a.meta.insert("mtime".into(), "soon".into());
        assert_eq!(a.mtime_micros(), None);
        a.set_mode(0o100755);
        assert_eq!(a.meta["mode"], "100755");
        assert_eq!(a.mode(), Some(0o100755));
        assert!(a.validate().is_ok());
        assert!(Attrs::directory().is_dir_marker());
    }

    #[test]
    fn attrs_limits_are_swifts() {
        let mut a = Attrs::default();
        for i in 0..=Attrs::MAX_COUNT {
            a.meta.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(a.validate(), Err(AttrsError::TooMany));
        let mut a = Attrs::default();
        a.meta.insert("k".repeat(129), "v".into());
        assert!(matches!(a.validate(), Err(AttrsError::BadName(_))));
        let mut a = Attrs::default();
        a.meta.insert("Upper".into(), "v".into());
        assert!(matches!(a.validate(), Err(AttrsError::BadName(_))));
        let mut a = Attrs::default();
        a.meta.insert("k".into(), "v".repeat(257));
        assert!(matches!(a.validate(), Err(AttrsError::BadValue(_))));
        let mut a = Attrs::default();
        for i in 0..20 {
            a.meta.insert(format!("k{i:03}"), "v".repeat(250));
        }
        assert_eq!(a.validate(), Err(AttrsError::TooLarge));
        // System headers do not count towards the limits, and must be well-formed.
        let mut a = Attrs::default();
        for i in 0..Attrs::MAX_COUNT {
            a.meta.insert(format!("k{i}"), "v".into());
        }
        a.meta.insert(Attrs::DELETE_AT.into(), "1700000000".into());
        a.meta
            .insert(":content-disposition".into(), "x".repeat(1000));
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(a.delete_at_micros(), Some(1_700_000_000_000_000));
        assert_eq!(a.user_meta().count(), Attrs::MAX_COUNT);
        a.meta.insert(":Bad".into(), "v".into());
        assert!(matches!(a.validate(), Err(AttrsError::BadName(_))));
    }

    fn creds(user: &str, c: char) -> Credentials {
        Credentials {
            user: user.into(),
            key: Key::from_text(c.to_string().repeat(40).as_bytes()).unwrap(),
        }
    }

    /// A server that knows alice's key 'a' answers one login; returns both ends' results.
    async fn login_with(client: Credentials) -> (Result<()>, Result<String>) {
        let (mut a, mut b) = pair().await;
        let known = creds("alice", 'a');
        let decoy = Key::from_text(&[b'd'; 40]).unwrap();
        let server = tokio::spawn(async move {
            b.accept_hello(&decoy, |u| {
                (u == "alice").then(|| Verifier::new(&known.key))
            })
            .await
        });
        let c = a.login(&client).await;
        (c, server.await.unwrap())
    }

    #[tokio::test]
    async fn handshake_logs_in_with_the_right_key_only() {
        let (c, s) = login_with(creds("alice", 'a')).await;
        assert!(c.is_ok(), "{c:?}");
        assert_eq!(s.unwrap(), "alice");
        for bad in [creds("alice", 'b'), creds("mallory", 'a')] {
            let (c, s) = login_with(bad).await;
            assert!(
                matches!(c, Err(Error::Remote(WireError::AuthFailed(_)))),
                "{c:?}"
            );
            assert!(s.is_err());
        }
    }

    #[tokio::test]
    async fn a_server_without_the_key_is_caught_by_the_client() {
        let (mut a, mut b) = pair().await;
        // A fake server: accepts any proof and signs with a verifier of another key.
        let fake = tokio::spawn(async move {
            let hello: Hello = b.expect_header().await.unwrap();
            let v = Verifier::new(&Key::from_text(&[b'x'; 40]).unwrap());
            let nonce: Nonce = auth::random();
            b.write_header(&Response::Challenge {
                salt: v.salt,
                nonce,
            })
            .await
            .unwrap();
            b.flush().await.unwrap();
            let _: HelloProof = b.expect_header().await.unwrap();
            let msg = AuthMessage::new(&hello.user, &hello.nonce, &nonce, &v.salt);
            b.write_header(&Response::HelloOk {
                version: PROTOCOL_VERSION,
                signature: v.server_signature(&msg),
            })
            .await
            .unwrap();
            b.flush().await.unwrap();
        });
        let r = a.login(&creds("alice", 'a')).await;
        assert!(
            matches!(r, Err(Error::Remote(WireError::AuthFailed(_)))),
            "{r:?}"
        );
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn a_replayed_or_truncated_handshake_is_refused() {
        // Record a good login's messages, then replay them to a new server.
        let (mut a, mut b) = pair().await;
        let k = creds("alice", 'a');
        let v = Verifier::new(&k.key);
        let decoy = Key::from_text(&[b'd'; 40]).unwrap();
        let (v2, decoy2) = (v.clone(), decoy.clone());
        let server = tokio::spawn(async move { b.accept_hello(&decoy2, |_| Some(v2)).await });
        let nonce: Nonce = auth::random();
        let hello = Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            user: "alice".into(),
            nonce,
        };
        a.write_header(&hello).await.unwrap();
        a.flush().await.unwrap();
        let Some(Response::Challenge { salt, nonce: sn }) = a.read_header().await.unwrap() else {
            panic!("no challenge")
        };
        let proof = auth::client_proof(
            &k.key,
            &salt,
            &AuthMessage::new("alice", &nonce, &sn, &salt),
        );
        a.write_header(&HelloProof { proof }).await.unwrap();
        a.flush().await.unwrap();
        assert!(server.await.unwrap().is_ok());
        // The replay: same Hello, same proof; the new server's nonce differs.
        let (mut a, mut b) = pair().await;
        let server = tokio::spawn(async move { b.accept_hello(&decoy, |_| Some(v)).await });
        a.write_header(&hello).await.unwrap();
        a.flush().await.unwrap();
        let _: Response = a.expect_header().await.unwrap();
        a.write_header(&HelloProof { proof }).await.unwrap();
        a.flush().await.unwrap();
        assert!(matches!(
            a.read_response().await,
            Err(Error::Remote(WireError::AuthFailed(_)))
        ));
        assert!(server.await.unwrap().is_err());
        // Truncated: the client goes away after Hello; the server fails, no panic.
        let (mut a, mut b) = pair().await;
        let key = Key::from_text(&[b'd'; 40]).unwrap();
        let server = tokio::spawn(async move { b.accept_hello(&key, |_| None).await });
        a.write_header(&hello).await.unwrap();
        a.write_raw(&[KIND_HEADER, 0, 0]).await.unwrap();
        a.flush().await.unwrap();
        drop(a);
        assert!(server.await.unwrap().is_err());
    }

    #[test]
    fn key_lines_name_their_user() {
        let line = format!("al:ice:{}\n", "f".repeat(64));
        let c = Credentials::from_key_line(line.as_bytes()).unwrap();
        assert_eq!(c.user, "al:ice");
        assert_eq!(c.key.as_text(), line.trim_end().as_bytes());
        assert!(Credentials::from_key_line("f".repeat(64).as_bytes()).is_err());
        assert!(Credentials::from_key_line(format!(":{}", "f".repeat(64)).as_bytes()).is_err());
    }

    #[tokio::test]
    async fn version_mismatch_is_refused() {
        let (mut a, mut b) = pair().await;
        let key = Key::from_text(&[b'd'; 40]).unwrap();
        let server = tokio::spawn(async move { b.accept_hello(&key, |_| None).await });
        a.write_header(&Hello {
            magic: MAGIC,
            version: 999,
            user: "alice".into(),
            nonce: [0; 32],
        })
        .await
        .unwrap();
        a.flush().await.unwrap();
        match a.read_response().await {
            Err(Error::Remote(WireError::Version { server, client })) => {
                assert_eq!((server, client), (PROTOCOL_VERSION, 999))
            }
            other => panic!("{other:?}"),
        }
        assert!(server.await.unwrap().is_err());
    }
}
