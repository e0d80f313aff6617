//! Starting and stopping a mount: checks before mounting, the session, signals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oss_proto::client::Client;
use tracing::{info, warn};

use crate::fs::{OssFs, Shared};
use crate::handle::Ctx;

/// How long a proxy may take to answer the start-up check.
const PROXY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct MountOptions {
    pub proxy: String,
    /// Who the mount speaks for: a user's key shows only that user's directory.
    pub creds: oss_proto::wire::Credentials,
    pub mountpoint: PathBuf,
    /// Where spool files go (unnamed temp files, gone when closed).
    pub cache_dir: PathBuf,
    /// Attribute, entry and listing TTL.
    pub ttl: Duration,
    /// FUSE worker threads: one slow proxy call must not stall the mount.
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("mountpoint {0}: {1}")]
    Mountpoint(String, String),
    #[error("cache directory {0}: {1}")]
    CacheDir(String, String),
    /// The proxy did not answer; the message names its address.
    #[error("{0}")]
    Proxy(String),
    #[error("cannot mount on {0}: {1}")]
    Mount(String, std::io::Error),
    #[error("{0}")]
    Other(String),
}

fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// Checks the mountpoint and replaces a stale mount (a crashed ossfs leaves one behind:
/// every access fails with ENOTCONN until it is unmounted).
pub fn check_mountpoint(mnt: &Path) -> Result<(), StartError> {
    let shown = mnt.display().to_string();
    match std::fs::metadata(mnt) {
        Err(e) if errno_of(&e) == Some(libc::ENOTCONN) => {
            eprintln!(
                "ossfs: {shown} is a stale mount (transport endpoint is not connected); \
                 unmounting it lazily and mounting again"
            );
            lazy_unmount(mnt)
                .map_err(|e| StartError::Mountpoint(shown.clone(), format!("stale mount: {e}")))?;
        }
        _ => {}
    }
    match std::fs::metadata(mnt) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StartError::Mountpoint(shown, "not a directory".into())),
        Err(e) => Err(StartError::Mountpoint(shown, e.to_string())),
    }
}

/// `umount -l`: detaches the mount now; the kernel finishes it when nothing uses it.
pub fn lazy_unmount(mnt: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes())?;
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn check_cache_dir(dir: &Path) -> Result<(), StartError> {
    let shown = dir.display().to_string();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StartError::CacheDir(shown, "not a directory".into())),
        Err(e) => Err(StartError::CacheDir(shown, e.to_string())),
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread started after it, so that
/// only the thread that waits for them with `sigwait` sees them. Call before any thread.
pub fn block_signals() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Mounts and serves until unmounted (by a signal or `umount`). `on_mounted` runs once
/// the kernel has answered INIT, i.e. when the mount is usable. Call [`block_signals`]
/// first, before any thread exists.
pub fn run(
    opts: &MountOptions,
    signals: libc::sigset_t,
    on_mounted: impl FnOnce(),
) -> Result<(), StartError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ossfs-io")
        .enable_all()
        .build()
        .map_err(|e| StartError::Other(format!("cannot start the runtime: {e}")))?;
    // Operations wait out a proxy restart (the client's retry budget, as for `oss`).
    let client = Arc::new(Client::new(opts.proxy.clone(), opts.creds.clone()));
    // Refuse to start against a proxy that does not answer (at once, not after the retry
    // budget): a mount whose every operation fails with EIO helps nobody.
    let probe = Client::new(opts.proxy.clone(), opts.creds.clone())
        .with_retry_for(std::time::Duration::ZERO);
    let check =
        rt.block_on(async { tokio::time::timeout(PROXY_CHECK_TIMEOUT, probe.usage()).await });
    match check {
        Ok(Ok(_)) => {}
        // The client's message already reads "cannot reach the proxy at ADDR: why".
        Ok(Err(oss_proto::Error::Remote(oss_proto::WireError::Unavailable(msg)))) => {
            return Err(StartError::Proxy(msg))
        }
        Ok(Err(e)) => {
            return Err(StartError::Proxy(format!(
                "the proxy at {} does not answer properly: {e}",
                opts.proxy
            )))
        }
        Err(_) => {
            return Err(StartError::Proxy(format!(
                "cannot reach the proxy at {}: timed out",
                opts.proxy
            )))
        }
    }
    let shared = Arc::new(Shared::new(
        Ctx {
            client,
            rt: rt.handle().clone(),
            cache_dir: opts.cache_dir.clone(),
            only_user: (opts.creds.user != oss_proto::wire::ADMIN_USER)
                .then(|| opts.creds.user.clone()),
        },
        opts.ttl,
    ));
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("ossfs".into()),
        fuser::MountOption::Subtype("oss".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    cfg.n_threads = Some(opts.threads.max(1));
    let shown = opts.mountpoint.display().to_string();
    let mut session = fuser::Session::new(OssFs(shared.clone()), &opts.mountpoint, &cfg)
        .map_err(|e| StartError::Mount(shown.clone(), e))?;
    info!(mountpoint = %shown, proxy = %opts.proxy, "mounted");
    on_mounted();

    let mut unmounter = session.unmount_callable();
    let mnt = std::fs::canonicalize(&opts.mountpoint).unwrap_or(opts.mountpoint.clone());
    // Set once a signal asked us to unmount: the session may then end with an error
    // (ECONNABORTED after a lazy detach) that is the expected way out, not a failure.
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping_sig = stopping.clone();
    std::thread::Builder::new()
        .name("ossfs-signals".into())
        .spawn(move || {
            let mut sig = 0;
            unsafe { libc::sigwait(&signals, &mut sig) };
            info!(signal = sig, "unmounting");
            stopping_sig.store(true, std::sync::atomic::Ordering::SeqCst);
            // Dirty files first: once unmounted, nobody could close them any more.
            let failed = shared.flush_all();
            if failed > 0 {
                warn!(failed, "some open files could not be uploaded");
            }
            if let Err(e) = unmounter.unmount() {
                // EBUSY: something still has a file open inside. Detach it; the session
                // ends when the last user lets go.
                warn!(error = %e, "unmount failed; detaching lazily");
                if let Err(e) = lazy_unmount(&mnt) {
                    warn!(error = %e, "lazy unmount failed");
                }
            }
        })
        .map_err(|e| StartError::Other(format!("cannot start the signal thread: {e}")))?;
    match session.run() {
        Ok(()) => {}
        Err(e) if stopping.load(std::sync::atomic::Ordering::SeqCst) => {
            info!(error = %e, "session ended after unmount");
        }
        Err(e) => {
            return Err(StartError::Other(format!(
                "session ended with an error: {e}"
            )))
        }
    }
    // Uploads still in flight on the runtime are finished by now (every callback returned).
    drop(rt);
    Ok(())
}
