//! The object store on one local disk: layout, crash-safe writes, verified reads, quarantine.
//!
//! # Directory layout
//!
//! ```text
//! DIR/FORMAT                          "oss-storaged 1\n" (15 bytes); any other content: refuse
//! DIR/LOCK                            empty; flock()ed while a server uses the directory
//! DIR/objects/PPPPP/<md5hex>.obj      one file per object name: its latest state
//! DIR/tmp/                            writes in progress; emptied on every start
//! DIR/quarantine/<md5hex>-<µs>-<n>.obj   files that failed a check, kept for inspection
//!                                     (<µs>: when quarantined; <n>: a per-process counter)
//! ```
//!
//! `PPPPP` is the partition the proxy names in the request, in decimal, zero-padded to at
//! least 5 digits. `<md5hex>` is the lower-case hex MD5 of `"user/file"` (32 characters), so
//! a name maps to exactly one file per partition and no name needs escaping.
//!
//! # Object file (format 1)
//!
//! An object file holds a live version or a tombstone. With `size` data bytes and
//! `nb = ceil(size / 65536)` blocks:
//!
//! ```text
//! offset                 length      content
//! 0                      size        the data, verbatim (a range read is one pread)
//! size                   4 * nb      CRC32C (Castagnoli) of each 64 KiB block of data,
//!                                    u32 little-endian; the last block may be short
//! size + 4*nb            R           metadata record, postcard-encoded (below)
//! size + 4*nb + R        4           R as u32 little-endian (at most 4096)
//! size + 4*nb + R + 4    4           CRC32C of the R record bytes, u32 little-endian
//! size + 4*nb + R + 8    8           magic "OSSOBJ01" (4f 53 53 4f 42 4a 30 31)
//! ```
//!
//! The file length must be exactly `size + 4*nb + R + 16`; anything else is a torn file.
//!
//! The record, in postcard's encoding (varint = unsigned LEB128, least significant group
//! first; fields in this order, no field names or tags):
//!
//! ```text
//! version     u32 varint    2 (the record format; 1 byte)
//! name        varint byte length, then the UTF-8 bytes of "user/file" (the file part may
//!             hold '/': "alice/photos/cat.jpg")
//! size        u64 varint    data bytes (0 for a tombstone)
//! md5         16 bytes      MD5 of the data, raw (fixed arrays carry no length)
//! timestamp   u64 varint    µs since the Unix epoch, set by the proxy; newer wins
//! deleted     1 byte        0 = live version, 1 = tombstone
//! block_size  u32 varint    65536 (80 80 04); the CRC granularity
//! content_type varint byte length, then UTF-8 ("" = none; "application/directory" for a
//!             directory marker)
//! meta        varint count, then per item (sorted by key): varint length + UTF-8 key,
//!             varint length + UTF-8 value (user metadata: "mtime", "mode", X-Object-Meta-*)
//! ```
//!
//! Version 1 records (written by earlier servers) end after `block_size`; they still read,
//! as objects without a content type or metadata. A record is at most 16 KiB.
//!
//! A tombstone is the same file with `size = 0`, no CRC entries, the MD5 of the empty string
//! and `deleted = 1`. Tombstones are kept so a server that was away cannot resurrect a
//! deleted object; the auditor reclaims those older than [`RECLAIM_AGE`] (Swift's
//! `reclaim_age`, one week), after which a replica that was away longer may resurrect.
//!
//! # Invariants
//!
//! * Every file in `objects/` was complete, footer included, and fsynced before it was
//!   renamed there, and its directory was fsynced before the write was acknowledged.
//! * The in-memory [`Index`] lists exactly the files in `objects/`; it is changed only under
//!   the object's lock, together with the rename or unlink that it describes.
//! * Nothing is served without its block CRCs checked; a file that fails any check is moved
//!   to `quarantine/` and dropped from the index, and its name is remembered until the proxy
//!   takes it ([`Store::take_quarantined`]) to repair it from another replica.

mod format;
mod index;
mod io;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use oss_proto::name::{hex, partition_of};
use oss_proto::wire::{now_micros, Attrs, ListItem, ListKey, ListQuery, ReplicaState};
use oss_proto::{ObjectMeta, ObjectName, Timestamp};

use crate::error::StoreError;
pub use format::BLOCK;
pub use index::Entry;
use index::Index;
use io::OpenError;
pub use io::{Body, BodyWriter, ObjectReader, ReadError, TempFile};

/// Content of `DIR/FORMAT`: the directory layout version.
pub const FORMAT_LINE: &str = "oss-storaged 1\n";
/// Tombstones older than this are removed by the auditor (Swift's default `reclaim_age`).
pub const RECLAIM_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Per-object lock stripes. Two objects share a stripe with probability 1/4096: rare enough
/// that unrelated writes practically never wait for each other's rename + directory fsync.
const LOCK_STRIPES: usize = 4096;
/// Bytes read per piece when verifying a whole object (Check, audit).
pub const VERIFY_PIECE: u64 = 1 << 20;

/// MD5 of the empty string: the MD5 recorded in tombstones.
const EMPTY_MD5: [u8; 16] = [
    0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
];

/// What the sender of an upload announced: its size (if known), the MD5 it computed while
/// sending, and the attributes to store with it. [`Store::finish_put`] checks the first two.
#[derive(Debug, Clone, Default)]
pub struct Announced {
    pub size: Option<u64>,
    pub md5: [u8; 16],
    pub attrs: Attrs,
}

impl Announced {
    pub fn new(size: Option<u64>, md5: [u8; 16]) -> Self {
        Self::with_attrs(size, md5, Attrs::default())
    }

    pub fn with_attrs(size: Option<u64>, md5: [u8; 16], attrs: Attrs) -> Self {
        Announced { size, md5, attrs }
    }
}

/// The result of a successful commit.
#[derive(Debug, Clone)]
pub struct Committed {
    pub meta: ObjectMeta,
    /// The state it replaced, if any.
    pub previous: Option<ObjectMeta>,
}

/// What opening the store found and did.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    pub objects: usize,
    pub tmp_removed: usize,
    /// Files moved to `quarantine/` because their footer is unreadable or wrong.
    pub quarantined: Vec<PathBuf>,
}

/// One audited object's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutcome {
    Good {
        bytes: u64,
    },
    Corrupt,
    Reclaimed,
    /// Replaced or removed since the audit's snapshot, or the audit was cancelled.
    Skipped,
}

pub struct Store {
    /// Held for the store's life: a second server on the same directory would empty the
    /// first one's `tmp/` and race its renames.
    _lock: nix::fcntl::Flock<File>,
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    quarantine_dir: PathBuf,
    index: Mutex<Index>,
    locks: Box<[Mutex<()>]>,
    /// Names quarantined since the proxy last asked.
    quarantined: Mutex<Vec<ObjectName>>,
    /// Names whose held version was quarantined (or whose file vanished) and that hold
    /// nothing newer: `Head` says "corrupt" for them rather than "not found", so a proxy
    /// repairs this replica and never mistakes a lost object for one that never existed.
    /// In memory only: after a restart such a replica reads as missing, which the proxy
    /// also repairs. Value: (partition, the lost version).
    lost: Mutex<std::collections::HashMap<ObjectName, (u32, ObjectMeta)>>,
    quarantined_total: AtomicU64,
    /// Makes temp and quarantine file names unique within this process.
    seq: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the data directory: checks its format, empties `tmp/`,
    /// and builds the index from the footers of `objects/`, quarantining unreadable files.
    pub fn open(root: impl Into<PathBuf>) -> Result<(Store, OpenReport), StoreError> {
        let root: PathBuf = root.into();
        let shown = root.display().to_string();
        let unusable = |what: &str, e: std::io::Error| {
            StoreError::Unusable(format!("data directory {shown}: {what}: {e}"))
        };
        fs::create_dir_all(&root).map_err(|e| unusable("cannot create", e))?;
        let format_path = root.join("FORMAT");
        match fs::read(&format_path) {
            Ok(b) if b == FORMAT_LINE.as_bytes() => {}
            Ok(b) => {
                return Err(StoreError::Unusable(format!(
                    "data directory {} has an unknown format {:?} (this server writes {:?})",
                    root.display(),
                    String::from_utf8_lossy(&b[..b.len().min(64)]),
                    FORMAT_LINE
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_file_durably(&root, "FORMAT", FORMAT_LINE.as_bytes())
                    .map_err(|e| unusable("cannot write FORMAT (not writable?)", e))?;
            }
            Err(e) => return Err(unusable("cannot read FORMAT", e)),
        }
        let lock =
            File::create(root.join("LOCK")).map_err(|e| unusable("cannot create LOCK", e))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                StoreError::Unusable(format!(
                    "data directory {shown} is in use by another oss-storaged ({errno})"
                ))
            })?;
        let store = Store {
            _lock: lock,
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            quarantine_dir: root.join("quarantine"),
            root,
            index: Mutex::new(Index::default()),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            quarantined: Mutex::new(Vec::new()),
            lost: Mutex::new(std::collections::HashMap::new()),
            quarantined_total: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        };
        for d in [&store.objects, &store.tmp, &store.quarantine_dir] {
            fs::create_dir_all(d).map_err(|e| unusable("cannot create a subdirectory", e))?;
        }
        let mut report = OpenReport {
            tmp_removed: store
                .clean_tmp()
                .map_err(|e| unusable("cannot empty tmp/", e))?,
            ..OpenReport::default()
        };
        // Prove the directory is writable now rather than at the first upload.
        let probe = ObjectName::parse("probe/probe").expect("valid name");
        drop(
            store
                .create_temp(&probe)
                .map_err(|e| unusable("not writable", e))?,
        );
        store
            .scan(&mut report)
            .map_err(|e| unusable("cannot scan objects/", e))?;
        report.objects = store.index().len();
        Ok((store, report))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the index lock leaves it consistent enough (every change is
        // a single insert/remove); keep serving rather than poisoning the whole server.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self, name: &ObjectName) -> MutexGuard<'_, ()> {
        let d = name.digest();
        let i = u16::from_le_bytes([d[14], d[15]]) as usize % LOCK_STRIPES;
        self.locks[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn part_dir(&self, part: u32) -> PathBuf {
        self.objects.join(format!("{part:05}"))
    }

    fn obj_path(&self, part: u32, name: &ObjectName) -> PathBuf {
        self.part_dir(part)
            .join(format!("{}.obj", hex(&name.digest())))
    }

    fn clean_tmp(&self) -> std::io::Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(&self.tmp)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
            tracing::info!(path = %p.display(), "removed a leftover temp file");
            n += 1;
        }
        if n > 0 {
            fsync_dir(&self.tmp)?;
        }
        Ok(n)
    }

    fn scan(&self, report: &mut OpenReport) -> std::io::Result<()> {
        for pe in fs::read_dir(&self.objects)? {
            let pe = pe?;
            let pname = pe.file_name();
            let part = match pname
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(s) if pe.file_type()?.is_dir() => match s.parse::<u32>() {
                    Ok(p) => p,
                    Err(_) => continue,
                },
                _ => {
                    tracing::warn!(path = %pe.path().display(), "ignoring a stray entry in objects/");
                    continue;
                }
            };
            for fe in fs::read_dir(pe.path())? {
                let fe = fe?;
                let path = fe.path();
                let fname = fe.file_name();
                let stem = match fname.to_str().and_then(|s| s.strip_suffix(".obj")) {
                    Some(s) if s.len() == 32 && fe.file_type()?.is_file() => s.to_owned(),
                    _ => {
                        tracing::warn!(path = %path.display(), "ignoring a stray file");
                        continue;
                    }
                };
                let footer = File::open(&path)
                    .map_err(OpenError::from)
                    .and_then(|f| io::read_footer(&f));
                let meta = match footer {
                    Ok(f) if hex(&f.meta.name.digest()) == stem => f.meta,
                    Ok(f) => {
                        self.quarantine_path(
                            &path,
                            &format!("holds {} under the wrong name", f.meta.name),
                        );
                        report.quarantined.push(path);
                        continue;
                    }
                    Err(e) => {
                        self.quarantine_path(&path, &e.to_string());
                        report.quarantined.push(path);
                        continue;
                    }
                };
                let mut ix = self.index();
                let keep_new = match ix.get(&meta.name) {
                    Some(old) => old.meta.timestamp < meta.timestamp,
                    None => true,
                };
                if keep_new {
                    if let Some(old) = ix.insert(part, meta) {
                        drop(ix);
                        let p = self.obj_path(old.part, &old.meta.name);
                        self.quarantine_path(&p, "superseded copy in another partition");
                    }
                } else {
                    drop(ix);
                    self.quarantine_path(&path, "superseded copy in another partition");
                }
            }
        }
        Ok(())
    }

    /// Moves a file to `quarantine/` (or, failing that, removes it).
    fn quarantine_path(&self, path: &Path, reason: &str) {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = self.quarantine_dir.join(format!(
            "{stem}-{}-{}.obj",
            now_micros(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        tracing::warn!(path = %path.display(), reason, "quarantining");
        if let Err(e) = fs::rename(path, &dest) {
            tracing::error!(path = %path.display(), error = %e, "cannot quarantine; removing");
            let _ = fs::remove_file(path);
        }
        self.quarantined_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Quarantines version `ts` of `name`, unless it was replaced meanwhile (then the file
    /// at the path is a newer, unrelated version).
    pub fn quarantine(&self, name: &ObjectName, ts: Timestamp, reason: &str) {
        let _g = self.lock(name);
        let (part, meta) = {
            let mut ix = self.index();
            match ix.get(name) {
                Some(e) if e.meta.timestamp == ts => {
                    let e = e.clone();
                    ix.remove(name);
                    (e.part, e.meta)
                }
                _ => return,
            }
        };
        self.quarantine_path(&self.obj_path(part, name), &format!("{name}: {reason}"));
        self.mark_lost(part, meta);
    }

    /// Remembers that the held version of a name is gone, for `Head`, listings and the proxy.
    fn mark_lost(&self, part: u32, meta: ObjectMeta) {
        let name = meta.name.clone();
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), (part, meta));
        let mut q = self.quarantined.lock().unwrap_or_else(|p| p.into_inner());
        if !q.contains(&name) {
            q.push(name);
        }
    }

    /// The timestamp of a lost version of `name`, if its replica here was lost and nothing
    /// newer arrived since.
    pub fn lost_version(&self, name: &ObjectName) -> Option<Timestamp> {
        if self.lookup(name).is_some() {
            return None;
        }
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|(_, m)| m.timestamp)
    }

    /// The file of an indexed object is gone from the disk (deleted behind our back):
    /// forget it like a quarantined one, so it is repaired rather than believed.
    fn vanished(&self, name: &ObjectName, ts: Timestamp) {
        let _g = self.lock(name);
        let (part, meta) = {
            let mut ix = self.index();
            match ix.get(name) {
                Some(e) if e.meta.timestamp == ts && !self.obj_path(e.part, name).exists() => {
                    let e = e.clone();
                    ix.remove(name);
                    (e.part, e.meta)
                }
                _ => return,
            }
        };
        tracing::warn!(%name, ts, "object file missing from the disk; forgetting it");
        self.quarantined_total.fetch_add(1, Ordering::Relaxed);
        self.mark_lost(part, meta);
    }

    /// Names quarantined since the last call.
    pub fn take_quarantined(&self) -> Vec<ObjectName> {
        std::mem::take(&mut *self.quarantined.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn quarantined_total(&self) -> u64 {
        self.quarantined_total.load(Ordering::Relaxed)
    }

    /// A new, empty temp file for a write of `name`.
    pub fn create_temp(&self, name: &ObjectName) -> std::io::Result<TempFile> {
        let path = self.tmp.join(format!(
            "{}.{}.{}.tmp",
            hex(&name.digest()),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        TempFile::create(path)
    }

    pub fn lookup(&self, name: &ObjectName) -> Option<Entry> {
        self.index().get(name).cloned()
    }

    /// Refuses a partition number that cannot be this name's under any partition power:
    /// catches a proxy that computed it wrong before anything lands in the wrong place.
    pub fn check_part(name: &ObjectName, part: u32) -> Result<(), StoreError> {
        let h = name.hash32();
        if (0..=32).any(|p| partition_of(h, p) == part) {
            Ok(())
        } else {
            Err(StoreError::BadRequest(format!(
                "{name} cannot be in partition {part}"
            )))
        }
    }

    /// Fails with `Stale` if a version at `ts` or newer is held (a cheap early check; the
    /// commit checks again under the lock).
    pub fn check_newer(&self, name: &ObjectName, ts: Timestamp) -> Result<(), StoreError> {
        match self.index().get(name) {
            Some(e) if e.meta.timestamp >= ts => Err(StoreError::Stale {
                current: e.meta.timestamp,
            }),
            _ => Ok(()),
        }
    }

    /// Finishes an upload: checks the size and the sender's MD5, then commits.
    pub fn finish_put(
        &self,
        body: Body,
        name: &ObjectName,
        part: u32,
        timestamp: Timestamp,
        announced: Announced,
    ) -> Result<Committed, StoreError> {
        let Announced { size, md5, attrs } = announced;
        if let Some(n) = size {
            if n != body.len {
                return Err(StoreError::BadRequest(format!(
                    "body has {} bytes, the request said {n}",
                    body.len
                )));
            }
        }
        if md5 != body.md5 {
            return Err(StoreError::Md5Mismatch {
                expected: hex(&md5),
                actual: hex(&body.md5),
            });
        }
        self.commit(body, name, part, timestamp, false, attrs)
    }

    /// Stores `data` in one go (small uploads and tests); `size` and `md5` are what the
    /// sender announced and are checked like [`Store::finish_put`] does.
    pub fn put_bytes(
        &self,
        name: &ObjectName,
        part: u32,
        timestamp: Timestamp,
        data: &[u8],
        announced: Announced,
    ) -> Result<Committed, StoreError> {
        let body = self.write_temp(name, part, timestamp, data)?;
        self.finish_put(body, name, part, timestamp, announced)
    }

    /// Writes `data` to a temp file for `name` (not committed: see [`Store::finish_put`]).
    pub fn write_temp(
        &self,
        name: &ObjectName,
        part: u32,
        timestamp: Timestamp,
        data: &[u8],
    ) -> Result<Body, StoreError> {
        Self::check_part(name, part)?;
        self.check_newer(name, timestamp)?;
        let tmp = self
            .create_temp(name)
            .map_err(|e| StoreError::io("creating a temp file", e))?;
        let mut w = BodyWriter::new(tmp);
        w.write(data)
            .map_err(|e| StoreError::io("writing a temp file", e))?;
        Ok(w.finish())
    }

    /// Writes a tombstone at `timestamp`. Returns whether a live (not deleted, not expired)
    /// version was replaced.
    pub fn delete(
        &self,
        name: &ObjectName,
        part: u32,
        timestamp: Timestamp,
    ) -> Result<bool, StoreError> {
        Self::check_part(name, part)?;
        self.check_newer(name, timestamp)?;
        let tmp = self
            .create_temp(name)
            .map_err(|e| StoreError::io("creating a temp file", e))?;
        let body = BodyWriter::new(tmp).finish();
        debug_assert_eq!(body.md5, EMPTY_MD5);
        let c = self.commit(body, name, part, timestamp, true, Attrs::default())?;
        Ok(c.previous
            .is_some_and(|p| p.is_live_at(oss_proto::wire::now_micros())))
    }

    /// Appends the footer, syncs, and renames into place unless a version at `timestamp` or
    /// newer is held. The answer may be sent only after this returns Ok.
    fn commit(
        &self,
        mut body: Body,
        name: &ObjectName,
        part: u32,
        timestamp: Timestamp,
        deleted: bool,
        attrs: Attrs,
    ) -> Result<Committed, StoreError> {
        let meta = ObjectMeta {
            name: name.clone(),
            size: body.len,
            md5: body.md5,
            timestamp,
            deleted,
            attrs,
        };
        let footer = format::encode_footer(&meta, &body.crcs);
        {
            use std::io::Write;
            body.tmp
                .file
                .write_all(&footer)
                .map_err(|e| StoreError::io("writing a footer", e))?;
        }
        body.tmp
            .file
            .sync_data()
            .map_err(|e| StoreError::io("syncing a temp file", e))?;

        let _g = self.lock(name);
        let previous = self.lookup(name);
        if let Some(p) = &previous {
            if p.meta.timestamp >= timestamp {
                return Err(StoreError::Stale {
                    current: p.meta.timestamp,
                });
            }
        }
        let dir = self.part_dir(part);
        let dest = dir.join(format!("{}.obj", hex(&name.digest())));
        match fs::rename(&body.tmp.path, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // First object of this partition: create its directory durably, then retry.
                match fs::create_dir(&dir) {
                    Ok(()) => fsync_dir(&self.objects)
                        .map_err(|e| StoreError::io("syncing objects/", e))?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(StoreError::io("creating a partition directory", e)),
                }
                fs::rename(&body.tmp.path, &dest)
                    .map_err(|e| StoreError::io("renaming into place", e))?;
            }
            Err(e) => return Err(StoreError::io("renaming into place", e)),
        }
        body.tmp.disarm();
        // From here on the file is in place: the index must say so even if a sync fails.
        self.index().insert(part, meta.clone());
        if let Some(p) = &previous {
            if p.part != part {
                // The proxy moved the name to another partition number; drop the old copy.
                let old = self.obj_path(p.part, name);
                let _ = fs::remove_file(&old);
            }
        }
        fsync_dir(&dir).map_err(|e| StoreError::io("syncing a partition directory", e))?;
        Ok(Committed {
            meta,
            previous: previous.map(|p| p.meta),
        })
    }

    /// Opens the held version of `name` for reading. `NotFound` if absent or a tombstone;
    /// `Stale` if `want` names another version; `Corrupt` (and quarantined) if its footer is bad.
    pub fn open_read(
        &self,
        name: &ObjectName,
        want: Option<Timestamp>,
    ) -> Result<ObjectReader, StoreError> {
        let r = self.open_held(name)?.ok_or(StoreError::NotFound)?;
        if let Some(t) = want {
            if t != r.meta.timestamp {
                return Err(StoreError::Stale {
                    current: r.meta.timestamp,
                });
            }
        }
        if r.meta.deleted {
            return Err(StoreError::NotFound);
        }
        Ok(r)
    }

    /// Opens whatever is held for `name` (live or tombstone); None if nothing is.
    fn open_held(&self, name: &ObjectName) -> Result<Option<ObjectReader>, StoreError> {
        // Two tries: the file may be replaced (renamed over) between the lookup and the open,
        // which is harmless, or removed (a drop or a quarantine), which makes it absent.
        for _ in 0..2 {
            let Some(e) = self.lookup(name) else {
                return Ok(None);
            };
            match ObjectReader::open(&self.obj_path(e.part, name)) {
                Ok(r) if r.meta.name == *name => return Ok(Some(r)),
                Ok(r) => {
                    let why = format!("file holds {}", r.meta.name);
                    self.quarantine(name, e.meta.timestamp, &why);
                    return Err(StoreError::Corrupt(format!("{name}: {why}")));
                }
                Err(OpenError::Io(err)) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(OpenError::Io(err)) => {
                    return Err(StoreError::io(format!("opening {name}"), err))
                }
                Err(OpenError::Format(f)) => {
                    self.quarantine(name, e.meta.timestamp, &f.to_string());
                    return Err(StoreError::Corrupt(format!("{name}: {f}")));
                }
            }
        }
        // Twice not found although indexed: the file was removed behind our back.
        if let Some(e) = self.lookup(name) {
            self.vanished(name, e.meta.timestamp);
            if self.lookup(name).is_none() {
                return Err(StoreError::Corrupt(format!(
                    "{name}: file missing from the disk"
                )));
            }
        }
        Ok(None)
    }

    /// Turns a failed verified read into the error to send, quarantining on corruption.
    pub fn read_failed(&self, r: &ObjectReader, e: ReadError) -> StoreError {
        let name = &r.meta.name;
        match e {
            ReadError::Io(io) => StoreError::io(format!("reading {name}"), io),
            e => {
                let msg = match e {
                    ReadError::Corrupt(off) => format!("{name} block at offset {off}"),
                    _ => format!("{name}: {e}"),
                };
                self.quarantine(name, r.meta.timestamp, &msg);
                StoreError::Corrupt(msg)
            }
        }
    }

    /// Re-reads everything of `name` and reports its state; a bad copy is quarantined.
    pub fn check(&self, name: &ObjectName) -> Result<ReplicaState, StoreError> {
        let r = match self.open_held(name) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(ReplicaState::Missing),
            Err(StoreError::Corrupt(s)) => return Ok(ReplicaState::Corrupt(s)),
            Err(e) => return Err(e),
        };
        if r.meta.deleted {
            return Ok(ReplicaState::Deleted(r.meta));
        }
        match r.verify_all(VERIFY_PIECE, |_| true) {
            Ok(_) => Ok(ReplicaState::Good(r.meta)),
            Err(e) => match self.read_failed(&r, e) {
                StoreError::Corrupt(s) => Ok(ReplicaState::Corrupt(s)),
                e => Err(e),
            },
        }
    }

    /// Audits one entry of an index snapshot: verifies a live version (calling `each` after
    /// every piece read, which may sleep and may cancel by returning false) or reclaims an
    /// old tombstone.
    pub fn audit_one(
        &self,
        entry: &Entry,
        now: Timestamp,
        each: impl FnMut(u64) -> bool,
    ) -> Result<AuditOutcome, StoreError> {
        let name = &entry.meta.name;
        if entry.meta.deleted {
            let age = now.saturating_sub(entry.meta.timestamp);
            if u128::from(age) >= RECLAIM_AGE.as_micros() {
                return self.reclaim(name, entry.meta.timestamp);
            }
        }
        let r = match self.open_held(name) {
            Ok(Some(r)) if r.meta.timestamp == entry.meta.timestamp => r,
            Ok(_) => return Ok(AuditOutcome::Skipped),
            Err(StoreError::Corrupt(_)) => return Ok(AuditOutcome::Corrupt),
            Err(e) => return Err(e),
        };
        match r.verify_all(VERIFY_PIECE, each) {
            Ok(true) => Ok(AuditOutcome::Good { bytes: r.meta.size }),
            Ok(false) => Ok(AuditOutcome::Skipped),
            Err(e) => match self.read_failed(&r, e) {
                StoreError::Corrupt(_) => Ok(AuditOutcome::Corrupt),
                e => Err(e),
            },
        }
    }

    /// Removes a tombstone (if it is still the held state).
    fn reclaim(&self, name: &ObjectName, ts: Timestamp) -> Result<AuditOutcome, StoreError> {
        let _g = self.lock(name);
        let part = match self.lookup(name) {
            Some(e) if e.meta.timestamp == ts && e.meta.deleted => e.part,
            _ => return Ok(AuditOutcome::Skipped),
        };
        let path = self.obj_path(part, name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("reclaiming {name}"), e)),
        }
        self.index().remove(name);
        fsync_dir(&self.part_dir(part))
            .map_err(|e| StoreError::io("syncing a partition directory", e))?;
        tracing::info!(%name, ts, "reclaimed an old tombstone");
        Ok(AuditOutcome::Reclaimed)
    }

    /// Every entry (the auditor's work list).
    pub fn snapshot(&self) -> Vec<Entry> {
        self.index().snapshot()
    }

    /// One page of a listing (see [`Index::list`]), tombstones included. Versions whose
    /// replica here was lost are listed too: the object still exists (another replica may be
    /// good, and if none is, reading it says "corrupted"), it must not vanish from listings.
    pub fn list(&self, q: &ListQuery, limit: usize) -> (Vec<ListItem>, bool) {
        let (mut items, truncated) = self.index().list(q, limit);
        let lost: Vec<ObjectMeta> = self
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(_, m)| m)
            .filter(|m| m.name.user() == q.user && m.name.file().starts_with(&q.prefix))
            .cloned()
            .collect();
        if lost.is_empty() {
            return (items, truncated);
        }
        // Only within the range this page covers, so pages stay disjoint and ordered.
        let last = truncated
            .then(|| items.last().map(|i| i.key().to_owned()))
            .flatten();
        let ix = self.index();
        for m in lost {
            if ix.get(&m.name).is_some() {
                continue;
            }
            let item = match q.roll_up(m.name.file()) {
                ListKey::Name(_) => ListItem::Object(m.clone()),
                ListKey::Prefix(p) => ListItem::Prefix(p.to_owned()),
            };
            let k = item.key();
            let in_range = k > q.marker.as_str()
                && (q.end_marker.is_empty() || k < q.end_marker.as_str())
                && last.as_deref().is_none_or(|l| k <= l);
            if in_range && !items.iter().any(|i| i.key() == k) {
                items.push(item);
            }
        }
        drop(ix);
        items.sort_by(|a, b| a.key().cmp(b.key()));
        (items, truncated)
    }

    /// A partition's entries, tombstones included, sorted by name.
    pub fn list_partition(&self, part: u32) -> Vec<ObjectMeta> {
        self.index().list_part(part)
    }

    /// Partitions holding at least one entry, ascending.
    pub fn partitions(&self) -> Vec<u32> {
        self.index().parts()
    }

    /// One page of partition digests (see [`index::Index::digests`]).
    pub fn digests(&self, from: u32, limit: usize) -> (Vec<(u32, [u8; 16])>, bool) {
        self.index().digests(from, limit)
    }

    /// Users with at least one live object.
    pub fn users(&self) -> Vec<String> {
        self.index().users()
    }

    /// (live objects, their bytes).
    pub fn live(&self) -> (u64, u64) {
        self.index().live()
    }

    /// Removes every file of a partition (it moved elsewhere). Returns how many.
    pub fn drop_partition(&self, part: u32) -> Result<usize, StoreError> {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (p, _)| *p != part);
        let names: Vec<ObjectName> = self
            .index()
            .list_part(part)
            .into_iter()
            .map(|m| m.name)
            .collect();
        let mut n = 0;
        for name in names {
            let _g = self.lock(&name);
            if self.lookup(&name).is_some_and(|e| e.part == part) {
                match fs::remove_file(self.obj_path(part, &name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(format!("removing {name}"), e)),
                }
                self.index().remove(&name);
                n += 1;
            }
        }
        self.remove_part_dir_if_empty(part)?;
        Ok(n)
    }

    /// Removes the named versions of a partition where exactly they are held (a newer
    /// version, written since the caller listed them, stays). Returns how many went.
    pub fn drop_versions(
        &self,
        part: u32,
        versions: &[(ObjectName, Timestamp)],
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for (name, ts) in versions {
            let _g = self.lock(name);
            let held = self.lookup(name);
            if !held.is_some_and(|e| e.part == part && e.meta.timestamp == *ts) {
                continue;
            }
            match fs::remove_file(self.obj_path(part, name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {name}"), e)),
            }
            self.index().remove(name);
            n += 1;
        }
        self.remove_part_dir_if_empty(part)?;
        Ok(n)
    }

    /// Syncs a partition's directory after removals, and removes it if nothing is left.
    fn remove_part_dir_if_empty(&self, part: u32) -> Result<(), StoreError> {
        let dir = self.part_dir(part);
        if dir.exists() {
            fsync_dir(&dir).map_err(|e| StoreError::io("syncing a partition directory", e))?;
            // Only if empty: a concurrent write may have just landed a new file there.
            if fs::remove_dir(&dir).is_ok() {
                fsync_dir(&self.objects).map_err(|e| StoreError::io("syncing objects/", e))?;
            }
        }
        Ok(())
    }

    /// Total and free bytes of the filesystem holding the data directory. Also the disk
    /// check: fails if the directory is gone (unmounted, renamed away).
    pub fn disk_space(&self) -> Result<(u64, u64), StoreError> {
        fs::metadata(self.root.join("FORMAT")).map_err(|e| {
            StoreError::Unusable(format!(
                "data directory {} is not usable: {e}",
                self.root.display()
            ))
        })?;
        let s = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| StoreError::io("statvfs", std::io::Error::from_raw_os_error(e as i32)))?;
        let frag = s.fragment_size() as u64;
        Ok((s.blocks() as u64 * frag, s.blocks_available() as u64 * frag))
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `dir/name` atomically and durably: temp file, fsync, rename, fsync dir.
fn write_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fsync_dir(dir)
}
