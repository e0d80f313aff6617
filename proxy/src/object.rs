//! The data path: upload, download, stat, delete and listings.
//!
//! Reads consult every live member of the partition's replica set (its owners plus any
//! server a queued move is bringing in), take the newest version (tombstones included, so a
//! delete beats an older copy), and first make lagging members whole (see
//! [`crate::repair::make_whole`]) before answering. Writes go to every live member, with
//! stand-ins (handoffs) for members that are down, and succeed only when at least
//! `replicas` servers hold the new version durably.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use oss_proto::ring::DevId;
use oss_proto::wire::{
    Chunk, Connection, Error, ObjectMeta, Response, StorageRequest, UploadTrailer, WireError,
    CHUNK, LIST_PAGE,
};
use oss_proto::ObjectName;
use tracing::{debug, warn};

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
) -> Outcome {
    let timestamp = proxy.next_timestamp();
    let (part, members) = proxy.write_targets(&name);
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
                if let Some(h) = proxy.stand_in(part, &tried) {
                    candidates.push(h);
                }
            }
        }
    }
    if targets.len() < need {
        return Outcome::fail_and_close(WireError::Unavailable(format!(
            "only {} of {need} storage servers reachable for {name}",
            targets.len()
        )));
    }
    // Stream the client's body to every target.
    let mut buf = Vec::with_capacity(CHUNK);
    let mut total = 0u64;
    loop {
        let chunk = match tokio::time::timeout(CLIENT_TIMEOUT, client.read_chunk(&mut buf)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(error = %e, "client upload stream broke");
                return Outcome::fail_and_close(e.to_wire());
            }
            Err(_) => {
                return Outcome::fail_and_close(WireError::Unavailable("client stalled".into()))
            }
        };
        match chunk {
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
                if targets.iter().filter(|t| t.conn.is_some()).count() < need {
                    return Outcome::fail_and_close(WireError::Unavailable(format!(
                        "lost storage servers while uploading {name}"
                    )));
                }
            }
            Chunk::End => break,
            Chunk::Abort(e) => return Outcome::fail_and_close(e),
        }
    }
    let trailer: UploadTrailer = match tokio::time::timeout(CLIENT_TIMEOUT, client.expect_header())
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Outcome::fail_and_close(e.to_wire()),
        Err(_) => return Outcome::fail_and_close(WireError::Unavailable("client stalled".into())),
    };
    if let Some(s) = size {
        if s != total {
            return Outcome::fail(WireError::BadRequest(format!(
                "upload announced {s} bytes but sent {total}"
            )));
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
    // Collect the answers: the servers fsync in parallel.
    let mut stored = 0usize;
    let mut mismatch = None;
    let mut last_err = None;
    for t in targets.iter_mut() {
        let Some(mut c) = t.conn.take() else { continue };
        match proxy.backends.committed(c.read_response()).await {
            Ok(Response::Stored(m)) if m.md5 == trailer.md5 => {
                stored += 1;
                proxy.backends.put_back(&t.member.addr, c);
            }
            // A newer version got there first: this write is already superseded.
            Err(Error::Remote(WireError::Stale { current })) => {
                proxy.observe_timestamp(current);
                if clock_went_back(timestamp, current) {
                    return Outcome::fail(clock_error(&name));
                }
                stored += 1;
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
    if stored >= need {
        return Outcome::answer(Response::Stored(ObjectMeta {
            name,
            size: total,
            md5: trailer.md5,
            timestamp,
            deleted: false,
        }));
    }
    if let Some(e) = mismatch {
        return Outcome::fail(e);
    }
    Outcome::fail(WireError::Unavailable(format!(
        "{name} stored on {stored} of {need} replicas{}",
        last_err.map(|e| format!(" ({e})")).unwrap_or_default()
    )))
}

pub async fn stat(proxy: &Arc<Proxy>, name: ObjectName) -> Outcome {
    match crate::repair::make_whole(proxy, &name).await {
        Ok(r) => match r.newest {
            Some(meta) if !meta.deleted => Outcome::answer(Response::Object {
                meta,
                offset: 0,
                len: 0,
            }),
            _ => Outcome::fail(WireError::NotFound),
        },
        Err(e) => Outcome::fail(e),
    }
}

/// Times a download starts over when the object was overwritten between choosing its
/// version and opening it (before any byte went to the client).
const RACE_RETRIES: usize = 3;

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
        match download_once(proxy, client, &name, offset, len).await {
            Outcome {
                resp: Some(Response::Error(WireError::Stale { .. })),
                ..
            } if attempt < RACE_RETRIES => continue,
            out => return out,
        }
    }
}

async fn download_once(
    proxy: &Arc<Proxy>,
    client: &mut Connection,
    name: &ObjectName,
    offset: u64,
    len: Option<u64>,
) -> Outcome {
    let name = name.clone();
    let whole = match crate::repair::make_whole(proxy, &name).await {
        Ok(w) => w,
        Err(e) => return Outcome::fail(e),
    };
    let meta = match whole.newest {
        Some(m) if !m.deleted => m,
        _ => return Outcome::fail(WireError::NotFound),
    };
    if offset > meta.size {
        return Outcome::fail(WireError::BadRequest(format!(
            "offset {offset} is beyond the end of {name} ({} bytes)",
            meta.size
        )));
    }
    let len = len.unwrap_or(u64::MAX).min(meta.size - offset);
    let mut sent = 0u64;
    let mut header_sent = false;
    let mut bad: Vec<Member> = Vec::new();
    let mut last_err = WireError::Unavailable(format!("no replica of {name} could be read"));
    let mut buf = Vec::with_capacity(CHUNK);
    for src in &whole.holders {
        let req = StorageRequest::Get {
            name: name.clone(),
            part: whole.part,
            offset: offset + sent,
            len: Some(len - sent),
            timestamp: Some(meta.timestamp),
        };
        let mut c = match proxy.backends.conn(&src.addr).await {
            Ok(c) => c,
            Err(e) => {
                last_err = e.to_wire();
                continue;
            }
        };
        let opened = proxy
            .backends
            .timed(async {
                c.write_header(&req).await?;
                c.flush().await?;
                c.read_response().await
            })
            .await;
        match opened {
            Ok(Response::Object { .. }) => {}
            Ok(other) => {
                last_err = unexpected(other).to_wire();
                continue;
            }
            Err(e) => {
                proxy.backends.failed(&src.addr, &e);
                if matches!(
                    e,
                    Error::Remote(WireError::Corrupt(_)) | Error::Remote(WireError::NotFound)
                ) {
                    bad.push(src.clone());
                }
                last_err = e.to_wire();
                continue;
            }
        }
        if !header_sent {
            let hdr = Response::Object {
                meta: meta.clone(),
                offset,
                len,
            };
            if client.write_header(&hdr).await.is_err() {
                return Outcome {
                    resp: None,
                    close: true,
                };
            }
            header_sent = true;
        }
        let mut finished = false;
        loop {
            match proxy.backends.read_chunk(&mut c, &mut buf).await {
                Ok(Chunk::Data(n)) => {
                    if client.write_data(&buf[..n]).await.is_err() {
                        return Outcome {
                            resp: None,
                            close: true,
                        };
                    }
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
    if !header_sent {
        return Outcome::fail(last_err);
    }
    let end = if sent == len {
        client.write_end().await
    } else {
        client.write_abort(last_err).await
    };
    if end.is_err() || client.flush().await.is_err() {
        return Outcome {
            resp: None,
            close: true,
        };
    }
    Outcome::streamed()
}

pub async fn delete(proxy: &Arc<Proxy>, name: ObjectName) -> Outcome {
    let timestamp = proxy.next_timestamp();
    let (part, members) = proxy.write_targets(&name);
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
                        return Outcome::fail(clock_error(&name));
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
            if let Some(h) = proxy.stand_in(part, &tried) {
                tried.push(h.id);
                round.push(h);
            }
        }
    }
    if done >= need {
        Outcome::answer(Response::Deleted { existed })
    } else {
        Outcome::fail(WireError::Unavailable(format!(
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

/// Newest version per name over what every server returned; tombstones kept.
pub fn merge_newest(
    lists: impl IntoIterator<Item = Vec<ObjectMeta>>,
) -> BTreeMap<String, ObjectMeta> {
    let mut merged: BTreeMap<String, ObjectMeta> = BTreeMap::new();
    for list in lists {
        for m in list {
            match merged.get(m.name.as_str()) {
                Some(have) if have.timestamp >= m.timestamp => {}
                _ => {
                    merged.insert(m.name.as_str().to_owned(), m);
                }
            }
        }
    }
    merged
}

pub async fn list(proxy: &Arc<Proxy>, client: &mut Connection, user: String) -> Outcome {
    if let Err(e) = oss_proto::name::validate_part(&user, oss_proto::name::Part::User) {
        return Outcome::fail(WireError::InvalidName(e));
    }
    let servers = proxy.listing_servers();
    let mut tasks = tokio::task::JoinSet::new();
    for m in servers {
        let p = proxy.clone();
        let req = StorageRequest::ListUser { user: user.clone() };
        tasks.spawn(async move { (m.clone(), p.backends.list(&m.addr, &req).await) });
    }
    let mut lists = Vec::new();
    let mut failed = 0usize;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((_, Ok(v))) => lists.push(v),
            Ok((m, Err(e))) => {
                warn!(server = %m.addr, error = %e, "listing failed on a server");
                failed += 1;
            }
            Err(e) => {
                warn!(error = %e, "listing task failed");
                failed += 1;
            }
        }
    }
    if failed >= proxy.replicas() {
        return Outcome::fail(WireError::Unavailable(format!(
            "{failed} storage servers did not answer; the listing would be incomplete"
        )));
    }
    let live: Vec<ObjectMeta> = merge_newest(lists)
        .into_values()
        .filter(|m| !m.deleted)
        .collect();
    let mut pages = live.chunks(LIST_PAGE).peekable();
    if pages.peek().is_none() {
        return Outcome::answer(Response::Listing {
            entries: Vec::new(),
            more: false,
        });
    }
    while let Some(page) = pages.next() {
        let more = pages.peek().is_some();
        let r = Response::Listing {
            entries: page.to_vec(),
            more,
        };
        if client.write_header(&r).await.is_err() {
            return Outcome {
                resp: None,
                close: true,
            };
        }
    }
    Outcome::streamed()
}

pub async fn list_users(proxy: &Arc<Proxy>) -> Outcome {
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
        return Outcome::fail(WireError::Unavailable(format!(
            "{failed} storage servers did not answer"
        )));
    }
    Outcome::answer(Response::Users(users.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, ts: u64, deleted: bool) -> ObjectMeta {
        ObjectMeta {
            name: ObjectName::parse(name).unwrap(),
            size: ts,
            md5: [0; 16],
            timestamp: ts,
            deleted,
        }
    }

    #[test]
    fn newest_version_wins_and_tombstones_count() {
        let a = vec![m("u/a", 5, false), m("u/b", 3, false), m("u/c", 9, true)];
        let b = vec![m("u/a", 7, false), m("u/b", 4, true), m("u/c", 8, false)];
        let merged = merge_newest([a, b]);
        assert_eq!(merged["u/a"].timestamp, 7);
        assert!(merged["u/b"].deleted, "a later delete hides the file");
        assert!(merged["u/c"].deleted, "an older copy does not resurrect");
        let live: Vec<_> = merged.values().filter(|m| !m.deleted).collect();
        assert_eq!(live.len(), 1);
    }
}
