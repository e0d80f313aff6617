//! Hostile input after login: a seeded property test sends the proxy and a storage server
//! damaged frames (bytes flipped, cut short, stretched, a length field replaced, a wrong
//! kind, headers of the largest allowed size full of noise or of huge length prefixes,
//! noise) over connections that logged in properly, so every request handler sees them, not
//! only the handshake. Whatever arrives, the process stays up, answers the next
//! well-formed request, leaves no temp file, and its peak memory stays within a bound
//! (what its length fields claim is never allocated). `OSS_FUZZ_CASES` (default 300 per process)
//! and `OSS_FUZZ_SEED` run it longer or replay a failure; the seed is printed.

use std::time::Duration;

use md5::Digest;
use oss_proto::wire::{
    Connection, Credentials, ListQuery, StorageRequest, UploadTrailer, KIND_DATA, KIND_END,
    KIND_HEADER, MAX_HEADER,
};
use oss_proto::ObjectName;
use oss_tests::*;

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn header<T: serde::Serialize>(v: &T) -> Vec<u8> {
    frame(KIND_HEADER, &postcard::to_stdvec(v).unwrap())
}

/// A header, then (for an upload) a body, END and the trailer with the body's MD5.
fn with_body(head: Vec<u8>, r: &mut XorShift) -> Vec<u8> {
    let body = pseudo_random(r.next_u64(), r.below(3000) as usize);
    let mut out = head;
    for piece in body.chunks(700) {
        out.extend(frame(KIND_DATA, piece));
    }
    out.extend(frame(KIND_END, &[]));
    let md5: [u8; 16] = md5::Md5::digest(&body).into();
    out.extend(header(&UploadTrailer { md5: Some(md5) }));
    out
}

fn obj(r: &mut XorShift) -> ObjectName {
    ObjectName::parse(&format!("fz/o{}", r.below(8))).unwrap()
}

fn query(r: &mut XorShift) -> ListQuery {
    ListQuery {
        user: "fz".into(),
        prefix: String::new(),
        delimiter: Some('/'),
        marker: String::new(),
        end_marker: String::new(),
        limit: r.below(100) as u32,
    }
}

/// A well-formed exchange a client may have with the proxy (no admin command that changes
/// the cluster: a damaged one must not be able to remove a disk).
fn client_exchange(r: &mut XorShift) -> Vec<u8> {
    use oss_proto::wire::ClientRequest::*;
    let n = obj(r);
    match r.below(9) {
        0 | 1 => with_body(
            header(&Upload {
                name: n,
                size: None,
                attrs: Default::default(),
            }),
            r,
        ),
        2 => header(&Download {
            name: n,
            offset: r.below(4000),
            len: Some(r.below(4000)),
        }),
        3 => header(&Stat { name: n }),
        4 => header(&Delete { name: n }),
        5 => header(&List(query(r))),
        6 => header(&Copy {
            src: n,
            dst: obj(r),
            attrs: None,
        }),
        7 => header(&Check { name: n }),
        _ => header(&Status),
    }
}

/// A well-formed exchange the proxy may have with a storage server.
fn storage_exchange(r: &mut XorShift) -> Vec<u8> {
    let n = obj(r);
    let part = partition_of(n.as_str(), 16);
    let ts = 1_000 + r.below(1_000_000);
    match r.below(11) {
        0 | 1 => with_body(
            header(&StorageRequest::Put {
                name: n,
                part,
                timestamp: ts,
                size: None,
                attrs: Default::default(),
            }),
            r,
        ),
        2 => header(&StorageRequest::Get {
            name: n,
            part,
            offset: r.below(4000),
            len: Some(r.below(4000)),
            timestamp: None,
        }),
        3 => header(&StorageRequest::Head { name: n, part }),
        4 => header(&StorageRequest::Delete {
            name: n,
            part,
            timestamp: ts,
        }),
        5 => header(&StorageRequest::Check { name: n, part }),
        6 => header(&StorageRequest::List(query(r))),
        7 => header(&StorageRequest::ListPartition { part }),
        8 => header(&StorageRequest::ListPartitions),
        9 => header(&StorageRequest::Digests {
            from: r.below(20) as u32,
        }),
        _ => header(&StorageRequest::Ping),
    }
}

/// The exchange damaged as a broken or hostile peer would send it.
fn mutate(r: &mut XorShift, mut b: Vec<u8>) -> Vec<u8> {
    let at = |r: &mut XorShift, len: usize| r.below(len.max(1) as u64) as usize;
    match r.below(7) {
        0 => {
            for _ in 0..1 + r.below(4) {
                let i = at(r, b.len());
                b[i] ^= 1 << r.below(8);
            }
        }
        1 => b.truncate(at(r, b.len())),
        2 => {
            let i = at(r, b.len() + 1);
            let noise = pseudo_random(r.next_u64(), 1 + r.below(64) as usize);
            b.splice(i..i, noise);
        }
        3 => {
            // The first frame's length: anything, near the maximum, or just off.
            let old = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
            let len = match r.below(3) {
                0 => r.next_u64() as u32,
                1 => u32::MAX - r.below(16) as u32,
                _ => old.wrapping_add(r.below(9) as u32).wrapping_sub(4),
            };
            b[1..5].copy_from_slice(&len.to_be_bytes());
        }
        4 => b[0] = r.next_u64() as u8,
        5 => {
            // A header as large as allowed, or just over, of noise or of 0xff bytes (as a
            // postcard varint: "a sequence of billions follows").
            let len = MAX_HEADER - 16 + r.below(32) as u32;
            let fill = if r.below(2) == 0 {
                pseudo_random(r.next_u64(), len as usize)
            } else {
                vec![0xff; len as usize]
            };
            b = frame(KIND_HEADER, &fill);
        }
        _ => b = pseudo_random(r.next_u64(), r.below(200) as usize),
    }
    b
}

fn cases_and_seed(what: &str) -> (u64, u64) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    let cases = env("OSS_FUZZ_CASES").unwrap_or(300);
    let seed = env("OSS_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("[fuzz {what}] {cases} cases, OSS_FUZZ_SEED={seed}");
    (cases, seed)
}

/// Sends `cases` damaged exchanges, each on its own logged-in connection; returns `cases`.
fn send_damaged(
    addr: &str,
    creds: &Credentials,
    exchange: fn(&mut XorShift) -> Vec<u8>,
    what: &str,
) -> u64 {
    let (cases, seed) = cases_and_seed(what);
    let mut r = XorShift::new(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for case in 0..cases {
            let valid = exchange(&mut r);
            let bytes = mutate(&mut r, valid);
            let mut c = Connection::connect(addr, Duration::from_secs(10), creds)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}, case {case}: cannot log in: {e}"));
            if c.write_raw(&bytes).await.is_ok() && c.flush().await.is_ok() {
                // An answer, a refusal or a close; a frame cut short waits for more.
                let _ = tokio::time::timeout(Duration::from_millis(50), c.read_response()).await;
            }
        }
    });
    cases
}

/// A damaged exchange costs about one line of log (the refusal), not a flood: `logged`
/// lines for `cases` cases (0.7 to 1.0 a case seen).
fn assert_quiet_logs(logged: u64, cases: u64, what: &str) {
    eprintln!("[fuzz] {what}: {logged} log lines for {cases} damaged exchanges");
    assert!(
        logged <= cases + cases / 4 + 20,
        "{what} logged {logged} lines for {cases} damaged exchanges"
    );
}

/// Peak resident memory of a process, from /proc.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Damaged frames may cost a frame's worth of memory each (4 MiB, checked before anything
/// is allocated), never what their length fields claim.
const RSS_BOUND: u64 = 64 << 20;

fn assert_bounded(pid: i32, what: &str) {
    let peak = peak_rss(pid);
    eprintln!("[fuzz] {what}: peak RSS {} MiB", peak >> 20);
    assert!(
        peak < RSS_BOUND,
        "{what} peaked at {} MiB (bound {} MiB)",
        peak >> 20,
        RSS_BOUND >> 20
    );
}

fn no_temp_files_left(c: &Cluster) {
    wait_until(
        Duration::from_secs(30),
        "damaged uploads' temp files to go",
        || (0..c.storage.len()).all(|i| c.tmp_files(i).is_empty()),
    );
}

#[test]
fn fuzz_storage_server_takes_damaged_frames_after_login() {
    let mut c = Cluster::start(2, 16);
    c.upload_bytes("fz/before", b"written before the damage");
    let secret = oss_proto::auth::read_secret_file(&test_secret_file()).unwrap();
    let addr = c.storage[0].addr().to_string();
    let before = c.storage[0].log_lines();
    let cases = send_damaged(
        &addr,
        &Credentials::cluster(secret),
        storage_exchange,
        "storage",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_quiet_logs(
        c.storage[0].log_lines() - before,
        cases,
        "the storage server",
    );
    assert!(c.storage[0].is_running(), "the storage server died");
    assert_bounded(c.storage[0].pid(), "the storage server");
    // It alone still serves what it held, then takes new writes with the other one back.
    c.storage[1].kill();
    c.assert_content("fz/before", b"written before the damage");
    c.storage[1].restart();
    c.wait_all_online(Duration::from_secs(30));
    c.upload_bytes("fz/after", b"written after the damage");
    c.assert_content("fz/after", b"written after the damage");
    no_temp_files_left(&c);
}

#[test]
fn fuzz_proxy_takes_damaged_frames_after_login() {
    let mut c = Cluster::start(2, 16);
    c.upload_bytes("fz/before", b"written before the damage");
    let key = std::fs::read(c.proxy.admin_key()).unwrap();
    let creds = Credentials::from_key_line(&key).unwrap();
    let before = c.proxy.log_lines();
    let cases = send_damaged(&c.proxy_addr(), &creds, client_exchange, "proxy");
    std::thread::sleep(Duration::from_millis(300));
    assert_quiet_logs(c.proxy.log_lines() - before, cases, "the proxy");
    assert!(c.proxy.is_running(), "the proxy died");
    assert_bounded(c.proxy.pid(), "the proxy");
    c.assert_content("fz/before", b"written before the damage");
    c.upload_bytes("fz/after", b"written after the damage");
    c.assert_content("fz/after", b"written after the damage");
    no_temp_files_left(&c);
}
