//! `ossfs` end to end: a real mount (FUSE) over a real cluster, driven with `std::fs` and
//! ordinary shell tools (`cp`, `ls`, `cat`, `mv`, `rm`, `dd`, `head`, `tail`, `truncate`,
//! `stat`, `df`), compared with what the `oss` CLI sees.
//!
//! The consistency model under test (fs/src/lib.rs): close-to-open. A file written on the
//! mount is visible to `oss download` as soon as `close()` returns; what the CLI writes shows
//! on the mount within the cache TTL (1 s), so the tests poll up to [`VISIBLE_WITHIN`].
//!
//! Mounting (`../shared/fuse-notes.md` §7): each mount lives in a directory whose path holds
//! `ossfs-it-`, so CI's pre-clean (`awk '$2 ~ /ossfs-it-/' /proc/mounts`) catches what a
//! killed test leaves. [`Mount`] kills ossfs and runs `umount -l` on drop (also on panic),
//! and a watchdog thread SIGKILLs ossfs after [`WATCHDOG`], which wakes any test thread
//! blocked inside a `std::fs` call (it gets ENOTCONN) instead of hanging the suite. Shell
//! tools run through the harness's [`run`] with a deadline.
//!
//! Without `/dev/fuse` the tests skip with a message, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use oss_tests::*;

/// How long ossfs may take to print `ossfs: mounted on ...` (debug build, busy machine).
pub(crate) const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one shell tool on the mount.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(90);
/// After this, the watchdog SIGKILLs ossfs: a blocked `std::fs` call then fails (ENOTCONN).
pub(crate) const WATCHDOG: Duration = Duration::from_secs(200);
/// The documented cache TTL is 1 s; allow scheduling slack on a shared 2-core machine.
pub(crate) const VISIBLE_WITHIN: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------
// Mount helpers

/// True if FUSE tests can run here. Missing `/dev/fuse` skips (with a message) locally and
/// panics under `CI=true`, where a silent skip would hide regressions.
pub(crate) fn fuse_available(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let why = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing".to_string())
    } else if unsafe { libc::geteuid() } != 0 && !in_path("fusermount3") {
        Some("not root and no fusermount3 in PATH".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if ci => panic!("{test}: FUSE is required under CI=true, but {why}"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why} (set up FUSE or run as root to run it)");
            false
        }
    }
}

fn in_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Whether `mnt` is a mount point now (field 5 of /proc/self/mountinfo). Does not touch
/// `mnt` itself, which may be a stale mount (every access fails with ENOTCONN).
pub(crate) fn is_mounted(mnt: &Path) -> bool {
    let want = match (mnt.parent(), mnt.file_name()) {
        (Some(p), Some(f)) => fs::canonicalize(p).unwrap_or_else(|_| p.to_owned()).join(f),
        _ => mnt.to_owned(),
    };
    let want = want.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

pub(crate) fn lazy_umount(mnt: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One ossfs process (and the directory it mounts on). Dropping it kills ossfs, detaches
/// the mount if it is still there and removes the directory.
pub(crate) struct Mount {
    pub(crate) mnt: PathBuf,
    proxy: String,
    /// The key ossfs logs in with: the cluster's admin key unless a test chose a user's.
    key: PathBuf,
    cache_dir: PathBuf,
    child: Option<Child>,
    /// Every stderr line of every ossfs started by this guard.
    log: Arc<Mutex<Vec<String>>>,
    /// Set when the current child is reaped; the watchdog then leaves its pid alone.
    reaped: Arc<AtomicBool>,
}

static MOUNTS: AtomicU32 = AtomicU32::new(0);

impl Mount {
    /// Mounts ossfs for cluster `c` on a fresh `/tmp/ossfs-it-TAG-PID-N`, with the admin key.
    pub(crate) fn start(c: &Cluster, tag: &str) -> Mount {
        Mount::start_with_key(c, tag, &c.proxy.admin_key())
    }

    /// [`Mount::start`] logged in with the key in `key`.
    pub(crate) fn start_with_key(c: &Cluster, tag: &str, key: &Path) -> Mount {
        let n = MOUNTS.fetch_add(1, Ordering::Relaxed);
        let mnt = std::env::temp_dir().join(format!("ossfs-it-{tag}-{}-{n}", std::process::id()));
        // A stale mount with this name, left by a killed earlier run.
        if is_mounted(&mnt) {
            lazy_umount(&mnt);
        }
        fs::create_dir_all(&mnt).unwrap_or_else(|e| panic!("mkdir {}: {e}", mnt.display()));
        let cache_dir = c.root().join("ossfs-spool");
        fs::create_dir_all(&cache_dir).unwrap();
        let mut m = Mount {
            mnt,
            proxy: c.proxy_addr(),
            key: key.to_owned(),
            cache_dir,
            child: None,
            log: Arc::default(),
            reaped: Arc::new(AtomicBool::new(true)),
        };
        m.spawn().unwrap_or_else(|e| panic!("{e}"));
        m
    }

    /// Starts ossfs on `self.mnt` (again) and waits for its readiness line. Call from the
    /// test's own thread (the child dies with the thread that spawned it).
    pub(crate) fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "ossfs already running");
        let mut cmd = Command::new(bin("ossfs"));
        cmd.arg("--proxy")
            .arg(&self.proxy)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .arg(&self.mnt)
            .env_remove("OSS_PROXY")
            .env("OSS_KEY_FILE", &self.key)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start ossfs: {e}"))?;
        let pid = child.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[ossfs {pid}] {l}");
                if l.contains("ossfs: mounted on") {
                    let _ = tx.send(());
                }
                log.lock().unwrap().push(l);
            }
        });
        let reaped = Arc::new(AtomicBool::new(false));
        self.reaped = reaped.clone();
        let shown = self.mnt.display().to_string();
        thread::spawn(move || {
            let deadline = Instant::now() + WATCHDOG;
            while Instant::now() < deadline {
                if reaped.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(200));
            }
            if !reaped.load(Ordering::SeqCst) {
                eprintln!("watchdog: ossfs on {shown} still running after {WATCHDOG:?}: SIGKILL");
                // SAFETY: our child, not yet reaped (the flag is set before reaping).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(MOUNT_TIMEOUT) {
            Ok(()) => {}
            Err(_) => {
                let status = self.kill();
                return Err(format!(
                    "ossfs did not mount {} within {MOUNT_TIMEOUT:?} ({status:?}); stderr:\n{}",
                    self.mnt.display(),
                    self.log_text()
                ));
            }
        }
        if !is_mounted(&self.mnt) {
            return Err(format!(
                "ossfs said it mounted, but {} is not in /proc/self/mountinfo",
                self.mnt.display()
            ));
        }
        Ok(())
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("ossfs running").id() as libc::pid_t
    }

    pub(crate) fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our own, not yet reaped, child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    /// SIGKILL and reap (the mount stays behind, stale). The exit status if it was running.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        self.reaped.store(true, Ordering::SeqCst);
        let _ = c.kill();
        c.wait().ok()
    }

    /// Waits up to `timeout` for ossfs to exit by itself; SIGKILLs it (and panics) after.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut().expect("ossfs running");
            if let Some(st) = c.try_wait().expect("try_wait") {
                self.reaped.store(true, Ordering::SeqCst);
                self.child = None;
                return st;
            }
            if Instant::now() > deadline {
                let st = self.kill();
                panic!(
                    "ossfs did not exit within {timeout:?} ({st:?}); stderr:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (unmount after uploading dirty files) and wait for a clean exit.
    pub(crate) fn unmount(&mut self) {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(Duration::from_secs(30));
        assert!(
            st.success(),
            "ossfs exited with {st} after SIGTERM; stderr:\n{}",
            self.log_text()
        );
        assert!(
            !is_mounted(&self.mnt),
            "{} still mounted after ossfs exited",
            self.mnt.display()
        );
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub(crate) fn p(&self, rel: &str) -> String {
        path_str(&self.mnt.join(rel)).to_owned()
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Number of stderr lines so far (to look at only what a step logged).
    pub(crate) fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    pub(crate) fn log_since(&self, from: usize) -> String {
        self.log.lock().unwrap()[from..].join("\n")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.kill();
        if is_mounted(&self.mnt) {
            lazy_umount(&self.mnt);
        }
        let _ = fs::remove_dir(&self.mnt);
    }
}

/// Starts a cluster and mounts it; None (skipped) without FUSE.
pub(crate) fn setup(test: &str, storage: usize) -> Option<(Cluster, Mount)> {
    if !fuse_available(test) {
        return None;
    }
    let c = Cluster::start(storage, 16);
    let m = Mount::start(&c, test);
    Some((c, m))
}

// ---------------------------------------------------------------------------------------
// Tools and checks

/// `prog ARGS...` with a deadline.
pub(crate) fn tool(prog: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(prog);
    cmd.args(args).env("LC_ALL", "C");
    run(cmd, None, TOOL_TIMEOUT)
}

/// Runs a tool and asserts success, showing ossfs's log lines of that step on failure.
pub(crate) fn ok(m: &Mount, prog: &str, args: &[&str]) -> Output {
    let from = m.log_len();
    let out = tool(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}; stderr: {}\nossfs stderr meanwhile:\n{}",
        out.status,
        out.stderr_str().trim_end(),
        m.log_since(from)
    );
    out
}

pub(crate) fn sh_ok(m: &Mount, script: &str) -> Output {
    ok(m, "sh", &["-c", script])
}

/// `oss download` right now gives exactly `want`.
pub(crate) fn assert_cli_content(c: &Cluster, name: &str, want: &[u8], when: &str) {
    match c.download_bytes(name) {
        Ok(got) => assert!(
            got == want,
            "{when}: oss download {name}: {} bytes (md5 {}), expected {} bytes (md5 {})",
            got.len(),
            md5_hex(&got),
            want.len(),
            md5_hex(want)
        ),
        Err(e) => panic!("{when}: oss download {name} failed: {e}"),
    }
}

/// `oss download NAME FILE` and the MD5 of the file (large objects).
pub(crate) fn cli_md5(c: &Cluster, name: &str) -> String {
    let dst = c.work().join(format!("dl-{}", name.replace('/', "_")));
    c.oss_timeout(&["download", name, path_str(&dst)], TOOL_TIMEOUT)
        .assert_ok(&format!("oss download {name}"));
    let h = md5_file_hex(&dst);
    let _ = fs::remove_file(&dst);
    h
}

/// The error number of an `std::io::Error` (for messages).
pub(crate) fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Polls until `path` exists on the mount with `len` bytes; how long it took.
pub(crate) fn wait_visible(path: &Path, len: u64) -> Duration {
    let t = Instant::now();
    loop {
        let last = fs::metadata(path);
        if matches!(&last, Ok(md) if md.len() == len) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < VISIBLE_WITHIN,
            "{} not visible with {len} bytes within {VISIBLE_WITHIN:?} (TTL 1 s): last {last:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Tests

/// Every way of writing on the mount is on the proxy as soon as close() returns.
#[test]
fn fuse_writes_are_visible_to_the_cli_after_close() {
    let Some((c, m)) = setup("fuse_writes", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).expect("mkdir alice on the mount");

    // std::fs::write (create, write, close).
    let small = pseudo_random(1, 100_000);
    fs::write(m.path("alice/std.bin"), &small).expect("std::fs::write");
    assert_cli_content(&c, "alice/std.bin", &small, "after std::fs::write");

    // cp of a 12 MiB file.
    let src = c.work().join("big.src");
    let want = write_pseudo_random_file(&src, 2, 12 << 20);
    ok(&m, "cp", &[path_str(&src), &m.p("alice/big.bin")]);
    assert_eq!(cli_md5(&c, "alice/big.bin"), want, "12 MiB after cp");
    let l = c.list_long("alice");
    assert_eq!(l.get("big.bin"), Some(&(12 << 20, want.clone())), "list -l");

    // echo > f, then >> appends.
    sh_ok(&m, &format!("echo hello > {}", m.p("alice/echo.txt")));
    assert_cli_content(&c, "alice/echo.txt", b"hello\n", "after echo >");
    sh_ok(&m, &format!("echo world >> {}", m.p("alice/echo.txt")));
    assert_cli_content(&c, "alice/echo.txt", b"hello\nworld\n", "after echo >>");
    // `>` again truncates.
    sh_ok(&m, &format!("printf x > {}", m.p("alice/echo.txt")));
    assert_cli_content(&c, "alice/echo.txt", b"x", "after printf > (truncate)");

    // >> onto a file the CLI uploaded (not written on this mount).
    let base = pseudo_random(3, 300_001);
    c.upload_bytes("alice/remote.bin", &base);
    wait_visible(&m.path("alice/remote.bin"), base.len() as u64);
    sh_ok(&m, &format!("printf tail >> {}", m.p("alice/remote.bin")));
    let mut appended = base.clone();
    appended.extend_from_slice(b"tail");
    assert_cli_content(
        &c,
        "alice/remote.bin",
        &appended,
        "after >> onto a CLI file",
    );

    // dd conv=fsync.
    let dd_src = c.work().join("dd.src");
    let dd_md5 = write_pseudo_random_file(&dd_src, 4, 3 << 20);
    ok(
        &m,
        "dd",
        &[
            &format!("if={}", path_str(&dd_src)),
            &format!("of={}", m.p("alice/dd.bin")),
            "bs=256k",
            "conv=fsync",
            "status=none",
        ],
    );
    assert_eq!(cli_md5(&c, "alice/dd.bin"), dd_md5, "after dd conv=fsync");

    // An empty file exists once closed.
    sh_ok(&m, &format!(": > {}", m.p("alice/empty")));
    assert_cli_content(&c, "alice/empty", b"", "after : > empty");

    // Overwrite in place at an offset (open without O_TRUNC, pwrite, close).
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("alice/std.bin"))
            .expect("open for writing");
        f.seek(SeekFrom::Start(10)).unwrap();
        f.write_all(b"PATCH").unwrap();
    }
    let mut patched = small.clone();
    patched[10..15].copy_from_slice(b"PATCH");
    assert_cli_content(&c, "alice/std.bin", &patched, "after a write at offset 10");

    // fsync publishes before close.
    {
        let mut f = fs::File::create(m.path("alice/fsynced")).unwrap();
        f.write_all(b"synced bytes").unwrap();
        f.sync_all().expect("fsync on the mount");
        assert_cli_content(
            &c,
            "alice/fsynced",
            b"synced bytes",
            "after fsync, before close",
        );
    }

    // What the mount reads back is the same too.
    assert_eq!(
        md5_file_hex(&m.path("alice/big.bin")),
        want,
        "read back via std::fs"
    );
}

/// Files the CLI uploads, replaces and deletes show on the mount within the cache TTL.
#[test]
fn fuse_cli_changes_show_within_the_cache_ttl() {
    let Some((c, m)) = setup("fuse_cli_visible", 2) else {
        return;
    };
    let v1 = pseudo_random(10, 200_000);
    c.upload_bytes("carol/doc", &v1);
    let took = wait_visible(&m.path("carol/doc"), v1.len() as u64);
    eprintln!("new file visible after {took:?}");
    let out = ok(&m, "cat", &[&m.p("carol/doc")]);
    assert_eq!(md5_hex(&out.stdout), md5_hex(&v1), "cat of a CLI upload");
    let dst = c.work().join("doc.out");
    ok(&m, "cp", &[&m.p("carol/doc"), path_str(&dst)]);
    assert_eq!(md5_file_hex(&dst), md5_hex(&v1), "cp out of a CLI upload");

    // Replaced by the CLI with another size: the mount shows the new bytes within the TTL.
    let v2 = pseudo_random(11, 123_457);
    c.upload_bytes("carol/doc", &v2);
    let t = Instant::now();
    loop {
        let got = fs::read(m.path("carol/doc")).unwrap_or_default();
        if got == v2 {
            break;
        }
        assert!(
            t.elapsed() < VISIBLE_WITHIN,
            "a CLI overwrite not visible within {VISIBLE_WITHIN:?}: read {} bytes (md5 {})",
            got.len(),
            md5_hex(&got)
        );
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("overwrite visible after {:?}", t.elapsed());

    // Deleted by the CLI: gone from the mount within the TTL.
    c.delete("carol/doc").assert_ok("oss delete carol/doc");
    let t = Instant::now();
    loop {
        match fs::metadata(m.path("carol/doc")) {
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            other => assert!(
                t.elapsed() < VISIBLE_WITHIN,
                "a CLI delete not visible within {VISIBLE_WITHIN:?}: {other:?}"
            ),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `ls` of the root lists users; `ls -l` and `stat` show the sizes `oss list -l` shows;
/// times are real; `df` shows a size.
#[test]
fn fuse_listings_stat_and_df() {
    let Some((c, m)) = setup("fuse_listings", 2) else {
        return;
    };
    let files: [(&str, usize); 5] = [
        ("alice/a.txt", 0),
        ("alice/b.bin", 1),
        ("alice/c.bin", 65_537),
        ("alice/d.bin", 1_000_000),
        ("bob/x", 42),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        c.upload_bytes(name, &pseudo_random(20 + i as u64, *len));
    }
    let before = SystemTime::now() - Duration::from_secs(600);

    let out = ok(&m, "ls", &[&m.p("")]);
    let users: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    assert_eq!(users, ["alice", "bob"], "ls of the mount root");
    let mut via_std: Vec<String> = fs::read_dir(&m.mnt)
        .expect("read_dir root")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    via_std.sort();
    assert_eq!(via_std, ["alice", "bob"], "read_dir of the mount root");
    assert!(fs::metadata(m.path("alice")).unwrap().is_dir());

    // ls -l sizes = oss list -l sizes.
    let cli = c.list_long("alice");
    assert_eq!(cli.len(), 4, "oss list -l alice: {cli:?}");
    let out = ok(&m, "ls", &["-l", "--time-style=+T", &m.p("alice")]);
    let mut seen = BTreeMap::new();
    for line in out.stdout_str().lines().filter(|l| !l.starts_with("total")) {
        // perms links owner group size T name
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 7, "unexpected ls -l line {line:?}");
        assert!(cols[0].starts_with('-'), "not a regular file: {line:?}");
        let size: u64 = cols[4]
            .parse()
            .unwrap_or_else(|_| panic!("size in {line:?}"));
        seen.insert(cols[6].to_string(), size);
    }
    let want: BTreeMap<String, u64> = cli.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    assert_eq!(seen, want, "ls -l sizes vs oss list -l");

    // stat: sizes and modification times.
    for (name, len) in files {
        let out = ok(&m, "stat", &["-c", "%s %Y %F", &m.p(name)]);
        let s = out.stdout_str();
        let cols: Vec<&str> = s.split_whitespace().collect();
        assert_eq!(cols[0], len.to_string(), "stat size of {name}: {s:?}");
        let mtime: u64 = cols[1].parse().unwrap();
        let lo = before
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(mtime >= lo, "stat mtime of {name} is not recent: {s:?}");
        assert!(s.contains("regular"), "{name}: {s:?}");
        let md = fs::metadata(m.path(name)).unwrap();
        assert_eq!(md.len(), len as u64, "std::fs::metadata size of {name}");
        assert!(md.modified().unwrap() >= before, "{name}: mtime");
    }

    // df: a non-zero size for the mount.
    let out = ok(&m, "df", &["-B1", "--output=size,target", &m.p("")]);
    let s = out.stdout_str();
    let line = s
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("df printed {s:?}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let size: u64 = cols[0]
        .parse()
        .unwrap_or_else(|_| panic!("df size in {line:?}"));
    assert!(size > 0, "df shows size 0: {s:?}");
    assert_eq!(cols[1], path_str(&m.mnt), "df target: {s:?}");
    let out = ok(&m, "df", &["-T", &m.p("")]);
    assert!(
        out.stdout_str().contains("oss"),
        "df -T names the file system: {}",
        out.stdout_str()
    );
}

/// `head -c 100`, `tail -c 100`, a `dd` from the middle and `cp` out of a 32 MiB file.
#[test]
fn fuse_head_tail_and_ranges_of_a_large_file() {
    let Some((c, m)) = setup("fuse_head_tail", 2) else {
        return;
    };
    const SIZE: usize = 32 << 20;
    let src = c.work().join("big.src");
    let want = write_pseudo_random_file(&src, 30, SIZE as u64);
    c.oss_timeout(&["upload", "alice/big", path_str(&src)], TOOL_TIMEOUT)
        .assert_ok("oss upload 32 MiB");
    let data = fs::read(&src).unwrap();
    wait_visible(&m.path("alice/big"), SIZE as u64);

    let t = Instant::now();
    let out = ok(&m, "head", &["-c", "100", &m.p("alice/big")]);
    eprintln!("head -c 100 of 32 MiB took {:?}", t.elapsed());
    assert!(out.stdout == data[..100], "head -c 100: wrong bytes");
    let t = Instant::now();
    let out = ok(&m, "tail", &["-c", "100", &m.p("alice/big")]);
    eprintln!("tail -c 100 of 32 MiB took {:?}", t.elapsed());
    assert!(out.stdout == data[SIZE - 100..], "tail -c 100: wrong bytes");

    // 100 bytes at an odd offset in the middle (a range read, not aligned to anything).
    let off = 17 * 1024 * 1024 + 12_345;
    let out = ok(
        &m,
        "dd",
        &[
            &format!("if={}", m.p("alice/big")),
            "bs=1",
            "count=100",
            &format!("skip={off}"),
            "iflag=skip_bytes",
            "status=none",
        ],
    );
    assert!(
        out.stdout == data[off..off + 100],
        "dd from the middle: wrong bytes"
    );

    // std::fs: seek + read.
    let mut f = fs::File::open(m.path("alice/big")).unwrap();
    f.seek(SeekFrom::Start((SIZE - 5000) as u64)).unwrap();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert!(buf == data[SIZE - 5000..], "seek + read_to_end");
    drop(f);

    let dst = c.work().join("big.out");
    ok(&m, "cp", &[&m.p("alice/big"), path_str(&dst)]);
    assert_eq!(md5_file_hex(&dst), want, "cp out of 32 MiB");
}

/// `truncate -s` shrinks and grows; `rm`; `mv` within a user, between users, onto an
/// existing file.
#[test]
fn fuse_truncate_rm_and_mv() {
    let Some((c, m)) = setup("fuse_trunc_mv", 2) else {
        return;
    };
    let t0 = pseudo_random(40, 10_000);
    c.upload_bytes("alice/t", &t0);
    c.upload_bytes("bob/keep", b"bob was here");
    wait_visible(&m.path("alice/t"), t0.len() as u64);

    // Shrink, then grow (zeros).
    ok(&m, "truncate", &["-s", "100", &m.p("alice/t")]);
    assert_cli_content(&c, "alice/t", &t0[..100], "after truncate -s 100");
    ok(&m, "truncate", &["-s", "5000", &m.p("alice/t")]);
    let mut grown = t0[..100].to_vec();
    grown.resize(5000, 0);
    assert_cli_content(&c, "alice/t", &grown, "after truncate -s 5000");
    let out = ok(&m, "stat", &["-c", "%s", &m.p("alice/t")]);
    assert_eq!(out.stdout_str().trim(), "5000", "stat after truncate");
    // std::fs set_len to 0.
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("alice/t"))
        .unwrap()
        .set_len(0)
        .expect("set_len(0)");
    assert_cli_content(&c, "alice/t", b"", "after set_len(0)");
    // truncate -s on a new name creates it.
    ok(&m, "truncate", &["-s", "3", &m.p("alice/new")]);
    assert_cli_content(&c, "alice/new", &[0, 0, 0], "truncate -s 3 of a new file");

    // rm.
    ok(&m, "rm", &[&m.p("alice/t")]);
    c.assert_not_found("alice/t");
    let e = fs::metadata(m.path("alice/t")).expect_err("removed file still on the mount");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let out = tool("rm", &[&m.p("alice/t")]);
    assert!(!out.status.success(), "rm of a missing file succeeded");
    assert!(
        out.stderr_str().contains("No such file"),
        "rm of a missing file: {}",
        out.stderr_str()
    );

    // mv within a user.
    let a = pseudo_random(41, 777_777);
    fs::write(m.path("alice/a"), &a).unwrap();
    ok(&m, "mv", &[&m.p("alice/a"), &m.p("alice/a2")]);
    c.assert_not_found("alice/a");
    assert_cli_content(&c, "alice/a2", &a, "after mv within alice");
    assert!(!m.path("alice/a").exists(), "old name still on the mount");
    assert_eq!(
        md5_file_hex(&m.path("alice/a2")),
        md5_hex(&a),
        "new name on the mount"
    );

    // mv between users.
    ok(&m, "mv", &[&m.p("alice/a2"), &m.p("bob/from-alice")]);
    c.assert_not_found("alice/a2");
    assert_cli_content(&c, "bob/from-alice", &a, "after mv alice → bob");
    assert!(!m.path("alice/a2").exists());
    assert_eq!(md5_file_hex(&m.path("bob/from-alice")), md5_hex(&a));

    // mv onto an existing file replaces it.
    let d = pseudo_random(42, 4321);
    fs::write(m.path("alice/d"), &d).unwrap();
    ok(&m, "mv", &[&m.p("alice/d"), &m.p("bob/keep")]);
    c.assert_not_found("alice/d");
    assert_cli_content(&c, "bob/keep", &d, "after mv onto an existing file");
    assert_eq!(
        fs::read(m.path("bob/keep")).unwrap(),
        d,
        "replaced file on the mount"
    );
    // std::fs::rename too.
    fs::rename(m.path("bob/keep"), m.path("bob/keep2")).expect("std::fs::rename");
    assert_cli_content(&c, "bob/keep2", &d, "after std::fs::rename");
    c.assert_not_found("bob/keep");

    // mv of a file just written and still being closed by cp: cp then mv in one shell.
    sh_ok(
        &m,
        &format!(
            "echo fresh > {0} && mv {0} {1}",
            m.p("alice/fresh"),
            m.p("alice/fresh2")
        ),
    );
    assert_cli_content(&c, "alice/fresh2", b"fresh\n", "echo then mv");
    c.assert_not_found("alice/fresh");

    let out = ok(&m, "ls", &[&m.p("alice")]);
    assert_eq!(out.stdout_str(), "fresh2\nnew\n", "ls alice at the end");
}

/// `mkdir USER` makes a user, `rmdir` of an empty user works, of a non-empty one fails
/// with ENOTEMPTY; a directory below a user is a marker.
#[test]
fn fuse_mkdir_and_rmdir_of_users() {
    let Some((c, m)) = setup("fuse_mkdir", 2) else {
        return;
    };
    c.upload_bytes("alice/f", b"alice's file");
    wait_visible(&m.path("alice/f"), 12);

    ok(&m, "mkdir", &[&m.p("bob")]);
    assert!(
        fs::metadata(m.path("bob")).unwrap().is_dir(),
        "bob after mkdir"
    );
    let out = ok(&m, "ls", &[&m.p("")]);
    assert_eq!(out.stdout_str(), "alice\nbob\n", "ls root after mkdir bob");
    let out = ok(&m, "ls", &[&m.p("bob")]);
    assert_eq!(out.stdout_str(), "", "a new user is empty");
    // Still visible after the cache TTL (kept locally until it has files).
    thread::sleep(Duration::from_millis(1500));
    assert!(m.path("bob").is_dir(), "bob gone after the TTL");

    // mkdir of an existing user.
    let e = fs::create_dir(m.path("alice")).expect_err("mkdir of an existing user");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");

    // rmdir of an empty user.
    ok(&m, "rmdir", &[&m.p("bob")]);
    let e = fs::metadata(m.path("bob")).expect_err("bob after rmdir");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // rmdir of a non-empty user: ENOTEMPTY, and nothing lost.
    let e = fs::remove_dir(m.path("alice")).expect_err("rmdir of a non-empty user");
    assert_eq!(errno_of(&e), libc::ENOTEMPTY, "rmdir alice: {e}");
    let out = tool("rmdir", &[&m.p("alice")]);
    assert!(
        !out.status.success(),
        "shell rmdir of a non-empty user succeeded"
    );
    assert_cli_content(&c, "alice/f", b"alice's file", "after a refused rmdir");

    // Directories below a user are markers (the rest is in fuse_dirs.rs).
    fs::create_dir(m.path("alice/sub")).expect("mkdir below a user");
    let e = fs::create_dir(m.path("alice/sub")).expect_err("mkdir of an existing directory");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_cli_content(&c, "alice/sub", b"", "the marker of alice/sub");
    let e = fs::remove_dir(m.path("alice")).expect_err("rmdir of a user with a directory");
    assert_eq!(errno_of(&e), libc::ENOTEMPTY, "rmdir alice: {e}");
    fs::remove_dir(m.path("alice/sub")).expect("rmdir alice/sub");
    c.assert_not_found("alice/sub");
    assert_eq!(
        c.list_long("alice").len(),
        1,
        "what alice has after rmdir alice/sub"
    );

    // A user made on the mount becomes real with its first file.
    fs::create_dir(m.path("dave")).unwrap();
    fs::write(m.path("dave/first"), b"1").unwrap();
    assert_cli_content(&c, "dave/first", b"1", "first file of a new user");
    let e = fs::remove_dir(m.path("dave")).expect_err("rmdir of dave with a file");
    assert_eq!(errno_of(&e), libc::ENOTEMPTY, "rmdir dave: {e}");
    fs::remove_file(m.path("dave/first")).unwrap();
    c.assert_not_found("dave/first");
}

/// Missing files are ENOENT; bad names fail and store nothing.
#[test]
fn fuse_errors_missing_files_and_bad_names() {
    let Some((c, m)) = setup("fuse_errors", 2) else {
        return;
    };
    c.upload_bytes("alice/f", b"x");
    wait_visible(&m.path("alice/f"), 1);

    for p in ["alice/missing", "nobody/x", "nobody"] {
        let e = fs::metadata(m.path(p)).expect_err(p);
        assert_eq!(e.kind(), ErrorKind::NotFound, "metadata {p}: {e}");
        if p != "nobody" {
            let e = fs::read(m.path(p)).expect_err(p);
            assert_eq!(e.kind(), ErrorKind::NotFound, "read {p}: {e}");
        }
    }
    let out = tool("cat", &[&m.p("alice/missing")]);
    assert!(!out.status.success());
    assert!(
        out.stderr_str().contains("No such file"),
        "cat: {}",
        out.stderr_str()
    );
    // Writing into a user that does not exist (and was not made with mkdir).
    let e = fs::write(m.path("nobody/x"), b"x").expect_err("write into a missing user");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // A file name over 255 bytes: an error, and nothing stored.
    let long = "n".repeat(256);
    let e = fs::write(m.path(&format!("alice/{long}")), b"x").expect_err("256-byte name");
    let n = errno_of(&e);
    assert!(
        n == libc::ENAMETOOLONG || n == libc::EINVAL,
        "256-byte name: expected ENAMETOOLONG or EINVAL, got {e}"
    );
    let out = tool("cp", &["/etc/hostname", &m.p(&format!("alice/{long}"))]);
    assert!(!out.status.success(), "cp to a 256-byte name succeeded");
    // 255 bytes is fine.
    let max = "m".repeat(255);
    fs::write(m.path(&format!("alice/{max}")), b"max").expect("255-byte name");
    assert_cli_content(&c, &format!("alice/{max}"), b"max", "255-byte name");
    let names: Vec<String> = c.list_long("alice").into_keys().collect();
    assert_eq!(names, vec!["f".to_string(), max.clone()], "what alice has");

    // Files only live in a user's folder.
    let e = fs::write(m.path("top.txt"), b"x").expect_err("a file at the top level");
    assert_eq!(errno_of(&e), libc::EPERM, "top-level file: {e}");
    // A user name over 255 bytes.
    let e = fs::create_dir(m.path(&"u".repeat(256))).expect_err("256-byte user");
    let n = errno_of(&e);
    assert!(
        n == libc::ENAMETOOLONG || n == libc::EINVAL,
        "256-byte user: {e}"
    );
    let out = ok(&m, "ls", &[&m.p("")]);
    assert_eq!(out.stdout_str(), "alice\n", "users at the end");
}

/// A `cp` from a FIFO: the test decides when its bytes arrive, so the destination on the
/// mount is open (and being written) while the test changes the world around it.
struct FifoCp {
    child: Option<Child>,
    writer: Option<fs::File>,
}

impl FifoCp {
    /// Starts `cp FIFO DST` and opens the FIFO's write end (waits until cp reads it).
    fn start(work: &Path, tag: &str, dst: &Path) -> FifoCp {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let fifo = work.join(format!("{tag}.fifo"));
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let child = Command::new("cp")
            .arg(&fifo)
            .arg(dst)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cp");
        let mut me = FifoCp {
            child: Some(child),
            writer: None,
        };
        // Non-blocking open fails (ENXIO) until cp has opened the read end.
        let t = Instant::now();
        let w = loop {
            match fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
            {
                Ok(w) => break w,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    if let Some(st) = me.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!("cp exited ({st}) before reading the FIFO: {}", me.stderr());
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(20),
                        "cp never opened the FIFO"
                    );
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("open FIFO: {e}"),
            }
        };
        // Back to blocking writes.
        // SAFETY: fcntl on an fd we own.
        unsafe {
            use std::os::unix::io::AsRawFd;
            let fd = w.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        me.writer = Some(w);
        me
    }

    fn write(&mut self, data: &[u8]) {
        self.writer
            .as_mut()
            .expect("FIFO open")
            .write_all(data)
            .expect("write to the FIFO (cp died?)");
    }

    /// Closes the FIFO (cp sees EOF, closes its destination) and waits for cp.
    fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        self.writer = None;
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let err = self.stderr();
                self.child = None;
                return (st, err);
            }
            assert!(
                t.elapsed() < timeout,
                "cp did not finish within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for FifoCp {
    fn drop(&mut self) {
        self.writer = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls until the file being written at `path` shows at least `len` bytes on the mount.
fn wait_growing(path: &Path, len: u64) {
    let t = Instant::now();
    while fs::metadata(path).map(|m| m.len()).unwrap_or(0) < len {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} never reached {len} bytes: {:?}",
            path.display(),
            fs::metadata(path)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Storage servers die while files on the mount are open for writing: `close()` fails
/// (cp exits non-zero, close(2) returns -1/EIO, fsync EIO), nothing half-written is stored,
/// and the mount works again once the servers are back.
#[test]
fn fuse_close_fails_when_storage_is_down() {
    let Some((mut c, m)) = setup("fuse_fail", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    fs::write(m.path("alice/before"), b"before").unwrap();
    assert_cli_content(&c, "alice/before", b"before", "before the failure");
    let src = c.work().join("src");
    let want = write_pseudo_random_file(&src, 50, 2 << 20);
    let chunk = pseudo_random(51, 1 << 20);

    // Opened while the servers are up.
    let mut cp = FifoCp::start(&c.work(), "lost-cp", &m.path("alice/lost-cp"));
    cp.write(&chunk);
    wait_growing(&m.path("alice/lost-cp"), chunk.len() as u64);
    let mut raw = fs::File::create(m.path("alice/lost-raw")).expect("create lost-raw");
    raw.write_all(&chunk).unwrap();
    let mut synced = fs::File::create(m.path("alice/lost-fsync")).expect("create lost-fsync");
    synced.write_all(b"abc").unwrap();

    for s in c.storage.iter_mut() {
        s.kill();
    }
    let from = m.log_len();

    // cp: the rest of its input, then EOF; its close() of the destination must fail.
    cp.write(&chunk);
    let t = Instant::now();
    let (st, err) = cp.finish(Duration::from_secs(90));
    eprintln!(
        "cp with storage down: {st} after {:?}: {}",
        t.elapsed(),
        err.trim()
    );
    assert!(
        !st.success(),
        "cp into the mount succeeded with every storage server down; ossfs logged:\n{}",
        m.log_since(from)
    );
    assert!(!err.trim().is_empty(), "cp failed without a message");

    // close(2) on a raw fd: -1 with EIO.
    let more = raw.write_all(&chunk);
    let fd = raw.into_raw_fd();
    // SAFETY: we own fd (into_raw_fd) and close it exactly once.
    let r = unsafe { libc::close(fd) };
    let err = std::io::Error::last_os_error();
    eprintln!("write with storage down: {more:?}; close: {r} ({err})");
    assert_eq!(
        r,
        -1,
        "close() returned 0 with every storage server down; ossfs logged:\n{}",
        m.log_since(from)
    );
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "close(): {err}");

    // fsync: EIO too.
    let e = synced
        .sync_all()
        .expect_err("fsync succeeded with every storage server down");
    assert_eq!(errno_of(&e), libc::EIO, "fsync: {e}");
    drop(synced);

    // A new file: the name cannot even be checked; it fails at once (not silently).
    let out = tool("cp", &[path_str(&src), &m.p("alice/lost-new")]);
    assert!(
        !out.status.success(),
        "cp of a new file with storage down succeeded"
    );

    for s in c.storage.iter_mut() {
        s.restart();
    }
    c.wait_all_online(Duration::from_secs(60));
    // Nothing half-written: the failed files do not exist.
    for n in [
        "alice/lost-cp",
        "alice/lost-raw",
        "alice/lost-fsync",
        "alice/lost-new",
    ] {
        c.assert_not_found(n);
    }
    assert_cli_content(&c, "alice/before", b"before", "after the failure");
    // The mount works again (the proxy may need a moment to use the servers again).
    let t = Instant::now();
    loop {
        let out = tool("cp", &[path_str(&src), &m.p("alice/after")]);
        if out.status.success() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "cp still fails 20 s after the servers are back online: {}",
            out.stderr_str()
        );
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(cli_md5(&c, "alice/after"), want, "cp after recovery");
}

/// SIGTERM unmounts cleanly (uploading a file still open for writing first); a new ossfs on
/// the same directory sees everything.
#[test]
fn fuse_unmount_and_remount_keeps_everything() {
    let Some((c, mut m)) = setup("fuse_remount", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    fs::create_dir(m.path("bob")).unwrap();
    let mut want: Vec<(String, String)> = Vec::new();
    for (i, (name, len)) in [("alice/a", 1000usize), ("alice/b", 0), ("bob/c", 1_500_000)]
        .into_iter()
        .enumerate()
    {
        let d = pseudo_random(60 + i as u64, len);
        fs::write(m.path(name), &d).unwrap();
        want.push((name.into(), md5_hex(&d)));
    }
    let src = c.work().join("cp.src");
    let h = write_pseudo_random_file(&src, 63, 6 << 20);
    ok(&m, "cp", &[path_str(&src), &m.p("bob/cp")]);
    want.push(("bob/cp".into(), h));

    m.unmount();
    assert!(
        m.log_text().contains("unmounted"),
        "no 'unmounted' line: {}",
        m.log_text()
    );
    // Unmounted: the directory is the plain, empty directory again.
    assert_eq!(
        fs::read_dir(&m.mnt).unwrap().count(),
        0,
        "files left in the mount dir"
    );

    m.spawn().unwrap_or_else(|e| panic!("remount: {e}"));
    for (name, h) in &want {
        assert_eq!(
            &md5_file_hex(&m.path(name)),
            h,
            "{name} on the remounted fs"
        );
        assert_eq!(
            &md5_hex(&c.download_bytes(name).unwrap()),
            h,
            "{name} via the CLI"
        );
    }
    let out = ok(&m, "ls", &[&m.p("")]);
    assert_eq!(out.stdout_str(), "alice\nbob\n");

    m.unmount();
}

/// SIGTERM while a file is open for writing: ossfs uploads it first, detaches the busy
/// mount lazily, and exits 0 once the file is closed.
#[test]
fn fuse_sigterm_with_an_open_file_uploads_it_and_exits_cleanly() {
    let Some((c, mut m)) = setup("fuse_sigterm_open", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    // Some ordinary traffic first (inodes the kernel knows, files read back).
    for i in 0..4u64 {
        let d = pseudo_random(65 + i, 100_000);
        fs::write(m.path(&format!("alice/f{i}")), &d).unwrap();
        assert_eq!(fs::read(m.path(&format!("alice/f{i}"))).unwrap(), d);
    }
    ok(&m, "ls", &["-l", &m.p("alice")]);
    let dirty = pseudo_random(64, 200_000);
    let mut f = fs::File::create(m.path("alice/open-at-exit")).unwrap();
    f.write_all(&dirty).unwrap();
    m.signal(libc::SIGTERM);
    let t = Instant::now();
    loop {
        if c.download_bytes("alice/open-at-exit").ok().as_deref() == Some(&dirty[..]) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "a file open for writing at SIGTERM was not uploaded within 15 s; ossfs:\n{}",
            m.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("uploaded {:?} after SIGTERM", t.elapsed());
    drop(f);
    let st = m.wait_exit(Duration::from_secs(30));
    assert!(!is_mounted(&m.mnt), "still mounted after ossfs exited");
    let log = m.log_text();
    m.spawn().unwrap_or_else(|e| panic!("remount: {e}"));
    assert_eq!(fs::read(m.path("alice/open-at-exit")).unwrap(), dirty);
    m.unmount();
    assert!(
        st.success(),
        "ossfs exited with {st} after SIGTERM with a file open (the data was uploaded); \
         ossfs stderr:\n{log}"
    );
}

/// A crashed ossfs (SIGKILL) leaves a stale mount (ENOTCONN); the next ossfs on the same
/// directory replaces it, says so, and serves the files.
#[test]
fn fuse_stale_mount_is_replaced() {
    let Some((c, mut m)) = setup("fuse_stale", 2) else {
        return;
    };
    fs::create_dir(m.path("alice")).unwrap();
    let d = pseudo_random(70, 50_000);
    fs::write(m.path("alice/f"), &d).unwrap();

    m.kill();
    assert!(
        is_mounted(&m.mnt),
        "the mount vanished with the killed ossfs"
    );
    let e = fs::metadata(&m.mnt).expect_err("stat of a stale mount");
    assert_eq!(errno_of(&e), libc::ENOTCONN, "stat of a stale mount: {e}");
    let out = tool("stat", &[path_str(&m.mnt)]);
    assert!(!out.status.success());
    assert!(
        out.stderr_str().contains("not connected"),
        "stat(1) on a stale mount: {}",
        out.stderr_str()
    );

    let from = m.log_len();
    m.spawn()
        .unwrap_or_else(|e| panic!("ossfs on a stale mount: {e}"));
    assert!(
        m.log_since(from).contains("stale mount"),
        "no clear message about the stale mount; ossfs logged:\n{}",
        m.log_since(from)
    );
    assert_eq!(
        fs::read(m.path("alice/f")).unwrap(),
        d,
        "file after replacing the mount"
    );
    fs::write(m.path("alice/g"), b"after").unwrap();
    assert_cli_content(&c, "alice/g", b"after", "write after replacing the mount");
    // Exactly one mount on the directory now.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let n = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(path_str(&m.mnt)))
        .count();
    assert_eq!(n, 1, "mounts on {}: {n}", m.mnt.display());
    m.unmount();
}

/// A big `cp` into the mount does not stall other operations: `ls -l` of another user and
/// reading one of their files stay quick (< 2 s each) while it runs. The cp reads a FIFO
/// fed at a bounded pace, so it is still running (writing, then uploading 64 MiB at close)
/// whatever the machine's speed.
#[test]
fn fuse_slow_copy_does_not_stall_the_mount() {
    let Some((c, m)) = setup("fuse_nostall", 2) else {
        return;
    };
    const CHUNK: usize = 4 << 20;
    const CHUNKS: u64 = 16; // 64 MiB
    c.upload_bytes("bob/small", b"bob's file");
    fs::create_dir(m.path("alice")).unwrap();
    wait_visible(&m.path("bob/small"), 10);
    let want = {
        use md5::{Digest, Md5};
        let mut h = Md5::new();
        for i in 0..CHUNKS {
            h.update(pseudo_random(80 + i, CHUNK));
        }
        hex(&h.finalize())
    };

    let started = Instant::now();
    let mut cp = FifoCp::start(&c.work(), "big", &m.path("alice/big"));
    let mut w = cp.writer.take().unwrap();
    let feeder = thread::spawn(move || {
        for i in 0..CHUNKS {
            w.write_all(&pseudo_random(80 + i, CHUNK)).expect("feed cp");
            thread::sleep(Duration::from_millis(150));
        }
        // Dropping `w` is EOF: cp closes the destination, which uploads it.
    });

    let mut probes = 0;
    let mut proxy_probes = 0;
    let mut worst = Duration::ZERO;
    let mut last_proxy = Instant::now();
    while cp.running() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "cp of 64 MiB into the mount still running after 120 s"
        );
        // Every ~1.1 s the listing cache (TTL 1 s) has expired, so `ls -l` asks the proxy.
        let fresh = last_proxy.elapsed() > Duration::from_millis(1100);
        let t = Instant::now();
        let out = ok(&m, "ls", &["-l", &m.p("bob")]);
        let cat = ok(&m, "cat", &[&m.p("bob/small")]);
        let took = t.elapsed();
        if !cp.running() {
            break;
        }
        if fresh {
            last_proxy = Instant::now();
            proxy_probes += 1;
        }
        assert!(
            out.stdout_str().contains("small"),
            "ls -l bob: {}",
            out.stdout_str()
        );
        assert_eq!(cat.stdout, b"bob's file");
        assert!(
            took < Duration::from_secs(2),
            "ls -l + cat of another user took {took:?} while a 64 MiB cp was running \
             (probe {probes}, {:?} into the cp)",
            started.elapsed()
        );
        worst = worst.max(took);
        probes += 1;
        thread::sleep(Duration::from_millis(100));
    }
    feeder.join().expect("feeder");
    let (st, err) = cp.finish(Duration::from_secs(60));
    assert!(st.success(), "cp of 64 MiB: {st}: {err}");
    eprintln!(
        "64 MiB cp took {:?}; {probes} probes ({proxy_probes} past the TTL), worst {worst:?}",
        started.elapsed()
    );
    assert!(
        proxy_probes >= 1,
        "no probe past the cache TTL ran while cp was running ({probes} probes in {:?})",
        started.elapsed()
    );
    assert_eq!(cli_md5(&c, "alice/big"), want, "64 MiB after cp");
}

/// A user whose files another client has just uploaded is listed in full at once. Seen once
/// in the benchmark: `ls -l` right after `oss bench --keep --phases upload` of 2,000 files
/// showed 281. The cause: a listing (and the users list) cached while the uploads were
/// still running answered the next `ls` for a whole TTL, and a lookup of a user missing
/// from a fresh users list was "no such directory". `ls`/`ls -l` polled during the upload
/// set up exactly that state before the final checks.
#[test]
fn fuse_ls_right_after_a_cli_bulk_upload_lists_everything() {
    let Some((c, m)) = setup("fuse_ls_bulk", 2) else {
        return;
    };
    const N: usize = 3000;
    let user = "bulkls";
    // A cached users list without `user`, as any earlier `ls` of the mount leaves.
    ok(&m, "ls", &[&m.p("")]);
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (done, dir) = (done.clone(), m.p(user));
        thread::spawn(move || {
            let mut polls = 0;
            while !done.load(Ordering::Acquire) {
                // Fails (no such directory) until the first file is stored; that is fine.
                let _ = tool("ls", &["-l", &dir]);
                polls += 1;
                thread::sleep(Duration::from_millis(50));
            }
            polls
        })
    };
    let n = N.to_string();
    let args = [
        "bench",
        "--objects",
        &n,
        "--size",
        "64",
        "--concurrency",
        "16",
        "--keep",
        "--phases",
        "upload",
        "--user",
        user,
    ];
    let bench = c.oss_timeout(&args, Duration::from_secs(300));
    done.store(true, Ordering::Release);
    let polls = poller.join().expect("poller");
    bench.assert_ok("oss bench --keep --phases upload");
    eprintln!("{polls} listings of {user} ran during the upload");

    // At once: every file, each with its size.
    let from = m.log_len();
    let out = tool("ls", &["-l", &m.p(user)]);
    let stdout = out.stdout_str();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("total")).collect();
    assert!(
        out.status.success() && lines.len() == N,
        "ls -l {user} right after uploading {N} files: {} ({}) lines; stderr: {}\n\
         ossfs stderr meanwhile:\n{}",
        lines.len(),
        out.status,
        out.stderr_str().trim_end(),
        m.log_since(from)
    );
    for line in &lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(
            cols.len() >= 9 && cols[0].starts_with('-') && cols[4] == "64",
            "ls -l line with the wrong size or kind: {line:?}"
        );
    }
    let cli = c.list_long(user);
    assert_eq!(cli.len(), N, "oss list -l {user}");
    let names: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let want: std::collections::BTreeSet<&str> = cli.keys().map(String::as_str).collect();
    assert_eq!(names, want, "ls -l names vs oss list -l");

    // And again once the TTL has passed.
    thread::sleep(Duration::from_millis(1500));
    let out = sh_ok(&m, &format!("ls {} | wc -l", m.p(user)));
    assert_eq!(
        out.stdout_str().trim(),
        n,
        "ls | wc -l of {user} 1.5 s later"
    );
}

/// Write-only handles (which the kernel hands over without its page cache) written in order
/// with odd sizes, past the in-memory hand-off to the live upload; then one written in whole
/// MiB that seeks back and patches earlier bytes (the live upload is dropped and the spool, partly written with
/// O_DIRECT, is uploaded). The CLI must see exactly the bytes written.
#[test]
fn fuse_write_only_sequential_and_patched_files_upload_exactly() {
    let Some((c, m)) = setup("fuse_wronly", 2) else {
        return;
    };
    fs::create_dir(m.path("wo")).expect("mkdir wo on the mount");
    let data = pseudo_random(7, (40 << 20) + 12_345);
    // Aligned 1 MiB writes, then odd ones, then aligned-size ones at odd offsets.
    let sizes = [1 << 20; 24]
        .into_iter()
        .chain([3000, 4096, 1, 65_536, 777])
        .chain(std::iter::repeat(1 << 20));
    // Written from a page-aligned buffer, as `cp` does: a 1 MiB write then reaches ossfs as
    // one request (from an unaligned one the kernel splits it in two).
    let mut buf = vec![0u8; (1 << 20) + 4096];
    let start = buf.as_ptr().align_offset(4096);
    let mut write_all = |f: &mut fs::File| {
        let mut pos = 0;
        for n in sizes.clone() {
            let end = (pos + n).min(data.len());
            let b = &mut buf[start..start + end - pos];
            b.copy_from_slice(&data[pos..end]);
            f.write_all(b).expect("write");
            pos = end;
            if pos == data.len() {
                break;
            }
        }
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("wo/seq.bin"))
        .expect("open wo/seq.bin write-only");
    write_all(&mut f);
    drop(f);
    assert_eq!(
        cli_md5(&c, "wo/seq.bin"),
        md5_hex(&data),
        "sequential write-only file"
    );

    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("wo/patched.bin"))
        .expect("open wo/patched.bin write-only");
    // Only whole MiB this time (all of it goes to the spool with O_DIRECT), then the patch.
    let mut want = data[..32 << 20].to_vec();
    let mut buf = vec![0u8; (1 << 20) + 4096];
    let start = buf.as_ptr().align_offset(4096);
    for chunk in want.chunks(1 << 20) {
        buf[start..start + chunk.len()].copy_from_slice(chunk);
        f.write_all(&buf[start..start + chunk.len()])
            .expect("write");
    }
    let patch = pseudo_random(8, 10_000);
    f.seek(SeekFrom::Start(5 << 20)).expect("seek back");
    f.write_all(&patch).expect("patch");
    drop(f);
    want[5 << 20..(5 << 20) + patch.len()].copy_from_slice(&patch);
    assert_eq!(
        cli_md5(&c, "wo/patched.bin"),
        md5_hex(&want),
        "patched write-only file"
    );
    let mut back = Vec::new();
    fs::File::open(m.path("wo/patched.bin"))
        .and_then(|mut f| f.read_to_end(&mut back))
        .expect("read back through the mount");
    assert!(back == want, "read back through the mount after the patch");
}

#[test]
fn fuse_reads_on_after_the_proxy_closed_its_idle_connections() {
    // The proxy drops connections idle past --idle-timeout; the mount's pooled ones with
    // them. The next operation must not fail for it.
    if !fuse_available("fuse_idle") {
        return;
    }
    let c = Cluster::start_with(ClusterConfig {
        proxy_args: vec!["--idle-timeout".into(), "1s".into()],
        ..ClusterConfig::new(2, 16)
    });
    let m = Mount::start(&c, "fuse_idle");
    c.upload_bytes("idle/a", b"first");
    c.upload_bytes("idle/b", b"second");
    assert_eq!(fs::read(m.path("idle/a")).expect("read idle/a"), b"first");
    // Past the deadline: every connection the mount holds was closed by the proxy.
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(fs::read(m.path("idle/b")).expect("read idle/b"), b"second");
    fs::write(m.path("idle/c"), b"third").expect("write idle/c");
    assert_cli_content(&c, "idle/c", b"third", "after the idle close");
}
