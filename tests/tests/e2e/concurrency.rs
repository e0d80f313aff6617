//! Many clients at once, through the real `oss` binary.
//!
//! Every body written is self-describing (`NAME#THREAD#SEQ#LEN\n` then pseudo-random bytes
//! derived from THREAD and SEQ), so any download can be checked on its own: whole, for this
//! name, and one of the versions somebody tried to write. Times of every operation's start
//! and end are recorded; the proxy stamps a write somewhere between the two, so when a write
//! W started after V's end, W is newer than V. That is enough to check, after the fact,
//! that no read was stale, that no acknowledged write was lost, and that the final state is
//! a newest write.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use oss_tests::*;

const THREADS: u32 = 16;
const OPS: u32 = 200;
/// Names every thread writes.
const SHARED: u32 = 6;
/// Names only one thread writes (so its model of them is exact).
const OWN: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Version {
    thread: u32,
    seq: u32,
}

fn body(name: &str, v: Version, len: usize) -> Vec<u8> {
    let mut b = format!("{name}#{}#{}#{len}\n", v.thread, v.seq).into_bytes();
    b.extend(pseudo_random(
        (u64::from(v.thread) << 32) | u64::from(v.seq),
        len,
    ));
    b
}

/// Which version `bytes` is, if it is exactly one whole version written for `name`.
fn parse_body(name: &str, bytes: &[u8]) -> Result<Version, String> {
    let nl = bytes
        .iter()
        .take(600)
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("no header in {} bytes", bytes.len()))?;
    let head = String::from_utf8_lossy(&bytes[..nl]).into_owned();
    let cols: Vec<&str> = head.rsplitn(4, '#').collect();
    if cols.len() != 4 || cols[3] != name {
        return Err(format!("header {head:?} is not one of {name}'s"));
    }
    let parse = |s: &str| s.parse::<u32>().map_err(|_| format!("bad header {head:?}"));
    let v = Version {
        thread: parse(cols[2])?,
        seq: parse(cols[1])?,
    };
    let len = parse(cols[0])? as usize;
    if bytes != body(name, v, len).as_slice() {
        return Err(format!(
            "{} bytes with header {head:?} are not that version (torn or mixed)",
            bytes.len()
        ));
    }
    Ok(v)
}

#[derive(Debug, Clone)]
enum Kind {
    Put(Version),
    Delete,
    Get(Option<Version>),
}

#[derive(Debug, Clone)]
struct Op {
    kind: Kind,
    start: Instant,
    end: Instant,
    /// Success (for a delete: success or "not found"; for a get: a valid answer).
    acked: bool,
}

enum Outcome {
    Ok(Vec<u8>),
    NotFound,
    Failed(String),
}

fn classify(out: &std::process::Output) -> Outcome {
    if out.status.success() {
        return Outcome::Ok(out.stdout.clone());
    }
    let err = out.stderr_str();
    if out.status.code() == Some(1) && err.to_lowercase().contains("not found") {
        Outcome::NotFound
    } else {
        Outcome::Failed(format!("{}: {}", out.status, err.trim_end()))
    }
}

/// A write that lost a race to a newer one may be refused as stale; that is not a loss.
fn is_stale_refusal(msg: &str) -> bool {
    msg.contains("newer")
}

struct ThreadLog {
    ops: HashMap<String, Vec<Op>>,
    errors: Vec<String>,
    stale_refusals: u32,
    own_model: HashMap<String, Option<Version>>,
}

fn client_thread(proxy: String, work: std::path::PathBuf, t: u32) -> ThreadLog {
    let mut rng = XorShift::new(0xC0FFEE + u64::from(t));
    let mut log = ThreadLog {
        ops: HashMap::new(),
        errors: Vec::new(),
        stale_refusals: 0,
        own_model: (0..OWN).map(|k| (format!("conc/t{t}-{k}"), None)).collect(),
    };
    let src = work.join(format!("src-{t}"));
    let oss = |args: &[&str], input: Option<Vec<u8>>| {
        oss_at(&proxy, args, input, Duration::from_secs(120))
    };
    for seq in 0..OPS {
        let own = rng.below(2) == 0;
        let name = if own {
            format!("conc/t{t}-{}", rng.below(u64::from(OWN)))
        } else {
            format!("conc/shared-{}", rng.below(u64::from(SHARED)))
        };
        let dice = rng.below(10);
        let start = Instant::now();
        let (kind, acked) = if dice < 4 {
            // Upload (an overwrite when the name exists).
            let v = Version { thread: t, seq };
            let len = if rng.below(10) == 0 {
                256 * 1024 + rng.below(350 * 1024) as usize
            } else {
                rng.below(16 * 1024) as usize
            };
            let data = body(&name, v, len);
            let out = if rng.below(2) == 0 {
                oss(&["upload", &name, "-"], Some(data))
            } else {
                std::fs::write(&src, &data).unwrap();
                oss(&["upload", &name, path_str(&src)], None)
            };
            let acked = match classify(&out) {
                Outcome::Ok(_) => {
                    if own {
                        log.own_model.insert(name.clone(), Some(v));
                    }
                    true
                }
                Outcome::Failed(m) if !own && is_stale_refusal(&m) => {
                    log.stale_refusals += 1;
                    false
                }
                Outcome::NotFound | Outcome::Failed(_) => {
                    log.errors.push(format!(
                        "t{t} op {seq}: upload {name}: {}",
                        out.stderr_str().trim()
                    ));
                    false
                }
            };
            (Kind::Put(v), acked)
        } else if dice < 8 {
            let out = oss(&["download", &name, "-"], None);
            let got = match classify(&out) {
                Outcome::Ok(bytes) => match parse_body(&name, &bytes) {
                    Ok(v) => Some(Some(v)),
                    Err(e) => {
                        log.errors
                            .push(format!("t{t} op {seq}: download {name}: {e}"));
                        None
                    }
                },
                Outcome::NotFound => Some(None),
                Outcome::Failed(m) => {
                    log.errors
                        .push(format!("t{t} op {seq}: download {name}: {m}"));
                    None
                }
            };
            if own {
                if let Some(g) = got {
                    let want = log.own_model[&name];
                    if g != want {
                        log.errors.push(format!(
                            "t{t} op {seq}: download {name} (one writer): got {g:?}, \
                             last acknowledged write was {want:?}"
                        ));
                    }
                }
            }
            (Kind::Get(got.flatten()), got.is_some())
        } else {
            let out = oss(&["delete", &name], None);
            let acked = match classify(&out) {
                Outcome::Ok(_) | Outcome::NotFound if !own => true,
                Outcome::Ok(_) | Outcome::NotFound => {
                    let existed = out.status.success();
                    let model = log.own_model[&name];
                    if existed != model.is_some() {
                        log.errors.push(format!(
                            "t{t} op {seq}: delete {name} (one writer): existed={existed}, \
                             model says {model:?}"
                        ));
                    }
                    log.own_model.insert(name.clone(), None);
                    true
                }
                Outcome::Failed(m) => {
                    log.errors
                        .push(format!("t{t} op {seq}: delete {name}: {m}"));
                    false
                }
            };
            (Kind::Delete, acked)
        };
        log.ops.entry(name).or_default().push(Op {
            kind,
            start,
            end: Instant::now(),
            acked,
        });
    }
    log
}

/// Checks one read of a name with several writers against the history of writes to it.
/// `found`: what it returned; `start`/`end`: when the read ran.
fn check_read(
    name: &str,
    ops: &[Op],
    found: Option<Version>,
    start: Instant,
    end: Instant,
) -> Result<(), String> {
    let put = |v: Version| {
        ops.iter()
            .find(|o| matches!(o.kind, Kind::Put(p) if p == v))
    };
    match found {
        Some(v) => {
            let Some(p) = put(v) else {
                return Err(format!("{name}: read {v:?}, which nobody wrote to it"));
            };
            if p.start > end {
                return Err(format!("{name}: read {v:?} before its upload started"));
            }
            // Stale: an acknowledged write that began after v's upload ended, and ended
            // before this read began, is newer and was durable — v cannot be the answer.
            if let Some(w) = ops.iter().find(|w| {
                w.acked
                    && matches!(w.kind, Kind::Put(_) | Kind::Delete)
                    && w.start > p.end
                    && w.end < start
            }) {
                return Err(format!(
                    "{name}: stale read of {v:?}; {:?} was newer and acknowledged before the read",
                    w.kind
                ));
            }
        }
        None => {
            // Lost write: an acknowledged upload that ended before the read began, and no
            // delete that could have come after it (began before the read ended and ended
            // after the upload began).
            for u in ops
                .iter()
                .filter(|u| u.acked && matches!(u.kind, Kind::Put(_)))
            {
                if u.end < start
                    && !ops
                        .iter()
                        .any(|x| matches!(x.kind, Kind::Delete) && x.end > u.start && x.start < end)
                {
                    return Err(format!(
                        "{name}: not found, but {:?} was acknowledged before the read and no \
                         delete could be newer",
                        u.kind
                    ));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn concurrent_clients_mixed_operations() {
    let c = Cluster::start(3, 64);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (proxy, work) = (c.proxy_addr(), c.work());
            thread::spawn(move || client_thread(proxy, work, t))
        })
        .collect();
    let logs: Vec<ThreadLog> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread panicked"))
        .collect();
    eprintln!(
        "{} operations by {THREADS} clients in {:?}",
        THREADS * OPS,
        t0.elapsed()
    );

    let mut errors: Vec<String> = logs.iter().flat_map(|l| l.errors.clone()).collect();
    let stale: u32 = logs.iter().map(|l| l.stale_refusals).sum();
    eprintln!("uploads refused as stale (lost a race): {stale}");

    // Every read of a shared name, checked against the whole history.
    let mut shared: HashMap<String, Vec<Op>> = HashMap::new();
    for l in &logs {
        for (n, ops) in &l.ops {
            if n.starts_with("conc/shared-") {
                shared
                    .entry(n.clone())
                    .or_default()
                    .extend(ops.iter().cloned());
            }
        }
    }
    let mut reads = 0;
    for (name, ops) in &shared {
        for o in ops {
            if let (Kind::Get(found), true) = (&o.kind, o.acked) {
                reads += 1;
                if let Err(e) = check_read(name, ops, *found, o.start, o.end) {
                    errors.push(e);
                }
            }
        }
    }
    assert!(
        reads > 100,
        "too few shared reads ({reads}) to mean anything"
    );

    // Final state, after every client finished.
    let after = Instant::now();
    for name in (0..SHARED).map(|k| format!("conc/shared-{k}")) {
        let ops = shared.get(&name).cloned().unwrap_or_default();
        let found = match c.download_bytes(&name) {
            Ok(bytes) => match parse_body(&name, &bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(format!("final {name}: {e}"));
                    continue;
                }
            },
            Err(e) if e.contains("not found") => None,
            Err(e) => {
                errors.push(format!("final {name}: {e}"));
                continue;
            }
        };
        if let Err(e) = check_read(&name, &ops, found, after, Instant::now()) {
            errors.push(format!("final state: {e}"));
        }
        check_replicas(&c, &name, found, &mut errors);
    }
    for l in &logs {
        for (name, want) in &l.own_model {
            let got = match c.download_bytes(name) {
                Ok(bytes) => parse_body(name, &bytes).map(Some),
                Err(e) if e.contains("not found") => Ok(None),
                Err(e) => Err(e),
            };
            match got {
                Ok(g) if g == *want => check_replicas(&c, name, g, &mut errors),
                Ok(g) => errors.push(format!(
                    "final {name} (one writer): got {g:?}, last acknowledged {want:?}"
                )),
                Err(e) => errors.push(format!("final {name}: {e}")),
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} violations, the first ones:\n{}",
        errors.len(),
        errors
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A live object has exactly two replica files, both holding the version that downloads.
fn check_replicas(c: &Cluster, name: &str, found: Option<Version>, errors: &mut Vec<String>) {
    let Some(v) = found else { return };
    let reps = c.find_replicas(name);
    if reps.len() != 2 {
        errors.push(format!("{name}: {} replica files: {reps:?}", reps.len()));
    }
    for (s, p) in reps {
        let bytes = std::fs::read(&p).unwrap_or_default();
        let held = replica_version(name, &bytes);
        if held != Some(v) {
            errors.push(format!(
                "{name}: server {s} holds {held:?}, the proxy serves {v:?}"
            ));
        }
    }
}

/// The version whose bytes start an `.obj` file (data at offset 0, footer after).
fn replica_version(name: &str, obj: &[u8]) -> Option<Version> {
    let nl = obj.iter().take(600).position(|&b| b == b'\n')?;
    let head = String::from_utf8_lossy(&obj[..nl]).into_owned();
    let cols: Vec<&str> = head.rsplitn(4, '#').collect();
    if cols.len() != 4 || cols[3] != name {
        return None;
    }
    let v = Version {
        thread: cols[2].parse().ok()?,
        seq: cols[1].parse().ok()?,
    };
    let len: usize = cols[0].parse().ok()?;
    let b = body(name, v, len);
    (obj.len() >= b.len() && obj[..b.len()] == b[..]).then_some(v)
}

#[test]
fn racing_uploads_leave_both_replicas_on_one_version() {
    const RACERS: u32 = 4;
    const ROUNDS: u32 = 8;
    let c = Cluster::start(3, 16);
    let name = "race/x";
    let mut stale = 0;
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(RACERS as usize));
        let handles: Vec<_> = (0..RACERS)
            .map(|r| {
                let proxy = c.proxy_addr();
                let barrier = barrier.clone();
                let v = Version {
                    thread: r,
                    seq: round,
                };
                // Sizes differ so the racers finish in varying orders.
                let data = body(
                    name,
                    v,
                    200_000 + (((r + round) % RACERS) as usize) * 150_000,
                );
                thread::spawn(move || {
                    barrier.wait();
                    let out = oss_at(
                        &proxy,
                        &["upload", name, "-"],
                        Some(data),
                        Duration::from_secs(120),
                    );
                    (v, out)
                })
            })
            .collect();
        let mut acked = Vec::new();
        for h in handles {
            let (v, out) = h.join().unwrap();
            match classify(&out) {
                Outcome::Ok(_) => acked.push(v),
                Outcome::Failed(m) if is_stale_refusal(&m) => stale += 1,
                _ => panic!("round {round}: racer {v:?}: {}", out.stderr_str()),
            }
        }
        assert!(!acked.is_empty(), "round {round}: no racer succeeded");
        let got = c
            .download_bytes(name)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let served = parse_body(name, &got).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            served.seq, round,
            "round {round}: an older round's version is served"
        );
        let reps = c.find_replicas(name);
        assert_eq!(reps.len(), 2, "round {round}: replicas {reps:?}");
        for (s, p) in &reps {
            let held = replica_version(name, &std::fs::read(p).unwrap());
            assert_eq!(
                held,
                Some(served),
                "round {round}: server {s} holds {held:?} but {served:?} is served \
                 (racers acknowledged: {acked:?})"
            );
        }
        // The loser's temp files are gone once every upload has answered.
        for s in 0..c.storage.len() {
            let tmp = c.tmp_files(s);
            assert!(tmp.is_empty(), "round {round}: server {s} left {tmp:?}");
        }
    }
    eprintln!("racing uploads refused as stale: {stale}");
}

/// The history checker itself must catch what it is there to catch.
#[test]
fn history_checker_catches_stale_reads_and_lost_writes() {
    let t = Instant::now();
    let at = |ms: u64| t + Duration::from_millis(ms);
    let v1 = Version { thread: 0, seq: 1 };
    let v2 = Version { thread: 1, seq: 1 };
    let op = |kind, s, e, acked| Op {
        kind,
        start: at(s),
        end: at(e),
        acked,
    };
    // v1 written 0-10, v2 written 20-30 (acknowledged).
    let ops = vec![
        op(Kind::Put(v1), 0, 10, true),
        op(Kind::Put(v2), 20, 30, true),
    ];
    // Reading v1 after v2 was acknowledged: stale.
    assert!(check_read("n", &ops, Some(v1), at(40), at(41)).is_err());
    // Reading v1 while v2 was in flight: fine. Reading v2 afterwards: fine.
    assert!(check_read("n", &ops, Some(v1), at(25), at(26)).is_ok());
    assert!(check_read("n", &ops, Some(v2), at(40), at(41)).is_ok());
    // Not found after an acknowledged write and no delete: a lost write.
    assert!(check_read("n", &ops, None, at(40), at(41)).is_err());
    // Not found before anything was acknowledged: fine.
    assert!(check_read("n", &ops, None, at(5), at(6)).is_ok());
    // A version nobody wrote, or one read before its upload began.
    let v3 = Version { thread: 2, seq: 9 };
    assert!(check_read("n", &ops, Some(v3), at(40), at(41)).is_err());
    assert!(check_read("n", &ops, Some(v2), at(12), at(15)).is_err());
    // A delete after v2: not found is right, v2 is stale.
    let mut with_delete = ops.clone();
    with_delete.push(op(Kind::Delete, 35, 36, true));
    assert!(check_read("n", &with_delete, None, at(40), at(41)).is_ok());
    assert!(check_read("n", &with_delete, Some(v2), at(40), at(41)).is_err());
    // A delete racing v2: either answer is possible.
    let mut racing = ops.clone();
    racing.push(op(Kind::Delete, 25, 28, true));
    assert!(check_read("n", &racing, None, at(40), at(41)).is_ok());
    assert!(check_read("n", &racing, Some(v2), at(40), at(41)).is_ok());
    // Bodies: whole versions parse; torn or foreign ones do not.
    let b = body("n", v1, 1000);
    assert_eq!(parse_body("n", &b), Ok(v1));
    assert!(parse_body("m", &b).is_err());
    assert!(parse_body("n", &b[..999]).is_err());
    let mut mixed = b.clone();
    mixed[600..].copy_from_slice(&body("n", v2, 1000)[600..]);
    assert!(parse_body("n", &mixed).is_err());
}

#[test]
fn downloads_racing_overwrites_always_get_a_whole_version() {
    // One writer overwrites a name that always exists while readers download it: every
    // download must succeed with one whole version (old or new), never fail.
    const WRITES: u32 = 120;
    const READERS: u32 = 3;
    let c = Cluster::start(2, 16);
    let name = "ro/doc";
    c.oss_stdin(
        &["upload", name, "-"],
        &body(name, Version { thread: 99, seq: 0 }, 5000),
    )
    .assert_ok("first upload");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (proxy, done) = (c.proxy_addr(), done.clone());
            thread::spawn(move || {
                let (mut reads, mut failures) = (0u32, Vec::new());
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = oss_at(
                        &proxy,
                        &["download", name, "-"],
                        None,
                        Duration::from_secs(60),
                    );
                    reads += 1;
                    match classify(&out) {
                        Outcome::Ok(b) => {
                            if let Err(e) = parse_body(name, &b) {
                                failures.push(e);
                            }
                        }
                        Outcome::NotFound => failures.push("not found".into()),
                        Outcome::Failed(m) => failures.push(m),
                    }
                }
                (reads, failures)
            })
        })
        .collect();
    for seq in 1..=WRITES {
        let len = 1000 + (seq as usize * 37) % 20_000;
        c.oss_stdin(
            &["upload", name, "-"],
            &body(name, Version { thread: 0, seq }, len),
        )
        .assert_ok("overwrite");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut reads, mut failures) = (0, Vec::new());
    for r in readers {
        let (n, f) = r.join().unwrap();
        reads += n;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {reads} downloads racing an overwrite failed; e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let last = c.download_bytes(name).unwrap();
    assert_eq!(
        parse_body(name, &last),
        Ok(Version {
            thread: 0,
            seq: WRITES
        })
    );
}
