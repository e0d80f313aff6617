//! Background work of the proxy, each piece also triggerable on demand so tests never
//! have to sleep: the disk checker (heartbeats and offline detection), the move worker
//! (rebalances and refills, one partition replica at a time), the quarantine poller and
//! the full repair pass.

use oss_proto::sync::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oss_proto::ring::DevId;
use oss_proto::wire::{now_micros, Response, ServerState, StorageRequest, WireError};
use tracing::{info, warn};

use crate::cluster::{finish_job, Proxy};
use crate::repair::{repair_quarantined, sync_partition};
use crate::state::{MoveKind, PendingDrop, Persisted, QueuedMove};

/// How long one audit pass may take before the proxy stops waiting for it.
const AUDIT_DEADLINE: Duration = Duration::from_secs(3600);

/// Removes devices that were leaving and hold nothing any more; once the queue is empty the
/// live ring becomes the target exactly.
pub fn forget_finished_leavers(st: &mut Persisted) {
    let leaving = st.leaving.clone();
    for id in leaving {
        let busy = st.queue.iter().any(|q| q.mv.from == id || q.mv.to == id)
            || st.ring.assignment.iter().any(|row| row.contains(&id));
        if !busy {
            st.ring.devices.retain(|d| d.id != id);
            st.leaving.retain(|&l| l != id);
        }
    }
    if st.queue.is_empty() {
        st.ring.assignment = st.target.assignment.clone();
        st.ring.devices = st.target.devices.clone();
        st.ring.next_id = st.target.next_id;
        st.leaving.clear();
    }
    st.target.epoch = st.ring.epoch;
}

/// Partition moves copied at the same time. Each move is latency-bound (list, then one
/// copy per object), so a few in parallel use the disks much better; never two of one
/// partition, so at most one replica of a partition moves at a time.
const PARALLEL_MOVES: usize = 4;
/// How long a partition whose move failed waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Runs queued moves forever: in queue order, up to [`PARALLEL_MOVES`] partitions at once.
pub async fn move_worker(proxy: Arc<Proxy>) {
    let mut running: tokio::task::JoinSet<(u32, bool)> = tokio::task::JoinSet::new();
    let mut busy: HashSet<u32> = HashSet::new();
    let mut backoff: HashMap<u32, Instant> = HashMap::new();
    loop {
        let now = Instant::now();
        backoff.retain(|_, until| *until > now);
        // Old copies whose delete did not happen yet (a restart, a server that was down).
        let drops: Vec<PendingDrop> = {
            let st = proxy.state.locked();
            st.drops
                .iter()
                .filter(|d| !busy.contains(&d.part))
                .cloned()
                .collect()
        };
        for d in drops {
            settle_drop(&proxy, &d).await;
        }
        while running.len() < PARALLEL_MOVES {
            let next = {
                let st = proxy.state.locked();
                next_move_among(&st, |part| {
                    busy.contains(&part) || backoff.contains_key(&part)
                })
            };
            let Some(q) = next else { break };
            busy.insert(q.mv.part);
            let p = proxy.clone();
            running.spawn(async move { (q.mv.part, process_move(&p, &q).await) });
        }
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((part, ok)) = done {
                    busy.remove(&part);
                    if !ok {
                        backoff.insert(part, Instant::now() + RETRY_AFTER);
                    }
                }
            }
            _ = proxy.work.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Copies, verifies and flips one move; false if it failed (it stays queued).
async fn process_move(proxy: &Arc<Proxy>, q: &QueuedMove) -> bool {
    match run_move(proxy, q).await {
        Ok((objects, bytes)) => {
            flip(proxy, q, objects, bytes).await;
            true
        }
        Err(e) => {
            warn!(part = q.mv.part, from = q.mv.from, to = q.mv.to, error = %e, "partition move failed; will retry");
            let mut st = proxy.state.locked();
            if let Some(j) = st.jobs.get_mut(q.job) {
                j.errors += 1;
            }
            // Let other partitions go first; this one's moves keep their order.
            if st.queue.iter().any(|h| h.mv == q.mv) {
                let (stuck, rest): (Vec<_>, Vec<_>) =
                    st.queue.drain(..).partition(|x| x.mv.part == q.mv.part);
                st.queue = rest;
                st.queue.extend(stuck);
            }
            false
        }
    }
}

/// Copies one partition replica to its new owner (verified by MD5 at the destination).
async fn run_move(proxy: &Arc<Proxy>, q: &QueuedMove) -> Result<(u64, u64), WireError> {
    let part = q.mv.part;
    let (from, to, others) = {
        let st = proxy.state.locked();
        let addr = |id: DevId| st.addr_of(id).map(str::to_owned);
        let others: Vec<String> = st
            .ring
            .replicas_of(part)
            .iter()
            .filter(|&&d| d != q.mv.from && d != q.mv.to)
            .filter_map(|&d| addr(d))
            .collect();
        (addr(q.mv.from), addr(q.mv.to), others)
    };
    let to = to.ok_or_else(|| WireError::Internal(format!("unknown device {}", q.mv.to)))?;
    if !proxy.backends.health.is_up(&to) {
        return Err(WireError::Unavailable(format!("destination {to} is down")));
    }
    let health = &proxy.backends.health;
    let mut sources: Vec<String> = Vec::new();
    if let Some(f) = from.filter(|f| q.kind == MoveKind::Rebalance && health.is_up(f)) {
        sources.push(f);
    }
    // A refill (or a rebalance whose source died) reads the surviving replicas. A
    // rebalance reads them too: they may hold writes the source missed.
    sources.extend(others.into_iter().filter(|a| health.is_up(a)));
    if sources.is_empty() {
        return Err(WireError::Unavailable(format!(
            "no live replica of partition {part} to copy from"
        )));
    }
    sync_partition(proxy, part, &sources, std::slice::from_ref(&to))
        .await
        .map_err(|e| e.to_wire())
}

/// The copy is done and verified: flip the partition in the ring (new epoch, persisted),
/// then delete the old copy.
async fn flip(proxy: &Arc<Proxy>, q: &QueuedMove, objects: u64, bytes: u64) {
    let drop_from = {
        let mut st = proxy.state.locked();
        let Some(drop_from) = record_flip(&mut st, q, bytes) else {
            // The plan changed under us (a server went offline); start over from the queue.
            return;
        };
        proxy.save(&st);
        tracing::debug!(
            part = q.mv.part,
            objects,
            bytes,
            epoch = st.ring.epoch,
            "partition replica moved"
        );
        drop_from
    };
    if let Some(addr) = drop_from {
        let d = PendingDrop {
            part: q.mv.part,
            addr,
            job: q.job,
        };
        settle_drop(proxy, &d).await;
    }
}

/// Settles every pending drop that can be settled now (run before serving after a start).
pub async fn settle_pending_drops(proxy: &Arc<Proxy>) {
    let drops = proxy.state.locked().drops.clone();
    for d in drops {
        settle_drop(proxy, &d).await;
    }
}

/// The move to run next: queue order, except that a move onto a server that still holds
/// another replica of the partition waits for that replica to move away first (different
/// slots of one partition are independent, and moves of one slot are merged when queued,
/// so this never reorders dependent moves).
pub fn next_move(st: &Persisted) -> Option<QueuedMove> {
    next_move_among(st, |_| false)
}

/// [`next_move`] among the partitions `skip` does not exclude (those being moved already).
pub fn next_move_among(st: &Persisted, skip: impl Fn(u32) -> bool) -> Option<QueuedMove> {
    let mut open = st.queue.iter().filter(|q| !skip(q.mv.part));
    let first = open.clone().next();
    open.find(|q| !st.ring.replicas_of(q.mv.part).contains(&q.mv.to))
        .or(first)
        .cloned()
}

/// Flips one finished move into the live ring (new epoch). `None` if the move is no longer
/// queued; otherwise `Some(address to drop the partition from)`, if any.
pub fn record_flip(st: &mut Persisted, q: &QueuedMove, bytes: u64) -> Option<Option<String>> {
    let i = st.queue.iter().position(|x| x.mv == q.mv)?;
    if st.ring.device(q.mv.to).is_none() {
        if let Some(d) = st.target.device(q.mv.to).cloned() {
            st.ring.devices.push(d);
            st.ring.devices.sort_by_key(|d| d.id);
            st.ring.next_id = st.ring.next_id.max(st.target.next_id);
        }
    }
    st.ring.apply_move(&q.mv);
    st.ring.epoch += 1;
    st.queue.remove(i);
    if let Some(j) = st.jobs.get_mut(q.job) {
        j.done += 1;
        j.bytes += bytes;
    }
    if !st.queue.iter().any(|x| x.job == q.job) {
        finish_job(st, q.job);
    }
    let from_addr = st.addr_of(q.mv.from).map(str::to_owned);
    let still_member = st.replica_set(q.mv.part).contains(&q.mv.from);
    forget_finished_leavers(st);
    let drop_from = from_addr.filter(|_| q.kind == MoveKind::Rebalance && !still_member);
    if let Some(addr) = &drop_from {
        let d = PendingDrop {
            part: q.mv.part,
            addr: addr.clone(),
            job: q.job,
        };
        if !st.drops.contains(&d) {
            st.drops.push(d);
        }
    }
    Some(drop_from)
}

/// Deletes a moved-away partition's old copy, unless the server is a member of that
/// partition again; either way the pending drop is then settled (and persisted).
async fn settle_drop(proxy: &Arc<Proxy>, d: &PendingDrop) {
    let member = proxy
        .replica_members(d.part)
        .iter()
        .any(|m| m.addr == d.addr);
    if !member {
        if !proxy.backends.health.is_up(&d.addr) {
            return;
        }
        let req = StorageRequest::DropPartition { part: d.part };
        if let Err(e) = proxy.backends.call(&d.addr, &req).await {
            warn!(server = %d.addr, part = d.part, error = %e, "cannot drop a moved partition yet");
            return;
        }
    }
    let mut st = proxy.state.locked();
    st.drops.retain(|x| x != d);
    proxy.save(&st);
}

/// One round of disk checks, then the state changes they imply.
pub async fn check_servers(proxy: &Arc<Proxy>) {
    let addrs = proxy.watched();
    let mut tasks = tokio::task::JoinSet::new();
    for a in addrs {
        let p = proxy.clone();
        tasks.spawn(async move {
            let r = p.backends.ping(&a).await;
            (a, r)
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok((a, r)) = r {
            match r {
                Ok(stats) => proxy.backends.health.check_ok(&a, stats),
                Err(e) => {
                    proxy.backends.forget(&a);
                    proxy.backends.health.request_failed(&a, &e.to_string());
                }
            }
        }
    }
    let now = Instant::now();
    let (in_ring, outside) = {
        let st = proxy.state.locked();
        let in_ring: Vec<String> = st
            .target
            .devices
            .iter()
            .filter(|d| !st.leaving.contains(&d.id))
            .map(|d| d.addr.clone())
            .collect();
        (in_ring, st.outside.clone())
    };
    for addr in in_ring {
        let gone = proxy
            .backends
            .health
            .get(&addr)
            .and_then(|l| l.failing_for(now))
            .is_some_and(|d| d >= proxy.cfg.offline_after);
        if gone {
            proxy.declare_offline(&addr).await;
        }
    }
    let mut changed = false;
    for o in outside {
        let up = proxy.backends.health.is_up(&o.addr);
        let new_state = match (o.state, up) {
            (ServerState::Offline, true) => Some(ServerState::Back),
            (ServerState::Back, false) => Some(ServerState::Offline),
            _ => None,
        };
        if let Some(s) = new_state {
            let mut st = proxy.state.locked();
            for x in st.outside.iter_mut().filter(|x| x.addr == o.addr) {
                x.state = s;
                x.since = now_micros();
            }
            changed = true;
            info!(server = %o.addr, state = %s, "server outside the ring changed state");
        }
        if up
            && !o.cleaned
            && (o.state == ServerState::Back || new_state == Some(ServerState::Back))
        {
            // Not holding any lock: the clean-up talks to servers.
            let p = proxy.clone();
            let addr = o.addr.clone();
            tokio::spawn(async move {
                let _admin = p.admin.lock().await;
                let still = p
                    .state
                    .lock()
                    .unwrap()
                    .outside
                    .iter()
                    .any(|x| x.addr == addr && !x.cleaned);
                if still {
                    if let Err(e) = crate::repair::clean_returned(&p, &addr).await {
                        warn!(server = %addr, error = %e, "clean-up of a returned server failed; will retry");
                    }
                }
            });
        }
    }
    if changed {
        let st = proxy.state.locked();
        proxy.save(&st);
    }
}

pub async fn health_loop(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(proxy.cfg.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check_servers(&proxy).await;
    }
}

pub async fn quarantine_loop(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(proxy.cfg.quarantine_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for m in proxy.listing_servers() {
            if let Err(e) = repair_quarantined(&proxy, &m.addr).await {
                tracing::debug!(server = %m.addr, error = %e, "quarantine poll failed");
            }
        }
    }
}

/// `oss audit`: every server runs one audit pass now; then what they quarantined is repaired.
pub async fn audit_all(proxy: &Arc<Proxy>) -> Result<(), WireError> {
    let servers = proxy.listing_servers();
    let mut tasks = tokio::task::JoinSet::new();
    for m in servers.clone() {
        let p = proxy.clone();
        tasks.spawn(async move {
            let r = p
                .backends
                .call_within(&m.addr, &StorageRequest::Audit, AUDIT_DEADLINE)
                .await;
            (m, r)
        });
    }
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((_, Ok(Response::Audited(_)))) => {}
            Ok((m, Ok(other))) => failed.push(format!("{}: unexpected {other:?}", m.addr)),
            Ok((m, Err(e))) => failed.push(format!("{}: {e}", m.addr)),
            Err(e) => failed.push(e.to_string()),
        }
    }
    for m in servers {
        if let Err(e) = repair_quarantined(proxy, &m.addr).await {
            failed.push(format!("{}: {e}", m.addr));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(WireError::Unavailable(format!(
            "audit incomplete: {}",
            failed.join("; ")
        )))
    }
}

/// Starts a full repair pass unless one is running: audit every server, repair what was
/// quarantined, then bring every partition's live replicas to the newest versions.
pub fn start_repair(proxy: &Arc<Proxy>) -> Result<(), WireError> {
    let job = {
        let mut st = proxy.state.locked();
        if st.jobs.iter().any(|j| j.running && j.what == "repair") {
            return Ok(());
        }
        let total = u64::from(st.ring.partitions());
        Proxy::start_job(&mut st, "repair".into(), total)
    };
    let p = proxy.clone();
    tokio::spawn(async move {
        let mut errors = 0u64;
        if let Err(e) = audit_all(&p).await {
            warn!(error = %e, "repair: audit step incomplete");
            errors += 1;
        }
        let parts = p.state.locked().ring.partitions();
        for part in 0..parts {
            let live: Vec<String> = p
                .replica_members(part)
                .into_iter()
                .filter(|m| p.backends.health.is_up(&m.addr))
                .map(|m| m.addr)
                .collect();
            let mut bytes = 0;
            if live.len() > 1 {
                match sync_partition(&p, part, &live, &live).await {
                    Ok((objects, b)) => {
                        bytes = b;
                        if objects > 0 {
                            info!(
                                part,
                                objects,
                                bytes = b,
                                "repair: replicas brought up to date"
                            );
                        }
                    }
                    Err(e) => {
                        warn!(part, error = %e, "repair: partition failed");
                        errors += 1;
                    }
                }
            }
            let mut st = p.state.locked();
            if let Some(j) = st.jobs.get_mut(job) {
                j.done += 1;
                j.bytes += bytes;
                j.errors = errors;
            }
        }
        // Copies on servers that do not own their partition (stand-in writes).
        let servers: Vec<(String, DevId)> = {
            let st = p.state.locked();
            st.ring
                .devices
                .iter()
                .map(|d| (d.addr.clone(), d.id))
                .collect()
        };
        for (addr, id) in servers {
            if !p.backends.health.is_up(&addr) {
                continue;
            }
            if let Err(e) = crate::repair::revert_strays(&p, &addr, id).await {
                warn!(server = %addr, error = %e, "repair: stray copies not reverted");
                errors += 1;
            }
        }
        let mut st = p.state.locked();
        if let Some(j) = st.jobs.get_mut(job) {
            j.errors = errors;
        }
        finish_job(&mut st, job);
        p.save(&st);
        info!(errors, "repair pass finished");
    });
    Ok(())
}
