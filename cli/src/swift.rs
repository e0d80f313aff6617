//! A small OpenStack Swift client over HTTP/1.1 (hyper), enough for `oss bench --swift`:
//! tempauth (v1) login, container PUT, object PUT/GET/DELETE and JSON container listings.
//!
//! The same client drives oss's own door (`oss-proxy --http`) and a real Swift, so the two
//! can be compared with one workload. A [`Session`] owns one keep-alive connection
//! (TCP_NODELAY on), opened when first used and opened again if the server closes it; bodies
//! are streamed both ways (a large upload is read from its source as it is sent, a download
//! is counted, hashed and dropped), so memory stays bounded whatever the object's size.
//! Every transfer is checked: an upload's ETag must be the MD5 of what was sent, a
//! download's bytes must match its Content-Length and ETag.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// Size of each body chunk read from an upload's source.
pub const CHUNK: usize = oss_proto::wire::CHUNK;

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of an unexpected response's body kept for the error message.
const ERROR_BODY_MAX: usize = 300;

const USER_AGENT: &str = concat!("oss-bench/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum SwiftError {
    #[error("invalid URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("cannot connect to {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{what}: {status}{}", detail(.body))]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("authentication at {url} failed: {why}")]
    Auth { url: String, why: String },
    #[error("{what}: ETag {etag:?}, but the MD5 of the body is {md5}")]
    Etag {
        what: String,
        etag: String,
        md5: String,
    },
    #[error("{what}: {got} body bytes, Content-Length said {want}")]
    Length { what: String, got: u64, want: u64 },
    #[error("{what}: not a JSON listing: {why}")]
    Listing { what: String, why: String },
    #[error("{what}: {why}")]
    Request { what: String, why: String },
    #[error("cannot read what to upload: {0}")]
    Source(io::Error),
}

fn detail(body: &str) -> String {
    let b = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if b.is_empty() {
        String::new()
    } else {
        format!(" ({b})")
    }
}

pub type Result<T> = std::result::Result<T, SwiftError>;

/// An `http://` URL split into what a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` to connect to (port 80 when the URL has none).
    pub addr: String,
    /// The authority as written, for the Host header.
    pub host: String,
    /// The path, without a trailing '/' ("" for the root); already percent-encoded.
    pub path: String,
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host, self.path)
    }
}

/// Parses `http://HOST[:PORT][/PATH]` (no https, no user info; a query is dropped).
pub fn parse_http_url(url: &str) -> Result<HttpUrl> {
    let bad = |why| SwiftError::Url {
        url: url.to_owned(),
        why,
    };
    let t = url.trim();
    let rest = match t.get(..7) {
        Some(s) if s.eq_ignore_ascii_case("http://") => &t[7..],
        _ if t.len() >= 8 && t[..8].eq_ignore_ascii_case("https://") => {
            return Err(bad("https is not supported (plain http only)"))
        }
        _ => return Err(bad("expected http://HOST[:PORT]/PATH")),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains('@') {
        return Err(bad("user info in the URL is not supported"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("bad host"));
    }
    // The port, if any, follows the last ':' outside an IPv6 literal's brackets.
    let port_at = match host.rfind(']') {
        Some(b) => host[b..].find(':').map(|i| b + i),
        None => host.rfind(':'),
    };
    let addr = match port_at {
        Some(i) => {
            let port = &host[i + 1..];
            match port.parse::<u16>() {
                Ok(p) if p != 0 => host.to_owned(),
                _ if port.is_empty() => format!("{}80", host),
                _ => return Err(bad("bad port")),
            }
        }
        None => format!("{host}:80"),
    };
    if host.starts_with('[') != host.contains(']') {
        return Err(bad("bad IPv6 literal"));
    }
    Ok(HttpUrl {
        addr,
        host: host.to_owned(),
        path: path.trim_end_matches('/').to_owned(),
    })
}

/// Percent-encodes `s` for a URL path, as python-swiftclient does (`quote(s, safe='/')`
/// when `keep_slash`): everything but ASCII letters, digits, `-._~` (and '/') is escaped.
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query of a container listing: `format=json`, then `limit`, `marker` and `prefix` when
/// given, each value percent-encoded.
pub fn listing_query(limit: Option<u64>, marker: Option<&str>, prefix: Option<&str>) -> String {
    let mut q = String::from("format=json");
    if let Some(l) = limit {
        q.push_str(&format!("&limit={l}"));
    }
    if let Some(m) = marker {
        q.push_str("&marker=");
        q.push_str(&encode(m, false));
    }
    if let Some(p) = prefix {
        q.push_str("&prefix=");
        q.push_str(&encode(p, false));
    }
    q
}

/// The names in a JSON listing page, in order: each entry's `name`, or `subdir` for a
/// delimiter's pseudo-directory.
pub fn listing_names(body: &[u8]) -> std::result::Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let arr = v.as_array().ok_or("not a JSON array")?;
    arr.iter()
        .map(|e| {
            e.get("name")
                .or_else(|| e.get("subdir"))
                .and_then(|n| n.as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("an entry without a name: {e}"))
        })
        .collect()
}

/// An ETag header's value as a bare lowercase hex digest (Swift may quote it).
pub fn etag_hex(v: &str) -> String {
    v.trim().trim_matches('"').to_ascii_lowercase()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The account a login reached: where its containers live, and the token that opens it.
#[derive(Debug, Clone)]
pub struct Account {
    pub storage: HttpUrl,
    pub token: HeaderValue,
}

impl Account {
    pub fn container_path(&self, container: &str) -> String {
        format!("{}/{}", self.storage.path, encode(container, false))
    }

    pub fn object_path(&self, container: &str, object: &str) -> String {
        format!(
            "{}/{}/{}",
            self.storage.path,
            encode(container, false),
            encode(object, true)
        )
    }
}

/// Logs in the tempauth way (`GET AUTH_URL` with X-Auth-User and X-Auth-Key) and returns the
/// storage URL and token the server answered.
pub async fn authenticate(auth_url: &str, user: &str, key: &str) -> Result<Account> {
    let url = parse_http_url(auth_url)?;
    let bad = |why: String| SwiftError::Auth {
        url: url.to_string(),
        why,
    };
    let hv = |s: &str, what: &str| {
        HeaderValue::from_str(s).map_err(|_| bad(format!("the {what} is not a valid header")))
    };
    let headers = [
        (HeaderName::from_static("x-auth-user"), hv(user, "user")?),
        (HeaderName::from_static("x-auth-key"), hv(key, "key")?),
    ];
    let path = if url.path.is_empty() { "/" } else { &url.path };
    let mut conn = Conn::new(&url);
    let resp = conn
        .send(Method::GET, path, &headers, ReqBody::Empty)
        .await?;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let text = read_small(body, ERROR_BODY_MAX, "the login").await?;
    if !status.is_success() {
        return Err(bad(format!("{status}{}", detail(&text))));
    }
    let get = |name: &str| {
        parts
            .headers
            .get(name)
            .ok_or_else(|| bad(format!("{status} without {name}")))
    };
    let token = get("x-auth-token")
        .or_else(|_| get("x-storage-token"))?
        .clone();
    let storage = get("x-storage-url")?
        .to_str()
        .map_err(|_| bad("X-Storage-Url is not text".into()))?;
    Ok(Account {
        storage: parse_http_url(storage)?,
        token,
    })
}

/// An upload's source: bytes in memory, or a reader of exactly `len` bytes streamed as sent.
pub enum Upload {
    Bytes(Bytes),
    Reader {
        reader: Box<dyn AsyncRead + Send + Unpin>,
        len: u64,
    },
}

impl Upload {
    pub fn len(&self) -> u64 {
        match self {
            Upload::Bytes(b) => b.len() as u64,
            Upload::Reader { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The body of a request: nothing, one buffer (written with the headers), or a stream that
/// hashes what it hands out.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Stream(StreamBody),
}

impl ReqBody {
    /// A copy to send again on a new connection, if the body can be replayed.
    fn replay(&self) -> Option<ReqBody> {
        match self {
            ReqBody::Empty => Some(ReqBody::Empty),
            ReqBody::Full(b) => b.clone().map(|b| ReqBody::Full(Some(b))),
            ReqBody::Stream(_) => None,
        }
    }

    fn len(&self) -> u64 {
        match self {
            ReqBody::Empty | ReqBody::Full(None) => 0,
            ReqBody::Full(Some(b)) => b.len() as u64,
            ReqBody::Stream(s) => s.left,
        }
    }
}

/// Reads its source in [`CHUNK`]s, feeding each to a shared MD5 as it leaves.
pub struct StreamBody {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    left: u64,
    buf: Vec<u8>,
    md5: Arc<Mutex<Md5>>,
}

impl StreamBody {
    pub fn new(reader: Box<dyn AsyncRead + Send + Unpin>, len: u64, md5: Arc<Mutex<Md5>>) -> Self {
        StreamBody {
            reader,
            left: len,
            buf: Vec::new(),
            md5,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, io::Error>>> {
        let s = match self.get_mut() {
            ReqBody::Empty => return Poll::Ready(None),
            ReqBody::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream(s) => s,
        };
        if s.left == 0 {
            return Poll::Ready(None);
        }
        let want = s.left.min(CHUNK as u64) as usize;
        if s.buf.len() != want {
            s.buf = vec![0; want];
        }
        let mut rb = ReadBuf::new(&mut s.buf);
        match Pin::new(&mut s.reader).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the source ended {} bytes early", s.left),
                    ))));
                }
                let mut chunk = std::mem::take(&mut s.buf);
                chunk.truncate(n);
                s.md5.lock().expect("md5 lock").update(&chunk);
                s.left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

/// Reads a small body whole (at most `max` bytes kept, the rest read and dropped, so the
/// connection stays usable).
async fn read_small(mut body: Incoming, max: usize, what: &str) -> Result<String> {
    let mut kept = Vec::new();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|source| SwiftError::Http {
            what: what.to_owned(),
            source,
        })?;
        if let Ok(d) = f.into_data() {
            let room = max.saturating_sub(kept.len());
            kept.extend_from_slice(&d[..d.len().min(room)]);
        }
    }
    Ok(String::from_utf8_lossy(&kept).into_owned())
}

/// One keep-alive HTTP/1.1 connection, opened on first use and again after the server
/// closed it.
pub struct Conn {
    addr: String,
    host: HeaderValue,
    sender: Option<SendRequest<ReqBody>>,
    /// Connections opened so far.
    pub opened: usize,
}

impl Conn {
    pub fn new(url: &HttpUrl) -> Self {
        Conn {
            addr: url.addr.clone(),
            host: HeaderValue::from_str(&url.host).unwrap_or(HeaderValue::from_static("localhost")),
            sender: None,
            opened: 0,
        }
    }

    async fn connect(&mut self) -> Result<SendRequest<ReqBody>> {
        let addr = self.addr.clone();
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(t)) => t,
            Ok(Err(source)) => return Err(SwiftError::Connect { addr, source }),
            Err(_) => return Err(SwiftError::ConnectTimeout { addr }),
        };
        tcp.set_nodelay(true)
            .map_err(|source| SwiftError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| SwiftError::Http {
                what: format!("HTTP handshake with {addr}"),
                source,
            })?;
        tokio::spawn(async move {
            // Its end (a close by the server, an error) shows in the next send.
            let _ = conn.await;
        });
        self.opened += 1;
        Ok(sender)
    }

    /// Sends one request and returns the response with its body unread. A request that
    /// finds a kept connection closed under it goes again on a new one when its body can
    /// be replayed.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        let what = || format!("{method} {path_and_query}");
        let mut body = Some(body);
        loop {
            let reused = match &mut self.sender {
                Some(s) => s.ready().await.is_ok(),
                None => false,
            };
            if !reused {
                self.sender = Some(self.connect().await?);
            }
            let sender = self.sender.as_mut().expect("just set");
            let b = body.take().expect("a body for each try");
            let again = if reused { b.replay() } else { None };
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(header::HOST, self.host.clone())
                .header(header::USER_AGENT, USER_AGENT);
            if !matches!(method, Method::GET | Method::HEAD | Method::DELETE) {
                req = req.header(header::CONTENT_LENGTH, b.len());
            }
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let req = req.body(b).map_err(|e| SwiftError::Request {
                what: what(),
                why: e.to_string(),
            })?;
            match sender.send_request(req).await {
                Ok(r) => return Ok(r),
                Err(e) if again.is_some() && (e.is_canceled() || e.is_incomplete_message()) => {
                    self.sender = None;
                    body = again;
                }
                Err(source) => {
                    self.sender = None;
                    return Err(SwiftError::Http {
                        what: what(),
                        source,
                    });
                }
            }
        }
    }
}

/// What a GET moved: the body's length and its MD5 (hex), checked against the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub bytes: u64,
    pub md5: String,
}

/// A logged-in connection to one account.
pub struct Session {
    pub conn: Conn,
    pub account: Arc<Account>,
}

impl Session {
    pub fn new(account: Arc<Account>) -> Self {
        Session {
            conn: Conn::new(&account.storage),
            account,
        }
    }

    fn auth(&self) -> [(HeaderName, HeaderValue); 1] {
        [(
            HeaderName::from_static("x-auth-token"),
            self.account.token.clone(),
        )]
    }

    /// Sends a request with the token; answers the response if its status is one of `ok`,
    /// else reads the body into the error.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: ReqBody,
        ok: &[StatusCode],
    ) -> Result<Response<Incoming>> {
        let what = format!("{method} {path}");
        let h = self.auth();
        let resp = self.conn.send(method, path, &h, body).await?;
        if ok.contains(&resp.status()) {
            return Ok(resp);
        }
        let status = resp.status();
        let body = read_small(resp.into_body(), ERROR_BODY_MAX, &what).await?;
        Err(SwiftError::Status { what, status, body })
    }

    /// Creates a container (201), or finds it there (202).
    pub async fn put_container(&mut self, container: &str) -> Result<StatusCode> {
        let path = self.account.container_path(container);
        let resp = self
            .call(
                Method::PUT,
                &path,
                ReqBody::Full(None),
                &[StatusCode::CREATED, StatusCode::ACCEPTED],
            )
            .await?;
        let status = resp.status();
        read_small(resp.into_body(), 0, &path).await?;
        Ok(status)
    }

    /// Uploads an object (201) and checks the ETag the server answered against the MD5 of
    /// what was sent. Returns the bytes sent.
    pub async fn put_object(&mut self, container: &str, object: &str, up: Upload) -> Result<u64> {
        let path = self.account.object_path(container, object);
        let what = || format!("PUT {path}");
        let len = up.len();
        let (body, hashed) = match up {
            Upload::Bytes(b) => {
                let md5 = hex(&Md5::digest(&b));
                (ReqBody::Full(Some(b)), Hashed::Known(md5))
            }
            Upload::Reader { reader, len } => {
                let h = Arc::new(Mutex::new(Md5::new()));
                let body = ReqBody::Stream(StreamBody::new(reader, len, h.clone()));
                (body, Hashed::Shared(h))
            }
        };
        let resp = self
            .call(Method::PUT, &path, body, &[StatusCode::CREATED])
            .await?;
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(etag_hex);
        read_small(resp.into_body(), 0, &path).await?;
        // A 201 comes only after the server has read the whole body, so every chunk has been
        // hashed by now.
        let md5 = match hashed {
            Hashed::Known(m) => m,
            Hashed::Shared(h) => hex(&h.lock().expect("md5 lock").clone().finalize()),
        };
        match etag {
            Some(e) if e == md5 => Ok(len),
            Some(etag) => Err(SwiftError::Etag {
                what: what(),
                etag,
                md5,
            }),
            None => Err(SwiftError::Request {
                what: what(),
                why: "201 without an ETag".into(),
            }),
        }
    }

    /// Downloads an object (200), counting, hashing and dropping its bytes; checks them
    /// against Content-Length and the ETag.
    pub async fn get_object(&mut self, container: &str, object: &str) -> Result<Got> {
        let path = self.account.object_path(container, object);
        let what = format!("GET {path}");
        let resp = self
            .call(Method::GET, &path, ReqBody::Empty, &[StatusCode::OK])
            .await?;
        let h = resp.headers();
        let want = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let etag = h
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(etag_hex);
        let mut body = resp.into_body();
        let mut md5 = Md5::new();
        let mut got = 0u64;
        while let Some(f) = body.frame().await {
            let f = f.map_err(|source| SwiftError::Http {
                what: what.clone(),
                source,
            })?;
            if let Ok(d) = f.into_data() {
                md5.update(&d);
                got += d.len() as u64;
            }
        }
        if let Some(want) = want.filter(|w| *w != got) {
            return Err(SwiftError::Length { what, got, want });
        }
        let md5 = hex(&md5.finalize());
        match etag {
            Some(e) if e == md5 => Ok(Got { bytes: got, md5 }),
            Some(etag) => Err(SwiftError::Etag { what, etag, md5 }),
            None => Err(SwiftError::Request {
                what,
                why: "200 without an ETag".into(),
            }),
        }
    }

    /// Deletes an object: true when it was there (204), false when it was not (404).
    pub async fn delete_object(&mut self, container: &str, object: &str) -> Result<bool> {
        let path = self.account.object_path(container, object);
        let resp = self
            .call(
                Method::DELETE,
                &path,
                ReqBody::Empty,
                &[
                    StatusCode::NO_CONTENT,
                    StatusCode::OK,
                    StatusCode::NOT_FOUND,
                ],
            )
            .await?;
        let found = resp.status() != StatusCode::NOT_FOUND;
        read_small(resp.into_body(), 0, &path).await?;
        Ok(found)
    }

    /// One page of a container's JSON listing: the names after `marker`, at most `limit`
    /// (the server's default when None).
    pub async fn list_page(
        &mut self,
        container: &str,
        limit: Option<u64>,
        marker: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<Vec<String>> {
        let path = format!(
            "{}?{}",
            self.account.container_path(container),
            listing_query(limit, marker, prefix)
        );
        let resp = self
            .call(
                Method::GET,
                &path,
                ReqBody::Empty,
                &[StatusCode::OK, StatusCode::NO_CONTENT],
            )
            .await?;
        let empty = resp.status() == StatusCode::NO_CONTENT;
        let what = format!("GET {path}");
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| SwiftError::Http {
                what: what.clone(),
                source,
            })?
            .to_bytes();
        if empty || body.is_empty() {
            return Ok(Vec::new());
        }
        listing_names(&body).map_err(|why| SwiftError::Listing { what, why })
    }

    /// Lists a whole container as a client does: pages after the last name seen until an
    /// empty page. Returns (names, pages asked for, the empty one included).
    pub async fn list_all(
        &mut self,
        container: &str,
        limit: Option<u64>,
        prefix: Option<&str>,
    ) -> Result<(usize, usize)> {
        let (mut names, mut pages) = (0, 0);
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .list_page(container, limit, marker.as_deref(), prefix)
                .await?;
            pages += 1;
            let Some(last) = page.last() else {
                return Ok((names, pages));
            };
            if marker.as_deref().is_some_and(|m| last.as_str() <= m) {
                return Err(SwiftError::Request {
                    what: format!("listing {container}"),
                    why: format!(
                        "a page after marker {:?} ended at {last:?}: the marker was not honoured",
                        marker.unwrap_or_default()
                    ),
                });
            }
            names += page.len();
            marker = Some(last.clone());
        }
    }
}

/// The MD5 of an upload: known before it is sent, or filled in by its [`StreamBody`].
enum Hashed {
    Known(String),
    Shared(Arc<Mutex<Md5>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(addr: &str, host: &str, path: &str) -> HttpUrl {
        HttpUrl {
            addr: addr.into(),
            host: host.into(),
            path: path.into(),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/auth/v1.0").unwrap(),
            url("127.0.0.1:8080", "127.0.0.1:8080", "/auth/v1.0")
        );
        assert_eq!(
            parse_http_url("HTTP://swift/v1/AUTH_test/").unwrap(),
            url("swift:80", "swift", "/v1/AUTH_test")
        );
        assert_eq!(
            parse_http_url("http://[::1]:8090").unwrap(),
            url("[::1]:8090", "[::1]:8090", "")
        );
        assert_eq!(
            parse_http_url("http://[::1]/x?y=1#z").unwrap(),
            url("[::1]:80", "[::1]", "/x")
        );
        assert_eq!(parse_http_url("http://h:/a").unwrap().addr, "h:80");
        assert_eq!(
            parse_http_url("http://h:8080/auth/v1.0")
                .unwrap()
                .to_string(),
            "http://h:8080/auth/v1.0"
        );
        for bad in [
            "https://h/auth",
            "h:8080/auth",
            "http:///auth",
            "http://u:p@h/auth",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://a b/",
            "http://[::1/",
            "",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
        let e = parse_http_url("https://h/").unwrap_err().to_string();
        assert!(e.contains("https is not supported"), "{e}");
    }

    #[test]
    fn encoding_is_swiftclients() {
        assert_eq!(encode("photos/cat.jpg", true), "photos/cat.jpg");
        assert_eq!(encode("photos/cat.jpg", false), "photos%2Fcat.jpg");
        assert_eq!(
            encode("a b+c&d=e?f#g%h", true),
            "a%20b%2Bc%26d%3De%3Ff%23g%25h"
        );
        assert_eq!(encode("~a-b_c.d", false), "~a-b_c.d");
        assert_eq!(encode("é", true), "%C3%A9");
        assert_eq!(encode("", true), "");
    }

    #[test]
    fn paths_and_queries() {
        let a = Account {
            storage: url("h:1", "h:1", "/v1/AUTH_oss"),
            token: HeaderValue::from_static("t"),
        };
        assert_eq!(a.container_path("alice"), "/v1/AUTH_oss/alice");
        assert_eq!(
            a.object_path("alice", "photos/my cat.jpg"),
            "/v1/AUTH_oss/alice/photos/my%20cat.jpg"
        );
        assert_eq!(listing_query(None, None, None), "format=json");
        assert_eq!(
            listing_query(Some(100), Some("bench-000099"), Some("a b/")),
            "format=json&limit=100&marker=bench-000099&prefix=a%20b%2F"
        );
        assert_eq!(
            listing_query(None, Some("x&limit=1"), None),
            "format=json&marker=x%26limit%3D1"
        );
    }

    #[test]
    fn listings_and_etags() {
        let page = br#"[{"name":"a","bytes":1,"hash":"x"},{"subdir":"d/"},{"name":"b"}]"#;
        assert_eq!(listing_names(page).unwrap(), ["a", "d/", "b"]);
        assert!(listing_names(b"[]").unwrap().is_empty());
        assert!(listing_names(b"{}").is_err());
        assert!(listing_names(b"[{\"bytes\":1}]").is_err());
        assert!(listing_names(b"a\nb\n").is_err());
        assert_eq!(
            etag_hex("\"D41D8CD98F00B204E9800998ECF8427E\""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(etag_hex(" abc "), "abc");
    }

    #[tokio::test]
    async fn stream_body_hashes_and_sizes() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        let h = Arc::new(Mutex::new(Md5::new()));
        let body = ReqBody::Stream(StreamBody::new(
            Box::new(std::io::Cursor::new(data.clone())),
            data.len() as u64,
            h.clone(),
        ));
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        assert!(!body.is_end_stream());
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[..]);
        assert_eq!(
            hex(&h.lock().unwrap().clone().finalize()),
            hex(&Md5::digest(&data))
        );
        // A source shorter than announced is an error, not a short body.
        let body = ReqBody::Stream(StreamBody::new(
            Box::new(std::io::Cursor::new(vec![1u8; 10])),
            11,
            Arc::new(Mutex::new(Md5::new())),
        ));
        let e = body.collect().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A full body is one frame, replayable; an empty one ends at once.
        let full = ReqBody::Full(Some(Bytes::from_static(b"abc")));
        assert_eq!(full.size_hint().exact(), Some(3));
        assert!(full.replay().is_some());
        assert!(ReqBody::Empty.is_end_stream());
    }

    /// The client against the in-memory Swift of [`crate::fake_swift`].
    mod against_a_fake {
        use std::sync::atomic::Ordering;

        use super::*;
        use crate::fake_swift::{self, KEY, USER};

        async fn login() -> (Session, Arc<fake_swift::State>) {
            let (auth, st) = fake_swift::start().await;
            let acct = authenticate(&auth, USER, KEY).await.unwrap();
            assert_eq!(acct.storage.path, "/v1/AUTH_test");
            (Session::new(Arc::new(acct)), st)
        }

        fn data(n: usize) -> Vec<u8> {
            (0..n).map(|i| (i * 7 % 251) as u8).collect()
        }

        #[tokio::test]
        async fn round_trips_on_one_connection() {
            let (mut s, st) = login().await;
            let logins = st.connections.load(Ordering::SeqCst);
            assert_eq!(s.put_container("c").await.unwrap(), StatusCode::CREATED);
            assert_eq!(s.put_container("c").await.unwrap(), StatusCode::ACCEPTED);
            let small = data(4096);
            let name = "dir/a b+c%d.txt";
            let n = s
                .put_object("c", name, Upload::Bytes(small.clone().into()))
                .await
                .unwrap();
            assert_eq!(n, 4096);
            // The name arrived decoded as it was given.
            let key = ("c".to_owned(), name.to_owned());
            assert_eq!(st.objects.lock().unwrap()[&key], small);
            let big = data(CHUNK * 3 + 5);
            let up = Upload::Reader {
                reader: Box::new(std::io::Cursor::new(big.clone())),
                len: big.len() as u64,
            };
            assert_eq!(
                s.put_object("c", "big", up).await.unwrap(),
                big.len() as u64
            );
            let g = s.get_object("c", "big").await.unwrap();
            assert_eq!(g.bytes, big.len() as u64);
            assert_eq!(g.md5, hex(&Md5::digest(&big)));
            assert_eq!(s.get_object("c", name).await.unwrap().bytes, 4096);
            assert!(s.delete_object("c", name).await.unwrap());
            assert!(!s.delete_object("c", name).await.unwrap());
            let e = s.get_object("c", name).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    SwiftError::Status {
                        status: StatusCode::NOT_FOUND,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains("404 Not Found (<html>Not Found</html>)"),
                "{e}"
            );
            // A missing container: the PUT is refused, and the connection still serves.
            let e = s
                .put_object("nope", "x", Upload::Bytes(Bytes::from_static(b"x")))
                .await
                .unwrap_err();
            assert!(
                e.to_string().starts_with("PUT /v1/AUTH_test/nope/x: 404"),
                "{e}"
            );
            assert_eq!(
                s.get_object("c", "big").await.unwrap().bytes,
                big.len() as u64
            );
            assert_eq!(s.conn.opened, 1);
            assert_eq!(st.connections.load(Ordering::SeqCst), logins + 1);
        }

        #[tokio::test]
        async fn listing_pages_with_the_marker() {
            let (mut s, st) = login().await;
            s.put_container("c").await.unwrap();
            for n in ["a", "b b", "c/d", "c/e", "é", "f", "g"] {
                s.put_object("c", n, Upload::Bytes(Bytes::from_static(b"1")))
                    .await
                    .unwrap();
            }
            // 3 + 3 + 1, then the empty page that ends it.
            assert_eq!(s.list_all("c", Some(3), None).await.unwrap(), (7, 4));
            assert_eq!(s.list_all("c", None, None).await.unwrap(), (7, 2));
            assert_eq!(s.list_all("c", Some(1), Some("c/")).await.unwrap(), (2, 3));
            assert_eq!(
                s.list_page("c", Some(2), Some("b b"), None).await.unwrap(),
                ["c/d", "c/e"]
            );
            // A server that ignores the marker would page forever: it is caught.
            st.ignore_marker.store(true, Ordering::SeqCst);
            let e = s.list_all("c", Some(3), None).await.unwrap_err();
            assert!(e.to_string().contains("the marker was not honoured"), "{e}");
        }

        #[tokio::test]
        async fn bad_etags_and_bad_keys_are_errors() {
            let (mut s, st) = login().await;
            s.put_container("c").await.unwrap();
            s.put_object("c", "o", Upload::Bytes(Bytes::from_static(b"abc")))
                .await
                .unwrap();
            st.bad_etag.store(true, Ordering::SeqCst);
            let e = s.get_object("c", "o").await.unwrap_err();
            assert!(matches!(e, SwiftError::Etag { .. }), "{e}");
            let up = Upload::Reader {
                reader: Box::new(std::io::Cursor::new(vec![1u8; 10])),
                len: 10,
            };
            let e = s.put_object("c", "o", up).await.unwrap_err();
            assert!(matches!(e, SwiftError::Etag { .. }), "{e}");
            let auth = format!("http://{}/auth/v1.0", s.account.storage.addr);
            let e = authenticate(&auth, USER, "wrong").await.unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("authentication at {auth} failed: 401 Unauthorized (bad key)")
            );
            let bogus = Account {
                storage: s.account.storage.clone(),
                token: HeaderValue::from_static("nope"),
            };
            let e = Session::new(Arc::new(bogus))
                .get_object("c", "o")
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    SwiftError::Status {
                        status: StatusCode::UNAUTHORIZED,
                        ..
                    }
                ),
                "{e}"
            );
            let e = authenticate("http://127.0.0.1:1/auth/v1.0", USER, KEY)
                .await
                .unwrap_err();
            assert!(
                e.to_string().starts_with("cannot connect to 127.0.0.1:1: "),
                "{e}"
            );
        }

        #[tokio::test]
        async fn a_closed_connection_is_opened_again() {
            let (mut s, st) = login().await;
            st.close_each.store(true, Ordering::SeqCst);
            s.put_container("c").await.unwrap();
            for i in 0..5 {
                let name = format!("o{i}");
                s.put_object("c", &name, Upload::Bytes(Bytes::from_static(b"abc")))
                    .await
                    .unwrap();
                assert_eq!(s.get_object("c", &name).await.unwrap().bytes, 3);
            }
            assert_eq!(s.conn.opened, 11);
        }
    }
}
