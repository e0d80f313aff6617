//! The proxy's live view of the cluster: the persisted state behind a lock, the storage
//! backends, timestamps, and the admin operations that change the ring.
//!
//! Locking rule: `state` is a plain mutex and is never held across an `.await`; handlers
//! copy what they need (a replica set, an address) and release it.

use oss_proto::sync::Locked;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use oss_proto::ring::{DevId, Ring};
use oss_proto::wire::{
    now_micros, ClusterStatus, Progress, ServerState, ServerStatus, Timestamp, WireError,
};
use oss_proto::ObjectName;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::backend::Backends;
use crate::config::Config;
use crate::health::Health;
use crate::state::{MoveKind, OutsideServer, Persisted, QueuedMove, StateError};
use crate::users::Users;

/// Jobs kept for `oss status` once finished.
const JOBS_KEPT: usize = 8;

/// One storage server as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: DevId,
    pub addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Flags(String),
}

pub struct Proxy {
    pub cfg: Config,
    pub state: Mutex<Persisted>,
    pub backends: Backends,
    last_ts: AtomicU64,
    /// Wakes the move worker.
    pub work: Notify,
    /// Serializes admin changes to the plan (add, remove, offline) with each other.
    pub admin: tokio::sync::Mutex<()>,
    pub started: Instant,
    /// Who may log in (verifiers only).
    pub users: Users,
    /// Slows down client addresses whose logins keep failing.
    pub throttle: oss_proto::auth::Throttle,
    /// Containers made through the Swift door, and the account's metadata.
    pub containers: crate::containers::Containers,
    /// Copies stand-ins hold for partitions they do not own, until they go home.
    pub strays: crate::replicator::Strays,
}

impl Proxy {
    /// Loads the state directory, or creates the ring on first use. Flags that contradict a
    /// persisted ring are refused.
    pub fn open(cfg: Config) -> Result<Arc<Proxy>, OpenError> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|source| StateError::Write {
            path: cfg.state_dir.clone(),
            source,
        })?;
        let state = match Persisted::load(&cfg.state_dir)? {
            Some(p) => {
                check_flags(&cfg, &p)?;
                info!(
                    epoch = p.ring.epoch,
                    partitions = p.ring.partitions(),
                    "loaded ring"
                );
                p
            }
            None => {
                let partitions = cfg.partitions.unwrap_or(1024);
                if !partitions.is_power_of_two() || partitions > 1 << 20 {
                    return Err(OpenError::Flags(format!(
                        "--partitions must be a power of two between 1 and 1048576, not {partitions}"
                    )));
                }
                let replicas = cfg.replicas.unwrap_or(2);
                if cfg.disks.is_empty() {
                    return Err(OpenError::Flags(format!(
                        "{} holds no ring yet: give the initial storage servers with --disk ADDR",
                        cfg.state_dir.display()
                    )));
                }
                let ring = Ring::new(partitions.trailing_zeros() as u8, replicas, &cfg.disks)
                    .map_err(|e| OpenError::Flags(format!("cannot build the ring: {e}")))?;
                let p = Persisted::new(ring);
                p.save(&cfg.state_dir)?;
                info!(
                    partitions,
                    replicas,
                    disks = cfg.disks.len(),
                    "created a new ring"
                );
                p
            }
        };
        let (users, created) = Users::open(&cfg.state_dir)?;
        if let Some(path) = created.admin_key_file {
            info!(
                path = %path.display(),
                "created the admin key (mode 0600); keep it, then remove it from the state directory"
            );
        }
        let containers = crate::containers::Containers::open(&cfg.state_dir)?;
        let health = Arc::new(Health::new());
        Ok(Arc::new(Proxy {
            users,
            containers,
            throttle: oss_proto::auth::Throttle::default(),
            backends: Backends::new(&cfg, health),
            cfg,
            state: Mutex::new(state),
            last_ts: AtomicU64::new(0),
            work: Notify::new(),
            admin: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            strays: Default::default(),
        }))
    }

    /// The ring's servers' disks as one file system: divided by the replica count.
    pub fn usage(&self) -> oss_proto::wire::Usage {
        let st = self.status();
        let replicas = u64::from(st.replicas.max(1));
        let (mut total, mut free, mut objects) = (0u64, 0u64, 0u64);
        for s in st.servers.iter().filter(|s| s.id.is_some()) {
            if let Some(d) = &s.stats {
                total += d.disk_total;
                free += d.disk_free;
                objects += d.objects;
            }
        }
        oss_proto::wire::Usage {
            total: total / replicas,
            free: free / replicas,
            objects: objects / replicas,
        }
    }

    /// A timestamp newer than any this proxy handed out before.
    pub fn next_timestamp(&self) -> Timestamp {
        let now = now_micros();
        let mut prev = self.last_ts.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.last_ts.compare_exchange_weak(
                prev,
                next,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Makes every later timestamp newer than `ts` (a version some server holds).
    pub fn observe_timestamp(&self, ts: Timestamp) {
        self.last_ts.fetch_max(ts, Ordering::SeqCst);
    }

    pub fn replicas(&self) -> usize {
        self.state.locked().ring.replicas as usize
    }

    pub fn part_power(&self) -> u8 {
        self.state.locked().ring.part_power
    }

    pub fn save(&self, st: &Persisted) {
        if let Err(e) = st.save(&self.cfg.state_dir) {
            // Keep serving: the in-memory state is right, the next save may succeed.
            warn!(error = %e, "cannot persist the cluster state");
        }
    }

    fn members_of(st: &Persisted, ids: &[DevId]) -> Vec<Member> {
        ids.iter()
            .filter_map(|&id| {
                st.addr_of(id).map(|a| Member {
                    id,
                    addr: a.to_owned(),
                })
            })
            .collect()
    }

    /// Every member of the partition's replica set, up or not.
    pub fn replica_members(&self, part: u32) -> Vec<Member> {
        let st = self.state.locked();
        Self::members_of(&st, &st.replica_set(part))
    }

    /// The members of a name's replica set that are up.
    fn live_members(&self, name: &ObjectName) -> (u32, Vec<Member>) {
        let part = name.partition(self.part_power());
        let live = self
            .replica_members(part)
            .into_iter()
            .filter(|m| self.backends.health.is_up(&m.addr))
            .collect();
        (part, live)
    }

    /// What a read consults: the live members of a name's replica set, or all of them when
    /// none is known to be up. "Failing" is a hint from one missed check or request (a
    /// loaded machine misses a deadline now and then); trying costs a timeout, while
    /// refusing outright fails a read that may well succeed. (Writes go to stand-ins
    /// instead.) A server that stays down is declared offline and leaves the replica set.
    /// Second: the live stand-ins that took writes of the partition and have not handed
    /// them back yet (the version an owner missed may be there only).
    pub fn read_members(&self, name: &ObjectName) -> (u32, Vec<Member>, Vec<Member>) {
        let (part, live) = self.live_members(name);
        let owners = if live.is_empty() {
            self.replica_members(part)
        } else {
            live
        };
        let strays = self
            .strays
            .holders(part)
            .into_iter()
            .filter(|id| !owners.iter().any(|m| m.id == *id))
            .filter_map(|id| self.addr_of(id).map(|addr| Member { id, addr }))
            .filter(|m| self.backends.health.is_up(&m.addr))
            .collect();
        (part, owners, strays)
    }

    /// The partition's owners in the current ring, if no move of it is queued (while one
    /// is, its replicas differ by design until the move is done).
    pub fn settled_owners(&self, part: u32) -> Option<Vec<Member>> {
        let st = self.state.locked();
        if st.queue.iter().any(|q| q.mv.part == part) {
            return None;
        }
        Some(Self::members_of(&st, st.ring.replicas_of(part)))
    }

    /// The address of a device of the ring (current or planned).
    pub fn addr_of(&self, id: DevId) -> Option<String> {
        self.state.locked().addr_of(id).map(str::to_owned)
    }

    /// Who replaces a write target that failed: a live member of the partition's current
    /// replica set not tried yet (the set changes when a server is declared offline while
    /// the write runs), else a stand-in.
    pub fn replacement(&self, part: u32, tried: &[DevId]) -> Option<Member> {
        self.replica_members(part)
            .into_iter()
            .find(|m| !tried.contains(&m.id) && self.backends.health.is_up(&m.addr))
            .or_else(|| self.stand_in(part, tried))
    }

    /// Where a write goes: the live members, plus stand-ins until there are `replicas`.
    pub fn write_targets(&self, name: &ObjectName) -> (u32, Vec<Member>) {
        let (part, mut live) = self.live_members(name);
        let need = self.replicas();
        let mut tried: Vec<DevId> = live.iter().map(|m| m.id).collect();
        while live.len() < need {
            match self.stand_in(part, &tried) {
                Some(h) => {
                    tried.push(h.id);
                    live.push(h);
                }
                None => break,
            }
        }
        // Handlers pop from the end; keep owners first in preference.
        live.reverse();
        (part, live)
    }

    /// A live server outside the partition's replica set and `exclude`, chosen the same
    /// way by every caller (the ring's handoff order). Recorded as a stray holder: a write
    /// is about to land there.
    pub fn stand_in(&self, part: u32, exclude: &[DevId]) -> Option<Member> {
        let m = self.pick_stand_in(part, exclude)?;
        self.strays.record(part, m.id);
        Some(m)
    }

    fn pick_stand_in(&self, part: u32, exclude: &[DevId]) -> Option<Member> {
        let st = self.state.locked();
        let mut excl: Vec<DevId> = exclude.to_vec();
        excl.extend(st.replica_set(part));
        excl.extend(st.leaving.iter().copied());
        loop {
            let id = st.target.handoff(part, &excl)?;
            excl.push(id);
            let addr = st.addr_of(id)?.to_owned();
            if self.backends.health.is_up(&addr) {
                return Some(Member { id, addr });
            }
        }
    }

    /// Servers whose listings together cover every partition.
    pub fn listing_servers(&self) -> Vec<Member> {
        let st = self.state.locked();
        let ids: BTreeSet<DevId> = st
            .ring
            .devices
            .iter()
            .chain(st.target.devices.iter())
            .map(|d| d.id)
            .collect();
        let ids: Vec<DevId> = ids.into_iter().collect();
        Self::members_of(&st, &ids)
            .into_iter()
            .filter(|m| self.backends.health.is_up(&m.addr))
            .collect()
    }

    /// Every address the health checker watches: ring members and servers outside it.
    pub fn watched(&self) -> Vec<String> {
        let st = self.state.locked();
        let mut v: BTreeSet<String> = st
            .ring
            .devices
            .iter()
            .chain(st.target.devices.iter())
            .map(|d| d.addr.clone())
            .collect();
        v.extend(st.outside.iter().map(|o| o.addr.clone()));
        v.into_iter().collect()
    }

    pub fn status(&self) -> ClusterStatus {
        let st = self.state.locked();
        let shares: std::collections::HashMap<DevId, u32> = st.ring.shares().into_iter().collect();
        let mut servers = Vec::new();
        let mut ids: Vec<DevId> = st.ring.devices.iter().map(|d| d.id).collect();
        for d in &st.target.devices {
            if !ids.contains(&d.id) {
                ids.push(d.id);
            }
        }
        for id in ids {
            let addr = st.addr_of(id).unwrap_or("?").to_owned();
            let live = self.backends.health.get(&addr);
            let up = live.as_ref().map(|l| l.is_up()).unwrap_or(true);
            let leaving = st.leaving.contains(&id);
            let outside = st.outside.iter().find(|o| o.addr == addr);
            let (state, since) = match (leaving, up, outside) {
                (true, _, Some(o)) => (o.state, o.since),
                (true, true, None) => (
                    ServerState::Draining,
                    live.as_ref().map(|l| l.changed_at).unwrap_or(0),
                ),
                (true, false, None) => (
                    ServerState::Offline,
                    live.as_ref().map(|l| l.changed_at).unwrap_or(0),
                ),
                (false, true, _) => (
                    ServerState::Online,
                    live.as_ref().map(|l| l.changed_at).unwrap_or(0),
                ),
                (false, false, _) => (
                    ServerState::Suspect,
                    live.as_ref().map(|l| l.changed_at).unwrap_or(0),
                ),
            };
            servers.push(ServerStatus {
                id: Some(id),
                addr,
                state,
                since,
                partitions: shares.get(&id).copied().unwrap_or(0),
                stats: live.and_then(|l| l.stats),
            });
        }
        for o in &st.outside {
            if servers.iter().any(|s| s.addr == o.addr) {
                continue;
            }
            servers.push(ServerStatus {
                id: None,
                addr: o.addr.clone(),
                state: o.state,
                since: o.since,
                partitions: 0,
                stats: self.backends.health.get(&o.addr).and_then(|l| l.stats),
            });
        }
        // A move is done when its old copy is deleted too (on servers that are up).
        let mut jobs = st.jobs.clone();
        for d in &st.drops {
            if let Some(j) = jobs.get_mut(d.job) {
                if self.backends.health.is_up(&d.addr) {
                    j.running = true;
                }
            }
        }
        ClusterStatus {
            epoch: st.ring.epoch,
            partitions: st.ring.partitions(),
            replicas: st.ring.replicas,
            servers,
            jobs,
            replicator: self.strays.status(),
        }
    }

    /// Starts a job and returns its index in `jobs`.
    pub fn start_job(st: &mut Persisted, what: String, total: u64) -> usize {
        // Forget old finished jobs, keeping indices of running ones valid.
        if st.jobs.len() >= JOBS_KEPT && st.jobs.iter().all(|j| !j.running) && st.drops.is_empty() {
            let keep_from = st.jobs.len() + 1 - JOBS_KEPT;
            st.jobs.drain(..keep_from);
        }
        st.jobs.push(Progress {
            what,
            done: 0,
            total,
            bytes: 0,
            running: true,
            started: now_micros(),
            finished: 0,
            errors: 0,
        });
        st.jobs.len() - 1
    }

    /// Queues the moves from the current target to `new_target`. A new move of a slot that a
    /// queued move is still bringing to its `from` device is merged into that queued move
    /// (A→X then X→Y becomes A→Y), so a plan never depends on a server that has left.
    pub fn enqueue(st: &mut Persisted, new_target: Ring, kind: MoveKind, what: String) -> usize {
        let moves = Ring::moves(&st.target, &new_target);
        let job = Self::start_job(st, what, 0);
        let mut added = 0u64;
        for mv in moves {
            let pending = st
                .queue
                .iter_mut()
                .find(|q| q.mv.part == mv.part && q.mv.replica == mv.replica && q.mv.to == mv.from);
            match pending {
                Some(q) => q.mv.to = mv.to,
                None => {
                    st.queue.push(QueuedMove {
                        mv,
                        kind: kind.clone(),
                        job,
                    });
                    added += 1;
                }
            }
        }
        // A merged move may now lead back where it started; a job left without moves
        // (this one included, if nothing had to move) is done.
        let had: BTreeSet<usize> = st.queue.iter().map(|q| q.job).chain([job]).collect();
        st.queue.retain(|q| q.mv.from != q.mv.to);
        st.jobs[job].total = added;
        st.target = new_target;
        for j in had {
            if !st.queue.iter().any(|q| q.job == j) {
                finish_job(st, j);
            }
        }
        job
    }

    /// `oss add-disk`: a new server takes its fair share; only those partitions move.
    pub async fn add_disk(self: &Arc<Self>, addr: String) -> Result<(), WireError> {
        let _admin = self.admin.lock().await;
        let addr = normalize_addr(&addr)?;
        {
            let st = self.state.locked();
            if st.target.device_by_addr(&addr).is_some() {
                return Err(WireError::Refused(format!("{addr} is already in the ring")));
            }
            if st.ring.device_by_addr(&addr).is_some() {
                return Err(WireError::Refused(format!(
                    "{addr} is still leaving the ring; wait for that to finish"
                )));
            }
        }
        self.backends.ping(&addr).await.map_err(|e| {
            WireError::Refused(format!("cannot add {addr}: disk check failed: {e}"))
        })?;
        // A server that comes back after being re-homed: push whatever only it holds to
        // the owners and drop its stale copies before it joins as a new server.
        let back = {
            let st = self.state.locked();
            st.outside.iter().any(|o| o.addr == addr && !o.cleaned)
        };
        if back {
            crate::repair::clean_returned(self, &addr)
                .await
                .map_err(|e| {
                    WireError::Unavailable(format!("cannot clean up {addr} before adding it: {e}"))
                })?;
        }
        let mut st = self.state.locked();
        let new_target = st
            .target
            .with_device_added(&addr)
            .map_err(|e| WireError::Refused(format!("cannot add {addr}: {e}")))?;
        st.outside.retain(|o| o.addr != addr);
        let job = Self::enqueue(
            &mut st,
            new_target,
            MoveKind::Rebalance,
            format!("add {addr}"),
        );
        info!(%addr, moves = st.jobs[job].total, "add-disk planned");
        self.save(&st);
        drop(st);
        self.backends.health.forget(&addr);
        self.work.notify_one();
        Ok(())
    }

    /// `oss remove-disk`: drain a server (or rebuild its data if it is offline), then forget it.
    pub async fn remove_disk(self: &Arc<Self>, addr: String) -> Result<(), WireError> {
        let _admin = self.admin.lock().await;
        let addr = normalize_addr(&addr)?;
        let up = self.backends.health.is_up(&addr);
        let mut st = self.state.locked();
        let Some(dev) = st.target.device_by_addr(&addr).cloned() else {
            if st.ring.device_by_addr(&addr).is_some() {
                return Err(WireError::Refused(format!(
                    "{addr} is already leaving the ring"
                )));
            }
            if st.outside.iter().any(|o| o.addr == addr) {
                // Not in the ring any more: forget it.
                st.outside.retain(|o| o.addr != addr);
                self.save(&st);
                return Ok(());
            }
            return Err(WireError::Refused(format!("{addr} is not in the ring")));
        };
        let left = st.target.devices.len() - 1;
        if left < st.target.replicas as usize {
            return Err(WireError::Refused(format!(
                "removing {addr} would leave {left} servers for {} replicas",
                st.target.replicas
            )));
        }
        let new_target = st
            .target
            .with_device_removed(dev.id)
            .map_err(|e| WireError::Refused(format!("cannot remove {addr}: {e}")))?;
        let kind = if up {
            MoveKind::Rebalance
        } else {
            MoveKind::Refill
        };
        st.leaving.push(dev.id);
        let job = Self::enqueue(&mut st, new_target, kind, format!("remove {addr}"));
        info!(%addr, moves = st.jobs[job].total, "remove-disk planned");
        crate::worker::forget_finished_leavers(&mut st);
        self.save(&st);
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    /// A server missed its checks for `offline_after`: re-home its partitions.
    pub async fn declare_offline(self: &Arc<Self>, addr: &str) {
        let _admin = self.admin.lock().await;
        let mut st = self.state.locked();
        let Some(dev) = st.target.device_by_addr(addr).cloned() else {
            return;
        };
        // Moves that were taking data from it now copy from the surviving replica.
        for q in st.queue.iter_mut() {
            if q.mv.from == dev.id {
                q.kind = MoveKind::Refill;
            }
        }
        let since = now_micros();
        st.outside.retain(|o| o.addr != addr);
        st.outside.push(OutsideServer {
            addr: addr.to_owned(),
            state: ServerState::Offline,
            since,
            cleaned: false,
        });
        match st.target.with_device_removed(dev.id) {
            Ok(new_target) => {
                st.leaving.push(dev.id);
                let job = Self::enqueue(
                    &mut st,
                    new_target,
                    MoveKind::Refill,
                    format!("refill after {addr} went offline"),
                );
                warn!(
                    server = addr,
                    moves = st.jobs[job].total,
                    "server declared offline; re-homing its partitions"
                );
            }
            Err(e) => {
                warn!(server = addr, error = %e, "server declared offline but its partitions cannot be re-homed");
            }
        }
        crate::worker::forget_finished_leavers(&mut st);
        self.save(&st);
        drop(st);
        self.work.notify_one();
    }
}

pub fn finish_job(st: &mut Persisted, job: usize) {
    if let Some(j) = st.jobs.get_mut(job) {
        if j.running {
            j.running = false;
            j.finished = now_micros();
        }
    }
}

fn check_flags(cfg: &Config, p: &Persisted) -> Result<(), OpenError> {
    let dir = cfg.state_dir.display();
    if let Some(n) = cfg.partitions {
        if n != p.ring.partitions() {
            return Err(OpenError::Flags(format!(
                "{dir} holds a ring of {} partitions; --partitions {n} contradicts it (the persisted ring is the truth: drop the flag)",
                p.ring.partitions()
            )));
        }
    }
    if let Some(r) = cfg.replicas {
        if r != p.ring.replicas {
            return Err(OpenError::Flags(format!(
                "{dir} holds a ring of {} replicas; --replicas {r} contradicts it",
                p.ring.replicas
            )));
        }
    }
    if !cfg.disks.is_empty() {
        let have: BTreeSet<&str> = p.target.devices.iter().map(|d| d.addr.as_str()).collect();
        let want: BTreeSet<&str> = cfg.disks.iter().map(|s| s.as_str()).collect();
        if have != want {
            // The ring changed since the first start (add-disk, remove-disk, an offline
            // server re-homed): the persisted ring is the truth, the flags are history.
            warn!(
                ring = %have.into_iter().collect::<Vec<_>>().join(","),
                flags = %want.into_iter().collect::<Vec<_>>().join(","),
                "--disk flags differ from the persisted ring; they are ignored (use oss add-disk / remove-disk)"
            );
        }
    }
    Ok(())
}

/// `HOST:PORT` as given, checked for shape; the disk check proves it further.
pub fn normalize_addr(addr: &str) -> Result<String, WireError> {
    let a = addr.trim();
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(a.to_owned())
        }
        _ => Err(WireError::BadRequest(format!(
            "{addr:?} is not a HOST:PORT address"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_secret() -> oss_proto::auth::Key {
        oss_proto::auth::Key::from_text(&[b's'; 40]).unwrap()
    }

    #[test]
    fn timestamps_strictly_increase() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path(), test_secret());
        cfg.disks = vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()];
        cfg.partitions = Some(16);
        let p = Proxy::open(cfg).unwrap();
        let mut last = 0;
        for _ in 0..10_000 {
            let t = p.next_timestamp();
            assert!(t > last);
            last = t;
        }
    }

    #[test]
    fn observed_timestamps_push_the_clock_forward() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path(), test_secret());
        cfg.disks = vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()];
        cfg.partitions = Some(16);
        let p = Proxy::open(cfg).unwrap();
        let future = now_micros() + 3_600_000_000;
        p.observe_timestamp(future);
        assert!(p.next_timestamp() > future);
    }

    #[test]
    fn contradicting_flags_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path(), test_secret());
        cfg.disks = vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()];
        cfg.partitions = Some(16);
        Proxy::open(cfg.clone()).unwrap();
        // Same flags, or none: fine.
        Proxy::open(cfg.clone()).unwrap();
        Proxy::open(Config::new(dir.path(), test_secret())).unwrap();
        let mut bad = cfg.clone();
        bad.partitions = Some(32);
        let e = Proxy::open(bad).err().unwrap().to_string();
        assert!(e.contains("16 partitions"), "{e}");
        // --disk only matters on the first start: different ones are ignored, not refused.
        let mut other = cfg.clone();
        other.disks.push("127.0.0.1:3".into());
        assert_eq!(
            Proxy::open(other)
                .unwrap()
                .state
                .lock()
                .unwrap()
                .ring
                .devices
                .len(),
            2
        );
        let mut bad = cfg;
        bad.replicas = Some(3);
        assert!(Proxy::open(bad).is_err());
    }

    #[test]
    fn first_start_needs_disks_and_a_power_of_two() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Proxy::open(Config::new(dir.path(), test_secret())).is_err());
        let mut cfg = Config::new(dir.path(), test_secret());
        cfg.disks = vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()];
        cfg.partitions = Some(1000);
        assert!(Proxy::open(cfg).is_err());
    }

    #[test]
    fn addresses() {
        assert!(normalize_addr("127.0.0.1:8081").is_ok());
        assert!(normalize_addr("localhost:1").is_ok());
        assert!(normalize_addr("nope").is_err());
        assert!(normalize_addr(":80").is_err());
        assert!(normalize_addr("h:0").is_err());
        assert!(normalize_addr("h:99999").is_err());
    }

    /// Plans a sequence of ring changes the way the admin operations do and runs the queued
    /// moves with the worker's own selection and flip functions, checking the live ring at
    /// every step: the plan must always converge to the target, and replicas must stay on
    /// distinct servers throughout.
    #[test]
    fn plans_converge_even_when_servers_leave_mid_move() {
        use crate::worker::{next_move, record_flip};
        let addrs: Vec<String> = (1..=5).map(|i| format!("127.0.0.1:{i}")).collect();
        let ring = Ring::new(6, 2, &addrs[..4]).unwrap();
        let mut st = Persisted::new(ring);
        let run = |st: &mut Persisted, limit: usize| {
            for _ in 0..limit {
                let Some(q) = next_move(st) else { break };
                assert_ne!(q.mv.from, q.mv.to);
                record_flip(st, &q, 0).unwrap();
                for row in &st.ring.assignment {
                    assert!(row[0] != row[1], "two replicas on one server: {row:?}");
                }
            }
        };
        // Add a fifth server, run part of it; then server 0 dies; then server 1 dies while
        // server 0's refill is still running.
        let t = st.target.with_device_added(&addrs[4]).unwrap();
        Proxy::enqueue(&mut st, t, MoveKind::Rebalance, "add".into());
        run(&mut st, 10);
        // Each flip of a rebalance leaves its old copy to delete, persisted with the flip.
        assert_eq!(st.drops.len(), 10);
        assert!(st.drops.iter().all(|d| d.job == 0 && d.addr != addrs[4]));
        let t = st.target.with_device_removed(0).unwrap();
        st.leaving.push(0);
        Proxy::enqueue(&mut st, t, MoveKind::Refill, "refill 0".into());
        run(&mut st, 20);
        let t = st.target.with_device_removed(1).unwrap();
        st.leaving.push(1);
        Proxy::enqueue(&mut st, t, MoveKind::Refill, "refill 1".into());
        st.target.validate().unwrap();
        run(&mut st, 10_000);
        assert!(st.queue.is_empty());
        assert_eq!(st.ring.assignment, st.target.assignment);
        assert!(
            st.ring.assignment.iter().flatten().all(|&d| d >= 2),
            "servers 0 and 1 hold nothing"
        );
        assert_eq!(st.ring.devices.len(), 3);
        assert!(st.jobs.iter().all(|j| !j.running));
        st.ring.validate().unwrap();
    }

    #[test]
    fn a_move_chain_is_merged() {
        let addrs: Vec<String> = (1..=4).map(|i| format!("127.0.0.1:{i}")).collect();
        let mut st = Persisted::new(Ring::new(4, 2, &addrs[..3]).unwrap());
        let t = st.target.with_device_added(&addrs[3]).unwrap();
        Proxy::enqueue(&mut st, t, MoveKind::Rebalance, "add".into());
        let queued = st.queue.len();
        assert!(queued > 0);
        // The new server leaves before anything moved: every move to it becomes a move to
        // its replacement or disappears; none still names it.
        let t = st.target.with_device_removed(3).unwrap();
        Proxy::enqueue(&mut st, t, MoveKind::Refill, "refill".into());
        assert!(st.queue.iter().all(|q| q.mv.to != 3 && q.mv.from != 3));
        assert!(st.queue.len() <= queued);
    }
}
