//! oss-tests: a harness that runs the real `oss-storaged`, `oss-proxy` and `oss` binaries on
//! loopback, in the manner of Swift's probe tests: real processes, each test with its own
//! temporary directories and port-0 listeners, so tests run in parallel.
//!
//! - [`bin`]: where the binaries are (next to the test executable, or `$OSS_BIN_DIR`).
//! - [`Storaged`], [`Proxy`]: one daemon each; the bound address is read back from the
//!   `... listening on ADDR` line on stdout; logs are forwarded to the test's stderr with a
//!   prefix; `kill`/`stop`/`cont`/`restart`; killed (SIGKILL) and reaped on drop.
//! - [`Cluster`]: N storage servers and a proxy in one temporary directory, and `oss` runs
//!   against it.
//! - [`run`]: runs any command with a deadline, so a hung client fails the test instead of
//!   hanging the suite.
//! - Data helpers: [`pseudo_random`] (xorshift, deterministic), [`md5_hex`], and the on-disk
//!   layout of storage servers (`DATA/objects/<5-digit partition>/<md5 of name>.obj`).
//!
//! - Keys: every daemon gets `--secret-file` ([`test_secret_file`], one per test process,
//!   mode 0600); every `oss` run against a proxy gets `OSS_KEY_FILE` = that proxy's
//!   `STATE/admin.key` ([`admin_key_file`]), so tests act as the admin unless they pass
//!   `--key-file` (which wins).
//!
//! Processes are started with `PR_SET_PDEATHSIG = SIGKILL`, so a test process that is
//! killed (a nextest timeout) takes its daemons with it. That signal is tied to the *thread*
//! that spawned the child: start and restart daemons from the test's own thread.

pub mod swift;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// How long a daemon may take to print its `listening on` line. Generous: debug builds on a
/// shared 2-core machine.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline of one `oss` command. Large transfers pass their own.
pub const OSS_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of a daemon's stderr kept to explain a failed start.
const LOG_TAIL: usize = 60;

// ---------------------------------------------------------------------------------------
// Binaries

/// The directory holding the binaries: `$OSS_BIN_DIR`, else the target directory of the
/// running test (`target/<profile>/deps/e2e-xxx` → `target/<profile>/`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OSS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one binary; panics with what to do if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    if !p.is_file() {
        panic!(
            "binary `{name}` not found at {}: run `cargo build --bins` first \
             (or point OSS_BIN_DIR at the directory holding it)",
            p.display()
        );
    }
    p
}

/// Makes a child die with the thread that spawned it (see the module doc).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent already gone"));
            }
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------------------
// Running commands with a deadline

/// Runs `cmd` to completion, feeding it `input` on stdin (or /dev/null), and kills it if it
/// outlives `timeout` (then panics: a hung client is a failure, never a hung suite).
pub fn run(mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let pid = child.id() as libc::pid_t;
    let feeder = input.map(|data| {
        let mut w = child.stdin.take().expect("piped stdin");
        // A client that exits early closes the pipe: that is its business, not an error here.
        thread::spawn(move || {
            let _ = w.write_all(&data);
        })
    });
    let out = read_all_on_thread(child.stdout.take().expect("piped stdout"));
    let err = read_all_on_thread(child.stderr.take().expect("piped stderr"));
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(s) => s.expect("wait for child"),
        Err(_) => {
            // The child is not reaped until `wait` returns, so the pid is still ours.
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv();
            let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
            panic!("{shown} did not finish within {timeout:?}; its stderr:\n{stderr}");
        }
    };
    waiter.join().expect("waiter thread");
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn read_all_on_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Convenience accessors and assertions on a finished command.
pub trait OutputExt {
    fn stdout_str(&self) -> String;
    fn stderr_str(&self) -> String;
    fn code(&self) -> Option<i32>;
    /// Panics (showing stderr) unless the command succeeded.
    fn assert_ok(&self, what: &str) -> &Self;
    /// Asserts failure with exactly one non-empty line on stderr; returns that line.
    fn assert_fails_one_line(&self, what: &str) -> String;
}

impl OutputExt for Output {
    fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
    fn assert_ok(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what}: expected success, got {}; stderr: {}",
            self.status,
            self.stderr_str().trim_end()
        );
        self
    }
    fn assert_fails_one_line(&self, what: &str) -> String {
        let err = self.stderr_str();
        assert!(
            !self.status.success(),
            "{what}: expected failure, but it succeeded; stdout: {:?} stderr: {err:?}",
            self.stdout_str()
        );
        assert!(
            self.status.code().is_some(),
            "{what}: died of a signal ({}), not a clean error exit; stderr: {err}",
            self.status
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: expected one line on stderr, got {}: {err:?}",
            lines.len()
        );
        assert!(
            !err.contains("panicked"),
            "{what}: the client panicked: {err}"
        );
        lines[0].to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Daemons

/// Why a daemon did not come up.
#[derive(Debug)]
pub struct StartError {
    /// Exit status if it exited (None: it hung without printing its address).
    pub status: Option<ExitStatus>,
    /// Its stderr (the tail) and any stdout it printed.
    pub output: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "exited with {s}; output:\n{}", self.output),
            None => write!(
                f,
                "printed no `listening on` line within {STARTUP_TIMEOUT:?}; output:\n{}",
                self.output
            ),
        }
    }
}

impl StartError {
    fn addr_in_use(&self) -> bool {
        let o = self.output.to_lowercase();
        o.contains("in use") || o.contains("os error 98") || o.contains("addrinuse")
    }
}

type Tail = Arc<Mutex<VecDeque<String>>>;

fn push_tail(tail: &Tail, line: String) {
    let mut t = tail.lock().unwrap();
    if t.len() == LOG_TAIL {
        t.pop_front();
    }
    t.push_back(line);
}

/// One running daemon process: the parts `Storaged` and `Proxy` share.
struct Daemon {
    label: String,
    program: PathBuf,
    /// Every flag except `--listen`.
    args: Vec<OsString>,
    addr: SocketAddr,
    child: Option<Child>,
    /// The second address a proxy prints: its Swift door (`--http`).
    http: HttpSlot,
    /// Lines it logged (stdout and stderr), over every start.
    lines: Arc<std::sync::atomic::AtomicU64>,
}

type HttpSlot = Arc<Mutex<Option<SocketAddr>>>;
type LineCount = Arc<std::sync::atomic::AtomicU64>;

impl Daemon {
    fn spawn(
        label: &str,
        program: &Path,
        listen: &str,
        args: &[OsString],
        http: &HttpSlot,
        lines: &LineCount,
    ) -> Result<(Child, SocketAddr), StartError> {
        *http.lock().unwrap() = None;
        let mut cmd = Command::new(program);
        cmd.arg("--listen")
            .arg(listen)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("OSS_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let tail: Tail = Arc::default();

        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let stdout = child.stdout.take().expect("piped stdout");
        let (l, t) = (label.to_owned(), tail.clone());
        let slot = http.clone();
        let n = lines.clone();
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("[{l}] {line}");
                if line.contains("swift api listening on ") {
                    *slot.lock().unwrap() = listening_addr(&line);
                } else if let Some(addr) = listening_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                push_tail(&t, line);
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let (l, t) = (label.to_owned(), tail.clone());
        let n = lines.clone();
        let err_thread = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("[{l}] {line}");
                push_tail(&t, line);
            }
        });

        let status = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => return Ok((child, addr)),
            // Stdout closed without the line: the process is exiting on its own.
            Err(mpsc::RecvTimeoutError::Disconnected) => child.wait().ok(),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        };
        // The pipe closes when the child is gone; then the tail is complete.
        let _ = err_thread.join();
        let output = tail.lock().unwrap().iter().cloned().collect::<Vec<_>>();
        Err(StartError {
            status,
            output: output.join("\n"),
        })
    }

    fn start(
        label: String,
        program: PathBuf,
        listen: &str,
        args: Vec<OsString>,
    ) -> Result<Daemon, StartError> {
        let http = HttpSlot::default();
        let lines = LineCount::default();
        let (child, addr) = Daemon::spawn(&label, &program, listen, &args, &http, &lines)?;
        Ok(Daemon {
            label,
            program,
            args,
            addr,
            child: Some(child),
            http,
            lines,
        })
    }

    fn pid(&self) -> libc::pid_t {
        let c = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.label));
        c.id() as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our own, not yet reaped, child.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({sig}) on {}", self.label);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Starts again on the same address with `args`, retrying while the port is still held
    /// (by a connection of the dead process, or briefly by someone else's ephemeral port).
    fn restart_with(&mut self, args: Vec<OsString>) -> Result<(), StartError> {
        self.kill();
        let listen = self.addr.to_string();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match Daemon::spawn(
                &self.label,
                &self.program,
                &listen,
                &args,
                &self.http,
                &self.lines,
            ) {
                Ok((child, addr)) => {
                    assert_eq!(
                        addr, self.addr,
                        "{} restarted on another address",
                        self.label
                    );
                    self.child = Some(child);
                    self.args = args;
                    return Ok(());
                }
                Err(e) if e.addr_in_use() && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `oss-storaged listening on 127.0.0.1:1234` → the address.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The cluster secret every daemon a test starts shares: written once per test process,
/// 64 hex digits, mode 0600 (the daemons refuse anything readable by others).
pub fn test_secret_file() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("oss-e2e-secret-{}", std::process::id()));
        let secret: String = pseudo_random(std::process::id() as u64, 32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write_private(&path, format!("{secret}\n").as_bytes());
        path
    })
    .clone()
}

/// Writes `path` with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    f.write_all(bytes).expect("write");
}

/// Proxy address → its admin key file, for `oss` runs ([`oss_at`]).
fn admin_keys() -> &'static Mutex<std::collections::HashMap<String, PathBuf>> {
    static KEYS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// The admin key of the proxy at `addr` (its `STATE/admin.key`), if a test started it.
pub fn admin_key_file(addr: &str) -> Option<PathBuf> {
    admin_keys().lock().unwrap().get(addr).cloned()
}

/// A running `oss-storaged`.
pub struct Storaged {
    d: Daemon,
    data: PathBuf,
}

impl Storaged {
    /// Starts `oss-storaged --listen 127.0.0.1:0 --data DATA`; panics if it does not come up.
    pub fn start(data: &Path) -> Storaged {
        Storaged::try_start(data).unwrap_or_else(|e| panic!("oss-storaged did not start: {e}"))
    }

    pub fn try_start(data: &Path) -> Result<Storaged, StartError> {
        Storaged::try_start_with_secret(data, &test_secret_file())
    }

    /// [`Storaged::try_start`] with another cluster secret file.
    pub fn try_start_with_secret(data: &Path, secret: &Path) -> Result<Storaged, StartError> {
        let label = format!(
            "storaged {}",
            data.file_name().unwrap_or_default().to_string_lossy()
        );
        let args = vec![
            OsString::from("--data"),
            data.as_os_str().to_owned(),
            OsString::from("--secret-file"),
            secret.as_os_str().to_owned(),
        ];
        let d = Daemon::start(label, bin("oss-storaged"), "127.0.0.1:0", args)?;
        Ok(Storaged {
            d,
            data: data.to_owned(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.d.addr
    }
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    pub fn pid(&self) -> i32 {
        self.d.pid()
    }
    /// Lines it has logged so far (stdout and stderr, every start).
    pub fn log_lines(&self) -> u64 {
        self.d.lines.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.d.kill()
    }
    /// SIGSTOP: the process hangs with its sockets open (a frozen server, not a dead one).
    pub fn stop(&self) {
        self.d.signal(libc::SIGSTOP)
    }
    /// SIGCONT after [`Storaged::stop`].
    pub fn cont(&self) {
        self.d.signal(libc::SIGCONT)
    }
    pub fn is_running(&mut self) -> bool {
        self.d.is_running()
    }
    /// Kills it if running and starts it again on the same address and data directory.
    pub fn restart(&mut self) {
        let args = self.d.args.clone();
        self.d
            .restart_with(args)
            .unwrap_or_else(|e| panic!("{} did not restart: {e}", self.d.label));
    }
}

/// A running `oss-proxy`.
pub struct Proxy {
    d: Daemon,
    state: PathBuf,
}

impl Proxy {
    /// Starts `oss-proxy --listen 127.0.0.1:0 --state STATE ARGS...`; panics on failure.
    pub fn start(state: &Path, args: &[&str]) -> Proxy {
        Proxy::try_start(state, args).unwrap_or_else(|e| panic!("oss-proxy did not start: {e}"))
    }

    pub fn try_start(state: &Path, args: &[&str]) -> Result<Proxy, StartError> {
        let d = Daemon::start(
            "proxy".into(),
            bin("oss-proxy"),
            "127.0.0.1:0",
            Proxy::args(state, args),
        )?;
        let p = Proxy {
            d,
            state: state.to_owned(),
        };
        admin_keys()
            .lock()
            .unwrap()
            .insert(p.addr().to_string(), state.join("admin.key"));
        Ok(p)
    }

    /// `--state STATE --secret-file SECRET ARGS...` (a `--secret-file` in `args` wins).
    fn args(state: &Path, args: &[&str]) -> Vec<OsString> {
        let mut all = vec![OsString::from("--state"), state.as_os_str().to_owned()];
        if !args.contains(&"--secret-file") {
            all.push("--secret-file".into());
            all.push(test_secret_file().into_os_string());
        }
        all.extend(os(args));
        all
    }

    /// The admin key file the proxy wrote at its first start.
    pub fn admin_key(&self) -> PathBuf {
        self.state.join("admin.key")
    }

    pub fn addr(&self) -> SocketAddr {
        self.d.addr
    }
    /// The Swift door's address (the proxy must run with `--http`).
    pub fn http_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(a) = *self.d.http.lock().unwrap() {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy printed no swift api address (started without --http?)"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
    pub fn state_dir(&self) -> &Path {
        &self.state
    }
    pub fn pid(&self) -> i32 {
        self.d.pid()
    }
    /// Lines it has logged so far (stdout and stderr, every start).
    pub fn log_lines(&self) -> u64 {
        self.d.lines.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn kill(&mut self) {
        self.d.kill()
    }
    pub fn stop(&self) {
        self.d.signal(libc::SIGSTOP)
    }
    pub fn cont(&self) {
        self.d.signal(libc::SIGCONT)
    }
    pub fn is_running(&mut self) -> bool {
        self.d.is_running()
    }
    /// Kills it if running and starts it again with the same address, state and flags.
    pub fn restart(&mut self) {
        let args = self.d.args.clone();
        self.d
            .restart_with(args)
            .unwrap_or_else(|e| panic!("proxy did not restart: {e}"));
    }
    /// Kills it if running and starts it again on the same address and state directory with
    /// other flags (`--state` is added). On failure the proxy stays down.
    pub fn try_restart_with(&mut self, args: &[&str]) -> Result<(), StartError> {
        let all = Proxy::args(&self.state, args);
        self.d.restart_with(all)
    }
}

// ---------------------------------------------------------------------------------------
// A cluster

/// What [`Cluster::start_with`] builds.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub storage: usize,
    pub partitions: u32,
    pub replicas: u32,
    /// More proxy flags, e.g. `["--offline-after", "2s"]`.
    pub proxy_args: Vec<String>,
}

impl ClusterConfig {
    pub fn new(storage: usize, partitions: u32) -> Self {
        ClusterConfig {
            storage,
            partitions,
            replicas: 2,
            proxy_args: Vec::new(),
        }
    }
}

/// N storage servers and one proxy, all in one temporary directory:
/// `ROOT/s<i>` (data), `ROOT/proxy` (state), `ROOT/work` (the test's local files).
pub struct Cluster {
    // Field order is drop order: processes die before their directories are removed.
    pub proxy: Proxy,
    pub storage: Vec<Storaged>,
    pub config: ClusterConfig,
    root: tempfile::TempDir,
}

impl Cluster {
    /// `n_storage` storage servers, `partitions` partitions, 2 replicas.
    pub fn start(n_storage: usize, partitions: u32) -> Cluster {
        Cluster::start_with(ClusterConfig::new(n_storage, partitions))
    }

    pub fn start_with(config: ClusterConfig) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("oss-e2e-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(root.path().join("work")).expect("mkdir work");
        let storage: Vec<Storaged> = (0..config.storage)
            .map(|i| {
                let d = root.path().join(format!("s{i}"));
                std::fs::create_dir(&d).expect("mkdir data");
                Storaged::start(&d)
            })
            .collect();
        let args = Cluster::proxy_args(&config, &storage);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let state = root.path().join("proxy");
        std::fs::create_dir(&state).expect("mkdir state");
        let proxy = Proxy::start(&state, &refs);
        Cluster {
            proxy,
            storage,
            config,
            root,
        }
    }

    /// The flags the proxy was first started with (without `--listen`/`--state`).
    pub fn proxy_args(config: &ClusterConfig, storage: &[Storaged]) -> Vec<String> {
        let mut args = vec![
            "--partitions".to_string(),
            config.partitions.to_string(),
            "--replicas".to_string(),
            config.replicas.to_string(),
        ];
        for s in storage {
            args.push("--disk".into());
            args.push(s.addr().to_string());
        }
        args.extend(config.proxy_args.iter().cloned());
        args
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
    /// A directory for the test's local files (uploads' sources, downloads' targets).
    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }
    pub fn proxy_addr(&self) -> String {
        self.proxy.addr().to_string()
    }

    /// Starts one more storage server (not yet in the ring: use `oss add-disk`); its index.
    pub fn start_storage(&mut self) -> usize {
        let i = self.storage.len();
        let d = self.root.path().join(format!("s{i}"));
        std::fs::create_dir(&d).expect("mkdir data");
        self.storage.push(Storaged::start(&d));
        i
    }

    /// `oss --proxy ADDR ARGS...` with stdin from /dev/null.
    pub fn oss(&self, args: &[&str]) -> Output {
        oss_at(&self.proxy_addr(), args, None, OSS_TIMEOUT)
    }
    /// `oss --proxy ADDR ARGS...` with `input` on stdin.
    pub fn oss_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        oss_at(&self.proxy_addr(), args, Some(input.to_vec()), OSS_TIMEOUT)
    }
    pub fn oss_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        oss_at(&self.proxy_addr(), args, None, timeout)
    }

    /// `oss list USER -l` as file name → (size, md5); panics if the command fails. Each
    /// line must hold the name as its last column, the size as the first all-digit column
    /// and the MD5 as a 32-hex column; a name listed twice is a failure.
    pub fn list_long(&self, user: &str) -> std::collections::BTreeMap<String, (u64, String)> {
        let out = self.oss(&["list", user, "-l"]);
        out.assert_ok(&format!("oss list {user} -l"));
        let prefix = format!("{user}/");
        let mut map = std::collections::BTreeMap::new();
        for line in out.stdout_str().lines().filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let md5 = cols
                .iter()
                .find(|c| c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or_else(|| panic!("no md5 column in {line:?}"))
                .to_lowercase();
            let size = cols
                .iter()
                .find(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no size column in {line:?}"));
            let name = cols.last().expect("a non-empty line has a column");
            let name = name.strip_prefix(&prefix).unwrap_or(name).to_string();
            assert!(
                map.insert(name.clone(), (size, md5)).is_none(),
                "{name} listed twice"
            );
        }
        map
    }

    /// Uploads `data` as `name` through a local file; panics on failure.
    pub fn upload_bytes(&self, name: &str, data: &[u8]) {
        if let Err(e) = self.try_upload_bytes(name, data) {
            panic!("upload of {name} ({} bytes) failed: {e}", data.len());
        }
    }

    /// Uploads `data` as `name` through a local file; the error is `oss`'s stderr.
    pub fn try_upload_bytes(&self, name: &str, data: &[u8]) -> Result<(), String> {
        let f = tempfile::NamedTempFile::new_in(self.work()).expect("temp file");
        std::fs::write(f.path(), data).expect("write local file");
        let out = self.oss(&["upload", name, path_str(f.path())]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}: {}", out.status, out.stderr_str().trim_end()))
        }
    }

    /// Downloads `name` to stdout; the error is `oss`'s exit status and stderr.
    pub fn download_bytes(&self, name: &str) -> Result<Vec<u8>, String> {
        let out = self.oss(&["download", name, "-"]);
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!("{}: {}", out.status, out.stderr_str().trim_end()))
        }
    }

    /// Asserts that `name` downloads as exactly `want`.
    pub fn assert_content(&self, name: &str, want: &[u8]) {
        match self.download_bytes(name) {
            Ok(got) => assert!(
                got == want,
                "{name}: downloaded {} bytes (md5 {}), expected {} bytes (md5 {})",
                got.len(),
                md5_hex(&got),
                want.len(),
                md5_hex(want)
            ),
            Err(e) => panic!("{name}: download failed: {e}"),
        }
    }

    /// Asserts that downloading `name` fails with exit 1 and a "not found" line.
    pub fn assert_not_found(&self, name: &str) {
        let out = self.oss(&["download", name, "-"]);
        let line = out.assert_fails_one_line(&format!("download {name}"));
        assert_eq!(out.code(), Some(1), "{name}: not found must exit 1: {line}");
        assert!(
            line.to_lowercase().contains("not found"),
            "{name}: expected a 'not found' error, got {line:?}"
        );
        assert!(
            out.stdout.is_empty(),
            "{name}: not found but bytes on stdout"
        );
    }

    pub fn delete(&self, name: &str) -> Output {
        self.oss(&["delete", name])
    }

    /// `oss status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.oss(&["status", "--json"]);
        out.assert_ok("oss status --json");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "oss status --json printed no JSON ({e}): {}",
                out.stdout_str()
            )
        })
    }

    /// The proxy's view of one storage server (`state` in `oss status --json`, e.g.
    /// "Online"), or None if the ring does not know it.
    pub fn server_state(&self, addr: SocketAddr) -> Option<String> {
        let st = self.status_json();
        st["servers"]
            .as_array()?
            .iter()
            .find(|s| s["addr"].as_str() == Some(addr.to_string().as_str()))
            .and_then(|s| s["state"].as_str().map(str::to_owned))
    }

    /// Waits until the proxy reports every storage server it knows of as online
    /// (readiness after a restart: the proxy notices on its next disk check).
    pub fn wait_all_online(&self, timeout: Duration) {
        let mut last = String::new();
        let ok = (|| {
            let deadline = Instant::now() + timeout;
            loop {
                let st = self.status_json();
                let states: Vec<String> = st["servers"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .map(|s| format!("{}={}", s["addr"], s["state"]))
                            .collect()
                    })
                    .unwrap_or_default();
                last = states.join(" ");
                if states.iter().all(|s| s.ends_with("=\"Online\"")) {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })();
        assert!(ok, "servers not all online after {timeout:?}: {last}");
    }

    /// Every `.obj` file on storage server `server`.
    pub fn object_files(&self, server: usize) -> Vec<PathBuf> {
        object_files(&self.storage[server].data)
    }

    /// Every file under a storage server's `tmp/`.
    pub fn tmp_files(&self, server: usize) -> Vec<PathBuf> {
        let mut v = Vec::new();
        walk(&self.storage[server].data.join("tmp"), &mut v);
        v
    }

    /// The `.obj` files holding `name`, as (storage index, path).
    pub fn find_replicas(&self, name: &str) -> Vec<(usize, PathBuf)> {
        let want = format!("{}.obj", md5_hex(name.as_bytes()));
        let mut found = Vec::new();
        for (i, s) in self.storage.iter().enumerate() {
            for p in object_files(&s.data) {
                if p.file_name().is_some_and(|f| f == want.as_str()) {
                    found.push((i, p));
                }
            }
        }
        found
    }

    /// The partition of `name` in this cluster's ring (a power of two).
    pub fn partition_of(&self, name: &str) -> u32 {
        partition_of(name, self.config.partitions)
    }
}

/// `oss --proxy PROXY ARGS...` against any address.
pub fn oss_at(proxy: &str, args: &[&str], input: Option<Vec<u8>>, timeout: Duration) -> Output {
    let mut cmd = Command::new(bin("oss"));
    cmd.arg("--proxy")
        .arg(proxy)
        .args(args)
        .env_remove("OSS_PROXY")
        .env("RUST_BACKTRACE", "1");
    match admin_key_file(proxy) {
        Some(k) => cmd.env("OSS_KEY_FILE", k),
        None => cmd.env_remove("OSS_KEY_FILE"),
    };
    run(cmd, input, timeout)
}

/// Every `.obj` file under `DATA/objects`.
pub fn object_files(data: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(&data.join("objects"), &mut all);
    all.retain(|p| p.extension().is_some_and(|e| e == "obj"));
    all.sort();
    all
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    walk(dir, &mut v);
    v.sort();
    v
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// An address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local_addr")
}

/// Polls `cond` until it holds; panics after `timeout`. For readiness only: background
/// passes are triggered on demand (`oss repair --wait`), never waited for by time.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------
// Data

pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// MD5 of a file, streamed.
pub fn md5_file_hex(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// Placement as design.md fixes it: the top bits of the first 4 bytes of MD5(name).
pub fn partition_of(name: &str, partitions: u32) -> u32 {
    assert!(partitions.is_power_of_two(), "partitions must be 2^P");
    let d = Md5::digest(name.as_bytes());
    let h = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let p = partitions.trailing_zeros();
    if p == 0 {
        0
    } else {
        h >> (32 - p)
    }
}

/// xorshift64*: deterministic, fast, no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Zero is a fixed point of xorshift; splitmix the seed so nearby seeds diverge.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` deterministic pseudo-random bytes for `seed`.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Writes `len` pseudo-random bytes for `seed` to `path` without holding them all; their MD5.
pub fn write_pseudo_random_file(path: &Path, seed: u64, len: u64) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut rng = XorShift::new(seed);
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_parsed() {
        assert_eq!(
            listening_addr("oss-proxy listening on 127.0.0.1:4242"),
            Some("127.0.0.1:4242".parse().unwrap())
        );
        assert_eq!(listening_addr("starting"), None);
    }

    #[test]
    fn md5_and_partition_match_references() {
        // `printf %s alice/report.pdf | md5sum` = 4fae873e0832859a74bdea9958a02c54
        assert_eq!(
            md5_hex(b"alice/report.pdf"),
            "4fae873e0832859a74bdea9958a02c54"
        );
        assert_eq!(partition_of("alice/report.pdf", 1024), 0x4fae873e >> 22);
        assert_eq!(partition_of("alice/report.pdf", 1), 0);
    }

    #[test]
    fn pseudo_random_is_deterministic_and_seeded() {
        assert_eq!(pseudo_random(7, 1000), pseudo_random(7, 1000));
        assert_ne!(pseudo_random(7, 64), pseudo_random(8, 64));
        assert_eq!(&pseudo_random(7, 1000)[..10], &pseudo_random(7, 10)[..]);
        let v = pseudo_random(1, 1 << 16);
        let zeros = v.iter().filter(|&&b| b == 0).count();
        assert!(zeros < 1000, "not random-looking: {zeros} zero bytes");
    }

    #[test]
    fn run_kills_a_hung_command() {
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            run(cmd, None, Duration::from_millis(200))
        });
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(r.is_err());
        let mut cmd = Command::new("cat");
        cmd.arg("-");
        let out = run(cmd, Some(b"abc".to_vec()), Duration::from_secs(10));
        assert_eq!(out.stdout, b"abc");
    }
}
