//! Bad input gets one clear line and a non-zero exit, and changes nothing: invalid names,
//! missing local files, an unreachable proxy, garbage on the servers' ports, downloads that
//! fail half way.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oss_tests::*;

use crate::core::list_names;

fn assert_nothing_stored(c: &Cluster, what: &str) {
    for s in 0..c.storage.len() {
        let objs = c.object_files(s);
        assert!(objs.is_empty(), "{what}: server {s} stored {objs:?}");
    }
}

#[test]
fn invalid_names_are_refused_and_store_nothing() {
    let c = Cluster::start(2, 16);
    let src = c.work().join("src");
    std::fs::write(&src, b"payload").unwrap();
    let long = "x".repeat(256);
    let bad: Vec<String> = vec![
        String::new(),
        "noslash".into(),
        "/f".into(),
        "u/".into(),
        "/".into(),
        "./f".into(),
        "../f".into(),
        "u/.".into(),
        "u/..".into(),
        "a//c".into(),
        "a/b/".into(),
        "a/b/./c".into(),
        "a/b/../c".into(),
        format!("u/d/{long}"),
        format!("u/{long}"),
        format!("{long}/f"),
    ];
    for name in &bad {
        let up = c.oss(&["upload", name, path_str(&src)]);
        up.assert_fails_one_line(&format!("upload {name:?}"));
        let up = c.oss_stdin(&["upload", name, "-"], b"payload");
        up.assert_fails_one_line(&format!("upload {name:?} from stdin"));
        let down = c.work().join("down");
        c.oss(&["download", name, path_str(&down)])
            .assert_fails_one_line(&format!("download {name:?}"));
        assert!(!down.exists(), "download of {name:?} created a file");
        c.oss(&["delete", name])
            .assert_fails_one_line(&format!("delete {name:?}"));
    }
    for user in ["", ".", "..", "a//b"] {
        c.oss(&["list", user])
            .assert_fails_one_line(&format!("list {user:?}"));
    }
    assert_nothing_stored(&c, "after invalid names");

    // The limits are exact: 255 bytes is fine, and a dot-file is not a dot.
    let max = "y".repeat(255);
    for name in [
        format!("u/{max}"),
        format!("{max}/f"),
        "u/.hidden".into(),
        "u/..x".into(),
    ] {
        c.upload_bytes(&name, name.as_bytes());
        c.assert_content(&name, name.as_bytes());
    }
}

#[test]
fn missing_or_unreadable_local_file_is_an_error() {
    let c = Cluster::start(2, 16);
    let missing = c.work().join("does-not-exist");
    let out = c.oss(&["upload", "u/f", path_str(&missing)]);
    let line = out.assert_fails_one_line("upload of a missing file");
    assert!(
        line.contains("does-not-exist") || line.to_lowercase().contains("no such file"),
        "the error should name the problem: {line}"
    );
    // A directory is not a file either.
    c.oss(&["upload", "u/g", path_str(&c.work())])
        .assert_fails_one_line("upload of a directory");
    assert_nothing_stored(&c, "after failed uploads");
    assert!(list_names(&c, "u").is_empty());
    c.assert_not_found("u/f");
}

#[test]
fn unreachable_proxy_is_a_clear_error() {
    let addr = closed_port().to_string();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::write(&src, b"x").unwrap();
    let key = work.path().join("key");
    write_private(&key, format!("u:{}\n", "0".repeat(64)).as_bytes());
    let cases: Vec<Vec<&str>> = vec![
        vec!["list", "u"],
        vec!["upload", "u/f", path_str(&src)],
        vec!["download", "u/f", "-"],
        vec!["delete", "u/f"],
        vec!["status"],
    ];
    for args in cases {
        let t = Instant::now();
        // No retries: the line must come at once (commands_wait_out_a_proxy_restart tests
        // the default, which keeps trying).
        let mut with_key = vec!["--key-file", path_str(&key), "--retry-for", "0"];
        with_key.extend(&args);
        let out = oss_at(&addr, &with_key, None, Duration::from_secs(60));
        let line = out.assert_fails_one_line(&format!("{args:?} against a closed port"));
        assert!(
            line.contains(&addr),
            "{args:?}: the error should name the proxy address {addr}: {line}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{args:?}: took {:?} to notice a closed port",
            t.elapsed()
        );
    }
}

#[test]
fn a_missing_or_malformed_key_file_is_one_clear_line() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("nope");
    let out = oss_at(
        "127.0.0.1:9",
        &["--key-file", path_str(&missing), "list", "u"],
        None,
        Duration::from_secs(30),
    );
    let line = out.assert_fails_one_line("a missing key file");
    assert!(line.contains("no key") && line.contains("nope"), "{line}");
    let bad = work.path().join("bad");
    write_private(&bad, b"not a key\n");
    let out = oss_at(
        "127.0.0.1:9",
        &["--key-file", path_str(&bad), "list", "u"],
        None,
        Duration::from_secs(30),
    );
    let line = out.assert_fails_one_line("a malformed key file");
    assert!(line.contains("holds no key"), "{line}");
}

/// Sends one kind of garbage to `addr`; returns a connection left open half way through a
/// frame, to check that a stuck client does not block the server.
fn send_garbage(addr: SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::new();
    let payloads: Vec<Vec<u8>> = vec![
        pseudo_random(99, 4096),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // A header frame announcing 4 GiB: must be refused before allocating.
        vec![0, 0xff, 0xff, 0xff, 0xff],
        // A data frame with no handshake.
        vec![1, 0, 0, 0, 3, 1, 2, 3],
        // A header frame with a malformed payload.
        vec![0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        // An unknown frame kind.
        vec![9, 0, 0, 0, 0],
        Vec::new(),
    ];
    for p in payloads {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&p);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever it answers (an error, or a close), it must not take forever.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Half a frame, left open.
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.write_all(&[0, 0, 0, 0, 100, 1, 2, 3]);
    held.push(s);
    // Connected, silent, left open.
    held.push(TcpStream::connect(addr).expect("connect"));
    held
}

#[test]
fn garbage_on_the_wire_does_not_hurt_the_servers() {
    let mut c = Cluster::start(2, 16);
    let files: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|i| {
            (
                format!("g/f{i}"),
                pseudo_random(i, 5000 + i as usize * 100_000),
            )
        })
        .collect();
    for (n, d) in &files {
        c.upload_bytes(n, d);
    }
    let mut held = send_garbage(c.proxy.addr());
    for s in &c.storage {
        held.extend(send_garbage(s.addr()));
    }
    // With garbage connections still open, the proxy serves reads and writes.
    for (n, d) in &files {
        c.assert_content(n, d);
    }
    c.upload_bytes("g/after", b"after garbage");
    c.assert_content("g/after", b"after garbage");

    // Each storage server alone still serves: with the other one dead, every read comes
    // from the one that took the garbage.
    for alive in 0..2 {
        let dead = 1 - alive;
        c.storage[dead].kill();
        for (n, d) in &files {
            match c.download_bytes(n) {
                Ok(got) => assert!(got == *d, "{n}: wrong bytes from server {alive} alone"),
                Err(e) => panic!("{n}: server {alive} alone after garbage: {e}"),
            }
        }
        c.storage[dead].restart();
        c.wait_all_online(Duration::from_secs(30));
    }
    drop(held);
}

fn dir_listing(dir: &std::path::Path) -> Vec<PathBuf> {
    files_under(dir)
}

#[test]
fn failed_download_leaves_no_temp_file_and_keeps_the_target() {
    let c = Cluster::start(2, 16);
    let dir = c.work().join("dl");
    std::fs::create_dir(&dir).unwrap();
    let target = dir.join("precious");
    std::fs::write(&target, b"precious bytes").unwrap();
    let before = dir_listing(&dir);

    // 1. Not found.
    let out = c.oss(&["download", "dl/missing", path_str(&target)]);
    out.assert_fails_one_line("download of a missing object");
    assert_eq!(out.code(), Some(1));
    assert_eq!(std::fs::read(&target).unwrap(), b"precious bytes");
    assert_eq!(dir_listing(&dir), before, "files left behind");

    // 2. Into a directory that does not exist.
    let nowhere = dir.join("no/such/dir/file");
    c.upload_bytes("dl/small", b"small");
    c.oss(&["download", "dl/small", path_str(&nowhere)])
        .assert_fails_one_line("download into a missing directory");
    assert_eq!(dir_listing(&dir), before);

    // 3. Both replicas corrupted near the end: the stream fails after most bytes arrived.
    let data = pseudo_random(5, 1 << 20);
    c.upload_bytes("dl/big", &data);
    let reps = c.find_replicas("dl/big");
    assert_eq!(reps.len(), 2);
    for (_, p) in &reps {
        let mut bytes = std::fs::read(p).unwrap();
        bytes[data.len() - 10] ^= 0x55;
        std::fs::write(p, &bytes).unwrap();
    }
    let out = c.oss(&["download", "dl/big", path_str(&target)]);
    let line = out.assert_fails_one_line("download with both replicas corrupt");
    eprintln!("both replicas corrupt: {line}");
    assert!(
        line.to_lowercase().contains("corrupt"),
        "the error should say the object is corrupt: {line}"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"precious bytes",
        "a failed download clobbered the target"
    );
    assert_eq!(
        dir_listing(&dir),
        before,
        "a failed download left files behind"
    );

    // The working directory of the client is not littered either.
    let ok = c.oss(&["download", "dl/small", path_str(&target)]);
    ok.assert_ok("download after failures");
    assert_eq!(std::fs::read(&target).unwrap(), b"small");
    assert_eq!(dir_listing(&dir), before);
}

#[test]
fn silent_connections_are_closed_and_do_not_crowd_out_clients() {
    // Hundreds of connections that never speak: the oldest beyond the login limit are
    // dropped at once, the rest after --idle-timeout; a client that behaves is served
    // meanwhile as if they were not there.
    let c = Cluster::start_with(ClusterConfig {
        proxy_args: vec!["--idle-timeout".into(), "1s".into()],
        ..ClusterConfig::new(2, 16)
    });
    let silent: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(c.proxy.addr()).expect("connect"))
        .collect();
    c.upload_bytes("idle/f", b"served past the silent crowd");
    c.assert_content("idle/f", b"served past the silent crowd");
    let closed = |s: &TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 64];
        // The proxy's hello may come first; the end of the stream must follow.
        loop {
            match (&*s).read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    wait_until(
        Duration::from_secs(20),
        "every silent connection to be closed",
        || silent.iter().all(closed),
    );
    // And the proxy still serves.
    c.assert_content("idle/f", b"served past the silent crowd");
}
