//! The replicator (issue 12): writes a stand-in took while an owner was away go home without
//! anyone running `oss repair`, reads find them there meanwhile, and a proxy restart that
//! forgot them finds them again. Real processes, killed and frozen for real; the only
//! waiting is polling the data directories with a deadline.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use oss_tests::*;

use crate::util2::*;

/// Failures seen quickly, never declared offline: an owner that is away stays an owner, so
/// writes meanwhile go to a stand-in.
fn cluster() -> Cluster {
    Cluster::start_with(ClusterConfig {
        proxy_args: vec![
            "--check-interval".into(),
            "200ms".into(),
            "--offline-after".into(),
            "10m".into(),
        ],
        ..ClusterConfig::new(4, 16)
    })
}

const SETTLE: Duration = Duration::from_secs(60);

/// The storage indices of the servers owning `name`'s partition.
fn owners(c: &Cluster, name: &str) -> Vec<usize> {
    let ring = read_ring(c.proxy.state_dir());
    let addrs = &ring.holders()[c.partition_of(name) as usize];
    let mut v: Vec<usize> = (0..c.storage.len())
        .filter(|&i| addrs.contains(&c.storage[i].addr().to_string()))
        .collect();
    v.sort();
    v
}

fn holders(c: &Cluster, name: &str) -> BTreeSet<usize> {
    c.find_replicas(name).into_iter().map(|(s, _)| s).collect()
}

fn addr(c: &Cluster, i: usize) -> String {
    c.storage[i].addr().to_string()
}

/// Kills owner `a` and waits until the proxy counts it down, then uploads `name`: the write
/// lands on the other owner and a stand-in. Returns the stand-in's index.
fn upload_while_away(c: &mut Cluster, name: &str, data: &[u8], a: usize) -> usize {
    c.storage[a].kill();
    wait_server_state(c, &addr(c, a), &[Some("Suspect")], SETTLE);
    c.upload_bytes(name, data);
    let held = holders(c, name);
    let own: BTreeSet<usize> = owners(c, name).into_iter().collect();
    assert_eq!(held.len(), 2, "{name} on {held:?}");
    assert!(
        !held.contains(&a),
        "{name} reached the killed server: {held:?}"
    );
    let stand_in: Vec<usize> = held.difference(&own).copied().collect();
    assert_eq!(stand_in.len(), 1, "{name} on {held:?}, owners {own:?}");
    stand_in[0]
}

fn wait_home(c: &Cluster, name: &str, owners: &[usize]) {
    let want: BTreeSet<usize> = owners.iter().copied().collect();
    let mut last = BTreeSet::new();
    let ok = (|| {
        let deadline = std::time::Instant::now() + SETTLE;
        while std::time::Instant::now() < deadline {
            last = holders(c, name);
            if last == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    })();
    assert!(
        ok,
        "{name} not back on its owners {want:?} alone within {SETTLE:?}: on {last:?}; {}",
        summary(&c.status_json())
    );
}

#[test]
fn stand_in_copies_go_home_without_a_repair_and_are_read_meanwhile() {
    let mut c = cluster();
    let name = "rep/away";
    let own = owners(&c, name);
    let (a, b) = (own[0], own[1]);
    let data = pseudo_random(4242, 300 << 10);
    let h = upload_while_away(&mut c, name, &data, a);

    // The owner that missed the write comes back while the other owner is frozen: the
    // hand-back waits for both owners, and the read must find the version on the stand-in,
    // not answer "not found" from the owner that lacks it.
    c.storage[b].stop();
    wait_server_state(&c, &addr(&c, b), &[Some("Suspect")], SETTLE);
    c.storage[a].restart();
    wait_server_state(&c, &addr(&c, a), &[Some("Online")], SETTLE);
    c.assert_content(name, &data);

    // Both owners up: the stand-in hands its copy back and drops it, unasked.
    c.storage[b].cont();
    wait_server_state(&c, &addr(&c, b), &[Some("Online")], SETTLE);
    wait_home(&c, name, &[a, b]);
    let st = c.status_json();
    assert!(
        st["replicator"]["handed_back"].as_u64().unwrap_or(0) >= 1,
        "replicator: {}",
        st["replicator"]
    );
    assert_eq!(st["replicator"]["pending"], 0, "{}", st["replicator"]);
    assert!(holders(&c, name).iter().all(|&s| s != h));
    c.assert_content(name, &data);
    let out = c.oss(&["check", name]);
    out.assert_ok("check after the hand-back");
    assert!(
        !out.stdout_str().contains("before repair"),
        "{}",
        out.stdout_str()
    );
    let status = c.oss(&["status"]);
    assert!(
        status.stdout_str().contains("replicator: last pass"),
        "{}",
        status.stdout_str()
    );
}

#[test]
fn a_delete_taken_by_a_stand_in_goes_home_and_stays_done() {
    // The tombstone is the write that must not be lost: if only the stand-in held it, the
    // owner that was away would serve the deleted file again.
    let mut c = cluster();
    let name = "rep/gone";
    let own = owners(&c, name);
    let (a, b) = (own[0], own[1]);
    let data = pseudo_random(99, 10 << 10);
    c.upload_bytes(name, &data);
    c.storage[a].kill();
    wait_server_state(&c, &addr(&c, a), &[Some("Suspect")], SETTLE);
    c.delete(name).assert_ok("delete while an owner is away");
    c.storage[a].restart();
    wait_server_state(&c, &addr(&c, a), &[Some("Online")], SETTLE);
    // Home: both owners hold the tombstone, the stand-in nothing.
    let tombstones_home = || {
        c.find_replicas(name)
            .iter()
            .filter(|(s, p)| (*s == a || *s == b) && obj_is_tombstone(p) == Some(true))
            .count()
            == 2
            && c.find_replicas(name).len() == 2
    };
    wait_until(
        SETTLE,
        "the tombstone on both owners alone",
        tombstones_home,
    );
    // The owner that still had the live version must not answer alone for it.
    c.storage[b].kill();
    wait_server_state(&c, &addr(&c, b), &[Some("Suspect")], SETTLE);
    c.assert_not_found(name);
}

#[test]
fn a_restarted_proxy_finds_stand_in_copies_it_never_recorded() {
    let mut c = cluster();
    let name = "rep/forgotten";
    let own = owners(&c, name);
    let a = own[0];
    let data = pseudo_random(7, 64 << 10);
    let h = upload_while_away(&mut c, name, &data, a);
    // The proxy dies with its record of the stray; the owner returns meanwhile.
    c.proxy.kill();
    c.storage[a].restart();
    c.proxy.restart();
    // Its first pass (at start) finds the copy on the stand-in and hands it back.
    wait_home(&c, name, &own);
    assert!(holders(&c, name).iter().all(|&s| s != h));
    c.assert_content(name, &data);
}

#[test]
fn a_replica_lost_without_anyone_reading_it_comes_back_by_itself() {
    // A server restarts without some of its files (a damaged disk, files removed while it
    // was down): no read, no `oss repair`; the replicator's digest comparison finds the
    // partitions whose owners differ and syncs them.
    let mut c = Cluster::start_with(ClusterConfig {
        proxy_args: vec![
            "--check-interval".into(),
            "200ms".into(),
            "--replicate-interval".into(),
            "1s".into(),
        ],
        ..ClusterConfig::new(4, 16)
    });
    let files = upload_set(&c, "lost", 40, 5, 20 << 10);
    // Passes over a cluster in sync find nothing to do (no false differences).
    let passes = |c: &Cluster| {
        c.status_json()["replicator"]["passes"]
            .as_u64()
            .unwrap_or(0)
    };
    let p0 = passes(&c);
    wait_until(SETTLE, "two replicator passes", || passes(&c) >= p0 + 2);
    let st = c.status_json();
    assert_eq!(st["replicator"]["synced"], 0, "{}", st["replicator"]);
    assert_eq!(st["replicator"]["out_of_sync"], 0, "{}", st["replicator"]);

    let victim = 1;
    c.storage[victim].kill();
    let lost: Vec<PathBuf> = c.object_files(victim).into_iter().step_by(2).collect();
    assert!(!lost.is_empty());
    for f in &lost {
        std::fs::remove_file(f).unwrap();
    }
    c.storage[victim].restart();
    wait_until(SETTLE, "the lost replicas back on their server", || {
        lost.iter().all(|f| f.exists())
    });
    let st = c.status_json();
    assert!(
        st["replicator"]["synced"].as_u64().unwrap_or(0) >= 1,
        "{}",
        st["replicator"]
    );
    // Every object is whole again, each replica with its bytes.
    for (name, data) in &files {
        assert_eq!(c.find_replicas(name).len(), 2, "{name}");
        c.assert_content(name, data);
    }
}
