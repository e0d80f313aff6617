//! A tiny in-memory proxy for unit tests of the commands: just enough of the protocol to
//! upload, download, stat, delete, list (prefix, delimiter, marker, limit) and copy, and to
//! count connections and listing pages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::net::TcpListener;

use oss_proto::auth::Verifier;
use oss_proto::wire::{
    Chunk, ClientRequest, Connection, Credentials, ListItem, ListKey, ListQuery, Response,
    UploadTrailer, CHUNK,
};
use oss_proto::{ObjectMeta, ObjectName, WireError};

#[derive(Default)]
pub struct State {
    pub objects: Mutex<BTreeMap<ObjectName, (ObjectMeta, Vec<u8>)>>,
    pub connections: AtomicUsize,
    /// Downloads send a body with one byte flipped, as a corrupt replica would.
    pub corrupt: std::sync::atomic::AtomicBool,
    /// Each delete takes this long, so concurrent requests overlap.
    pub delete_delay: Mutex<Duration>,
    /// When not 0, no listing page holds more entries than this (to exercise paging).
    pub page_limit: AtomicUsize,
    /// Listing pages served.
    pub pages: AtomicUsize,
}

/// The key every test client logs in to the fake with.
pub fn creds() -> Credentials {
    Credentials::from_key_line(format!("alice:{}", "5".repeat(64)).as_bytes()).unwrap()
}

/// Starts the fake proxy on a loopback port; returns its address and shared state.
pub async fn start() -> (String, Arc<State>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let st = Arc::new(State::default());
    let st2 = st.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            st2.connections.fetch_add(1, Ordering::SeqCst);
            let st = st2.clone();
            tokio::spawn(async move {
                let mut c = Connection::new(s);
                let v = Verifier::new(&creds().key);
                if c.accept_hello(&creds().key, |_| Some(v)).await.is_err() {
                    return;
                }
                while let Ok(Some(req)) = c.read_header::<ClientRequest>().await {
                    if serve(&st, &mut c, req).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, st)
}

async fn serve(st: &State, c: &mut Connection, req: ClientRequest) -> oss_proto::wire::Result<()> {
    match req {
        ClientRequest::Upload { name, attrs, .. } => {
            let mut body = Vec::new();
            let mut buf = Vec::new();
            loop {
                match c.read_chunk(&mut buf).await? {
                    Chunk::Data(n) => body.extend_from_slice(&buf[..n]),
                    Chunk::End => break,
                    Chunk::Abort(_) => return Ok(()),
                }
            }
            let t: UploadTrailer = c.expect_header().await?;
            let meta = ObjectMeta {
                name: name.clone(),
                size: body.len() as u64,
                md5: Md5::digest(&body).into(),
                timestamp: oss_proto::wire::now_micros(),
                deleted: false,
                attrs,
            };
            if Some(meta.md5) != t.md5 {
                c.write_header(&Response::Error(WireError::BadRequest("md5".into())))
                    .await?;
            } else {
                st.objects
                    .lock()
                    .unwrap()
                    .insert(name, (meta.clone(), body));
                c.write_header(&Response::Stored(meta)).await?;
            }
        }
        ClientRequest::Download { name, .. } => {
            let found = st.objects.lock().unwrap().get(&name).cloned();
            match found {
                None => {
                    c.write_header(&Response::Error(WireError::NotFound))
                        .await?
                }
                Some((meta, mut body)) => {
                    if st.corrupt.load(Ordering::SeqCst) && !body.is_empty() {
                        body[0] ^= 1;
                    }
                    let len = meta.size;
                    c.write_header(&Response::Object {
                        meta,
                        offset: 0,
                        len,
                    })
                    .await?;
                    for chunk in body.chunks(CHUNK) {
                        c.write_data(chunk).await?;
                    }
                    c.write_end().await?;
                }
            }
        }
        ClientRequest::Stat { name } => {
            let found = st.objects.lock().unwrap().get(&name).map(|o| o.0.clone());
            match found {
                None => {
                    c.write_header(&Response::Error(WireError::NotFound))
                        .await?
                }
                Some(meta) => {
                    let len = meta.size;
                    c.write_header(&Response::Object {
                        meta,
                        offset: 0,
                        len,
                    })
                    .await?
                }
            }
        }
        ClientRequest::Delete { name } => {
            let delay = *st.delete_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let existed = st.objects.lock().unwrap().remove(&name).is_some();
            c.write_header(&Response::Deleted { existed }).await?;
        }
        ClientRequest::List(q) => {
            st.pages.fetch_add(1, Ordering::SeqCst);
            let resp = match q.validate() {
                Ok(limit) => {
                    let cap = st.page_limit.load(Ordering::SeqCst);
                    let limit = if cap == 0 { limit } else { limit.min(cap) };
                    let (items, truncated) = page(&st.objects.lock().unwrap(), &q, limit);
                    Response::Page { items, truncated }
                }
                Err(e) => Response::Error(e),
            };
            c.write_header(&resp).await?;
        }
        ClientRequest::Copy { src, dst, attrs } => {
            let resp = {
                let mut objects = st.objects.lock().unwrap();
                match objects.get(&src).cloned() {
                    None => Response::Error(WireError::NotFound),
                    Some((mut meta, body)) => {
                        meta.name = dst.clone();
                        meta.timestamp = oss_proto::wire::now_micros();
                        if let Some(a) = attrs {
                            meta.attrs = a;
                        }
                        objects.insert(dst, (meta.clone(), body));
                        Response::Stored(meta)
                    }
                }
            };
            c.write_header(&resp).await?;
        }
        _ => {
            c.write_header(&Response::Error(WireError::BadRequest("fake".into())))
                .await?
        }
    }
    c.flush().await
}

/// One listing page, the simple way: every name of the user in order, rolled up at the
/// delimiter, keys after the marker (so a prefix the last page ended with is not repeated).
fn page(
    objects: &BTreeMap<ObjectName, (ObjectMeta, Vec<u8>)>,
    q: &ListQuery,
    limit: usize,
) -> (Vec<ListItem>, bool) {
    let mut items: Vec<ListItem> = Vec::new();
    for (m, _) in objects.values() {
        let file = m.name.file();
        if m.name.user() != q.user || !file.starts_with(&q.prefix) {
            continue;
        }
        let item = match q.roll_up(file) {
            ListKey::Name(_) => ListItem::Object(m.clone()),
            ListKey::Prefix(p) => ListItem::Prefix(p.to_owned()),
        };
        let key = item.key();
        let after_marker = key > q.marker.as_str();
        let before_end = q.end_marker.is_empty() || key < q.end_marker.as_str();
        if after_marker && before_end && items.last().is_none_or(|l| l.key() != key) {
            items.push(item);
        }
    }
    let truncated = items.len() > limit;
    items.truncate(limit);
    (items, truncated)
}
