//! Processes die (SIGKILL) and come back: the proxy's ring and every object survive; a
//! dead storage server costs nothing readable.

use std::time::{Duration, Instant};

use oss_tests::*;

use crate::core::list_names;

fn upload_set(c: &Cluster, user: &str, n: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let name = format!("{user}/f{i}");
            let data = pseudo_random(1000 + i, (i as usize * 10_007) % 300_000);
            c.upload_bytes(&name, &data);
            (name, data)
        })
        .collect()
}

fn assert_all(c: &Cluster, files: &[(String, Vec<u8>)], when: &str) {
    for (name, data) in files {
        match c.download_bytes(name) {
            Ok(got) => assert!(got == *data, "{when}: {name}: wrong bytes"),
            Err(e) => panic!("{when}: {name}: {e}"),
        }
    }
}

#[test]
fn proxy_restart_keeps_ring_and_objects() {
    let mut c = Cluster::start(3, 32);
    let files = upload_set(&c, "pr", 10);
    c.upload_bytes("pr/gone", b"deleted before the restart");
    c.delete("pr/gone").assert_ok("delete");
    let before = c.status_json();
    let names_before = list_names(&c, "pr");
    assert_eq!(names_before.len(), 10);

    // SIGKILL, then the same flags.
    c.proxy.kill();
    c.proxy.restart();
    assert_all(&c, &files, "after a restart with the same flags");
    c.assert_not_found("pr/gone");
    assert_eq!(list_names(&c, "pr"), names_before);
    let after = c.status_json();
    assert_eq!(after["partitions"], before["partitions"]);
    assert_eq!(after["replicas"], before["replicas"]);
    assert_eq!(
        after["epoch"], before["epoch"],
        "a plain restart changed the ring epoch"
    );

    // SIGKILL, then no flags at all but --state: the persisted ring is the truth.
    c.proxy.kill();
    c.proxy
        .try_restart_with(&[])
        .unwrap_or_else(|e| panic!("restart with --state only failed: {e}"));
    assert_all(&c, &files, "after a restart without --disk flags");
    c.assert_not_found("pr/gone");
    let bare = c.status_json();
    assert_eq!(bare["partitions"].as_u64(), Some(32), "{bare}");
    assert_eq!(
        bare["servers"].as_array().map(Vec::len),
        Some(3),
        "servers after a bare restart: {bare}"
    );
    // And it still takes writes, which the next restart keeps.
    c.upload_bytes("pr/new", b"after restarts");
    c.proxy.kill();
    c.proxy.try_restart_with(&[]).expect("restart");
    c.assert_content("pr/new", b"after restarts");
}

#[test]
fn proxy_refuses_contradicting_flags() {
    let mut c = Cluster::start(2, 64);
    c.upload_bytes("cf/f", b"still here");
    let disks: Vec<String> = c.storage.iter().map(|s| s.addr().to_string()).collect();

    c.proxy.kill();
    let e = c
        .proxy
        .try_restart_with(&["--partitions", "32"])
        .expect_err("a restart with --partitions 32 over a 64-partition ring must be refused");
    assert!(
        matches!(e.status, Some(s) if !s.success()),
        "refusal must be a non-zero exit: {e}"
    );
    assert!(
        e.output.to_lowercase().contains("partition"),
        "the refusal should say what contradicts: {e}"
    );
    assert!(!e.output.contains("panicked"), "refused by a panic: {e}");

    let e = c
        .proxy
        .try_restart_with(&["--replicas", "1"])
        .expect_err("a restart with --replicas 1 over a 2-replica ring must be refused");
    assert!(e.output.to_lowercase().contains("replica"), "{e}");

    // The refusals changed nothing: the original flags work and the data is there.
    let mut args = vec!["--partitions", "64", "--replicas", "2"];
    for d in &disks {
        args.push("--disk");
        args.push(d);
    }
    c.proxy
        .try_restart_with(&args)
        .unwrap_or_else(|e| panic!("restart with the original flags: {e}"));
    assert_eq!(c.status_json()["partitions"].as_u64(), Some(64));
    c.assert_content("cf/f", b"still here");
}

#[test]
fn one_storage_server_killed_every_file_still_downloads() {
    let mut c = Cluster::start(3, 16);
    let files = upload_set(&c, "k", 12);
    // Kill the server holding the most replicas of these files.
    let victim = (0..3)
        .max_by_key(|&s| {
            files
                .iter()
                .filter(|(n, _)| c.find_replicas(n).iter().any(|(i, _)| *i == s))
                .count()
        })
        .unwrap();
    c.storage[victim].kill();
    assert_all(&c, &files, &format!("with storage server {victim} killed"));
    let names = list_names(&c, "k");
    assert_eq!(
        names.len(),
        files.len(),
        "listing with a server down: {names:?}"
    );

    // It comes back on the same address; everything is still there.
    c.storage[victim].restart();
    assert_all(&c, &files, "after the server came back");
}

#[test]
fn frozen_storage_server_does_not_block_reads() {
    let c = Cluster::start(3, 16);
    let files = upload_set(&c, "fz", 4);
    let victim = c.find_replicas(&files[0].0)[0].0;
    c.storage[victim].stop();
    // A frozen server accepts connections (the kernel does) but never answers: the proxy
    // must time out and use the other replica, in bounded time.
    let t = Instant::now();
    for (name, data) in &files {
        let out = c.oss_timeout(&["download", name, "-"], Duration::from_secs(90));
        out.assert_ok(&format!("download {name} with server {victim} frozen"));
        assert!(out.stdout == *data, "{name}: wrong bytes");
    }
    let took = t.elapsed();
    c.storage[victim].cont();
    assert!(
        took < Duration::from_secs(60),
        "4 downloads took {took:?} with one server frozen"
    );
    assert_all(&c, &files, "after SIGCONT");
}

#[test]
fn proxy_restarts_after_a_server_was_declared_offline() {
    let mut c = Cluster::start_with(ClusterConfig {
        proxy_args: vec!["--offline-after".into(), "1s".into()],
        ..ClusterConfig::new(3, 16)
    });
    let files = upload_set(&c, "off", 6);
    let victim = c.storage[2].addr();
    c.storage[2].kill();
    wait_until(
        Duration::from_secs(30),
        "the killed server declared offline",
        || matches!(c.server_state(victim).as_deref(), Some("Offline") | None),
    );
    // Whatever the proxy persisted while re-homing the dead server's partitions must load.
    // (`--state` only: the ring no longer matches the first start's --disk list.)
    c.proxy.kill();
    c.proxy
        .try_restart_with(&[])
        .unwrap_or_else(|e| panic!("proxy restart after a server went offline: {e}"));
    assert_all(&c, &files, "after a proxy restart with a server offline");
    c.upload_bytes("off/new", b"written after the restart");
    c.assert_content("off/new", b"written after the restart");
}

#[test]
fn proxy_restarts_after_two_servers_went_offline_one_after_the_other() {
    // A second server goes offline while the first one's partitions are being refilled
    // (what `scripts/quickstart stop` used to do): the persisted state must still load.
    let mut c = Cluster::start_with(ClusterConfig {
        proxy_args: vec!["--offline-after".into(), "1s".into()],
        ..ClusterConfig::new(4, 1024)
    });
    let files = upload_set(&c, "two", 12);
    let holders: Vec<Vec<usize>> = files
        .iter()
        .map(|(n, _)| c.find_replicas(n).into_iter().map(|(s, _)| s).collect())
        .collect();
    let first = c.storage[0].addr();
    c.storage[0].kill();
    wait_until(Duration::from_secs(30), "server 0 declared offline", || {
        matches!(c.server_state(first).as_deref(), Some("Offline") | None)
    });
    // At once, while server 0's partitions are being refilled.
    let second = c.storage[1].addr();
    c.storage[1].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut second_state = c.server_state(second);
    while !matches!(second_state.as_deref(), Some("Offline") | None) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        second_state = c.server_state(second);
    }
    // Whatever it persisted meanwhile must load.
    c.proxy.kill();
    c.proxy
        .try_restart_with(&[])
        .unwrap_or_else(|e| panic!("proxy restart after two servers went offline: {e}"));
    assert!(
        matches!(second_state.as_deref(), Some("Offline") | None),
        "server 1 was never declared offline (state {second_state:?} after 20 s)"
    );
    c.status_json();
    // Files with a replica on a surviving server are still readable.
    for ((name, data), h) in files.iter().zip(&holders) {
        if h.iter().any(|&s| s >= 2) {
            match c.download_bytes(name) {
                Ok(got) => assert!(got == *data, "{name}: wrong bytes"),
                Err(e) => panic!("{name} (replicas on {h:?}): {e}"),
            }
        }
    }
}
