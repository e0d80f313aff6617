//! Third-party Swift clients against the door, unchanged: `swift` (python-swiftclient) and
//! rclone's swift backend, each driving a directory tree up and down, with the results
//! compared byte for byte. `scripts/test` installs both (Debian's `python3-swiftclient` and
//! `rclone`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oss_tests::*;

use crate::swift::{admin, door_cluster};

/// A client program on PATH whose `--version` mentions `marker` (`swift` may also name the
/// Swift language's compiler), or a failure that says how to get it.
fn tool(name: &str, marker: &str, package: &str) -> PathBuf {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(marker))
        });
    found.unwrap_or_else(|| {
        panic!("`{name}` ({marker}) is not installed: scripts/test installs it (apt-get install {package})")
    })
}

/// A small tree of files (nested, one empty, one of 1 MiB and a bit) under `root`.
fn make_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut rng = XorShift::new(42);
    let mut files = Vec::new();
    for (name, len) in [
        ("a.txt", 11usize),
        ("empty", 0),
        ("docs/readme.md", 300),
        ("docs/deep/er/notes.txt", 5_000),
        ("img/photo one.jpg", 1_100_000),
        ("img/small.png", 64),
    ] {
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        files.push((name.to_string(), data));
    }
    files
}

fn assert_tree(root: &Path, files: &[(String, Vec<u8>)], what: &str) {
    for (name, data) in files {
        let got = std::fs::read(root.join(name)).unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
        assert!(got == *data, "{what}: {name} differs");
    }
}

fn run_ok(cmd: Command, what: &str) -> String {
    let out = run(cmd, None, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn admin_key(c: &Cluster) -> String {
    let line = std::fs::read_to_string(c.proxy.admin_key()).unwrap();
    line.trim().rsplit_once(':').unwrap().1.to_owned()
}

#[test]
fn swift_clients_python_swiftclient_uploads_lists_downloads_and_deletes_a_tree() {
    let bin = tool("swift", "python-swiftclient", "python3-swiftclient");
    let c = door_cluster(3);
    let door = c.proxy.http_addr();
    let key = admin_key(&c);
    let swift = |args: &[&str], dir: &Path| {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(dir)
            .env("ST_AUTH", format!("http://{door}/auth/v1.0"))
            .env("ST_USER", "oss:admin")
            .env("ST_KEY", &key)
            .env_remove("OS_AUTH_URL")
            .args(args);
        cmd
    };
    let work = c.work();
    let src = work.join("src");
    let files = make_tree(&src.join("tree"));
    std::fs::create_dir_all(src.join("tree/nothing-inside")).unwrap();

    let stat = run_ok(swift(&["stat"], &work), "swift stat");
    assert!(stat.contains("Account: AUTH_oss"), "{stat}");
    run_ok(swift(&["upload", "backup", "tree"], &src), "swift upload");
    // What it wrote is what oss holds, under the same names.
    for (name, data) in &files {
        assert_eq!(
            c.download_bytes(&format!("backup/tree/{name}")).unwrap(),
            *data,
            "{name}"
        );
    }
    let listed = run_ok(
        swift(
            &["list", "backup", "--prefix", "tree/", "--delimiter", "/"],
            &work,
        ),
        "swift list --delimiter",
    );
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "tree/a.txt",
            "tree/docs/",
            "tree/empty",
            "tree/img/",
            "tree/nothing-inside"
        ],
        "{listed}"
    );
    let stat = run_ok(
        swift(&["stat", "backup", "tree/img/small.png"], &work),
        "stat",
    );
    assert!(stat.contains(&md5_hex(&files[5].1)), "{stat}");

    let out = work.join("out");
    std::fs::create_dir(&out).unwrap();
    run_ok(swift(&["download", "backup"], &out), "swift download");
    assert_tree(&out.join("tree"), &files, "after swift download");
    assert!(out.join("tree/nothing-inside").is_dir());

    run_ok(swift(&["delete", "backup"], &work), "swift delete");
    let left = run_ok(swift(&["list"], &work), "swift list after delete");
    assert!(!left.lines().any(|l| l == "backup"), "{left}");
    c.assert_not_found("backup/tree/a.txt");
}

#[test]
fn swift_clients_rclone_copies_syncs_checks_and_lists_a_tree() {
    let bin = tool("rclone", "rclone", "rclone");
    let c = door_cluster(3);
    let door = c.proxy.http_addr();
    let key = admin_key(&c);
    let work = c.work();
    let rclone = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.env("RCLONE_CONFIG_OSS_TYPE", "swift")
            .env("RCLONE_CONFIG_OSS_AUTH", format!("http://{door}/auth/v1.0"))
            .env("RCLONE_CONFIG_OSS_USER", "oss:admin")
            .env("RCLONE_CONFIG_OSS_KEY", &key)
            .env("RCLONE_CONFIG", work.join("rclone.conf"))
            .args(["--low-level-retries", "1", "--retries", "1"])
            .args(args);
        cmd
    };
    let src = work.join("src");
    let mut files = make_tree(&src);
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    run_ok(rclone(&["mkdir", "oss:sync"]), "rclone mkdir");
    run_ok(rclone(&["copy", &s(&src), "oss:sync/tree"]), "rclone copy");
    run_ok(
        rclone(&["check", &s(&src), "oss:sync/tree"]),
        "rclone check",
    );
    let lsl = run_ok(rclone(&["lsl", "oss:sync/tree"]), "rclone lsl");
    for (name, data) in &files {
        let line = lsl
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} not in lsl:\n{lsl}"));
        assert!(
            line.trim_start().starts_with(&format!("{} ", data.len())),
            "{line}"
        );
    }
    // rclone keeps the modification time in X-Object-Meta-Mtime (the mount reads it too).
    let h = admin(&c).call("HEAD", "/sync/tree/docs/deep/er/notes.txt", &[]);
    assert!(h.header("x-object-meta-mtime").is_some(), "{:?}", h.headers);

    // Change one file, remove one, add one; sync makes the remote the same.
    std::fs::write(src.join("a.txt"), b"changed").unwrap();
    files[0].1 = b"changed".to_vec();
    std::fs::remove_file(src.join("docs/readme.md")).unwrap();
    files.retain(|(n, _)| n != "docs/readme.md");
    std::fs::write(src.join("new.bin"), b"new file").unwrap();
    files.push(("new.bin".into(), b"new file".to_vec()));
    run_ok(rclone(&["sync", &s(&src), "oss:sync/tree"]), "rclone sync");
    run_ok(
        rclone(&["check", &s(&src), "oss:sync/tree"]),
        "rclone check after sync",
    );
    assert!(
        !c.oss(&["download", "sync/tree/docs/readme.md", "-"])
            .status
            .success(),
        "the deleted file is still there"
    );

    let back = work.join("back");
    run_ok(
        rclone(&["copy", "oss:sync/tree", &s(&back)]),
        "rclone copy back",
    );
    assert_tree(&back, &files, "after rclone copy back");
    let out = run(
        {
            let mut d = Command::new("diff");
            d.args(["-r", &s(&src), &s(&back)]);
            d
        },
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Through the native door: same bytes.
    assert_eq!(c.download_bytes("sync/tree/new.bin").unwrap(), b"new file");
}
