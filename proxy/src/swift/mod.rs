//! The OpenStack Swift door: the Swift object API over HTTP/1.1 (`oss-proxy --http ADDR`),
//! translated into the proxy's own operations — the same write path, reads, listings,
//! copies and deletes the native protocol calls, so every promise holds whichever door a
//! client uses.
//!
//! One account, [`ACCOUNT`]; a container is an oss user, an object that user's file
//! (`alice/photos/cat.jpg` is container `alice`, object `photos/cat.jpg`). Tokens come
//! from `GET /auth/v1.0` as tempauth hands them out ([`auth`]); a user's token reaches only
//! its own container, the admin's (the account owner's) everything — the native protocol's
//! one permission rule.
//!
//! - [`http`]: paths, ranges, conditional requests, dates, metadata headers (pure).
//! - [`format`]: listings as plain text, JSON and XML (pure).
//! - [`body`]: streamed response bodies and upload bodies.
//! - [`objects`]: object requests.

pub mod auth;
pub mod body;
pub mod format;
pub mod http;
pub mod objects;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use oss_proto::name::{validate_user, MAX_FILE_LEN, MAX_PART_LEN};
use oss_proto::wire::{
    now_micros, Attrs, ListItem, ListQuery, Response as ProxyResponse, WireError, MAX_LIST_LIMIT,
};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{debug, info, warn, Instrument};

use crate::cluster::Proxy;
use crate::containers::{MetaUpdate, Totals};
use crate::server::Login;
use body::Body;
use format::{ContainerRow, Format};
use http::{PathError, Target, ACCOUNT};

/// Largest object the door takes, as Swift's `max_file_size` (5 GiB + 2 bytes).
pub const MAX_FILE_SIZE: u64 = 5 * (1 << 30) + 2;
/// How long a token lasts unless `--token-life` says otherwise.
pub const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);
/// Longest header section a request may have (Swift's `max_header_size`).
pub const MAX_HEADER_SIZE: usize = 8192;
/// Largest body a request other than an object PUT may carry (it is read and dropped).
const DRAIN_LIMIT: usize = 64 << 10;
/// How long a connection may sit between requests, or take over a request's headers.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The door's shared state.
pub struct Door {
    pub proxy: Arc<Proxy>,
    tokens: auth::Tokens,
    local: SocketAddr,
}

/// Serves the Swift API on `listener` until `shutdown` resolves.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    token_life: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let door = Arc::new(Door {
        tokens: auth::Tokens::new(&proxy.cfg.secret, token_life),
        proxy,
        local,
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let d = door.clone();
                    let span = tracing::info_span!("http", %peer);
                    tokio::spawn(async move { connection(d, stream, peer).await }.instrument(span));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn connection(door: Arc<Door>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let svc = hyper::service::service_fn(move |req| {
        let d = door.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&d, req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(64 << 10)
        // Swift's limit is on metadata items (90, checked with a clear 400), not headers.
        .max_headers(256)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        debug!(error = %e, "connection ended");
    }
}

/// A request that ends in an error status: Swift's status and a short body.
#[derive(Debug)]
pub struct Fail {
    status: StatusCode,
    body: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Fail {
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Fail {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    pub fn not_found() -> Self {
        Fail::new(
            StatusCode::NOT_FOUND,
            "<html><h1>Not Found</h1><p>The resource could not be found.</p></html>",
        )
    }

    pub fn bad_request(why: impl Into<String>) -> Self {
        Fail::new(StatusCode::BAD_REQUEST, why)
    }

    pub fn precondition(why: impl Into<String>) -> Self {
        Fail::new(StatusCode::PRECONDITION_FAILED, why)
    }

    fn unauthorized(realm: &str) -> Self {
        Fail::new(
            StatusCode::UNAUTHORIZED,
            "<html><h1>Unauthorized</h1><p>This server could not verify that you are \
             authorized to access the document you requested.</p></html>",
        )
        .with("www-authenticate", &format!("Swift realm=\"{realm}\""))
    }

    fn forbidden() -> Self {
        Fail::new(
            StatusCode::FORBIDDEN,
            "<html><h1>Forbidden</h1><p>Access was denied to this resource.</p></html>",
        )
    }

    pub fn method_not_allowed(allow: &str) -> Self {
        Fail::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "<html><h1>Method Not Allowed</h1><p>The method is not allowed for this \
             resource.</p></html>",
        )
        .with("allow", allow)
    }

    /// The one mapping from the proxy's errors to HTTP statuses.
    pub fn from_wire(e: WireError) -> Self {
        let status = match &e {
            WireError::NotFound => return Fail::not_found(),
            WireError::InvalidName(_) | WireError::InvalidAttrs(_) | WireError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            WireError::Md5Mismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            WireError::Unavailable(_) | WireError::Corrupt(_) | WireError::Stale { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WireError::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            WireError::PermissionDenied(_) => return Fail::forbidden(),
            WireError::AuthFailed(_) => StatusCode::UNAUTHORIZED,
            WireError::Refused(_) => StatusCode::CONFLICT,
            WireError::Version { .. } | WireError::Io(_) | WireError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status.is_server_error() {
            warn!(error = %e, "request failed");
        }
        Fail::new(status, e.to_string())
    }

    fn response(self) -> Response<Body> {
        let mut r = Response::new(Body::text(self.body));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=UTF-8"),
        );
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

impl From<WireError> for Fail {
    fn from(e: WireError) -> Self {
        Fail::from_wire(e)
    }
}

impl From<crate::state::StateError> for Fail {
    fn from(e: crate::state::StateError) -> Self {
        warn!(error = %e, "cannot write the container table");
        Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub type Answer = Result<Response<Body>, Fail>;

/// A request as the handlers see it: its body is there only for object PUTs.
pub type Req = Request<Option<hyper::body::Incoming>>;

/// A response under construction.
pub struct Reply(Response<Body>);

impl Reply {
    pub fn new(status: StatusCode) -> Self {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = status;
        Reply(r)
    }

    /// Sets a header; values that are not valid header text are left out.
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_ref().as_bytes()),
        ) {
            self.0.headers_mut().insert(n, v);
        }
        self
    }

    pub fn meta(self, prefix: &str, meta: &BTreeMap<String, String>) -> Self {
        self.user_meta(prefix, meta.iter())
    }

    /// User metadata as `PREFIX-Name` headers.
    pub fn user_meta<'a>(
        mut self,
        prefix: &str,
        meta: impl Iterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        for (k, v) in meta {
            self = self.header(&http::title_case(&format!("{prefix}{k}")), v);
        }
        self
    }

    /// The system headers stored with an object, under their own names.
    pub fn system(mut self, attrs: &Attrs) -> Self {
        for (k, v) in &attrs.meta {
            if let Some(h) = k.strip_prefix(Attrs::SYSTEM) {
                self = self.header(&http::title_case(h), v);
            }
        }
        self
    }

    pub fn body(mut self, b: Body) -> Response<Body> {
        *self.0.body_mut() = b;
        self.0
    }

    pub fn done(self) -> Response<Body> {
        self.0
    }
}

/// A transaction id, as Swift's `X-Trans-Id`.
fn trans_id() -> String {
    let r: [u8; 11] = oss_proto::auth::random();
    format!(
        "tx{}-{:010x}",
        &oss_proto::name::hex(&r)[..21],
        now_micros() / 1_000_000
    )
}

async fn handle(
    door: &Door,
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let head = method == Method::HEAD;
    // A client that asks for keep-alive by name is answered by name, as Swift does.
    let req_keep_alive = req
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"keep-alive"));
    let with_body = req.headers().contains_key("transfer-encoding")
        || req
            .headers()
            .get("content-length")
            .is_some_and(|v| v.as_bytes() != b"0");
    let req = if with_body && method != Method::PUT {
        // Only object PUTs read a body: drain a small one so the connection stays usable.
        let (parts, body) = req.into_parts();
        let limited = http_body_util::Limited::new(body, DRAIN_LIMIT);
        match tokio::time::timeout(IDLE_TIMEOUT, http_body_util::BodyExt::collect(limited)).await {
            Ok(Ok(_)) => {}
            _ => {
                return Fail::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
                    .with("connection", "close")
                    .response()
            }
        }
        Request::from_parts(parts, None)
    } else {
        req.map(Some)
    };
    let mut resp = match route(door, req, peer).await {
        Ok(r) => r,
        Err(f) => f.response(),
    };
    let keep_alive = req_keep_alive;
    if keep_alive && !resp.headers().contains_key("connection") {
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("keep-alive"));
    }
    if with_body && method == Method::PUT && !resp.status().is_success() {
        // The body may be unread: this connection cannot carry another request.
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    if head {
        // HEAD answers the headers a GET would, without the body.
        *resp.body_mut() = Body::empty();
    }
    let t = trans_id();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&t) {
        h.insert("x-trans-id", v.clone());
        h.insert("x-openstack-request-id", v);
    }
    h.entry("content-type")
        .or_insert(HeaderValue::from_static("text/html; charset=UTF-8"));
    debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    resp
}

async fn route(door: &Door, req: Req, peer: SocketAddr) -> Answer {
    let target = match http::parse_path(req.uri().path()) {
        Ok(t) => t,
        Err(PathError::Encoding) => {
            return Err(Fail::precondition("Invalid UTF8 or contains NULL"))
        }
        Err(PathError::VersionOnly) => return Err(Fail::precondition("Bad URL")),
        Err(PathError::NotFound) => return Err(Fail::not_found()),
        Err(PathError::OtherAccount(_)) => {
            // Another account: nobody's token reaches it.
            let realm = raw_account(req.uri().path());
            return match door.login(&req) {
                Some(_) => Err(Fail::forbidden()),
                None => Err(Fail::unauthorized(&realm)),
            };
        }
    };
    let m = req.method().clone();
    match target {
        Target::Info => match m {
            Method::GET | Method::HEAD => Ok(info()),
            _ => Err(Fail::method_not_allowed("GET, HEAD")),
        },
        Target::Healthcheck => Ok(Reply::new(StatusCode::OK)
            .header("content-type", "text/plain")
            .body(Body::text("OK"))),
        Target::Auth => door.authenticate(&req, peer).await,
        Target::Account => {
            let login = door.require_login(&req)?;
            if !login.is_admin() {
                return Err(Fail::forbidden());
            }
            door.account(req).await
        }
        Target::Container(c) => {
            let login = door.require_login(&req)?;
            check_container_name(&c)?;
            authorize(&login, &c)?;
            door.container(req, &c).await
        }
        Target::Object(c, o) => {
            let login = door.require_login(&req)?;
            check_container_name(&c)?;
            authorize(&login, &c)?;
            objects::handle(door, req, &login, &c, &o).await
        }
    }
}

/// The account segment of a path as the client wrote it (for `WWW-Authenticate`).
fn raw_account(path: &str) -> String {
    path.trim_start_matches('/')
        .split('/')
        .nth(1)
        .unwrap_or("")
        .replace(['"', '\\', '\r', '\n'], "")
}

fn check_container_name(c: &str) -> Result<(), Fail> {
    if c.len() > MAX_PART_LEN {
        return Err(Fail::bad_request(format!(
            "Container name length of {} longer than {MAX_PART_LEN}",
            c.len()
        )));
    }
    validate_user(c).map_err(|e| Fail::bad_request(e.to_string()))
}

/// The native protocol's rule: a user's token reaches its own container only.
pub fn authorize(login: &Login, container: &str) -> Result<(), Fail> {
    if login.is_admin() || login.user == container {
        Ok(())
    } else {
        Err(Fail::forbidden())
    }
}

fn info() -> Response<Body> {
    let v = json!({
        "swift": {
            "version": "2.30.1",
            "max_file_size": MAX_FILE_SIZE,
            "max_meta_name_length": Attrs::MAX_NAME,
            "max_meta_value_length": Attrs::MAX_VALUE,
            "max_meta_count": Attrs::MAX_COUNT,
            "max_meta_overall_size": Attrs::MAX_OVERALL,
            "max_header_size": MAX_HEADER_SIZE,
            "max_object_name_length": MAX_FILE_LEN,
            "max_container_name_length": MAX_PART_LEN,
            "max_account_name_length": 256,
            "container_listing_limit": MAX_LIST_LIMIT,
            "account_listing_limit": MAX_LIST_LIMIT,
            "extra_header_count": 0,
            "valid_api_versions": ["v1", "v1.0"],
            "policies": [{"name": "Policy-0", "aliases": "Policy-0", "default": true}],
            "strict_cors_mode": true,
            "allow_account_management": false,
            "account_autocreate": true,
        }
    });
    Reply::new(StatusCode::OK)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::text(v.to_string()))
}

impl Door {
    fn token(req: &Req) -> Option<&str> {
        ["x-auth-token", "x-storage-token"]
            .iter()
            .find_map(|h| req.headers().get(*h))
            .and_then(|v| v.to_str().ok())
    }

    fn login(&self, req: &Req) -> Option<Login> {
        let t = Self::token(req)?;
        self.tokens.check(t, &self.proxy.users, SystemTime::now())
    }

    fn require_login(&self, req: &Req) -> Result<Login, Fail> {
        self.login(req).ok_or_else(|| Fail::unauthorized(ACCOUNT))
    }

    /// `GET /auth/v1.0`: a key for a token.
    async fn authenticate(&self, req: &Req, peer: SocketAddr) -> Answer {
        let get = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| req.headers().get(*n))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (Some(user), Some(key)) = (
            get(&["x-auth-user", "x-storage-user"]),
            get(&["x-auth-key", "x-storage-pass"]),
        ) else {
            return Err(Fail::unauthorized("unknown"));
        };
        let name = auth::user_of(&user);
        let proxy = &self.proxy;
        let now = Instant::now();
        let delay = proxy.throttle.delay(peer.ip(), now);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let verifier = proxy.users.verifier(name);
        let ok = match (&verifier, auth::key_of(name, &key)) {
            (Some(v), Some(k)) => v.matches(&k),
            _ => false,
        };
        let (true, Some(v)) = (ok, verifier) else {
            proxy.throttle.failed(peer.ip(), now);
            warn!(%peer, user = %name, "swift login failed");
            return Err(Fail::unauthorized(ACCOUNT));
        };
        proxy.throttle.succeeded(peer.ip());
        let issued = self.tokens.issue(name, &v, SystemTime::now());
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| self.local.to_string());
        let url = format!("http://{host}/v1/{ACCOUNT}");
        info!(user = %name, "swift token issued");
        let body = json!({"storage": {"default": "local", "local": url}}).to_string();
        Ok(Reply::new(StatusCode::OK)
            .header("x-storage-url", &url)
            .header("x-auth-token", &issued.token)
            .header("x-storage-token", &issued.token)
            .header(
                "x-auth-token-expires",
                issued.expires_in.as_secs().to_string(),
            )
            .header("content-type", "application/json; charset=UTF-8")
            .body(Body::text(body)))
    }

    /// A container exists while it has a record or objects. One that exists only through
    /// its objects (written by the native door) gets a record, so it stays when emptied.
    async fn container_exists(&self, c: &str) -> Result<bool, Fail> {
        if self.proxy.containers.get(c).is_some() {
            return Ok(true);
        }
        if self.has_objects(c).await? {
            self.proxy
                .containers
                .put(c, now_micros(), &MetaUpdate::default())?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn has_objects(&self, c: &str) -> Result<bool, Fail> {
        let q = ListQuery {
            user: c.to_owned(),
            limit: 1,
            ..Default::default()
        };
        Ok(!self.page(q).await?.0.is_empty())
    }

    async fn page(&self, q: ListQuery) -> Result<(Vec<ListItem>, bool), Fail> {
        match crate::listing::list(&self.proxy, q).await? {
            ProxyResponse::Page { items, truncated } => Ok((items, truncated)),
            other => Err(Fail::from_wire(crate::backend::unexpected(other).to_wire())),
        }
    }

    /// Count, bytes and newest time of a container's objects: a walk of its listing,
    /// kept until the next write to it.
    async fn totals(&self, c: &str) -> Result<Totals, Fail> {
        let (at, cached) = self.proxy.containers.cached_totals(c);
        if let Some(t) = cached {
            return Ok(t);
        }
        let t = self.count(c).await?;
        self.proxy.containers.store_totals(c, at, t);
        Ok(t)
    }

    async fn count(&self, c: &str) -> Result<Totals, Fail> {
        let mut t = Totals::default();
        let mut q = ListQuery {
            user: c.to_owned(),
            limit: MAX_LIST_LIMIT,
            ..Default::default()
        };
        loop {
            let (items, more) = self.page(q.clone()).await?;
            for i in &items {
                if let ListItem::Object(m) = i {
                    t.count += 1;
                    t.bytes += m.size;
                    t.newest = t.newest.max(m.timestamp);
                }
            }
            match items.last() {
                Some(last) if more => q.marker = last.key().to_owned(),
                _ => return Ok(t),
            }
        }
    }

    /// Every container: users with objects, and containers with a record.
    async fn container_names(&self) -> Result<Vec<String>, Fail> {
        Ok(crate::object::user_names(&self.proxy).await?)
    }

    async fn account(&self, req: Req) -> Answer {
        match *req.method() {
            Method::HEAD | Method::GET => {}
            Method::POST => {
                let u = http::meta_update(req.headers(), "account")
                    .map_err(|e| Fail::bad_request(e.0))?;
                let mut meta = self.proxy.containers.account_meta();
                u.apply(&mut meta);
                check_meta(&meta)?;
                self.proxy.containers.post_account(&u)?;
                return Ok(Reply::new(StatusCode::NO_CONTENT).done());
            }
            Method::PUT | Method::DELETE => return Err(Fail::forbidden()),
            _ => return Err(Fail::method_not_allowed("HEAD, GET, POST")),
        }
        let params = http::parse_query(req.uri().query())
            .map_err(|_| Fail::precondition("Invalid UTF8 or contains NULL"))?;
        let lp = ListParams::parse(&params)?;
        let names = self.container_names().await?;
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut totals = BTreeMap::new();
        for n in &names {
            let t = self.totals(n).await?;
            count += t.count;
            bytes += t.bytes;
            totals.insert(n.clone(), t);
        }
        let listing = req.method() == Method::GET;
        let rows: Vec<format::AccountEntry> = if listing {
            lp.select_names(&names)
                .into_iter()
                .map(|k| match k {
                    ListKey::Prefix(p) => format::AccountEntry::Subdir(p),
                    ListKey::Name(n) => {
                        let t = totals.get(&n).copied().unwrap_or_default();
                        let modified = self
                            .proxy
                            .containers
                            .get(&n)
                            .map_or(t.newest, |c| c.modified);
                        format::AccountEntry::Container(ContainerRow {
                            name: n,
                            count: t.count,
                            bytes: t.bytes,
                            last_modified: modified,
                        })
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        // Delimited account listings roll container names up like object names.
        let mut r = Reply::new(StatusCode::NO_CONTENT)
            .header("x-account-container-count", names.len().to_string())
            .header("x-account-object-count", count.to_string())
            .header("x-account-bytes-used", bytes.to_string())
            .header("x-timestamp", http::x_timestamp(self.proxy_started()))
            .header("x-put-timestamp", http::x_timestamp(self.proxy_started()))
            .header("accept-ranges", "bytes")
            .meta("x-account-meta-", &self.proxy.containers.account_meta());
        if !listing {
            return Ok(r.header("content-type", "text/plain; charset=utf-8").done());
        }
        let fmt = Format::choose(
            params.get("format").map(String::as_str),
            req.headers().get("accept").and_then(|v| v.to_str().ok()),
        );
        r = r.header("content-type", fmt.content_type());
        Ok(match format::containers(fmt, &rows) {
            None => r.done(),
            Some(text) => {
                let mut resp = r.body(Body::text(text));
                *resp.status_mut() = StatusCode::OK;
                resp
            }
        })
    }

    fn proxy_started(&self) -> u64 {
        let up = self.proxy.started.elapsed().as_micros() as u64;
        now_micros().saturating_sub(up)
    }

    async fn container(&self, req: Req, c: &str) -> Answer {
        let proxy = &self.proxy;
        match *req.method() {
            Method::PUT => {
                if let Some(p) = req.headers().get("x-storage-policy") {
                    // Empty: the default policy, the only one there is.
                    if !p.is_empty() && !p.as_bytes().eq_ignore_ascii_case(b"Policy-0") {
                        return Err(Fail::bad_request("Invalid X-Storage-Policy"));
                    }
                }
                let u = http::meta_update(req.headers(), "container")
                    .map_err(|e| Fail::bad_request(e.0))?;
                let mut meta = proxy.containers.get(c).map(|r| r.meta).unwrap_or_default();
                u.apply(&mut meta);
                check_meta(&meta)?;
                let created = proxy.containers.put(c, now_micros(), &u)?;
                let status = if created && !self.has_objects(c).await? {
                    StatusCode::CREATED
                } else {
                    StatusCode::ACCEPTED
                };
                Ok(Reply::new(status).done())
            }
            Method::POST => {
                if !self.container_exists(c).await? {
                    return Err(Fail::not_found());
                }
                let u = http::meta_update(req.headers(), "container")
                    .map_err(|e| Fail::bad_request(e.0))?;
                let mut meta = proxy.containers.get(c).map(|r| r.meta).unwrap_or_default();
                u.apply(&mut meta);
                check_meta(&meta)?;
                proxy.containers.post(c, now_micros(), &u)?;
                Ok(Reply::new(StatusCode::NO_CONTENT).done())
            }
            Method::DELETE => {
                if self.has_objects(c).await? {
                    return Err(Fail::new(
                        StatusCode::CONFLICT,
                        "<html><h1>Conflict</h1><p>There was a conflict when trying to \
                         complete your request.</p></html>",
                    ));
                }
                if proxy.containers.remove(c)? {
                    Ok(Reply::new(StatusCode::NO_CONTENT).done())
                } else {
                    Err(Fail::not_found())
                }
            }
            Method::HEAD | Method::GET => self.container_read(req, c).await,
            _ => Err(Fail::method_not_allowed("HEAD, GET, PUT, POST, DELETE")),
        }
    }

    async fn container_read(&self, req: Req, c: &str) -> Answer {
        if !self.container_exists(c).await? {
            return Err(Fail::not_found());
        }
        let params = http::parse_query(req.uri().query())
            .map_err(|_| Fail::precondition("Invalid UTF8 or contains NULL"))?;
        let lp = ListParams::parse(&params)?;
        let record = self.proxy.containers.get(c).unwrap_or_default();
        let t = self.totals(c).await?;
        let r = Reply::new(StatusCode::NO_CONTENT)
            .header("x-container-object-count", t.count.to_string())
            .header("x-container-bytes-used", t.bytes.to_string())
            .header("x-timestamp", http::x_timestamp(record.created))
            .header("x-put-timestamp", http::x_timestamp(record.created))
            .header(
                "last-modified",
                http::http_date(http::last_modified(record.modified.max(record.created))),
            )
            .header("x-storage-policy", "Policy-0")
            .header("accept-ranges", "bytes")
            .meta("x-container-meta-", &record.meta);
        if req.method() == Method::HEAD {
            return Ok(r.header("content-type", "text/plain; charset=utf-8").done());
        }
        let fmt = Format::choose(
            params.get("format").map(String::as_str),
            req.headers().get("accept").and_then(|v| v.to_str().ok()),
        );
        let items = self.list_objects(c, &lp).await?;
        let r = r.header("content-type", fmt.content_type());
        Ok(match format::objects(fmt, c, &items) {
            None => r.done(),
            Some(text) => {
                let mut resp = r.body(Body::text(text));
                *resp.status_mut() = StatusCode::OK;
                resp
            }
        })
    }

    /// A container's listing page as Swift answers it: forwards in pages of the merged
    /// listing; a multi-character delimiter is rolled up here; `reverse` collects the
    /// bounded range and turns it round.
    async fn list_objects(&self, c: &str, lp: &ListParams) -> Result<Vec<ListItem>, Fail> {
        let single = {
            let mut ch = lp.delimiter.chars();
            match (ch.next(), ch.next()) {
                (Some(d), None) => Some(d),
                _ => None,
            }
        };
        let multi = (single.is_none() && !lp.delimiter.is_empty()).then(|| lp.delimiter.clone());
        let (marker, end_marker) = lp.bounds();
        let want = if lp.reverse { usize::MAX } else { lp.limit };
        let mut q = ListQuery {
            user: c.to_owned(),
            prefix: lp.prefix.clone(),
            delimiter: single,
            marker,
            end_marker,
            limit: MAX_LIST_LIMIT,
        };
        let mut out: Vec<ListItem> = Vec::new();
        'pages: while out.len() < want {
            let (items, more) = self.page(q.clone()).await?;
            let Some(last) = items.last().map(|i| i.key().to_owned()) else {
                break;
            };
            q.marker = last;
            let mut rolled = false;
            for i in items {
                if let (Some(d), ListItem::Object(m)) = (&multi, &i) {
                    let rest = m.name.file().get(lp.prefix.len()..).unwrap_or("");
                    if let Some(at) = rest.find(d.as_str()) {
                        let p = format!("{}{}", lp.prefix, &rest[..at + d.len()]);
                        // Ask again past everything under this prefix.
                        q.marker = format!("{p}{}", char::MAX);
                        out.push(ListItem::Prefix(p));
                        rolled = true;
                        break;
                    }
                }
                out.push(i);
                if out.len() >= want {
                    break 'pages;
                }
            }
            if !more && !rolled {
                break;
            }
        }
        out.truncate(want);
        if lp.reverse {
            out.reverse();
            out.truncate(lp.limit);
        }
        Ok(out)
    }
}

/// Checks metadata against Swift's limits (the same as objects').
fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), Fail> {
    Attrs {
        content_type: String::new(),
        meta: meta.clone(),
    }
    .validate()
    .map_err(|e| Fail::bad_request(e.to_string()))
}

/// An entry of the account's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKey {
    Name(String),
    Prefix(String),
}

/// A listing's query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    pub limit: usize,
    pub marker: String,
    pub end_marker: String,
    pub prefix: String,
    pub delimiter: String,
    pub reverse: bool,
}

impl ListParams {
    pub fn parse(p: &BTreeMap<String, String>) -> Result<Self, Fail> {
        // As Swift: a limit that is not all digits is ignored.
        let limit = match p.get("limit").map(|l| l.trim()) {
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                match l.parse::<u64>() {
                    Ok(n) if n <= u64::from(MAX_LIST_LIMIT) => n as usize,
                    _ => {
                        return Err(Fail::precondition(format!(
                            "Maximum limit is {MAX_LIST_LIMIT}"
                        )))
                    }
                }
            }
            _ => MAX_LIST_LIMIT as usize,
        };
        let s = |k: &str| p.get(k).cloned().unwrap_or_default();
        let reverse = matches!(
            p.get("reverse").map(|v| v.to_ascii_lowercase()).as_deref(),
            Some("true" | "1" | "yes" | "on" | "t" | "y")
        );
        for v in [s("marker"), s("end_marker"), s("prefix")] {
            if v.len() > MAX_FILE_LEN + 1 {
                return Err(Fail::precondition("Marker or prefix is too long"));
            }
        }
        Ok(ListParams {
            limit,
            marker: s("marker"),
            end_marker: s("end_marker"),
            prefix: s("prefix"),
            delimiter: s("delimiter"),
            reverse,
        })
    }

    /// The exclusive (lower, upper) bounds of the names listed, in oss's sort order
    /// (`reverse` swaps what `marker` and `end_marker` bound); empty for none.
    pub fn bounds(&self) -> (String, String) {
        let (lo, hi) = if self.reverse {
            (&self.end_marker, &self.marker)
        } else {
            (&self.marker, &self.end_marker)
        };
        (http::lower_bound(lo), http::upper_bound(hi))
    }

    /// The page of `names` (sorted) these parameters select: the account's listing, names
    /// and (with a delimiter) rolled-up prefixes.
    pub fn select_names(&self, names: &[String]) -> Vec<ListKey> {
        let (lo, hi) = self.bounds();
        let mut v: Vec<ListKey> = Vec::new();
        for n in names {
            if !n.starts_with(&self.prefix)
                || (!lo.is_empty() && n.as_str() <= lo.as_str())
                || (!hi.is_empty() && n.as_str() >= hi.as_str())
            {
                continue;
            }
            let key = match (!self.delimiter.is_empty())
                .then(|| n[self.prefix.len()..].find(self.delimiter.as_str()))
                .flatten()
            {
                Some(at) => {
                    ListKey::Prefix(n[..self.prefix.len() + at + self.delimiter.len()].to_owned())
                }
                None => ListKey::Name(n.clone()),
            };
            if v.last() != Some(&key) {
                v.push(key);
            }
        }
        if self.reverse {
            v.reverse();
        }
        v.truncate(self.limit);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<ListParams, Fail> {
        ListParams::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn listing_parameters() {
        assert_eq!(params(&[]).unwrap().limit, 10_000);
        assert_eq!(params(&[("limit", "0")]).unwrap().limit, 0);
        for bad in ["10001", "99999999999999999999999"] {
            let f = params(&[("limit", bad)]).unwrap_err();
            assert_eq!(f.status, StatusCode::PRECONDITION_FAILED, "{bad}");
        }
        // Not digits: ignored, as Swift does.
        for odd in ["-1", "x", "5000.0"] {
            assert_eq!(params(&[("limit", odd)]).unwrap().limit, 10_000, "{odd}");
        }
        assert!(params(&[("reverse", "true")]).unwrap().reverse);
        assert!(!params(&[("reverse", "no")]).unwrap().reverse);
    }

    #[test]
    fn account_pages() {
        let names: Vec<String> = ["a", "b-1", "b-2", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sel = |pairs: &[(&str, &str)]| {
            params(pairs)
                .unwrap()
                .select_names(&names)
                .into_iter()
                .map(|k| match k {
                    ListKey::Name(n) => n,
                    ListKey::Prefix(p) => format!("{p}/"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(sel(&[]), names);
        assert_eq!(sel(&[("marker", "a"), ("limit", "2")]), ["b-1", "b-2"]);
        assert_eq!(sel(&[("prefix", "b")]), ["b-1", "b-2"]);
        assert_eq!(sel(&[("delimiter", "-")]), ["a", "b-/", "c"]);
        // NUL in a marker: "just after", and an end_marker "up to, included".
        assert_eq!(sel(&[("marker", "b-1\0")]), ["b-2", "c"]);
        assert_eq!(sel(&[("end_marker", "b-1\0")]), ["a", "b-1"]);
        assert_eq!(
            sel(&[("reverse", "on"), ("marker", "b-2\0"), ("end_marker", "a")]),
            ["b-2", "b-1"]
        );
        assert_eq!(sel(&[("end_marker", "b-2")]), ["a", "b-1"]);
        assert_eq!(sel(&[("reverse", "on")]), ["c", "b-2", "b-1", "a"]);
        assert_eq!(
            sel(&[("reverse", "on"), ("marker", "c"), ("end_marker", "a")]),
            ["b-2", "b-1"]
        );
    }

    #[test]
    fn wire_errors_map_to_swift_statuses() {
        let st = |e| Fail::from_wire(e).status.as_u16();
        assert_eq!(st(WireError::NotFound), 404);
        assert_eq!(
            st(WireError::Md5Mismatch {
                expected: "a".into(),
                actual: "b".into()
            }),
            422
        );
        assert_eq!(st(WireError::Unavailable("x".into())), 503);
        assert_eq!(st(WireError::DiskFull), 507);
        assert_eq!(st(WireError::PermissionDenied("x".into())), 403);
        assert_eq!(st(WireError::BadRequest("x".into())), 400);
        assert_eq!(raw_account("/v1/AUTH_x\"y/c"), "AUTH_xy");
    }
}
