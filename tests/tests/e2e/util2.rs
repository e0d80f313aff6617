//! Helpers shared by [`crate::heal`] and [`crate::rebalance`]: sets of files with known
//! bytes, replica placement on disk, corruption of replica files, and polling `oss status
//! --json` (jobs, server states, epoch) with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use oss_tests::*;
use serde_json::Value;

/// name → the bytes it must download as.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Uploads `n` files `USER/fNNN` of pseudo-random sizes in `0..max_len`; panics on failure.
pub fn upload_set(c: &Cluster, user: &str, n: usize, seed: u64, max_len: usize) -> Files {
    let mut rng = XorShift::new(seed);
    let mut files = Files::new();
    for i in 0..n {
        let name = format!("{user}/f{i:03}");
        let len = rng.below(max_len as u64 + 1) as usize;
        let data = pseudo_random(seed.wrapping_mul(7919).wrapping_add(i as u64), len);
        upload_stdin(c, &name, &data);
        files.insert(name, data);
    }
    files
}

/// `oss upload NAME -` with `data` on stdin; panics on failure.
pub fn upload_stdin(c: &Cluster, name: &str, data: &[u8]) {
    c.oss_stdin(&["upload", name, "-"], data)
        .assert_ok(&format!("upload {name} ({} bytes)", data.len()));
}

/// Downloads every file and compares bytes; reports every failure at once.
pub fn assert_all_download(c: &Cluster, files: &Files, when: &str) {
    let mut bad = Vec::new();
    for (name, want) in files {
        match c.download_bytes(name) {
            Ok(got) if got == *want => {}
            Ok(got) => bad.push(format!(
                "{name}: wrong bytes ({} bytes md5 {}, want {} bytes md5 {})",
                got.len(),
                md5_hex(&got),
                want.len(),
                md5_hex(want)
            )),
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{when}: {} of {} files did not download correctly:\n{}",
        bad.len(),
        files.len(),
        bad.join("\n")
    );
}

/// The `.obj` files of `name` on the given servers only, as (server index, path).
pub fn replicas_on(c: &Cluster, name: &str, servers: &[usize]) -> Vec<(usize, PathBuf)> {
    c.find_replicas(name)
        .into_iter()
        .filter(|(s, _)| servers.contains(s))
        .collect()
}

/// Every file has exactly `replicas` `.obj` files among the `live` servers, on distinct
/// servers, each starting with the file's bytes. Reports every violation at once.
pub fn assert_placement(c: &Cluster, files: &Files, live: &[usize], when: &str) {
    let replicas = c.config.replicas as usize;
    let mut bad = Vec::new();
    for (name, data) in files {
        let reps = replicas_on(c, name, live);
        let servers: BTreeSet<usize> = reps.iter().map(|(s, _)| *s).collect();
        if reps.len() != replicas || servers.len() != replicas {
            bad.push(format!(
                "{name} (partition {}): {} replica files on live servers {:?}: {:?}",
                c.partition_of(name),
                reps.len(),
                live,
                reps.iter().map(|(s, _)| s).collect::<Vec<_>>()
            ));
            continue;
        }
        for (s, p) in &reps {
            if obj_is_tombstone(p) != Some(false) {
                bad.push(format!(
                    "{name}: replica on server {s} ({}) is not a readable live version",
                    p.display()
                ));
            }
            if !data_prefix_matches(p, data) {
                bad.push(format!(
                    "{name}: replica on server {s} ({}) does not hold the object's bytes",
                    p.display()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{when}: {} placement problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Whether an `.obj` file starts with `data` (layout: data at offset 0, then a footer).
pub fn data_prefix_matches(obj: &Path, data: &[u8]) -> bool {
    match std::fs::read(obj) {
        Ok(b) => b.len() >= data.len() && &b[..data.len()] == data,
        Err(_) => false,
    }
}

/// XORs the byte at `offset` of `path` with 0xFF, in place.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b)
        .unwrap_or_else(|e| panic!("read byte {offset} of {}: {e}", path.display()));
    b[0] ^= 0xFF;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

/// Runs `oss ARGS` and returns its output and how long it took (the harness kills it after
/// `hard_limit`).
pub fn timed_oss(c: &Cluster, args: &[&str], hard_limit: Duration) -> (Output, Duration) {
    let t = Instant::now();
    let out = c.oss_timeout(args, hard_limit);
    (out, t.elapsed())
}

// ---------------------------------------------------------------------------------------
// `oss status --json`

pub fn epoch(st: &Value) -> u64 {
    st["epoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no numeric epoch: {st}"))
}

pub fn jobs(st: &Value) -> Vec<Value> {
    st["jobs"].as_array().cloned().unwrap_or_default()
}

/// The server entry for `addr` in a status document.
pub fn server_entry(st: &Value, addr: &str) -> Option<Value> {
    st["servers"]
        .as_array()?
        .iter()
        .find(|s| s["addr"].as_str() == Some(addr))
        .cloned()
}

/// Ring partitions (replicas) held by `addr` per `oss status --json`.
pub fn server_partitions(st: &Value, addr: &str) -> u64 {
    server_entry(st, addr)
        .and_then(|s| s["partitions"].as_u64())
        .unwrap_or_else(|| panic!("{addr} not in status or without partitions: {st}"))
}

/// A short description of jobs and servers, for failure messages.
pub fn summary(st: &Value) -> String {
    let servers: Vec<String> = st["servers"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|s| format!("{}={}/{}", s["addr"], s["state"], s["partitions"]))
                .collect()
        })
        .unwrap_or_default();
    let jobs: Vec<String> = jobs(st)
        .iter()
        .map(|j| {
            format!(
                "[{} {}/{} running={} errors={}]",
                j["what"], j["done"], j["total"], j["running"], j["errors"]
            )
        })
        .collect();
    format!(
        "epoch {} servers {} jobs {}",
        st["epoch"],
        servers.join(" "),
        jobs.join(" ")
    )
}

/// Polls status until a job whose `what` contains `what` exists and is no longer running;
/// returns that job. Panics after `timeout` with the last status seen.
pub fn wait_job_finished(c: &Cluster, what: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = c.status_json();
        if let Some(j) = jobs(&st)
            .into_iter()
            .rev()
            .find(|j| j["what"].as_str().is_some_and(|w| w.contains(what)))
        {
            if j["running"] == Value::Bool(false) {
                return j;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no finished job {what:?} after {timeout:?}: {}",
            summary(&st)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls status until no job is running; returns the last status.
pub fn wait_no_running_jobs(c: &Cluster, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = c.status_json();
        if jobs(&st).iter().all(|j| j["running"] == Value::Bool(false)) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still running after {timeout:?}: {}",
            summary(&st)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts a finished job did all it planned, without errors.
pub fn assert_job_complete(job: &Value, what: &str) {
    assert_eq!(job["running"], Value::Bool(false), "{what}: {job}");
    assert_eq!(
        job["errors"].as_u64(),
        Some(0),
        "{what}: job had errors: {job}"
    );
    assert!(
        job["total"].as_u64().is_some() && job["done"] == job["total"],
        "{what}: job finished with done != total: {job}"
    );
}

/// Polls until the proxy reports `addr` in one of `states` (None in `states` = not listed).
pub fn wait_server_state(c: &Cluster, addr: &str, states: &[Option<&str>], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let st = c.status_json();
        let s = server_entry(&st, addr).and_then(|e| e["state"].as_str().map(str::to_owned));
        if states.contains(&s.as_deref()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not in state {states:?} after {timeout:?}: {}",
            summary(&st)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// The persisted ring (STATE/cluster.json), for checks the status cannot show: which
// servers hold which partition.

/// (epoch, device id → addr, per partition the device ids holding it).
pub struct RingView {
    pub epoch: u64,
    pub devices: BTreeMap<u64, String>,
    pub assignment: Vec<Vec<u64>>,
}

impl RingView {
    /// Partition → the set of addresses holding it.
    pub fn holders(&self) -> Vec<BTreeSet<String>> {
        self.assignment
            .iter()
            .map(|devs| {
                devs.iter()
                    .map(|d| {
                        self.devices
                            .get(d)
                            .cloned()
                            .unwrap_or_else(|| panic!("ring names unknown device {d}"))
                    })
                    .collect()
            })
            .collect()
    }
}

/// Reads `ring` from STATE/cluster.json.
pub fn read_ring(state_dir: &Path) -> RingView {
    let p = state_dir.join("cluster.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ring = &v["ring"];
    let devices = ring["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no ring.devices in {}", p.display()))
        .iter()
        .map(|d| {
            (
                d["id"].as_u64().expect("device id"),
                d["addr"].as_str().expect("device addr").to_owned(),
            )
        })
        .collect();
    let assignment = ring["assignment"]
        .as_array()
        .unwrap_or_else(|| panic!("no ring.assignment in {}", p.display()))
        .iter()
        .map(|row| {
            row.as_array()
                .expect("assignment row")
                .iter()
                .map(|d| d.as_u64().expect("device id"))
                .collect()
        })
        .collect();
    RingView {
        epoch: ring["epoch"].as_u64().unwrap_or(0),
        devices,
        assignment,
    }
}

/// Whether an `.obj` file is a tombstone (storaged's format 1: the footer ends with the
/// record length, its CRC and the magic "OSSOBJ01"; the record's last fields are the
/// timestamp varint, the `deleted` byte and the block size varint). None if unreadable.
pub fn obj_is_tombstone(path: &Path) -> Option<bool> {
    let b = std::fs::read(path).ok()?;
    let n = b.len();
    if n < 16 || &b[n - 8..] != b"OSSOBJ01" {
        return None;
    }
    let r = u32::from_le_bytes(b[n - 16..n - 12].try_into().ok()?) as usize;
    let rec = b.get(n.checked_sub(16 + r)?..n - 16)?;
    let mut i = 0usize;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *rec.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let _version = varint(&mut i)?;
    let name_len = varint(&mut i)? as usize;
    i += name_len;
    let _size = varint(&mut i)?;
    i += 16; // md5
    let _ts = varint(&mut i)?;
    rec.get(i).map(|&d| d == 1)
}

/// `oss list ARGS...` as its lines; panics unless it succeeds.
pub fn ls(c: &Cluster, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list"];
    all.extend_from_slice(args);
    let out = c.oss(&all);
    out.assert_ok(&format!("oss {}", all.join(" ")));
    out.stdout_str().lines().map(str::to_owned).collect()
}
