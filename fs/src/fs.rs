//! The FUSE callbacks. Each one calls a helper that returns `Result<_, Errno>` and only
//! replies; the helpers never hold a global lock (inodes, cache, handle table) across a
//! proxy call.
//!
//! Layout: `/` lists users; `/USER/A/B/F` is the object `USER/A/B/F`. Directories are the
//! names' prefixes, plus explicit markers (zero-byte objects named like the directory, with
//! content type `application/directory`), which `mkdir` writes so that an empty directory
//! survives a restart. A user's own directory has no marker (a marker would need an empty
//! file name): it exists while the user has files, or on this mount after `mkdir USER`.
//! Where a regular file `a/b` and objects below `a/b/` both exist, the mount shows the
//! directory (the file is hidden; logged once at debug).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};
use oss_proto::name::{validate_part, Part};
use oss_proto::wire::{Attrs, ListItem, ListQuery};
use oss_proto::{ObjectMeta, ObjectName, WireError};
use tracing::{debug, info, warn};

use crate::attrs;
use crate::cache::{
    below_object, below_query, dir_nlink, dir_query, fold, Cache, Cached, Entry, FileInfo,
};
use crate::dirtimes::DirTimes;
use crate::errno;
use crate::handle::{lock, Ctx, Data, FileMeta, Handle, LiveUpload, State};
use crate::inode::{DirKey, InodeTable, Node, ROOT};
use crate::rename::plan_dir_rename;

/// `st_blksize` of files: `cp` sizes its buffer from it, and 1 MiB is the largest write
/// the kernel sends (max_pages × 4 KiB), so a copy in moves 1 MiB per request.
const FILE_BLKSIZE: u32 = 1 << 20;
/// Largest write request asked of the kernel (it caps this at 1 MiB anyway).
const MAX_WRITE: u32 = 1 << 20;
/// `df` asks often (`rm -rf` does); one status call per this long is plenty.
const STATFS_TTL: Duration = Duration::from_secs(2);
/// A directory rename logs its progress every this many objects.
const RENAME_LOG_EVERY: usize = 100;
/// Server-side copies a directory rename keeps in flight at once.
const RENAME_PARALLEL: usize = 8;

/// One directory entry: inode, kind, name.
type DirEntry = (u64, FileType, String);

/// Everything the mount shares between FUSE threads and the signal thread.
pub struct Shared {
    pub ctx: Ctx,
    inodes: Mutex<InodeTable>,
    cache: Mutex<Cache>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Directory handles: the entries snapshot taken at offset 0, so offsets stay stable.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    statfs: Mutex<Option<(Instant, [u64; 4])>>,
    /// Regular files found hidden by a directory of the same name (each logged once).
    shadowed: Mutex<HashSet<ObjectName>>,
    /// Directories' mtime and ctime as changed by this mount's own creates, removals and
    /// renames: kept here only (no request to the proxy), so not shared with other mounts
    /// and forgotten on a remount; a marker's stored time is what lasts (see [`DirTimes`]).
    dir_times: Mutex<DirTimes>,
    ttl: Duration,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

pub struct OssFs(pub Arc<Shared>);

fn ns_to_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn time_ns(t: TimeOrNow) -> u64 {
    match t {
        TimeOrNow::Now => attrs::now_ns(),
        TimeOrNow::SpecificTime(t) => t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    }
}

fn utf8(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

fn name_err(e: oss_proto::name::NameError) -> Errno {
    errno::from_name(&e)
}

/// "Not found" from the proxy is an answer, not a failure.
fn found<T>(r: oss_proto::wire::Result<T>) -> oss_proto::wire::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(oss_proto::Error::Remote(WireError::NotFound)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The times a `setattr` (utimensat) sets, in ns since the epoch.
#[derive(Debug, Clone, Copy)]
struct Times {
    mtime: Option<u64>,
    atime: Option<u64>,
}

/// What a rename found at its source.
enum Source {
    File,
    Dir,
}

/// Runs `op` on every item, [`RENAME_PARALLEL`] at a time, calling `done(n)` after the
/// n-th success. Returns the failures (index, error); with `stop_on_error` nothing new
/// starts after the first one.
async fn parallel<T, F, Fut>(
    items: &[T],
    op: F,
    stop_on_error: bool,
    mut done: impl FnMut(usize),
) -> Vec<(usize, oss_proto::Error)>
where
    F: Fn(&T) -> Fut,
    Fut: std::future::Future<Output = oss_proto::wire::Result<()>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let (mut next, mut ok) = (0, 0);
    let mut failed = Vec::new();
    loop {
        while set.len() < RENAME_PARALLEL
            && next < items.len()
            && (failed.is_empty() || !stop_on_error)
        {
            let (i, f) = (next, op(&items[next]));
            set.spawn(async move { (i, f.await) });
            next += 1;
        }
        let Some(r) = set.join_next().await else {
            break;
        };
        match r {
            Ok((_, Ok(()))) => {
                ok += 1;
                done(ok);
            }
            Ok((i, Err(e))) => failed.push((i, e)),
            Err(e) => failed.push((0, oss_proto::Error::Protocol(e.to_string()))),
        }
    }
    failed
}

impl Shared {
    pub fn new(ctx: Ctx, ttl: Duration) -> Self {
        Shared {
            ctx,
            inodes: Mutex::new(InodeTable::new()),
            cache: Mutex::new(Cache::new(ttl)),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            statfs: Mutex::new(None),
            shadowed: Mutex::new(HashSet::new()),
            dir_times: Mutex::new(DirTimes::new()),
            ttl,
            uid: unsafe { libc::geteuid() },
            gid: unsafe { libc::getegid() },
            started: SystemTime::now(),
        }
    }

    fn node(&self, ino: u64) -> Result<Node, Errno> {
        lock(&self.inodes).get(ino).cloned().ok_or(Errno::ENOENT)
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        lock(&self.handles).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    fn handles_of(&self, ino: u64) -> Vec<Arc<Handle>> {
        lock(&self.handles)
            .values()
            .filter(|h| h.ino == ino)
            .cloned()
            .collect()
    }

    /// A file being written here but not necessarily uploaded yet, as `stat` shows it.
    fn pending(&self, ino: Option<u64>) -> Option<FileInfo> {
        let hs = self.handles_of(ino?);
        let (size, h) = hs
            .iter()
            .filter_map(|h| h.pending_size().map(|s| (s, h)))
            .max_by_key(|(s, _)| *s)?;
        let m = h.file_meta();
        let t = m.shown_mtime_ns();
        let mut a = m.upload_attrs();
        attrs::set_mtime_ns(&mut a, t);
        Some(FileInfo {
            size,
            timestamp: t / 1000,
            attrs: a,
        })
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(h));
        fh
    }

    fn note_shadowed(&self, name: ObjectName) {
        let first = lock(&self.shadowed).insert(name.clone());
        if first {
            debug!(%name, "a regular file is hidden by a directory of the same name");
        }
    }

    /// A directory's link count: 2 + its subdirectories when this mount holds a fresh
    /// listing of it (for the root: of the users), else 2. Counting them otherwise would
    /// cost a proxy listing on every getattr, so it does not (2 is also what many network
    /// and FUSE file systems show; `find` goes by the entries' types, which readdir gives).
    fn dir_nlink(&self, node: &Node) -> u32 {
        let now = Instant::now();
        let c = lock(&self.cache);
        dir_nlink(match node {
            Node::Root => c.users(now).map(|u| u.len()),
            Node::Dir(d) => c.subdirs(d, now),
            Node::File(_) => None,
        })
    }

    /// An entry of `dir` was added, removed or renamed by this mount: its mtime and ctime
    /// become now, in this mount's memory only (see [`DirTimes`]).
    fn dir_changed(&self, dir: Node) {
        lock(&self.dir_times).entry_changed(dir, attrs::now_ns());
    }

    /// A directory's attributes. Its mtime and ctime are the later of the marker's stored
    /// time (the mount's start without a marker) and the last entry change this mount made
    /// in it: directory times are kept by the mount that made the change, not shared with
    /// other mounts and not kept across remounts (except a marker's stored time).
    fn dir_attr(&self, ino: u64, node: &Node, marker: Option<&FileInfo>) -> FileAttr {
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let (t, at, perm) = match marker {
            Some(m) => (
                m.mtime_ns(),
                m.atime_ns(),
                attrs::shown_perm(&m.attrs, true),
            ),
            None => (started, started, attrs::DIR_PERM),
        };
        let (mtime, ctime) = lock(&self.dir_times).shown(node, t, t);
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: ns_to_time(at),
            mtime: ns_to_time(mtime),
            ctime: ns_to_time(ctime),
            crtime: ns_to_time(t),
            kind: FileType::Directory,
            perm: perm as u16,
            nlink: self.dir_nlink(node),
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// A linked file's attributes (nlink 1; [`Shared::getattr`] shows 0 once unlinked).
    fn file_attr(&self, ino: u64, info: &FileInfo) -> FileAttr {
        let t = ns_to_time(info.mtime_ns());
        FileAttr {
            ino: INodeNo(ino),
            size: info.size,
            blocks: info.size.div_ceil(512),
            atime: ns_to_time(info.atime_ns()),
            mtime: t,
            ctime: t,
            crtime: t,
            kind: FileType::RegularFile,
            perm: attrs::shown_perm(&info.attrs, false) as u16,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: FILE_BLKSIZE,
            flags: 0,
        }
    }

    /// What `name` in `dir` is: a file being written here, the cache's answer, or the
    /// proxy's.
    fn entry(&self, dir: &DirKey, name: &str) -> Result<Entry, Errno> {
        let obj = dir.child_object(name).map_err(name_err)?;
        let ino = lock(&self.inodes).find(&Node::File(obj.clone()));
        if let Some(info) = self.pending(ino) {
            return Ok(Entry::File(info));
        }
        let cached = lock(&self.cache).entry(dir, name, Instant::now());
        match cached {
            Cached::Hit(e) => return Ok(e),
            Cached::Absent => return Err(Errno::ENOENT),
            Cached::Miss => {}
        }
        let now = Instant::now();
        match self.remote_entry(&obj)? {
            Some(e) => {
                lock(&self.cache).put_entry(dir, name, e.clone(), now);
                Ok(e)
            }
            None => {
                lock(&self.cache).put_absent(dir, name, now);
                Err(Errno::ENOENT)
            }
        }
    }

    /// Asks the proxy what `obj` is: the object itself (a file or a marker) and, at the
    /// same time, whether anything lies below `obj/` (then it is a directory).
    fn remote_entry(&self, obj: &ObjectName) -> Result<Option<Entry>, Errno> {
        let q = below_object(obj);
        let client = &self.ctx.client;
        let (st, ls) = self
            .ctx
            .block_on(async { tokio::join!(client.stat(obj), client.list_page(&q)) });
        let below = match found(ls) {
            Ok(v) => v.is_some_and(|(items, _)| !items.is_empty()),
            Err(e) => {
                warn!(name = %obj, error = %e, "listing failed");
                return Err(errno::from_proto(&e));
            }
        };
        let meta = match found(st) {
            Ok(m) => m.filter(|m| !m.deleted),
            Err(e) => {
                warn!(name = %obj, error = %e, "stat failed");
                return Err(errno::from_proto(&e));
            }
        };
        Ok(match (meta, below) {
            (Some(m), _) if m.is_dir_marker() => Some(Entry::Dir(Some(FileInfo::from(&m)))),
            (Some(_), true) => {
                self.note_shadowed(obj.clone());
                Some(Entry::Dir(None))
            }
            (Some(m), false) => Some(Entry::File(FileInfo::from(&m))),
            (None, true) => Some(Entry::Dir(None)),
            (None, false) => None,
        })
    }

    fn exists(&self, dir: &DirKey, name: &str) -> Result<Option<Entry>, Errno> {
        match self.entry(dir, name) {
            Ok(e) => Ok(Some(e)),
            Err(e) if e == Errno::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A file's size, time, mode: from a handle writing it, the cache, or the proxy.
    fn file_info(&self, name: &ObjectName) -> Result<FileInfo, Errno> {
        let (dir, base) = DirKey::of_object(name);
        match self.entry(&dir, base)? {
            Entry::File(info) => Ok(info),
            Entry::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// The marker of directory `dir` (`None`: it has none, or it is a user's directory).
    fn dir_marker(&self, dir: &DirKey) -> Result<Option<FileInfo>, Errno> {
        let Some((parent, name)) = dir.parent() else {
            return Ok(None);
        };
        let cached = lock(&self.cache).entry(&parent, name, Instant::now());
        match cached {
            Cached::Hit(Entry::Dir(m)) => return Ok(m),
            Cached::Hit(Entry::File(_)) | Cached::Absent => return Ok(None),
            Cached::Miss => {}
        }
        let Some(marker) = dir.marker() else {
            return Ok(None);
        };
        let now = Instant::now();
        let m = match found(self.ctx.block_on(self.ctx.client.stat(&marker))) {
            Ok(m) => m.filter(|m| m.is_dir_marker()).map(|m| FileInfo::from(&m)),
            Err(e) => {
                warn!(name = %marker, error = %e, "stat failed");
                return Err(errno::from_proto(&e));
            }
        };
        // The kernel knows this directory, so it is one (with or without a marker).
        lock(&self.cache).put_entry(&parent, name, Entry::Dir(m.clone()), now);
        Ok(m)
    }

    /// The users, asked of the proxy (plus those made here); the answer is cached for
    /// [`Shared::user_exists`].
    fn users(&self) -> Result<Vec<String>, Errno> {
        let now = Instant::now();
        let users = self
            .ctx
            .block_on(self.ctx.client.list_users())
            .map_err(|e| {
                warn!(error = %e, "listing users failed");
                errno::from_proto(&e)
            })?;
        let mut cache = lock(&self.cache);
        cache.put_users(users, now);
        Ok(cache.users(now).unwrap_or_default())
    }

    /// Only a "yes" is taken from the cache: a user another client has just created (by
    /// uploading its first file) must not be "no such directory" for a whole TTL after the
    /// users were last listed here.
    fn user_exists(&self, user: &str) -> Result<bool, Errno> {
        let known = lock(&self.cache).user_exists(user, Instant::now());
        if known == Some(true) {
            return Ok(true);
        }
        Ok(self.users()?.iter().any(|u| u == user))
    }

    /// One directory's entries: one listing of its prefix with delimiter '/' (paged), never
    /// the user's whole tree; cached for the lookups that follow (`ls -l`'s stats). Plus
    /// files being written here that the proxy does not have yet.
    fn list_dir(&self, dir: &DirKey) -> Result<BTreeMap<String, Entry>, Errno> {
        let now = Instant::now();
        let prefix = dir.prefix();
        let q = dir_query(dir);
        let items = match found(self.ctx.block_on(self.ctx.client.list_all(&q))) {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                warn!(%dir, error = %e, "listing failed");
                return Err(errno::from_proto(&e));
            }
        };
        let (mut entries, shadowed) = fold(&prefix, &items);
        for s in shadowed {
            if let Ok(n) = dir.child_object(&s) {
                self.note_shadowed(n);
            }
        }
        lock(&self.cache).put_listing(dir, &entries, now);
        let local: Vec<(u64, String)> = lock(&self.inodes)
            .files_under(dir)
            .filter(|(_, n)| !n.file()[prefix.len()..].contains('/'))
            .map(|(i, n)| (i, n.file()[prefix.len()..].to_owned()))
            .collect();
        for (ino, name) in local {
            if let Some(info) = self.pending(Some(ino)) {
                entries.entry(name).or_insert(Entry::File(info));
            }
        }
        Ok(entries)
    }

    /// True if anything lies below `dir`: an object on the proxy, or a file being written
    /// here.
    fn dir_has_children(&self, dir: &DirKey) -> Result<bool, Errno> {
        let local: Vec<u64> = lock(&self.inodes)
            .files_under(dir)
            .map(|(i, _)| i)
            .collect();
        if local.into_iter().any(|i| self.pending(Some(i)).is_some()) {
            return Ok(true);
        }
        let q = below_query(&dir.user, dir.prefix());
        match found(self.ctx.block_on(self.ctx.client.list_page(&q))) {
            Ok(v) => Ok(v.is_some_and(|(items, _)| !items.is_empty())),
            Err(e) => {
                warn!(%dir, error = %e, "listing failed");
                Err(errno::from_proto(&e))
            }
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let name = utf8(name)?;
        match self.node(parent)? {
            Node::Root => {
                validate_part(name, Part::User).map_err(name_err)?;
                self.ctx.may_reach(name)?;
                if !self.user_exists(name)? {
                    return Err(Errno::ENOENT);
                }
                let node = Node::Dir(DirKey::user(name));
                let ino = lock(&self.inodes).lookup(&node);
                Ok(self.dir_attr(ino, &node, None))
            }
            Node::Dir(dir) => match self.entry(&dir, name)? {
                Entry::File(info) => {
                    let obj = dir.child_object(name).map_err(name_err)?;
                    let ino = lock(&self.inodes).lookup(&Node::File(obj));
                    Ok(self.file_attr(ino, &info))
                }
                Entry::Dir(marker) => {
                    let node = Node::Dir(dir.child_dir(name));
                    let ino = lock(&self.inodes).lookup(&node);
                    Ok(self.dir_attr(ino, &node, marker.as_ref()))
                }
            },
            Node::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        match &node {
            Node::Root => Ok(self.dir_attr(ino, &node, None)),
            Node::Dir(dir) => {
                let marker = self.dir_marker(dir)?;
                Ok(self.dir_attr(ino, &node, marker.as_ref()))
            }
            Node::File(name) => {
                let linked = lock(&self.inodes).is_linked(ino);
                if !linked {
                    // Unlinked (or replaced by a rename) but still open: what the handle
                    // holds, if anything, with no name left (fstat shows nlink 0).
                    let info = self.pending(Some(ino)).unwrap_or(FileInfo {
                        size: 0,
                        timestamp: oss_proto::wire::now_micros(),
                        attrs: Attrs::default(),
                    });
                    let mut attr = self.file_attr(ino, &info);
                    attr.nlink = 0;
                    return Ok(attr);
                }
                let info = self.file_info(name)?;
                Ok(self.file_attr(ino, &info))
            }
        }
    }

    fn file_name(&self, ino: u64) -> Result<ObjectName, Errno> {
        match self.node(ino)? {
            Node::File(n) => Ok(n),
            _ => Err(Errno::EISDIR),
        }
    }

    fn put_file(&self, name: &ObjectName, info: FileInfo) {
        let (dir, base) = DirKey::of_object(name);
        lock(&self.cache).put_entry(&dir, base, Entry::File(info), Instant::now());
    }

    /// Uploads a handle's spool if it is dirty, with the handle's mode and time. The one
    /// place a write becomes durable.
    fn commit(&self, h: &Handle) -> Result<(), Errno> {
        let mut st = lock(&h.state);
        if !st.dirty {
            return Ok(());
        }
        let (name, linked) = {
            let t = lock(&self.inodes);
            let name = match t.get(h.ino) {
                Some(Node::File(n)) => n.clone(),
                _ => return Ok(()),
            };
            (name, t.is_linked(h.ino))
        };
        if !linked {
            // Removed while open: like a local file system, the writes die with it.
            debug!(%name, "not uploading a file removed while open");
            st.dirty = false;
            return Ok(());
        }
        let want = h.file_meta().upload_attrs();
        let live = st.live.take();
        let Data::Loaded(spool) = &st.data else {
            st.dirty = false;
            return Ok(());
        };
        let streamed = match live {
            Some(live) if live.sent == spool.size() && live.name() == &name => {
                let sent_attrs = live.attrs().clone();
                match live.finish(&self.ctx) {
                    Ok(meta) => Some((meta, sent_attrs)),
                    Err(e) => {
                        warn!(%name, error = %e, "live upload failed; uploading the spool");
                        None
                    }
                }
            }
            _ => None,
        };
        let meta = match streamed {
            // The mode or time changed after the bytes started streaming (`cp -p` sets
            // them after the last write): put them on the stored object.
            Some((_, sent)) if sent != want => self.copy_attrs(&name, want.clone())?,
            Some((meta, _)) => meta,
            None => self.ctx.upload(&name, spool, want.clone())?,
        };
        st.dirty = false;
        h.file_meta().uploaded(&want, meta.timestamp);
        drop(st);
        self.put_file(
            &name,
            FileInfo {
                size: meta.size,
                timestamp: meta.timestamp,
                attrs: want,
            },
        );
        debug!(%name, size = meta.size, "uploaded");
        Ok(())
    }

    /// Replaces the stored attributes of `name` (a server-side copy onto itself).
    fn copy_attrs(&self, name: &ObjectName, attrs: Attrs) -> Result<ObjectMeta, Errno> {
        self.ctx
            .block_on(self.ctx.client.copy(name, name, Some(attrs)))
            .map_err(|e| {
                warn!(%name, error = %e, "storing the mode or time failed");
                errno::from_proto(&e)
            })
    }

    /// Uploads every dirty handle (before unmounting). Returns how many failed.
    pub fn flush_all(&self) -> usize {
        let all: Vec<Arc<Handle>> = lock(&self.handles).values().cloned().collect();
        let mut failed = 0;
        for h in all {
            if self.commit(&h).is_err() {
                failed += 1;
            }
        }
        failed
    }

    fn commit_ino(&self, ino: u64) -> Result<(), Errno> {
        for h in self.handles_of(ino) {
            self.commit(&h)?;
        }
        Ok(())
    }

    fn open(&self, ino: u64, flags: OpenFlags) -> Result<u64, Errno> {
        let name = self.file_name(ino)?;
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let append = flags.0 & libc::O_APPEND != 0;
        if !writable {
            let h = Handle::new(ino, false, append, Data::Remote, false, FileMeta::default());
            return Ok(self.add_handle(h));
        }
        // What is stored now (mode, content type) goes along with the next upload.
        let base = match self.file_info(&name) {
            Ok(info) => info.attrs,
            Err(e) if e == Errno::ENOENT => Attrs::default(),
            Err(e) => return Err(e),
        };
        let h = Handle::new(
            ino,
            true,
            append,
            Data::Unloaded,
            false,
            FileMeta::new(base),
        );
        Ok(self.add_handle(h))
    }

    fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let name = utf8(name)?;
        let dir = match self.node(parent)? {
            Node::Dir(d) => d,
            Node::Root => {
                warn!(
                    name,
                    "refusing to create a file at the top level: files live in a user's folder"
                );
                return Err(Errno::EPERM);
            }
            Node::File(_) => return Err(Errno::ENOTDIR),
        };
        let obj = dir.child_object(name).map_err(name_err)?;
        let excl = flags & libc::O_EXCL != 0;
        let truncate = flags & libc::O_TRUNC != 0;
        let existing = self.exists(&dir, name)?;
        let base = match &existing {
            Some(Entry::Dir(_)) if excl => return Err(Errno::EEXIST),
            Some(Entry::Dir(_)) => return Err(Errno::EISDIR),
            Some(Entry::File(_)) if excl => return Err(Errno::EEXIST),
            Some(Entry::File(info)) => Some(info.attrs.clone()),
            None => None,
        };
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let append = flags & libc::O_APPEND != 0;
        let mut meta = FileMeta::new(base.clone().unwrap_or_default());
        if base.is_none() {
            meta.mode = Some(attrs::file_mode(mode & !umask));
        }
        let (data, dirty) = if base.is_some() && !truncate {
            (Data::Unloaded, false)
        } else {
            // A new (or truncated) file: it must exist once closed, even if empty.
            meta.touched();
            (Data::Loaded(self.ctx.new_spool()?), true)
        };
        let ino = lock(&self.inodes).lookup(&Node::File(obj.clone()));
        let fh = self.add_handle(Handle::new(ino, writable, append, data, dirty, meta));
        if existing.is_none() {
            self.dir_changed(Node::Dir(dir.clone()));
        }
        let info = match self.pending(Some(ino)) {
            Some(info) => info,
            None => self.file_info(&obj)?,
        };
        Ok((self.file_attr(ino, &info), fh))
    }

    fn read(&self, ino: u64, fh: u64, off: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let h = self.handle(fh)?;
        let mut st = lock(&h.state);
        let State { data, ra, .. } = &mut *st;
        match data {
            Data::Loaded(spool) => spool.read_at(off, size),
            Data::Remote | Data::Unloaded => {
                let name = self.file_name(ino)?;
                ra.read(&self.ctx, &name, off, size)
            }
        }
    }

    fn write(&self, ino: u64, fh: u64, off: u64, data: &[u8]) -> Result<u32, Errno> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        let name = self.file_name(ino)?;
        let mut st = lock(&h.state);
        let spool = h.loaded(&self.ctx, &mut st, &name)?;
        // O_APPEND: the kernel's offset comes from its cached size, which may be stale.
        let size = spool.size();
        let off = if h.append { size } else { off };
        errno::check_file_size(off.saturating_add(data.len() as u64))?;
        h.file_meta().touched();
        // Stream writes that build the file from its start in order; anything else goes
        // the spool way only.
        let appending = match &st.live {
            Some(live) => live.sent == off,
            None => off == 0 && size == 0,
        };
        if !appending {
            st.live = None;
            if let Data::Loaded(spool) = &mut st.data {
                spool.write_at(data, off)?;
            }
        } else {
            let State {
                data: spool, live, ..
            } = &mut *st;
            let Data::Loaded(spool) = spool else {
                unreachable!("loaded above")
            };
            let live = live.get_or_insert_with(|| {
                LiveUpload::start(&self.ctx, &name, spool, h.file_meta().upload_attrs())
            });
            if !live.append(spool, data)? {
                debug!(%name, "live upload failed; the spool will be uploaded at flush");
                st.live = None;
            }
        }
        st.dirty = true;
        h.sync_size(&st);
        Ok(data.len() as u32)
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> Result<FileAttr, Errno> {
        // Files belong to whoever mounted; a chown that changes nothing is fine.
        if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
            debug!(
                ino,
                ?uid,
                ?gid,
                "chown refused: files belong to the mounting user"
            );
            return Err(Errno::EPERM);
        }
        let times = Times {
            mtime: mtime.map(time_ns),
            atime: atime.map(time_ns),
        };
        let any = mode.is_some() || times.mtime.is_some() || times.atime.is_some();
        match self.node(ino)? {
            Node::Root => {}
            Node::Dir(dir) => {
                if any {
                    self.set_dir_attrs(&dir, mode, times)?;
                }
            }
            Node::File(name) => {
                if let Some(n) = size {
                    self.truncate(ino, &name, n, fh)?;
                }
                if any {
                    self.set_file_attrs(ino, &name, mode, times)?;
                }
            }
        }
        self.getattr(ino)
    }

    fn truncate(&self, ino: u64, name: &ObjectName, n: u64, fh: Option<u64>) -> Result<(), Errno> {
        // Too big: EFBIG before anything is fetched, abandoned or marked dirty.
        errno::check_file_size(n)?;
        let targets: Vec<Arc<Handle>> = match fh {
            Some(fh) => vec![self.handle(fh)?],
            None => self
                .handles_of(ino)
                .into_iter()
                .filter(|h| h.writable)
                .collect(),
        };
        if targets.is_empty() {
            // truncate(2) on a path nobody has open here: do it on the proxy now.
            let base = self.file_info(name)?.attrs;
            let spool = if n == 0 {
                self.ctx.new_spool()?
            } else {
                let mut s = self.ctx.fetch(name, Some(n), false)?;
                s.set_len(n)?;
                s
            };
            let mut want = FileMeta::new(base);
            want.touched();
            let meta = self.ctx.upload(name, &spool, want.upload_attrs())?;
            self.put_file(name, FileInfo::from(&meta));
            return Ok(());
        }
        for h in &targets {
            if !h.writable {
                return Err(Errno::EBADF);
            }
            let mut st = lock(&h.state);
            h.truncate(&self.ctx, &mut st, name, n)?;
            h.file_meta().touched();
        }
        Ok(())
    }

    /// chmod and utimens of a file. A file being written keeps them for its upload; a clean
    /// one gets them stored at once (a server-side copy of the object onto itself).
    fn set_file_attrs(
        &self,
        ino: u64,
        name: &ObjectName,
        mode: Option<u32>,
        times: Times,
    ) -> Result<(), Errno> {
        let Times { mtime, atime } = times;
        let writers: Vec<Arc<Handle>> = self
            .handles_of(ino)
            .into_iter()
            .filter(|h| h.writable)
            .collect();
        let apply = |m: &mut FileMeta| {
            if let Some(mode) = mode {
                m.mode = Some(attrs::file_mode(mode));
            }
            if mtime.is_some() {
                m.mtime = mtime;
            }
            if atime.is_some() {
                m.atime = atime;
            }
        };
        let mut dirty = false;
        for h in &writers {
            // The state lock orders this against a commit: either the commit sees the new
            // values, or it is over and the copy below stores them.
            let st = lock(&h.state);
            apply(&mut h.file_meta());
            dirty |= st.dirty;
        }
        if dirty || !lock(&self.inodes).is_linked(ino) {
            return Ok(());
        }
        let info = self.file_info(name)?;
        let mut want = info.attrs.clone();
        if let Some(mode) = mode {
            want.set_mode(attrs::file_mode(mode));
        }
        // The copy gets a new write timestamp: keep the time the file showed.
        attrs::set_mtime_ns(&mut want, mtime.unwrap_or(info.mtime_ns()));
        if let Some(t) = atime {
            attrs::set_atime_ns(&mut want, t);
        }
        let meta = self.copy_attrs(name, want.clone())?;
        for h in &writers {
            let _st = lock(&h.state);
            h.file_meta().uploaded(&want, meta.timestamp);
        }
        self.put_file(
            name,
            FileInfo {
                size: meta.size,
                timestamp: meta.timestamp,
                attrs: want,
            },
        );
        Ok(())
    }

    /// chmod and utimens of a directory: stored on its marker if it has one; accepted (and
    /// not kept) otherwise.
    fn set_dir_attrs(&self, dir: &DirKey, mode: Option<u32>, times: Times) -> Result<(), Errno> {
        let Times { mtime, atime } = times;
        let (Some(marker), Some((parent, name))) = (dir.marker(), dir.parent()) else {
            return Ok(());
        };
        let current = match found(self.ctx.block_on(self.ctx.client.stat(&marker))) {
            Ok(Some(m)) if m.is_dir_marker() => FileInfo::from(&m),
            Ok(_) => {
                debug!(%dir, "directory without a marker: mode and time not kept");
                return Ok(());
            }
            Err(e) => {
                warn!(name = %marker, error = %e, "stat failed");
                return Err(errno::from_proto(&e));
            }
        };
        let mut want = current.attrs.clone();
        if let Some(mode) = mode {
            want.set_mode(attrs::dir_mode(mode));
        }
        attrs::set_mtime_ns(&mut want, mtime.unwrap_or(current.mtime_ns()));
        if let Some(t) = atime {
            attrs::set_atime_ns(&mut want, t);
        }
        let meta = self.copy_attrs(&marker, want.clone())?;
        let info = FileInfo {
            size: meta.size,
            timestamp: meta.timestamp,
            attrs: want,
        };
        lock(&self.cache).put_entry(&parent, name, Entry::Dir(Some(info)), Instant::now());
        lock(&self.dir_times).attrs_set(Node::Dir(dir.clone()), mtime.is_some(), attrs::now_ns());
        Ok(())
    }

    fn readdir_entries(&self, ino: u64) -> Result<Vec<DirEntry>, Errno> {
        let node = self.node(ino)?;
        let up = match &node {
            Node::Dir(d) => match d.parent() {
                Some((p, _)) => lock(&self.inodes).ino_of(&Node::Dir(p)),
                None => ROOT,
            },
            _ => ROOT,
        };
        let mut out = vec![
            (ino, FileType::Directory, ".".to_owned()),
            (up, FileType::Directory, "..".to_owned()),
        ];
        match node {
            Node::Root => {
                // Every new `ls` (readdir from offset 0) asks the proxy: a listing cached
                // while another client was still uploading must not hide its files.
                let users = self.users()?;
                let mut t = lock(&self.inodes);
                for u in users {
                    let i = t.ino_of(&Node::Dir(DirKey::user(&u)));
                    out.push((i, FileType::Directory, u));
                }
            }
            Node::Dir(dir) => {
                let entries = self.list_dir(&dir)?;
                let mut t = lock(&self.inodes);
                for (name, e) in entries {
                    match e {
                        Entry::File(_) => {
                            let Ok(obj) = dir.child_object(&name) else {
                                continue;
                            };
                            let i = t.ino_of(&Node::File(obj));
                            out.push((i, FileType::RegularFile, name));
                        }
                        Entry::Dir(_) => {
                            let i = t.ino_of(&Node::Dir(dir.child_dir(&name)));
                            out.push((i, FileType::Directory, name));
                        }
                    }
                }
            }
            Node::File(_) => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }

    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr, Errno> {
        let name = utf8(name)?;
        let dir = match self.node(parent)? {
            Node::Root => return self.mkdir_user(name),
            Node::Dir(d) => d,
            Node::File(_) => return Err(Errno::ENOTDIR),
        };
        let marker = dir.child_object(name).map_err(name_err)?;
        if self.exists(&dir, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let mut a = Attrs::directory();
        a.set_mode(attrs::dir_mode(mode & !umask));
        let meta = self
            .ctx
            .block_on(self.ctx.client.upload_with(
                &marker,
                Some(0),
                a,
                &mut tokio::io::empty(),
                &mut |_| {},
            ))
            .map_err(|e| {
                warn!(name = %marker, error = %e, "storing a directory marker failed");
                errno::from_proto(&e)
            })?;
        let info = FileInfo::from(&meta);
        let child = dir.child_dir(name);
        {
            let now = Instant::now();
            let mut c = lock(&self.cache);
            c.put_entry(&dir, name, Entry::Dir(Some(info.clone())), now);
            // Made just now, so known empty: `cp -r`'s lookups inside need not ask.
            c.put_listing(&child, &BTreeMap::new(), now);
        }
        self.dir_changed(Node::Dir(dir.clone()));
        let node = Node::Dir(child);
        let ino = lock(&self.inodes).lookup(&node);
        debug!(name = %marker, "directory made");
        Ok(self.dir_attr(ino, &node, Some(&info)))
    }

    fn mkdir_user(&self, name: &str) -> Result<FileAttr, Errno> {
        validate_part(name, Part::User).map_err(name_err)?;
        self.ctx.may_reach(name)?;
        if self.user_exists(name)? {
            return Err(Errno::EEXIST);
        }
        lock(&self.cache).make_user(name);
        self.dir_changed(Node::Root);
        let node = Node::Dir(DirKey::user(name));
        let ino = lock(&self.inodes).lookup(&node);
        info!(
            user = name,
            "new user folder (kept locally until it has files)"
        );
        Ok(self.dir_attr(ino, &node, None))
    }

    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let name = utf8(name)?;
        let dir = match self.node(parent)? {
            Node::Root => return self.rmdir_user(name),
            Node::Dir(d) => d,
            Node::File(_) => return Err(Errno::ENOTDIR),
        };
        let marker = dir.child_object(name).map_err(name_err)?;
        let child = dir.child_dir(name);
        // Always ask the proxy: removing a directory that has files must never succeed.
        if self.dir_has_children(&child)? {
            return Err(Errno::ENOTEMPTY);
        }
        match found(self.ctx.block_on(self.ctx.client.stat(&marker))) {
            Ok(Some(m)) if m.is_dir_marker() => {
                self.ctx
                    .block_on(self.ctx.client.delete(&marker))
                    .map_err(|e| {
                        warn!(name = %marker, error = %e, "deleting a directory marker failed");
                        errno::from_proto(&e)
                    })?;
            }
            Ok(Some(m)) if !m.deleted => return Err(Errno::ENOTDIR),
            // No marker: a directory that existed only in the names below it, now gone.
            Ok(_) => {}
            Err(e) => {
                warn!(name = %marker, error = %e, "stat failed");
                return Err(errno::from_proto(&e));
            }
        }
        {
            let mut c = lock(&self.cache);
            c.remove_entry(&dir, name);
            c.put_absent(&dir, name, Instant::now());
            c.forget_tree(&child);
        }
        {
            let mut t = lock(&self.dir_times);
            t.remove_tree(&child);
            t.entry_changed(Node::Dir(dir), attrs::now_ns());
        }
        lock(&self.inodes).unlink(&Node::Dir(child));
        Ok(())
    }

    fn rmdir_user(&self, name: &str) -> Result<(), Errno> {
        validate_part(name, Part::User).map_err(name_err)?;
        self.ctx.may_reach(name)?;
        let top = DirKey::user(name);
        // Always ask the proxy: removing a user that has files must never succeed.
        if self.dir_has_children(&top)? {
            return Err(Errno::ENOTEMPTY);
        }
        let mut cache = lock(&self.cache);
        if !cache.is_made(name) && cache.user_exists(name, Instant::now()) != Some(true) {
            return Err(Errno::ENOENT);
        }
        cache.remove_user(name);
        drop(cache);
        {
            let mut t = lock(&self.dir_times);
            t.remove_tree(&top);
            t.entry_changed(Node::Root, attrs::now_ns());
        }
        lock(&self.inodes).unlink(&Node::Dir(top));
        Ok(())
    }

    fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let name = utf8(name)?;
        let dir = match self.node(parent)? {
            Node::Dir(d) => d,
            Node::Root => return Err(Errno::EISDIR),
            Node::File(_) => return Err(Errno::ENOTDIR),
        };
        let obj = dir.child_object(name).map_err(name_err)?;
        let node = Node::File(obj.clone());
        let ino = lock(&self.inodes).find(&node);
        let pending = self.pending(ino).is_some();
        let existed = self
            .ctx
            .block_on(self.ctx.client.delete(&obj))
            .map_err(|e| {
                warn!(name = %obj, error = %e, "delete failed");
                errno::from_proto(&e)
            })?;
        {
            let mut c = lock(&self.cache);
            c.remove_entry(&dir, name);
            c.put_absent(&dir, name, Instant::now());
        }
        lock(&self.inodes).unlink(&node);
        if !existed && !pending {
            return Err(Errno::ENOENT);
        }
        self.dir_changed(Node::Dir(dir));
        Ok(())
    }

    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let (name, newname) = (utf8(name)?, utf8(newname)?);
        let (from, to) = match (self.node(parent)?, self.node(newparent)?) {
            (Node::Dir(a), Node::Dir(b)) => (a, b),
            (Node::Root, _) => {
                // Renaming a user would move all their files; EXDEV makes `mv` copy and
                // delete them one by one instead.
                return Err(Errno::EXDEV);
            }
            (Node::Dir(_), Node::Root) => {
                warn!(
                    name,
                    "refusing to move to the top level: it only holds users"
                );
                return Err(Errno::EPERM);
            }
            _ => return Err(Errno::ENOTDIR),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        // Checked before anything moves.
        to.child_object(newname).map_err(name_err)?;
        let src = match self.entry(&from, name)? {
            Entry::File(_) => Source::File,
            Entry::Dir(_) => Source::Dir,
        };
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match src {
            Source::File => self.rename_file(&from, name, &to, newname, noreplace),
            Source::Dir => self.rename_dir(&from, name, &to, newname, noreplace),
        }
    }

    /// A rename from `from_dir` to `to_dir` changed both (see [`Shared::dir_changed`]).
    fn dirs_changed(&self, from_dir: &DirKey, to_dir: &DirKey) {
        let now = attrs::now_ns();
        let mut t = lock(&self.dir_times);
        t.entry_changed(Node::Dir(from_dir.clone()), now);
        t.entry_changed(Node::Dir(to_dir.clone()), now);
    }

    /// A file: a server-side copy to the new name, then a delete of the old one. Not
    /// atomic: a crash in between leaves both names, never neither.
    fn rename_file(
        &self,
        from_dir: &DirKey,
        name: &str,
        to_dir: &DirKey,
        newname: &str,
        noreplace: bool,
    ) -> Result<(), Errno> {
        let from = from_dir.child_object(name).map_err(name_err)?;
        let to = to_dir.child_object(newname).map_err(name_err)?;
        if from == to {
            return Ok(());
        }
        // Bytes written here but not uploaded move with the file.
        // (Bound first: a guard in an `if let` scrutinee would live through the body.)
        let ino = lock(&self.inodes).find(&Node::File(from.clone()));
        if let Some(ino) = ino {
            self.commit_ino(ino)?;
        }
        match self.exists(to_dir, newname)? {
            Some(_) if noreplace => return Err(Errno::EEXIST),
            Some(Entry::Dir(_)) => return Err(Errno::EISDIR),
            _ => {}
        }
        let meta = self
            .ctx
            .block_on(self.ctx.client.copy(&from, &to, None))
            .map_err(|e| {
                warn!(%from, %to, error = %e, "rename: copy failed");
                errno::from_proto(&e)
            })?;
        if let Err(e) = self.ctx.block_on(self.ctx.client.delete(&from)) {
            warn!(%from, %to, error = %e, "rename: copied, but deleting the old name failed");
            return Err(errno::from_proto(&e));
        }
        {
            let now = Instant::now();
            let mut c = lock(&self.cache);
            c.remove_entry(from_dir, name);
            c.put_absent(from_dir, name, now);
            c.put_entry(to_dir, newname, Entry::File(FileInfo::from(&meta)), now);
        }
        lock(&self.inodes).rename(&Node::File(from), &Node::File(to));
        self.dirs_changed(from_dir, to_dir);
        Ok(())
    }

    /// A directory: every object below it, and its marker, copied to the new names; only
    /// once all are copied, the old names deleted. Not atomic: a crash (or a failed copy)
    /// in the middle leaves both trees, complete at the old name and partly at the new,
    /// never neither. Over an existing directory only if it is empty (ENOTEMPTY otherwise).
    fn rename_dir(
        &self,
        from_dir: &DirKey,
        name: &str,
        to_dir: &DirKey,
        newname: &str,
        noreplace: bool,
    ) -> Result<(), Errno> {
        let src = from_dir.child_dir(name);
        let dst = to_dir.child_dir(newname);
        if src == dst {
            return Ok(());
        }
        if dst.is_within(&src) {
            return Err(Errno::EINVAL);
        }
        match self.exists(to_dir, newname)? {
            Some(_) if noreplace => return Err(Errno::EEXIST),
            Some(Entry::File(_)) => return Err(Errno::ENOTDIR),
            Some(Entry::Dir(_)) if self.dir_has_children(&dst)? => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        // Files being written below move with the directory: upload them first.
        let open: Vec<u64> = lock(&self.inodes)
            .files_under(&src)
            .map(|(i, _)| i)
            .collect();
        for ino in open {
            self.commit_ino(ino)?;
        }
        let q = ListQuery {
            user: src.user.clone(),
            prefix: src.prefix(),
            ..ListQuery::default()
        };
        let client = &self.ctx.client;
        let marker = src.marker().ok_or(Errno::EINVAL)?;
        let (listed, stat) = self
            .ctx
            .block_on(async { tokio::join!(client.list_all(&q), client.stat(&marker)) });
        let objects: Vec<ObjectName> = match found(listed) {
            Ok(v) => v
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| match i {
                    ListItem::Object(m) if !m.deleted => Some(m.name),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                warn!(%src, error = %e, "rename: listing failed");
                return Err(errno::from_proto(&e));
            }
        };
        let marker_info = match found(stat) {
            Ok(m) => m.filter(|m| m.is_dir_marker()).map(|m| FileInfo::from(&m)),
            Err(e) => {
                warn!(name = %marker, error = %e, "rename: stat failed");
                return Err(errno::from_proto(&e));
            }
        };
        let has_marker = marker_info.is_some();
        let plan = plan_dir_rename(&src, &dst, has_marker, &objects).map_err(name_err)?;
        if plan.is_empty() {
            return Err(Errno::ENOENT);
        }
        let total = plan.len();
        if total >= RENAME_LOG_EVERY {
            info!(from = %src, to = %dst, objects = total, "renaming a directory: copying every object, then deleting the old names");
        }
        // The marker first (alone), so the new directory shows from the first copy.
        let marker_part = usize::from(has_marker);
        let (marker_plan, rest) = plan.split_at(marker_part);
        let progress = |copied: usize| {
            if copied.is_multiple_of(RENAME_LOG_EVERY) {
                info!(from = %src, to = %dst, copied, total, "directory rename: copying");
            }
        };
        let copy = |(a, b): &(ObjectName, ObjectName)| {
            let (c, a, b) = (client.clone(), a.clone(), b.clone());
            async move { c.copy(&a, &b, None).await.map(|_| ()) }
        };
        for (base, part) in [(0, marker_plan), (marker_part, rest)] {
            let failed = self
                .ctx
                .block_on(parallel(part, copy, true, |n| progress(base + n)));
            if let Some((i, e)) = failed.into_iter().next() {
                let obj = &part[i.min(part.len() - 1)].0;
                warn!(from = %src, to = %dst, name = %obj, total, error = %e,
                    "directory rename: a copy failed; the old directory is complete and kept");
                return Err(errno::from_proto(&e));
            }
        }
        // Everything is at the new names: now the old ones go, the marker last.
        let delete = |(a, _): &(ObjectName, ObjectName)| {
            let (c, a) = (client.clone(), a.clone());
            async move { c.delete(&a).await.map(|_| ()) }
        };
        let mut failed = 0;
        for part in [rest, marker_plan] {
            for (i, e) in self.ctx.block_on(parallel(part, delete, false, |_| {})) {
                let obj = &part[i.min(part.len() - 1)].0;
                warn!(name = %obj, error = %e, "directory rename: deleting an old name failed");
                failed += 1;
            }
        }
        if total >= RENAME_LOG_EVERY || failed > 0 {
            info!(from = %src, to = %dst, copied = total, delete_failed = failed, "directory rename done");
        }
        {
            let now = Instant::now();
            let mut c = lock(&self.cache);
            c.remove_entry(from_dir, name);
            c.put_absent(from_dir, name, now);
            c.forget_tree(&src);
            c.forget_tree(&dst);
            // The copied marker has the source's attributes (a new write timestamp only).
            c.put_entry(to_dir, newname, Entry::Dir(marker_info), now);
        }
        lock(&self.inodes).rename_dir(&src, &dst);
        lock(&self.dir_times).rename_tree(&src, &dst);
        self.dirs_changed(from_dir, to_dir);
        if failed > 0 {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// `mknod` of a regular file is an empty file; other kinds cannot be stored.
    fn mknod(&self, parent: u64, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr, Errno> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            warn!(
                ?name,
                mode = format!("{mode:o}"),
                "mknod: only regular files can be stored (no devices, FIFOs or sockets)"
            );
            return Err(Errno::EPERM);
        }
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let (attr, fh) = self.create(parent, name, mode, umask, flags)?;
        let h = lock(&self.handles).remove(&fh);
        if let Some(h) = h {
            self.commit(&h)?;
        }
        Ok(attr)
    }

    /// Blocks (total, free, available) in 4 KiB units and the object count.
    fn statfs(&self) -> Result<[u64; 4], Errno> {
        let cached = *lock(&self.statfs);
        if let Some((at, v)) = cached {
            if at.elapsed() < STATFS_TTL {
                return Ok(v);
            }
        }
        let u = self.ctx.block_on(self.ctx.client.usage()).map_err(|e| {
            warn!(error = %e, "usage failed");
            errno::from_proto(&e)
        })?;
        let v = [u.total / 4096, u.free / 4096, u.free / 4096, u.objects];
        *lock(&self.statfs) = Some((Instant::now(), v));
        Ok(v)
    }
}

fn reply_err(op: &str, e: Errno) -> Errno {
    if e != Errno::ENOENT {
        debug!(op, errno = ?e, "error");
    }
    e
}

/// How the kernel should treat an open file. A write-only handle gets `FOPEN_DIRECT_IO`: its
/// writes go from the writer's buffer straight to us, instead of first being copied into page
/// cache pages that nobody reads (the spool and the upload have the bytes), which costs a
/// fresh page per 4 KiB written. Such a handle cannot be read or shared-mmapped anyway.
fn fopen_flags(flags: i32) -> FopenFlags {
    if flags & libc::O_ACCMODE == libc::O_WRONLY {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::empty()
    }
}

impl Filesystem for OssFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let failed = self.0.flush_all();
        if failed > 0 {
            warn!(failed, "some files could not be uploaded at unmount");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.0.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&self.0.ttl, &attr, Generation(0)),
            Err(e) => reply.error(reply_err("lookup", e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.0.inodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.0.ttl, &attr),
            Err(e) => reply.error(reply_err("getattr", e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fh = fh.map(|f| f.0);
        match self
            .0
            .setattr(ino.0, mode, uid, gid, size, atime, mtime, fh)
        {
            Ok(attr) => reply.attr(&self.0.ttl, &attr),
            Err(e) => reply.error(reply_err("setattr", e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.0.mkdir(parent.0, name, mode, umask) {
            Ok(attr) => reply.entry(&self.0.ttl, &attr, Generation(0)),
            Err(e) => reply.error(reply_err("mkdir", e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.0.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(reply_err("unlink", e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.0.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(reply_err("rmdir", e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.0.mknod(parent.0, name, mode, umask) {
            Ok(attr) => reply.entry(&self.0.ttl, &attr, Generation(0)),
            Err(e) => reply.error(reply_err("mknod", e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        warn!(name = ?link_name, target = %target.display(), "symbolic links are not supported by the object store");
        reply.error(Errno::EPERM);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        warn!(ino = ino.0, name = ?newname, "hard links are not supported by the object store");
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.0.rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(reply_err("rename", e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // No FOPEN_KEEP_CACHE: other clients change files behind our back.
        match self.0.open(ino.0, flags) {
            Ok(fh) => reply.opened(FileHandle(fh), fopen_flags(flags.0)),
            Err(e) => reply.error(reply_err("open", e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.read(ino.0, fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(reply_err("read", e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.0.write(ino.0, fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(reply_err("write", e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // Only flush and fsync errors reach the application's close()/fsync(): upload here.
        match self.0.handle(fh.0).and_then(|h| self.0.commit(&h)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(reply_err("flush", e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = lock(&self.0.handles).remove(&fh.0);
        if let Some(h) = h {
            // Normally already clean (flush came first); the error would be lost anyway.
            if let Err(e) = self.0.commit(&h) {
                warn!(ino = h.ino, errno = ?e, "upload at release failed: data lost");
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.0.handle(fh.0).and_then(|h| self.0.commit(&h)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(reply_err("fsync", e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.node(ino.0) {
            Ok(n) if n.is_dir() => {
                let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let snap = if offset == 0 {
            None
        } else {
            lock(&self.0.dirs).get(&fh.0).cloned()
        };
        let entries = match snap {
            Some(s) => s,
            None => match self.0.readdir_entries(ino.0) {
                Ok(v) => {
                    let v = Arc::new(v);
                    lock(&self.0.dirs).insert(fh.0, v.clone());
                    v
                }
                Err(e) => return reply.error(reply_err("readdir", e)),
            },
        };
        // An entry's offset is the cookie of the next one.
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.0.dirs).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.0.statfs() {
            Ok([blocks, bfree, bavail, files]) => reply.statfs(
                blocks,
                bfree,
                bavail,
                files,
                u64::from(u32::MAX),
                4096,
                oss_proto::name::MAX_PART_LEN as u32,
                4096,
            ),
            Err(e) => reply.error(reply_err("statfs", e)),
        }
    }

    // No extended attributes: answer quietly instead of fuser's "not implemented" warnings
    // (`ls` asks for security.selinux on every file).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.0.create(parent.0, name, mode, umask, flags) {
            Ok((attr, fh)) => reply.created(
                &self.0.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                fopen_flags(flags),
            ),
            Err(e) => reply.error(reply_err("create", e)),
        }
    }
}
