//! `oss bench`: a load generator on the client library, so process start-up does not
//! dominate what is measured. Phases run one after the other; within a phase,
//! `--concurrency` tasks share one [`Client`] and each holds its own pooled connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, ReadBuf};

use oss_proto::client::Client;
use oss_proto::name::{validate_part, Part};
use oss_proto::{ObjectName, WireError};

use crate::args::{BenchArgs, Phase};
use crate::error::{self, CliError};
use crate::fmt;
use crate::io::emit;
use crate::Ctx;

/// The name of object `i`; fixed, so `--keep` then `--phases download` finds them again.
pub fn object_name(user: &str, i: usize) -> ObjectName {
    ObjectName::new(user, &format!("bench-{i:06}")).expect("validated user, fixed file name")
}

/// Deterministic pseudo-random bytes (xorshift64*), generated as they are read, so a
/// large object never sits in memory and compresses like real data would not.
pub struct Pattern {
    state: u64,
    left: u64,
    /// Bytes of the current 64-bit word not yet handed out.
    word: [u8; 8],
    word_pos: usize,
}

impl Pattern {
    pub fn new(seed: u64, len: u64) -> Self {
        Pattern {
            // Never zero: xorshift would stay at zero forever.
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
            word: [0; 8],
            word_pos: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()
    }

    pub fn fill(&mut self, out: &mut [u8]) -> usize {
        let n = (out.len() as u64).min(self.left) as usize;
        for b in &mut out[..n] {
            if self.word_pos == 8 {
                self.word = self.next_word();
                self.word_pos = 0;
            }
            *b = self.word[self.word_pos];
            self.word_pos += 1;
        }
        self.left -= n as u64;
        n
    }
}

impl AsyncRead for Pattern {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = this.fill(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// What one timed phase measured.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub phase: Phase,
    pub ops: usize,
    pub bytes: u64,
    pub wall: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
    /// Entries returned, for the list phase.
    pub entries: Option<usize>,
}

impl PhaseResult {
    pub fn ops_per_s(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.ops as f64 / s
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let secs = self.wall.as_secs_f64();
        let mut v = json!({
            "ops": self.ops,
            "seconds": secs,
            "ops_per_s": self.ops_per_s(),
            "p50_ms": percentile_ms(&self.latencies, 50.0),
            "p99_ms": percentile_ms(&self.latencies, 99.0),
        });
        if self.bytes > 0 {
            v["bytes"] = json!(self.bytes);
            v["mb_per_s"] = json!(if secs > 0.0 {
                self.bytes as f64 / 1e6 / secs
            } else {
                0.0
            });
        }
        if let Some(n) = self.entries {
            v["ms"] = json!(secs * 1000.0);
            v["entries"] = json!(n);
        }
        v
    }

    pub fn line(&self) -> String {
        let secs = self.wall.as_secs_f64();
        if let Some(n) = self.entries {
            return format!(
                "{:<9} 1 call, {n} entries in {:.1} ms",
                self.phase.as_str(),
                secs * 1000.0
            );
        }
        let mut s = format!(
            "{:<9} {} ops in {}  {:.1} ops/s",
            self.phase.as_str(),
            self.ops,
            fmt::duration(secs),
            self.ops_per_s()
        );
        if self.bytes > 0 {
            s.push_str(&format!("  {}", fmt::rate(self.bytes, secs)));
        }
        s.push_str(&format!(
            "  p50 {:.1} ms  p99 {:.1} ms",
            percentile_ms(&self.latencies, 50.0),
            percentile_ms(&self.latencies, 99.0)
        ));
        s
    }
}

pub async fn bench(ctx: &Ctx, a: &BenchArgs) -> Result<()> {
    validate_part(&a.user, Part::User).map_err(|e| error::invalid_name(&e))?;
    let phases: Vec<Phase> = a
        .phases
        .iter()
        .copied()
        .filter(|p| !(a.keep && *p == Phase::Delete))
        .collect();
    if !a.json {
        emit(&format!(
            "bench: {} objects of {}, concurrency {}, user {}, proxy {}\n",
            a.objects,
            fmt::bytes(a.size),
            a.concurrency,
            a.user,
            ctx.proxy
        ))?;
    }
    let mut results = Vec::new();
    for p in phases {
        let r = match p {
            Phase::List => list_phase(ctx, &a.user).await?,
            _ => run_phase(ctx, p, a).await?,
        };
        if !a.json {
            emit(&format!("{}\n", r.line()))?;
        }
        results.push(r);
    }
    if a.json {
        let mut phases = serde_json::Map::new();
        for r in &results {
            phases.insert(r.phase.as_str().into(), r.to_json());
        }
        let v = json!({
            "proxy": ctx.proxy,
            "user": a.user,
            "objects": a.objects,
            "size": a.size,
            "concurrency": a.concurrency,
            "phases": phases,
        });
        emit(&format!("{v}\n"))?;
    }
    Ok(())
}

async fn list_phase(ctx: &Ctx, user: &str) -> Result<PhaseResult> {
    let t = Instant::now();
    let entries = match ctx.client.list(user).await {
        Ok(v) => v.len(),
        Err(oss_proto::Error::Remote(WireError::NotFound)) => 0,
        Err(e) => return Err(ctx.fail(&e, user).into()),
    };
    let wall = t.elapsed();
    Ok(PhaseResult {
        phase: Phase::List,
        ops: 1,
        bytes: 0,
        wall,
        latencies: vec![wall],
        entries: Some(entries),
    })
}

/// One object operation of a phase; returns the body bytes moved.
async fn one_op(
    client: &Client,
    phase: Phase,
    name: &ObjectName,
    i: usize,
    size: u64,
) -> oss_proto::wire::Result<u64> {
    match phase {
        Phase::Upload => {
            let mut body = Pattern::new(i as u64, size);
            client
                .upload(name, Some(size), &mut body, &mut |_| {})
                .await
                .map(|m| m.size)
        }
        // The library checks the MD5 of every full download.
        Phase::Download => client
            .download(name, 0, None, &mut tokio::io::sink(), &mut |_| {})
            .await
            .map(|m| m.size),
        Phase::Delete => match client.delete(name).await? {
            true => Ok(0),
            false => Err(oss_proto::Error::Remote(WireError::NotFound)),
        },
        Phase::List => unreachable!("the list phase is one call"),
    }
}

pub async fn run_phase(ctx: &Ctx, phase: Phase, a: &BenchArgs) -> Result<PhaseResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.min(a.objects.max(1) as u64) {
        let (client, next, stop) = (ctx.client.clone(), next.clone(), stop.clone());
        let (user, n, size) = (a.user.clone(), a.objects, a.size);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || stop.load(Ordering::Relaxed) {
                    return Ok((lat, bytes));
                }
                let name = object_name(&user, i);
                let t = Instant::now();
                match one_op(&client, phase, &name, i, size).await {
                    Ok(b) => {
                        lat.push(t.elapsed());
                        bytes += b;
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err((name, e));
                    }
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(a.objects);
    let mut bytes = 0;
    let mut first_err = None;
    for t in tasks {
        match t.await? {
            Ok((l, b)) => {
                latencies.extend(l);
                bytes += b;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let wall = start.elapsed();
    if let Some((name, e)) = first_err {
        let why = ctx.fail(&e, name.as_str());
        return Err(CliError::new(format!("bench {}: {}", phase.as_str(), why.msg)).into());
    }
    latencies.sort();
    Ok(PhaseResult {
        phase,
        ops: latencies.len(),
        bytes,
        wall,
        latencies,
        entries: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn names_are_fixed_and_distinct() {
        assert_eq!(object_name("bench", 7).as_str(), "bench/bench-000007");
        assert_ne!(object_name("u", 1), object_name("u", 2));
    }

    #[tokio::test]
    async fn pattern_is_deterministic_and_sized() {
        let mut a = Vec::new();
        Pattern::new(1, 100_003).read_to_end(&mut a).await.unwrap();
        let mut b = Vec::new();
        Pattern::new(1, 100_003).read_to_end(&mut b).await.unwrap();
        let mut c = Vec::new();
        Pattern::new(2, 100_003).read_to_end(&mut c).await.unwrap();
        assert_eq!(a.len(), 100_003);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Not trivially compressible: every byte value shows up.
        let mut seen = [false; 256];
        a.iter().for_each(|&x| seen[x as usize] = true);
        assert!(seen.iter().all(|&s| s));
        let mut z = Vec::new();
        Pattern::new(0, 0).read_to_end(&mut z).await.unwrap();
        assert!(z.is_empty());
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
        assert_eq!(percentile_ms(&[Duration::from_millis(3)], 99.0), 3.0);
    }

    #[test]
    fn phase_json() {
        let r = PhaseResult {
            phase: Phase::Upload,
            ops: 10,
            bytes: 10_000_000,
            wall: Duration::from_secs(2),
            latencies: vec![Duration::from_millis(5); 10],
            entries: None,
        };
        let v = r.to_json();
        assert_eq!(v["ops_per_s"], 5.0);
        assert_eq!(v["mb_per_s"], 5.0);
        assert_eq!(v["p50_ms"], 5.0);
        assert!(r
            .line()
            .starts_with("upload    10 ops in 2.00s  5.0 ops/s  5.0 MB/s"));
    }
}
