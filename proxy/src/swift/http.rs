//! Pure pieces of the Swift door: paths, ranges, conditional requests, dates and
//! timestamps, metadata headers, content types. No I/O; unit-tested here.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::HeaderMap;
use oss_proto::wire::Timestamp;

use crate::containers::MetaUpdate;

/// The one account the door serves.
pub const ACCOUNT: &str = "AUTH_oss";

/// What a request's path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Info,
    Healthcheck,
    Auth,
    Account,
    Container(String),
    Object(String, String),
}

/// Why a path was refused: Swift's status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not UTF-8 once decoded, or holds NUL: 412.
    Encoding,
    /// `/v1` alone: 412.
    VersionOnly,
    /// Another account than [`ACCOUNT`] (named in a `WWW-Authenticate` realm): 401.
    OtherAccount(String),
    /// Nothing the door serves: 404.
    NotFound,
}

/// Decodes `%XX` escapes of a path or query component.
pub fn percent_decode(s: &str) -> Result<String, PathError> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
    let text = String::from_utf8(bytes).map_err(|_| PathError::Encoding)?;
    if text.contains('\0') {
        return Err(PathError::Encoding);
    }
    Ok(text)
}

/// Parses a request path (still percent-encoded): `/v1/AUTH_oss[/CONTAINER[/OBJECT]]`,
/// `/auth/v1.0`, `/info`, `/healthcheck`.
pub fn parse_path(raw: &str) -> Result<Target, PathError> {
    match raw {
        "/info" => return Ok(Target::Info),
        "/healthcheck" => return Ok(Target::Healthcheck),
        "/auth/v1.0" | "/auth/v1.0/" | "/v1.0" | "/auth/v1" => return Ok(Target::Auth),
        _ => {}
    }
    let path = percent_decode(raw)?;
    let rest = match path.strip_prefix("/v1") {
        Some("") | Some("/") => return Err(PathError::VersionOnly),
        Some(r) if r.starts_with('/') => &r[1..],
        _ => return Err(PathError::NotFound),
    };
    let (account, rest) = match rest.split_once('/') {
        Some((a, r)) => (a, Some(r)),
        None => (rest, None),
    };
    if account != ACCOUNT {
        return Err(PathError::OtherAccount(account.to_owned()));
    }
    let Some(rest) = rest.filter(|r| !r.is_empty()) else {
        return Ok(Target::Account);
    };
    match rest.split_once('/') {
        None => Ok(Target::Container(rest.to_owned())),
        Some((c, "")) => Ok(Target::Container(c.to_owned())),
        Some((c, o)) => Ok(Target::Object(c.to_owned(), o.to_owned())),
    }
}

/// The query string's parameters, decoded (`+` is a space, as in forms). Values may hold
/// NUL (a listing marker `NAME%00` is how a client says "from just after NAME").
pub fn parse_query(q: Option<&str>) -> Result<BTreeMap<String, String>, PathError> {
    let decode = |s: &str| {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(&s.replace('+', " ")).collect();
        String::from_utf8(bytes).map_err(|_| PathError::Encoding)
    };
    let mut out = BTreeMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

/// A listing's exclusive lower bound as oss's listings take it: no name holds NUL, so
/// "after `x\0…`" is "after `x`".
pub fn lower_bound(marker: &str) -> String {
    marker.split('\0').next().unwrap_or("").to_owned()
}

/// A listing's exclusive upper bound: "before `x\0…`" is "up to `x` included", that is
/// "before `x\u{1}`".
pub fn upper_bound(end: &str) -> String {
    match end.split_once('\0') {
        Some((head, _)) => format!("{head}\u{1}"),
        None => end.to_owned(),
    }
}

/// One byte range, resolved against an object's size: `start..start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
}

impl Span {
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.start + self.len - 1)
    }
}

/// A `Range` header against an object of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range, or one Swift ignores (malformed, not `bytes`): the whole object, 200.
    Whole,
    /// 206 with these spans (one: `Content-Range`; more: `multipart/byteranges`).
    Partial(Vec<Span>),
    /// 416.
    Unsatisfiable,
}

/// At most this many ranges in one request, as Swift allows.
const MAX_RANGES: usize = 100;

/// Parses `bytes=a-b,c-,-n` as Swift does: a malformed header is ignored, spans that
/// start past the end are dropped, and none left is 416.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(h) = header else {
        return RangeAnswer::Whole;
    };
    let Some((unit, specs)) = h.split_once('=') else {
        return RangeAnswer::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAnswer::Whole;
    }
    let mut raw = Vec::new();
    for spec in specs.split(',') {
        let spec = spec.trim();
        let Some((a, b)) = spec.split_once('-') else {
            return RangeAnswer::Whole;
        };
        let (a, b) = (a.trim(), b.trim());
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        };
        let r = match (a.is_empty(), b.is_empty()) {
            (true, true) => return RangeAnswer::Whole,
            // Suffix: the last n bytes.
            (true, false) => match num(b) {
                Some(n) => (None, Some(n)),
                None => return RangeAnswer::Whole,
            },
            (false, true) => match num(a) {
                Some(s) => (Some(s), None),
                None => return RangeAnswer::Whole,
            },
            (false, false) => match (num(a), num(b)) {
                (Some(s), Some(e)) if s <= e => (Some(s), Some(e)),
                _ => return RangeAnswer::Whole,
            },
        };
        raw.push(r);
    }
    if raw.is_empty() || raw.len() > MAX_RANGES {
        return RangeAnswer::Whole;
    }
    let mut spans = Vec::new();
    for r in raw {
        let span = match r {
            (None, Some(n)) => {
                if n == 0 || size == 0 {
                    continue;
                }
                let n = n.min(size);
                Span {
                    start: size - n,
                    len: n,
                }
            }
            (Some(s), e) => {
                if s >= size {
                    continue;
                }
                let end = e.unwrap_or(size - 1).min(size - 1);
                Span {
                    start: s,
                    len: end - s + 1,
                }
            }
            (None, None) => unreachable!("rejected above"),
        };
        spans.push(span);
    }
    if spans.is_empty() {
        RangeAnswer::Unsatisfiable
    } else {
        RangeAnswer::Partial(spans)
    }
}

/// What the conditional headers of a GET or HEAD say about the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Proceed,
    /// 304.
    NotModified,
    /// 412.
    Failed,
}

/// True if an `If-Match`/`If-None-Match` list names `etag` (or is `*`).
fn etag_listed(list: &str, etag: &str) -> bool {
    list.split(',').any(|t| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t.trim_matches('"') == etag
    })
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since`
/// as Swift does, for a version with `etag` last modified at `modified` (whole seconds, as
/// `Last-Modified` says it): either precondition failing is 412 (Swift checks
/// `If-Unmodified-Since` even beside a matching `If-Match`), then `If-None-Match` (or,
/// without it, `If-Modified-Since`) may make it 304.
pub fn evaluate_conditions(headers: &HeaderMap, etag: &str, modified: SystemTime) -> Condition {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if get("if-match").is_some_and(|m| !etag_listed(m, etag)) {
        return Condition::Failed;
    }
    if let Some(t) = get("if-unmodified-since").and_then(parse_http_date) {
        if modified > t {
            return Condition::Failed;
        }
    }
    if let Some(m) = get("if-none-match") {
        if etag_listed(m, etag) {
            return Condition::NotModified;
        }
    } else if let Some(t) = get("if-modified-since").and_then(parse_http_date) {
        if modified <= t {
            return Condition::NotModified;
        }
    }
    Condition::Proceed
}

pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

/// A version's time as `Last-Modified` gives it: rounded up to a whole second, as Swift.
pub fn last_modified(ts: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(ts.div_ceil(1_000_000))
}

pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Swift's `X-Timestamp`: seconds with five decimals (`1700000000.12345`).
pub fn x_timestamp(ts: Timestamp) -> String {
    format!("{}.{:05}", ts / 1_000_000, (ts % 1_000_000) / 10)
}

/// A listing's `last_modified`: ISO 8601 in UTC with microseconds, no zone
/// (`2024-01-02T03:04:05.123456`), as Swift writes it.
pub fn iso_time(ts: Timestamp) -> String {
    let secs = ts / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = oss_proto::wire::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ts % 1_000_000
    )
}

/// Why a metadata header was refused: 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader(pub String);

/// A header value as text (UTF-8; Swift passes its bytes through, oss keeps text).
pub fn header_text(v: &hyper::header::HeaderValue) -> Result<String, BadHeader> {
    String::from_utf8(v.as_bytes().to_vec())
        .map_err(|_| BadHeader("Header values must be UTF-8".into()))
}

/// The `X-{kind}-Meta-*` headers of a request (`kind` is `object`, `container` or
/// `account`) as a metadata update: names lower-cased without the prefix, values as sent;
/// `X-Remove-{kind}-Meta-NAME` removes (and an empty value does too, for containers and
/// the account).
pub fn meta_update(headers: &HeaderMap, kind: &str) -> Result<MetaUpdate, BadHeader> {
    let prefix = format!("x-{kind}-meta-");
    let remove = format!("x-remove-{kind}-meta-");
    let mut u = MetaUpdate::default();
    for (name, value) in headers {
        let n = name.as_str();
        if let Some(k) = n.strip_prefix(&prefix) {
            if k.is_empty() {
                return Err(BadHeader("Metadata name cannot be empty".into()));
            }
            u.set
                .insert(k.to_owned(), header_text(value)?.trim().to_owned());
        } else if let Some(k) = n.strip_prefix(&remove) {
            if !k.is_empty() {
                u.remove.push(k.to_owned());
            }
        }
    }
    Ok(u)
}

/// `x-object-meta-foo-bar` → `X-Object-Meta-Foo-Bar`, as Swift answers header names.
pub fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = true;
    for c in name.chars() {
        if up {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        up = c == '-';
    }
    out
}

/// The content type Swift guesses from an object name's extension, when the writer gave
/// none (`application/octet-stream` for the rest).
pub fn guess_content_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, e)) if !e.contains('/') => e.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "txt" | "text" | "log" | "conf" | "cfg" | "ini" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "xml" => "text/xml",
        "md" => "text/markdown",
        "js" | "mjs" => "application/javascript",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "bz2" => "application/x-bzip2",
        "xz" => "application/x-xz",
        "7z" => "application/x-7z-compressed",
        "wav" => "audio/x-wav",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "png" => "image/png",
        "jpg" | "jpeg" | "jpe" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "ico" => "image/vnd.microsoft.icon",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "sh" => "application/x-sh",
        "py" => "text/x-python",
        "c" | "h" => "text/x-c",
        "rs" => "text/rust",
        "doc" => "application/msword",
        "xls" => "application/vnd.ms-excel",
        "ppt" => "application/vnd.ms-powerpoint",
        "odt" => "application/vnd.oasis.opendocument.text",
        "bin" | "exe" | "so" | "o" => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

/// An `ETag` request header as an MD5: 32 hex digits, quotes allowed. `None` for any other
/// form (which then cannot match, so the upload is refused with 422).
pub fn parse_etag(v: &str) -> Option<[u8; 16]> {
    let t = v.trim().trim_matches('"');
    if t.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The characters left as they are in a `Content-Disposition`-free header value that
/// names a path (`X-Copied-From`): Swift quotes everything else.
const PATH_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn quote_path(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SAFE).to_string()
}

/// A copy's source or destination header: `CONTAINER/OBJECT`, with or without a leading
/// '/', percent-encoded.
pub fn parse_copy_path(v: &hyper::header::HeaderValue) -> Option<(String, String)> {
    let v = header_text(v).ok()?;
    let d = percent_decode(v.trim()).ok()?;
    let d = d.strip_prefix('/').unwrap_or(&d);
    let (c, o) = d.split_once('/')?;
    if c.is_empty() || o.is_empty() {
        return None;
    }
    Some((c.to_owned(), o.to_owned()))
}

/// Escapes text for XML listings.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("/info"), Ok(Target::Info));
        assert_eq!(parse_path("/auth/v1.0"), Ok(Target::Auth));
        assert_eq!(parse_path("/v1/AUTH_oss"), Ok(Target::Account));
        assert_eq!(parse_path("/v1/AUTH_oss/"), Ok(Target::Account));
        assert_eq!(
            parse_path("/v1/AUTH_oss/alice"),
            Ok(Target::Container("alice".into()))
        );
        assert_eq!(
            parse_path("/v1/AUTH_oss/alice/"),
            Ok(Target::Container("alice".into()))
        );
        assert_eq!(
            parse_path("/v1/AUTH_oss/alice/photos/cat%20x.jpg"),
            Ok(Target::Object("alice".into(), "photos/cat x.jpg".into()))
        );
        assert_eq!(parse_path("/v1"), Err(PathError::VersionOnly));
        assert_eq!(parse_path("/v1/"), Err(PathError::VersionOnly));
        assert_eq!(parse_path("/v1/AUTH_oss/a%00b"), Err(PathError::Encoding));
        assert_eq!(parse_path("/v1/AUTH_oss/%ff%fe"), Err(PathError::Encoding));
        assert_eq!(
            parse_path("/v1/AUTH_x/c"),
            Err(PathError::OtherAccount("AUTH_x".into()))
        );
        assert_eq!(parse_path("/"), Err(PathError::NotFound));
        assert_eq!(parse_path("/v2/AUTH_oss"), Err(PathError::NotFound));
    }

    #[test]
    fn queries() {
        let q = parse_query(Some("format=json&prefix=a%2Fb&marker=x+y&reverse")).unwrap();
        assert_eq!(q["format"], "json");
        assert_eq!(q["prefix"], "a/b");
        assert_eq!(q["marker"], "x y");
        assert_eq!(q["reverse"], "");
        assert!(parse_query(Some("prefix=%ff")).is_err());
        assert_eq!(parse_query(Some("marker=a%00")).unwrap()["marker"], "a\0");
        assert_eq!(lower_bound("a\0zz"), "a");
        assert_eq!(upper_bound("a\0"), "a\u{1}");
        assert_eq!(upper_bound("b"), "b");
    }

    fn partial(v: &[(u64, u64)]) -> RangeAnswer {
        RangeAnswer::Partial(v.iter().map(|&(start, len)| Span { start, len }).collect())
    }

    #[test]
    fn ranges_as_swift_reads_them() {
        assert_eq!(parse_range(None, 10), RangeAnswer::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), partial(&[(0, 5)]));
        assert_eq!(parse_range(Some("bytes=5-"), 10), partial(&[(5, 5)]));
        assert_eq!(parse_range(Some("bytes=-3"), 10), partial(&[(7, 3)]));
        assert_eq!(parse_range(Some("bytes=-30"), 10), partial(&[(0, 10)]));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), partial(&[(8, 2)]));
        assert_eq!(
            parse_range(Some("bytes=0-1, 4-5"), 10),
            partial(&[(0, 2), (4, 2)])
        );
        assert_eq!(parse_range(Some("bytes= 1 - 2 "), 10), partial(&[(1, 2)]));
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeAnswer::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 10),
            RangeAnswer::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=20-30,1-2"), 10), partial(&[(1, 2)]));
        // Malformed: ignored.
        for bad in [
            "parsecs=8-12",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "0-4",
        ] {
            assert_eq!(parse_range(Some(bad), 10), RangeAnswer::Whole, "{bad}");
        }
        assert_eq!(Span { start: 2, len: 3 }.content_range(10), "bytes 2-4/10");
    }

    #[test]
    fn conditions_in_rfc_order() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let before = http_date(t - Duration::from_secs(10));
        let same = http_date(t);
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        let e = "0123";
        let ev = |pairs: &[(&'static str, &str)]| evaluate_conditions(&h(pairs), e, t);
        assert_eq!(ev(&[]), Condition::Proceed);
        assert_eq!(ev(&[("if-match", "\"0123\"")]), Condition::Proceed);
        assert_eq!(ev(&[("if-match", "x, 0123")]), Condition::Proceed);
        assert_eq!(ev(&[("if-match", "*")]), Condition::Proceed);
        assert_eq!(ev(&[("if-match", "x")]), Condition::Failed);
        assert_eq!(ev(&[("if-none-match", "0123")]), Condition::NotModified);
        assert_eq!(ev(&[("if-none-match", "x")]), Condition::Proceed);
        assert_eq!(ev(&[("if-modified-since", &same)]), Condition::NotModified);
        assert_eq!(ev(&[("if-modified-since", &before)]), Condition::Proceed);
        assert_eq!(ev(&[("if-unmodified-since", &before)]), Condition::Failed);
        assert_eq!(ev(&[("if-unmodified-since", &same)]), Condition::Proceed);
        // Both preconditions count; If-None-Match wins over If-Modified-Since.
        assert_eq!(
            ev(&[("if-match", "0123"), ("if-unmodified-since", &before)]),
            Condition::Failed
        );
        assert_eq!(
            ev(&[("if-match", "0123"), ("if-unmodified-since", &same)]),
            Condition::Proceed
        );
        assert_eq!(
            ev(&[("if-none-match", "x"), ("if-modified-since", &same)]),
            Condition::Proceed
        );
        // A date that does not parse is ignored.
        assert_eq!(
            ev(&[("if-modified-since", "yesterday")]),
            Condition::Proceed
        );
    }

    #[test]
    fn times() {
        assert_eq!(x_timestamp(1_700_000_000_123_456), "1700000000.12345");
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000000");
        assert_eq!(iso_time(951_782_400_000_001), "2000-02-29T00:00:00.000001");
        assert_eq!(
            iso_time(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456"
        );
        assert_eq!(
            last_modified(1_000_001),
            UNIX_EPOCH + Duration::from_secs(2)
        );
        assert_eq!(
            last_modified(2_000_000),
            UNIX_EPOCH + Duration::from_secs(2)
        );
    }

    #[test]
    fn metadata_headers() {
        let mut m = HeaderMap::new();
        m.insert("x-object-meta-color", " red ".parse().unwrap());
        m.insert("x-remove-object-meta-size", "x".parse().unwrap());
        m.insert("content-type", "text/plain".parse().unwrap());
        let u = meta_update(&m, "object").unwrap();
        assert_eq!(u.set.get("color").map(String::as_str), Some("red"));
        assert_eq!(u.remove, vec!["size".to_string()]);
        let mut bad = HeaderMap::new();
        bad.insert("x-object-meta-", "v".parse().unwrap());
        assert!(meta_update(&bad, "object").is_err());
        assert_eq!(title_case("x-object-meta-foo-bar"), "X-Object-Meta-Foo-Bar");
    }

    #[test]
    fn small_helpers() {
        assert_eq!(guess_content_type("a/b.WAV"), "audio/x-wav");
        assert_eq!(guess_content_type("x.txt"), "text/plain");
        assert_eq!(guess_content_type("a.d/b"), "application/octet-stream");
        let md5 = parse_etag("\"d41d8cd98f00b204e9800998ecf8427e\"").unwrap();
        assert_eq!(
            oss_proto::name::hex(&md5),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(parse_etag("xyz"), None);
        let cp = |s: &str| {
            parse_copy_path(&hyper::header::HeaderValue::from_bytes(s.as_bytes()).unwrap())
        };
        assert_eq!(cp("/c/a%20b/c"), Some(("c".into(), "a b/c".into())));
        assert_eq!(cp("c/é"), Some(("c".into(), "é".into())));
        assert_eq!(cp("c"), None);
        assert_eq!(cp("/c/"), None);
        assert_eq!(xml_escape("a<&>\"'"), "a&lt;&amp;&gt;&quot;&apos;");
        assert_eq!(quote_path("c/a b"), "c/a%20b");
    }
}
