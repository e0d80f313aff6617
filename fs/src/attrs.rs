//! What a file carries besides its bytes, as the mount stores it in the object's
//! [`Attrs`]: the modification time a client set, the access time a client set, and the
//! mode bits.
//!
//! The time is kept to the nanosecond (`"1700000000.123456789"`, the format rclone writes
//! for `X-Object-Meta-Mtime`; readers that want microseconds, like
//! [`Attrs::mtime_micros`], take the first six digits). Nanoseconds matter: `rsync -a`
//! compares them, and a time that came back rounded would make it copy everything again.
//! Without a stored time, a file shows the object's write timestamp; without a stored
//! mode, 0644 (files) and 0755 (directories).
//!
//! The access time is stored ([`ATIME`], same format) only when a client sets it
//! (`utimensat`, `touch -a`, `cp -p`); without one a file shows its modification time as
//! its access time. Reads never store anything: there are no access-time updates.

use oss_proto::wire::Attrs;
use oss_proto::Timestamp;

/// Permission bits of a file without a stored mode.
pub const FILE_PERM: u32 = 0o644;
/// Permission bits of a directory without a stored mode.
pub const DIR_PERM: u32 = 0o755;

/// The metadata key of the access time a client set (`"secs.nanos"`, like the mtime).
pub const ATIME: &str = "atime";

/// The stored modification time in nanoseconds since the epoch, if any and well-formed.
pub fn mtime_ns(a: &Attrs) -> Option<u64> {
    time_ns(a, Attrs::MTIME)
}

/// The stored access time in nanoseconds since the epoch, if any and well-formed.
pub fn atime_ns(a: &Attrs) -> Option<u64> {
    time_ns(a, ATIME)
}

/// A `"secs.nanos"` time stored under `key`.
fn time_ns(a: &Attrs, key: &str) -> Option<u64> {
    let v = a.meta.get(key)?;
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: u64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = &frac[..frac.len().min(9)];
    let ns: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

pub fn set_mtime_ns(a: &mut Attrs, ns: u64) {
    a.meta.insert(Attrs::MTIME.to_owned(), format_ns(ns));
}

pub fn set_atime_ns(a: &mut Attrs, ns: u64) {
    a.meta.insert(ATIME.to_owned(), format_ns(ns));
}

fn format_ns(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// The time to show: the stored one, else the object's write timestamp (µs).
pub fn shown_mtime_ns(a: &Attrs, timestamp: Timestamp) -> u64 {
    mtime_ns(a).unwrap_or(timestamp.saturating_mul(1000))
}

/// The access time to show: the stored one, else the modification time shown.
pub fn shown_atime_ns(a: &Attrs, timestamp: Timestamp) -> u64 {
    atime_ns(a).unwrap_or_else(|| shown_mtime_ns(a, timestamp))
}

/// The permission bits to show (the stored mode's low 12 bits, else the default).
pub fn shown_perm(a: &Attrs, dir: bool) -> u32 {
    match a.mode() {
        Some(m) => m & 0o7777,
        None if dir => DIR_PERM,
        None => FILE_PERM,
    }
}

/// A regular file's mode as stored (`100755`).
pub fn file_mode(perm: u32) -> u32 {
    libc::S_IFREG | (perm & 0o7777)
}

/// A directory's mode as stored (`40755`).
pub fn dir_mode(perm: u32) -> u32 {
    libc::S_IFDIR | (perm & 0o7777)
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_keeps_nanoseconds_and_reads_other_writers() {
        let mut a = Attrs::default();
        assert_eq!(mtime_ns(&a), None);
        assert_eq!(shown_mtime_ns(&a, 7), 7000);
        set_mtime_ns(&mut a, 1_700_000_000_123_456_789);
        assert_eq!(a.meta["mtime"], "1700000000.123456789");
        assert_eq!(mtime_ns(&a), Some(1_700_000_000_123_456_789));
        // The proto's µs reader understands it too.
        assert_eq!(a.mtime_micros(), Some(1_700_000_000_123_456));
        // What python-swiftclient and Attrs::set_mtime_micros write.
        a.set_mtime_micros(1_700_000_000_500_000);
        assert_eq!(mtime_ns(&a), Some(1_700_000_000_500_000_000));
        for (v, want) in [
            ("12", Some(12_000_000_000)),
            ("12.5", Some(12_500_000_000)),
            ("12.1234567891234", Some(12_123_456_789)),
            ("x", None),
            ("1.x", None),
            ("-1", None),
        ] {
            a.meta.insert("mtime".into(), v.into());
            assert_eq!(mtime_ns(&a), want, "{v}");
        }
    }

    #[test]
    fn atime_is_kept_apart_and_defaults_to_the_mtime() {
        let mut a = Attrs::default();
        assert_eq!(atime_ns(&a), None);
        assert_eq!(
            shown_atime_ns(&a, 7),
            7000,
            "the write timestamp, like the mtime"
        );
        set_mtime_ns(&mut a, 5_000_000_001);
        assert_eq!(shown_atime_ns(&a, 7), 5_000_000_001, "the stored mtime");
        set_atime_ns(&mut a, 1_000_000_000_000_000_042);
        assert_eq!(a.meta["atime"], "1000000000.000000042");
        assert_eq!(atime_ns(&a), Some(1_000_000_000_000_000_042));
        assert_eq!(shown_atime_ns(&a, 7), 1_000_000_000_000_000_042);
        assert_eq!(mtime_ns(&a), Some(5_000_000_001), "the mtime is untouched");
        assert_eq!(shown_mtime_ns(&a, 7), 5_000_000_001);
        a.meta.insert("atime".into(), "garbage".into());
        assert_eq!(
            shown_atime_ns(&a, 7),
            5_000_000_001,
            "a bad atime is ignored"
        );
    }

    #[test]
    fn modes() {
        let mut a = Attrs::default();
        assert_eq!(shown_perm(&a, false), 0o644);
        assert_eq!(shown_perm(&a, true), 0o755);
        a.set_mode(file_mode(0o755));
        assert_eq!(a.meta["mode"], "100755");
        assert_eq!(shown_perm(&a, false), 0o755);
        a.set_mode(dir_mode(0o700));
        assert_eq!(a.meta["mode"], "40700");
        assert_eq!(shown_perm(&a, true), 0o700);
    }
}
