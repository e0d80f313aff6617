//! oss-cli: the `oss` command line.
//!
//! - [`args`]: the clap definitions, proxy address resolution, size and address parsing.
//! - [`cmd`]: the commands (transfers, objects, administration, bench).
//! - [`error`]: every failure turned into one `oss: ...` line and an exit status.
//! - [`fmt`]: pure formatting of sizes, rates, times and tables.
//! - [`io`]: local I/O helpers (error-remembering wrappers, stdout without panics).
//! - [`progress`]: the progress line drawn on a terminal.

pub mod args;
pub mod cmd;
pub mod error;
#[cfg(test)]
mod fake;
pub mod fmt;
pub mod io;
pub mod progress;

use std::sync::Arc;

use oss_proto::client::Client;

use args::{Cli, Command};
use error::CliError;

/// What every command gets: the shared client and the proxy's address for messages.
pub struct Ctx {
    pub client: Arc<Client>,
    pub proxy: String,
}

impl Ctx {
    pub fn new(proxy: String) -> Self {
        Ctx {
            client: Arc::new(Client::new(proxy.clone())),
            proxy,
        }
    }

    /// A client-library failure about `subject`, worded for the user.
    pub fn fail(&self, e: &oss_proto::Error, subject: &str) -> CliError {
        error::describe(e, subject, &self.proxy)
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = std::env::var("OSS_PROXY").ok();
    let ctx = Ctx::new(args::proxy_addr(cli.proxy.as_deref(), env.as_deref()));
    match &cli.cmd {
        Command::Upload { name, local } => {
            cmd::transfer::upload(&ctx, name, local.as_deref()).await
        }
        Command::Download { name, local } => {
            cmd::transfer::download(&ctx, name, local.as_deref()).await
        }
        Command::Delete { name } => cmd::objects::delete(&ctx, name).await,
        Command::List { user, long } => cmd::objects::list(&ctx, user, *long).await,
        Command::Check { name } => cmd::objects::check(&ctx, name).await,
        Command::AddDisk { addr, wait } => {
            cmd::admin::change_disk(&ctx, cmd::admin::DiskChange::Add, addr, *wait).await
        }
        Command::RemoveDisk { addr, wait } => {
            cmd::admin::change_disk(&ctx, cmd::admin::DiskChange::Remove, addr, *wait).await
        }
        Command::Status { json } => cmd::admin::status(&ctx, *json).await,
        Command::Repair { wait } => cmd::admin::repair(&ctx, *wait).await,
        Command::Audit => cmd::admin::audit(&ctx).await,
        Command::Bench(b) => cmd::bench::bench(&ctx, b).await,
    }
}

#[cfg(test)]
mod tests {
    //! The commands against the in-memory fake proxy in [`crate::fake`].

    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::args::{BenchArgs, Phase};

    fn msg(e: anyhow::Error) -> String {
        e.downcast::<CliError>().expect("a CliError").msg
    }

    fn leftovers(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("oss-tmp"))
            .collect()
    }

    #[tokio::test]
    async fn upload_download_delete_round_trip() {
        let (addr, st) = fake::start().await;
        let ctx = Ctx::new(addr);
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();

        cmd::transfer::upload(&ctx, "alice/f.bin", Some(&src))
            .await
            .unwrap();
        let dst = dir.path().join("out.bin");
        cmd::transfer::download(&ctx, "alice/f.bin", Some(&dst))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        // A directory as destination gets FILENAME inside it.
        cmd::transfer::download(&ctx, "alice/f.bin", Some(dir.path()))
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), data);
        assert!(leftovers(dir.path()).is_empty());

        cmd::objects::delete(&ctx, "alice/f.bin").await.unwrap();
        assert_eq!(
            msg(cmd::objects::delete(&ctx, "alice/f.bin").await.unwrap_err()),
            "not found: alice/f.bin"
        );
        // A failed download leaves the existing destination alone and no temp file.
        let e = cmd::transfer::download(&ctx, "alice/f.bin", Some(&dst))
            .await
            .unwrap_err();
        assert_eq!(msg(e), "not found: alice/f.bin");
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert!(leftovers(dir.path()).is_empty());
        assert!(st.objects.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn corrupt_download_keeps_the_old_file() {
        let (addr, st) = fake::start().await;
        let ctx = Ctx::new(addr);
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, b"fresh bytes").unwrap();
        cmd::transfer::upload(&ctx, "alice/a", Some(&src))
            .await
            .unwrap();
        let dst = dir.path().join("dst");
        std::fs::write(&dst, b"old").unwrap();
        st.corrupt.store(true, Ordering::SeqCst);
        let e = msg(cmd::transfer::download(&ctx, "alice/a", Some(&dst))
            .await
            .unwrap_err());
        assert!(e.starts_with("alice/a: corrupted:"), "{e}");
        assert_eq!(std::fs::read(&dst).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn bad_input_never_reaches_the_proxy() {
        let (addr, st) = fake::start().await;
        let ctx = Ctx::new(addr);
        let dir = tempfile::tempdir().unwrap();
        let nope = dir.path().join("nope");
        let e = msg(cmd::transfer::upload(&ctx, "alice/x", Some(&nope))
            .await
            .unwrap_err());
        assert_eq!(
            e,
            format!("cannot read {}: No such file or directory", nope.display())
        );
        let e = msg(cmd::transfer::upload(&ctx, "alice/x", Some(dir.path()))
            .await
            .unwrap_err());
        assert!(e.ends_with(": Is a directory"), "{e}");
        for bad in ["alice", "alice/a/b", "../x", "alice/"] {
            let e = msg(cmd::transfer::upload(&ctx, bad, Some(dir.path()))
                .await
                .unwrap_err());
            assert!(e.starts_with("invalid name: "), "{e}");
            let e = msg(cmd::transfer::download(&ctx, bad, Some(&nope))
                .await
                .unwrap_err());
            assert!(e.starts_with("invalid name: "), "{e}");
        }
        assert_eq!(
            msg(cmd::objects::list(&ctx, "a/b", false).await.unwrap_err()),
            "invalid name: user name may not contain '/'"
        );
        assert_eq!(st.connections.load(Ordering::SeqCst), 0);
        assert!(!nope.exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn unreachable_proxy_is_one_clear_line() {
        // Bind then drop: nothing listens on this port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ctx = Ctx::new(format!("127.0.0.1:{port}"));
        let e = msg(cmd::objects::delete(&ctx, "alice/x").await.unwrap_err());
        assert_eq!(
            e,
            format!("cannot reach the proxy at 127.0.0.1:{port}: Connection refused")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_tasks_each_get_their_own_connection() {
        let (addr, st) = fake::start().await;
        *st.delete_delay.lock().unwrap() = Duration::from_millis(5);
        let ctx = Ctx::new(addr);
        let a = BenchArgs {
            objects: 24,
            size: 10_000,
            concurrency: 4,
            user: "bench".into(),
            json: true,
            keep: false,
            phases: vec![],
        };
        for p in [Phase::Upload, Phase::Download, Phase::Delete] {
            let r = cmd::bench::run_phase(&ctx, p, &a).await.unwrap();
            assert_eq!(r.ops, 24, "{p:?}");
            assert_eq!(r.latencies.len(), 24);
        }
        // Four tasks, four connections, reused by every phase through the pool.
        assert_eq!(st.connections.load(Ordering::SeqCst), 4);
        assert!(st.objects.lock().unwrap().is_empty());
        // Downloading what is gone names the object.
        let e = msg(cmd::bench::run_phase(&ctx, Phase::Download, &a)
            .await
            .unwrap_err());
        assert!(
            e.starts_with("bench download: not found: bench/bench-0000"),
            "{e}"
        );
    }
}
