//! A hand-rolled transfer progress line on stderr, drawn only on a terminal and only for
//! transfers long enough to be worth watching.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::fmt;

/// Transfers known to be at least this large show progress from the start.
const BIG: u64 = 8 << 20;
/// Anything still running after this long shows progress too.
const SLOW: Duration = Duration::from_secs(1);
/// Redraw at most ~10 times a second: more flickers and costs syscalls for nothing.
const REDRAW: Duration = Duration::from_millis(100);

pub struct Bar {
    enabled: bool,
    label: String,
    total: Option<u64>,
    start: Instant,
    last_draw: Option<Instant>,
    done: u64,
}

impl Bar {
    /// `enabled` is normally "stderr is a terminal"; `total` is the size when known.
    pub fn new(enabled: bool, label: impl Into<String>, total: Option<u64>) -> Self {
        Bar {
            enabled,
            label: label.into(),
            total,
            start: Instant::now(),
            last_draw: None,
            done: 0,
        }
    }

    /// Called with the bytes moved so far.
    pub fn update(&mut self, done: u64) {
        self.done = done;
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let due = match self.last_draw {
            Some(t) => now.duration_since(t) >= REDRAW,
            None => {
                self.total.unwrap_or(done) >= BIG
                    || done >= BIG
                    || now.duration_since(self.start) >= SLOW
            }
        };
        if due {
            self.last_draw = Some(now);
            let line = render(
                &self.label,
                done,
                self.total,
                now.duration_since(self.start).as_secs_f64(),
            );
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        }
    }

    /// Clears the line; after a success that showed progress, leaves a one-line summary.
    pub fn finish(&mut self, ok: bool) {
        if self.last_draw.take().is_none() {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if ok {
            let _ = writeln!(
                err,
                "\r{}: {} in {} ({})\x1b[K",
                self.label,
                fmt::bytes(self.done),
                fmt::duration(secs),
                fmt::rate(self.done, secs)
            );
        } else {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = err.flush();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // An error path that forgot `finish` must not leave half a line before the message.
        self.finish(false);
    }
}

/// `alice/x  12.0 MiB / 40.0 MiB  30%  85.3 MB/s`
pub fn render(label: &str, done: u64, total: Option<u64>, secs: f64) -> String {
    let rate = fmt::rate(done, secs);
    match total {
        Some(t) if t > 0 => format!(
            "{label}  {} / {}  {:>3}%  {rate}",
            fmt::bytes(done),
            fmt::bytes(t),
            (done.min(t) * 100 / t)
        ),
        _ => format!("{label}  {}  {rate}", fmt::bytes(done)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_and_unknown_sizes() {
        assert_eq!(
            render("alice/x", 12 << 20, Some(48 << 20), 2.0),
            "alice/x  12.0 MiB / 48.0 MiB   25%  6.3 MB/s"
        );
        assert_eq!(
            render("alice/x", 3 << 20, None, 1.0),
            "alice/x  3.0 MiB  3.1 MB/s"
        );
    }

    #[test]
    fn disabled_bar_draws_nothing() {
        let mut b = Bar::new(false, "x", Some(1 << 30));
        b.update(1 << 29);
        assert!(b.last_draw.is_none());
    }
}
