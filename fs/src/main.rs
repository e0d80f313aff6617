//! `ossfs [--proxy ADDR] MOUNTPOINT`: mounts the object store.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use oss_fs::mount::{self, MountOptions, StartError};
use oss_proto::client::DEFAULT_PROXY;

#[derive(Parser)]
#[command(
    name = "ossfs",
    about = "Mount the oss object store: MOUNTPOINT/USER/FILENAME",
    after_help = "Files written on the mount reach the proxy when close() or fsync() returns. \
                  Changes made by other clients show within the cache TTL (--ttl-ms, 1 s)."
)]
struct Args {
    /// Proxy address (host:port).
    #[arg(long, env = "OSS_PROXY", default_value = DEFAULT_PROXY)]
    proxy: String,
    /// File holding the key (`NAME:KEY`) [default: $OSS_KEY_FILE, then
    /// $XDG_CONFIG_HOME/oss/key or ~/.config/oss/key]. A user's key shows only that user's
    /// directory; the admin key shows everyone's.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Directory for spool files of files being written (default: $TMPDIR or /tmp).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Detach from the terminal once mounted.
    #[arg(long)]
    daemon: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// How long attributes, names and listings are cached, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    ttl_ms: u64,
    mountpoint: PathBuf,
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("ossfs: {e}");
    std::process::exit(1);
}

fn main() {
    // Buffers of 128 KiB and more (FUSE writes, read-ahead, upload pieces) are mapped and
    // returned to the system when freed. Without a fixed threshold glibc raises it after the
    // first free, and every thread's arena keeps megabytes of freed buffers.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) };
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,oss_fs=info".into()),
        )
        .init();
    let cache_dir = args.cache_dir.clone().unwrap_or_else(std::env::temp_dir);
    if let Err(e) =
        mount::check_mountpoint(&args.mountpoint).and_then(|()| mount::check_cache_dir(&cache_dir))
    {
        fail(e);
    }
    let creds =
        oss_proto::client::load_credentials(args.key_file.as_deref()).unwrap_or_else(|e| fail(e));
    let opts = MountOptions {
        proxy: args.proxy.clone(),
        creds,
        // Absolute, so the daemon can leave the working directory it was started in.
        mountpoint: std::fs::canonicalize(&args.mountpoint).unwrap_or_else(|e| fail(e)),
        cache_dir,
        ttl: Duration::from_millis(args.ttl_ms),
        threads: args.threads,
    };
    let shown = args.mountpoint.display().to_string();
    if args.daemon {
        daemonize(&opts, &shown);
    }
    let signals = mount::block_signals();
    let r = mount::run(&opts, signals, || {
        eprintln!("ossfs: mounted on {shown}");
    });
    match r {
        Ok(()) => eprintln!("ossfs: unmounted {shown}"),
        Err(e) => fail(e),
    }
}

/// Forks before any thread exists. The parent waits on a pipe and exits 0 only once the
/// child has mounted (printing the readiness line), or 1 with the child's error.
fn daemonize(opts: &MountOptions, shown: &str) -> ! {
    let mut fds = [0; 2];
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        fail(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    match unsafe { libc::fork() } {
        -1 => fail(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            unsafe {
                libc::close(fds[0]);
                libc::setsid();
                // Don't keep the caller's directory busy (it could not be unmounted).
                libc::chdir(c"/".as_ptr());
            }
            // Closed as soon as the mount is ready, so the parent's read ends.
            let mut tx = Some(unsafe { std::fs::File::from_raw_fd(fds[1]) });
            let signals = mount::block_signals();
            let r = mount::run(opts, signals, || {
                if let Some(mut t) = tx.take() {
                    let _ = t.write_all(b"ok\n");
                }
                detach_stdio();
            });
            match r {
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    if let Some(mut t) = tx.take() {
                        let _ = writeln!(t, "{e}");
                    }
                    std::process::exit(1);
                }
            }
        }
        _child => {
            unsafe { libc::close(fds[1]) };
            let mut rx = unsafe { std::fs::File::from_raw_fd(fds[0]) };
            let mut msg = String::new();
            let _ = rx.read_to_string(&mut msg);
            if msg.starts_with("ok\n") {
                eprintln!("ossfs: mounted on {shown}");
                std::process::exit(0);
            }
            let msg = msg.trim();
            if msg.is_empty() {
                fail(StartError::Other(
                    "the daemon exited before mounting".into(),
                ));
            }
            fail(msg);
        }
    }
}

/// A daemon keeps no terminal: its output goes to /dev/null from here on.
fn detach_stdio() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
