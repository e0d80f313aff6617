//! Store tests: round trips, last-write-wins, tombstones, torn files, corruption, listing,
//! partition drop, audit.

use super::*;
use md5::{Digest, Md5};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

fn name(s: &str) -> ObjectName {
    ObjectName::parse(s).unwrap()
}

/// The partition of `n` in a ring of 2^8 partitions.
fn part(n: &ObjectName) -> u32 {
    n.partition(8)
}

fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn put(s: &Store, n: &ObjectName, ts: Timestamp, d: &[u8]) -> Result<Committed, StoreError> {
    s.put_bytes(
        n,
        part(n),
        ts,
        d,
        Announced::new(Some(d.len() as u64), md5(d)),
    )
}

/// Every item of a user's flat listing, tombstones included.
fn list_user(s: &Store, user: &str) -> Vec<ObjectMeta> {
    let q = oss_proto::wire::ListQuery {
        user: user.into(),
        ..Default::default()
    };
    s.list(&q, 10_000)
        .0
        .into_iter()
        .map(|i| match i {
            oss_proto::wire::ListItem::Object(m) => m,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn open(dir: &Path) -> Store {
    Store::open(dir).unwrap().0
}

fn path_of(s: &Store, n: &ObjectName) -> PathBuf {
    s.obj_path(s.lookup(n).unwrap().part, n)
}

fn read_all(s: &Store, n: &ObjectName) -> Result<Vec<u8>, StoreError> {
    let r = s.open_read(n, None)?;
    r.read_range(0, r.meta.size)
        .map_err(|e| s.read_failed(&r, e))
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn round_trips_at_edge_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for (i, len) in [0usize, 1, 2 * BLOCK as usize, (1 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        let n = name(&format!("alice/f{i}"));
        let d = data(len);
        let c = put(&s, &n, 10, &d).unwrap();
        assert_eq!(c.meta.size, len as u64);
        assert_eq!(c.meta.md5, md5(&d));
        assert!(c.previous.is_none());
        assert_eq!(read_all(&s, &n).unwrap(), d, "len {len}");
        assert_eq!(s.lookup(&n).unwrap().meta, c.meta);
        // The file is exactly data + CRCs + footer, data first.
        let file = fs::read(path_of(&s, &n)).unwrap();
        assert_eq!(&file[..len], &d[..]);
        assert_eq!(&file[file.len() - 8..], b"OSSOBJ01");
    }
    assert_eq!(count(&dir.path().join("tmp")), 0);
    // Everything survives a reopen (the index is rebuilt from footers).
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.live(), (4, (2 * BLOCK + (1 << 20) + 2)));
    assert_eq!(
        read_all(&s, &name("alice/f3")).unwrap(),
        data((1 << 20) + 1)
    );
}

#[test]
fn a_directory_serves_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let e = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, StoreError::Unusable(ref m) if m.contains("in use")),
        "{e}"
    );
    drop(s);
    drop(open(dir.path()));
}

#[test]
fn format_file_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    assert_eq!(
        fs::read(dir.path().join("FORMAT")).unwrap(),
        FORMAT_LINE.as_bytes()
    );
    fs::write(dir.path().join("FORMAT"), "oss-storaged 2\n").unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, StoreError::Unusable(ref m) if m.contains("unknown format")),
        "{e}"
    );
}

#[test]
fn newer_wins_older_and_equal_are_stale() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("alice/f");
    put(&s, &n, 100, b"one").unwrap();
    let c = put(&s, &n, 200, b"two").unwrap();
    assert_eq!(c.previous.unwrap().timestamp, 100);
    for ts in [200, 150] {
        match put(&s, &n, ts, b"old") {
            Err(StoreError::Stale { current: 200 }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(read_all(&s, &n).unwrap(), b"two");
    assert_eq!(
        count(&dir.path().join("tmp")),
        0,
        "refused temp files are removed"
    );
}

#[test]
fn a_reader_keeps_its_version_across_an_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("alice/f");
    let old = data(300 << 10);
    put(&s, &n, 1, &old).unwrap();
    let r = s.open_read(&n, None).unwrap();
    put(&s, &n, 2, b"new").unwrap();
    assert_eq!(r.read_range(0, old.len() as u64).unwrap(), old);
    assert!(matches!(
        s.open_read(&n, Some(1)),
        Err(StoreError::Stale { current: 2 })
    ));
    assert_eq!(s.open_read(&n, Some(2)).unwrap().meta.size, 3);
}

#[test]
fn tombstones_hide_and_refuse_older_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("alice/f");
    put(&s, &n, 100, b"data").unwrap();
    assert!(
        s.delete(&n, part(&n), 200).unwrap(),
        "a live version was replaced"
    );
    assert!(matches!(s.open_read(&n, None), Err(StoreError::NotFound)));
    let e = s.lookup(&n).unwrap();
    assert!(e.meta.deleted);
    assert_eq!((e.meta.timestamp, e.meta.size), (200, 0));
    assert!(matches!(
        put(&s, &n, 150, b"x"),
        Err(StoreError::Stale { current: 200 })
    ));
    assert!(matches!(
        s.delete(&n, part(&n), 200),
        Err(StoreError::Stale { current: 200 })
    ));
    assert!(
        !s.delete(&n, part(&n), 300).unwrap(),
        "a tombstone is not a live version"
    );
    // Deleting something never seen still leaves a tombstone.
    let m = name("bob/never");
    assert!(!s.delete(&m, part(&m), 5).unwrap());
    assert!(s.lookup(&m).unwrap().meta.deleted);
    assert!(matches!(
        put(&s, &m, 4, b"x"),
        Err(StoreError::Stale { current: 5 })
    ));
    // Newer data replaces a tombstone; all of it survives a reopen.
    put(&s, &n, 400, b"back").unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(read_all(&s, &n).unwrap(), b"back");
    assert!(s.lookup(&m).unwrap().meta.deleted);
    assert_eq!(s.users(), vec!["alice"]);
}

#[test]
fn md5_and_size_mismatches_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("alice/f");
    let e = s
        .put_bytes(
            &n,
            part(&n),
            1,
            b"abc",
            Announced::new(Some(3), md5(b"abd")),
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Md5Mismatch { .. }), "{e}");
    let e = s
        .put_bytes(
            &n,
            part(&n),
            1,
            b"abc",
            Announced::new(Some(4), md5(b"abc")),
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::BadRequest(_)), "{e}");
    assert!(s.lookup(&n).is_none());
    assert_eq!(count(&dir.path().join("tmp")), 0);
    // A partition number this name cannot have is refused.
    let wrong = part(&n) ^ 1;
    assert!(matches!(
        s.put_bytes(&n, wrong, 1, b"abc", Announced::new(None, md5(b"abc"))),
        Err(StoreError::BadRequest(_))
    ));
}

#[test]
fn leftover_temp_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let tmp = dir.path().join("tmp");
    fs::write(tmp.join("0123.1.2.tmp"), vec![1u8; 1000]).unwrap();
    fs::create_dir(tmp.join("junkdir")).unwrap();
    let (s, report) = Store::open(dir.path()).unwrap();
    assert_eq!(report.tmp_removed, 2);
    assert_eq!(count(&tmp), 0);
    assert_eq!(s.live(), (0, 0));
}

/// Truncating an object file anywhere in its footer (and at a few places in its data)
/// must never leave it served: the reopened store quarantines it.
#[test]
fn torn_files_are_quarantined_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let n = name("alice/torn");
    let d = data(2 * BLOCK as usize + 100);
    let (path, whole) = {
        let s = open(dir.path());
        put(&s, &n, 7, &d).unwrap();
        let p = path_of(&s, &n);
        (p.clone(), fs::read(&p).unwrap())
    };
    let size = d.len();
    let mut cuts: Vec<usize> = (size..whole.len()).collect();
    cuts.extend([0, 1, BLOCK as usize, size - 1]);
    let qdir = dir.path().join("quarantine");
    for (i, cut) in cuts.iter().enumerate() {
        fs::write(&path, &whole[..*cut]).unwrap();
        let (s, report) = Store::open(dir.path()).unwrap();
        assert_eq!(report.quarantined, vec![path.clone()], "cut at {cut}");
        assert!(s.lookup(&n).is_none(), "cut at {cut}");
        assert!(matches!(s.open_read(&n, None), Err(StoreError::NotFound)));
        assert!(!path.exists());
        assert_eq!(count(&qdir), i + 1);
    }
    // A flipped bit in the metadata record is caught by its CRC.
    let mut bad = whole.clone();
    let at = whole.len() - 20;
    bad[at] ^= 0x10;
    fs::write(&path, &bad).unwrap();
    let (s, report) = Store::open(dir.path()).unwrap();
    assert_eq!(report.quarantined.len(), 1);
    assert!(s.lookup(&n).is_none());
    drop(s);
    // The intact file is accepted again.
    fs::write(&path, &whole).unwrap();
    let s = open(dir.path());
    assert_eq!(read_all(&s, &n).unwrap(), d);
}

#[test]
fn a_flipped_data_byte_fails_at_its_block_and_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("alice/rot");
    let d = data(5 * BLOCK as usize + 10);
    put(&s, &n, 1, &d).unwrap();
    let path = path_of(&s, &n);
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[d[3 * BLOCK as usize + 5] ^ 1], 3 * BLOCK + 5)
        .unwrap();
    let r = s.open_read(&n, None).unwrap();
    // Blocks before the bad one read fine; the bad block is refused whole.
    assert_eq!(
        r.read_range(0, 3 * BLOCK).unwrap(),
        &d[..3 * BLOCK as usize]
    );
    let err = r.read_range(2 * BLOCK, 2 * BLOCK).unwrap_err();
    assert!(
        matches!(err, ReadError::Corrupt(off) if off == 3 * BLOCK),
        "{err}"
    );
    match s.read_failed(&r, err) {
        StoreError::Corrupt(m) => assert_eq!(m, format!("alice/rot block at offset {}", 3 * BLOCK)),
        other => panic!("{other:?}"),
    }
    assert!(s.lookup(&n).is_none());
    assert!(!path.exists());
    assert_eq!(count(&dir.path().join("quarantine")), 1);
    assert_eq!(s.take_quarantined(), vec![n.clone()]);
    assert!(s.take_quarantined().is_empty(), "drained");
    assert_eq!(s.quarantined_total(), 1);
    assert!(matches!(s.open_read(&n, None), Err(StoreError::NotFound)));
}

#[test]
fn range_reads_cross_block_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // One object read whole on open (small) and one read by preads (large).
    for len in [3 * BLOCK as usize + 7, 20 * BLOCK as usize + 3] {
        let n = name(&format!("alice/r{len}"));
        let d = data(len);
        put(&s, &n, 1, &d).unwrap();
        let r = s.open_read(&n, None).unwrap();
        let b = BLOCK as usize;
        for (off, l) in [
            (0, 1),
            (b - 1, 2),
            (b - 10, b + 20),
            (b, b),
            (2 * b + 1, len - 2 * b - 1),
            (len - 1, 1),
            (len, 0),
            (5, len - 5),
        ] {
            let got = r.read_range(off as u64, l as u64).unwrap();
            assert_eq!(got, &d[off..off + l], "len {len} off {off} l {l}");
        }
    }
}

#[test]
fn listings_are_sorted_and_include_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for f in ["c", "a", "b"] {
        let n = name(&format!("alice/{f}"));
        put(&s, &n, 1, f.as_bytes()).unwrap();
    }
    let b = name("alice/b");
    s.delete(&b, part(&b), 2).unwrap();
    let z = name("zed/only-deleted");
    s.delete(&z, part(&z), 2).unwrap();
    let l = list_user(&s, "alice");
    let names: Vec<_> = l.iter().map(|m| m.name.file().to_owned()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(l[1].deleted && !l[0].deleted);
    assert_eq!(s.users(), vec!["alice"], "users need a live object");
    assert_eq!(list_user(&s, "zed").len(), 1);
    assert!(list_user(&s, "nobody").is_empty());
    let p = part(&b);
    assert!(s.list_partition(p).iter().any(|m| m.name == b));
    assert!(s
        .list_partition(p)
        .windows(2)
        .all(|w| w[0].name < w[1].name));
}

#[test]
fn drop_partition_removes_only_that_partition() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let names: Vec<_> = (0..40).map(|i| name(&format!("u/f{i}"))).collect();
    for n in &names {
        put(&s, n, 1, b"x").unwrap();
    }
    let p = part(&names[0]);
    let in_p: Vec<_> = names.iter().filter(|n| part(n) == p).collect();
    let mut held: Vec<u32> = names.iter().map(part).collect();
    held.sort();
    held.dedup();
    assert_eq!(s.partitions(), held);
    assert_eq!(s.drop_partition(p).unwrap(), in_p.len());
    assert!(!s.partitions().contains(&p));
    assert!(s.list_partition(p).is_empty());
    assert!(!s.part_dir(p).exists());
    for n in &names {
        assert_eq!(s.lookup(n).is_some(), part(n) != p, "{n}");
    }
    assert_eq!(s.drop_partition(p).unwrap(), 0);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.live().0 as usize, names.len() - in_p.len());
    // The partition can be filled again.
    put(&s, &names[0], 5, b"again").unwrap();
    assert_eq!(read_all(&s, &names[0]).unwrap(), b"again");
}

#[test]
fn drop_versions_removes_exactly_the_listed_versions() {
    // A stand-in hands back what it listed; a version written there since stays.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let names: Vec<_> = (0..60).map(|i| name(&format!("u/g{i}"))).collect();
    let p = part(&names[0]);
    let in_p: Vec<_> = names.iter().filter(|n| part(n) == p).cloned().collect();
    assert!(!in_p.is_empty());
    for n in &in_p {
        put(&s, n, 1, b"old").unwrap();
    }
    let gone = name("u/tomb");
    let tp = part(&gone);
    s.delete(&gone, tp, 4).unwrap();
    let mut listed: Vec<(ObjectName, Timestamp)> = in_p.iter().map(|n| (n.clone(), 1)).collect();
    // Rewritten after the listing: it must survive the drop.
    put(&s, &in_p[0], 2, b"new").unwrap();
    listed.push((name("u/never-held"), 1));
    assert_eq!(s.drop_versions(p, &listed).unwrap(), in_p.len() - 1);
    assert_eq!(read_all(&s, &in_p[0]).unwrap(), b"new");
    for n in &in_p[1..] {
        assert!(s.lookup(n).is_none(), "{n}");
    }
    // Tombstones go the same way; the emptied partition directory with them.
    assert_eq!(s.drop_versions(tp, &[(gone.clone(), 4)]).unwrap(), 1);
    assert!(s.lookup(&gone).is_none());
    if tp != p {
        assert!(!s.part_dir(tp).exists());
    }
    // Held in another partition than asked: untouched.
    assert_eq!(
        s.drop_versions((p + 1) % 256, &[(in_p[0].clone(), 2)])
            .unwrap(),
        0
    );
    drop(s);
    let s = open(dir.path());
    assert_eq!(read_all(&s, &in_p[0]).unwrap(), b"new");
    assert_eq!(s.list_partition(p).len(), 1);
}

#[test]
fn check_reports_each_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let good = name("alice/good");
    let gone = name("alice/gone");
    let bad = name("alice/bad");
    put(&s, &good, 1, &data(1000)).unwrap();
    s.delete(&gone, part(&gone), 3).unwrap();
    put(&s, &bad, 1, &data(1000)).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path_of(&s, &bad))
        .unwrap();
    f.write_all_at(b"!", 500).unwrap();
    assert!(matches!(s.check(&good).unwrap(), ReplicaState::Good(m) if m.size == 1000));
    assert!(matches!(s.check(&gone).unwrap(), ReplicaState::Deleted(m) if m.timestamp == 3));
    assert!(matches!(
        s.check(&name("alice/none")).unwrap(),
        ReplicaState::Missing
    ));
    assert!(matches!(s.check(&bad).unwrap(), ReplicaState::Corrupt(m) if m.contains("offset 0")));
    assert!(
        matches!(s.check(&bad).unwrap(), ReplicaState::Missing),
        "quarantined"
    );
    assert_eq!(s.take_quarantined(), vec![bad]);
}

#[tokio::test]
async fn audit_finds_a_flipped_byte_and_reclaims_old_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    let names: Vec<_> = (0..5).map(|i| name(&format!("alice/a{i}"))).collect();
    for n in &names {
        put(&s, n, now_micros(), &data(200_000)).unwrap();
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path_of(&s, &names[2]))
        .unwrap();
    f.write_all_at(b"\xff\xfe", 150_000).unwrap();
    let old = name("alice/old-tombstone");
    let week_ago = now_micros() - RECLAIM_AGE.as_micros() as u64 - 1;
    s.delete(&old, part(&old), week_ago).unwrap();
    let young = name("alice/young-tombstone");
    s.delete(&young, part(&young), now_micros()).unwrap();

    let auditor = crate::audit::Auditor::new(s.clone(), 0);
    let stats = auditor.run_pass().await.unwrap();
    assert_eq!(stats.passes, 1);
    assert_eq!(
        stats.last_pass_objects, 6,
        "5 objects and the young tombstone"
    );
    assert_eq!(stats.last_pass_bytes, 4 * 200_000);
    assert_eq!(stats.quarantined_total, 1);
    assert_eq!(s.take_quarantined(), vec![names[2].clone()]);
    assert!(s.lookup(&old).is_none(), "reclaimed");
    assert!(s.lookup(&young).is_some());
    let stats = auditor.run_pass().await.unwrap();
    assert_eq!((stats.passes, stats.last_pass_objects), (2, 5));
}

#[test]
fn a_file_removed_behind_the_stores_back_is_reported_lost_not_absent() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("alice/gone");
    put(&s, &n, 10, b"hello").unwrap();
    assert_eq!(s.lost_version(&n), None);
    fs::remove_file(path_of(&s, &n)).unwrap();
    // The index still lists it until someone reads it...
    assert!(s.lookup(&n).is_some());
    assert!(matches!(read_all(&s, &n), Err(StoreError::Corrupt(_))));
    // ...then it is forgotten, reported to the proxy, and Head says "lost", not "absent".
    assert!(s.lookup(&n).is_none());
    assert_eq!(s.lost_version(&n), Some(10));
    assert_eq!(s.take_quarantined(), vec![n.clone()]);
    // Still listed: the object exists, only this replica of it is gone.
    assert_eq!(list_user(&s, "alice").len(), 1);
    assert!(
        s.list_partition(part(&n)).is_empty(),
        "a sync must see it as missing"
    );
    assert_eq!(s.check(&n).unwrap(), ReplicaState::Missing);
    // A repaired copy (same version) makes it whole again.
    put(&s, &n, 10, b"hello").unwrap();
    assert_eq!(s.lost_version(&n), None);
    assert_eq!(read_all(&s, &n).unwrap(), b"hello");
}

#[test]
fn a_quarantined_replica_is_reported_lost_until_a_new_version_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("alice/bad");
    put(&s, &n, 10, &data(100_000)).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path_of(&s, &n))
        .unwrap();
    f.write_all_at(&[0xff], 5).unwrap();
    assert!(matches!(read_all(&s, &n), Err(StoreError::Corrupt(_))));
    assert_eq!(s.lost_version(&n), Some(10));
    // Dropping the partition forgets it entirely.
    s.drop_partition(part(&n)).unwrap();
    assert_eq!(s.lost_version(&n), None);
}
