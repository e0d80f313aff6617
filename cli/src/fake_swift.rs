//! A tiny in-memory Swift for unit tests of [`crate::swift`] and `oss bench --swift`: a
//! tempauth login, containers, object PUT/GET/DELETE with ETags, JSON listings with
//! `limit`/`marker`/`prefix`; it counts connections and can misbehave on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use tokio::net::TcpListener;

pub const USER: &str = "test:tester";
pub const KEY: &str = "testing";
const TOKEN: &str = "AUTH_tk_fake";
const ACCOUNT: &str = "/v1/AUTH_test";

#[derive(Default)]
pub struct State {
    pub containers: Mutex<BTreeSet<String>>,
    pub objects: Mutex<BTreeMap<(String, String), Bytes>>,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// Answer every request with `Connection: close`.
    pub close_each: AtomicBool,
    /// Answer a wrong ETag on PUT and GET.
    pub bad_etag: AtomicBool,
    /// Ignore `marker` in listings (a broken server).
    pub ignore_marker: AtomicBool,
}

/// Starts the fake on a loopback port; returns its auth URL and shared state.
pub async fn start() -> (String, Arc<State>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let st = Arc::new(State::default());
    let st2 = st.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            st2.connections.fetch_add(1, Ordering::SeqCst);
            let st = st2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(serve(&st, addr, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/auth/v1.0"), st)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn reply(status: StatusCode, etag: Option<String>, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    if let Some(e) = etag {
        r = r.header("etag", e);
    }
    r.body(Full::new(body)).unwrap()
}

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

async fn serve(
    st: &State,
    addr: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut resp = route(st, addr, req).await;
    if st.close_each.load(Ordering::SeqCst) {
        resp.headers_mut()
            .insert("connection", "close".parse().unwrap());
    }
    resp
}

async fn route(
    st: &State,
    addr: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let empty = Bytes::new();
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let path = req.uri().path().to_owned();
    if path == "/auth/v1.0" {
        if h("x-auth-user") != USER || h("x-auth-key") != KEY {
            return reply(StatusCode::UNAUTHORIZED, None, Bytes::from("bad key"));
        }
        return Response::builder()
            .header("x-auth-token", TOKEN)
            .header("x-storage-url", format!("http://{addr}{ACCOUNT}"))
            .body(Full::new(empty))
            .unwrap();
    }
    if h("x-auth-token") != TOKEN {
        return reply(StatusCode::UNAUTHORIZED, None, Bytes::from("no token"));
    }
    let Some(rest) = path.strip_prefix(&format!("{ACCOUNT}/")) else {
        return reply(StatusCode::NOT_FOUND, None, empty);
    };
    let (container, object) = match rest.split_once('/') {
        Some((c, o)) => (decode(c), Some(decode(o))),
        None => (decode(rest), None),
    };
    let bad = st.bad_etag.load(Ordering::SeqCst);
    let etag = |b: &[u8]| Some(if bad { md5_hex(b"x") } else { md5_hex(b) });
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_owned();
    let Some(object) = object else {
        return match method {
            Method::PUT => {
                let _ = req.into_body().collect().await;
                if st.containers.lock().unwrap().insert(container) {
                    reply(StatusCode::CREATED, None, empty)
                } else {
                    reply(StatusCode::ACCEPTED, None, empty)
                }
            }
            Method::GET => listing(st, &container, &query),
            _ => reply(StatusCode::METHOD_NOT_ALLOWED, None, empty),
        };
    };
    let key = (container.clone(), object);
    match method {
        Method::PUT => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if !st.containers.lock().unwrap().contains(&container) {
                return reply(StatusCode::NOT_FOUND, None, empty);
            }
            let e = etag(&body);
            st.objects.lock().unwrap().insert(key, body);
            reply(StatusCode::CREATED, e, empty)
        }
        Method::GET => match st.objects.lock().unwrap().get(&key) {
            Some(b) => reply(
                StatusCode::OK,
                etag(b).map(|e| format!("\"{e}\"")),
                b.clone(),
            ),
            None => reply(
                StatusCode::NOT_FOUND,
                None,
                Bytes::from("<html>Not Found</html>"),
            ),
        },
        Method::DELETE => match st.objects.lock().unwrap().remove(&key) {
            Some(_) => reply(StatusCode::NO_CONTENT, None, empty),
            None => reply(StatusCode::NOT_FOUND, None, empty),
        },
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, None, empty),
    }
}

fn listing(st: &State, container: &str, query: &str) -> Response<Full<Bytes>> {
    if !st.containers.lock().unwrap().contains(container) {
        return reply(StatusCode::NOT_FOUND, None, Bytes::new());
    }
    let (mut limit, mut marker, mut prefix) = (10_000usize, String::new(), String::new());
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "limit" => limit = v.parse().unwrap(),
            "marker" => marker = decode(v),
            "prefix" => prefix = decode(v),
            _ => {}
        }
    }
    if st.ignore_marker.load(Ordering::SeqCst) {
        marker.clear();
    }
    let objects = st.objects.lock().unwrap();
    let names: Vec<serde_json::Value> = objects
        .iter()
        .filter(|((c, o), _)| c == container && o.as_str() > marker.as_str())
        .filter(|((_, o), _)| o.starts_with(&prefix))
        .take(limit)
        .map(|((_, o), b)| serde_json::json!({"name": o, "bytes": b.len(), "hash": md5_hex(b)}))
        .collect();
    reply(
        StatusCode::OK,
        None,
        Bytes::from(serde_json::Value::Array(names).to_string()),
    )
}
