//! `ossfs` with directories (issue 8): a whole tree on the mount, driven by the ordinary
//! tools (`mkdir -p`, `cp -r`, `diff -r`, `tar`, `find`, `du`, `ls -lR`, `rm -r`, `rmdir`,
//! `mv`, `stat`, `touch`, `chmod`, `rsync`, `git`) and checked against what the proxy holds
//! (`oss download`) and against the local source tree.
//!
//! Tools needed besides coreutils: `diff`, `find`, `tar`, `rsync` and `git` (the tests fail,
//! with the name of the missing tool, if one is absent).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oss_tests::*;

use crate::fuse::{
    assert_cli_content, errno_of, fuse_available, ok, setup, tool, Mount, TOOL_TIMEOUT,
    VISIBLE_WITHIN,
};
use crate::util2::wait_server_state;

/// Runs `cmd` (with `LC_ALL=C`) and asserts success, showing ossfs's log of that step.
fn cmd_ok(m: &Mount, mut cmd: Command, what: &str) -> Output {
    cmd.env("LC_ALL", "C");
    let from = m.log_len();
    let out = run(cmd, None, TOOL_TIMEOUT);
    assert!(
        out.status.success(),
        "{what}: {}; stdout: {}\nstderr: {}\nossfs stderr meanwhile:\n{}",
        out.status,
        out.stdout_str().trim_end(),
        out.stderr_str().trim_end(),
        m.log_since(from)
    );
    out
}

fn need(prog: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{prog}` (apt-get install -y {prog})"
    );
}

/// A whole-second time, `secs` after 2020-09-13.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_600_000_000 + secs)
}

fn set_mtime(p: &Path, t: SystemTime) {
    let f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap_or_else(|e| panic!("set_times {}: {e}", p.display()));
}

/// Files of the test tree: relative path → bytes. Names that sort around '/' ("a", "a-b",
/// "a.txt", "a/") on purpose: a listing returns them interleaved with the prefix "a/".
fn tree_files() -> BTreeMap<String, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("top.txt".into(), pseudo_random(1, 100));
    t.insert("empty".into(), Vec::new());
    t.insert("a.txt".into(), b"a dot\n".to_vec());
    t.insert("a-b".into(), b"a dash\n".to_vec());
    t.insert("a/one".into(), pseudo_random(2, 10_000));
    t.insert("a/b/two".into(), pseudo_random(3, 3000));
    t.insert("a/b/c/deep.bin".into(), pseudo_random(4, (1 << 20) + 7));
    t.insert("bin/run.sh".into(), b"#!/bin/sh\necho hi\n".to_vec());
    t.insert("names with spaces/file 1".into(), b"spaces\n".to_vec());
    t
}

/// Directories of the test tree, including empty ones.
const TREE_DIRS: &[&str] = &[
    "a",
    "a/b",
    "a/b/c",
    "bin",
    "names with spaces",
    "void",
    "void2",
    "void2/inner",
];

/// Writes the test tree under `root` with distinct whole-second times (tar keeps seconds
/// only) and `bin/run.sh` executable.
fn make_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let files = tree_files();
    for d in TREE_DIRS {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (i, (rel, data)) in files.iter().enumerate() {
        let p = root.join(rel);
        fs::write(&p, data).unwrap();
        set_mtime(&p, at(i as u64 * 1000));
    }
    fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    for (i, d) in TREE_DIRS.iter().enumerate().rev() {
        set_mtime(&root.join(d), at(100_000 + i as u64));
    }
    files
}

/// `find DIR` as sorted "f SIZE PATH" / "d PATH" lines (directory sizes differ between
/// file systems).
fn find_lines(m: &Mount, dir: &Path) -> Vec<String> {
    let mut cmd = Command::new("find");
    cmd.arg(dir)
        .args([
            "-mindepth",
            "1",
            "(",
            "-type",
            "f",
            "-printf",
            "f %s %P\\n",
            ")",
        ])
        .args(["-o", "(", "-type", "d", "-printf", "d %P\\n", ")"])
        .args(["-o", "-printf", "? %P\\n"]);
    let out = cmd_ok(m, cmd, &format!("find {}", dir.display()));
    let mut v: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// `ls -lR` run in `dir`, as a set of "SECTION/NAME TYPE SIZE" (size for files only).
fn ls_lr(m: &Mount, dir: &Path) -> BTreeSet<String> {
    let mut cmd = Command::new("ls");
    cmd.arg("-lR").arg(".").current_dir(dir);
    let out = cmd_ok(m, cmd, &format!("ls -lR in {}", dir.display()));
    let mut section = String::new();
    let mut set = BTreeSet::new();
    for line in out.stdout_str().lines() {
        if let Some(s) = line.strip_suffix(':') {
            section = s.to_owned();
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 9 {
            continue;
        }
        let kind = &cols[0][..1];
        let name = cols[8..].join(" ");
        let size = if kind == "-" { cols[4] } else { "" };
        set.insert(format!("{section}/{name} {kind} {size}"));
    }
    set
}

fn diff_r(m: &Mount, a: &Path, b: &Path) {
    let mut cmd = Command::new("diff");
    cmd.arg("-r").arg(a).arg(b);
    let out = cmd_ok(m, cmd, &format!("diff -r {} {}", a.display(), b.display()));
    assert_eq!(out.stdout_str(), "", "diff -r output");
}

/// `mkdir -p`, `cp -r` in and out, `diff -r`, `find`, `du -s`, `ls -lR`, `stat`, then
/// `rm -r`: the whole tree, empty directories included, and what the proxy holds.
#[test]
fn fuse_dirs_tree_cp_r_find_du_ls_lr_rm_r() {
    let Some((c, m)) = setup("fuse_dirs_tree", 2) else {
        return;
    };
    need("diff");
    need("find");
    fs::create_dir(m.path("alice")).unwrap();
    ok(&m, "mkdir", &["-p", &m.p("alice/x/y/z")]);
    for d in ["alice/x", "alice/x/y", "alice/x/y/z"] {
        assert!(m.path(d).is_dir(), "{d} after mkdir -p");
        assert_cli_content(&c, d, b"", &format!("marker of {d}"));
    }
    // mkdir -p of what exists is fine; mkdir of it is EEXIST.
    ok(&m, "mkdir", &["-p", &m.p("alice/x/y")]);
    let e = fs::create_dir(m.path("alice/x/y")).expect_err("mkdir of an existing directory");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");

    let src = c.work().join("tree");
    let files = make_tree(&src);
    let dst = m.path("alice/x/y/z/tree");
    ok(&m, "cp", &["-r", path_str(&src), path_str(&dst)]);
    // Every file is on the proxy under its full name.
    for (rel, data) in &files {
        assert_cli_content(&c, &format!("alice/x/y/z/tree/{rel}"), data, "after cp -r");
    }
    diff_r(&m, &src, &dst);
    assert_eq!(
        find_lines(&m, &dst),
        find_lines(&m, &src),
        "find on the mount"
    );
    assert_eq!(ls_lr(&m, &dst), ls_lr(&m, &src), "ls -lR on the mount");
    let total: usize = files.values().map(Vec::len).sum();
    let out = ok(&m, "du", &["-sb", path_str(&dst)]);
    let du: usize = out
        .stdout_str()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(du, total, "du -sb: the files' bytes (directories count 0)");
    ok(&m, "du", &["-s", path_str(&dst)]);
    let out = ok(
        &m,
        "stat",
        &[
            "-c",
            "%F %s",
            &m.p("alice/x/y/z/tree/a/b/c"),
            &m.p("alice/x/y/z/tree/a/b/two"),
        ],
    );
    assert_eq!(out.stdout_str(), "directory 0\nregular file 3000\n", "stat");

    // cp -r out again.
    let back = c.work().join("back");
    ok(&m, "cp", &["-r", path_str(&dst), path_str(&back)]);
    diff_r(&m, &src, &back);
    assert!(
        back.join("void2/inner").is_dir(),
        "empty directories come back out"
    );

    // rm -r: nothing left, on the mount or the proxy.
    ok(&m, "rm", &["-r", &m.p("alice/x")]);
    assert!(!m.path("alice/x").exists(), "alice/x after rm -r");
    for rel in files.keys() {
        c.assert_not_found(&format!("alice/x/y/z/tree/{rel}"));
    }
    for d in ["alice/x", "alice/x/y/z", "alice/x/y/z/tree/void2/inner"] {
        c.assert_not_found(d);
    }
    let out = ok(&m, "ls", &["-A", &m.p("alice")]);
    assert_eq!(out.stdout_str(), "", "alice after rm -r");

    // A directory another client makes (a marker, `oss mkdir`) shows within the cache TTL.
    c.oss(&["mkdir", "alice/cli/made"]).assert_ok("oss mkdir");
    wait_until(VISIBLE_WITHIN, "alice/cli/made on the mount", || {
        m.path("alice/cli/made").is_dir()
    });
    let out = ok(&m, "ls", &["-p", &m.p("alice/cli")]);
    assert_eq!(out.stdout_str(), "made/\n", "a directory made by the CLI");
}

/// `rmdir` (ENOTEMPTY while something lies below), `mv` of files and directories: into
/// another directory, over an existing file, over an empty and a non-empty directory,
/// RENAME_NOREPLACE, and files open for writing carried along.
#[test]
fn fuse_dirs_rmdir_and_mv() {
    let Some((c, m)) = setup("fuse_dirs_mv", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    ok(&m, "mkdir", &["-p", &m.p("alice/d/sub"), &m.p("alice/e")]);
    fs::write(m.path("alice/d/sub/f"), b"deep file").unwrap();
    fs::write(m.path("alice/d/g"), b"g").unwrap();

    // rmdir: non-empty fails and removes nothing; empty works.
    for d in ["alice/d", "alice/d/sub"] {
        let e = fs::remove_dir(m.path(d)).expect_err(d);
        assert_eq!(errno_of(&e), libc::ENOTEMPTY, "rmdir {d}: {e}");
    }
    let out = tool("rmdir", &[&m.p("alice/d")]);
    assert!(
        out.stderr_str().contains("not empty"),
        "rmdir(1) of a non-empty directory: {:?}",
        out.stderr_str()
    );
    assert_cli_content(&c, "alice/d/sub/f", b"deep file", "after refused rmdirs");
    ok(&m, "rmdir", &[&m.p("alice/e")]);
    c.assert_not_found("alice/e");
    assert!(!m.path("alice/e").exists());
    // A directory that exists only because of a file below it (written by the CLI).
    c.upload_bytes("alice/implicit/only", b"1");
    assert_eq!(fs::read(m.path("alice/implicit/only")).unwrap(), b"1");
    let e = fs::remove_dir(m.path("alice/implicit")).expect_err("rmdir of an implicit dir");
    assert_eq!(errno_of(&e), libc::ENOTEMPTY, "{e}");
    ok(&m, "rm", &[&m.p("alice/implicit/only")]);
    ok(&m, "rmdir", &[&m.p("alice/implicit")]);
    // A regular file and a directory of the same name (possible through the CLI): the
    // mount shows the directory.
    c.upload_bytes("alice/both", b"file");
    c.upload_bytes("alice/both/inner", b"in");
    assert!(
        m.path("alice/both").is_dir(),
        "alice/both is shown as a directory"
    );
    assert_eq!(fs::read(m.path("alice/both/inner")).unwrap(), b"in");
    let out = ok(&m, "ls", &["-lp", &m.p("alice")]);
    let both: Vec<&str> = out
        .stdout_str()
        .lines()
        .filter(|l| l.contains("both"))
        .map(|_| "")
        .collect();
    assert_eq!(
        both.len(),
        1,
        "alice/both listed once: {}",
        out.stdout_str()
    );
    assert!(
        out.stdout_str().contains("both/\n"),
        "as a directory: {}",
        out.stdout_str()
    );
    c.delete("alice/both/inner").assert_ok("oss delete");
    c.delete("alice/both").assert_ok("oss delete");

    // mv a file into a subdirectory, then over an existing file.
    ok(&m, "mv", &[&m.p("alice/d/g"), &m.p("alice/d/sub/g2")]);
    c.assert_not_found("alice/d/g");
    assert_cli_content(&c, "alice/d/sub/g2", b"g", "mv into a subdirectory");
    fs::write(m.path("alice/top"), b"top").unwrap();
    ok(&m, "mv", &[&m.p("alice/top"), &m.p("alice/d/sub/f")]);
    assert_cli_content(&c, "alice/d/sub/f", b"top", "mv over an existing file");
    c.assert_not_found("alice/top");
    assert_eq!(fs::read(m.path("alice/d/sub/f")).unwrap(), b"top");

    // RENAME_NOREPLACE onto an existing name: EEXIST, nothing changed.
    let noreplace = |a: &str, b: &str| -> i32 {
        let a = std::ffi::CString::new(m.p(a)).unwrap();
        let b = std::ffi::CString::new(m.p(b)).unwrap();
        // SAFETY: valid C strings; renameat2 with AT_FDCWD.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    };
    assert_eq!(noreplace("alice/d/sub/g2", "alice/d/sub/f"), libc::EEXIST);
    assert_cli_content(&c, "alice/d/sub/g2", b"g", "after a refused NOREPLACE");

    // mv a directory to a new name (and another user): everything below moves.
    ok(&m, "mv", &[&m.p("alice/d"), &m.p("alice/moved")]);
    assert!(!m.path("alice/d").exists(), "old directory after mv");
    for (name, want) in [("sub/f", &b"top"[..]), ("sub/g2", b"g")] {
        assert_cli_content(
            &c,
            &format!("alice/moved/{name}"),
            want,
            "after mv of a directory",
        );
        c.assert_not_found(&format!("alice/d/{name}"));
        assert_eq!(
            fs::read(m.path(&format!("alice/moved/{name}"))).unwrap(),
            want
        );
    }
    assert_cli_content(&c, "alice/moved", b"", "the marker moved");
    c.assert_not_found("alice/d");
    c.assert_not_found("alice/d/sub");
    fs::create_dir(m.path("bob")).unwrap();
    ok(&m, "mv", &[&m.p("alice/moved/sub"), &m.p("bob/sub")]);
    assert_cli_content(&c, "bob/sub/f", b"top", "mv of a directory to another user");
    c.assert_not_found("alice/moved/sub/f");

    // Over an empty directory: replaces it. Over a non-empty one: ENOTEMPTY. Over a
    // file: ENOTDIR. Into itself: EINVAL.
    fs::create_dir(m.path("alice/emptydir")).unwrap();
    fs::rename(m.path("bob/sub"), m.path("alice/emptydir")).expect("rename over an empty dir");
    assert_cli_content(&c, "alice/emptydir/f", b"top", "rename over an empty dir");
    fs::create_dir(m.path("alice/full")).unwrap();
    fs::write(m.path("alice/full/x"), b"x").unwrap();
    let e = fs::rename(m.path("alice/emptydir"), m.path("alice/full")).expect_err("over non-empty");
    assert_eq!(errno_of(&e), libc::ENOTEMPTY, "{e}");
    assert_cli_content(&c, "alice/full/x", b"x", "after a refused rename");
    assert_cli_content(&c, "alice/emptydir/f", b"top", "after a refused rename");
    let e = fs::rename(m.path("alice/full"), m.path("alice/emptydir/f")).expect_err("over a file");
    assert_eq!(errno_of(&e), libc::ENOTDIR, "{e}");
    let e = fs::rename(m.path("alice/full"), m.path("alice/full/inner")).expect_err("into itself");
    assert_eq!(errno_of(&e), libc::EINVAL, "{e}");

    // A file open for writing, renamed, then written on: all its bytes end up at the new
    // name. The same for a file inside a directory that is renamed.
    let first = pseudo_random(11, 100_000);
    let second = pseudo_random(12, 50_000);
    let mut f = fs::File::create(m.path("alice/full/open")).unwrap();
    f.write_all(&first).unwrap();
    fs::rename(m.path("alice/full/open"), m.path("alice/full/open2")).unwrap();
    f.write_all(&second).unwrap();
    let mut g = fs::File::create(m.path("alice/full/open3")).unwrap();
    g.write_all(&first).unwrap();
    fs::rename(m.path("alice/full"), m.path("alice/full2")).unwrap();
    g.write_all(&second).unwrap();
    drop(f);
    drop(g);
    let both = [first, second].concat();
    assert_cli_content(&c, "alice/full2/open2", &both, "written, renamed, written");
    assert_cli_content(
        &c,
        "alice/full2/open3",
        &both,
        "written, its directory renamed, written",
    );
    for n in [
        "alice/full/open",
        "alice/full/open2",
        "alice/full/open3",
        "alice/full/x",
        "alice/full",
    ] {
        c.assert_not_found(n);
    }
    let out = ok(&m, "ls", &["-p", &m.p("alice")]);
    assert_eq!(
        out.stdout_str(),
        "emptydir/\nfull2/\nmoved/\n",
        "alice at the end"
    );
}

/// Times and modes stick: `touch -d`, `chmod +x`, `cp -p`, on files and directories, and
/// across a remount; `chown` to oneself is fine, to another user EPERM; O_EXCL of an
/// existing name is EEXIST; a lock file renamed over its target works.
#[test]
fn fuse_dirs_times_modes_and_lock_files() {
    let Some((c, mut m)) = setup("fuse_dirs_times", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    fs::create_dir(m.path("alice/d")).unwrap();
    fs::write(m.path("alice/d/f"), b"some bytes").unwrap();
    fs::write(m.path("alice/d/script"), b"#!/bin/sh\n").unwrap();

    let stat = |m: &Mount, fmt: &str, p: &str| -> String {
        let out = cmd_ok(
            m,
            {
                let mut cmd = Command::new("stat");
                cmd.args(["-c", fmt, &m.p(p)]).env("TZ", "UTC");
                cmd
            },
            "stat",
        );
        out.stdout_str().trim_end().to_owned()
    };
    ok(
        &m,
        "touch",
        &["-d", "2001-02-03 04:05:06.789123456 UTC", &m.p("alice/d/f")],
    );
    // Nanoseconds: 789123456 (rsync compares them).
    assert_eq!(
        stat(&m, "%y", "alice/d/f"),
        "2001-02-03 04:05:06.789123456 +0000"
    );
    ok(&m, "chmod", &["+x", &m.p("alice/d/script")]);
    assert_eq!(stat(&m, "%a", "alice/d/script"), "755");
    ok(&m, "chmod", &["640", &m.p("alice/d/f")]);
    assert_eq!(
        stat(&m, "%a %y", "alice/d/f"),
        "640 2001-02-03 04:05:06.789123456 +0000",
        "chmod keeps the time"
    );
    assert_cli_content(
        &c,
        "alice/d/f",
        b"some bytes",
        "chmod and touch keep the bytes",
    );
    ok(&m, "chmod", &["700", &m.p("alice/d")]);
    ok(
        &m,
        "touch",
        &["-d", "2002-01-01 00:00:00 UTC", &m.p("alice/d")],
    );
    assert_eq!(
        stat(&m, "%a %y", "alice/d"),
        "700 2002-01-01 00:00:00.000000000 +0000"
    );
    // A user's own directory has no marker: chmod is accepted.
    ok(&m, "chmod", &["755", &m.p("alice")]);

    // cp -p from a local file: its time and mode.
    let local = c.work().join("local");
    fs::write(&local, b"local").unwrap();
    fs::set_permissions(&local, fs::Permissions::from_mode(0o751)).unwrap();
    set_mtime(&local, at(42));
    ok(&m, "cp", &["-p", path_str(&local), &m.p("alice/d/copied")]);
    assert_eq!(
        stat(&m, "%a %Y", "alice/d/copied"),
        format!("751 {}", 1_600_000_042)
    );

    // A file written again keeps its mode; its time becomes the write's.
    let before = SystemTime::now();
    fs::OpenOptions::new()
        .append(true)
        .open(m.path("alice/d/script"))
        .unwrap()
        .write_all(b"echo more\n")
        .unwrap();
    assert_eq!(
        stat(&m, "%a", "alice/d/script"),
        "755",
        "mode after a write"
    );
    let t = fs::metadata(m.path("alice/d/script"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        t + Duration::from_secs(2) >= before,
        "time after a write: {t:?} < {before:?}"
    );

    // chown: to oneself is fine, to someone else EPERM.
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    ok(&m, "chown", &[&format!("{uid}:{gid}"), &m.p("alice/d/f")]);
    let out = tool("chown", &["12345", &m.p("alice/d/f")]);
    assert!(!out.status.success(), "chown to another user succeeded");

    // O_EXCL of an existing file or directory: EEXIST.
    for p in ["alice/d/f", "alice/d"] {
        let e = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.path(p))
            .expect_err(p);
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "O_EXCL {p}: {e}");
    }
    // A lock file: O_EXCL, written, renamed over the file it stands for.
    fs::write(m.path("alice/d/index"), b"old index").unwrap();
    let mut lk = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("alice/d/index.lock"))
        .unwrap();
    lk.write_all(b"new index").unwrap();
    let e = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("alice/d/index.lock"))
        .expect_err("a second locker");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    drop(lk);
    fs::rename(m.path("alice/d/index.lock"), m.path("alice/d/index")).unwrap();
    assert_cli_content(&c, "alice/d/index", b"new index", "lock file renamed over");
    c.assert_not_found("alice/d/index.lock");

    // All of it survives a remount (a new ossfs, nothing cached).
    let want = [
        ("alice/d/f", "640 2001-02-03 04:05:06.789123456 +0000"),
        ("alice/d", "700 2002-01-01 00:00:00.000000000 +0000"),
        ("alice/d/copied", "751 2020-09-13 12:27:22.000000000 +0000"),
    ];
    m.unmount();
    m.spawn().unwrap_or_else(|e| panic!("remount: {e}"));
    for (p, w) in want {
        assert_eq!(stat(&m, "%a %y", p), w, "{p} after a remount");
    }
    assert_eq!(
        stat(&m, "%a", "alice/d/script"),
        "755",
        "chmod +x after a remount"
    );
    m.unmount();
}

/// `tar x` into the mount and `tar c` out of it: contents, empty directories, times and
/// modes.
#[test]
fn fuse_dirs_tar_x_and_tar_c() {
    let Some((c, m)) = setup("fuse_dirs_tar", 2) else {
        return;
    };
    need("tar");
    need("diff");
    let src = c.work().join("tsrc");
    make_tree(&src);
    let tarball = c.work().join("t.tar");
    ok(
        &m,
        "tar",
        &["cf", path_str(&tarball), "-C", path_str(&src), "."],
    );
    fs::create_dir(m.path("alice")).unwrap();
    fs::create_dir(m.path("alice/x")).unwrap();
    ok(
        &m,
        "tar",
        &["xf", path_str(&tarball), "-C", &m.p("alice/x")],
    );
    diff_r(&m, &src, &m.path("alice/x"));
    // Times (tar keeps seconds) and modes of files and directories.
    let times = |dir: &Path| -> Vec<String> {
        let mut cmd = Command::new("find");
        cmd.arg(dir).args([
            "-mindepth",
            "1",
            "-printf",
            "%P %TY-%Tm-%Td %TH:%TM:%TS %m\\n",
        ]);
        let mut v: Vec<String> = cmd_ok(&m, cmd, "find -printf")
            .stdout_str()
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        times(&m.path("alice/x")),
        times(&src),
        "times and modes after tar x"
    );

    let out_tar = c.work().join("out.tar");
    ok(
        &m,
        "tar",
        &["cf", path_str(&out_tar), "-C", &m.p("alice/x"), "."],
    );
    let back = c.work().join("tback");
    fs::create_dir(&back).unwrap();
    ok(
        &m,
        "tar",
        &["xf", path_str(&out_tar), "-C", path_str(&back)],
    );
    diff_r(&m, &src, &back);
    assert_eq!(
        times(&back),
        times(&src),
        "times and modes after tar c and x"
    );
}

/// `rsync -a` into the mount twice: the second run finds every file up to date (size and
/// time to the nanosecond) and transfers nothing.
#[test]
fn fuse_dirs_rsync_twice_copies_nothing() {
    let Some((c, m)) = setup("fuse_dirs_rsync", 2) else {
        return;
    };
    need("rsync");
    let src = c.work().join("rsrc");
    let files = make_tree(&src);
    // Times with nanoseconds, as files usually have.
    set_mtime(
        &src.join("a/one"),
        at(7) + Duration::from_nanos(123_456_789),
    );
    fs::create_dir(m.path("alice")).unwrap();
    let rsync = |m: &Mount| -> String {
        let mut cmd = Command::new("rsync");
        cmd.args(["-a", "--itemize-changes", "--stats"])
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", m.p("alice/r")));
        cmd_ok(m, cmd, "rsync -a").stdout_str()
    };
    let first = rsync(&m);
    assert!(
        first.contains(&format!(
            "Number of regular files transferred: {}",
            files.len()
        )),
        "first rsync:\n{first}"
    );
    for (rel, data) in &files {
        assert_cli_content(&c, &format!("alice/r/{rel}"), data, "after rsync");
    }
    let second = rsync(&m);
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "second rsync transferred files:\n{second}"
    );
    let changed: Vec<&str> = second
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            !l.starts_with("Number of files") && !l.starts_with(".d") && !l.starts_with("sending")
        })
        .collect();
    assert!(
        changed.is_empty(),
        "second rsync changed: {changed:?}\n{second}"
    );
}

fn git(m: &Mount, home: &Path, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    // A plain environment: a shell that git starts (hooks, repack helpers) must not pick up
    // the caller's shell set-up (a pyenv or similar hook printing into git's pipes).
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com");
    cmd_ok(m, cmd, &format!("git {}", args.join(" ")))
}

/// `git clone` of a small repository into the mount; `git status` is clean and `git fsck`
/// passes inside it, also after a commit made on the mount.
#[test]
fn fuse_dirs_git_clone_status_fsck() {
    let Some((c, m)) = setup("fuse_dirs_git", 2) else {
        return;
    };
    need("git");
    let home = c.work().join("home");
    fs::create_dir_all(&home).unwrap();
    let src = c.work().join("gsrc");
    fs::create_dir_all(src.join("src/deep/er")).unwrap();
    fs::create_dir_all(src.join("scripts")).unwrap();
    git(
        &m,
        &home,
        &c.work(),
        &["init", "-q", "-b", "main", path_str(&src)],
    );
    fs::write(src.join("README"), b"hello\n").unwrap();
    fs::write(
        src.join("src/deep/er/x.c"),
        b"int main(void) { return 0; }\n",
    )
    .unwrap();
    fs::write(src.join("scripts/run.sh"), b"#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(
        src.join("scripts/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    git(&m, &home, &src, &["add", "-A"]);
    git(&m, &home, &src, &["commit", "-q", "-m", "one"]);
    fs::write(src.join("README"), b"hello again\n").unwrap();
    fs::write(src.join("big.bin"), pseudo_random(5, 300_000)).unwrap();
    git(&m, &home, &src, &["commit", "-q", "-am", "two"]);
    git(&m, &home, &src, &["add", "big.bin"]);
    git(&m, &home, &src, &["mv", "src/deep/er/x.c", "src/x.c"]);
    git(&m, &home, &src, &["commit", "-q", "-m", "three"]);

    fs::create_dir(m.path("alice")).unwrap();
    let repo = m.path("alice/repo");
    let url = format!("file://{}", src.display());
    git(
        &m,
        &home,
        &c.work(),
        &["clone", "-q", &url, path_str(&repo)],
    );
    let st = git(&m, &home, &repo, &["status", "--porcelain"]);
    assert_eq!(st.stdout_str(), "", "git status after clone");
    git(&m, &home, &repo, &["fsck", "--full", "--strict"]);
    let log = git(&m, &home, &repo, &["log", "--format=%s"]);
    assert_eq!(log.stdout_str(), "three\ntwo\none\n");
    let out = ok(
        &m,
        "stat",
        &["-c", "%a", path_str(&repo.join("scripts/run.sh"))],
    );
    assert_eq!(out.stdout_str(), "755\n", "the executable stays executable");
    assert_eq!(
        fs::read(repo.join("big.bin")).unwrap(),
        pseudo_random(5, 300_000)
    );

    // Work on the mount: edit, commit (index.lock renamed over index), status, fsck.
    fs::write(repo.join("README"), b"edited on the mount\n").unwrap();
    let st = git(&m, &home, &repo, &["status", "--porcelain"]);
    assert_eq!(st.stdout_str(), " M README\n", "git status after an edit");
    git(&m, &home, &repo, &["commit", "-q", "-am", "four"]);
    let st = git(&m, &home, &repo, &["status", "--porcelain"]);
    assert_eq!(
        st.stdout_str(),
        "",
        "git status after a commit on the mount"
    );
    git(&m, &home, &repo, &["fsck", "--full", "--strict"]);
    git(&m, &home, &repo, &["gc", "-q"]);
    git(&m, &home, &repo, &["fsck", "--full", "--strict"]);
    let st = git(&m, &home, &repo, &["status", "--porcelain"]);
    assert_eq!(st.stdout_str(), "", "git status after gc");
    assert_cli_content(
        &c,
        "alice/repo/README",
        b"edited on the mount\n",
        "README on the proxy",
    );
}

/// An empty directory (only a marker) survives the loss of a storage server holding it and
/// a repair, and a fresh mount still lists it.
#[test]
fn fuse_dirs_empty_dir_survives_a_server_kill_and_repair() {
    if !fuse_available("fuse_dirs_empty_dir_survives") {
        return;
    }
    let mut c = Cluster::start_with(ClusterConfig {
        proxy_args: vec![
            "--offline-after".into(),
            "1s".into(),
            "--check-interval".into(),
            "200ms".into(),
        ],
        ..ClusterConfig::new(3, 16)
    });
    let mut m = Mount::start(&c, "fuse_dirs_marker_heal");
    fs::create_dir(m.path("alice")).unwrap();
    ok(&m, "mkdir", &["-p", &m.p("alice/keep/empty")]);
    fs::write(m.path("alice/file"), b"f").unwrap();
    let holders: Vec<usize> = c
        .find_replicas("alice/keep/empty")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(holders.len(), 2, "replicas of the marker: {holders:?}");
    let victim = holders[0];
    let addr = c.storage[victim].addr().to_string();
    c.storage[victim].kill();
    wait_server_state(&c, &addr, &[Some("Offline"), None], Duration::from_secs(30));
    c.oss_timeout(&["repair", "--wait"], Duration::from_secs(60))
        .assert_ok("oss repair --wait");
    wait_until(
        Duration::from_secs(60),
        "the marker re-replicated on live servers",
        || {
            c.find_replicas("alice/keep/empty")
                .iter()
                .filter(|(s, _)| *s != victim)
                .count()
                == 2
        },
    );
    assert_cli_content(&c, "alice/keep/empty", b"", "the marker after the repair");
    m.unmount();
    m.spawn().unwrap_or_else(|e| panic!("remount: {e}"));
    let out = ok(&m, "ls", &["-p", &m.p("alice")]);
    assert_eq!(out.stdout_str(), "file\nkeep/\n");
    let out = ok(&m, "ls", &["-p", &m.p("alice/keep")]);
    assert_eq!(
        out.stdout_str(),
        "empty/\n",
        "the empty directory after kill and repair"
    );
    let out = ok(&m, "ls", &["-A", &m.p("alice/keep/empty")]);
    assert_eq!(out.stdout_str(), "");
    m.unmount();
}

/// Symbolic links, hard links and device nodes cannot be stored: EPERM, with a log line.
#[test]
fn fuse_dirs_links_and_special_files_are_refused() {
    let Some((c, m)) = setup("fuse_dirs_links", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    fs::create_dir(m.path("alice/d")).unwrap();
    fs::write(m.path("alice/d/f"), b"f").unwrap();
    let from = m.log_len();
    let e = std::os::unix::fs::symlink("f", m.path("alice/d/l")).expect_err("symlink");
    assert_eq!(errno_of(&e), libc::EPERM, "symlink: {e}");
    let e = fs::hard_link(m.path("alice/d/f"), m.path("alice/d/h")).expect_err("link");
    assert_eq!(errno_of(&e), libc::EPERM, "link: {e}");
    let fifo = std::ffi::CString::new(m.p("alice/d/fifo")).unwrap();
    // SAFETY: a valid C string.
    let r = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
    let e = std::io::Error::last_os_error();
    assert!(r != 0 && errno_of(&e) == libc::EPERM, "mkfifo: {r} {e}");
    let out = tool("ln", &["-s", "f", &m.p("alice/d/l2")]);
    assert!(!out.status.success(), "ln -s succeeded");
    // The log lines are written before the replies; the test reads them through a pipe.
    for want in [
        "symbolic links are not supported",
        "hard links are not supported",
        "mknod",
    ] {
        wait_until(
            Duration::from_secs(5),
            &format!("a log line with {want:?}"),
            || m.log_since(from).contains(want),
        );
    }
    let out = ok(&m, "ls", &[&m.p("alice/d")]);
    assert_eq!(out.stdout_str(), "f\n", "nothing else was made");
    for n in ["alice/d/l", "alice/d/h", "alice/d/fifo", "alice/d/l2"] {
        c.assert_not_found(n);
    }
}

/// Renaming a directory of a few hundred objects: everything moves (copied first, then
/// deleted), with a progress line every 100 objects and one at the end.
#[test]
fn fuse_dirs_rename_of_a_big_tree_logs_progress() {
    let Some((c, m)) = setup("fuse_dirs_bigmv", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    let mut names = Vec::new();
    for d in 0..5 {
        fs::create_dir_all(m.path(&format!("alice/big/d{d}"))).unwrap();
        for f in 0..50 {
            let rel = format!("d{d}/f{f:02}");
            fs::write(m.path(&format!("alice/big/{rel}")), rel.as_bytes()).unwrap();
            names.push(rel);
        }
    }
    // 250 files and 6 markers.
    let from = m.log_len();
    ok(&m, "mv", &[&m.p("alice/big"), &m.p("alice/moved")]);
    for want in ["copied=100", "copied=200", "directory rename done"] {
        wait_until(
            Duration::from_secs(5),
            &format!("a log line with {want:?}"),
            || m.log_since(from).contains(want),
        );
    }
    let out = ok(&m, "find", &[&m.p("alice/moved"), "-type", "f"]);
    assert_eq!(
        out.stdout_str().lines().count(),
        names.len(),
        "files after the move"
    );
    for rel in names.iter().step_by(17) {
        assert_cli_content(
            &c,
            &format!("alice/moved/{rel}"),
            rel.as_bytes(),
            "moved file",
        );
        c.assert_not_found(&format!("alice/big/{rel}"));
    }
    c.assert_not_found("alice/big");
    assert!(
        !m.path("alice/big").exists(),
        "the old directory after the move"
    );
}

/// `stat -c FMT` of a path on the mount, in UTC.
fn stat_fmt(m: &Mount, fmt: &str, rel: &str) -> String {
    let mut cmd = Command::new("stat");
    cmd.args(["-c", fmt, &m.p(rel)]).env("TZ", "UTC");
    cmd_ok(m, cmd, &format!("stat -c {fmt} {rel}"))
        .stdout_str()
        .trim_end()
        .to_owned()
}

/// What pjdfstest found: a size past the mount's maximum (1 TiB) is EFBIG, not EIO, for
/// `truncate -s`, `ftruncate` and a write, and changes nothing; a file unlinked (or renamed
/// over) while open has no links left (fstat's nlink is 0).
#[test]
fn fuse_dirs_too_big_is_efbig_and_removed_open_files_have_no_links() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let Some((c, m)) = setup("fuse_dirs_efbig", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    fs::create_dir(m.path("alice/d")).unwrap();
    fs::write(m.path("alice/d/f"), b"ten bytes!").unwrap();
    let huge = "999999999999999";
    let out = tool("truncate", &["-s", huge, &m.p("alice/d/f")]);
    assert!(!out.status.success(), "truncate -s {huge} succeeded");
    assert!(
        out.stderr_str().contains("File too large"),
        "truncate -s {huge}: {}",
        out.stderr_str().trim_end()
    );
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("alice/d/f"))
        .unwrap();
    let e = f.set_len(999_999_999_999_999).expect_err("ftruncate");
    assert_eq!(errno_of(&e), libc::EFBIG, "ftruncate: {e}");
    let e = f.write_at(b"x", 1 << 41).expect_err("pwrite at 2 TiB");
    assert_eq!(errno_of(&e), libc::EFBIG, "pwrite at 2 TiB: {e}");
    assert_eq!(f.metadata().unwrap().len(), 10, "fstat after EFBIG");
    f.flush().unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("alice/d/f")).unwrap(), b"ten bytes!");
    assert_cli_content(&c, "alice/d/f", b"ten bytes!", "after EFBIG");
    assert_eq!(stat_fmt(&m, "%s %h", "alice/d/f"), "10 1", "size and links");

    // Unlinked while open, for reading and for writing: nlink 0.
    let r = fs::File::open(m.path("alice/d/f")).unwrap();
    let mut w = fs::File::create(m.path("alice/d/w")).unwrap();
    w.write_all(b"being written").unwrap();
    assert_eq!(r.metadata().unwrap().nlink(), 1, "fstat before the unlink");
    assert_eq!(w.metadata().unwrap().nlink(), 1, "fstat of a new file");
    fs::remove_file(m.path("alice/d/f")).unwrap();
    fs::remove_file(m.path("alice/d/w")).unwrap();
    assert_eq!(r.metadata().unwrap().nlink(), 0, "fstat after the unlink");
    let wm = w.metadata().unwrap();
    assert_eq!(
        (wm.nlink(), wm.len()),
        (0, 13),
        "fstat of the unlinked new file"
    );
    drop((r, w));
    // Replaced by a rename while open: the old file has no name left either.
    fs::write(m.path("alice/d/old"), b"old").unwrap();
    fs::write(m.path("alice/d/new"), b"new").unwrap();
    let o = fs::File::open(m.path("alice/d/old")).unwrap();
    fs::rename(m.path("alice/d/new"), m.path("alice/d/old")).unwrap();
    assert_eq!(
        o.metadata().unwrap().nlink(),
        0,
        "fstat of the replaced file"
    );
    assert_eq!(stat_fmt(&m, "%h", "alice/d/old"), "1", "the file now there");
    drop(o);
    c.assert_not_found("alice/d/f");
    c.assert_not_found("alice/d/w");
}

/// A directory's link count is 2 + its subdirectories while its listing is known; an access
/// time set with utimensat is kept apart from the modification time (and survives a
/// remount), a file without one shows its mtime, and reading changes neither.
#[test]
fn fuse_dirs_nlink_of_directories_and_atime() {
    use std::os::unix::fs::MetadataExt;
    let Some((_c, mut m)) = setup("fuse_dirs_atime", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    for d in ["alice/n", "alice/n/s1", "alice/n/s2"] {
        fs::create_dir(m.path(d)).unwrap();
    }
    fs::write(m.path("alice/n/f"), b"file").unwrap();
    // A listing (ls) makes the count known; files do not count.
    let links = |m: &Mount| {
        fs::read_dir(m.path("alice/n")).unwrap().count();
        fs::metadata(m.path("alice/n")).unwrap().nlink()
    };
    wait_until(
        VISIBLE_WITHIN,
        "nlink 4 of a directory with 2 subdirectories",
        || links(&m) == 4,
    );
    fs::remove_dir(m.path("alice/n/s1")).unwrap();
    wait_until(VISIBLE_WITHIN, "nlink 3 after an rmdir", || links(&m) == 3);

    let f = "alice/n/f";
    let t = |secs: u64, ns: u32| UNIX_EPOCH + Duration::new(1_600_000_000 + secs, ns);
    let (atime, mtime) = (t(1, 111_111_111), t(2, 222_222_222));
    // No atime set: the mtime.
    let md = fs::metadata(m.path(f)).unwrap();
    assert_eq!(
        md.accessed().unwrap(),
        md.modified().unwrap(),
        "atime without one set"
    );
    fs::File::open(m.path(f))
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(atime).set_modified(mtime))
        .unwrap();
    let shown = "2020-09-13 12:26:41.111111111 +0000|2020-09-13 12:26:42.222222222 +0000";
    assert_eq!(
        stat_fmt(&m, "%x|%y", f),
        shown,
        "atime|mtime after utimensat"
    );
    // Reading stores nothing: the times stay, here and after a remount.
    assert_eq!(fs::read(m.path(f)).unwrap(), b"file");
    assert_eq!(stat_fmt(&m, "%x|%y", f), shown, "after a read");
    // touch -a sets the atime only; a directory (with a marker) keeps one too.
    ok(
        &m,
        "touch",
        &["-d", "2003-01-01 00:00:00 UTC", &m.p("alice/n/s2")],
    );
    ok(
        &m,
        "touch",
        &["-a", "-d", "2004-01-01 00:00:00 UTC", &m.p("alice/n/s2")],
    );
    let dir_shown = "2004-01-01 00:00:00.000000000 +0000|2003-01-01 00:00:00.000000000 +0000";
    assert_eq!(stat_fmt(&m, "%x|%y", "alice/n/s2"), dir_shown, "directory");
    m.unmount();
    m.spawn().unwrap_or_else(|e| panic!("remount: {e}"));
    assert_eq!(stat_fmt(&m, "%x|%y", f), shown, "after a remount");
    assert_eq!(fs::read(m.path(f)).unwrap(), b"file");
    assert_eq!(stat_fmt(&m, "%x|%y", f), shown, "after a read, remounted");
    assert_eq!(
        stat_fmt(&m, "%x|%y", "alice/n/s2"),
        dir_shown,
        "directory, remounted"
    );
    m.unmount();
}

/// A directory's mtime and ctime move on when this mount adds, removes or renames an entry
/// in it (kept in the mount's memory: no request to the proxy), checked past the 1 s cache.
#[test]
fn fuse_dirs_mtime_and_ctime_follow_entry_changes() {
    use std::os::unix::fs::MetadataExt;
    let Some((_c, m)) = setup("fuse_dirs_dir_times", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    fs::create_dir(m.path("alice/d")).unwrap();
    fs::create_dir(m.path("alice/other")).unwrap();
    let times = |p: &str| {
        let md = fs::metadata(m.path(p)).unwrap_or_else(|e| panic!("stat {p}: {e}"));
        ((md.mtime(), md.mtime_nsec()), (md.ctime(), md.ctime_nsec()))
    };
    let step = |what: &str, dirs: &[&str], op: &dyn Fn()| {
        let before: Vec<_> = dirs.iter().map(|d| times(d)).collect();
        std::thread::sleep(Duration::from_millis(1100));
        op();
        std::thread::sleep(Duration::from_millis(1100));
        for (d, (m0, c0)) in dirs.iter().zip(before) {
            let (m1, c1) = times(d);
            assert!(m1 > m0, "{what}: mtime of {d}: {m0:?} then {m1:?}");
            assert!(c1 > c0, "{what}: ctime of {d}: {c0:?} then {c1:?}");
        }
    };
    step("create d/f", &["alice/d"], &|| {
        fs::write(m.path("alice/d/f"), b"f").unwrap()
    });
    step("unlink d/f", &["alice/d"], &|| {
        fs::remove_file(m.path("alice/d/f")).unwrap()
    });
    step("mkdir d/sub", &["alice/d"], &|| {
        fs::create_dir(m.path("alice/d/sub")).unwrap()
    });
    step("rmdir d/sub", &["alice/d"], &|| {
        fs::remove_dir(m.path("alice/d/sub")).unwrap()
    });
    fs::write(m.path("alice/other/g"), b"g").unwrap();
    step("rename into d", &["alice/d", "alice/other"], &|| {
        fs::rename(m.path("alice/other/g"), m.path("alice/d/g")).unwrap()
    });
    step("rename out of d", &["alice/d", "alice/other"], &|| {
        fs::rename(m.path("alice/d/g"), m.path("alice/other/h")).unwrap()
    });
    assert_eq!(fs::read(m.path("alice/other/h")).unwrap(), b"g");
}
