//! The data path: upload, server-side copy, download, stat, delete (listings: [`crate::listing`]).
//!
//! Reads consult every live member of the partition's replica set (its owners plus any
//! server a queued move is bringing in), take the newest version (tombstones included, so a
//! delete beats an older copy), and first make lagging members whole (see
//! [`crate::repair::make_whole`]) before answering. Writes go to every live member, with
//! stand-ins (handoffs) for members that are down, and succeed only when at least
//! `replicas` servers hold the new version durably.

use std::sync::Arc;
use std::time::Duration;

use oss_proto::ring::DevId;
use oss_proto::wire::{
    Attrs, Chunk, Connection, Error, ObjectMeta, PutDecision, Response, StorageRequest,
    UploadTrailer, WireError, CHUNK,
};
use oss_proto::ObjectName;
use tracing::{debug, info, warn};

use crate::backend::unexpected;
use crate::cluster::{Member, Proxy};

/// How long the proxy waits for the next piece of a client's upload.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a handler tells the connection loop.
pub struct Outcome {
    /// Already written to the client (streamed answers) when `None`.
    pub resp: Option<Response>,
    /// The connection is no longer in a known state (an upload failed mid-body).
    pub close: bool,
}

impl Outcome {
    fn answer(r: Response) -> Self {
        Outcome {
            resp: Some(r),
            close: false,
        }
    }
    fn fail(e: WireError) -> Self {
        Outcome {
            resp: Some(Response::Error(e)),
            close: false,
        }
    }
    fn fail_and_close(e: WireError) -> Self {
        Outcome {
            resp: Some(Response::Error(e)),
            close: true,
        }
    }
    fn streamed() -> Self {
        Outcome {
            resp: None,
            close: false,
        }
    }
}

struct Target {
    member: Member,
    conn: Option<Connection>,
}

pub async fn upload(
    proxy: &Arc<Proxy>,
    client: &mut Connection,
    name: ObjectName,
    size: Option<u64>,
    attrs: Attrs,
) -> Outcome {
    if let Err(e) = attrs.validate() {
        // The body that follows is not read: the connection cannot be reused.
        return Outcome::fail_and_close(WireError::InvalidAttrs(e));
    }
    match put(proxy, &name, size, attrs, &mut ClientBody(client)).await {
        Ok(meta) => Outcome::answer(Response::Stored(meta)),
        Err(PutError::Source(e) | PutError::Early(e)) => Outcome::fail_and_close(e),
        Err(PutError::Done(e)) => Outcome::fail(e),
    }
}

/// Where the bytes of a write come from: a client's upload body (either door) or a
/// replica's answer to a `Get` (a copy). [`put`] reads it chunk by chunk, then asks for the
/// MD5 the bytes must have.
pub trait BodySource {
    /// The next piece of the body into `buf` (at most [`CHUNK`] bytes), or its end.
    fn chunk(
        &mut self,
        proxy: &Proxy,
        buf: &mut Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Chunk, WireError>> + Send;
    /// After [`Chunk::End`]: the MD5 the bytes must have (the writer's, checked by every
    /// storage server before it commits).
    fn trailer(
        &mut self,
    ) -> impl std::future::Future<Output = Result<UploadTrailer, WireError>> + Send;
}

/// A native client's upload body, then its [`UploadTrailer`].
struct ClientBody<'a>(&'a mut Connection);

impl BodySource for ClientBody<'_> {
    async fn chunk(&mut self, _: &Proxy, buf: &mut Vec<u8>) -> Result<Chunk, WireError> {
        match tokio::time::timeout(CLIENT_TIMEOUT, self.0.read_chunk(buf)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                debug!(error = %e, "client upload stream broke");
                Err(e.to_wire())
            }
            Err(_) => Err(WireError::Unavailable("client stalled".into())),
        }
    }

    async fn trailer(&mut self) -> Result<UploadTrailer, WireError> {
        match tokio::time::timeout(CLIENT_TIMEOUT, self.0.expect_header()).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(e.to_wire()),
            Err(_) => Err(WireError::Unavailable("client stalled".into())),
        }
    }
}

/// A storage server's answer to a `Get` (a copy): of a whole version, whose MD5 is known,
/// or of a range of it, hashed here on its way (the blocks were checked by the server).
struct ReplicaBody<'a> {
    conn: &'a mut Connection,
    md5: Result<[u8; 16], md5::Md5>,
}

impl BodySource for ReplicaBody<'_> {
    async fn chunk(&mut self, proxy: &Proxy, buf: &mut Vec<u8>) -> Result<Chunk, WireError> {
        let c = proxy
            .backends
            .read_chunk(self.conn, buf)
            .await
            .map_err(|e| e.to_wire())?;
        if let (Chunk::Data(n), Err(h)) = (&c, &mut self.md5) {
            md5::Digest::update(h, &buf[..*n]);
        }
        Ok(c)
    }

    async fn trailer(&mut self) -> Result<UploadTrailer, WireError> {
        let md5 = match &self.md5 {
            Ok(m) => *m,
            Err(h) => md5::Digest::finalize(h.clone()).into(),
        };
        Ok(UploadTrailer { md5: Some(md5) })
    }
}

/// A write that did not happen, and how far the source was read.
#[derive(Debug)]
pub enum PutError {
    /// Reading the source failed (a client went away, a replica sent a bad block).
    Source(WireError),
    /// The targets failed before the source was read to its end.
    Early(WireError),
    /// The source was read to its end; the write was refused or did not reach enough
    /// replicas.
    Done(WireError),
}

/// Writes a new version of `name` from `src` to every write target (stand-ins for those
/// that are down) and answers once `replicas` of them hold it durably with the MD5 the
/// source announced: the one write path of uploads and server-side copies.
pub async fn put<S: BodySource>(
    proxy: &Arc<Proxy>,
    name: &ObjectName,
    size: Option<u64>,
    attrs: Attrs,
    src: &mut S,
) -> Result<ObjectMeta, PutError> {
    // Before and after: totals counted while it runs are not kept.
    proxy.containers.touch(name.user());
    let r = put_once(proxy, name, size, attrs, src).await;
    proxy.containers.touch(name.user());
    r
}

async fn put_once<S: BodySource>(
    proxy: &Arc<Proxy>,
    name: &ObjectName,
    size: Option<u64>,
    attrs: Attrs,
    src: &mut S,
) -> Result<ObjectMeta, PutError> {
    let timestamp = proxy.next_timestamp();
    let (part, members) = proxy.write_targets(name);
    let need = proxy.replicas();
    let mut targets: Vec<Target> = Vec::new();
    let mut tried: Vec<DevId> = Vec::new();
    let mut candidates = members;
    // Open a Put on every target; a target that cannot be reached is replaced by a stand-in.
    while let Some(m) = candidates.pop() {
        tried.push(m.id);
        let put = StorageRequest::Put {
            name: name.clone(),
            part,
            timestamp,
            size,
            attrs: attrs.clone(),
        };
        let opened = async {
            let mut c = proxy.backends.conn(&m.addr).await?;
            c.write_header(&put).await?;
            Ok::<_, Error>(c)
        }
        .await;
        match opened {
            Ok(c) => targets.push(Target {
                member: m,
                conn: Some(c),
            }),
            Err(e) => {
                warn!(server = %m.addr, error = %e, "upload target unreachable, trying a stand-in");
                if let Some(h) = proxy.replacement(part, &tried) {
                    candidates.push(h);
                }
            }
        }
    }
    if targets.len() < need {
        return Err(PutError::Early(WireError::Unavailable(format!(
            "only {} of {need} storage servers reachable for {name}",
            targets.len()
        ))));
    }
    // Stream the source's body to every target.
    let mut buf = Vec::with_capacity(CHUNK);
    let mut total = 0u64;
    loop {
        match src.chunk(proxy, &mut buf).await.map_err(PutError::Source)? {
            Chunk::Data(n) => {
                total += n as u64;
                for t in targets.iter_mut() {
                    if let Some(c) = t.conn.as_mut() {
                        let r = proxy.backends.streamed(c.write_data(&buf[..n])).await;
                        if let Err(e) = r {
                            warn!(server = %t.member.addr, error = %e, "replica failed during upload");
                            proxy.backends.failed(&t.member.addr, &e);
                            t.conn = None;
                        }
                    }
                }
                // One replica left is enough to go on: the upload is completed to `need`
                // replicas from it before it is acknowledged (below).
                if targets.iter().all(|t| t.conn.is_none()) {
                    return Err(PutError::Early(WireError::Unavailable(format!(
                        "lost every storage server while uploading {name}"
                    ))));
                }
            }
            Chunk::End => break,
            Chunk::Abort(e) => return Err(PutError::Source(e)),
        }
    }
    let trailer = src.trailer().await.map_err(PutError::Source)?;
    if let Some(s) = size {
        if s != total {
            return Err(PutError::Done(WireError::BadRequest(format!(
                "upload announced {s} bytes but sent {total}"
            ))));
        }
    }
    for t in targets.iter_mut() {
        if let Some(c) = t.conn.as_mut() {
            let r = proxy
                .backends
                .streamed(async {
                    c.write_end().await?;
                    c.write_header(&trailer).await?;
                    c.flush().await
                })
                .await;
            if let Err(e) = r {
                proxy.backends.failed(&t.member.addr, &e);
                t.conn = None;
            }
        }
    }
    let mut stored = 0usize;
    let mut last_err = None;
    let md5 = match trailer.md5 {
        Some(m) => m,
        None => {
            let (md5, n) =
                prepare(proxy, name, timestamp, need, &mut targets, &mut last_err).await?;
            stored = n;
            md5
        }
    };
    // Collect the answers: the servers fsync in parallel.
    let mut mismatch = None;
    let mut holders: Vec<Member> = Vec::new();
    // A replica already holds a newer version: this write is overwritten, and making that
    // newer version durable is its own writer's business.
    let mut superseded = stored > 0;
    for t in targets.iter_mut() {
        let Some(mut c) = t.conn.take() else { continue };
        match proxy.backends.committed(c.read_response()).await {
            Ok(Response::Stored(m)) if m.md5 == md5 => {
                stored += 1;
                holders.push(t.member.clone());
                proxy.backends.put_back(&t.member.addr, c);
            }
            // A newer version got there first: this write is already superseded.
            Err(Error::Remote(WireError::Stale { current })) => {
                proxy.observe_timestamp(current);
                if clock_went_back(timestamp, current) {
                    return Err(PutError::Done(clock_error(name)));
                }
                stored += 1;
                superseded = true;
                proxy.backends.put_back(&t.member.addr, c);
            }
            Err(Error::Remote(e @ WireError::Md5Mismatch { .. })) => mismatch = Some(e),
            Ok(other) => last_err = Some(unexpected(other).to_wire()),
            Err(e) => {
                proxy.backends.failed(&t.member.addr, &e);
                last_err = Some(e.to_wire());
            }
        }
    }
    let meta = ObjectMeta {
        name: name.clone(),
        size: total,
        md5,
        timestamp,
        deleted: false,
        attrs,
    };
    if let Some(e) = mismatch {
        return Err(PutError::Done(e));
    }
    if superseded {
        return Ok(meta);
    }
    // Servers lost mid-upload (or refusing it: a full disk): their replicas are made on
    // stand-ins from a committed one, as if those servers had been down from the start;
    // the upload is acknowledged only once `need` replicas are durable.
    if stored < need && !holders.is_empty() {
        stored += complete_replicas(proxy, &meta, part, &holders, &mut tried, need - stored).await;
    }
    if stored >= need {
        return Ok(meta);
    }
    Err(PutError::Done(WireError::Unavailable(format!(
        "{name} stored on {stored} of {need} replicas{}",
        last_err.map(|e| format!(" ({e})")).unwrap_or_default()
    ))))
}

/// Copies the version `holders` just committed to other servers (the partition's own
/// first, else stand-ins) until `missing` more hold it; each destination checks the bytes
/// against the version's MD5. Returns how many copies were made.
async fn complete_replicas(
    proxy: &Arc<Proxy>,
    meta: &ObjectMeta,
    part: u32,
    holders: &[Member],
    tried: &mut Vec<DevId>,
    missing: usize,
) -> usize {
    let mut made = 0;
    while made < missing {
        let Some(to) = proxy.replacement(part, tried) else {
            break;
        };
        tried.push(to.id);
        for from in holders {
            match crate::repair::copy_object(proxy, meta, part, &from.addr, &to.addr).await {
                Ok(_) => {
                    info!(name = %meta.name, from = %from.addr, to = %to.addr,
                        "completed a replica the upload lost");
                    made += 1;
                    break;
                }
                Err(e) => {
                    warn!(name = %meta.name, from = %from.addr, to = %to.addr, error = %e,
                        "could not complete a lost replica")
                }
            }
        }
    }
    made
}

/// The first half of a write whose writer named no MD5: every target has written the body
/// and answers the MD5 of what it got (`Prepared`); if those that answered agree, they are
/// told to commit, otherwise every one drops it. When one was lost on the way, the one that
/// answered commits and the caller completes the missing replicas from it (copies checked
/// against that MD5), as for an upload with an MD5; the writer gets the MD5 back (a Swift
/// client compares it with its own). Returns the agreed MD5 and how many targets were
/// superseded.
async fn prepare(
    proxy: &Arc<Proxy>,
    name: &ObjectName,
    timestamp: oss_proto::Timestamp,
    need: usize,
    targets: &mut [Target],
    last_err: &mut Option<WireError>,
) -> Result<([u8; 16], usize), PutError> {
    let mut agreed: Option<[u8; 16]> = None;
    let mut differ = false;
    let mut superseded = 0usize;
    for t in targets.iter_mut() {
        let Some(c) = t.conn.as_mut() else { continue };
        match proxy.backends.committed(c.read_response()).await {
            Ok(Response::Prepared { md5 }) => match agreed {
                None => agreed = Some(md5),
                Some(a) if a != md5 => differ = true,
                Some(_) => {}
            },
            Err(Error::Remote(WireError::Stale { current })) => {
                proxy.observe_timestamp(current);
                if clock_went_back(timestamp, current) {
                    return Err(PutError::Done(clock_error(name)));
                }
                superseded += 1;
                if let Some(c) = t.conn.take() {
                    proxy.backends.put_back(&t.member.addr, c);
                }
            }
            Ok(other) => {
                *last_err = Some(unexpected(other).to_wire());
                t.conn = None;
            }
            Err(e) => {
                proxy.backends.failed(&t.member.addr, &e);
                *last_err = Some(e.to_wire());
                t.conn = None;
            }
        }
    }
    let prepared = targets.iter().filter(|t| t.conn.is_some()).count();
    let commit = !differ && agreed.is_some() && prepared >= 1;
    for t in targets.iter_mut() {
        let Some(c) = t.conn.as_mut() else { continue };
        let r = proxy
            .backends
            .streamed(async {
                c.write_header(&PutDecision { commit }).await?;
                c.flush().await
            })
            .await;
        if r.is_err() || !commit {
            // A dropped upload gets no answer: the connection is not reused.
            t.conn = None;
        }
    }
    if differ {
        warn!(%name, "storage servers received different bytes for one upload; none kept");
        return Err(PutError::Done(WireError::Unavailable(format!(
            "the storage servers received different bytes for {name}; nothing was stored, retry"
        ))));
    }
    match agreed {
        Some(md5) if commit => Ok((md5, superseded)),
        // Every target holds a newer version already: the write was superseded before
        // any server said what it got, so there is no MD5 to answer with.
        None if superseded >= need => Err(PutError::Done(WireError::Unavailable(format!(
            "{name} was overwritten by a newer write while this one was stored"
        )))),
        _ => Err(PutError::Done(WireError::Unavailable(format!(
            "{name} written on {prepared} of {need} replicas{}",
            last_err
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )))),
    }
}

/// Server-side copy: streams `src`'s newest version from one of its replicas into a new
/// version of `dst` (every destination checks the MD5 against the source's stored one). A
/// source replica that fails mid-stream is replaced by the next one, from the start.
/// `attrs: None` keeps the source's; copying a name onto itself with new attributes is how
/// metadata changes (Swift's POST as a copy).
pub async fn copy(
    proxy: &Arc<Proxy>,
    src: ObjectName,
    dst: ObjectName,
    attrs: Option<Attrs>,
) -> Outcome {
    match copy_object(proxy, &src, &dst, attrs, None).await {
        Ok(meta) => Outcome::answer(Response::Stored(meta)),
        Err(e) => Outcome::fail(e),
    }
}

/// [`copy`], answering the new version; `range` (offset, length) copies those bytes only.
pub async fn copy_object(
    proxy: &Arc<Proxy>,
    src: &ObjectName,
    dst: &ObjectName,
    attrs: Option<Attrs>,
    range: Option<(u64, u64)>,
) -> Result<ObjectMeta, WireError> {
    if let Some(Err(e)) = attrs.as_ref().map(Attrs::validate) {
        return Err(WireError::InvalidAttrs(e));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match copy_once(proxy, src, dst, attrs.clone(), range).await {
            // Overwritten between choosing its version and reading it: start over.
            Err(WireError::Stale { .. }) if attempt < RACE_RETRIES => continue,
            r => return r,
        }
    }
}

async fn copy_once(
    proxy: &Arc<Proxy>,
    src: &ObjectName,
    dst: &ObjectName,
    attrs: Option<Attrs>,
    range: Option<(u64, u64)>,
) -> Result<ObjectMeta, WireError> {
    let whole = open_read(proxy, src).await?;
    let meta = whole.meta.clone();
    let (offset, len) = range.unwrap_or((0, meta.size));
    if offset.checked_add(len).is_none_or(|end| end > meta.size) {
        return Err(WireError::BadRequest(format!(
            "bytes {offset}+{len} are beyond the end of {src} ({} bytes)",
            meta.size
        )));
    }
    let attrs = attrs.unwrap_or_else(|| meta.attrs.clone());
    let mut last_err = WireError::Unavailable(format!("no replica of {src} could be read"));
    for holder in &whole.holders {
        let get = StorageRequest::Get {
            name: src.clone(),
            part: whole.part,
            offset,
            len: Some(len),
            timestamp: Some(meta.timestamp),
        };
        let mut c = match proxy.backends.open_get(&holder.addr, &get).await {
            Ok(c) => c,
            Err(Error::Remote(e @ WireError::Stale { .. })) => return Err(e),
            Err(e) => {
                last_err = e.to_wire();
                continue;
            }
        };
        let mut source = ReplicaBody {
            conn: &mut c,
            md5: if len == meta.size {
                Ok(meta.md5)
            } else {
                Err(md5::Md5::default())
            },
        };
        match put(proxy, dst, Some(len), attrs.clone(), &mut source).await {
            Ok(m) => {
                proxy.backends.put_back(&holder.addr, c);
                debug!(%src, %dst, bytes = m.size, "copied");
                return Ok(m);
            }
            // The source broke mid-stream (a bad block, a dead server): try the next one.
            Err(PutError::Source(err)) => {
                warn!(%src, server = %holder.addr, error = %err, "copy source failed; trying another replica");
                if matches!(err, WireError::Corrupt(_)) {
                    let (p, n) = (proxy.clone(), src.clone());
                    tokio::spawn(async move {
                        if let Err(e) = crate::repair::make_whole(&p, &n).await {
                            warn!(name = %n, error = %e, "repair after a bad read failed");
                        }
                    });
                }
                last_err = err;
            }
            Err(PutError::Early(e) | PutError::Done(e)) => return Err(e),
        }
    }
    Err(last_err)
}

pub async fn stat(proxy: &Arc<Proxy>, name: ObjectName) -> Outcome {
    match open_read(proxy, &name).await {
        Ok(r) => Outcome::answer(Response::Object {
            meta: r.meta,
            offset: 0,
            len: 0,
        }),
        Err(e) => Outcome::fail(e),
    }
}

/// Times a download starts over when the object was overwritten between choosing its
/// version and opening it (before any byte went to the client).
pub const RACE_RETRIES: usize = 8;

/// The newest live version of an object, once its replicas were made whole, and who holds
/// it: what a read streams from.
#[derive(Debug, Clone)]
pub struct Readable {
    pub meta: ObjectMeta,
    part: u32,
    holders: Vec<Member>,
}

/// Makes `name` whole (see [`crate::repair::make_whole`]) and chooses the version to read;
/// `NotFound` for an absent or deleted object.
pub async fn open_read(proxy: &Arc<Proxy>, name: &ObjectName) -> Result<Readable, WireError> {
    let whole = crate::repair::make_whole(proxy, name).await?;
    match whole.newest {
        Some(meta) if meta.is_live_at(oss_proto::wire::now_micros()) => Ok(Readable {
            meta,
            part: whole.part,
            holders: whole.holders,
        }),
        _ => Err(WireError::NotFound),
    }
}

/// The client of a streamed read went away.
#[derive(Debug)]
pub struct Gone;

/// Where a read's bytes go: a native client's connection, or an HTTP response body.
pub trait Sink {
    /// Called once, before the first byte, when a replica answered: the read will happen.
    fn start(
        &mut self,
        meta: &ObjectMeta,
        offset: u64,
        len: u64,
    ) -> impl std::future::Future<Output = Result<(), Gone>> + Send;
    fn data(&mut self, bytes: &[u8]) -> impl std::future::Future<Output = Result<(), Gone>> + Send;
    /// Every byte was sent.
    fn end(&mut self) -> impl std::future::Future<Output = Result<(), Gone>> + Send;
    /// No replica could send the rest: the reader must not take what it got as whole.
    fn abort(&mut self, e: WireError)
        -> impl std::future::Future<Output = Result<(), Gone>> + Send;
}

/// Why a streamed read ended early.
#[derive(Debug)]
pub enum StreamError {
    /// Before [`Sink::start`]: nothing was sent, the error can still be answered.
    Before(WireError),
    /// After it: the sink was aborted (or its client went away).
    During,
}

/// Streams `len` bytes from `offset` of the version `r` names into `sink`, from one replica
/// after the other: a replica that fails (a bad block, a dead server) is left at the offset
/// it reached and the next one resumes there. Bad replicas are repaired in the background.
pub async fn stream<K: Sink>(
    proxy: &Arc<Proxy>,
    r: &Readable,
    offset: u64,
    len: u64,
    sink: &mut K,
) -> Result<(), StreamError> {
    let (meta, name) = (&r.meta, &r.meta.name);
    if offset.checked_add(len).is_none_or(|end| end > meta.size) {
        return Err(StreamError::Before(WireError::BadRequest(format!(
            "bytes {offset}+{len} are beyond the end of {name} ({} bytes)",
            meta.size
        ))));
    }
    let mut sent = 0u64;
    let mut started = false;
    let mut bad: Vec<Member> = Vec::new();
    let mut last_err = WireError::Unavailable(format!("no replica of {name} could be read"));
    let mut stale = None;
    let mut buf = Vec::with_capacity(CHUNK);
    for src in &r.holders {
        let req = StorageRequest::Get {
            name: name.clone(),
            part: r.part,
            offset: offset + sent,
            len: Some(len - sent),
            timestamp: Some(meta.timestamp),
        };
        let mut c = match proxy.backends.open_get(&src.addr, &req).await {
            Ok(c) => c,
            // Overwritten since the version was chosen: another holder may not have the
            // new version yet and still serve this one whole; if none does, the caller
            // chooses again.
            Err(Error::Remote(e @ WireError::Stale { .. })) if !started => {
                stale = Some(e);
                continue;
            }
            Err(e) => {
                if matches!(
                    e,
                    Error::Remote(WireError::Corrupt(_)) | Error::Remote(WireError::NotFound)
                ) {
                    bad.push(src.clone());
                }
                last_err = e.to_wire();
                continue;
            }
        };
        if !started {
            sink.start(meta, offset, len)
                .await
                .map_err(|Gone| StreamError::During)?;
            started = true;
        }
        let mut finished = false;
        loop {
            match proxy.backends.read_chunk(&mut c, &mut buf).await {
                Ok(Chunk::Data(n)) => {
                    sink.data(&buf[..n])
                        .await
                        .map_err(|Gone| StreamError::During)?;
                    sent += n as u64;
                }
                Ok(Chunk::End) => {
                    finished = true;
                    break;
                }
                Ok(Chunk::Abort(e)) => {
                    warn!(server = %src.addr, %name, offset = offset + sent, error = %e, "replica failed mid-download; resuming from another");
                    if matches!(e, WireError::Corrupt(_)) {
                        bad.push(src.clone());
                    }
                    last_err = e;
                    break;
                }
                Err(e) => {
                    warn!(server = %src.addr, %name, error = %e, "replica stream broke; resuming from another");
                    proxy.backends.failed(&src.addr, &e);
                    last_err = e.to_wire();
                    break;
                }
            }
        }
        if finished {
            proxy.backends.put_back(&src.addr, c);
            if sent == len {
                break;
            }
        }
    }
    if !bad.is_empty() {
        // The bad replica was quarantined by its server; put a good copy back.
        let p = proxy.clone();
        let n = name.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::repair::make_whole(&p, &n).await {
                warn!(name = %n, error = %e, "repair after a bad read failed");
            }
        });
    }
    if !started {
        return Err(StreamError::Before(stale.unwrap_or(last_err)));
    }
    if sent == len {
        sink.end().await.map_err(|Gone| StreamError::During)
    } else {
        let _ = sink.abort(last_err).await;
        Err(StreamError::During)
    }
}

/// A native client's download: the object's header, its chunks, then `END` or `ABORT`.
struct ClientSink<'a>(&'a mut Connection);

impl Sink for ClientSink<'_> {
    async fn start(&mut self, meta: &ObjectMeta, offset: u64, len: u64) -> Result<(), Gone> {
        let hdr = Response::Object {
            meta: meta.clone(),
            offset,
            len,
        };
        self.0.write_header(&hdr).await.map_err(|_| Gone)
    }
    async fn data(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        self.0.write_data(bytes).await.map_err(|_| Gone)
    }
    async fn end(&mut self) -> Result<(), Gone> {
        self.0.write_end().await.map_err(|_| Gone)?;
        self.0.flush().await.map_err(|_| Gone)
    }
    async fn abort(&mut self, e: WireError) -> Result<(), Gone> {
        self.0.write_abort(e).await.map_err(|_| Gone)?;
        self.0.flush().await.map_err(|_| Gone)
    }
}

pub async fn download(
    proxy: &Arc<Proxy>,
    client: &mut Connection,
    name: ObjectName,
    offset: u64,
    len: Option<u64>,
) -> Outcome {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = match open_read(proxy, &name).await {
            Ok(r) => r,
            Err(e) => return Outcome::fail(e),
        };
        if offset > r.meta.size {
            return Outcome::fail(WireError::BadRequest(format!(
                "offset {offset} is beyond the end of {name} ({} bytes)",
                r.meta.size
            )));
        }
        let len = len.unwrap_or(u64::MAX).min(r.meta.size - offset);
        match stream(proxy, &r, offset, len, &mut ClientSink(client)).await {
            Ok(()) => return Outcome::streamed(),
            // Overwritten between choosing its version and opening it: start over.
            Err(StreamError::Before(WireError::Stale { .. })) if attempt < RACE_RETRIES => continue,
            Err(StreamError::Before(e)) => return Outcome::fail(e),
            Err(StreamError::During) => {
                return Outcome {
                    resp: None,
                    close: true,
                }
            }
        }
    }
}

pub async fn delete(proxy: &Arc<Proxy>, name: ObjectName) -> Outcome {
    match delete_object(proxy, &name).await {
        Ok(existed) => Outcome::answer(Response::Deleted { existed }),
        Err(e) => Outcome::fail(e),
    }
}

/// Writes a tombstone for `name` on every write target; answers whether a live version
/// existed on any of them.
pub async fn delete_object(proxy: &Arc<Proxy>, name: &ObjectName) -> Result<bool, WireError> {
    proxy.containers.touch(name.user());
    let r = delete_once(proxy, name).await;
    proxy.containers.touch(name.user());
    r
}

async fn delete_once(proxy: &Arc<Proxy>, name: &ObjectName) -> Result<bool, WireError> {
    let timestamp = proxy.next_timestamp();
    let (part, members) = proxy.write_targets(name);
    let need = proxy.replicas();
    let mut tried: Vec<DevId> = members.iter().map(|m| m.id).collect();
    let mut done = 0usize;
    let mut existed = false;
    let mut last_err = None;
    // Every target at once; a target that fails is replaced by a stand-in, in turn.
    let mut round = members;
    while !round.is_empty() {
        let mut tasks = tokio::task::JoinSet::new();
        for m in round.drain(..) {
            let p = proxy.clone();
            let req = StorageRequest::Delete {
                name: name.clone(),
                part,
                timestamp,
            };
            tasks.spawn(async move { p.backends.call(&m.addr, &req).await });
        }
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(Response::Deleted { existed: e })) => {
                    done += 1;
                    existed |= e;
                }
                Ok(Err(Error::Remote(WireError::Stale { current }))) => {
                    proxy.observe_timestamp(current);
                    if clock_went_back(timestamp, current) {
                        return Err(clock_error(name));
                    }
                    done += 1
                }
                Ok(Ok(other)) => last_err = Some(unexpected(other).to_wire()),
                Ok(Err(e)) => {
                    last_err = Some(e.to_wire());
                    failed += 1;
                }
                Err(e) => last_err = Some(WireError::Internal(e.to_string())),
            }
        }
        for _ in 0..failed {
            if let Some(h) = proxy.replacement(part, &tried) {
                tried.push(h.id);
                round.push(h);
            }
        }
    }
    if done >= need {
        Ok(existed)
    } else {
        Err(WireError::Unavailable(format!(
            "{name} deleted on {done} of {need} replicas{}",
            last_err.map(|e| format!(" ({e})")).unwrap_or_default()
        )))
    }
}

/// A replica holds a version stamped later than this write *and* later than the proxy's
/// clock says it is now: not a concurrent newer write but a clock that moved backwards
/// (the proxy restarted on a machine whose clock was set back). Counting the write as
/// superseded would lose it silently.
fn clock_went_back(ours: oss_proto::Timestamp, theirs: oss_proto::Timestamp) -> bool {
    theirs > ours && theirs > oss_proto::wire::now_micros()
}

fn clock_error(name: &ObjectName) -> WireError {
    WireError::Unavailable(format!(
        "{name} has a version stamped in the future (the proxy's clock moved backwards); \
         later writes are stamped after it, retry"
    ))
}

pub async fn list_users(proxy: &Arc<Proxy>) -> Outcome {
    match user_names(proxy).await {
        Ok(u) => Outcome::answer(Response::Users(u)),
        Err(e) => Outcome::fail(e),
    }
}

/// Every user that has files on a storage server that answered, and every container made
/// through the Swift door, sorted.
pub async fn user_names(proxy: &Arc<Proxy>) -> Result<Vec<String>, WireError> {
    let mut users = std::collections::BTreeSet::new();
    let mut failed = 0;
    for m in proxy.listing_servers() {
        match proxy
            .backends
            .call(&m.addr, &StorageRequest::ListUsers)
            .await
        {
            Ok(Response::Users(u)) => users.extend(u),
            Ok(_) | Err(_) => failed += 1,
        }
    }
    if failed >= proxy.replicas() {
        return Err(WireError::Unavailable(format!(
            "{failed} storage servers did not answer"
        )));
    }
    users.extend(proxy.containers.names());
    Ok(users.into_iter().collect())
}
