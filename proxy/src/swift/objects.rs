//! Object requests: `PUT` (streamed, `ETag` checked by every storage server), `GET`/`HEAD`
//! (ranges, conditional requests, streamed), `POST` (new metadata), `COPY` and
//! `X-Copy-From` (the proxy's server-side copy), `DELETE`.

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use oss_proto::name::{hex, MAX_FILE_LEN};
use oss_proto::wire::{now_micros, Attrs, ObjectMeta, WireError};
use oss_proto::ObjectName;
use tokio::sync::oneshot;

use super::body::{Body, BodyFault, ChannelSink, Upload};
use super::http::{self, Condition, RangeAnswer, Span};
use super::{authorize, Answer, Door, Fail, Reply, Req, MAX_FILE_SIZE};
use crate::object::{self, Gone, PutError, Readable, Sink, StreamError, RACE_RETRIES};
use crate::server::Login;

pub async fn handle(door: &Door, req: Req, login: &Login, c: &str, o: &str) -> Answer {
    let name = object_name(c, o)?;
    match req.method().as_str() {
        "GET" | "HEAD" => get(door, &req, &name).await,
        "PUT" => {
            if let Some(src) = req.headers().get("x-copy-from") {
                let src = copy_path(Some(src), "X-Copy-From")?;
                authorize(login, &src.0)?;
                let src = object_name(&src.0, &src.1)?;
                return copy(door, req.headers(), &src, &name).await;
            }
            put(door, req, &name).await
        }
        "POST" => post(door, req.headers(), &name).await,
        "DELETE" => match object::delete_object(&door.proxy, &name).await? {
            true => Ok(Reply::new(StatusCode::NO_CONTENT).done()),
            false => Err(Fail::not_found()),
        },
        "COPY" => {
            let dst = req.headers().get("destination");
            let Some(dst) = dst else {
                return Err(Fail::precondition("Destination header required"));
            };
            let dst = copy_path(Some(dst), "Destination")?;
            authorize(login, &dst.0)?;
            let dst = object_name(&dst.0, &dst.1)?;
            copy(door, req.headers(), &name, &dst).await
        }
        _ => Err(Fail::method_not_allowed(
            "HEAD, GET, PUT, POST, DELETE, COPY",
        )),
    }
}

fn object_name(c: &str, o: &str) -> Result<ObjectName, Fail> {
    if o.len() > MAX_FILE_LEN {
        return Err(Fail::bad_request(format!(
            "Object name length of {} longer than {MAX_FILE_LEN}",
            o.len()
        )));
    }
    ObjectName::new(c, o).map_err(|e| Fail::bad_request(e.to_string()))
}

fn copy_path(
    v: Option<&hyper::header::HeaderValue>,
    header: &str,
) -> Result<(String, String), Fail> {
    v.and_then(http::parse_copy_path).ok_or_else(|| {
        Fail::precondition(format!(
            "{header} header must be of the form <container name>/<object name>"
        ))
    })
}

/// Object headers Swift stores beside the user's metadata and answers on reads (its
/// object server's `allowed_headers`, less large-object manifests).
const SYSTEM_HEADERS: [&str; 7] = [
    "content-disposition",
    "content-encoding",
    "content-language",
    "cache-control",
    "expires",
    "x-robots-tag",
    "x-delete-at",
];

/// The content type and metadata a write stores, from its headers: `X-Object-Meta-*`, the
/// system headers, and `X-Delete-After` as an `X-Delete-At`.
fn attrs_of(headers: &HeaderMap, name: &ObjectName) -> Result<Attrs, Fail> {
    let u = http::meta_update(headers, "object").map_err(|e| Fail::bad_request(e.0))?;
    let mut attrs = Attrs {
        meta: u.set.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        ..Default::default()
    };
    let detect = headers
        .get("x-detect-content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    attrs.content_type = match headers.get("content-type") {
        Some(v) if !detect => http::header_text(v).map_err(|e| Fail::bad_request(e.0))?,
        _ => http::guess_content_type(name.file()).to_owned(),
    };
    system_headers(headers, &mut attrs)?;
    attrs
        .validate()
        .map_err(|e| Fail::bad_request(e.to_string()))?;
    Ok(attrs)
}

/// Takes the system headers of a request into `attrs` (replacing those it names).
fn system_headers(headers: &HeaderMap, attrs: &mut Attrs) -> Result<(), Fail> {
    for h in SYSTEM_HEADERS {
        if let Some(v) = headers.get(h) {
            let v = http::header_text(v).map_err(|e| Fail::bad_request(e.0))?;
            attrs
                .meta
                .insert(format!("{}{h}", Attrs::SYSTEM), v.trim().to_owned());
        }
    }
    let now = now_micros() / 1_000_000;
    if let Some(v) = headers.get("x-delete-after") {
        let after: u64 = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Fail::bad_request("Non-integer X-Delete-After"))?;
        attrs
            .meta
            .insert(Attrs::DELETE_AT.to_owned(), (now + after).to_string());
    }
    if let Some(at) = attrs.meta.get(Attrs::DELETE_AT) {
        let secs: u64 = at
            .parse()
            .map_err(|_| Fail::bad_request("Non-integer X-Delete-At"))?;
        if secs <= now {
            return Err(Fail::bad_request("X-Delete-At in past"));
        }
    }
    if headers.contains_key("x-remove-delete-at") {
        attrs.meta.remove(Attrs::DELETE_AT);
    }
    Ok(())
}

fn too_large() -> Fail {
    Fail::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "<html><h1>Request Entity Too Large</h1><p>The body of your request was too large \
         for this server.</p></html>",
    )
}

/// The headers every answer about a version carries.
fn version_headers(r: Reply, m: &ObjectMeta) -> Reply {
    r.header("etag", hex(&m.md5))
        .header(
            "last-modified",
            http::http_date(http::last_modified(m.timestamp)),
        )
        .header("x-timestamp", http::x_timestamp(m.timestamp))
        .header(
            "content-type",
            super::format::content_type_of(&m.attrs.content_type),
        )
        .header("accept-ranges", "bytes")
        .user_meta("x-object-meta-", m.attrs.user_meta())
        .system(&m.attrs)
}

async fn put(door: &Door, req: Req, name: &ObjectName) -> Answer {
    let h = req.headers();
    if let Some(te) = h.get("transfer-encoding") {
        if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Fail::new(
                StatusCode::NOT_IMPLEMENTED,
                "<html><h1>Not Implemented</h1><p>The transfer encoding is not supported.</p></html>",
            ));
        }
    }
    let size = match h.get("content-length") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Fail::bad_request("Invalid Content-Length"))?,
        ),
        None if h.contains_key("transfer-encoding") => None,
        None => {
            return Err(Fail::new(
                StatusCode::LENGTH_REQUIRED,
                "<html><h1>Length Required</h1><p>Length Required</p></html>",
            ))
        }
    };
    if size.is_some_and(|s| s > MAX_FILE_SIZE) {
        return Err(too_large());
    }
    let attrs = attrs_of(h, name)?;
    let etag = match h.get("etag") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(http::parse_etag) {
            Some(md5) => Some(md5),
            None => {
                return Err(Fail::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "<html><h1>Unprocessable Entity</h1><p>Unable to process the contained \
                     instructions</p></html>",
                ))
            }
        },
    };
    if let Some(v) = h.get("if-none-match") {
        if v.as_bytes() != b"*" {
            return Err(Fail::bad_request("If-None-Match only supports *"));
        }
        match object::open_read(&door.proxy, name).await {
            Ok(_) => return Err(Fail::precondition("")),
            Err(WireError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !door.container_exists(name.user()).await? {
        return Err(Fail::not_found());
    }
    let Some(body) = req.into_body() else {
        return Err(Fail::bad_request("no request body"));
    };
    let mut upload = Upload::new(body, etag, MAX_FILE_SIZE);
    match object::put(&door.proxy, name, size, attrs, &mut upload).await {
        Ok(meta) => Ok(Reply::new(StatusCode::CREATED)
            .header("etag", hex(&meta.md5))
            .header(
                "last-modified",
                http::http_date(http::last_modified(meta.timestamp)),
            )
            .done()),
        Err(PutError::Source(e)) => Err(match upload.fault {
            Some(BodyFault::TooLarge) => too_large(),
            Some(BodyFault::Broken) => Fail::new(StatusCode::REQUEST_TIMEOUT, e.to_string()),
            None => e.into(),
        }),
        Err(PutError::Early(e) | PutError::Done(e)) => Err(e.into()),
    }
}

async fn post(door: &Door, headers: &HeaderMap, name: &ObjectName) -> Answer {
    let cur = object::open_read(&door.proxy, name).await?;
    let mut attrs = attrs_of(headers, name)?;
    if !headers.contains_key("content-type") {
        attrs.content_type = cur.meta.attrs.content_type.clone();
    }
    // A POST replaces the user's metadata; system headers it does not name stay.
    for (k, v) in &cur.meta.attrs.meta {
        if k.starts_with(Attrs::SYSTEM)
            && !attrs.meta.contains_key(k)
            && !(k == Attrs::DELETE_AT && headers.contains_key("x-remove-delete-at"))
        {
            attrs.meta.insert(k.clone(), v.clone());
        }
    }
    object::copy_object(&door.proxy, name, name, Some(attrs), None).await?;
    Ok(Reply::new(StatusCode::ACCEPTED).done())
}

/// `COPY` and `PUT` with `X-Copy-From`: the source's bytes and metadata, with the request's
/// metadata on top (only the request's with `X-Fresh-Metadata: true`).
async fn copy(door: &Door, headers: &HeaderMap, src: &ObjectName, dst: &ObjectName) -> Answer {
    if !door.container_exists(dst.user()).await? {
        return Err(Fail::not_found());
    }
    let cur = object::open_read(&door.proxy, src).await?;
    let fresh = headers
        .get("x-fresh-metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let update = http::meta_update(headers, "object").map_err(|e| Fail::bad_request(e.0))?;
    let mut attrs = if fresh {
        Attrs::default()
    } else {
        cur.meta.attrs.clone()
    };
    update.apply(&mut attrs.meta);
    attrs.content_type = match headers.get("content-type") {
        Some(v) => http::header_text(v).map_err(|e| Fail::bad_request(e.0))?,
        None => cur.meta.attrs.content_type.clone(),
    };
    system_headers(headers, &mut attrs)?;
    attrs
        .validate()
        .map_err(|e| Fail::bad_request(e.to_string()))?;
    // A single range copies those bytes (Swift's ranged copy); anything else, the whole.
    let range = headers.get("range").and_then(|v| v.to_str().ok());
    let span = match http::parse_range(range, cur.meta.size) {
        RangeAnswer::Partial(s) if s.len() == 1 => Some((s[0].start, s[0].len)),
        RangeAnswer::Unsatisfiable => {
            return Ok(Reply::new(StatusCode::RANGE_NOT_SATISFIABLE)
                .header("content-range", format!("bytes */{}", cur.meta.size))
                .done())
        }
        _ => None,
    };
    let meta = object::copy_object(&door.proxy, src, dst, Some(attrs), span).await?;
    Ok(Reply::new(StatusCode::CREATED)
        .header("etag", hex(&meta.md5))
        .header(
            "last-modified",
            http::http_date(http::last_modified(meta.timestamp)),
        )
        .header(
            "x-copied-from",
            http::quote_path(&format!("{}/{}", src.user(), src.file())),
        )
        .header("x-copied-from-account", super::ACCOUNT)
        .header(
            "x-copied-from-last-modified",
            http::http_date(http::last_modified(cur.meta.timestamp)),
        )
        .done())
}

/// A multipart boundary (fixed per response; random enough that no object holds it by
/// chance where it matters: each part's length is known to the reader from Content-Range).
fn boundary() -> String {
    hex(&oss_proto::auth::random::<12>())
}

async fn get(door: &Door, req: &Req, name: &ObjectName) -> Answer {
    let head = req.method() == Method::HEAD;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = object::open_read(&door.proxy, name).await?;
        let m = &r.meta;
        let etag = hex(&m.md5);
        match http::evaluate_conditions(req.headers(), &etag, http::last_modified(m.timestamp)) {
            Condition::Proceed => {}
            Condition::NotModified => {
                return Ok(version_headers(Reply::new(StatusCode::NOT_MODIFIED), m).done())
            }
            Condition::Failed => {
                return Ok(
                    version_headers(Reply::new(StatusCode::PRECONDITION_FAILED), m)
                        .header("content-type", "text/html; charset=UTF-8")
                        .done(),
                )
            }
        }
        let range = req.headers().get("range").and_then(|v| v.to_str().ok());
        let (status, spans, plan) = match http::parse_range(range, m.size) {
            RangeAnswer::Whole => (
                StatusCode::OK,
                vec![Span {
                    start: 0,
                    len: m.size,
                }],
                Plan::Single,
            ),
            RangeAnswer::Unsatisfiable => {
                return Ok(
                    version_headers(Reply::new(StatusCode::RANGE_NOT_SATISFIABLE), m)
                        .header("content-range", format!("bytes */{}", m.size))
                        .header("content-type", "text/html; charset=UTF-8")
                        .done(),
                )
            }
            RangeAnswer::Partial(s) if s.len() == 1 => {
                (StatusCode::PARTIAL_CONTENT, s, Plan::Single)
            }
            RangeAnswer::Partial(s) => (StatusCode::PARTIAL_CONTENT, s, Plan::Multi(boundary())),
        };
        let ctype = super::format::content_type_of(&m.attrs.content_type).to_owned();
        let mut reply = version_headers(Reply::new(status), m);
        let len = match &plan {
            Plan::Single => {
                if status == StatusCode::PARTIAL_CONTENT {
                    reply = reply.header("content-range", spans[0].content_range(m.size));
                }
                spans[0].len
            }
            Plan::Multi(b) => {
                reply = reply.header("content-type", format!("multipart/byteranges;boundary={b}"));
                spans
                    .iter()
                    .map(|s| part_header(b, &ctype, s, m.size).len() as u64 + s.len + 2)
                    .sum::<u64>()
                    + b.len() as u64
                    + 4
            }
        };
        reply = reply.header("content-length", len.to_string());
        if head {
            return Ok(reply.done());
        }
        let (body, sink) = Body::channel(len);
        let (tx, rx) = oneshot::channel();
        let proxy = door.proxy.clone();
        let size = m.size;
        tokio::spawn(send_spans(proxy, r, spans, plan, ctype, size, sink, tx));
        match rx.await {
            Ok(Ok(())) => return Ok(reply.body(body)),
            Ok(Err(WireError::Stale { .. })) if attempt < RACE_RETRIES => continue,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(Fail::from_wire(WireError::Internal("read ended".into()))),
        }
    }
}

enum Plan {
    Single,
    /// `multipart/byteranges` with this boundary.
    Multi(String),
}

fn part_header(boundary: &str, ctype: &str, s: &Span, size: u64) -> String {
    format!(
        "--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: {}\r\n\r\n",
        s.content_range(size)
    )
}

/// Tells the request handler once the read has started (or could not).
struct Started {
    inner: ChannelSink,
    tx: Option<oneshot::Sender<Result<(), WireError>>>,
}

impl Started {
    fn signal(&mut self, r: Result<(), WireError>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(r);
        }
    }
}

impl Sink for Started {
    async fn start(&mut self, m: &ObjectMeta, offset: u64, len: u64) -> Result<(), Gone> {
        self.signal(Ok(()));
        self.inner.start(m, offset, len).await
    }
    async fn data(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        self.inner.data(bytes).await
    }
    async fn end(&mut self) -> Result<(), Gone> {
        Ok(())
    }
    async fn abort(&mut self, e: WireError) -> Result<(), Gone> {
        self.inner.abort(e).await
    }
}

/// Streams the spans of one version into a response body, from the proxy's one read path.
#[allow(clippy::too_many_arguments)]
async fn send_spans(
    proxy: std::sync::Arc<crate::cluster::Proxy>,
    r: Readable,
    spans: Vec<Span>,
    plan: Plan,
    ctype: String,
    size: u64,
    sink: ChannelSink,
    tx: oneshot::Sender<Result<(), WireError>>,
) {
    let mut s = Started {
        inner: sink,
        tx: Some(tx),
    };
    if size == 0 {
        // Nothing to read: no replica needs to answer.
        s.signal(Ok(()));
        return;
    }
    for span in &spans {
        if let Plan::Multi(b) = &plan {
            if s.inner
                .send(Bytes::from(part_header(b, &ctype, span, size)))
                .await
                .is_err()
            {
                return;
            }
        }
        match object::stream(&proxy, &r, span.start, span.len, &mut s).await {
            Ok(()) => {}
            Err(StreamError::Before(e)) => {
                s.signal(Err(e.clone()));
                // A later span of a started response: cut it short.
                let _ = s.inner.abort(e).await;
                return;
            }
            Err(StreamError::During) => return,
        }
        if let Plan::Multi(_) = &plan {
            if s.inner.send(Bytes::from_static(b"\r\n")).await.is_err() {
                return;
            }
        }
    }
    if let Plan::Multi(b) = &plan {
        let _ = s.inner.send(Bytes::from(format!("--{b}--"))).await;
    }
}
