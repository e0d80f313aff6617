//! One function per [`StorageRequest`].
//!
//! A handler answers request-level failures as a [`Response::Error`] and keeps the
//! connection; it returns `Err` only when the connection itself is broken or out of step
//! (I/O error, malformed frame, timeout, aborted upload), and then the caller closes it.
//!
//! Blocking file work runs on tokio's blocking pool. Put spools the body into 1 MiB buffers
//! and hands them to one blocking writer per upload (so the socket is read while the disk
//! writes); a body that fits in one buffer is written, synced and committed in a single
//! blocking call. Get reads 1 MiB pieces (whole verified blocks) and prefetches the next
//! piece while the current one is sent.

use std::sync::Arc;
use std::time::Instant;

use oss_proto::wire::{
    Attrs, Chunk, Connection, DiskStats, Error as WireIoError, ListQuery, PutDecision, Response,
    StorageRequest, UploadTrailer,
};
use oss_proto::{ObjectName, Timestamp, WireError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::Span;

use crate::error::StoreError;
use crate::server::Ctx;
use crate::store::{Announced, Body, BodyWriter, Store, BLOCK};

type ConnResult<T = ()> = Result<T, WireIoError>;

/// Bytes handed to the disk writer at a time: big writes, few wake-ups.
const SPOOL: usize = 1 << 20;
/// Buffers queued for the writer: the socket can run this far ahead of the disk.
const WRITER_QUEUE: usize = 2;
/// Blocks per Get read (1 MiB): one pread and one blocking call per piece.
const READ_BLOCKS: u64 = 16;

/// The tracing span of one request, with its fields.
pub fn span(req: &StorageRequest) -> Span {
    use tracing::info_span;
    match req {
        StorageRequest::Put {
            name,
            part,
            timestamp,
            size,
            ..
        } => info_span!("put", %name, part, ts = timestamp, size = ?size),
        StorageRequest::Get {
            name,
            part,
            offset,
            len,
            timestamp,
        } => info_span!("get", %name, part, offset, len = ?len, ts = ?timestamp),
        StorageRequest::Head { name, part } => info_span!("head", %name, part),
        StorageRequest::Delete {
            name,
            part,
            timestamp,
        } => info_span!("delete", %name, part, ts = timestamp),
        StorageRequest::Check { name, part } => info_span!("check", %name, part),
        StorageRequest::List(q) => {
            info_span!("list", user = %q.user, prefix = %q.prefix, marker = %q.marker)
        }
        StorageRequest::ListUsers => info_span!("list_users"),
        StorageRequest::ListPartition { part } => info_span!("list_partition", part),
        StorageRequest::DropPartition { part } => info_span!("drop_partition", part),
        StorageRequest::Ping => info_span!("ping"),
        StorageRequest::Audit => info_span!("audit"),
        StorageRequest::TakeQuarantined => info_span!("take_quarantined"),
        StorageRequest::ListPartitions => info_span!("list_partitions"),
        StorageRequest::DropVersions { part, versions } => {
            info_span!("drop_versions", part, n = versions.len())
        }
        StorageRequest::Digests { from } => info_span!("digests", from),
    }
}

pub async fn handle(ctx: &Ctx, conn: &mut Connection, req: StorageRequest) -> ConnResult {
    let started = Instant::now();
    let answer = match req {
        StorageRequest::Put {
            name,
            part,
            timestamp,
            size,
            attrs,
        } => put(ctx, conn, name, part, timestamp, size, attrs).await?,
        StorageRequest::Get {
            name,
            offset,
            len,
            timestamp,
            ..
        } => return get(ctx, conn, name, offset, len, timestamp).await,
        StorageRequest::Head { name, .. } => head(ctx, &name),
        StorageRequest::Delete {
            name,
            part,
            timestamp,
        } => delete(ctx, name, part, timestamp).await,
        StorageRequest::Check { name, .. } => check(ctx, name).await,
        StorageRequest::List(q) => list(ctx, &q),
        StorageRequest::ListUsers => Ok(Response::Users(ctx.store.users())),
        StorageRequest::ListPartition { part } => {
            return pages(ctx, conn, ctx.store.list_partition(part)).await
        }
        StorageRequest::DropPartition { part } => drop_partition(ctx, part).await,
        StorageRequest::Ping => ping(ctx).await,
        StorageRequest::Audit => ctx.auditor.run_pass().await.map(Response::Audited),
        StorageRequest::TakeQuarantined => Ok(Response::Quarantined(ctx.store.take_quarantined())),
        StorageRequest::ListPartitions => Ok(Response::Partitions(ctx.store.partitions())),
        StorageRequest::DropVersions { part, versions } => drop_versions(ctx, part, versions).await,
        StorageRequest::Digests { from } => {
            let (digests, more) = ctx.store.digests(from, oss_proto::wire::DIGEST_PAGE);
            Ok(Response::Digests { digests, more })
        }
    };
    reply(ctx, conn, answer, started).await
}

/// Sends a one-header answer and logs the outcome.
async fn reply(
    ctx: &Ctx,
    conn: &mut Connection,
    answer: Result<Response, StoreError>,
    started: Instant,
) -> ConnResult {
    let elapsed_us = started.elapsed().as_micros() as u64;
    let resp = match answer {
        Ok(r) => {
            tracing::debug!(elapsed_us, "done");
            r
        }
        Err(e) => {
            log_failure(&e, elapsed_us);
            Response::Error(e.into())
        }
    };
    send(ctx, conn, &resp).await
}

fn log_failure(e: &StoreError, elapsed_us: u64) {
    match e {
        StoreError::NotFound
        | StoreError::Stale { .. }
        | StoreError::BadRequest(_)
        | StoreError::Invalid(_) => {
            tracing::debug!(elapsed_us, error = %e, "refused")
        }
        StoreError::Md5Mismatch { .. } | StoreError::Corrupt(_) => {
            tracing::warn!(elapsed_us, error = %e, "refused")
        }
        _ => tracing::error!(elapsed_us, error = %e, "failed"),
    }
}

async fn send(ctx: &Ctx, conn: &mut Connection, resp: &Response) -> ConnResult {
    timeout(ctx.cfg.frame_timeout, async {
        conn.write_header(resp).await?;
        conn.flush().await
    })
    .await
    .map_err(|_| WireIoError::Timeout)?
}

/// Runs blocking store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Internal(format!("blocking task failed: {e}")))?
}

fn head(ctx: &Ctx, name: &ObjectName) -> Result<Response, StoreError> {
    if let Some(ts) = ctx.store.lost_version(name) {
        return Err(StoreError::Corrupt(format!(
            "{name}: this replica (version {ts}) was quarantined"
        )));
    }
    let e = ctx.store.lookup(name).ok_or(StoreError::NotFound)?;
    Ok(Response::Object {
        meta: e.meta,
        offset: 0,
        len: 0,
    })
}

async fn delete(
    ctx: &Ctx,
    name: ObjectName,
    part: u32,
    ts: Timestamp,
) -> Result<Response, StoreError> {
    let existed = blocking(ctx, move |s| s.delete(&name, part, ts)).await?;
    Ok(Response::Deleted { existed })
}

async fn check(ctx: &Ctx, name: ObjectName) -> Result<Response, StoreError> {
    let state = blocking(ctx, move |s| s.check(&name)).await?;
    // A storage server reports only itself; the proxy fills in the address.
    Ok(Response::Checked(vec![(String::new(), state)]))
}

async fn drop_partition(ctx: &Ctx, part: u32) -> Result<Response, StoreError> {
    let n = blocking(ctx, move |s| s.drop_partition(part)).await?;
    tracing::info!(removed = n, "partition dropped");
    Ok(Response::Ok)
}

async fn drop_versions(
    ctx: &Ctx,
    part: u32,
    versions: Vec<(ObjectName, Timestamp)>,
) -> Result<Response, StoreError> {
    for (name, _) in &versions {
        Store::check_part(name, part)?;
    }
    let asked = versions.len();
    let n = blocking(ctx, move |s| s.drop_versions(part, &versions)).await?;
    tracing::info!(asked, removed = n, "handed-back versions dropped");
    Ok(Response::Ok)
}

async fn ping(ctx: &Ctx) -> Result<Response, StoreError> {
    let (disk_total, disk_free) = blocking(ctx, |s| s.disk_space()).await?;
    let (objects, bytes) = ctx.store.live();
    Ok(Response::Pong(DiskStats {
        objects,
        bytes,
        disk_total,
        disk_free,
        audit: ctx.auditor.stats(),
    }))
}

fn list(ctx: &Ctx, q: &ListQuery) -> Result<Response, StoreError> {
    let limit = q.validate().map_err(StoreError::Invalid)?;
    let (items, truncated) = ctx.store.list(q, limit);
    tracing::debug!(items = items.len(), truncated, "listed");
    Ok(Response::Page { items, truncated })
}

/// Sends a listing as pages of at most `LIST_PAGE` entries (always at least one page).
async fn pages(
    ctx: &Ctx,
    conn: &mut Connection,
    entries: Vec<oss_proto::ObjectMeta>,
) -> ConnResult {
    use oss_proto::wire::LIST_PAGE;
    let total = entries.len();
    let mut it = entries.into_iter().peekable();
    loop {
        let page: Vec<_> = it.by_ref().take(LIST_PAGE).collect();
        let more = it.peek().is_some();
        timeout(
            ctx.cfg.frame_timeout,
            conn.write_header(&Response::Listing {
                entries: page,
                more,
            }),
        )
        .await
        .map_err(|_| WireIoError::Timeout)??;
        if !more {
            break;
        }
    }
    tracing::debug!(entries = total, "listed");
    timeout(ctx.cfg.frame_timeout, conn.flush())
        .await
        .map_err(|_| WireIoError::Timeout)?
}

/// The blocking writer of one upload: receives full buffers, returns them for reuse.
struct Spool {
    tx: mpsc::Sender<Vec<u8>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    task: JoinHandle<Result<Body, StoreError>>,
}

impl Spool {
    fn start(store: Arc<Store>, name: ObjectName) -> Spool {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITER_QUEUE);
        let (back_tx, back) = std::sync::mpsc::channel();
        let task = tokio::task::spawn_blocking(move || {
            let tmp = store
                .create_temp(&name)
                .map_err(|e| StoreError::io("creating a temp file", e))?;
            let mut w = BodyWriter::new(tmp);
            while let Some(mut buf) = rx.blocking_recv() {
                w.write(&buf)
                    .map_err(|e| StoreError::io("writing a temp file", e))?;
                buf.clear();
                let _ = back_tx.send(buf);
            }
            // Dropping this result (the upload failed meanwhile) removes the temp file.
            Ok(w.finish())
        });
        Spool { tx, back, task }
    }

    /// Queues a full buffer; fails with the writer's error if it stopped.
    async fn send(&mut self, buf: Vec<u8>) -> Result<(), StoreError> {
        if self.tx.send(buf).await.is_ok() {
            return Ok(());
        }
        match (&mut self.task).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(StoreError::Internal("the writer stopped early".into())),
            Err(e) => Err(StoreError::Internal(format!("the writer failed: {e}"))),
        }
    }

    /// An empty buffer for the next spool, reused when one came back.
    fn buffer(&self) -> Vec<u8> {
        self.back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(SPOOL))
    }

    async fn finish(mut self, last: Vec<u8>) -> Result<Body, StoreError> {
        if !last.is_empty() {
            self.send(last).await?;
        }
        drop(self.tx);
        self.task
            .await
            .map_err(|e| StoreError::Internal(format!("the writer failed: {e}")))?
    }
}

/// Reads a Put body and its trailer and stores it. Something that makes the upload pointless
/// (stale, too long, disk error) stops the writing, but the body is still read to its end so
/// the connection stays in step; only then is the refusal sent.
async fn put(
    ctx: &Ctx,
    conn: &mut Connection,
    name: ObjectName,
    part: u32,
    ts: Timestamp,
    size: Option<u64>,
    attrs: Attrs,
) -> ConnResult<Result<Response, StoreError>> {
    let t = ctx.cfg.frame_timeout;
    let mut refusal: Option<StoreError> = Store::check_part(&name, part)
        .and_then(|()| ctx.store.check_newer(&name, ts))
        .and_then(|()| {
            attrs
                .validate()
                .map_err(|e| StoreError::Invalid(WireError::InvalidAttrs(e)))
        })
        .err();
    // A large upload that cannot fit is refused before it fills the disk (the writes would
    // fail with ENOSPC anyway, later, and starve everyone else meanwhile).
    if let (None, Some(n)) = (&refusal, size.filter(|&n| n >= SPOOL as u64)) {
        if let Ok((_, free)) = ctx.store.disk_space() {
            if free < n {
                refusal = Some(StoreError::DiskFull { needed: n, free });
            }
        }
    }
    let mut spool: Option<Spool> = None;
    let mut acc: Vec<u8> = Vec::new();
    let mut frame: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    loop {
        let chunk = timeout(t, conn.read_chunk(&mut frame))
            .await
            .map_err(|_| WireIoError::Timeout)??;
        match chunk {
            Chunk::Data(n) => {
                total += n as u64;
                if refusal.is_some() {
                    continue;
                }
                if let Some(s) = size.filter(|&s| total > s) {
                    refusal = Some(StoreError::BadRequest(format!(
                        "body is longer than the announced {s} bytes"
                    )));
                    spool = None;
                    acc = Vec::new();
                    continue;
                }
                // Hand full buffers to the writer; a buffer never grows past SPOOL.
                if !acc.is_empty() && acc.len() + n > SPOOL {
                    if let Err(e) = spool_out(ctx, &mut spool, &mut acc, &name).await {
                        refusal = Some(e);
                        continue;
                    }
                }
                if acc.capacity() == 0 {
                    acc.reserve_exact(SPOOL);
                }
                acc.extend_from_slice(&frame[..n]);
                if acc.len() >= SPOOL {
                    if let Err(e) = spool_out(ctx, &mut spool, &mut acc, &name).await {
                        refusal = Some(e);
                    }
                }
            }
            Chunk::End => break,
            Chunk::Abort(e) => {
                // The sender gave up: drop what was written (the spool's temp file goes with
                // it), say so, and close: whether the sender reads this answer is not ours
                // to know, and a closed connection cannot be mistaken for a later answer.
                drop(spool);
                tracing::info!(error = %e, bytes = total, "upload aborted by the sender");
                let msg = format!("upload aborted by the sender: {e}");
                send(
                    ctx,
                    conn,
                    &Response::Error(WireError::BadRequest(msg.clone())),
                )
                .await?;
                return Err(WireIoError::Protocol(msg));
            }
        }
    }
    let trailer: UploadTrailer = timeout(t, conn.expect_header())
        .await
        .map_err(|_| WireIoError::Timeout)??;
    if let Some(e) = refusal {
        return Ok(Err(e));
    }
    // The body in a temp file (small bodies are written in one blocking call).
    let body = match spool {
        None => {
            let n = name.clone();
            blocking(ctx, move |s| s.write_temp(&n, part, ts, &acc)).await
        }
        Some(sp) => sp.finish(acc).await,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let md5 = match trailer.md5 {
        Some(m) => m,
        // The writer named no MD5: say what arrived, and commit only on the proxy's word
        // (it compares the replicas). Dropping `body` drops its temp file.
        None => {
            send(ctx, conn, &Response::Prepared { md5: body.md5 }).await?;
            let d: PutDecision = timeout(t, conn.expect_header())
                .await
                .map_err(|_| WireIoError::Timeout)??;
            if !d.commit {
                tracing::info!(%name, "prepared upload dropped by the proxy");
                return Err(WireIoError::Protocol("upload dropped".into()));
            }
            body.md5
        }
    };
    let committed = blocking(ctx, move |s| {
        s.finish_put(
            body,
            &name,
            part,
            ts,
            Announced::with_attrs(size, md5, attrs),
        )
    })
    .await;
    Ok(committed.map(|c| Response::Stored(c.meta)))
}

/// Sends `acc` to the upload's writer (starting it on the first full buffer) and leaves an
/// empty buffer in its place. On failure the writer is gone and its temp file with it.
async fn spool_out(
    ctx: &Ctx,
    spool: &mut Option<Spool>,
    acc: &mut Vec<u8>,
    name: &ObjectName,
) -> Result<(), StoreError> {
    let sp = spool.get_or_insert_with(|| Spool::start(ctx.store.clone(), name.clone()));
    let next = sp.buffer();
    let full = std::mem::replace(acc, next);
    if let Err(e) = sp.send(full).await {
        *spool = None;
        *acc = Vec::new();
        return Err(e);
    }
    Ok(())
}

/// The byte range of the piece that starts at `pos`: up to the end of its group of
/// `READ_BLOCKS` blocks, so every later piece starts on a block boundary.
fn piece_len(pos: u64, end: u64) -> u64 {
    let boundary = (pos / BLOCK + READ_BLOCKS) * BLOCK;
    boundary.min(end) - pos
}

async fn get(
    ctx: &Ctx,
    conn: &mut Connection,
    name: ObjectName,
    offset: u64,
    len: Option<u64>,
    want: Option<Timestamp>,
) -> ConnResult {
    let started = Instant::now();
    let opened = blocking(ctx, move |s| {
        let r = s.open_read(&name, want)?;
        let size = r.meta.size;
        if offset > size {
            return Err(StoreError::BadRequest(format!(
                "offset {offset} is past the end of {name} ({size} bytes)"
            )));
        }
        let len = len.unwrap_or(u64::MAX).min(size - offset);
        let first = r
            .read_range(offset, piece_len(offset, offset + len))
            .map_err(|e| s.read_failed(&r, e))?;
        Ok((Arc::new(r), len, first))
    })
    .await;
    let (reader, len, first) = match opened {
        Ok(x) => x,
        // Nothing sent yet: a corrupt first piece is a plain error answer.
        Err(e) => return reply(ctx, conn, Err(e), started).await,
    };
    let t = ctx.cfg.frame_timeout;
    let resp = Response::Object {
        meta: reader.meta.clone(),
        offset,
        len,
    };
    timeout(t, conn.write_header(&resp))
        .await
        .map_err(|_| WireIoError::Timeout)??;
    let end = offset + len;
    let mut pos = offset + first.len() as u64;
    let mut cur = first;
    loop {
        // Read the next piece while this one goes out.
        let next = (pos < end).then(|| {
            let r = reader.clone();
            let store = ctx.store.clone();
            let n = piece_len(pos, end);
            tokio::task::spawn_blocking(move || {
                r.read_range(pos, n).map_err(|e| store.read_failed(&r, e))
            })
        });
        timeout(t, conn.write_data(&cur))
            .await
            .map_err(|_| WireIoError::Timeout)??;
        let Some(next) = next else { break };
        let got = next
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))
            .and_then(|r| r);
        match got {
            Ok(buf) => {
                pos += buf.len() as u64;
                cur = buf;
            }
            Err(e) => {
                log_failure(&e, started.elapsed().as_micros() as u64);
                timeout(t, async {
                    conn.write_abort(e.into()).await?;
                    conn.flush().await
                })
                .await
                .map_err(|_| WireIoError::Timeout)??;
                return Ok(());
            }
        }
    }
    timeout(t, async {
        conn.write_end().await?;
        conn.flush().await
    })
    .await
    .map_err(|_| WireIoError::Timeout)??;
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        bytes = len,
        "done"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_align_to_blocks_after_the_first() {
        assert_eq!(piece_len(0, 10), 10);
        assert_eq!(piece_len(5, 100 << 20), 16 * BLOCK - 5);
        assert_eq!(piece_len(16 * BLOCK, 100 << 20), 16 * BLOCK);
        assert_eq!(piece_len(BLOCK + 3, BLOCK + 4), 1);
    }
}
