//! Processes die (SIGKILL) and come back: the proxy's ring and every object survive; a
//! dead storage server costs nothing readable.

use std::thread;
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

/// `oss ARGS...` against `proxy` on a thread of its own (up to 120 s).
fn oss_in_background(
    proxy: &str,
    args: &[&str],
    input: Option<Vec<u8>>,
) -> thread::JoinHandle<std::process::Output> {
    let proxy = proxy.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        oss_at(&proxy, &args, input, Duration::from_secs(120))
    })
}

/// Waits until a storage server holds a temp file with bytes in it: an upload is streaming.
fn wait_upload_streaming(c: &Cluster) {
    wait_until(
        Duration::from_secs(60),
        "an upload streaming to the storage servers",
        || {
            (0..c.storage.len()).any(|i| {
                c.tmp_files(i)
                    .iter()
                    .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
            })
        },
    );
}

#[test]
fn commands_wait_out_a_proxy_restart() {
    // Faults are pauses, not errors: commands started while the proxy is down finish once
    // it is back (the default --retry-for is 30 s), with the right bytes.
    let mut c = Cluster::start(3, 32);
    let old = pseudo_random(70, 3 << 20);
    c.upload_bytes("wait/old", &old);
    c.upload_bytes("wait/gone", b"to be deleted while the proxy is down");
    let src = c.work().join("new.bin");
    let new_md5 = write_pseudo_random_file(&src, 71, 2 << 20);
    c.proxy.kill();
    let p = c.proxy_addr();
    let down = oss_in_background(&p, &["download", "wait/old", "-"], None);
    let up = oss_in_background(&p, &["upload", "wait/new", path_str(&src)], None);
    let piped = oss_in_background(
        &p,
        &["upload", "wait/piped", "-"],
        Some(b"from a pipe".to_vec()),
    );
    let rm = oss_in_background(&p, &["delete", "wait/gone"], None);
    let ls = oss_in_background(&p, &["list", "wait"], None);
    thread::sleep(Duration::from_millis(1500));
    assert!(
        !down.is_finished() && !ls.is_finished(),
        "commands gave up on a proxy that was down for 1.5 s"
    );
    c.proxy.restart();
    let out = down.join().unwrap();
    out.assert_ok("download across the restart");
    assert!(
        out.stdout == old,
        "download across the restart: wrong bytes"
    );
    up.join()
        .unwrap()
        .assert_ok("upload of a file across the restart");
    // A pipe that was not read yet can wait too: nothing of it was sent.
    piped
        .join()
        .unwrap()
        .assert_ok("upload from a pipe across the restart");
    rm.join().unwrap().assert_ok("delete across the restart");
    ls.join().unwrap().assert_ok("list across the restart");
    assert_eq!(md5_hex(&c.download_bytes("wait/new").unwrap()), new_md5);
    c.assert_content("wait/piped", b"from a pipe");
    c.assert_not_found("wait/gone");
}

#[test]
fn an_upload_cut_off_by_a_proxy_kill_is_sent_again_from_a_file_not_from_a_pipe() {
    let mut c = Cluster::start(2, 16);
    let src = c.work().join("big.bin");
    let len = 256u64 << 20;
    let want = write_pseudo_random_file(&src, 72, len);
    let p = c.proxy_addr();

    // From a file: the whole upload is sent again once the proxy is back.
    let up = oss_in_background(&p, &["upload", "cut/file", path_str(&src)], None);
    wait_upload_streaming(&c);
    c.proxy.kill();
    thread::sleep(Duration::from_millis(300));
    c.proxy.restart();
    up.join()
        .unwrap()
        .assert_ok("upload from a file across a proxy kill");
    assert_eq!(md5_hex(&c.download_bytes("cut/file").unwrap()), want);
    wait_until(
        Duration::from_secs(30),
        "the cut-off upload's temp files to go",
        || (0..c.storage.len()).all(|i| c.tmp_files(i).is_empty()),
    );

    // From a pipe: what was read cannot be read again: one clear line, nothing stored.
    let bytes = std::fs::read(&src).unwrap();
    let up = oss_in_background(&p, &["upload", "cut/pipe", "-"], Some(bytes));
    wait_upload_streaming(&c);
    c.proxy.kill();
    thread::sleep(Duration::from_millis(300));
    c.proxy.restart();
    let line = up
        .join()
        .unwrap()
        .assert_fails_one_line("upload from a pipe across a proxy kill");
    assert!(line.contains("cannot be read again"), "{line}");
    c.assert_not_found("cut/pipe");
}

/// Waits until an upload has written bytes into a storage server's temp file; that server.
fn streaming_server(c: &Cluster) -> usize {
    let mut victim = None;
    wait_until(
        Duration::from_secs(60),
        "the upload to stream to a server",
        || {
            victim = (0..c.storage.len()).find(|&i| {
                c.tmp_files(i)
                    .iter()
                    .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
            });
            victim.is_some()
        },
    );
    victim.unwrap()
}

#[test]
fn an_upload_that_loses_a_replica_mid_stream_is_completed_on_a_stand_in() {
    // A storage server killed while an upload streams to it does not fail the upload: the
    // proxy copies the committed replica to a stand-in (MD5-checked) and acknowledges only
    // once two replicas are durable, as if the server had been down from the start.
    let mut c = Cluster::start(3, 16);
    let src = c.work().join("big.bin");
    let want = write_pseudo_random_file(&src, 73, 256 << 20);
    let p = c.proxy_addr();
    let up = oss_in_background(&p, &["upload", "lose/big", path_str(&src)], None);
    let victim = streaming_server(&c);
    c.storage[victim].kill();
    up.join()
        .unwrap()
        .assert_ok("upload that lost a replica mid-stream");
    let reps = c.find_replicas("lose/big");
    assert_eq!(reps.len(), 2, "replicas: {reps:?}");
    assert!(
        reps.iter().all(|(s, _)| *s != victim),
        "a replica on the killed server: {reps:?}"
    );
    // Each replica file holds the uploaded bytes (the body, then the footer).
    for (s, path) in &reps {
        let f = std::fs::read(path).unwrap();
        assert!(f.len() >= 256 << 20, "{path:?}: {} bytes", f.len());
        assert_eq!(md5_hex(&f[..256 << 20]), want, "the replica on server {s}");
    }
    assert_eq!(md5_hex(&c.download_bytes("lose/big").unwrap()), want);
}

#[test]
fn a_door_put_without_etag_that_loses_a_replica_mid_stream_is_completed_too() {
    // Without an ETag the replicas' own MD5s are all there is: the one that got the whole
    // body commits, the proxy copies it to a stand-in (checked against that MD5) and answers
    // 201 with it as the ETag, which the client compares with its own.
    let mut c = crate::swift::door_cluster(3);
    let s = crate::swift::admin(&c);
    assert_eq!(s.call("PUT", "/lose", &[]).status, 201);
    let body = pseudo_random(74, 128 << 20);
    let want = md5_hex(&body);
    let put = thread::spawn(move || s.send_chunked("/lose/big", &[], body));
    let victim = streaming_server(&c);
    c.storage[victim].kill();
    let a = put.join().unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.header("etag"), Some(want.as_str()));
    let reps = c.find_replicas("lose/big");
    assert_eq!(reps.len(), 2, "replicas: {reps:?}");
    assert!(reps.iter().all(|(s, _)| *s != victim), "{reps:?}");
    assert_eq!(md5_hex(&c.download_bytes("lose/big").unwrap()), want);
}
