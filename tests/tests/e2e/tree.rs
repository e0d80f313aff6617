//! Directories through the real `oss` binary: nested names round trip, bad names are refused,
//! `oss list` by level, recursively and long, across the proxy's page boundary, `oss mkdir`
//! (and its marker surviving a proxy restart), `oss copy` and `oss move`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use oss_tests::*;

use crate::util2::ls;

/// One line of `oss list -l`: (size, md5, time, name), with `-` where a directory has none.
fn long_rows(c: &Cluster, args: &[&str]) -> Vec<[String; 4]> {
    let mut all = vec!["-l"];
    all.extend_from_slice(args);
    ls(c, &all)
        .iter()
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 4, "four columns in {line:?}");
            [cols[0], cols[1], cols[2], cols[3]].map(str::to_owned)
        })
        .collect()
}

fn assert_nothing_stored(c: &Cluster, what: &str) {
    for s in 0..c.storage.len() {
        let objs = c.object_files(s);
        assert!(objs.is_empty(), "{what}: server {s} stored {objs:?}");
    }
}

/// Uploads `names` (each with its own name as content) from `threads` threads at once.
fn upload_many(c: &Cluster, names: &[String], threads: usize) {
    let proxy = c.proxy_addr();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                oss_at(
                    &proxy,
                    &["upload", name, "-"],
                    Some(name.as_bytes().to_vec()),
                    OSS_TIMEOUT,
                )
                .assert_ok(&format!("upload {name}"));
            });
        }
    });
}

#[test]
fn tree_nested_names_round_trip_byte_for_byte() {
    let c = Cluster::start(2, 16);
    let work = c.work();
    let data = pseudo_random(21, 3 * 65536 + 5);
    let src = work.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let seg = "s".repeat(255);
    // The longest name allowed: 1024 bytes in segments of at most 255.
    let longest = format!("{seg}/{seg}/{seg}/{}/{}", "t".repeat(127), "t".repeat(128));
    assert_eq!(longest.len(), 1024);
    for name in [
        "alice/a/b/c.txt".to_string(),
        "alice/x/y/z/w/v/u/deep.bin".into(),
        "alice/.hidden/..dots/f".into(),
        format!("alice/{longest}"),
    ] {
        c.oss(&["upload", &name, path_str(&src)])
            .assert_ok(&format!("upload {name}"));
        assert_eq!(c.find_replicas(&name).len(), 2, "{name}: replicas");
        c.assert_content(&name, &data);
        let dst = work.join("dst.bin");
        c.oss(&["download", &name, path_str(&dst)])
            .assert_ok(&format!("download {name} to a file"));
        assert!(std::fs::read(&dst).unwrap() == data, "{name}: bytes differ");
    }
    // Into a directory, a nested name is saved under its last segment.
    let into = work.join("into");
    std::fs::create_dir(&into).unwrap();
    c.oss(&["download", "alice/a/b/c.txt", path_str(&into)])
        .assert_ok("download into a directory");
    assert!(std::fs::read(into.join("c.txt")).unwrap() == data);
    // Stdin in, stdout out.
    c.oss_stdin(&["upload", "alice/p/q", "-"], b"piped")
        .assert_ok("upload from stdin");
    c.assert_content("alice/p/q", b"piped");
    // Delete of a nested name, then it is gone and so is its directory.
    c.delete("alice/a/b/c.txt").assert_ok("delete nested");
    c.assert_not_found("alice/a/b/c.txt");
    assert!(!ls(&c, &["alice"]).contains(&"a/".to_string()));
}

#[test]
fn tree_bad_names_are_refused_with_one_line_and_store_nothing() {
    let c = Cluster::start(2, 16);
    let src = c.work().join("src");
    std::fs::write(&src, b"payload").unwrap();
    let seg256 = "x".repeat(256);
    let long = format!("alice/{}", ["y"; 513].join("/"));
    assert_eq!(long.len() - "alice/".len(), 1025);
    let bad = [
        "alice/a//b".to_string(),
        "alice/a/../b".into(),
        "alice/a/./b".into(),
        "alice/a/b/".into(),
        "alice//a".into(),
        format!("alice/d/{seg256}"),
        long,
    ];
    for name in &bad {
        let what = |verb: &str| format!("{verb} {name:?}");
        let line = c
            .oss(&["upload", name, path_str(&src)])
            .assert_fails_one_line(&what("upload"));
        assert!(line.contains("invalid name"), "{line}");
        c.oss_stdin(&["upload", name, "-"], b"payload")
            .assert_fails_one_line(&what("upload from stdin"));
        let down = c.work().join("down");
        c.oss(&["download", name, path_str(&down)])
            .assert_fails_one_line(&what("download"));
        assert!(!down.exists());
        c.oss(&["delete", name])
            .assert_fails_one_line(&what("delete"));
        // `mkdir DIR/` is `mkdir DIR`, as in a shell; every other bad name is refused.
        if name != "alice/a/b/" {
            c.oss(&["mkdir", name])
                .assert_fails_one_line(&what("mkdir"));
        }
        c.oss(&["copy", "alice/ok", name])
            .assert_fails_one_line(&what("copy to"));
        c.oss(&["move", name, "alice/ok"])
            .assert_fails_one_line(&what("move from"));
    }
    for target in ["alice/a//", "alice/a/../b/", "alice//"] {
        let line = c
            .oss(&["list", target])
            .assert_fails_one_line(&format!("list {target:?}"));
        assert!(line.contains("invalid name"), "{line}");
    }
    assert_nothing_stored(&c, "after bad names");
}

#[test]
fn tree_list_by_level_recursive_and_long() {
    let c = Cluster::start(2, 16);
    let files = [
        ("alice/top.txt", 3),
        ("alice/photos/a.jpg", 10),
        ("alice/photos/b.jpg", 11),
        ("alice/photos/2024/c.jpg", 12),
        ("alice/photos/2024/deep/d.jpg", 13),
        ("alice/photos-old", 4),
        ("alice/zz/y", 1),
        ("bob/photos/not-alices", 1),
    ];
    for (name, len) in files {
        c.upload_bytes(name, &pseudo_random(len, len as usize));
    }
    c.oss(&["mkdir", "alice/empty"]).assert_ok("mkdir");

    assert_eq!(
        ls(&c, &["alice"]),
        ["empty/", "photos-old", "photos/", "top.txt", "zz/"]
    );
    for target in ["alice/photos/", "alice/photos"] {
        assert_eq!(ls(&c, &[target]), ["2024/", "a.jpg", "b.jpg"], "{target}");
    }
    assert_eq!(ls(&c, &["alice/photos/2024/"]), ["c.jpg", "deep/"]);
    assert_eq!(
        ls(&c, &["alice/photos/", "-r"]),
        ["2024/c.jpg", "2024/deep/d.jpg", "a.jpg", "b.jpg"]
    );
    assert_eq!(
        ls(&c, &["-r", "alice"]),
        [
            "empty/",
            "photos-old",
            "photos/2024/c.jpg",
            "photos/2024/deep/d.jpg",
            "photos/a.jpg",
            "photos/b.jpg",
            "top.txt",
            "zz/y"
        ]
    );
    // An empty directory lists as nothing; a missing one (or a file) is an error.
    assert!(ls(&c, &["alice/empty/"]).is_empty());
    for (target, want) in [
        ("alice/nope/", "not found"),
        ("alice/phot", "not found"),
        ("alice/top.txt", "not a directory"),
    ] {
        let out = c.oss(&["list", target]);
        let line = out.assert_fails_one_line(&format!("list {target}"));
        assert!(line.contains(want), "{target}: {line}");
        assert!(out.stdout.is_empty());
    }

    // -l: files with size and MD5, directories with '-'.
    let rows = long_rows(&c, &["alice/photos/"]);
    let names: Vec<&str> = rows.iter().map(|r| r[3].as_str()).collect();
    assert_eq!(names, ["2024/", "a.jpg", "b.jpg"]);
    assert_eq!(rows[0][..3], ["-", "-", "-"]);
    assert_eq!(rows[1][0], "10");
    assert_eq!(rows[1][1], md5_hex(&pseudo_random(10, 10)));
    assert!(rows[1][2].ends_with('Z'), "{:?}", rows[1]);
    let rows = long_rows(&c, &["alice"]);
    let empty = rows
        .iter()
        .find(|r| r[3] == "empty/")
        .expect("empty/ listed");
    assert_eq!(empty[..2], ["-", "-"]);
    let rows = long_rows(&c, &["alice", "-r"]);
    assert_eq!(rows.len(), 8);
    let d = rows
        .iter()
        .find(|r| r[3] == "photos/2024/deep/d.jpg")
        .unwrap();
    assert_eq!(d[0], "13");
    // A flat user's listing is as it always was, and the harness still parses it.
    let l = c.list_long("bob/photos/");
    assert_eq!(l.len(), 1);
}

#[test]
fn tree_prefix_spanning_a_page_boundary_is_listed_once() {
    // More names under a/ than one page of the proxy holds (1000), so the prefix a/ is
    // what one page ends with and what the next would begin with.
    const N: usize = 1200;
    let c = Cluster::start(2, 16);
    let mut names: Vec<String> = (0..N).map(|i| format!("pg/a/{i:04}")).collect();
    names.extend(["pg/a-b", "pg/a0", "pg/b"].map(String::from));
    upload_many(&c, &names, 8);

    assert_eq!(ls(&c, &["pg"]), ["a-b", "a/", "a0", "b"]);
    let below = ls(&c, &["pg/a/"]);
    let want: Vec<String> = (0..N).map(|i| format!("{i:04}")).collect();
    assert_eq!(below, want);
    let all = ls(&c, &["pg", "-r"]);
    assert_eq!(all.len(), N + 3);
    assert_eq!(all[0], "a-b");
    assert_eq!(all[1], "a/0000");
    assert_eq!(all[N], "a/1199");
    assert_eq!(all[N + 1..], ["a0", "b"]);
    assert_eq!(long_rows(&c, &["pg/a"]).len(), N);
}

#[test]
fn tree_mkdir_is_listed_and_survives_a_proxy_restart() {
    let mut c = Cluster::start(2, 16);
    c.oss(&["mkdir", "alice/docs/2024/q1"])
        .assert_ok("mkdir nested");
    c.oss(&["mkdir", "alice/docs/2024/q1"])
        .assert_ok("mkdir again is fine");
    c.oss(&["mkdir", "alice/solo/"])
        .assert_ok("mkdir with a trailing slash");
    c.upload_bytes("alice/report", b"a file");
    let line = c
        .oss(&["mkdir", "alice/report"])
        .assert_fails_one_line("mkdir over a file");
    assert!(line.contains("exists and is a file"), "{line}");
    c.assert_content("alice/report", b"a file");
    // The marker is a zero-byte object named like the directory.
    assert_eq!(c.find_replicas("alice/docs/2024/q1").len(), 2);
    assert!(
        c.find_replicas("alice/docs/2024").is_empty(),
        "no parent markers"
    );

    let check = |c: &Cluster| {
        assert_eq!(ls(c, &["alice"]), ["docs/", "report", "solo/"]);
        assert_eq!(ls(c, &["alice/docs/2024/"]), ["q1/"]);
        assert!(ls(c, &["alice/docs/2024/q1/"]).is_empty());
        assert_eq!(
            ls(c, &["alice", "-r"]),
            ["docs/2024/q1/", "report", "solo/"]
        );
    };
    check(&c);
    c.proxy.restart();
    c.wait_all_online(Duration::from_secs(30));
    check(&c);

    // A file inside a marked directory: the directory is listed once.
    c.upload_bytes("alice/solo/f", b"in solo");
    assert_eq!(ls(&c, &["alice"]), ["docs/", "report", "solo/"]);
    assert_eq!(ls(&c, &["alice/solo"]), ["f"]);
    // Deleting the marker leaves the directory as long as something is in it.
    c.delete("alice/solo").assert_ok("delete the marker");
    assert_eq!(ls(&c, &["alice"]), ["docs/", "report", "solo/"]);
}

#[test]
fn tree_copy_and_move() {
    let c = Cluster::start(2, 16);
    let data = pseudo_random(31, 200_000);
    c.upload_bytes("alice/docs/a.bin", &data);

    let out = c.oss(&["copy", "alice/docs/a.bin", "alice/backup/2024/a.bin"]);
    out.assert_ok("copy");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "copy is silent"
    );
    c.assert_content("alice/docs/a.bin", &data);
    c.assert_content("alice/backup/2024/a.bin", &data);
    assert_eq!(c.find_replicas("alice/backup/2024/a.bin").len(), 2);
    assert_eq!(ls(&c, &["alice/backup/2024/"]), ["a.bin"]);
    let l = long_rows(&c, &["alice/backup/2024/"]);
    assert_eq!(l[0][..2], [data.len().to_string(), md5_hex(&data)]);
    // Across users too, and onto an existing file.
    c.upload_bytes("bob/a.bin", b"old");
    c.oss(&["copy", "alice/docs/a.bin", "bob/a.bin"])
        .assert_ok("copy over a file");
    c.assert_content("bob/a.bin", &data);

    let out = c.oss(&["move", "alice/docs/a.bin", "alice/moved/a.bin"]);
    out.assert_ok("move");
    assert!(out.stdout.is_empty(), "move is silent");
    c.assert_not_found("alice/docs/a.bin");
    c.assert_content("alice/moved/a.bin", &data);
    assert_eq!(ls(&c, &["alice"]), ["backup/", "moved/"]);

    // Refusals, and nothing changes.
    for (verb, src, dst, want) in [
        ("copy", "alice/nope", "alice/x", "not found"),
        ("move", "alice/nope", "alice/x", "not found"),
        ("copy", "alice/backup", "alice/x", "is a directory"),
        ("move", "alice/backup", "alice/x", "is a directory"),
        (
            "move",
            "alice/moved/a.bin",
            "alice/moved/a.bin",
            "same file",
        ),
        (
            "copy",
            "alice/moved/a.bin",
            "alice/bad//name",
            "invalid name",
        ),
        ("move", "alice/moved/a.bin", "alice/bad/", "invalid name"),
    ] {
        let out = c.oss(&[verb, src, dst]);
        let line = out.assert_fails_one_line(&format!("{verb} {src} {dst}"));
        assert!(line.contains(want), "{verb} {src} {dst}: {line}");
    }
    c.oss(&["mkdir", "alice/empty"]).assert_ok("mkdir");
    let line = c
        .oss(&["move", "alice/empty", "alice/empty2"])
        .assert_fails_one_line("move of a directory");
    assert!(line.contains("is a directory"), "{line}");
    c.assert_content("alice/moved/a.bin", &data);
    assert_eq!(
        ls(&c, &["alice", "-r"]),
        ["backup/2024/a.bin", "empty/", "moved/a.bin"]
    );
    c.assert_not_found("alice/x");
}
