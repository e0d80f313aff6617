//! The auditor: re-reads every object at a bounded rate, checking each block's CRC and the
//! MD5, and quarantines what fails (Swift's object auditor, one full-read scanner).
//!
//! One pass runs at a time. A pass asked for over the wire waits for a running one to end
//! and then runs its own, so it covers everything stored before it was asked. The same pass
//! reclaims tombstones older than [`crate::store::RECLAIM_AGE`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oss_proto::wire::{now_micros, AuditStats};

use crate::error::StoreError;
use crate::store::{AuditOutcome, Store};

pub struct Auditor {
    store: Arc<Store>,
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    pass: tokio::sync::Mutex<()>,
    stats: Mutex<AuditStats>,
    cancel: Arc<AtomicBool>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub objects: u64,
    pub bytes: u64,
    pub corrupt: u64,
    pub reclaimed: u64,
    pub errors: u64,
    pub cancelled: bool,
}

impl Auditor {
    pub fn new(store: Arc<Store>, rate: u64) -> Self {
        Auditor {
            store,
            rate,
            pass: tokio::sync::Mutex::new(()),
            stats: Mutex::new(AuditStats::default()),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stats so far, with the store's quarantine count (which includes Get and Check finds).
    pub fn stats(&self) -> AuditStats {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.quarantined_total = self.store.quarantined_total();
        s
    }

    /// Stops a running pass soon (at the next piece) and every later one.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Runs one full pass (after any running one) and answers the stats after it.
    pub async fn run_pass(&self) -> Result<AuditStats, StoreError> {
        let _one_at_a_time = self.pass.lock().await;
        let store = self.store.clone();
        let cancel = self.cancel.clone();
        let rate = self.rate;
        let report = tokio::task::spawn_blocking(move || pass(&store, rate, &cancel))
            .await
            .map_err(|e| StoreError::Internal(format!("audit pass failed: {e}")))?;
        tracing::info!(
            objects = report.objects,
            bytes = report.bytes,
            corrupt = report.corrupt,
            reclaimed = report.reclaimed,
            errors = report.errors,
            cancelled = report.cancelled,
            "audit pass done"
        );
        if !report.cancelled {
            let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            s.passes += 1;
            s.last_pass_end = now_micros();
            s.last_pass_objects = report.objects;
            s.last_pass_bytes = report.bytes;
        }
        Ok(self.stats())
    }

    /// A pass every `interval` (the first one after one interval, to keep startup light).
    pub async fn run_periodic(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if self.cancel.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = self.run_pass().await {
                tracing::error!(error = %e, "audit pass failed");
            }
        }
    }
}

/// Keeps a reader at or under `rate` bytes per second on average over the pass.
struct Limiter {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Limiter {
    fn consume(&mut self, n: u64) {
        if self.rate == 0 {
            return;
        }
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

fn pass(store: &Store, rate: u64, cancel: &AtomicBool) -> PassReport {
    let mut entries = store.snapshot();
    // Directory order: neighbours on disk are read one after the other.
    entries.sort_by(|a, b| (a.part, &a.meta.name).cmp(&(b.part, &b.meta.name)));
    let mut limiter = Limiter {
        rate,
        start: Instant::now(),
        bytes: 0,
    };
    let mut r = PassReport::default();
    let now = now_micros();
    for e in &entries {
        if cancel.load(Ordering::Relaxed) {
            r.cancelled = true;
            break;
        }
        let outcome = store.audit_one(e, now, |n| {
            limiter.consume(n);
            !cancel.load(Ordering::Relaxed)
        });
        match outcome {
            Ok(AuditOutcome::Good { bytes }) => {
                r.objects += 1;
                r.bytes += bytes;
            }
            Ok(AuditOutcome::Corrupt) => {
                r.objects += 1;
                r.corrupt += 1;
            }
            Ok(AuditOutcome::Reclaimed) => r.reclaimed += 1,
            Ok(AuditOutcome::Skipped) => {}
            Err(err) => {
                tracing::warn!(name = %e.meta.name, error = %err, "audit could not check an object");
                r.errors += 1;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_holds_the_rate() {
        let mut l = Limiter {
            rate: 10_000_000,
            start: Instant::now(),
            bytes: 0,
        };
        for _ in 0..20 {
            l.consume(100_000);
        }
        // 2 MB at 10 MB/s: 200 ms.
        assert!(l.start.elapsed() >= Duration::from_millis(195));
        let mut free = Limiter {
            rate: 0,
            start: Instant::now(),
            bytes: 0,
        };
        free.consume(u64::MAX);
        assert!(free.start.elapsed() < Duration::from_millis(50));
    }
}
