//! Making objects whole: the one copy mechanism behind on-request repair, partition moves,
//! refills after an outage, full repair passes and the clean-up of returning servers.
//!
//! Everything here copies *versions*: an object (or a tombstone) keeps the timestamp the
//! proxy gave it when it was written, and a storage server refuses a version older than the
//! one it holds. So a copy can never roll back a newer write or resurrect a deleted file,
//! whatever order copies and client writes arrive in.

use oss_proto::sync::Locked;
use std::collections::HashMap;
use std::sync::Arc;

use oss_proto::wire::{
    Chunk, Error, ObjectMeta, ReplicaState, Response, StorageRequest, UploadTrailer, WireError,
    CHUNK,
};
use oss_proto::ObjectName;
use tracing::{info, warn};

use crate::backend::unexpected;
use crate::cluster::{Member, Proxy};

/// What the replicas of one object hold after [`make_whole`].
pub struct Whole {
    pub part: u32,
    /// The newest version (possibly a tombstone), `None` if no replica knows the name.
    pub newest: Option<ObjectMeta>,
    /// Live members holding `newest`, the ones that held it before the repair first.
    pub holders: Vec<Member>,
}

/// Asks every live member (and every stand-in still holding writes of the partition) for
/// its version, then copies the newest version to members that lack it — before the caller
/// answers its client. A stand-in may be read from; it is never repaired.
pub async fn make_whole(proxy: &Arc<Proxy>, name: &ObjectName) -> Result<Whole, WireError> {
    let (part, owners, strays) = proxy.read_members(name);
    let n_owners = owners.len();
    let members: Vec<Member> = owners.into_iter().chain(strays).collect();
    if n_owners == 0 {
        return Err(WireError::Unavailable(format!(
            "no storage server holding {name} is online"
        )));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let p = proxy.clone();
        let (m, n) = (m.clone(), name.clone());
        tasks.spawn(async move { (i, p.backends.head(&m.addr, &n, part).await) });
    }
    let mut answers: Vec<(usize, Option<ObjectMeta>)> = Vec::new();
    let mut last_err = None;
    let mut corrupt = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((i, Ok(v))) => answers.push((i, v)),
            // This replica lost its copy (quarantined or missing): it lags, and if no
            // replica has a good one the object is corrupt, not absent.
            Ok((i, Err(Error::Remote(WireError::Corrupt(why))))) => {
                answers.push((i, None));
                corrupt = Some(WireError::Corrupt(why));
            }
            Ok((_, Err(e))) => last_err = Some(e.to_wire()),
            Err(e) => last_err = Some(WireError::Internal(e.to_string())),
        }
    }
    if answers.is_empty() {
        return Err(last_err
            .unwrap_or_else(|| WireError::Unavailable(format!("no replica of {name} answered"))));
    }
    answers.sort_by_key(|(i, _)| *i);
    let newest = answers
        .iter()
        .filter_map(|(_, m)| m.as_ref())
        .max_by_key(|m| m.timestamp)
        .cloned();
    let Some(newest) = newest else {
        if let Some(e) = corrupt {
            return Err(e);
        }
        return Ok(Whole {
            part,
            newest: None,
            holders: Vec::new(),
        });
    };
    let mut holders: Vec<Member> = Vec::new();
    let mut lagging: Vec<Member> = Vec::new();
    for (i, m) in &answers {
        match m {
            Some(m) if m.timestamp == newest.timestamp => holders.push(members[*i].clone()),
            _ if *i < n_owners => lagging.push(members[*i].clone()),
            _ => {}
        }
    }
    for to in lagging {
        let mut copied = false;
        for from in holders.clone() {
            match copy_object(proxy, &newest, part, &from.addr, &to.addr).await {
                Ok(_) => {
                    info!(%name, from = %from.addr, to = %to.addr, "repaired a lagging replica");
                    copied = true;
                    break;
                }
                Err(e) => {
                    warn!(%name, from = %from.addr, to = %to.addr, error = %e, "repair copy failed")
                }
            }
        }
        if copied && !newest.deleted {
            holders.push(to);
        }
    }
    Ok(Whole {
        part,
        newest: Some(newest),
        holders,
    })
}

/// Copies one version from one server to another: the source verifies every block as it
/// sends, the destination recomputes the MD5 and refuses a mismatch with the stored one.
/// Returns the bytes copied. A destination that already holds a newer version is fine.
pub async fn copy_object(
    proxy: &Arc<Proxy>,
    meta: &ObjectMeta,
    part: u32,
    from: &str,
    to: &str,
) -> Result<u64, Error> {
    let b = &proxy.backends;
    if meta.deleted {
        let req = StorageRequest::Delete {
            name: meta.name.clone(),
            part,
            timestamp: meta.timestamp,
        };
        return match b.call(to, &req).await {
            Ok(Response::Deleted { .. }) | Err(Error::Remote(WireError::Stale { .. })) => Ok(0),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        };
    }
    let get = StorageRequest::Get {
        name: meta.name.clone(),
        part,
        offset: 0,
        len: None,
        timestamp: Some(meta.timestamp),
    };
    let mut src = match b.open_get(from, &get).await {
        Ok(c) => c,
        // Overwritten (or deleted) at the source since it was listed: the newer version
        // was written to every member, the destination included, so there is nothing to do.
        Err(Error::Remote(WireError::Stale { .. })) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut dst = b.conn(to).await?;
    let put = StorageRequest::Put {
        name: meta.name.clone(),
        part,
        timestamp: meta.timestamp,
        size: Some(meta.size),
        attrs: meta.attrs.clone(),
    };
    let mut buf = Vec::with_capacity(CHUNK);
    let mut total = 0u64;
    let streamed: Result<(), Error> = async {
        b.timed(dst.write_header(&put)).await?;
        loop {
            match b.read_chunk(&mut src, &mut buf).await? {
                Chunk::Data(n) => {
                    b.streamed(dst.write_data(&buf[..n])).await?;
                    total += n as u64;
                }
                Chunk::End => break,
                Chunk::Abort(e) => return Err(Error::Remote(e)),
            }
        }
        b.streamed(async {
            dst.write_end().await?;
            dst.write_header(&UploadTrailer {
                md5: Some(meta.md5),
            })
            .await?;
            dst.flush().await
        })
        .await
    }
    .await;
    // On failure both connections are dropped: the destination discards its temp file.
    streamed?;
    b.put_back(from, src);
    match b.committed(dst.read_response()).await {
        Ok(Response::Stored(_)) | Err(Error::Remote(WireError::Stale { .. })) => {
            b.put_back(to, dst);
            Ok(total)
        }
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(e),
    }
}

/// Brings the members of one partition to the same newest versions, reading from `sources`
/// and writing to `dests` (an address may be in both). Returns (objects copied, bytes).
pub async fn sync_partition(
    proxy: &Arc<Proxy>,
    part: u32,
    sources: &[String],
    dests: &[String],
) -> Result<(u64, u64), Error> {
    sync_views(proxy, part, sources, dests)
        .await
        .map(|s| (s.objects, s.bytes))
}

/// What [`sync_views`] did, and what every server it listed held before.
struct Synced {
    objects: u64,
    bytes: u64,
    views: HashMap<String, HashMap<String, ObjectMeta>>,
}

async fn sync_views(
    proxy: &Arc<Proxy>,
    part: u32,
    sources: &[String],
    dests: &[String],
) -> Result<Synced, Error> {
    let b = &proxy.backends;
    let mut views: HashMap<String, HashMap<String, ObjectMeta>> = HashMap::new();
    for addr in sources.iter().chain(dests.iter()) {
        if views.contains_key(addr) {
            continue;
        }
        let list = b
            .list(addr, &StorageRequest::ListPartition { part })
            .await?;
        views.insert(
            addr.clone(),
            list.into_iter()
                .map(|m| (m.name.as_str().to_owned(), m))
                .collect(),
        );
    }
    // Newest version of every name among the sources, and who holds it.
    let mut newest: HashMap<String, (ObjectMeta, String)> = HashMap::new();
    for s in sources {
        for (n, m) in &views[s] {
            match newest.get(n) {
                Some((have, _)) if have.timestamp >= m.timestamp => {}
                _ => {
                    newest.insert(n.clone(), (m.clone(), s.clone()));
                }
            }
        }
    }
    let (mut objects, mut bytes) = (0, 0);
    for (n, (meta, from)) in &newest {
        for d in dests {
            if d == from {
                continue;
            }
            let held = views[d].get(n).map(|m| m.timestamp).unwrap_or(0);
            if held >= meta.timestamp {
                continue;
            }
            bytes += copy_object(proxy, meta, part, from, d).await?;
            objects += 1;
        }
    }
    Ok(Synced {
        objects,
        bytes,
        views,
    })
}

/// `oss check NAME`: each replica's state; anything not good is repaired first, then the
/// states are read again.
pub async fn check(
    proxy: &Arc<Proxy>,
    name: &ObjectName,
) -> Result<Vec<(String, ReplicaState)>, WireError> {
    let first = check_once(proxy, name).await?;
    let newest = first.iter().filter_map(|(_, s)| match s {
        ReplicaState::Good(m) | ReplicaState::Deleted(m) => Some(m.timestamp),
        _ => None,
    });
    let newest = newest.max();
    let all_good = first.iter().all(|(_, s)| match s {
        ReplicaState::Good(m) | ReplicaState::Deleted(m) => Some(m.timestamp) == newest,
        _ => false,
    });
    if all_good {
        return Ok(first);
    }
    make_whole(proxy, name).await?;
    let after = check_once(proxy, name).await?;
    // Report what was wrong before the repair, then the state now.
    let mut out: Vec<(String, ReplicaState)> = first
        .into_iter()
        .filter(|(a, s)| after.iter().any(|(b, t)| a == b && t != s))
        .map(|(a, s)| (format!("{a} {BEFORE_REPAIR}"), s))
        .collect();
    out.extend(after);
    Ok(out)
}

/// Marks the entries of a `Checked` answer that describe a replica before it was repaired.
pub const BEFORE_REPAIR: &str = "(before repair)";

async fn check_once(
    proxy: &Arc<Proxy>,
    name: &ObjectName,
) -> Result<Vec<(String, ReplicaState)>, WireError> {
    let part = name.partition(proxy.part_power());
    let mut out = Vec::new();
    for m in proxy.replica_members(part) {
        let req = StorageRequest::Check {
            name: name.clone(),
            part,
        };
        let state = match proxy.backends.call(&m.addr, &req).await {
            Ok(Response::Checked(v)) => v
                .into_iter()
                .next()
                .map(|(_, s)| s)
                .unwrap_or(ReplicaState::Missing),
            Ok(other) => ReplicaState::Corrupt(format!("unexpected answer {other:?}")),
            Err(Error::Remote(WireError::NotFound)) => ReplicaState::Missing,
            Err(e) => ReplicaState::Corrupt(format!("unreachable: {e}")),
        };
        out.push((m.addr, state));
    }
    if out.is_empty() {
        return Err(WireError::Unavailable(format!(
            "no storage server holds {name}"
        )));
    }
    Ok(out)
}

/// A server that was declared offline answers again: whatever it holds that its owners
/// lack (a version newer than theirs) is pushed to them, then its partitions are dropped.
pub async fn clean_returned(proxy: &Arc<Proxy>, addr: &str) -> Result<(), Error> {
    let mut dropped = 0u32;
    for part in held_partitions(proxy, addr).await? {
        let owners: Vec<String> = proxy
            .replica_members(part)
            .into_iter()
            .filter(|m| m.addr != addr && proxy.backends.health.is_up(&m.addr))
            .map(|m| m.addr)
            .collect();
        if owners.is_empty() {
            return Err(Error::Remote(WireError::Unavailable(format!(
                "no owner of partition {part} is online"
            ))));
        }
        hand_over(proxy, part, addr, &owners).await?;
        dropped += 1;
    }
    let mut st = proxy.state.locked();
    for o in st.outside.iter_mut().filter(|o| o.addr == addr) {
        o.cleaned = true;
    }
    proxy.save(&st);
    info!(
        server = addr,
        partitions = dropped,
        "returned server cleaned up"
    );
    Ok(())
}

/// Repairs what the auditors quarantined: each name is made whole from a good replica.
pub async fn repair_quarantined(proxy: &Arc<Proxy>, addr: &str) -> Result<usize, Error> {
    let names = match proxy
        .backends
        .call(addr, &StorageRequest::TakeQuarantined)
        .await?
    {
        Response::Quarantined(v) => v,
        other => return Err(unexpected(other)),
    };
    let n = names.len();
    for name in names {
        match make_whole(proxy, &name).await {
            Ok(_) => info!(server = addr, %name, "repaired a quarantined replica"),
            Err(e) => {
                warn!(server = addr, %name, error = %e, "cannot repair a quarantined replica")
            }
        }
    }
    Ok(n)
}

/// The partitions a server holds files of.
pub async fn held_partitions(proxy: &Arc<Proxy>, addr: &str) -> Result<Vec<u32>, Error> {
    match proxy
        .backends
        .call(addr, &StorageRequest::ListPartitions)
        .await?
    {
        Response::Partitions(v) => Ok(v),
        other => Err(unexpected(other)),
    }
}

/// Every partition's digest on `addr` (see `StorageRequest::Digests`), all pages.
pub async fn digests(proxy: &Arc<Proxy>, addr: &str) -> Result<HashMap<u32, [u8; 16]>, Error> {
    let mut out = HashMap::new();
    let mut from = 0u32;
    loop {
        match proxy
            .backends
            .call(addr, &StorageRequest::Digests { from })
            .await?
        {
            Response::Digests { digests, more } => {
                let last = digests.last().map(|d| d.0);
                out.extend(digests);
                match (more, last) {
                    (true, Some(l)) if l < u32::MAX => from = l + 1,
                    _ => return Ok(out),
                }
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// Copies left on a server that does not own their partition (a stand-in took a write
/// while an owner was down, or a write raced a partition move) are pushed to the owners if
/// newer, then dropped. Only done while every owner of the partition is up, so no stand-in
/// write can be landing there. Returns the partitions dropped.
pub async fn revert_strays(
    proxy: &Arc<Proxy>,
    addr: &str,
    id: oss_proto::ring::DevId,
) -> Result<u32, Error> {
    let mut dropped = 0;
    for part in held_partitions(proxy, addr).await? {
        let members = proxy.replica_members(part);
        if members.iter().any(|m| m.id == id) {
            continue;
        }
        if members.is_empty() || !members.iter().all(|m| proxy.backends.health.is_up(&m.addr)) {
            continue;
        }
        let owners: Vec<String> = members.into_iter().map(|m| m.addr).collect();
        hand_over(proxy, part, addr, &owners).await?;
        dropped += 1;
        info!(
            server = addr,
            part, "stray copies handed to the owners and dropped"
        );
    }
    Ok(dropped)
}

/// Versions named in one `DropVersions` request (a few hundred KiB at most).
const DROP_BATCH: usize = 1000;

/// A server that should not hold `part` hands it over: whatever it has that the owners
/// lack (newer versions only: timestamps decide) is copied to them, then it drops exactly
/// the versions it held when listed, so a write landing there meanwhile stays (for the
/// next hand-over). Returns the versions copied.
pub async fn hand_over(
    proxy: &Arc<Proxy>,
    part: u32,
    from: &str,
    owners: &[String],
) -> Result<u64, Error> {
    let synced = sync_views(proxy, part, &[from.to_owned()], owners).await?;
    let held: Vec<(ObjectName, oss_proto::Timestamp)> = synced
        .views
        .get(from)
        .map(|v| v.values().map(|m| (m.name.clone(), m.timestamp)).collect())
        .unwrap_or_default();
    for batch in held.chunks(DROP_BATCH) {
        let req = StorageRequest::DropVersions {
            part,
            versions: batch.to_vec(),
        };
        match proxy.backends.call(from, &req).await? {
            Response::Ok => {}
            other => return Err(unexpected(other)),
        }
    }
    Ok(synced.objects)
}
