//! The core promises through the real `oss` binary: bytes in = bytes out (files and
//! stdin/stdout), overwrite, delete, list, and two replicas on two servers.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use oss_tests::*;

/// Uploads `data` from a file and from stdin, downloads each to a file and to stdout, and
/// checks every copy byte for byte and by MD5.
fn round_trip(c: &Cluster, tag: &str, data: &[u8]) {
    let work = c.work();
    let want = md5_hex(data);

    // File in, file out.
    let src = work.join(format!("{tag}.src"));
    std::fs::write(&src, data).unwrap();
    let name = format!("rt/{tag}-file");
    c.oss(&["upload", &name, path_str(&src)])
        .assert_ok(&format!("upload {name}"));
    let dst = work.join(format!("{tag}.dst"));
    c.oss(&["download", &name, path_str(&dst)])
        .assert_ok(&format!("download {name}"));
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(got.len(), data.len(), "{name}: size after file round trip");
    assert_eq!(md5_hex(&got), want, "{name}: md5 after file round trip");
    assert!(got == data, "{name}: bytes differ");

    // Stdin in, stdout out.
    let name = format!("rt/{tag}-pipe");
    let out = c.oss_stdin(&["upload", &name, "-"], data);
    out.assert_ok(&format!("upload {name} from stdin"));
    let out = c.oss(&["download", &name, "-"]);
    out.assert_ok(&format!("download {name} to stdout"));
    assert_eq!(out.stdout.len(), data.len(), "{name}: size via stdout");
    assert_eq!(md5_hex(&out.stdout), want, "{name}: md5 via stdout");

    // Cross over: the stdin upload read back into a file.
    let dst2 = work.join(format!("{tag}.dst2"));
    c.oss(&["download", &name, path_str(&dst2)])
        .assert_ok(&format!("download {name} to a file"));
    assert_eq!(md5_file_hex(&dst2), want, "{name}: md5 via file");
}

#[test]
fn round_trip_0b_1b_1mib() {
    let c = Cluster::start(2, 16);
    round_trip(&c, "empty", &[]);
    round_trip(&c, "one", b"x");
    round_trip(&c, "mib", &pseudo_random(1, 1 << 20));
    // An odd size that ends mid-block and mid-frame.
    round_trip(&c, "odd", &pseudo_random(2, 3 * 65536 + 77));
}

#[test]
fn round_trip_50mib_file_and_pipe() {
    const SIZE: u64 = 50 << 20;
    let big = Duration::from_secs(300);
    let c = Cluster::start(2, 16);
    let work = c.work();
    let src = work.join("big.src");
    let want = write_pseudo_random_file(&src, 50, SIZE);

    // File in, stdout out.
    c.oss_timeout(&["upload", "big/file", path_str(&src)], big)
        .assert_ok("upload 50 MiB from a file");
    let out = oss_at(&c.proxy_addr(), &["download", "big/file", "-"], None, big);
    out.assert_ok("download 50 MiB to stdout");
    assert_eq!(out.stdout.len() as u64, SIZE);
    assert_eq!(md5_hex(&out.stdout), want, "50 MiB via stdout");
    drop(out);

    // Stdin in, file out.
    let data = std::fs::read(&src).unwrap();
    oss_at(
        &c.proxy_addr(),
        &["upload", "big/pipe", "-"],
        Some(data),
        big,
    )
    .assert_ok("upload 50 MiB from stdin");
    let dst = work.join("big.dst");
    c.oss_timeout(&["download", "big/pipe", path_str(&dst)], big)
        .assert_ok("download 50 MiB to a file");
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), SIZE);
    assert_eq!(md5_file_hex(&dst), want, "50 MiB via a file");

    // Two replicas of each, and list -l knows the size and MD5.
    for name in ["big/file", "big/pipe"] {
        assert_eq!(c.find_replicas(name).len(), 2, "{name}: replicas");
    }
    let l = c.list_long("big");
    for f in ["file", "pipe"] {
        assert_eq!(
            l.get(f).map(|e| (e.0, e.1.as_str())),
            Some((SIZE, want.as_str())),
            "{f}"
        );
    }
}

#[test]
fn overwrite_replaces_the_content_everywhere() {
    let c = Cluster::start(3, 16);
    let name = "ow/doc";
    let v1 = pseudo_random(11, 300_000);
    let v2 = b"short".to_vec();
    let v3 = pseudo_random(13, 700_001);
    for (i, v) in [&v1, &v2, &v3].into_iter().enumerate() {
        c.upload_bytes(name, v);
        c.assert_content(name, v);
        let l = c.list_long("ow");
        assert_eq!(l.len(), 1, "version {i}: one file listed: {l:?}");
        assert_eq!(
            l.get("doc"),
            Some(&(v.len() as u64, md5_hex(v))),
            "version {i}: list -l shows the newest size and md5"
        );
        // Exactly two replica files; both hold this version's bytes at offset 0.
        let reps = c.find_replicas(name);
        assert_eq!(reps.len(), 2, "version {i}: replica files {reps:?}");
        for (s, p) in &reps {
            assert_data_prefix(p, v, &format!("version {i} on server {s}"));
        }
    }
}

#[test]
fn delete_removes_and_second_delete_is_not_found() {
    let c = Cluster::start(2, 16);
    let name = "del/f";
    c.upload_bytes(name, b"to be deleted");
    c.upload_bytes("del/keep", b"kept");
    c.delete(name).assert_ok("delete");
    c.assert_not_found(name);

    let again = c.delete(name);
    let line = again.assert_fails_one_line("second delete");
    assert_eq!(again.code(), Some(1), "second delete: {line}");
    assert!(line.to_lowercase().contains("not found"), "{line}");

    let never = c.delete("del/never-existed");
    let line = never.assert_fails_one_line("delete of a name never written");
    assert_eq!(never.code(), Some(1), "{line}");

    assert_eq!(list_names(&c, "del"), vec!["keep".to_string()]);
    c.assert_content("del/keep", b"kept");

    // A new upload after the tombstone is newer and wins.
    c.upload_bytes(name, b"reborn");
    c.assert_content(name, b"reborn");
    assert_eq!(
        list_names(&c, "del"),
        vec!["f".to_string(), "keep".to_string()]
    );
}

#[test]
fn list_shows_live_files_newest_version_size_and_md5() {
    let c = Cluster::start(2, 16);
    // Nothing yet: empty, success.
    let out = c.oss(&["list", "lister"]);
    out.assert_ok("list of an empty user");
    assert!(out.stdout_str().trim().is_empty(), "{:?}", out.stdout_str());

    let a: Vec<u8> = Vec::new();
    let b2 = b"hello".to_vec();
    let d = pseudo_random(4, 70_000);
    c.upload_bytes("lister/a", &a);
    c.upload_bytes("lister/b", b"x");
    c.upload_bytes("lister/b", &b2);
    c.upload_bytes("lister/c", &pseudo_random(3, 3000));
    c.upload_bytes("lister/d", &d);
    c.upload_bytes("other/zzz", b"not alice's");
    c.delete("lister/c").assert_ok("delete c");

    assert_eq!(list_names(&c, "lister"), vec!["a", "b", "d"]);
    let l = c.list_long("lister");
    assert_eq!(l.len(), 3, "{l:?}");
    assert_eq!(l["a"], (0, md5_hex(&a)));
    assert_eq!(l["b"], (5, md5_hex(&b2)));
    assert_eq!(l["d"], (70_000, md5_hex(&d)));
    assert_eq!(list_names(&c, "other"), vec!["zzz"]);

    // Many files: all listed once (listings may be paged).
    for i in 0..60 {
        c.upload_bytes(&format!("many/f{i:03}"), format!("{i}").as_bytes());
    }
    let names = list_names(&c, "many");
    let want: Vec<String> = (0..60).map(|i| format!("f{i:03}")).collect();
    assert_eq!(names, want);
}

#[test]
fn two_replicas_on_two_different_servers() {
    let c = Cluster::start(4, 16);
    let mut files = Vec::new();
    for i in 0..24u64 {
        let name = format!("rep/f{i}");
        let data = pseudo_random(100 + i, (i as usize * 7919) % 20_000);
        c.upload_bytes(&name, &data);
        files.push((name, data));
    }
    let mut per_server = [0usize; 4];
    for (name, data) in &files {
        let reps = c.find_replicas(name);
        assert_eq!(
            reps.len(),
            2,
            "{name}: expected 2 replica files, found {reps:?}"
        );
        assert_ne!(reps[0].0, reps[1].0, "{name}: both replicas on one server");
        let part = format!("{:05}", c.partition_of(name));
        for (s, p) in &reps {
            per_server[*s] += 1;
            assert_eq!(
                p.parent().and_then(Path::file_name).unwrap().to_str(),
                Some(part.as_str()),
                "{name}: in the wrong partition directory: {}",
                p.display()
            );
            assert_data_prefix(p, data, &format!("{name} on server {s}"));
        }
        let sizes: BTreeSet<u64> = reps
            .iter()
            .map(|(_, p)| std::fs::metadata(p).unwrap().len())
            .collect();
        assert_eq!(sizes.len(), 1, "{name}: replica files differ in size");
    }
    // No stray objects: 2 per file in total, and no server left out of 4.
    let total: usize = (0..4).map(|s| c.object_files(s).len()).sum();
    assert_eq!(total, 2 * files.len(), "object files in all data dirs");
    assert!(
        per_server.iter().all(|&n| n > 0),
        "a server got no replicas at all: {per_server:?}"
    );
    for s in 0..4 {
        assert!(
            c.tmp_files(s).is_empty(),
            "server {s} left temp files: {:?}",
            c.tmp_files(s)
        );
    }
}

#[test]
fn status_json_describes_the_ring() {
    let c = Cluster::start(3, 32);
    let st = c.status_json();
    let text = st.to_string();
    assert_eq!(st["partitions"].as_u64(), Some(32), "{text}");
    assert_eq!(st["replicas"].as_u64(), Some(2), "{text}");
    let servers = st["servers"].as_array().unwrap_or_else(|| panic!("{text}"));
    assert_eq!(servers.len(), 3, "{text}");
    for s in &c.storage {
        assert!(
            text.contains(&s.addr().to_string()),
            "status does not name {}: {text}",
            s.addr()
        );
    }
    // Every partition has 2 replicas: the per-server counts add up.
    let sum: u64 = servers
        .iter()
        .filter_map(|s| s["partitions"].as_u64())
        .sum();
    assert_eq!(sum, 64, "partition replicas over all servers: {text}");
    let plain = c.oss(&["status"]);
    plain.assert_ok("oss status");
    assert!(!plain.stdout.is_empty());
}

// ---------------------------------------------------------------------------------------

/// Asserts the first `data.len()` bytes of an `.obj` file are `data` (layout: data at 0,
/// then a footer).
pub fn assert_data_prefix(obj: &Path, data: &[u8], what: &str) {
    let bytes = std::fs::read(obj).unwrap_or_else(|e| panic!("{what}: {}: {e}", obj.display()));
    assert!(
        bytes.len() >= data.len(),
        "{what}: {} is {} bytes, shorter than the {} data bytes",
        obj.display(),
        bytes.len(),
        data.len()
    );
    assert!(
        &bytes[..data.len()] == data,
        "{what}: {} does not start with the object's bytes",
        obj.display()
    );
}

/// `oss list USER`, as file names (a `USER/` prefix, if printed, removed).
pub fn list_names(c: &Cluster, user: &str) -> Vec<String> {
    let out = c.oss(&["list", user]);
    out.assert_ok(&format!("list {user}"));
    let prefix = format!("{user}/");
    out.stdout_str()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            l.strip_prefix(&prefix).unwrap_or(l).to_string()
        })
        .collect()
}
