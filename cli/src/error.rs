//! Every failure `oss` can report, turned into one line and an exit status in one place.

use std::fmt;
use std::io;

use oss_proto::{Error, NameError, WireError};

/// Exit status of every failure (clap's usage errors exit 2 on their own).
pub const EXIT_FAILURE: u8 = 1;

/// A failure with its final wording. `main` prints it as `oss: MSG` and exits with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub msg: String,
    pub code: u8,
}

impl CliError {
    pub fn new(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            code: EXIT_FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CliError {}

/// Our reader of stdout went away (`oss download x - | head`): exit 0 without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenPipe;

impl fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("broken pipe")
    }
}

impl std::error::Error for BrokenPipe {}

pub fn invalid_name(e: &NameError) -> CliError {
    CliError::new(format!("invalid name: {e}"))
}

/// Maps a client-library error to what the user reads.
///
/// `subject` is what the request was about (`alice/x`, `alice`, a server address; empty for
/// cluster-wide requests); `proxy` is the proxy's address.
pub fn describe(e: &Error, subject: &str, proxy: &str) -> CliError {
    let about = |m: String| {
        if subject.is_empty() {
            m
        } else {
            format!("{subject}: {m}")
        }
    };
    let msg = match e {
        Error::Remote(w) => match w {
            WireError::NotFound => format!("not found: {subject}"),
            WireError::InvalidName(n) => format!("invalid name: {n}"),
            // The client library words its own connect failures completely.
            WireError::Unavailable(s) if s.starts_with("cannot reach the proxy") => {
                strip_os_error(s)
            }
            WireError::Version { server, client } => format!(
                "the proxy at {proxy} speaks protocol version {server}, this oss speaks \
                 {client}: upgrade one of them"
            ),
            // The proxy words refusals completely, subject included.
            WireError::Refused(s) => strip_os_error(s),
            WireError::PermissionDenied(s) => format!("permission denied: {s}"),
            WireError::AuthFailed(s) => {
                format!("authentication failed at the proxy {proxy}: {s} (check your key file)")
            }
            w => about(w.to_string()),
        },
        Error::Io(io) => about(format!(
            "connection to the proxy at {proxy} failed: {}",
            io_msg(io)
        )),
        Error::Closed => about(format!(
            "the proxy at {proxy} closed the connection unexpectedly"
        )),
        Error::Timeout => about(format!("timed out talking to the proxy at {proxy}")),
        Error::Protocol(s) => about(format!("protocol error from the proxy at {proxy}: {s}")),
    };
    CliError::new(msg)
}

/// An I/O error's text without Rust's ` (os error N)` suffix: `No such file or directory`.
pub fn io_msg(e: &io::Error) -> String {
    strip_os_error(&e.to_string())
}

/// Drops a trailing ` (os error N)`: the number helps nobody reading the message.
fn strip_os_error(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" (os error ") {
        let tail = &rest[i + " (os error ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..i]);
        if digits > 0 && tail[digits..].starts_with(')') {
            rest = &tail[digits + 1..];
        } else {
            out.push_str(" (os error ");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// `cannot read PATH: REASON` and friends.
pub fn local(verb: &str, path: &std::path::Path, e: &io::Error) -> CliError {
    CliError::new(format!("cannot {verb} {}: {}", path.display(), io_msg(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::name::Part;

    const P: &str = "127.0.0.1:8080";

    fn msg(e: Error, subject: &str) -> String {
        describe(&e, subject, P).msg
    }

    #[test]
    fn not_found_names_the_object() {
        let e = describe(&Error::Remote(WireError::NotFound), "alice/x", P);
        assert_eq!(e.msg, "not found: alice/x");
        assert_eq!(e.code, 1);
    }

    #[test]
    fn remote_errors() {
        assert_eq!(
            msg(
                Error::Remote(WireError::InvalidName(NameError::Slash(Part::File))),
                "alice/x"
            ),
            "invalid name: file name may not contain '/'"
        );
        assert_eq!(
            msg(
                Error::Remote(WireError::Unavailable(
                    "cannot reach the proxy at 127.0.0.1:8080: Connection refused (os error 111)"
                        .into()
                )),
                "alice/x"
            ),
            "cannot reach the proxy at 127.0.0.1:8080: Connection refused"
        );
        assert_eq!(
            msg(
                Error::Remote(WireError::Unavailable("only 1 of 2 replicas".into())),
                "alice/x"
            ),
            "alice/x: unavailable: only 1 of 2 replicas"
        );
        assert_eq!(
            msg(Error::Remote(WireError::DiskFull), "alice/x"),
            "alice/x: disk full"
        );
        assert_eq!(
            msg(
                Error::Remote(WireError::Refused("unknown server".into())),
                ""
            ),
            "unknown server"
        );
        assert_eq!(
            msg(
                Error::Remote(WireError::Version {
                    server: 2,
                    client: 1
                }),
                ""
            ),
            "the proxy at 127.0.0.1:8080 speaks protocol version 2, this oss speaks 1: \
             upgrade one of them"
        );
    }

    #[test]
    fn local_errors() {
        assert_eq!(
            msg(Error::Closed, "alice/x"),
            "alice/x: the proxy at 127.0.0.1:8080 closed the connection unexpectedly"
        );
        assert_eq!(
            msg(Error::Timeout, ""),
            "timed out talking to the proxy at 127.0.0.1:8080"
        );
        assert_eq!(
            msg(
                Error::Io(io::Error::from_raw_os_error(libc::ECONNRESET)),
                ""
            ),
            "connection to the proxy at 127.0.0.1:8080 failed: Connection reset by peer"
        );
        assert!(msg(Error::Protocol("bad frame".into()), "").contains("bad frame"));
    }

    #[test]
    fn io_messages_drop_the_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_msg(&e), "No such file or directory");
        assert_eq!(
            local("read", std::path::Path::new("./nope"), &e).msg,
            "cannot read ./nope: No such file or directory"
        );
        let e = io::Error::other("custom");
        assert_eq!(io_msg(&e), "custom");
        assert_eq!(strip_os_error("x (os error )"), "x (os error )");
        assert_eq!(strip_os_error("x (os error 2)"), "x");
        assert_eq!(
            strip_os_error("a: refused (os error 111) (tried for 30 s)"),
            "a: refused (tried for 30 s)"
        );
    }
}
