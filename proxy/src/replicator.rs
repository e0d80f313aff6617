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
//! - Every `--replicate-interval` a pass asks each server which partitions it holds and
//!   records any it does not own: copies a proxy restart forgot, or writes that raced a move.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use oss_proto::ring::DevId;
use oss_proto::sync::Locked;
use oss_proto::wire::{now_micros, ReplicatorStatus};
use tracing::{debug, info, warn};

use crate::cluster::Proxy;

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

    fn pass_done(&self, micros: u64) {
        let mut g = self.inner.locked();
        g.stats.passes += 1;
        g.stats.last_pass_end = now_micros();
        g.stats.last_pass_micros = micros;
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
            find_strays(&proxy).await;
            next_pass = Instant::now() + proxy.cfg.replicate_interval;
        }
        hand_back(&proxy).await;
    }
}

/// Asks every server of the ring that is up which partitions it holds; records those it
/// does not own.
pub async fn find_strays(proxy: &Arc<Proxy>) {
    let t0 = Instant::now();
    let mut found = 0usize;
    for m in proxy.listing_servers() {
        match crate::repair::held_partitions(proxy, &m.addr).await {
            Ok(parts) => {
                for part in parts {
                    if !proxy.replica_members(part).iter().any(|o| o.id == m.id) {
                        proxy.strays.record(part, m.id);
                        found += 1;
                    }
                }
            }
            Err(e) => debug!(server = %m.addr, error = %e, "replicator: cannot list partitions"),
        }
    }
    if found > 0 {
        info!(found, "replicator: stray partition copies found");
    }
    proxy
        .strays
        .pass_done(t0.elapsed().as_micros().min(u128::from(u64::MAX)) as u64);
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
        s.pass_done(1234);
        let st = s.status();
        assert_eq!((st.passes, st.last_pass_micros), (1, 1234));
        assert!(st.last_pass_end > 0);
    }
}
