//! A tiny in-memory proxy for unit tests of the commands: just enough of the protocol to
//! upload, download, stat, delete and list, and to count connections.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::net::TcpListener;

use oss_proto::wire::{Chunk, ClientRequest, Connection, Response, UploadTrailer, CHUNK};
use oss_proto::{ObjectMeta, ObjectName, WireError};

#[derive(Default)]
pub struct State {
    pub objects: Mutex<BTreeMap<ObjectName, (ObjectMeta, Vec<u8>)>>,
    pub connections: AtomicUsize,
    /// Downloads send a body with one byte flipped, as a corrupt replica would.
    pub corrupt: std::sync::atomic::AtomicBool,
    /// Each delete takes this long, so concurrent requests overlap.
    pub delete_delay: Mutex<Duration>,
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
                if c.accept_hello().await.is_err() {
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
        ClientRequest::Upload { name, .. } => {
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
            };
            if meta.md5 != t.md5 {
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
        ClientRequest::List { user } => {
            let entries = st
                .objects
                .lock()
                .unwrap()
                .values()
                .filter(|(m, _)| m.name.user() == user)
                .map(|(m, _)| m.clone())
                .collect();
            c.write_header(&Response::Listing {
                entries,
                more: false,
            })
            .await?;
        }
        _ => {
            c.write_header(&Response::Error(WireError::BadRequest("fake".into())))
                .await?
        }
    }
    c.flush().await
}
