//! Talking to storage servers: pooled connections, deadlines, failure accounting.
//!
//! Every storage call goes through here, so every one has a connect deadline and an
//! answer deadline (a hung server must not hang a client), and every transport failure is
//! reported to [`Health`], which is how "failed requests count" towards declaring a server
//! offline.

use oss_proto::sync::Locked;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oss_proto::wire::{
    Chunk, Connection, Credentials, DiskStats, Error, ObjectMeta, Response, Result, StorageRequest,
    WireError,
};
use oss_proto::ObjectName;

use crate::health::Health;

/// Idle connections kept per storage server.
const POOL_MAX: usize = 64;

pub struct Backends {
    pools: Mutex<HashMap<String, Vec<Connection>>>,
    /// The cluster user and secret every storage connection logs in with.
    creds: Credentials,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub stream_timeout: Duration,
    pub commit_timeout: Duration,
    pub health: Arc<Health>,
}

impl Backends {
    pub fn new(cfg: &crate::config::Config, health: Arc<Health>) -> Self {
        Backends {
            pools: Mutex::new(HashMap::new()),
            creds: Credentials::cluster(cfg.secret.clone()),
            connect_timeout: cfg.connect_timeout,
            io_timeout: cfg.io_timeout,
            stream_timeout: cfg.stream_timeout,
            commit_timeout: cfg.commit_timeout,
            health,
        }
    }

    /// A pooled connection if a live one is idle, else a new one.
    pub async fn conn(&self, addr: &str) -> Result<Connection> {
        loop {
            let pooled = self
                .pools
                .lock()
                .unwrap()
                .get_mut(addr)
                .and_then(|v| v.pop());
            match pooled {
                Some(c) if c.is_reusable() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        match self.connect(addr).await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.failed(addr, &e);
                Err(e)
            }
        }
    }

    /// A new connection, logged in with the cluster secret. A server that refuses the
    /// secret, or cannot prove it knows it, is a "secret mismatch": counted as a failure
    /// (it must not be used), and said so in the error.
    async fn connect(&self, addr: &str) -> Result<Connection> {
        match Connection::connect(addr, self.connect_timeout, &self.creds).await {
            Err(Error::Remote(WireError::AuthFailed(why))) => {
                let e = WireError::AuthFailed(format!(
                    "secret mismatch: {addr} does not share this proxy's cluster secret ({why})"
                ));
                self.health.request_failed(addr, &e.to_string());
                Err(Error::Remote(e))
            }
            r => r,
        }
    }

    pub fn put_back(&self, addr: &str, c: Connection) {
        let mut pools = self.pools.locked();
        let v = pools.entry(addr.to_owned()).or_default();
        if v.len() < POOL_MAX {
            v.push(c);
        }
    }

    /// Forget idle connections to a server (it restarted or left).
    pub fn forget(&self, addr: &str) {
        self.pools.locked().remove(addr);
    }

    /// Records a transport failure (not a remote error answer, which proves the server is up).
    pub fn failed(&self, addr: &str, e: &Error) {
        if !matches!(e, Error::Remote(_)) {
            self.health.request_failed(addr, &e.to_string());
        }
    }

    /// Awaits `f` with the answer deadline.
    pub async fn timed<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        within(self.io_timeout, f).await
    }

    /// Awaits one step of a body stream with the stream deadline.
    pub async fn streamed<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        within(self.stream_timeout, f).await
    }

    /// Awaits the answer to a finished upload with the commit deadline.
    pub async fn committed<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        within(self.commit_timeout, f).await
    }

    /// One request with a header-only answer.
    pub async fn call(&self, addr: &str, req: &StorageRequest) -> Result<Response> {
        self.call_within(addr, req, self.io_timeout).await
    }

    /// [`Backends::call`] with its own deadline (an audit pass takes minutes, not seconds).
    pub async fn call_within(
        &self,
        addr: &str,
        req: &StorageRequest,
        deadline: Duration,
    ) -> Result<Response> {
        let mut c = self.conn(addr).await?;
        let r = tokio::time::timeout(deadline, async {
            c.write_header(req).await?;
            c.flush().await?;
            c.read_response().await
        })
        .await
        .unwrap_or(Err(Error::Timeout));
        self.settle(addr, c, r)
    }

    /// After a request/answer exchange: a connection that answered (even with an error
    /// value) is clean and goes back to the pool; a transport failure drops it and counts
    /// against the server's health.
    fn settle<T>(&self, addr: &str, c: Connection, r: Result<T>) -> Result<T> {
        match &r {
            Ok(_) | Err(Error::Remote(_)) => self.put_back(addr, c),
            Err(e) => self.failed(addr, e),
        }
        r
    }

    /// The held version (live or tombstone) of a name, `None` if the server has none.
    pub async fn head(
        &self,
        addr: &str,
        name: &ObjectName,
        part: u32,
    ) -> Result<Option<ObjectMeta>> {
        match self
            .call(
                addr,
                &StorageRequest::Head {
                    name: name.clone(),
                    part,
                },
            )
            .await
        {
            Ok(Response::Object { meta, .. }) => Ok(Some(meta)),
            Ok(other) => Err(unexpected(other)),
            Err(Error::Remote(WireError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn ping(&self, addr: &str) -> Result<DiskStats> {
        // A fresh connection each time: a check must prove the server accepts connections.
        let mut c = self.connect(addr).await?;
        let r = tokio::time::timeout(self.connect_timeout, async {
            c.write_header(&StorageRequest::Ping).await?;
            c.flush().await?;
            c.read_response().await
        })
        .await
        .unwrap_or(Err(Error::Timeout))?;
        self.put_back(addr, c);
        match r {
            Response::Pong(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a `Get` and reads its answer: the connection, positioned at the body, when the
    /// server answered `Object`. A refusal (`NotFound`, `Stale`, `Corrupt`) comes back as
    /// `Error::Remote` with the connection kept for reuse; a broken one is counted as a failure.
    pub async fn open_get(&self, addr: &str, get: &StorageRequest) -> Result<Connection> {
        let mut c = self.conn(addr).await?;
        let opened = self
            .timed(async {
                c.write_header(get).await?;
                c.flush().await?;
                c.read_response().await
            })
            .await;
        match opened {
            Ok(Response::Object { .. }) => Ok(c),
            Ok(other) => Err(unexpected(other)),
            Err(Error::Remote(e)) => {
                self.put_back(addr, c);
                Err(Error::Remote(e))
            }
            Err(e) => {
                self.failed(addr, &e);
                Err(e)
            }
        }
    }

    /// A paged listing (`ListPartition`), all pages collected.
    pub async fn list(&self, addr: &str, req: &StorageRequest) -> Result<Vec<ObjectMeta>> {
        let mut c = self.conn(addr).await?;
        let r = self
            .timed(async {
                c.write_header(req).await?;
                c.flush().await?;
                let mut all = Vec::new();
                loop {
                    match c.read_response().await? {
                        Response::Listing { entries, more } => {
                            all.extend(entries);
                            if !more {
                                return Ok(all);
                            }
                        }
                        other => return Err(unexpected(other)),
                    }
                }
            })
            .await;
        self.settle(addr, c, r)
    }

    /// Reads one body chunk with the stream deadline.
    pub async fn read_chunk(&self, c: &mut Connection, buf: &mut Vec<u8>) -> Result<Chunk> {
        self.streamed(c.read_chunk(buf)).await
    }
}

async fn within<T>(d: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or(Err(Error::Timeout))
}

pub fn unexpected(r: Response) -> Error {
    Error::Protocol(format!("unexpected storage answer {r:?}"))
}
