//! Liveness of storage servers: disk checks (heartbeats) plus failed requests.
//!
//! A server is `Up` until a check or a request fails; then it is `Failing` since that
//! moment. Any success makes it `Up` again. Only a server that stays failing for the whole
//! `offline_after` window is declared offline (by the cluster, which moves its
//! partitions): that window is the hysteresis that keeps a flapping server from causing
//! churn, since one good answer restarts it.

use oss_proto::sync::Locked;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oss_proto::wire::{now_micros, DiskStats, Timestamp};

#[derive(Debug, Clone)]
pub struct Liveness {
    /// `None` while up; the first failure of the current failing streak otherwise.
    pub failing_since: Option<Instant>,
    /// Wall-clock twin of the last state change, for `oss status`.
    pub changed_at: Timestamp,
    pub last_error: Option<String>,
    pub stats: Option<DiskStats>,
}

impl Liveness {
    fn new() -> Self {
        Liveness {
            failing_since: None,
            changed_at: now_micros(),
            last_error: None,
            stats: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.failing_since.is_none()
    }

    pub fn failing_for(&self, now: Instant) -> Option<Duration> {
        self.failing_since.map(|s| now.saturating_duration_since(s))
    }
}

#[derive(Default)]
pub struct Health {
    servers: Mutex<HashMap<String, Liveness>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn request_failed(&self, addr: &str, why: &str) {
        let mut m = self.servers.locked();
        let l = m.entry(addr.to_owned()).or_insert_with(Liveness::new);
        if l.failing_since.is_none() {
            tracing::warn!(server = addr, error = why, "storage server failing");
            l.failing_since = Some(Instant::now());
            l.changed_at = now_micros();
        }
        l.last_error = Some(why.to_owned());
    }

    pub fn check_ok(&self, addr: &str, stats: DiskStats) {
        let mut m = self.servers.locked();
        let l = m.entry(addr.to_owned()).or_insert_with(Liveness::new);
        if l.failing_since.is_some() {
            tracing::info!(server = addr, "storage server answering again");
            l.failing_since = None;
            l.changed_at = now_micros();
        }
        l.stats = Some(stats);
    }

    /// Unknown servers count as up: the first failure will say otherwise.
    pub fn is_up(&self, addr: &str) -> bool {
        self.servers
            .lock()
            .unwrap()
            .get(addr)
            .map(|l| l.is_up())
            .unwrap_or(true)
    }

    pub fn get(&self, addr: &str) -> Option<Liveness> {
        self.servers.locked().get(addr).cloned()
    }

    pub fn forget(&self, addr: &str) {
        self.servers.locked().remove(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_success_resets_the_failing_streak() {
        let h = Health::new();
        assert!(h.is_up("a"));
        h.request_failed("a", "refused");
        assert!(!h.is_up("a"));
        let first = h.get("a").unwrap().failing_since.unwrap();
        h.request_failed("a", "refused again");
        assert_eq!(
            h.get("a").unwrap().failing_since,
            Some(first),
            "streak keeps its start"
        );
        h.check_ok("a", DiskStats::default());
        assert!(h.is_up("a"));
        assert!(h.get("a").unwrap().stats.is_some());
    }
}
