//! Pure formatting: sizes, rates, times and aligned tables.

use oss_proto::Timestamp;

/// `512 B`, `1.5 KiB`, `3.0 GiB`: binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    // 1023.96 KiB would print as "1024.0 KiB"; move up a unit instead.
    if v >= 1023.95 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Throughput in decimal megabytes per second, as disks and networks are quoted.
pub fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "- MB/s".into();
    }
    format!("{:.1} MB/s", bytes as f64 / 1e6 / secs)
}

/// `850ms`, `1.25s`, `2m05s`, `3h02m`.
pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.2}s")
    } else if secs < 3600.0 {
        let s = secs as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let s = secs as u64;
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// µs since the epoch as UTC ISO-8601 to the second: `2026-11-25T12:00:00Z`.
pub fn iso_utc(micros: Timestamp) -> String {
    let secs = micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = oss_proto::wire::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// How long before `now` a µs timestamp was: `12s ago`, `5m ago`, `3h ago`, `2d ago`;
/// `never` for 0 (the wire's "not yet").
pub fn ago(now: Timestamp, then: Timestamp) -> String {
    if then == 0 {
        return "never".into();
    }
    // A clock a little ahead of ours is still "just now".
    let s = now.saturating_sub(then) / 1_000_000;
    match s {
        0 => "just now".into(),
        1..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `done/total (pct%)`, or just `done` while the total is unknown (0).
pub fn fraction(done: u64, total: u64) -> String {
    if total == 0 {
        format!("{done}")
    } else {
        format!(
            "{done}/{total} ({:.1}%)",
            done as f64 * 100.0 / total as f64
        )
    }
}

/// Column alignment in [`table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Rows as aligned columns separated by two spaces, each line ending in `\n`. The last
/// column is never padded (names may be long). Widths count chars, not bytes.
pub fn table(rows: &[Vec<String>], align: &[Align]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i] - c.chars().count();
            let last = i + 1 == r.len();
            match align.get(i).copied().unwrap_or(Align::Left) {
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                }
                Align::Left => {
                    line.push_str(c);
                    if !last {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(rate(10_000_000, 2.0), "5.0 MB/s");
        assert_eq!(rate(1, 0.0), "- MB/s");
        assert_eq!(duration(0.0123), "12ms");
        assert_eq!(duration(1.5), "1.50s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3.0 * 3600.0 + 120.0), "3h02m");
    }

    #[test]
    fn utc_times() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        // `date -u -d @1795608000` = Wed Nov 25 12:00:00 UTC 2026
        assert_eq!(iso_utc(1_795_608_000_000_000), "2026-11-25T12:00:00Z");
        // Leap day and the last second of a year.
        assert_eq!(iso_utc(951_782_400_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_704_067_199_999_999), "2023-12-31T23:59:59Z");
    }

    #[test]
    fn relative_times() {
        let now = 1_000_000_000_000_000;
        assert_eq!(ago(now, 0), "never");
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now, now + 5_000_000), "just now");
        assert_eq!(ago(now, now - 12_000_000), "12s ago");
        assert_eq!(ago(now, now - 300_000_000), "5m ago");
        assert_eq!(ago(now, now - 3 * 3_600_000_000), "3h ago");
        assert_eq!(ago(now, now - 2 * 86_400_000_000), "2d ago");
    }

    #[test]
    fn fractions() {
        assert_eq!(fraction(3, 0), "3");
        assert_eq!(fraction(1, 4), "1/4 (25.0%)");
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["5".to_string(), "a".into(), "x".into()],
            vec!["12345".to_string(), "bbb".into(), "long name".into()],
        ];
        let t = table(&rows, &[Align::Right, Align::Left, Align::Left]);
        assert_eq!(t, "    5  a    x\n12345  bbb  long name\n");
        assert_eq!(table(&[], &[]), "");
    }
}
