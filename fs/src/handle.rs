//! Open files: the write spool and the read-ahead stream of one handle.
//!
//! A handle opened for writing keeps the file's new contents in a *spool*: an unnamed temp
//! file in the cache directory (`$TMPDIR` or `--cache-dir`), never in memory. Opening an
//! existing file for writing does not fetch it at once: O_TRUNC only arrives afterwards as a
//! `setattr(size=0)`, so the spool is filled (streamed from the proxy) at the first write,
//! read or partial truncate that needs the old bytes. `flush`/`fsync` upload the spool when
//! the handle is dirty.
//!
//! A handle that reads from the proxy answers the first read with a range read of exactly
//! what the kernel asked for (so `head -c 100` of a huge file moves a few KiB). A read that
//! continues where the previous one ended starts a streaming download from that offset;
//! later sequential reads are served from it, so `cp` out does not pay one round trip per
//! 128 KiB. At most [`STREAM_BUF`] bytes are in flight per stream.
//!
//! A file written from its start in order (`cp` in, `dd`, `echo >`) is also streamed to the
//! proxy *while* it is written ([`LiveUpload`]), so `close()` waits only for the tail and not
//! for a second pass over the whole file. Each such write goes to the spool (with O_DIRECT
//! when it is aligned and the file system allows: nobody reads those bytes back unless the
//! upload fails, so they need not fill the page cache) and into a bounded in-memory queue
//! the upload takes them from. A write that finds the queue full waits for the upload, at
//! most `HANDOFF_WAIT`; after that the upload reads the bytes back from the spool, so a
//! stalled proxy never stalls the writer for long. If a write goes anywhere but the end, or
//! the file is truncated, the live upload is abandoned (the proxy discards it, it never
//! becomes an object) and `flush` uploads the spool as usual.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fuser::Errno;
use oss_proto::client::Client;
use oss_proto::wire::Attrs;
use oss_proto::{ObjectMeta, ObjectName, Timestamp, WireError};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::attrs;
use crate::errno;

/// Locks a mutex even if a thread panicked while holding it: one panic must not make every
/// later request on the mount fail.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes buffered between the proxy and a sequential reader: enough to keep the connection
/// busy while the kernel comes back for the next 128–256 KiB, small enough that many open
/// readers stay within a few tens of MiB.
pub const STREAM_BUF: usize = 2 << 20;
/// How far ahead of a stream a read may land and still be served by skipping forward (the
/// kernel's async reads can arrive slightly out of order when several threads serve them).
const MAX_SKIP: u64 = 4 << 20;

/// What every part of the driver needs to reach the proxy and the spool directory.
pub struct Ctx {
    pub client: Arc<Client>,
    pub rt: tokio::runtime::Handle,
    pub cache_dir: PathBuf,
    /// With a user's key, the one user directory this mount may reach (`None`: the admin
    /// key, every user).
    pub only_user: Option<String>,
}

impl Ctx {
    /// EACCES for a top-level name this mount's key may not reach.
    pub fn may_reach(&self, user: &str) -> Result<(), fuser::Errno> {
        match &self.only_user {
            Some(own) if own != user => Err(fuser::Errno::EACCES),
            _ => Ok(()),
        }
    }

    /// Runs a proxy call from a FUSE thread (FUSE threads are not runtime threads).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn new_spool(&self) -> Result<Spool, Errno> {
        let file = tempfile::tempfile_in(&self.cache_dir).map_err(|e| {
            warn!(dir = %self.cache_dir.display(), error = %e, "cannot create a spool file");
            errno::from_io(&e)
        })?;
        Ok(Spool {
            file: Arc::new(file),
            size: 0,
        })
    }

    /// Streams the object (its first `len` bytes if given) into a new spool. A missing
    /// object gives an empty spool when `missing_ok`.
    pub fn fetch(
        &self,
        name: &ObjectName,
        len: Option<u64>,
        missing_ok: bool,
    ) -> Result<Spool, Errno> {
        let mut spool = self.new_spool()?;
        let f = spool.file.try_clone().map_err(|e| errno::from_io(&e))?;
        let mut w = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(f));
        let r = self.block_on(async {
            let r = self
                .client
                .download(name, 0, len, &mut w, &mut |_| {})
                .await;
            // A failed download leaves w unflushed; the spool is dropped anyway.
            r
        });
        match r {
            Ok(_) => {}
            Err(oss_proto::Error::Remote(WireError::NotFound)) if missing_ok => {}
            Err(e) => {
                warn!(%name, error = %e, "download into the spool failed");
                return Err(errno::from_proto(&e));
            }
        }
        drop(w);
        spool.size = spool.file.metadata().map_err(|e| errno::from_io(&e))?.len();
        Ok(spool)
    }

    /// Uploads a spool as `name` with `attrs`, streaming it from the start.
    pub fn upload(
        &self,
        name: &ObjectName,
        spool: &Spool,
        attrs: Attrs,
    ) -> Result<ObjectMeta, Errno> {
        let mut f = spool.file.try_clone().map_err(|e| errno::from_io(&e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| errno::from_io(&e))?;
        let mut r = tokio::io::BufReader::with_capacity(1 << 20, tokio::fs::File::from_std(f));
        self.block_on(self.client.upload_replayable(
            name,
            Some(spool.size),
            attrs,
            &mut r,
            &mut |_| {},
        ))
        .map_err(|e| {
            warn!(%name, size = spool.size, error = %e, "upload failed");
            errno::from_proto(&e)
        })
    }
}

/// The local copy of a file being written.
pub struct Spool {
    file: Arc<File>,
    size: u64,
}

impl Spool {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn write_at(&mut self, data: &[u8], off: u64) -> Result<(), Errno> {
        self.file
            .write_all_at(data, off)
            .map_err(|e| errno::from_io(&e))?;
        self.size = self.size.max(off + data.len() as u64);
        Ok(())
    }

    pub fn read_at(&self, off: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let end = self.size.min(off.saturating_add(u64::from(len)));
        if off >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - off) as usize];
        self.file
            .read_exact_at(&mut buf, off)
            .map_err(|e| errno::from_io(&e))?;
        Ok(buf)
    }

    pub fn set_len(&mut self, n: u64) -> Result<(), Errno> {
        self.file.set_len(n).map_err(|e| errno::from_io(&e))?;
        self.size = n;
        Ok(())
    }
}

/// Where a handle's bytes come from.
pub enum Data {
    /// Read-only: reads go to the proxy.
    Remote,
    /// Opened for writing; the old contents are fetched when first needed.
    Unloaded,
    Loaded(Spool),
}

pub struct State {
    pub data: Data,
    /// The spool differs from what the proxy holds: the next flush uploads it.
    pub dirty: bool,
    pub ra: ReadAhead,
    /// A write-through upload fed by sequential writes (see [`LiveUpload`]).
    pub live: Option<LiveUpload>,
}

/// What a handle will store with the bytes at its next upload. Under its own small lock,
/// never held across a proxy call, so `stat` of a file being uploaded does not wait.
#[derive(Debug, Clone, Default)]
pub struct FileMeta {
    /// The attributes of the version this handle started from (or last uploaded).
    pub base: Attrs,
    /// Mode set by `create` or `chmod`, stored at the next upload.
    pub mode: Option<u32>,
    /// Modification time (ns) set explicitly since the last write (`touch -d`, `cp -p`).
    pub mtime: Option<u64>,
    /// Access time (ns) set explicitly (`touch -a`, `cp -p`); a write keeps it (writes do
    /// not change the access time).
    pub atime: Option<u64>,
    /// When the last write arrived (ns), until the next upload.
    pub last_write: Option<u64>,
    /// The write timestamp (µs) of this handle's last upload.
    pub stored_at: Option<Timestamp>,
}

impl FileMeta {
    pub fn new(base: Attrs) -> Self {
        FileMeta {
            base,
            ..FileMeta::default()
        }
    }

    /// The attributes of the next upload: the base's, with the mode and an explicitly set
    /// time. A time set before the last write is gone (the write changed the file); then
    /// the object's own write timestamp is the file's time. The access time (stored in the
    /// base or set since) stays.
    pub fn upload_attrs(&self) -> Attrs {
        let mut a = self.base.clone();
        a.meta.remove(Attrs::MTIME);
        if let Some(t) = self.mtime {
            attrs::set_mtime_ns(&mut a, t);
        }
        if let Some(t) = self.atime {
            attrs::set_atime_ns(&mut a, t);
        }
        if let Some(m) = self.mode {
            a.set_mode(m);
        }
        a
    }

    /// What `stat` shows of the file while this handle has it: the explicit time, the
    /// last write, the stored time, the last upload's timestamp, or now (ns).
    pub fn shown_mtime_ns(&self) -> u64 {
        self.mtime
            .or(self.last_write)
            .or_else(|| attrs::mtime_ns(&self.base))
            .or(self.stored_at.map(|us| us.saturating_mul(1000)))
            .unwrap_or_else(attrs::now_ns)
    }

    /// A write (or truncate) changed the bytes now: that is the file's time from here on.
    pub fn touched(&mut self) {
        self.mtime = None;
        self.last_write = Some(attrs::now_ns());
    }

    /// After an upload (or a copy onto itself): what is stored is the new base.
    pub fn uploaded(&mut self, stored: &Attrs, timestamp: Timestamp) {
        self.base = stored.clone();
        self.mode = None;
        self.mtime = None;
        self.atime = None;
        self.last_write = None;
        self.stored_at = Some(timestamp);
    }
}

/// One open file. The per-handle lock serializes the operations of this handle only (it may
/// be held across a proxy call); the global tables are never locked across one.
pub struct Handle {
    pub ino: u64,
    pub writable: bool,
    pub append: bool,
    pub state: Mutex<State>,
    pub meta: Mutex<FileMeta>,
    /// Size of the spool while there is one, readable without the handle's lock so that
    /// `stat` does not wait behind an upload.
    spooled: AtomicBool,
    spool_size: AtomicU64,
}

impl Handle {
    pub fn new(
        ino: u64,
        writable: bool,
        append: bool,
        data: Data,
        dirty: bool,
        meta: FileMeta,
    ) -> Self {
        let h = Handle {
            ino,
            writable,
            append,
            meta: Mutex::new(meta),
            state: Mutex::new(State {
                data: Data::Remote,
                dirty,
                ra: ReadAhead::default(),
                live: None,
            }),
            spooled: AtomicBool::new(false),
            spool_size: AtomicU64::new(0),
        };
        h.set_data(&mut lock(&h.state), data);
        h
    }

    pub fn file_meta(&self) -> std::sync::MutexGuard<'_, FileMeta> {
        lock(&self.meta)
    }

    /// The spool's size, if this handle has one.
    pub fn pending_size(&self) -> Option<u64> {
        self.spooled
            .load(Ordering::Acquire)
            .then(|| self.spool_size.load(Ordering::Acquire))
    }

    pub fn set_data(&self, st: &mut State, data: Data) {
        st.data = data;
        self.sync_size(st);
    }

    /// Publishes the spool size after a change (call with the state locked).
    pub fn sync_size(&self, st: &State) {
        match &st.data {
            Data::Loaded(s) => {
                self.spool_size.store(s.size, Ordering::Release);
                self.spooled.store(true, Ordering::Release);
            }
            _ => self.spooled.store(false, Ordering::Release),
        }
    }

    /// The spool, fetched from the proxy first if needed.
    pub fn loaded<'a>(
        &self,
        ctx: &Ctx,
        st: &'a mut State,
        name: &ObjectName,
    ) -> Result<&'a mut Spool, Errno> {
        if matches!(st.data, Data::Unloaded | Data::Remote) {
            let spool = ctx.fetch(name, None, true)?;
            self.set_data(st, Data::Loaded(spool));
        }
        match &mut st.data {
            Data::Loaded(s) => Ok(s),
            _ => unreachable!("just loaded"),
        }
    }

    /// Truncates or extends to `n` bytes (O_TRUNC, ftruncate, `truncate -s`).
    pub fn truncate(
        &self,
        ctx: &Ctx,
        st: &mut State,
        name: &ObjectName,
        n: u64,
    ) -> Result<(), Errno> {
        st.live = None;
        if n == 0 && !matches!(st.data, Data::Loaded(_)) {
            // Nothing of the old contents survives: don't fetch them.
            self.set_data(st, Data::Loaded(ctx.new_spool()?));
        } else {
            self.loaded(ctx, st, name)?.set_len(n)?;
        }
        st.dirty = true;
        self.sync_size(st);
        Ok(())
    }
}

/// Sequential-read detection and the streaming download that serves it.
#[derive(Default)]
pub struct ReadAhead {
    stream: Option<Stream>,
    /// Bytes a stream skipped over to reach a read that came early; the read they belong to
    /// is usually next.
    gap: Vec<u8>,
    gap_off: u64,
    /// Where the previous read ended.
    last_end: Option<u64>,
}

struct Stream {
    pos: u64,
    rd: DuplexStream,
    task: Option<JoinHandle<oss_proto::wire::Result<ObjectMeta>>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Stream {
    fn start(ctx: &Ctx, name: &ObjectName, pos: u64) -> Stream {
        let (rd, mut wr) = tokio::io::duplex(STREAM_BUF);
        let client = ctx.client.clone();
        let name = name.clone();
        let task = ctx.rt.spawn(async move {
            client
                .download(&name, pos, None, &mut wr, &mut |_| {})
                .await
        });
        Stream {
            pos,
            rd,
            task: Some(task),
        }
    }

    /// Up to `n` bytes; fewer only at the end of the object.
    async fn read(&mut self, n: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            let k = self.rd.read(&mut buf[filled..]).await.map_err(|e| {
                warn!(error = %e, "read-ahead stream broke");
                Errno::EIO
            })?;
            if k == 0 {
                // The download ended: at the end of the object, or on an error.
                if let Some(t) = self.task.take() {
                    match t.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            warn!(error = %e, "streaming download failed");
                            return Err(errno::from_proto(&e));
                        }
                        Err(e) => {
                            warn!(error = %e, "streaming download task failed");
                            return Err(Errno::EIO);
                        }
                    }
                }
                break;
            }
            filled += k;
        }
        buf.truncate(filled);
        self.pos += filled as u64;
        Ok(buf)
    }
}

impl ReadAhead {
    pub fn read(
        &mut self,
        ctx: &Ctx,
        name: &ObjectName,
        off: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let want = u64::from(size);
        let gap_end = self.gap_off + self.gap.len() as u64;
        if off >= self.gap_off && off + want <= gap_end {
            let s = (off - self.gap_off) as usize;
            return Ok(self.gap[s..s + size as usize].to_vec());
        }
        let usable = self
            .stream
            .as_ref()
            .is_some_and(|s| off >= s.pos && off - s.pos <= MAX_SKIP);
        if !usable {
            self.stream = None;
            if off > 0 && self.last_end == Some(off) {
                self.stream = Some(Stream::start(ctx, name, off));
            } else {
                let data = match ctx.block_on(ctx.client.read_range(name, off, want)) {
                    Ok((_, data)) => data,
                    // The proxy refuses an offset past the end: the file shrank since the
                    // kernel learnt its size. That is end of file.
                    Err(oss_proto::Error::Remote(WireError::BadRequest(_))) => Vec::new(),
                    Err(e) => {
                        warn!(%name, off, size, error = %e, "range read failed");
                        return Err(errno::from_proto(&e));
                    }
                };
                self.last_end = Some(off + data.len() as u64);
                return Ok(data);
            }
        }
        let s = self.stream.as_mut().expect("usable stream");
        let old_gap = (self.gap_off, std::mem::take(&mut self.gap));
        let r = ctx.block_on(async {
            if off > s.pos {
                let gap_off = s.pos;
                let gap = s.read((off - s.pos) as usize).await?;
                if s.pos < off {
                    // The object ends before `off`.
                    return Ok((gap_off, gap, Vec::new()));
                }
                Ok((gap_off, gap, s.read(size as usize).await?))
            } else {
                Ok((old_gap.0, old_gap.1, s.read(size as usize).await?))
            }
        });
        let (gap_off, gap, data) = match r {
            Ok(v) => v,
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        };
        self.gap_off = gap_off;
        self.gap = gap;
        if data.len() < size as usize {
            // End of the object: the stream is done.
            self.stream = None;
        }
        self.last_end = Some(off + data.len() as u64);
        Ok(data)
    }
}

/// What a live upload may read of its spool, shared between the writes that fill it and the
/// upload task that sends it.
#[derive(Default)]
struct FeedState {
    /// Bytes of the spool written in order from offset 0: the upload may read up to here.
    avail: u64,
    /// No more bytes will come: the upload ends at `avail`.
    end: bool,
    /// The handle gave up on this upload: the upload must fail, never end.
    abandoned: bool,
    waker: Option<std::task::Waker>,
    /// The latest writes, in order (with gaps where one found no room), also kept in memory
    /// so the upload takes them from here rather than reading the spool back (at most
    /// [`HANDOFF_MAX`] bytes).
    chunks: std::collections::VecDeque<Chunk>,
    queued: usize,
    /// Buffers the upload is done with, for the next writes (reused memory is cheap to fill).
    free: Vec<Vec<u8>>,
    /// A write waits for room in `chunks`.
    writer_waiting: bool,
}

#[derive(Default)]
struct FeedShared {
    st: Mutex<FeedState>,
    /// Signalled when the upload frees room in `chunks`.
    room: Condvar,
}

/// Bytes of recent writes held in memory for the upload. A write that finds no room waits
/// for the upload (at most [`HANDOFF_WAIT`]): the writes cannot finish sooner than the upload
/// anyway, and bytes the upload takes from memory need not be read back from the spool.
const HANDOFF_MAX: usize = 16 << 20;
/// How long a write waits for room before it leaves its bytes to the spool only (a stalled
/// proxy must not stall the writer).
const HANDOFF_WAIT: Duration = Duration::from_secs(1);
/// Alignment of the buffers written to the spool with O_DIRECT.
const DIRECT_ALIGN: usize = 4096;

/// A copy of one write's bytes: `buf[start..start + len]`, `start` aligned for O_DIRECT.
struct Chunk {
    off: u64,
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

type Feed = Arc<FeedShared>;

fn feed_update(feed: &Feed, f: impl FnOnce(&mut FeedState)) {
    let waker = {
        let mut st = lock(&feed.st);
        f(&mut st);
        st.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

/// An upload in progress, fed by the writes of one handle as they arrive: it takes their
/// bytes from memory (`FeedState::chunks`), or from the spool when it lags behind.
pub struct LiveUpload {
    feed: Feed,
    task: Option<JoinHandle<oss_proto::wire::Result<ObjectMeta>>>,
    /// Bytes handed to the upload so far: the next write must start here to be appended.
    pub sent: u64,
    name: ObjectName,
    /// What the upload stores with the bytes (sent before them, in its header).
    attrs: Attrs,
    /// The spool opened with O_DIRECT (when its file system allows): aligned writes go
    /// straight to disk instead of filling the page cache with bytes nobody reads again
    /// unless the upload fails.
    direct: Option<File>,
}

impl Drop for LiveUpload {
    fn drop(&mut self) {
        // Without the end, the reader fails and the client drops the connection without
        // finishing the body: the proxy never stores a partial object.
        feed_update(&self.feed, |st| st.abandoned = true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl LiveUpload {
    /// Starts uploading `spool` as `name`; the upload sends the spool's bytes as
    /// [`LiveUpload::append`] makes them available.
    pub fn start(ctx: &Ctx, name: &ObjectName, spool: &Spool, attrs: Attrs) -> LiveUpload {
        let feed = Feed::default();
        let client = ctx.client.clone();
        let task_name = name.clone();
        let mut r = SpoolReader {
            file: spool.file.clone(),
            feed: feed.clone(),
            pos: 0,
        };
        let task_attrs = attrs.clone();
        let task = ctx.rt.spawn(async move {
            client
                .upload_with(&task_name, None, task_attrs, &mut r, &mut |_| {})
                .await
        });
        LiveUpload {
            feed,
            task: Some(task),
            sent: 0,
            name: name.clone(),
            attrs,
            direct: open_direct(&spool.file),
        }
    }

    pub fn name(&self) -> &ObjectName {
        &self.name
    }

    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// Writes `data` at the end of what was sent (into the spool, and into memory for the
    /// upload). False when the upload has already failed: the bytes are in the spool anyway,
    /// and the caller abandons the upload.
    pub fn append(&mut self, spool: &mut Spool, data: &[u8]) -> Result<bool, Errno> {
        let off = self.sent;
        if self.task.as_ref().is_none_or(|t| t.is_finished()) {
            spool.write_at(data, off)?;
            return Ok(false);
        }
        let mut buf = {
            let mut st = lock(&self.feed.st);
            let deadline = Instant::now() + HANDOFF_WAIT;
            while st.queued + data.len() > HANDOFF_MAX && !st.abandoned {
                let now = Instant::now();
                if now >= deadline || self.task.as_ref().is_none_or(|t| t.is_finished()) {
                    break;
                }
                st.writer_waiting = true;
                let wait = (deadline - now).min(Duration::from_millis(50));
                st = self
                    .feed
                    .room
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            st.writer_waiting = false;
            st.free.pop().unwrap_or_default()
        };
        buf.clear();
        buf.reserve(data.len() + DIRECT_ALIGN);
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        buf.resize(start, 0);
        buf.extend_from_slice(data);
        let chunk = Chunk {
            off,
            buf,
            start,
            len: data.len(),
        };
        let aligned =
            off.is_multiple_of(DIRECT_ALIGN as u64) && data.len().is_multiple_of(DIRECT_ALIGN);
        let mut written = false;
        if let (true, Some(f)) = (aligned, &self.direct) {
            match f.write_all_at(chunk.bytes(), off) {
                Ok(()) => {
                    spool.size = spool.size.max(off + data.len() as u64);
                    written = true;
                }
                Err(e) => {
                    debug!(error = %e, "O_DIRECT write to the spool failed; writing buffered");
                    self.direct = None;
                }
            }
        }
        if !written {
            spool.write_at(data, off)?;
        }
        self.sent += data.len() as u64;
        let sent = self.sent;
        feed_update(&self.feed, |st| {
            st.avail = sent;
            if st.queued + chunk.len <= HANDOFF_MAX {
                st.queued += chunk.len;
                st.chunks.push_back(chunk);
            } else {
                st.free.push(chunk.buf);
            }
        });
        Ok(true)
    }

    /// Ends the body and waits for the proxy's answer.
    pub fn finish(mut self, ctx: &Ctx) -> Result<ObjectMeta, String> {
        let task = self.task.take().ok_or("already finished")?;
        feed_update(&self.feed, |st| st.end = true);
        ctx.block_on(async move {
            match task.await {
                Ok(Ok(meta)) => Ok(meta),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// The upload's view of the spool: the bytes written so far, then end of input only once the
/// handle says so; an abandoned upload is an error, so it can never look complete.
struct SpoolReader {
    file: Arc<File>,
    feed: Feed,
    pos: u64,
}

impl tokio::io::AsyncRead for SpoolReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let avail = {
            let mut st = lock(&self.feed.st);
            if st.abandoned {
                return Poll::Ready(Err(std::io::Error::other("write stream abandoned")));
            }
            if st.avail == self.pos {
                if st.end {
                    return Poll::Ready(Ok(()));
                }
                st.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            st.avail
        };
        let mut n = buf.remaining().min((avail - self.pos) as usize);
        let this = &mut *self;
        {
            // The bytes are in memory if the writes did not run too far ahead.
            let mut st = lock(&this.feed.st);
            let st = &mut *st;
            while let Some(c) = st.chunks.front() {
                let end = c.off + c.len as u64;
                if end > this.pos {
                    break;
                }
                st.queued -= c.len;
                let c = st.chunks.pop_front().expect("front");
                st.free.push(c.buf);
                if st.writer_waiting {
                    this.feed.room.notify_one();
                }
            }
            if let Some(c) = st.chunks.front() {
                if c.off <= this.pos {
                    let s = (this.pos - c.off) as usize;
                    let k = n.min(c.len - s);
                    buf.put_slice(&c.bytes()[s..s + k]);
                    this.pos += k as u64;
                    return Poll::Ready(Ok(()));
                }
                // Only the spool has the bytes before this chunk.
                n = n.min((c.off - this.pos) as usize);
            }
        }
        // Just written, so in the page cache (or on disk when written with O_DIRECT).
        let k = self.file.read_at(buf.initialize_unfilled_to(n), self.pos)?;
        if k == 0 {
            return Poll::Ready(Err(std::io::Error::other(
                "the spool shrank under the upload",
            )));
        }
        buf.advance(k);
        self.pos += k as u64;
        Poll::Ready(Ok(()))
    }
}

/// The spool opened a second time with O_DIRECT, if the file system supports it.
fn open_direct(file: &File) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .inspect_err(|e| debug!(error = %e, "no O_DIRECT for the spool"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn reader(data: &[u8]) -> (Feed, SpoolReader) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        let feed = Feed::default();
        let r = SpoolReader {
            file: Arc::new(f),
            feed: feed.clone(),
            pos: 0,
        };
        (feed, r)
    }

    #[test]
    fn file_meta_carries_mode_and_explicit_time_to_the_upload() {
        let mut base = Attrs::default();
        base.set_mode(0o100755);
        attrs::set_mtime_ns(&mut base, 5_000_000_000);
        let mut m = FileMeta::new(base);
        assert_eq!(m.shown_mtime_ns(), 5_000_000_000);
        // A write: the stored time is gone, the mode stays.
        m.touched();
        let a = m.upload_attrs();
        assert_eq!(a.mode(), Some(0o100755));
        assert_eq!(attrs::mtime_ns(&a), None);
        // A time set after the write is stored; a write after it drops it again.
        m.mtime = Some(7_000_000_123);
        assert_eq!(attrs::mtime_ns(&m.upload_attrs()), Some(7_000_000_123));
        assert_eq!(m.shown_mtime_ns(), 7_000_000_123);
        m.touched();
        assert_eq!(attrs::mtime_ns(&m.upload_attrs()), None);
        m.mode = Some(0o100600);
        let up = m.upload_attrs();
        assert_eq!(up.mode(), Some(0o100600));
        m.uploaded(&up, 42);
        assert_eq!(m.mode, None);
        assert_eq!(m.upload_attrs().mode(), Some(0o100600), "kept in the base");
        assert_eq!(m.shown_mtime_ns(), 42_000, "the upload's timestamp");
    }

    #[test]
    fn file_meta_keeps_an_explicit_atime_across_writes() {
        let mut base = Attrs::default();
        attrs::set_atime_ns(&mut base, 3_000_000_000);
        let mut m = FileMeta::new(base);
        m.touched();
        assert_eq!(
            attrs::atime_ns(&m.upload_attrs()),
            Some(3_000_000_000),
            "the stored atime survives a write"
        );
        m.atime = Some(9_000_000_009);
        m.touched();
        let up = m.upload_attrs();
        assert_eq!(
            attrs::atime_ns(&up),
            Some(9_000_000_009),
            "a write keeps it"
        );
        assert_eq!(attrs::mtime_ns(&up), None);
        m.uploaded(&up, 42);
        assert_eq!(m.atime, None);
        assert_eq!(
            attrs::atime_ns(&m.upload_attrs()),
            Some(9_000_000_009),
            "in the base"
        );
    }

    #[tokio::test]
    async fn live_upload_input_ends_only_at_end() {
        let (feed, mut r) = reader(b"abcdefgh");
        feed_update(&feed, |st| st.avail = 3);
        let mut buf = [0u8; 16];
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"abc");
        // Nothing more yet: the read waits for the next write (or the end).
        let pending = tokio::time::timeout(Duration::from_millis(50), r.read(&mut buf)).await;
        assert!(pending.is_err(), "must wait for more bytes or the end");
        let feed2 = feed.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            feed_update(&feed2, |st| st.avail = 6);
            feed_update(&feed2, |st| st.end = true);
        });
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"def", "only the bytes made available, then the end");
    }

    #[tokio::test]
    async fn abandoned_live_upload_is_an_error_not_a_short_file() {
        let (feed, mut r) = reader(b"abc");
        feed_update(&feed, |st| st.avail = 3);
        let feed2 = feed.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            feed_update(&feed2, |st| st.abandoned = true);
        });
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert!(!matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof
        ));
    }
}
