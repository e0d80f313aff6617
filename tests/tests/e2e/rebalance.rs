//! Growing and shrinking the cluster (issue 3) with real processes: `oss add-disk` and
//! `oss remove-disk` under a concurrent load, refusals that change nothing, a proxy killed
//! in the middle of a move, and the number of partitions an add moves.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use oss_tests::*;

use crate::util2::*;

const SETTLE: Duration = Duration::from_secs(90);

/// One client operation of the background load.
struct Op {
    what: String,
    start: Instant,
    end: Instant,
    result: Result<(), String>,
}

/// A thread uploading new files and downloading existing ones until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(Vec<Op>, Files)>,
}

impl Load {
    fn start(proxy: String, existing: &Files, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let existing: Vec<(String, Vec<u8>)> = existing
            .iter()
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect();
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut ops = Vec::new();
            let mut uploaded = Files::new();
            let mut rng = XorShift::new(seed);
            let op_timeout = Duration::from_secs(30);
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                // Upload a new file.
                let name = format!("load/n{i:05}");
                let data = pseudo_random(seed * 100_000 + i, rng.below(20_000) as usize);
                let start = Instant::now();
                let r = std::panic::catch_unwind(|| {
                    oss_at(
                        &proxy,
                        &["upload", &name, "-"],
                        Some(data.clone()),
                        op_timeout,
                    )
                });
                let result = match r {
                    Ok(o) if o.status.success() => Ok(()),
                    Ok(o) => Err(o.stderr_str().trim().to_owned()),
                    Err(_) => Err("timed out".into()),
                };
                if result.is_ok() {
                    uploaded.insert(name.clone(), data);
                }
                ops.push(Op {
                    what: format!("upload {name}"),
                    start,
                    end: Instant::now(),
                    result,
                });
                // Download an existing file and one uploaded by this load.
                let picks = [
                    existing[rng.below(existing.len() as u64) as usize].clone(),
                    uploaded
                        .iter()
                        .nth(rng.below(uploaded.len().max(1) as u64) as usize)
                        .map(|(n, d)| (n.clone(), d.clone()))
                        .unwrap_or_else(|| existing[0].clone()),
                ];
                for (n, want) in picks {
                    let start = Instant::now();
                    let r = std::panic::catch_unwind(|| {
                        oss_at(&proxy, &["download", &n, "-"], None, op_timeout)
                    });
                    let result = match r {
                        Ok(o) if o.status.success() && o.stdout == want => Ok(()),
                        Ok(o) if o.status.success() => Err(format!(
                            "wrong bytes: {} bytes md5 {}, want {} bytes md5 {}",
                            o.stdout.len(),
                            md5_hex(&o.stdout),
                            want.len(),
                            md5_hex(&want)
                        )),
                        Ok(o) => Err(o.stderr_str().trim().to_owned()),
                        Err(_) => Err("timed out".into()),
                    };
                    ops.push(Op {
                        what: format!("download {n}"),
                        start,
                        end: Instant::now(),
                        result,
                    });
                }
                i += 1;
            }
            (ops, uploaded)
        });
        Load { stop, handle }
    }

    fn finish(self) -> (Vec<Op>, Files) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("load thread panicked")
    }
}

/// Operations that overlapped the window [from, to].
fn ops_during(ops: &[Op], from: Instant, to: Instant) -> usize {
    ops.iter()
        .filter(|o| o.start <= to && o.end >= from)
        .count()
}

fn addrs(c: &Cluster) -> Vec<String> {
    c.storage.iter().map(|s| s.addr().to_string()).collect()
}

#[test]
fn rebalance_add_then_remove_under_load_loses_nothing() {
    let mut c = Cluster::start(4, 64);
    let mut files = upload_set(&c, "rb", 300, 51, 6_000);
    let load = Load::start(c.proxy_addr(), &files, 52);
    thread::sleep(Duration::from_millis(300)); // let the load get going (not a wait for state)

    // Add a fifth server under load.
    let new = c.start_storage();
    let new_addr = c.storage[new].addr().to_string();
    let t_add = Instant::now();
    c.oss_timeout(&["add-disk", &new_addr, "--wait"], SETTLE)
        .assert_ok("add-disk --wait under load");
    let t_added = Instant::now();
    let st = c.status_json();
    let add_job = jobs(&st)
        .into_iter()
        .find(|j| j["what"].as_str().is_some_and(|w| w.contains(&new_addr)))
        .unwrap_or_else(|| panic!("no job for the add of {new_addr}: {}", summary(&st)));
    assert_job_complete(&add_job, "add-disk --wait returned");
    // 128 partition replicas over 5 servers: 25 or 26 each.
    for a in addrs(&c) {
        let p = server_partitions(&st, &a);
        assert!(
            (25..=26).contains(&p),
            "{a} holds {p} partitions after the add: {}",
            summary(&st)
        );
    }

    // Remove one of the originals under load.
    let victim = 1;
    let victim_addr = c.storage[victim].addr().to_string();
    let t_remove = Instant::now();
    c.oss_timeout(&["remove-disk", &victim_addr, "--wait"], SETTLE)
        .assert_ok("remove-disk --wait under load");
    let t_removed = Instant::now();
    thread::sleep(Duration::from_millis(300)); // some load after the removal, too
    let (ops, uploaded) = load.finish();
    c.storage[victim].kill();

    let failed: Vec<String> = ops
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.what)))
        .collect();
    eprintln!(
        "[load] {} ops, {} during add ({:?}), {} during remove ({:?})",
        ops.len(),
        ops_during(&ops, t_add, t_added),
        t_added - t_add,
        ops_during(&ops, t_remove, t_removed),
        t_removed - t_remove
    );
    assert!(
        failed.is_empty(),
        "{} of {} load operations failed during the rebalance:\n{}",
        failed.len(),
        ops.len(),
        failed.join("\n")
    );
    assert!(
        ops_during(&ops, t_add, t_added) > 0 && ops_during(&ops, t_remove, t_removed) > 0,
        "the load did not overlap the moves"
    );

    let st = c.status_json();
    assert!(
        server_entry(&st, &victim_addr).is_none(),
        "the removed server is still listed: {}",
        summary(&st)
    );
    let live: Vec<usize> = (0..5).filter(|&s| s != victim).collect();
    for &s in &live {
        let a = c.storage[s].addr().to_string();
        let p = server_partitions(&st, &a);
        assert!(
            (31..=33).contains(&p),
            "{a} holds {p} of 128 partition replicas over 4: {}",
            summary(&st)
        );
    }
    files.extend(uploaded);
    assert_all_download(&c, &files, "after add and remove under load");
    assert_placement(&c, &files, &live, "after add and remove");
    let left = c.object_files(victim);
    assert!(
        left.is_empty(),
        "the removed server's data dir still holds {} objects, e.g. {}",
        left.len(),
        left[0].display()
    );
    // Exactly two copies in all (no leftovers on a server that no longer owns them).
    let total: usize = live.iter().map(|&s| c.object_files(s).len()).sum();
    assert_eq!(total, 2 * files.len(), "object files on the live servers");
    // The new server holds roughly its fair share of the objects (a quarter of the replicas).
    let share = c.object_files(new).len() as f64 / total as f64;
    assert!(
        (0.15..=0.35).contains(&share),
        "the new server holds {:.1}% of the object replicas",
        share * 100.0
    );
}

#[test]
fn rebalance_refusals_change_nothing() {
    let c = Cluster::start(3, 16);
    c.upload_bytes("ref/f", b"still here");
    let before = c.status_json();
    let e0 = epoch(&before);
    let servers0: BTreeSet<String> = addrs(&c).into_iter().collect();

    // A port nothing listens on, and a listener that does not speak our protocol (the proxy).
    let closed = closed_port().to_string();
    let proxy = c.proxy_addr();
    let existing = c.storage[0].addr().to_string();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "add-disk",
            existing.clone(),
            &["already", "exists", "duplicate"],
        ),
        (
            "add-disk",
            closed.clone(),
            &["refused", "unreachable", "connect", "cannot"],
        ),
        (
            "add-disk",
            proxy.clone(),
            &["cannot", "protocol", "check", "not a storage"],
        ),
        ("add-disk", "not-an-address".into(), &["invalid", "address"]),
        ("add-disk", "127.0.0.1:99999".into(), &["invalid", "port"]),
        (
            "remove-disk",
            closed.clone(),
            &["not in the ring", "unknown", "not found"],
        ),
        ("remove-disk", "garbage".into(), &["invalid", "address"]),
    ];
    for (cmd, addr, words) in &cases {
        let out = c.oss_timeout(&[cmd, addr], Duration::from_secs(30));
        let line = out.assert_fails_one_line(&format!("oss {cmd} {addr}"));
        let l = line.to_lowercase();
        assert!(
            words.iter().any(|w| l.contains(w)),
            "oss {cmd} {addr}: unclear refusal {line:?} (expected one of {words:?})"
        );
        let st = c.status_json();
        assert_eq!(
            epoch(&st),
            e0,
            "oss {cmd} {addr} changed the epoch: {}",
            summary(&st)
        );
        let now: BTreeSet<String> = st["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["addr"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(now, servers0, "oss {cmd} {addr} changed the servers");
        assert!(
            jobs(&st).is_empty(),
            "oss {cmd} {addr} started a job: {}",
            summary(&st)
        );
    }
    c.assert_content("ref/f", b"still here");

    // Removing from a 2-server, 2-replica cluster would leave fewer servers than replicas.
    let c2 = Cluster::start(2, 16);
    let e = epoch(&c2.status_json());
    for s in &c2.storage {
        let a = s.addr().to_string();
        let out = c2.oss(&["remove-disk", &a]);
        let line = out.assert_fails_one_line(&format!("remove-disk {a} from 2 servers"));
        assert!(
            line.to_lowercase().contains("replica"),
            "unclear refusal: {line:?}"
        );
    }
    let st = c2.status_json();
    assert_eq!(epoch(&st), e, "{}", summary(&st));
    assert_eq!(
        st["servers"].as_array().map(Vec::len),
        Some(2),
        "{}",
        summary(&st)
    );
    assert!(jobs(&st).is_empty(), "{}", summary(&st));
}

#[test]
fn rebalance_proxy_killed_mid_move_resumes_after_restart() {
    let mut c = Cluster::start(4, 256);
    // Enough data that the move takes a moment: 400 files of 16-48 KiB, in two threads.
    let proxy = c.proxy_addr();
    let halves: Vec<Files> = thread::scope(|sc| {
        let hs: Vec<_> = (0..2u64)
            .map(|t| {
                let proxy = proxy.clone();
                sc.spawn(move || {
                    let mut f = Files::new();
                    for i in 0..200u64 {
                        let n = format!("mid/t{t}-{i:03}");
                        let d = pseudo_random(t * 1000 + i, 16_384 + (i as usize * 163) % 32_768);
                        oss_at(&proxy, &["upload", &n, "-"], Some(d.clone()), OSS_TIMEOUT)
                            .assert_ok(&format!("upload {n}"));
                        f.insert(n, d);
                    }
                    f
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let files: Files = halves.into_iter().flatten().collect();

    let new = c.start_storage();
    let new_addr = c.storage[new].addr().to_string();
    c.oss(&["add-disk", &new_addr])
        .assert_ok("add-disk without --wait");
    // Kill -9 the proxy as soon as the move is under way but not done.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let st = c.status_json();
        let j = jobs(&st)
            .into_iter()
            .find(|j| j["what"].as_str().is_some_and(|w| w.contains(&new_addr)));
        if let Some(j) = j {
            let (done, total) = (j["done"].as_u64().unwrap(), j["total"].as_u64().unwrap());
            if done < total {
                break (done, total);
            }
            panic!(
                "test setup: the move finished before it could be interrupted ({done}/{total}); \
                 give it more data"
            );
        }
        assert!(Instant::now() < deadline, "no add job: {}", summary(&st));
    };
    c.proxy.kill();
    eprintln!("[mid-move] proxy killed at {}/{} moves", seen.0, seen.1);
    let ring_at_kill = read_ring(c.proxy.state_dir());
    let new_held_at_kill = ring_at_kill
        .holders()
        .iter()
        .filter(|h| h.contains(&new_addr))
        .count() as u64;
    assert!(
        new_held_at_kill < seen.1,
        "the persisted ring already had the whole move ({new_held_at_kill}/{})",
        seen.1
    );

    // Restart with the state directory only: the persisted plan is the truth.
    c.proxy
        .try_restart_with(&[])
        .unwrap_or_else(|e| panic!("proxy restart mid-move: {e}"));
    let deadline = Instant::now() + SETTLE;
    let st = loop {
        let st = c.status_json();
        let done = jobs(&st)
            .iter()
            .all(|j| j["running"] == serde_json::Value::Bool(false))
            && server_entry(&st, &new_addr)
                .and_then(|s| s["partitions"].as_u64())
                .is_some_and(|p| p >= 102);
        if done {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the move did not finish after the restart: {}",
            summary(&st)
        );
        thread::sleep(Duration::from_millis(100));
    };
    let all = addrs(&c);
    for a in &all {
        let p = server_partitions(&st, a);
        assert!(
            (102..=103).contains(&p),
            "{a} holds {p} of 512 partition replicas: {}",
            summary(&st)
        );
    }
    for j in jobs(&st) {
        if j["what"].as_str().is_some_and(|w| w.contains(&new_addr)) {
            assert_job_complete(&j, "the resumed add");
        }
    }
    let ring = read_ring(c.proxy.state_dir());
    assert!(ring.epoch > ring_at_kill.epoch, "no flip after the restart");
    for (p, h) in ring.holders().iter().enumerate() {
        assert_eq!(h.len(), 2, "partition {p}: {h:?}");
    }
    assert_all_download(&c, &files, "after the resumed move");
    let live: Vec<usize> = (0..5).collect();
    assert_placement(&c, &files, &live, "after the resumed move");
    let total: usize = live.iter().map(|&s| c.object_files(s).len()).sum();
    assert_eq!(
        total,
        2 * files.len(),
        "stray object copies after the interrupted move"
    );
}

#[test]
fn rebalance_add_moves_at_most_1_05_times_the_minimum_and_only_to_the_new_server() {
    let mut c = Cluster::start(4, 256);
    c.upload_bytes("mv/f", b"x");
    for round in 0..2 {
        let before = read_ring(c.proxy.state_dir());
        let old_holders = before.holders();
        let new = c.start_storage();
        let new_addr = c.storage[new].addr().to_string();
        let n_servers = c.storage.len() as f64;
        c.oss_timeout(&["add-disk", &new_addr, "--wait"], SETTLE)
            .assert_ok("add-disk --wait");
        let st = c.status_json();
        let job = jobs(&st)
            .into_iter()
            .find(|j| j["what"].as_str().is_some_and(|w| w.contains(&new_addr)))
            .unwrap_or_else(|| panic!("no job for {new_addr}: {}", summary(&st)));
        assert_job_complete(&job, "add-disk --wait");
        let moves = job["total"].as_u64().unwrap();
        let min = (256.0 * 2.0 / n_servers).round();
        eprintln!("[moves] round {round}: {moves} moves, theoretical minimum {min}");
        assert!(
            moves as f64 <= 1.05 * min && moves as f64 >= min.floor() - 1.0,
            "round {round}: add-disk moved {moves} partition replicas; minimum {min}"
        );
        let after = read_ring(c.proxy.state_dir());
        let new_holders = after.holders();
        let mut changed = 0;
        for (p, (o, n)) in old_holders.iter().zip(&new_holders).enumerate() {
            assert_eq!(n.len(), 2, "partition {p} has {n:?}");
            let gone: Vec<&String> = o.difference(n).collect();
            let came: Vec<&String> = n.difference(o).collect();
            assert!(
                gone.len() <= 1,
                "partition {p}: both replicas moved: {o:?} -> {n:?}"
            );
            assert!(
                came.iter().all(|a| **a == new_addr),
                "partition {p} moved between old servers: {o:?} -> {n:?}"
            );
            changed += came.len() as u64;
        }
        assert_eq!(
            changed, moves,
            "round {round}: job total vs ring difference"
        );
        assert_eq!(server_partitions(&st, &new_addr), moves, "{}", summary(&st));
    }
    c.assert_content("mv/f", b"x");
}
