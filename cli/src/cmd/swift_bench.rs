//! `oss bench --swift AUTH_URL`: the native bench's phases and output, driven over the
//! OpenStack Swift API with [`crate::swift`], so one workload measures oss's door
//! (`oss-proxy --http`) and a real Swift alike. The container is `--user`, objects are
//! `bench-NNNNNN` in it. Within a phase each of the `--concurrency` tasks owns one
//! keep-alive connection; the login happens once, before the first phase, untimed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tokio::io::AsyncReadExt;

use oss_proto::name::{validate_part, Part};

use crate::args::{BenchArgs, Phase};
use crate::cmd::bench::{file_name, PhaseResult, Source};
use crate::error::{self, CliError};
use crate::io::emit;
use crate::swift::{self, Account, Session, SwiftError, Upload};

/// Objects up to this size are uploaded from one buffer (sent with the headers); larger ones
/// are streamed from their source.
pub const INLINE_MAX: u64 = 1 << 20;

pub async fn bench(a: &BenchArgs) -> Result<()> {
    let auth_url = a.swift.as_deref().expect("called with --swift");
    let need = |v: &Option<String>, flag: &str, env: &str| {
        v.clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CliError::new(format!("--swift needs {flag} (or ${env})")))
    };
    let user = need(&a.swift_user, "--swift-user", "ST_USER")?;
    let key = need(&a.swift_key, "--swift-key", "ST_KEY")?;
    validate_part(&a.user, Part::User).map_err(|e| error::invalid_name(&e))?;
    let phases: Vec<Phase> = a
        .phases
        .iter()
        .copied()
        .filter(|p| !(a.keep && *p == Phase::Delete))
        .collect();
    let source = Source::from_args(a)?;
    let account = Arc::new(
        swift::authenticate(auth_url, &user, &key)
            .await
            .map_err(|e| CliError::new(e.to_string()))?,
    );
    if !a.json {
        emit(&format!(
            "bench: {} objects of {}, concurrency {}, container {}, swift {}\n",
            a.objects,
            source.describe(),
            a.concurrency,
            a.user,
            account.storage
        ))?;
    }
    if phases.contains(&Phase::Upload) {
        Session::new(account.clone())
            .put_container(&a.user)
            .await
            .map_err(|e| CliError::new(format!("bench: {e}")))?;
    }
    let mut results = Vec::new();
    for p in phases {
        let r = match p {
            Phase::List => list_phase(&account, a).await,
            _ => run_phase(&account, p, a, &source).await,
        }
        .map_err(|e| CliError::new(format!("bench {}: {e}", p.as_str())))?;
        if !a.json {
            emit(&format!("{}\n", r.line()))?;
        }
        results.push(r);
    }
    if a.json {
        let mut phases = serde_json::Map::new();
        for r in &results {
            phases.insert(r.phase.as_str().into(), r.to_json());
        }
        let mut v = json!({
            "protocol": "swift",
            "auth_url": auth_url,
            "storage_url": account.storage.to_string(),
            "user": a.user,
            "objects": a.objects,
            "size": source.size(),
            "concurrency": a.concurrency,
            "phases": phases,
        });
        if let Source::File { path, .. } = &source {
            v["file"] = json!(path.display().to_string());
        }
        emit(&format!("{v}\n"))?;
    }
    Ok(())
}

/// The whole container, paged with `marker` as a client does until an empty page; timed as
/// one operation.
async fn list_phase(account: &Arc<Account>, a: &BenchArgs) -> swift::Result<PhaseResult> {
    let mut s = Session::new(account.clone());
    let t = Instant::now();
    let (entries, pages) = match s.list_all(&a.user, a.list_limit, None).await {
        Err(SwiftError::Status { status, .. }) if status == hyper::StatusCode::NOT_FOUND => (0, 1),
        r => r?,
    };
    let wall = t.elapsed();
    Ok(PhaseResult {
        phase: Phase::List,
        ops: 1,
        bytes: 0,
        wall,
        latencies: vec![wall],
        entries: Some(entries),
        pages: Some(pages),
        connections: Some(s.conn.opened),
    })
}

/// What object `i` uploads: one buffer when small, else a stream from its source.
async fn upload_body(source: &Source, i: usize) -> swift::Result<Upload> {
    let mut r = source.reader(i).await.map_err(SwiftError::Source)?;
    let len = source.size();
    if len > INLINE_MAX {
        return Ok(Upload::Reader { reader: r, len });
    }
    let mut v = Vec::with_capacity(len as usize);
    r.read_to_end(&mut v).await.map_err(SwiftError::Source)?;
    Ok(Upload::Bytes(v.into()))
}

/// One object operation of a phase; returns the body bytes moved.
async fn one_op(
    s: &mut Session,
    phase: Phase,
    container: &str,
    i: usize,
    source: &Source,
) -> swift::Result<u64> {
    let name = file_name(i);
    match phase {
        Phase::Upload => {
            let up = upload_body(source, i).await?;
            s.put_object(container, &name, up).await
        }
        Phase::Download => s.get_object(container, &name).await.map(|g| g.bytes),
        Phase::Delete => match s.delete_object(container, &name).await? {
            true => Ok(0),
            false => Err(SwiftError::Request {
                what: format!("DELETE {}", s.account.object_path(container, &name)),
                why: "404 Not Found".into(),
            }),
        },
        Phase::List => unreachable!("the list phase pages on one connection"),
    }
}

async fn run_phase(
    account: &Arc<Account>,
    phase: Phase,
    a: &BenchArgs,
    source: &Source,
) -> swift::Result<PhaseResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.min(a.objects.max(1) as u64) {
        let (next, stop, source) = (next.clone(), stop.clone(), source.clone());
        let mut s = Session::new(account.clone());
        let (container, n) = (a.user.clone(), a.objects);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || stop.load(Ordering::Relaxed) {
                    return (Ok((lat, bytes)), s.conn.opened);
                }
                let t = Instant::now();
                match one_op(&mut s, phase, &container, i, &source).await {
                    Ok(b) => {
                        lat.push(t.elapsed());
                        bytes += b;
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return (Err(e), s.conn.opened);
                    }
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(a.objects);
    let (mut bytes, mut connections) = (0, 0);
    let mut first_err = None;
    for t in tasks {
        let (r, opened) = t.await.map_err(|e| SwiftError::Request {
            what: "a bench task".into(),
            why: e.to_string(),
        })?;
        connections += opened;
        match r {
            Ok((l, b)) => {
                latencies.extend(l);
                bytes += b;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let wall = start.elapsed();
    if let Some(e) = first_err {
        return Err(e);
    }
    latencies.sort();
    Ok(PhaseResult {
        phase,
        ops: latencies.len(),
        bytes,
        wall,
        latencies,
        entries: None,
        pages: None,
        connections: Some(connections),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::fake_swift::{self, KEY, USER};

    fn args(extra: &[&str]) -> BenchArgs {
        let argv = ["oss", "bench", "--swift", "http://unused/auth/v1.0"];
        match Cli::try_parse_from(argv.iter().chain(extra)).unwrap().cmd {
            Command::Bench(b) => b,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn flags() {
        let b = args(&[
            "--swift-user",
            "u:v",
            "--swift-key",
            "k",
            "--list-limit",
            "5",
        ]);
        assert_eq!(b.swift.as_deref(), Some("http://unused/auth/v1.0"));
        assert_eq!(b.swift_user.as_deref(), Some("u:v"));
        assert_eq!(b.list_limit, Some(5));
        assert!(Cli::try_parse_from(["oss", "bench", "--list-limit", "0"]).is_err());
    }

    #[tokio::test]
    async fn phases_run_one_connection_per_task() {
        let (auth, st) = fake_swift::start().await;
        let acct = Arc::new(swift::authenticate(&auth, USER, KEY).await.unwrap());
        let a = args(&["--objects", "23", "--size", "5000", "--concurrency", "4"]);
        let source = Source::from_args(&a).unwrap();
        Session::new(acct.clone())
            .put_container("bench")
            .await
            .unwrap();
        let before = st.connections.load(Ordering::SeqCst);
        let up = run_phase(&acct, Phase::Upload, &a, &source).await.unwrap();
        assert_eq!((up.ops, up.bytes, up.connections), (23, 23 * 5000, Some(4)));
        assert_eq!(st.objects.lock().unwrap().len(), 23);
        // Each object holds its own pattern, as the native bench writes it.
        let key = ("bench".to_owned(), "bench-000007".to_owned());
        let mut want = Vec::new();
        source
            .reader(7)
            .await
            .unwrap()
            .read_to_end(&mut want)
            .await
            .unwrap();
        assert_eq!(st.objects.lock().unwrap()[&key], want);
        let down = run_phase(&acct, Phase::Download, &a, &source)
            .await
            .unwrap();
        assert_eq!((down.ops, down.bytes), (23, 23 * 5000));
        let a10 = args(&["--list-limit", "10"]);
        let l = list_phase(&acct, &a10).await.unwrap();
        assert_eq!(
            (l.entries, l.pages, l.connections),
            (Some(23), Some(4), Some(1))
        );
        let del = run_phase(&acct, Phase::Delete, &a, &source).await.unwrap();
        assert_eq!(del.ops, 23);
        assert!(st.objects.lock().unwrap().is_empty());
        // 4 + 4 + 1 + 4 connections, one per task of each phase.
        assert_eq!(st.connections.load(Ordering::SeqCst), before + 13);
        // Deleting again: the first 404 stops the phase.
        let e = run_phase(&acct, Phase::Delete, &a, &source)
            .await
            .unwrap_err();
        assert!(e.to_string().ends_with(": 404 Not Found"), "{e}");
    }

    #[tokio::test]
    async fn a_large_file_is_streamed() {
        let (auth, st) = fake_swift::start().await;
        let acct = Arc::new(swift::authenticate(&auth, USER, KEY).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data: Vec<u8> = (0..(INLINE_MAX as usize * 2 + 3))
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let a = args(&[
            "--objects",
            "1",
            "--file",
            path.to_str().unwrap(),
            "--user",
            "big",
        ]);
        let source = Source::from_args(&a).unwrap();
        assert_eq!(source.size(), data.len() as u64);
        assert!(matches!(
            upload_body(&source, 0).await.unwrap(),
            Upload::Reader { .. }
        ));
        Session::new(acct.clone())
            .put_container("big")
            .await
            .unwrap();
        let up = run_phase(&acct, Phase::Upload, &a, &source).await.unwrap();
        assert_eq!(up.bytes, data.len() as u64);
        let key = ("big".to_owned(), "bench-000000".to_owned());
        assert_eq!(st.objects.lock().unwrap()[&key], data);
        let down = run_phase(&acct, Phase::Download, &a, &source)
            .await
            .unwrap();
        assert_eq!((down.ops, down.bytes), (1, data.len() as u64));
        let a = args(&["--file", dir.path().to_str().unwrap()]);
        let e = Source::from_args(&a).unwrap_err();
        assert!(e.msg.ends_with(": not a regular file"), "{}", e.msg);
    }
}
