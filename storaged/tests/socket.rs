//! Socket-level tests: a real server on 127.0.0.1:0 spoken to through proto's Connection,
//! and the binary's command-line contract.

use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use oss_proto::auth::Key;
use oss_proto::name::hex;
use oss_proto::wire::Credentials;
use oss_proto::wire::{
    Chunk, Connection, Error, ListQuery, PutDecision, ReplicaState, Response, StorageRequest,
    UploadTrailer, CHUNK, KIND_HEADER, LIST_PAGE, MAX_LIST_LIMIT,
};
use oss_proto::{ObjectMeta, ObjectName, WireError};
use oss_storaged::store::Announced;
use oss_storaged::{run, Config, Store};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(10);

fn name(s: &str) -> ObjectName {
    ObjectName::parse(s).unwrap()
}

fn part(n: &ObjectName) -> u32 {
    n.partition(10)
}

fn md5(d: &[u8]) -> [u8; 16] {
    Md5::digest(d).into()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 997) as u8).collect()
}

fn obj_path(dir: &Path, n: &ObjectName) -> PathBuf {
    dir.join("objects")
        .join(format!("{:05}", part(n)))
        .join(format!("{}.obj", hex(&n.digest())))
}

/// The cluster secret of every test server, and the credentials the tests log in with.
fn secret() -> Key {
    Key::from_text("c".repeat(64).as_bytes()).unwrap()
}

fn secret_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("secret");
    std::fs::write(&p, "c".repeat(64)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

struct TestServer {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), oss_storaged::Error>>,
}

async fn start(dir: &Path) -> TestServer {
    start_with(dir, |_| {}).await
}

/// A server with the tests' settings, then `tune`'s.
async fn start_with(dir: &Path, tune: impl FnOnce(&mut Config)) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = Config::new(dir, secret());
    cfg.audit_interval = None;
    cfg.audit_rate = 0;
    cfg.frame_timeout = Duration::from_secs(2);
    tune(&mut cfg);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, cfg, async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        stop: Some(tx),
        task,
    }
}

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, T, &Credentials::cluster(secret()))
        .await
        .unwrap()
}

async fn call(c: &mut Connection, req: StorageRequest) -> Result<Response, Error> {
    c.write_header(&req).await?;
    c.flush().await?;
    c.read_response().await
}

/// Sends a Put with `body` in CHUNK frames and the trailer `md5_sent`.
async fn put_with(
    c: &mut Connection,
    n: &ObjectName,
    ts: u64,
    size: Option<u64>,
    body: &[u8],
    md5_sent: [u8; 16],
) -> Result<Response, Error> {
    c.write_header(&StorageRequest::Put {
        name: n.clone(),
        part: part(n),
        timestamp: ts,
        size,
        attrs: Default::default(),
    })
    .await?;
    for piece in body.chunks(CHUNK) {
        c.write_data(piece).await?;
    }
    c.write_end().await?;
    c.write_header(&UploadTrailer {
        md5: Some(md5_sent),
    })
    .await?;
    c.flush().await?;
    c.read_response().await
}

async fn put(c: &mut Connection, n: &ObjectName, ts: u64, body: &[u8]) -> ObjectMeta {
    match put_with(c, n, ts, Some(body.len() as u64), body, md5(body)).await {
        Ok(Response::Stored(m)) => m,
        other => panic!("put {n}: {other:?}"),
    }
}

/// A Get's answer: header, then the body, or the abort that ended it.
async fn get(
    c: &mut Connection,
    n: &ObjectName,
    offset: u64,
    len: Option<u64>,
) -> Result<(ObjectMeta, Vec<u8>, Option<WireError>), Error> {
    let resp = call(
        c,
        StorageRequest::Get {
            name: n.clone(),
            part: part(n),
            offset,
            len,
            timestamp: None,
        },
    )
    .await?;
    let Response::Object {
        meta, len: want, ..
    } = resp
    else {
        panic!("{resp:?}")
    };
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        match c.read_chunk(&mut buf).await? {
            Chunk::Data(k) => out.extend_from_slice(&buf[..k]),
            Chunk::End => break,
            Chunk::Abort(e) => return Ok((meta, out, Some(e))),
        }
    }
    assert_eq!(out.len() as u64, want);
    Ok((meta, out, None))
}

async fn tmp_is_empty(dir: &Path) -> bool {
    // The temp file of a failed upload goes when its writer notices; allow it a moment.
    for _ in 0..100 {
        if std::fs::read_dir(dir.join("tmp")).unwrap().count() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_requests_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    // 2,001 objects stored before the server starts: the startup scan must find them all,
    // and a listing pages them.
    {
        let (s, _) = Store::open(dir.path()).unwrap();
        std::thread::scope(|sc| {
            for t in 0..4 {
                let s = &s;
                sc.spawn(move || {
                    for i in (t..=LIST_PAGE).step_by(4) {
                        let n = name(&format!("many/f{i:05}"));
                        s.put_bytes(&n, part(&n), 1, b"x", Announced::new(None, md5(b"x")))
                            .unwrap();
                    }
                });
            }
        });
    }
    let mut srv = start(dir.path()).await;
    let mut c = connect(&srv.addr).await;

    // Put, Get (whole and ranges), Head.
    let n = name("alice/big");
    let body = data(2 * (1 << 20) + 12345);
    let meta = put(&mut c, &n, 100, &body).await;
    assert_eq!(
        (meta.size, meta.md5, meta.deleted),
        (body.len() as u64, md5(&body), false)
    );
    let (m, got, abort) = get(&mut c, &n, 0, None).await.unwrap();
    assert_eq!(m, meta);
    assert!(abort.is_none());
    assert!(got == body);
    let (_, got, _) = get(&mut c, &n, 65530, Some(20)).await.unwrap();
    assert_eq!(got, &body[65530..65550]);
    let (_, got, _) = get(&mut c, &n, body.len() as u64 - 5, Some(100))
        .await
        .unwrap();
    assert_eq!(got, &body[body.len() - 5..], "len is clamped to the object");
    let e = call(
        &mut c,
        StorageRequest::Get {
            name: n.clone(),
            part: part(&n),
            offset: body.len() as u64 + 1,
            len: None,
            timestamp: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Remote(WireError::BadRequest(_))), "{e}");
    let e = call(
        &mut c,
        StorageRequest::Get {
            name: n.clone(),
            part: part(&n),
            offset: 0,
            len: None,
            timestamp: Some(99),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Remote(WireError::Stale { current: 100 })),
        "{e}"
    );
    let head = call(
        &mut c,
        StorageRequest::Head {
            name: n.clone(),
            part: part(&n),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        head,
        Response::Object {
            meta: meta.clone(),
            offset: 0,
            len: 0
        }
    );

    // Small objects and refusals keep the connection usable.
    let small = name("alice/small");
    put(&mut c, &small, 100, b"hello").await;
    let e = put_with(&mut c, &small, 100, None, b"older", md5(b"older"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Remote(WireError::Stale { current: 100 })),
        "{e}"
    );
    let e = put_with(&mut c, &small, 200, None, b"abc", md5(b"abd"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Remote(WireError::Md5Mismatch { .. })),
        "{e}"
    );
    let e = put_with(&mut c, &small, 200, Some(2), b"abc", md5(b"abc"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Remote(WireError::BadRequest(_))), "{e}");
    let big_lie = data(3 << 20);
    let e = put_with(&mut c, &small, 200, Some(1 << 20), &big_lie, md5(&big_lie))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Remote(WireError::BadRequest(_))), "{e}");
    let (_, got, _) = get(&mut c, &small, 0, None).await.unwrap();
    assert_eq!(got, b"hello");
    assert!(tmp_is_empty(dir.path()).await);

    // Listings: one page for alice; "many" (LIST_PAGE + 1 objects) pages by marker.
    let query = |user: &str, marker: &str| ListQuery {
        user: user.into(),
        marker: marker.into(),
        ..Default::default()
    };
    match call(&mut c, StorageRequest::List(query("alice", "")))
        .await
        .unwrap()
    {
        Response::Page { items, truncated } => {
            assert!(!truncated);
            let names: Vec<_> = items.iter().map(|i| i.key()).collect();
            assert_eq!(names, ["big", "small"]);
        }
        other => panic!("{other:?}"),
    }
    let mut all: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let marker = all.last().cloned().unwrap_or_default();
        match call(&mut c, StorageRequest::List(query("many", &marker)))
            .await
            .unwrap()
        {
            Response::Page { items, truncated } => {
                assert!(items.len() <= LIST_PAGE);
                all.extend(items.iter().map(|i| i.key().to_owned()));
                pages += 1;
                if !truncated {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((all.len(), pages), (LIST_PAGE + 1, 2));
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    // A query the protocol refuses comes back as a typed error, and the connection lives on.
    let mut bad = query("alice", "");
    bad.limit = MAX_LIST_LIMIT + 1;
    assert!(matches!(
        call(&mut c, StorageRequest::List(bad)).await,
        Err(Error::Remote(WireError::BadRequest(_)))
    ));
    match call(&mut c, StorageRequest::ListUsers).await.unwrap() {
        Response::Users(u) => assert_eq!(u, ["alice", "many"]),
        other => panic!("{other:?}"),
    }

    // Delete leaves a tombstone that Head shows and Get hides.
    let d = call(
        &mut c,
        StorageRequest::Delete {
            name: small.clone(),
            part: part(&small),
            timestamp: 300,
        },
    )
    .await
    .unwrap();
    assert_eq!(d, Response::Deleted { existed: true });
    let e = get(&mut c, &small, 0, None).await.unwrap_err();
    assert!(matches!(e, Error::Remote(WireError::NotFound)), "{e}");
    match call(
        &mut c,
        StorageRequest::Head {
            name: small.clone(),
            part: part(&small),
        },
    )
    .await
    .unwrap()
    {
        Response::Object { meta, .. } => assert!(meta.deleted && meta.timestamp == 300),
        other => panic!("{other:?}"),
    }
    let e = call(
        &mut c,
        StorageRequest::Head {
            name: name("alice/none"),
            part: part(&name("alice/none")),
        },
    )
    .await;
    assert!(matches!(e, Err(Error::Remote(WireError::NotFound))));

    // A garbage frame closes only its own connection.
    let mut bad = connect(&srv.addr).await;
    bad.write_raw(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    bad.flush().await.unwrap();
    assert!(matches!(
        bad.read_response().await,
        Err(Error::Remote(WireError::BadRequest(_)))
    ));
    assert!(
        matches!(bad.read_header::<Response>().await, Ok(None) | Err(_)),
        "closed"
    );
    let mut bad = connect(&srv.addr).await;
    bad.write_raw(&[0, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    bad.flush().await.unwrap();
    assert!(bad.read_response().await.is_err());
    assert!(matches!(
        call(&mut c, StorageRequest::Ping).await.unwrap(),
        Response::Pong(_)
    ));

    // An upload aborted by its sender or cut off stores nothing and leaves no temp file.
    let cut = name("alice/cut");
    let mut a = connect(&srv.addr).await;
    a.write_header(&StorageRequest::Put {
        name: cut.clone(),
        part: part(&cut),
        timestamp: 1,
        size: None,
        attrs: Default::default(),
    })
    .await
    .unwrap();
    a.write_data(&data(3 << 20)).await.unwrap();
    a.write_abort(WireError::Unavailable("client went away".into()))
        .await
        .unwrap();
    a.flush().await.unwrap();
    assert!(matches!(
        a.read_response().await,
        Err(Error::Remote(WireError::BadRequest(_)))
    ));
    let mut a = connect(&srv.addr).await;
    a.write_header(&StorageRequest::Put {
        name: cut.clone(),
        part: part(&cut),
        timestamp: 1,
        size: None,
        attrs: Default::default(),
    })
    .await
    .unwrap();
    a.write_data(&data(3 << 20)).await.unwrap();
    a.flush().await.unwrap();
    drop(a);
    assert!(tmp_is_empty(dir.path()).await);
    let e = call(
        &mut c,
        StorageRequest::Head {
            name: cut.clone(),
            part: part(&cut),
        },
    )
    .await;
    assert!(matches!(e, Err(Error::Remote(WireError::NotFound))));

    // A rotten block: the Get aborts at that block, and the proxy learns the name.
    let off = (1 << 20) + 3 * 65536 + 17;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(obj_path(dir.path(), &n))
            .unwrap();
        f.write_all_at(&[body[off] ^ 0x80], off as u64).unwrap();
    }
    let (_, got, abort) = get(&mut c, &n, 0, None).await.unwrap();
    let want = format!("alice/big block at offset {}", (1 << 20) + 3 * 65536);
    assert_eq!(abort, Some(WireError::Corrupt(want)));
    assert!(got.len() <= (1 << 20) + 3 * 65536);
    assert!(got == body[..got.len()]);
    match call(&mut c, StorageRequest::TakeQuarantined).await.unwrap() {
        Response::Quarantined(v) => assert_eq!(v, std::slice::from_ref(&n)),
        other => panic!("{other:?}"),
    }
    match call(
        &mut c,
        StorageRequest::Check {
            name: n.clone(),
            part: part(&n),
        },
    )
    .await
    .unwrap()
    {
        Response::Checked(v) => assert_eq!(v, [(String::new(), ReplicaState::Missing)]),
        other => panic!("{other:?}"),
    }

    // Ping, Audit, DropPartition.
    match call(&mut c, StorageRequest::Ping).await.unwrap() {
        Response::Pong(s) => {
            assert_eq!(s.objects, LIST_PAGE as u64 + 1);
            assert!(s.disk_total > 0 && s.disk_free > 0);
            assert_eq!(s.audit.quarantined_total, 1);
        }
        other => panic!("{other:?}"),
    }
    match call(&mut c, StorageRequest::Audit).await.unwrap() {
        Response::Audited(s) => {
            assert_eq!((s.passes, s.last_pass_objects), (1, LIST_PAGE as u64 + 1))
        }
        other => panic!("{other:?}"),
    }
    // The tombstone of alice/small (timestamp 300 µs after the epoch) was older than a week.
    let e = call(
        &mut c,
        StorageRequest::Head {
            name: small.clone(),
            part: part(&small),
        },
    )
    .await;
    assert!(
        matches!(e, Err(Error::Remote(WireError::NotFound))),
        "reclaimed: {e:?}"
    );
    let p = part(&name("many/f00000"));
    assert_eq!(
        call(&mut c, StorageRequest::DropPartition { part: p })
            .await
            .unwrap(),
        Response::Ok
    );
    match call(&mut c, StorageRequest::ListPartition { part: p })
        .await
        .unwrap()
    {
        Response::Listing { entries, more } => assert!(entries.is_empty() && !more),
        other => panic!("{other:?}"),
    }

    // Shutdown: idle connections close, run returns.
    srv.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(T, &mut srv.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        c.read_header::<Response>().await,
        Ok(None) | Err(_)
    ));
}

/// The binary: the announced line, a clean exit on SIGTERM, and a one-line error otherwise.
#[test]
fn binary_contract() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let exe = env!("CARGO_BIN_EXE_oss-storaged");
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let secret = secret_file(keys.path());
    let mut child = Command::new(exe)
        .args(["--listen", "127.0.0.1:0", "--idle-timeout", "30s", "--data"])
        .arg(dir.path())
        .arg("--secret-file")
        .arg(&secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("oss-storaged listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim()
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = connect(&addr).await;
        assert!(matches!(
            call(&mut c, StorageRequest::Ping).await.unwrap(),
            Response::Pong(_)
        ));
        // Anyone without the secret is refused at the handshake.
        let wrong = Credentials::cluster(Key::from_text("w".repeat(64).as_bytes()).unwrap());
        assert!(matches!(
            Connection::connect(&addr, T, &wrong).await,
            Err(Error::Remote(WireError::AuthFailed(_)))
        ));
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(dir.path().join("FORMAT").exists());

    // A data directory that cannot be created.
    let out = Command::new(exe)
        .args(["--listen", "127.0.0.1:0", "--data", "/proc/oss-no-such-dir"])
        .arg("--secret-file")
        .arg(&secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data directory"), "{err}");
    assert!(out.stdout.is_empty());

    // An address in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(exe)
        .args([
            "--listen",
            &busy.local_addr().unwrap().to_string(),
            "--data",
        ])
        .arg(dir.path())
        .arg("--secret-file")
        .arg(&secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");

    // An idle timeout that is not a duration, or is none.
    for (bad, why) in [("fast", "invalid duration"), ("0", "more than 0")] {
        let out = Command::new(exe)
            .args(["--listen", "127.0.0.1:0", "--idle-timeout", bad, "--data"])
            .arg(dir.path())
            .arg("--secret-file")
            .arg(&secret)
            .output()
            .unwrap();
        assert!(!out.status.success(), "--idle-timeout {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// A 4 MiB tmpfs mounted for one test and unmounted when dropped.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    /// `None` when this process may not mount (not root): the test is then skipped, except
    /// under CI (root there), where a skip would hide a regression.
    fn mount() -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount a tmpfs under CI"
            );
            eprintln!("SKIPPED disk_full: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// A full disk answers DiskFull and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full() {
    let Some(fs) = SmallFs::mount() else { return };
    let dir = tempfile::tempdir_in(fs.0.path()).unwrap();
    let srv = start(dir.path()).await;
    let mut c = connect(&srv.addr).await;
    let n = name("alice/huge");
    let body = data(8 << 20);
    // Announced: refused up front. Unannounced: refused when the writes fail.
    for size in [Some(body.len() as u64), None] {
        let e = put_with(&mut c, &n, 1, size, &body, md5(&body))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Remote(WireError::DiskFull)), "{e}");
    }
    assert!(tmp_is_empty(dir.path()).await);
    put(&mut c, &name("alice/small"), 1, b"still works").await;
}

/// An upload whose writer named no MD5 (the Swift door's, without an `ETag`): the server
/// answers the MD5 of what it got and commits only on the proxy's word; dropped, it leaves
/// neither an object nor a temp file. Small bodies and spooled ones alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_uploads_commit_only_on_the_proxys_word() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start(dir.path()).await;
    for (i, (len, commit)) in [
        (1000, true),
        (1000, false),
        (3 << 20, true),
        (3 << 20, false),
    ]
    .into_iter()
    .enumerate()
    {
        let n = name(&format!("door/f{i}"));
        let body = data(len);
        let mut c = connect(&srv.addr).await;
        c.write_header(&StorageRequest::Put {
            name: n.clone(),
            part: part(&n),
            timestamp: 10,
            size: Some(len as u64),
            attrs: Default::default(),
        })
        .await
        .unwrap();
        for piece in body.chunks(CHUNK) {
            c.write_data(piece).await.unwrap();
        }
        c.write_end().await.unwrap();
        c.write_header(&UploadTrailer { md5: None }).await.unwrap();
        c.flush().await.unwrap();
        let r = c.read_response().await.unwrap();
        assert_eq!(r, Response::Prepared { md5: md5(&body) }, "{n}");
        // Not committed yet: nobody reads it.
        let mut other = connect(&srv.addr).await;
        assert!(
            matches!(
                get(&mut other, &n, 0, None).await,
                Err(Error::Remote(WireError::NotFound))
            ),
            "{n} readable before the commit"
        );
        c.write_header(&PutDecision { commit }).await.unwrap();
        c.flush().await.unwrap();
        if commit {
            let Response::Stored(m) = c.read_response().await.unwrap() else {
                panic!("{n}: not stored")
            };
            assert_eq!(m.md5, md5(&body));
            let (_, got, abort) = get(&mut other, &n, 0, None).await.unwrap();
            assert!(abort.is_none() && got == body, "{n}");
        } else {
            assert!(
                matches!(
                    get(&mut other, &n, 0, None).await,
                    Err(Error::Remote(WireError::NotFound))
                ),
                "{n} stored though dropped"
            );
            assert!(tmp_is_empty(dir.path()).await, "{n}: a temp file stayed");
        }
    }
    srv.stop.take().unwrap().send(()).unwrap();
}

/// True when the server closes `s` (end of stream, or a reset) within `limit`.
async fn closed_within(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> bool {
    let mut b = [0u8; 64];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// A connection that never logs in, but is never quite silent either: it sends the start of
/// a header frame that announces 255 bytes, one byte a second. Returns its read half.
async fn trickler(addr: &str) -> tokio::net::tcp::OwnedReadHalf {
    let (rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    tokio::spawn(async move {
        let mut frame = vec![KIND_HEADER, 0, 0, 0, 255];
        frame.resize(5 + 255, 0);
        for b in frame {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rd
}

/// Hundreds of connections that never speak, and one that trickles, do not keep a peer that
/// behaves from logging in: beyond the login limit the oldest are dropped at once, and the
/// peer is served as if they were not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_crowd_out_a_login() {
    const SILENT: usize = 300;
    const { assert!(SILENT > oss_proto::admission::MAX_LOGGING_IN) };
    let dir = tempfile::tempdir().unwrap();
    // A login deadline far past the end of the test: what closes a silent connection here is
    // the limit on connections logging in.
    let mut srv = start_with(dir.path(), |cfg| {
        cfg.frame_timeout = Duration::from_secs(600);
    })
    .await;
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(&srv.addr).await.unwrap());
    }
    let mut trickling = trickler(&srv.addr).await;
    for i in 0..3 {
        let mut c = connect(&srv.addr).await;
        assert!(matches!(
            call(&mut c, StorageRequest::Ping).await.unwrap(),
            Response::Pong(_)
        ));
        let n = name(&format!("crowd/f{i}"));
        put(&mut c, &n, 1, b"served past the silent crowd").await;
        let (_, got, abort) = get(&mut c, &n, 0, None).await.unwrap();
        assert!(abort.is_none() && got == b"served past the silent crowd");
    }
    // The oldest silent one was pushed out (long before its login deadline); the newest and
    // the trickler still wait.
    assert!(
        closed_within(&mut silent[0], Duration::from_secs(60)).await,
        "the oldest silent connection was not dropped"
    );
    assert!(!closed_within(&mut silent[SILENT - 1], Duration::from_millis(200)).await);
    assert!(!closed_within(&mut trickling, Duration::from_millis(200)).await);
    // A shutdown does not wait for connections that never logged in.
    srv.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), &mut srv.task)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "silent connection {i} open after the shutdown"
        );
    }
}

/// A logged-in connection that sends nothing past `--idle-timeout` is closed; one that keeps
/// asking stays open. A login is held to the same deadline (when shorter than the frame
/// timeout), whether the peer is silent or trickles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_stay() {
    let idle = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(dir.path(), |cfg| {
        cfg.idle_timeout = idle;
        cfg.frame_timeout = Duration::from_secs(600);
    })
    .await;
    let began = std::time::Instant::now();
    let mut quiet = connect(&srv.addr).await;
    let mut busy = connect(&srv.addr).await;
    let mut silent = TcpStream::connect(&srv.addr).await.unwrap();
    let mut trickling = trickler(&srv.addr).await;
    let quiet_end = tokio::spawn(async move { quiet.read_header::<Response>().await });
    // The busy one asks every 100 ms, far inside the idle timeout, until the quiet one is
    // gone.
    let deadline = began + Duration::from_secs(60);
    let mut asked = 0;
    while !quiet_end.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle connection was not closed"
        );
        assert!(matches!(
            call(&mut busy, StorageRequest::Ping).await.unwrap(),
            Response::Pong(_)
        ));
        asked += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = quiet_end.await.unwrap();
    assert!(
        matches!(end, Ok(None) | Err(Error::Closed | Error::Io(_))),
        "{end:?}"
    );
    assert!(began.elapsed() >= idle, "closed before its idle timeout");
    assert!(asked > 1);
    // And the busy one is still served.
    for _ in 0..3 {
        assert!(matches!(
            call(&mut busy, StorageRequest::Ping).await.unwrap(),
            Response::Pong(_)
        ));
    }
    // Neither the silent nor the trickling login outlives the idle timeout by much (the
    // frame timeout alone would give them ten minutes).
    assert!(closed_within(&mut silent, Duration::from_secs(60)).await);
    assert!(closed_within(&mut trickling, Duration::from_secs(60)).await);
}
