//! The FUSE callbacks. Each one calls a helper that returns `Result<_, Errno>` and only
//! replies; the helpers never hold a global lock (inodes, cache, handle table) across a
//! proxy call.
//!
//! Layout: `/` lists users; `/USER` lists that user's files; nothing lives deeper.

use std::collections::{BTreeMap, HashMap};
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
use oss_proto::{ObjectName, WireError};
use tracing::{debug, info, warn};

use crate::cache::{Cache, Cached, FileInfo};
use crate::errno;
use crate::handle::{Ctx, Data, Handle, LiveUpload, State};
use crate::inode::{InodeTable, Node, ROOT};

/// `st_blksize` of files: `cp` sizes its buffer from it, and 1 MiB is the largest write
/// the kernel sends (max_pages × 4 KiB), so a copy in moves 1 MiB per request.
const FILE_BLKSIZE: u32 = 1 << 20;
/// Largest write request asked of the kernel (it caps this at 1 MiB anyway).
const MAX_WRITE: u32 = 1 << 20;
/// `df` asks often (`rm -rf` does); one status call per this long is plenty.
const STATFS_TTL: Duration = Duration::from_secs(2);

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
    ttl: Duration,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

pub struct OssFs(pub Arc<Shared>);

fn micros_to_time(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

fn utf8(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
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
            ttl,
            uid: unsafe { libc::geteuid() },
            gid: unsafe { libc::getegid() },
            started: SystemTime::now(),
        }
    }

    fn node(&self, ino: u64) -> Result<Node, Errno> {
        self.inodes
            .lock()
            .unwrap()
            .get(ino)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        self.handles
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    fn handles_of(&self, ino: u64) -> Vec<Arc<Handle>> {
        self.handles
            .lock()
            .unwrap()
            .values()
            .filter(|h| h.ino == ino)
            .cloned()
            .collect()
    }

    /// The size of a file being written here but not necessarily uploaded yet.
    fn pending(&self, ino: Option<u64>) -> Option<u64> {
        let ino = ino?;
        self.handles_of(ino)
            .iter()
            .filter_map(|h| h.pending_size())
            .max()
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, Arc::new(h));
        fh
    }

    fn dir_attr(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn file_attr(&self, ino: u64, info: FileInfo) -> FileAttr {
        let t = micros_to_time(info.mtime);
        FileAttr {
            ino: INodeNo(ino),
            size: info.size,
            blocks: info.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: FILE_BLKSIZE,
            flags: 0,
        }
    }

    /// A file's size and time: from a handle writing it, the cache, or a stat.
    fn file_info(&self, name: &ObjectName) -> Result<FileInfo, Errno> {
        let ino = self.inodes.lock().unwrap().find(&Node::File(name.clone()));
        if let Some(size) = self.pending(ino) {
            let now = oss_proto::wire::now_micros();
            return Ok(FileInfo { size, mtime: now });
        }
        let cached = self
            .cache
            .lock()
            .unwrap()
            .file(name.user(), name.file(), Instant::now());
        match cached {
            Cached::Hit(info) => return Ok(info),
            Cached::Absent => return Err(Errno::ENOENT),
            Cached::Miss => {}
        }
        match self.ctx.block_on(self.ctx.client.stat(name)) {
            Ok(meta) if !meta.deleted => {
                let info = FileInfo::from(&meta);
                self.cache
                    .lock()
                    .unwrap()
                    .put_file(name.user(), name.file(), info, Instant::now());
                Ok(info)
            }
            Ok(_) | Err(oss_proto::Error::Remote(WireError::NotFound)) => {
                self.cache
                    .lock()
                    .unwrap()
                    .remove_file(name.user(), name.file());
                Err(Errno::ENOENT)
            }
            Err(e) => {
                warn!(%name, error = %e, "stat failed");
                Err(errno::from_proto(&e))
            }
        }
    }

    fn exists(&self, name: &ObjectName) -> Result<bool, Errno> {
        match self.file_info(name) {
            Ok(_) => Ok(true),
            Err(e) if e == Errno::ENOENT => Ok(false),
            Err(e) => Err(e),
        }
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
        let mut cache = self.cache.lock().unwrap();
        cache.put_users(users, now);
        Ok(cache.users(now).unwrap_or_default())
    }

    /// Only a "yes" is taken from the cache: a user another client has just created (by
    /// uploading its first file) must not be "no such directory" for a whole TTL after the
    /// users were last listed here.
    fn user_exists(&self, user: &str) -> Result<bool, Errno> {
        if let Some(true) = self.cache.lock().unwrap().user_exists(user, Instant::now()) {
            return Ok(true);
        }
        Ok(self.users()?.iter().any(|u| u == user))
    }

    /// A user's files, listed by the proxy (the listing is cached for the lookups that
    /// follow, e.g. `ls -l`'s stats); plus files being written here that the proxy does not
    /// have yet.
    fn files(&self, user: &str) -> Result<BTreeMap<String, FileInfo>, Errno> {
        let now = Instant::now();
        let entries = match self.ctx.block_on(self.ctx.client.list(user)) {
            Ok(v) => v,
            Err(oss_proto::Error::Remote(WireError::NotFound)) => Vec::new(),
            Err(e) => {
                warn!(user, error = %e, "listing failed");
                return Err(errno::from_proto(&e));
            }
        };
        self.cache.lock().unwrap().put_listing(user, &entries, now);
        let mut files: BTreeMap<String, FileInfo> = entries
            .iter()
            .filter(|m| !m.deleted)
            .map(|m| (m.name.file().to_owned(), FileInfo::from(m)))
            .collect();
        let local: Vec<(u64, String)> = self
            .inodes
            .lock()
            .unwrap()
            .files_of(user)
            .map(|(i, n)| (i, n.file().to_owned()))
            .collect();
        for (ino, file) in local {
            if let Some(size) = self.pending(Some(ino)) {
                let mtime = oss_proto::wire::now_micros();
                files.insert(file, FileInfo { size, mtime });
            }
        }
        Ok(files)
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let name = utf8(name)?;
        match self.node(parent)? {
            Node::Root => {
                validate_part(name, Part::User).map_err(|e| errno::from_name(&e))?;
                if !self.user_exists(name)? {
                    return Err(Errno::ENOENT);
                }
                let ino = self
                    .inodes
                    .lock()
                    .unwrap()
                    .lookup(&Node::User(name.to_owned()));
                Ok(self.dir_attr(ino))
            }
            Node::User(user) => {
                let obj = ObjectName::new(&user, name).map_err(|e| errno::from_name(&e))?;
                let info = self.file_info(&obj)?;
                let ino = self.inodes.lock().unwrap().lookup(&Node::File(obj));
                Ok(self.file_attr(ino, info))
            }
            Node::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        match self.node(ino)? {
            Node::Root | Node::User(_) => Ok(self.dir_attr(ino)),
            Node::File(name) => {
                if !self.inodes.lock().unwrap().is_linked(ino) {
                    // Unlinked but still open: what the handle holds, if anything.
                    let size = self.pending(Some(ino)).unwrap_or(0);
                    let mtime = oss_proto::wire::now_micros();
                    return Ok(self.file_attr(ino, FileInfo { size, mtime }));
                }
                let info = self.file_info(&name)?;
                Ok(self.file_attr(ino, info))
            }
        }
    }

    fn file_name(&self, ino: u64) -> Result<ObjectName, Errno> {
        match self.node(ino)? {
            Node::File(n) => Ok(n),
            _ => Err(Errno::EISDIR),
        }
    }

    /// Uploads a handle's spool if it is dirty. The one place a write becomes durable.
    fn commit(&self, h: &Handle) -> Result<(), Errno> {
        let mut st = h.state.lock().unwrap();
        if !st.dirty {
            return Ok(());
        }
        let (name, linked) = {
            let t = self.inodes.lock().unwrap();
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
        let live = st.live.take();
        let Data::Loaded(spool) = &st.data else {
            st.dirty = false;
            return Ok(());
        };
        let streamed = match live {
            Some(live) if live.sent == spool.size() && live.name() == &name => {
                match live.finish(&self.ctx) {
                    Ok(meta) => Some(meta),
                    Err(e) => {
                        warn!(%name, error = %e, "live upload failed; uploading the spool");
                        None
                    }
                }
            }
            _ => None,
        };
        let meta = match streamed {
            Some(meta) => meta,
            None => self.ctx.upload(&name, spool)?,
        };
        st.dirty = false;
        drop(st);
        self.cache.lock().unwrap().put_file(
            name.user(),
            name.file(),
            FileInfo::from(&meta),
            Instant::now(),
        );
        debug!(%name, size = meta.size, "uploaded");
        Ok(())
    }

    /// Uploads every dirty handle (before unmounting). Returns how many failed.
    pub fn flush_all(&self) -> usize {
        let all: Vec<Arc<Handle>> = self.handles.lock().unwrap().values().cloned().collect();
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
        self.file_name(ino)?;
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let append = flags.0 & libc::O_APPEND != 0;
        let data = if writable {
            Data::Unloaded
        } else {
            Data::Remote
        };
        Ok(self.add_handle(Handle::new(ino, writable, append, data, false)))
    }

    fn create(&self, parent: u64, name: &OsStr, flags: i32) -> Result<(FileAttr, u64), Errno> {
        let name = utf8(name)?;
        let user = match self.node(parent)? {
            Node::User(u) => u,
            Node::Root => {
                warn!(
                    name,
                    "refusing to create a file at the top level: files live in a user's folder"
                );
                return Err(Errno::EPERM);
            }
            Node::File(_) => return Err(Errno::ENOTDIR),
        };
        let obj = ObjectName::new(&user, name).map_err(|e| errno::from_name(&e))?;
        let truncate = flags & libc::O_TRUNC != 0;
        let exists = if flags & libc::O_EXCL != 0 || !truncate {
            self.exists(&obj)?
        } else {
            false
        };
        if exists && flags & libc::O_EXCL != 0 {
            return Err(Errno::EEXIST);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let append = flags & libc::O_APPEND != 0;
        let (data, dirty) = if exists && !truncate {
            (Data::Unloaded, false)
        } else {
            // A new (or truncated) file: it must exist once closed, even if empty.
            (Data::Loaded(self.ctx.new_spool()?), true)
        };
        let ino = self.inodes.lock().unwrap().lookup(&Node::File(obj.clone()));
        let fh = self.add_handle(Handle::new(ino, writable, append, data, dirty));
        let info = match self.pending(Some(ino)) {
            Some(size) => FileInfo {
                size,
                mtime: oss_proto::wire::now_micros(),
            },
            None => self.file_info(&obj)?,
        };
        Ok((self.file_attr(ino, info), fh))
    }

    fn read(&self, ino: u64, fh: u64, off: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let h = self.handle(fh)?;
        let mut st = h.state.lock().unwrap();
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
        let mut st = h.state.lock().unwrap();
        let spool = h.loaded(&self.ctx, &mut st, &name)?;
        // O_APPEND: the kernel's offset comes from its cached size, which may be stale.
        let size = spool.size();
        let off = if h.append { size } else { off };
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
            let live = live.get_or_insert_with(|| LiveUpload::start(&self.ctx, &name, spool));
            if !live.append(spool, data)? {
                debug!(%name, "live upload failed; the spool will be uploaded at flush");
                st.live = None;
            }
        }
        st.dirty = true;
        h.sync_size(&st);
        Ok(data.len() as u32)
    }

    fn setattr(&self, ino: u64, size: Option<u64>, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let Some(n) = size else {
            // Modes, owners and times are not stored: accept and ignore them.
            return self.getattr(ino);
        };
        let name = self.file_name(ino)?;
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
            let spool = if n == 0 {
                self.ctx.new_spool()?
            } else {
                let mut s = self.ctx.fetch(&name, Some(n), false)?;
                s.set_len(n)?;
                s
            };
            let meta = self.ctx.upload(&name, &spool)?;
            self.cache.lock().unwrap().put_file(
                name.user(),
                name.file(),
                FileInfo::from(&meta),
                Instant::now(),
            );
            return Ok(self.file_attr(ino, FileInfo::from(&meta)));
        }
        for h in &targets {
            if !h.writable {
                return Err(Errno::EBADF);
            }
            let mut st = h.state.lock().unwrap();
            h.truncate(&self.ctx, &mut st, &name, n)?;
        }
        self.getattr(ino)
    }

    fn readdir_entries(&self, ino: u64) -> Result<Vec<DirEntry>, Errno> {
        let mut out = vec![
            (ino, FileType::Directory, ".".to_owned()),
            (ROOT, FileType::Directory, "..".to_owned()),
        ];
        match self.node(ino)? {
            Node::Root => {
                // Every new `ls` (readdir from offset 0) asks the proxy: a listing cached
                // while another client was still uploading must not hide its files.
                let users = self.users()?;
                let mut t = self.inodes.lock().unwrap();
                for u in users {
                    let i = t.ino_of(&Node::User(u.clone()));
                    out.push((i, FileType::Directory, u));
                }
            }
            Node::User(user) => {
                let files = self.files(&user)?;
                let mut t = self.inodes.lock().unwrap();
                for f in files.into_keys() {
                    let Ok(obj) = ObjectName::new(&user, &f) else {
                        continue;
                    };
                    let i = t.ino_of(&Node::File(obj));
                    out.push((i, FileType::RegularFile, f));
                }
            }
            Node::File(_) => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }

    fn mkdir(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let name = utf8(name)?;
        match self.node(parent)? {
            Node::Root => {}
            Node::User(user) => {
                warn!(
                    user,
                    name, "mkdir below a user's folder: the object store has no subdirectories"
                );
                return Err(Errno::EPERM);
            }
            Node::File(_) => return Err(Errno::ENOTDIR),
        }
        validate_part(name, Part::User).map_err(|e| errno::from_name(&e))?;
        if self.user_exists(name)? {
            return Err(Errno::EEXIST);
        }
        self.cache.lock().unwrap().make_user(name);
        let ino = self
            .inodes
            .lock()
            .unwrap()
            .lookup(&Node::User(name.to_owned()));
        info!(
            user = name,
            "new user folder (kept locally until it has files)"
        );
        Ok(self.dir_attr(ino))
    }

    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let name = utf8(name)?;
        match self.node(parent)? {
            Node::Root => {}
            Node::User(_) | Node::File(_) => return Err(Errno::ENOTDIR),
        }
        validate_part(name, Part::User).map_err(|e| errno::from_name(&e))?;
        // Always ask the proxy: removing a user that has files must never succeed.
        let files = match self.ctx.block_on(self.ctx.client.list(name)) {
            Ok(v) => v,
            Err(oss_proto::Error::Remote(WireError::NotFound)) => Vec::new(),
            Err(e) => {
                warn!(user = name, error = %e, "listing failed");
                return Err(errno::from_proto(&e));
            }
        };
        let pending = {
            let local: Vec<u64> = self
                .inodes
                .lock()
                .unwrap()
                .files_of(name)
                .map(|(i, _)| i)
                .collect();
            local.into_iter().any(|i| self.pending(Some(i)).is_some())
        };
        if files.iter().any(|m| !m.deleted) || pending {
            return Err(Errno::ENOTEMPTY);
        }
        let mut cache = self.cache.lock().unwrap();
        if !cache.is_made(name) && cache.user_exists(name, Instant::now()) != Some(true) {
            return Err(Errno::ENOENT);
        }
        cache.remove_user(name);
        drop(cache);
        self.inodes
            .lock()
            .unwrap()
            .unlink(&Node::User(name.to_owned()));
        Ok(())
    }

    fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let name = utf8(name)?;
        let user = match self.node(parent)? {
            Node::User(u) => u,
            Node::Root => return Err(Errno::EISDIR),
            Node::File(_) => return Err(Errno::ENOTDIR),
        };
        let obj = ObjectName::new(&user, name).map_err(|e| errno::from_name(&e))?;
        let node = Node::File(obj.clone());
        let ino = self.inodes.lock().unwrap().find(&node);
        let pending = self.pending(ino).is_some();
        let existed = self
            .ctx
            .block_on(self.ctx.client.delete(&obj))
            .map_err(|e| {
                warn!(name = %obj, error = %e, "delete failed");
                errno::from_proto(&e)
            })?;
        self.cache.lock().unwrap().remove_file(&user, name);
        self.inodes.lock().unwrap().unlink(&node);
        if !existed && !pending {
            return Err(Errno::ENOENT);
        }
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
        let (from_user, to_user) = match (self.node(parent)?, self.node(newparent)?) {
            (Node::User(a), Node::User(b)) => (a, b),
            (Node::Root, _) => {
                // Renaming a user would move all their files; EXDEV makes `mv` copy and
                // delete them one by one instead.
                return Err(Errno::EXDEV);
            }
            (Node::User(_), Node::Root) => {
                warn!(name, "refusing to move a file to the top level");
                return Err(Errno::EPERM);
            }
            _ => return Err(Errno::ENOTDIR),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let from = ObjectName::new(&from_user, name).map_err(|e| errno::from_name(&e))?;
        let to = ObjectName::new(&to_user, newname).map_err(|e| errno::from_name(&e))?;
        if from == to {
            return Ok(());
        }
        // Bytes written here but not uploaded move with the file.
        if let Some(ino) = self.inodes.lock().unwrap().find(&Node::File(from.clone())) {
            self.commit_ino(ino)?;
        }
        self.file_info(&from)?;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && self.exists(&to)? {
            return Err(Errno::EEXIST);
        }
        // Not atomic: copy (through a spool file, so a failed download never becomes a
        // partial object), then delete the old name. A crash in between leaves both.
        let spool = self.ctx.fetch(&from, None, false)?;
        let meta = self.ctx.upload(&to, &spool)?;
        drop(spool);
        if let Err(e) = self.ctx.block_on(self.ctx.client.delete(&from)) {
            warn!(%from, %to, error = %e, "rename: copied, but deleting the old name failed");
            return Err(errno::from_proto(&e));
        }
        {
            let mut c = self.cache.lock().unwrap();
            c.remove_file(from.user(), from.file());
            c.put_file(to.user(), to.file(), FileInfo::from(&meta), Instant::now());
        }
        self.inodes
            .lock()
            .unwrap()
            .rename(&Node::File(from), &Node::File(to));
        Ok(())
    }

    /// Blocks (total, free, available) in 4 KiB units and the object count.
    fn statfs(&self) -> Result<[u64; 4], Errno> {
        if let Some((at, v)) = *self.statfs.lock().unwrap() {
            if at.elapsed() < STATFS_TTL {
                return Ok(v);
            }
        }
        let st = self.ctx.block_on(self.ctx.client.status()).map_err(|e| {
            warn!(error = %e, "status failed");
            errno::from_proto(&e)
        })?;
        let replicas = u64::from(st.replicas.max(1));
        let (mut total, mut free, mut objects) = (0u64, 0u64, 0u64);
        for s in st.servers.iter().filter(|s| s.id.is_some()) {
            if let Some(d) = &s.stats {
                total += d.disk_total;
                free += d.disk_free;
                objects += d.objects;
            }
        }
        let v = [
            total / replicas / 4096,
            free / replicas / 4096,
            free / replicas / 4096,
            objects / replicas,
        ];
        *self.statfs.lock().unwrap() = Some((Instant::now(), v));
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
        self.0.inodes.lock().unwrap().forget(ino.0, nlookup);
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
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.0.setattr(ino.0, size, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&self.0.ttl, &attr),
            Err(e) => reply.error(reply_err("setattr", e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.0.mkdir(parent.0, name) {
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
        let h = self.0.handles.lock().unwrap().remove(&fh.0);
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
            self.0.dirs.lock().unwrap().get(&fh.0).cloned()
        };
        let entries = match snap {
            Some(s) => s,
            None => match self.0.readdir_entries(ino.0) {
                Ok(v) => {
                    let v = Arc::new(v);
                    self.0.dirs.lock().unwrap().insert(fh.0, v.clone());
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
        self.0.dirs.lock().unwrap().remove(&fh.0);
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
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.0.create(parent.0, name, flags) {
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
