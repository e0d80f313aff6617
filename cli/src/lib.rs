//! oss-cli: the `oss` command line.
//!
//! - [`args`]: the clap definitions, proxy address resolution, size and address parsing.
//! - [`cmd`]: the commands (transfers, objects, directories and copies, administration,
//!   bench).
//! - [`error`]: every failure turned into one `oss: ...` line and an exit status.
//! - [`fmt`]: pure formatting of sizes, rates, times and tables.
//! - [`io`]: local I/O helpers (error-remembering wrappers, stdout without panics).
//! - [`progress`]: the progress line drawn on a terminal.
//! - [`swift`]: a small OpenStack Swift HTTP client, for `oss bench --swift`.

pub mod args;
pub mod cmd;
pub mod error;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod fake_swift;
pub mod fmt;
pub mod io;
pub mod progress;
pub mod swift;

use std::sync::Arc;

use oss_proto::client::Client;
use oss_proto::wire::Credentials;

use args::{Cli, Command};
use error::CliError;

/// What every command gets: the shared client and the proxy's address for messages.
pub struct Ctx {
    pub client: Arc<Client>,
    pub proxy: String,
}

impl Ctx {
    pub fn new(proxy: String, creds: Credentials) -> Self {
        Self::with_client(Client::new(proxy, creds))
    }

    pub fn with_client(client: Client) -> Self {
        Ctx {
            proxy: client.addr().to_owned(),
            client: Arc::new(client),
        }
    }

    /// A client-library failure about `subject`, worded for the user.
    pub fn fail(&self, e: &oss_proto::Error, subject: &str) -> CliError {
        error::describe(e, subject, &self.proxy)
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // A Swift bench talks HTTP to a Swift endpoint: no proxy, no oss key.
    if let Command::Bench(b) = &cli.cmd {
        if b.swift.is_some() {
            return cmd::swift_bench::bench(b).await;
        }
    }
    let env = std::env::var("OSS_PROXY").ok();
    let creds = oss_proto::client::load_credentials(cli.key_file.as_deref())
        .map_err(|e| CliError::new(e.to_string()))?;
    let ctx = Ctx::with_client(
        Client::new(
            args::proxy_addr(cli.proxy.as_deref(), env.as_deref()),
            creds,
        )
        .with_retry_for(std::time::Duration::from_secs(cli.retry_for)),
    );
    match &cli.cmd {
        Command::Upload { name, local } => {
            cmd::transfer::upload(&ctx, name, local.as_deref()).await
        }
        Command::Download { name, local } => {
            cmd::transfer::download(&ctx, name, local.as_deref()).await
        }
        Command::Delete { name } => cmd::objects::delete(&ctx, name).await,
        Command::List {
            target,
            long,
            recursive,
        } => cmd::tree::list(&ctx, target, *long, *recursive).await,
        Command::Mkdir { dir } => cmd::tree::mkdir(&ctx, dir).await,
        Command::Copy { src, dst } => cmd::tree::copy(&ctx, src, dst).await,
        Command::Move { src, dst } => cmd::tree::move_file(&ctx, src, dst).await,
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
        Command::User { cmd } => cmd::admin::user(&ctx, cmd).await,
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

    /// A download onto a FIFO (or /dev/null) writes into it; it must not replace the node
    /// with a regular file (as a temp file renamed onto it would).
    #[tokio::test]
    async fn download_onto_a_fifo_writes_into_it() {
        use std::os::unix::fs::FileTypeExt;
        let (addr, _st) = fake::start().await;
        let ctx = Ctx::new(addr, fake::creds());
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"through the pipe").unwrap();
        cmd::transfer::upload(&ctx, "alice/p", Some(&src))
            .await
            .unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let f2 = fifo.clone();
        let reader = std::thread::spawn(move || std::fs::read(f2).unwrap());
        cmd::transfer::download(&ctx, "alice/p", Some(&fifo))
            .await
            .unwrap();
        // Checked before joining: a replaced FIFO would leave the reader blocked forever.
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "the FIFO was replaced: {kind:?}");
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn upload_download_delete_round_trip() {
        let (addr, st) = fake::start().await;
        let ctx = Ctx::new(addr, fake::creds());
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
        let ctx = Ctx::new(addr, fake::creds());
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
        let ctx = Ctx::new(addr, fake::creds());
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
        let long = "x".repeat(256);
        let too_long = format!("alice/{}", ["y"; 513].join("/"));
        for bad in [
            "alice",
            "alice/a//b",
            "alice/a/../b",
            "alice/a/",
            &format!("alice/d/{long}"),
            &too_long,
            "../x",
            "alice/",
        ] {
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
            msg(cmd::tree::list(&ctx, "a/b//", false, false)
                .await
                .unwrap_err()),
            "invalid name: file name may not have an empty segment (a leading, trailing or \
             doubled '/')"
        );
        for (src, dst) in [("alice/a", "alice/b/"), ("alice/./a", "alice/b")] {
            let e = msg(cmd::tree::copy(&ctx, src, dst).await.unwrap_err());
            assert!(e.starts_with("invalid name: "), "{e}");
            let e = msg(cmd::tree::move_file(&ctx, src, dst).await.unwrap_err());
            assert!(e.starts_with("invalid name: "), "{e}");
        }
        let e = msg(cmd::tree::mkdir(&ctx, "alice/a//b").await.unwrap_err());
        assert!(e.starts_with("invalid name: "), "{e}");
        assert_eq!(st.connections.load(Ordering::SeqCst), 0);
        assert!(!nope.exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    /// `oss list` as text, or its error message.
    async fn ls(ctx: &Ctx, target: &str, long: bool, recursive: bool) -> Result<String, String> {
        let mut text = String::new();
        let r = cmd::tree::list_with(ctx, target, long, recursive, &mut |s| {
            text.push_str(s);
            Ok(())
        })
        .await;
        r.map(|()| text).map_err(msg)
    }

    async fn put(ctx: &Ctx, dir: &std::path::Path, name: &str, data: &[u8]) {
        let src = dir.join("put.src");
        std::fs::write(&src, data).unwrap();
        cmd::transfer::upload(ctx, name, Some(&src)).await.unwrap();
    }

    async fn get(ctx: &Ctx, dir: &std::path::Path, name: &str) -> Result<Vec<u8>, String> {
        let dst = dir.join("get.dst");
        let _ = std::fs::remove_file(&dst);
        cmd::transfer::download(ctx, name, Some(&dst))
            .await
            .map_err(msg)?;
        Ok(std::fs::read(&dst).unwrap())
    }

    #[tokio::test]
    async fn nested_names_round_trip_and_list_by_level() {
        let (addr, st) = fake::start().await;
        let ctx = Ctx::new(addr, fake::creds());
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "alice/top.txt",
            "alice/photos/a.jpg",
            "alice/photos/2024/b.jpg",
            "alice/photos/2024/c/d.jpg",
            "alice/photos-old",
            "alice/z/y/x",
            "bob/photos/not-alice",
        ] {
            put(&ctx, dir.path(), name, name.as_bytes()).await;
        }
        assert_eq!(
            get(&ctx, dir.path(), "alice/photos/2024/c/d.jpg").await,
            Ok(b"alice/photos/2024/c/d.jpg".to_vec())
        );
        // A directory as destination gets the last segment inside it.
        cmd::transfer::download(&ctx, "alice/photos/a.jpg", Some(dir.path()))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.jpg")).unwrap(),
            b"alice/photos/a.jpg"
        );

        let l = |t: &'static str| ls(&ctx, t, false, false);
        let want_top = "photos-old\nphotos/\ntop.txt\nz/\n";
        assert_eq!(l("alice").await.as_deref(), Ok(want_top));
        assert_eq!(l("alice/").await.as_deref(), Ok(want_top));
        assert_eq!(l("alice/photos/").await.as_deref(), Ok("2024/\na.jpg\n"));
        assert_eq!(l("alice/photos").await.as_deref(), Ok("2024/\na.jpg\n"));
        assert_eq!(l("alice/photos/2024").await.as_deref(), Ok("b.jpg\nc/\n"));
        assert_eq!(
            ls(&ctx, "alice/photos/", false, true).await.as_deref(),
            Ok("2024/b.jpg\n2024/c/d.jpg\na.jpg\n")
        );
        assert_eq!(
            ls(&ctx, "alice", false, true).await.unwrap(),
            "photos-old\nphotos/2024/b.jpg\nphotos/2024/c/d.jpg\nphotos/a.jpg\ntop.txt\nz/y/x\n"
        );
        // -l: files keep their columns; a directory shows '-' for what it has not.
        let long = ls(&ctx, "alice/photos/", true, false).await.unwrap();
        let lines: Vec<Vec<&str>> = long
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 2, "{long}");
        assert_eq!(lines[0], ["-", "-", "-", "2024/"]);
        assert_eq!(lines[1][0], "18");
        assert_eq!(lines[1][3], "a.jpg");
        assert_eq!(lines[1][1].len(), 32);

        // Missing things: a user without files lists empty, a missing directory is an error.
        assert_eq!(l("carol").await.as_deref(), Ok(""));
        assert_eq!(l("alice/nope/").await, Err("not found: alice/nope/".into()));
        assert_eq!(l("alice/pho").await, Err("not found: alice/pho/".into()));
        assert_eq!(
            l("alice/top.txt").await,
            Err("not a directory: alice/top.txt".into())
        );
        // Nested delete.
        cmd::objects::delete(&ctx, "alice/z/y/x").await.unwrap();
        assert_eq!(l("alice/z").await, Err("not found: alice/z/".into()));
        assert!(!l("alice").await.unwrap().contains("z/"));
        drop(st);
    }

    #[tokio::test]
    async fn listings_page_through_small_pages() {
        let (addr, st) = fake::start().await;
        st.page_limit.store(3, Ordering::SeqCst);
        let ctx = Ctx::new(addr, fake::creds());
        let dir = tempfile::tempdir().unwrap();
        put(&ctx, dir.path(), "u/a-b", b"").await;
        for i in 0..10 {
            put(&ctx, dir.path(), &format!("u/a/{i}"), b"x").await;
        }
        put(&ctx, dir.path(), "u/a0", b"").await;
        put(&ctx, dir.path(), "u/b", b"").await;
        for i in 0..7 {
            cmd::tree::mkdir(&ctx, &format!("u/m/d{i}")).await.unwrap();
            put(&ctx, dir.path(), &format!("u/m/d{i}/f"), b"y").await;
            put(&ctx, dir.path(), &format!("u/m/d{i}-x"), b"y").await;
        }
        // A marker at the top level, and its prefix much later than a page away.
        cmd::tree::mkdir(&ctx, "u/m").await.unwrap();

        st.pages.store(0, Ordering::SeqCst);
        assert_eq!(
            ls(&ctx, "u", false, false).await.unwrap(),
            "a-b\na/\na0\nb\nm/\n"
        );
        // 5 keys (the marker `m` and the prefix `m/` are two) in pages of 3.
        assert_eq!(st.pages.load(Ordering::SeqCst), 2);

        let want: String = (0..7).map(|i| format!("d{i}/\nd{i}-x\n")).collect();
        st.pages.store(0, Ordering::SeqCst);
        assert_eq!(ls(&ctx, "u/m/", false, false).await.unwrap(), want);
        assert!(st.pages.load(Ordering::SeqCst) >= 7);

        let want: String = (0..10).map(|i| format!("a/{i}\n")).collect();
        let all = ls(&ctx, "u", false, true).await.unwrap();
        assert!(
            all.starts_with(&format!("a-b\n{want}a0\nb\nm/\nm/d0/\nm/d0-x\nm/d0/f\n")),
            "{all}"
        );
        assert_eq!(all.lines().count(), 1 + 10 + 2 + 1 + 7 * 3);

        // -l across pages: every line has its four columns.
        let long = ls(&ctx, "u/m", true, false).await.unwrap();
        assert_eq!(long.lines().count(), 14, "{long}");
        for line in long.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 4, "{line:?}");
            if cols[3].ends_with('/') {
                assert_eq!(&cols[..2], ["-", "-"], "{line:?}");
                assert!(cols[2].ends_with('Z'), "a marker has a time: {line:?}");
            } else {
                assert_eq!(cols[0], "1", "{line:?}");
            }
        }
    }

    #[tokio::test]
    async fn mkdir_makes_a_marker_once_and_never_over_a_file() {
        let (addr, st) = fake::start().await;
        let ctx = Ctx::new(addr, fake::creds());
        let dir = tempfile::tempdir().unwrap();
        cmd::tree::mkdir(&ctx, "alice/a/b/c").await.unwrap();
        let marker = |name: &str| {
            let objects = st.objects.lock().unwrap();
            objects
                .get(&oss_proto::ObjectName::parse(name).unwrap())
                .map(|(m, body)| (m.is_dir_marker(), m.size, body.len()))
        };
        assert_eq!(marker("alice/a/b/c"), Some((true, 0, 0)));
        // Like mkdir -p: parents exist implicitly, no markers for them.
        assert_eq!(marker("alice/a/b"), None);
        assert_eq!(ls(&ctx, "alice", false, false).await.as_deref(), Ok("a/\n"));
        assert_eq!(
            ls(&ctx, "alice/a/b/", false, false).await.as_deref(),
            Ok("c/\n")
        );
        // An empty directory lists as nothing, not as an error.
        assert_eq!(
            ls(&ctx, "alice/a/b/c/", false, false).await.as_deref(),
            Ok("")
        );
        let t = st
            .objects
            .lock()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .0
            .timestamp;
        cmd::tree::mkdir(&ctx, "alice/a/b/c/").await.unwrap();
        let t2 = st
            .objects
            .lock()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .0
            .timestamp;
        assert_eq!(t, t2, "an existing marker is left alone");

        put(&ctx, dir.path(), "alice/f", b"data").await;
        assert_eq!(
            msg(cmd::tree::mkdir(&ctx, "alice/f").await.unwrap_err()),
            "alice/f: exists and is a file"
        );
        assert_eq!(get(&ctx, dir.path(), "alice/f").await, Ok(b"data".to_vec()));
        assert_eq!(
            ls(&ctx, "alice", true, true).await.unwrap().lines().count(),
            2
        );
    }

    #[tokio::test]
    async fn copy_and_move_files() {
        let (addr, st) = fake::start().await;
        let ctx = Ctx::new(addr, fake::creds());
        let dir = tempfile::tempdir().unwrap();
        put(&ctx, dir.path(), "alice/docs/a.txt", b"alpha").await;

        cmd::tree::copy(&ctx, "alice/docs/a.txt", "alice/backup/2024/a.txt")
            .await
            .unwrap();
        assert_eq!(
            get(&ctx, dir.path(), "alice/docs/a.txt").await,
            Ok(b"alpha".to_vec())
        );
        assert_eq!(
            get(&ctx, dir.path(), "alice/backup/2024/a.txt").await,
            Ok(b"alpha".to_vec())
        );
        cmd::tree::move_file(&ctx, "alice/docs/a.txt", "alice/b.txt")
            .await
            .unwrap();
        assert_eq!(
            get(&ctx, dir.path(), "alice/docs/a.txt").await,
            Err("not found: alice/docs/a.txt".into())
        );
        assert_eq!(
            get(&ctx, dir.path(), "alice/b.txt").await,
            Ok(b"alpha".to_vec())
        );
        assert_eq!(
            ls(&ctx, "alice", false, true).await.as_deref(),
            Ok("b.txt\nbackup/2024/a.txt\n")
        );

        // Failures change nothing.
        let before = st.objects.lock().unwrap().clone();
        for (src, dst, want) in [
            ("alice/nope", "alice/x", "not found: alice/nope"),
            (
                "alice/backup",
                "alice/x",
                "alice/backup: is a directory (oss move moves files only)",
            ),
            (
                "alice/b.txt",
                "alice/b.txt",
                "alice/b.txt and alice/b.txt are the same file",
            ),
        ] {
            assert_eq!(
                msg(cmd::tree::move_file(&ctx, src, dst).await.unwrap_err()),
                want
            );
            let want = want.replace("move moves", "copy copies");
            assert_eq!(
                msg(cmd::tree::copy(&ctx, src, dst).await.unwrap_err()),
                want
            );
        }
        cmd::tree::mkdir(&ctx, "alice/empty").await.unwrap();
        assert_eq!(
            msg(cmd::tree::move_file(&ctx, "alice/empty", "alice/e2")
                .await
                .unwrap_err()),
            "alice/empty: is a directory (oss move moves files only)"
        );
        cmd::objects::delete(&ctx, "alice/empty").await.unwrap();
        assert_eq!(*st.objects.lock().unwrap(), before);
    }

    #[tokio::test]
    async fn unreachable_proxy_is_one_clear_line() {
        // Bind then drop: nothing listens on this port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ctx = Ctx::with_client(
            Client::new(format!("127.0.0.1:{port}"), fake::creds())
                .with_retry_for(std::time::Duration::ZERO),
        );
        let e = msg(cmd::objects::delete(&ctx, "alice/x").await.unwrap_err());
        assert_eq!(
            e,
            format!("cannot reach the proxy at 127.0.0.1:{port}: Connection refused")
        );
        // With a budget, it keeps trying, then says for how long.
        let ctx = Ctx::with_client(
            Client::new(format!("127.0.0.1:{port}"), fake::creds())
                .with_retry_for(std::time::Duration::from_millis(300)),
        );
        let t = std::time::Instant::now();
        let e = msg(cmd::objects::delete(&ctx, "alice/x").await.unwrap_err());
        assert!(t.elapsed() >= std::time::Duration::from_millis(300), "{e}");
        assert_eq!(
            e,
            format!(
                "cannot reach the proxy at 127.0.0.1:{port}: Connection refused (tried for 300 ms)"
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_tasks_each_get_their_own_connection() {
        let (addr, st) = fake::start().await;
        *st.delete_delay.lock().unwrap() = Duration::from_millis(5);
        let ctx = Ctx::new(addr, fake::creds());
        let a = BenchArgs {
            objects: 24,
            size: 10_000,
            concurrency: 4,
            user: "bench".into(),
            json: true,
            keep: false,
            phases: vec![],
            file: None,
            swift: None,
            swift_user: None,
            swift_key: None,
            list_limit: None,
        };
        let source = cmd::bench::Source::from_args(&a).unwrap();
        assert_eq!(source, cmd::bench::Source::Pattern(10_000));
        for p in [Phase::Upload, Phase::Download, Phase::Delete] {
            let r = cmd::bench::run_phase(&ctx, p, &a, &source).await.unwrap();
            assert_eq!(r.ops, 24, "{p:?}");
            assert_eq!(r.latencies.len(), 24);
        }
        // Four tasks, four connections, reused by every phase through the pool.
        assert_eq!(st.connections.load(Ordering::SeqCst), 4);
        assert!(st.objects.lock().unwrap().is_empty());
        // Downloading what is gone names the object.
        let e = msg(cmd::bench::run_phase(&ctx, Phase::Download, &a, &source)
            .await
            .unwrap_err());
        assert!(
            e.starts_with("bench download: not found: bench/bench-0000"),
            "{e}"
        );
        // --file: every object holds the file's bytes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src");
        let data: Vec<u8> = (0..300_001u32).map(|i| (i % 241) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let a = BenchArgs {
            objects: 2,
            file: Some(path),
            ..a
        };
        let source = cmd::bench::Source::from_args(&a).unwrap();
        let r = cmd::bench::run_phase(&ctx, Phase::Upload, &a, &source)
            .await
            .unwrap();
        assert_eq!((r.ops, r.bytes), (2, 2 * data.len() as u64));
        let objects = st.objects.lock().unwrap();
        assert_eq!(objects.len(), 2);
        assert!(objects.values().all(|(_, b)| *b == data));
    }
}
