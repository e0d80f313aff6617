//! The replicator: copies that stand-ins took while an owner was down go home without
//! anyone asking, as Swift's object replicator reverts handoffs.
//!
//! - Every write that picks a stand-in records (partition, stand-in) in [`Strays`]. Reads
//!   of that partition consult the stand-in too until it has handed its copies back, so an
//!   owner that missed a write (and is back) never answers for it alone.
//! - Every tick (the disk-check interval) each recorded stray whose partition's owners are
//!   all up is handed back: the versions the owners lack are copied to them (each copy
//!   checked against its MD5), then the stand-in drops exactly the versions it listed; one
//!   written there since stays for the next round.
//! - Every `--replicate-interval` a pass asks each server for the digest of every partition
//!   it holds (16 bytes each, kept up to date by the server's index: the XOR of a hash of
//!   each version's name and timestamp). A partition it holds but does not own is recorded
//!   as a stray (copies a proxy restart forgot, or writes that raced a move). A partition
//!   whose owners' digests differ is synced: each owner gets the newest version of every
//!   name the others hold (timestamps decide, each copy MD5-checked), so a replica that went
//!   missing without anyone reading it comes back. At most [`SYNC_PER_PASS`] partitions are
//!   synced per pass; the rest is the backlog `oss status` shows. Bytes are never compared:
//!   corruption is the auditor's to find.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use oss_proto::ring::DevId;
use oss_proto::sync::Locked;
use oss_proto::wire::{now_micros, ReplicatorStatus};
use tracing::{debug, info, warn};

use crate::cluster::{Member, Proxy};

/// Partitions a pass syncs at most; the rest waits for the next pass (rate limit).
pub const SYNC_PER_PASS: usize = 64;

/// Partition copies held by servers outside the partition's replica set, and the counters
/// `oss status` shows. Pure bookkeeping: the work is in [`run`].
#[derive(Default)]
pub struct Strays {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    held: BTreeMap<u32, BTreeSet<DevId>>,
    stats: ReplicatorStatus,
}

impl Strays {
    /// `dev` may hold copies of `part` that belong to its owners.
    pub fn record(&self, part: u32, dev: DevId) {
        self.inner
            .locked()
            .held
            .entry(part)
            .or_default()
            .insert(dev);
    }

    /// Stand-ins that may hold copies of `part`.
    pub fn holders(&self, part: u32) -> Vec<DevId> {
        self.inner
            .locked()
            .held
            .get(&part)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every recorded (partition, stand-in), in partition order.
    pub fn pending(&self) -> Vec<(u32, DevId)> {
        let g = self.inner.locked();
        g.held
            .iter()
            .flat_map(|(&p, devs)| devs.iter().map(move |&d| (p, d)))
            .collect()
    }

    /// `dev` holds nothing of `part` for others any more (it handed its copies back, or it
    /// became an owner).
    pub fn forget(&self, part: u32, dev: DevId) {
        let mut g = self.inner.locked();
        if let Some(s) = g.held.get_mut(&part) {
            s.remove(&dev);
            if s.is_empty() {
                g.held.remove(&part);
            }
        }
    }

    /// `dev` handed `part` back, copying `versions` to the owners.
    pub fn handed_back(&self, part: u32, dev: DevId, versions: u64) {
        self.forget(part, dev);
        let mut g = self.inner.locked();
        g.stats.handed_back += 1;
        g.stats.versions_copied += versions;
    }

    /// A partition's owners were brought to the same versions, copying `versions`.
    fn synced(&self, versions: u64) {
        let mut g = self.inner.locked();
        g.stats.synced += 1;
        g.stats.versions_copied += versions;
    }

    /// A pass ended: it took `micros` and found `out_of_sync` partitions whose owners differ
    /// (those beyond [`SYNC_PER_PASS`] still do).
    fn pass_done(&self, micros: u64, out_of_sync: u64) {
        let mut g = self.inner.locked();
        g.stats.passes += 1;
        g.stats.last_pass_end = now_micros();
        g.stats.last_pass_micros = micros;
        g.stats.out_of_sync = out_of_sync;
    }

    pub fn status(&self) -> ReplicatorStatus {
        let g = self.inner.locked();
        ReplicatorStatus {
            pending: g.held.values().map(|s| s.len() as u64).sum(),
            ..g.stats.clone()
        }
    }
}

/// The replicator's loop: hand-backs every tick, a full pass at start and every
/// `--replicate-interval`.
pub async fn run(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(proxy.cfg.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_pass = Instant::now();
    loop {
        tick.tick().await;
        if Instant::now() >= next_pass {
            pass(&proxy).await;
            next_pass = Instant::now() + proxy.cfg.replicate_interval;
        }
        hand_back(&proxy).await;
    }
}

/// One pass: every server's partition digests; strays recorded, owners that differ synced.
pub async fn pass(proxy: &Arc<Proxy>) {
    let t0 = Instant::now();
    let mut held: HashMap<DevId, HashMap<u32, [u8; 16]>> = HashMap::new();
    for m in proxy.listing_servers() {
        match crate::repair::digests(proxy, &m.addr).await {
            Ok(d) => {
                held.insert(m.id, d);
            }
            Err(e) => debug!(server = %m.addr, error = %e, "replicator: no digests"),
        }
    }
    // Who holds each partition, so its replica set is looked up once.
    let mut parts: BTreeMap<u32, Vec<DevId>> = BTreeMap::new();
    for (&dev, d) in &held {
        for &part in d.keys() {
            parts.entry(part).or_default().push(dev);
        }
    }
    let mut strays = 0usize;
    for (&part, devs) in &parts {
        let members = proxy.replica_members(part);
        for &dev in devs.iter().filter(|&&d| !members.iter().any(|o| o.id == d)) {
            proxy.strays.record(part, dev);
            strays += 1;
        }
    }
    let differing: Vec<(u32, Vec<Member>)> = parts
        .into_keys()
        .filter_map(|part| {
            let owners = proxy.settled_owners(part)?;
            owners_differ(proxy, &held, part, &owners).then_some((part, owners))
        })
        .collect();
    if strays > 0 || !differing.is_empty() {
        info!(
            strays,
            out_of_sync = differing.len(),
            "replicator: pass found work"
        );
    }
    let mut left = differing.len();
    for (part, owners) in differing.into_iter().take(SYNC_PER_PASS) {
        let addrs: Vec<String> = owners.into_iter().map(|m| m.addr).collect();
        match crate::repair::sync_partition(proxy, part, &addrs, &addrs).await {
            Ok((copied, _)) => {
                proxy.strays.synced(copied);
                left -= 1;
                info!(
                    part,
                    copied, "replicator: owners brought to the same versions"
                );
            }
            Err(e) => warn!(part, error = %e, "replicator: sync failed"),
        }
    }
    let micros = t0.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
    proxy.strays.pass_done(micros, left as u64);
}

/// Whether the owners of `part` (all up, all heard from) hold different versions.
fn owners_differ(
    proxy: &Proxy,
    held: &HashMap<DevId, HashMap<u32, [u8; 16]>>,
    part: u32,
    owners: &[Member],
) -> bool {
    let mut seen: Option<Option<&[u8; 16]>> = None;
    for o in owners {
        if !proxy.backends.health.is_up(&o.addr) {
            return false;
        }
        let Some(d) = held.get(&o.id) else {
            return false;
        };
        let mine = d.get(&part);
        match seen {
            None => seen = Some(mine),
            Some(s) if s != mine => return true,
            Some(_) => {}
        }
    }
    false
}

/// Hands back every recorded stray whose owners and holder are up.
pub async fn hand_back(proxy: &Arc<Proxy>) {
    for (part, dev) in proxy.strays.pending() {
        let members = proxy.replica_members(part);
        if members.iter().any(|m| m.id == dev) {
            proxy.strays.forget(part, dev);
            continue;
        }
        let Some(addr) = proxy.addr_of(dev) else {
            // Left the ring: its copies went with a drain, or it is a returning server's
            // clean-up to do.
            proxy.strays.forget(part, dev);
            continue;
        };
        let up = |a: &str| proxy.backends.health.is_up(a);
        if members.is_empty() || !up(&addr) || !members.iter().all(|m| up(&m.addr)) {
            continue;
        }
        let owners: Vec<String> = members.into_iter().map(|m| m.addr).collect();
        match crate::repair::hand_over(proxy, part, &addr, &owners).await {
            Ok(copied) => {
                proxy.strays.handed_back(part, dev, copied);
                info!(part, server = %addr, copied, "replicator: stray copies handed back");
            }
            Err(e) => warn!(part, server = %addr, error = %e, "replicator: hand-back failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strays_are_recorded_listed_and_forgotten() {
        let s = Strays::default();
        s.record(7, 2);
        s.record(7, 3);
        s.record(7, 2);
        s.record(1, 4);
        assert_eq!(s.pending(), vec![(1, 4), (7, 2), (7, 3)]);
        assert_eq!(s.holders(7), vec![2, 3]);
        assert_eq!(s.status().pending, 3);
        s.handed_back(7, 2, 5);
        s.forget(1, 4);
        assert_eq!(s.pending(), vec![(7, 3)]);
        assert!(s.holders(1).is_empty());
        let st = s.status();
        assert_eq!((st.pending, st.handed_back, st.versions_copied), (1, 1, 5));
        s.synced(3);
        s.pass_done(1234, 2);
        let st = s.status();
        assert_eq!((st.passes, st.last_pass_micros), (1, 1234));
        assert_eq!((st.synced, st.out_of_sync, st.versions_copied), (1, 2, 8));
        assert!(st.last_pass_end > 0);
    }
}
