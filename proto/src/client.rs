//! The async client of the proxy, used by `oss` and `ossfs`.
//!
//! A [`Client`] keeps a small pool of handshaken connections so that many small requests do
//! not each pay for a TCP connect and a handshake. A connection goes back to the pool only
//! after a request completed cleanly; anything that went wrong mid-stream closes it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::name::ObjectName;
use crate::wire::{
    Attrs, Chunk, ClientRequest, ClusterStatus, Connection, Credentials, Error, ListItem,
    ListQuery, ObjectMeta, ReplicaState, Response, Result, UploadTrailer, WireError, CHUNK,
};

/// Where `oss` and `ossfs` look for the proxy when neither `--proxy` nor `$OSS_PROXY` is set.
pub const DEFAULT_PROXY: &str = "127.0.0.1:8080";
/// The environment variable naming the key file when `--key-file` is not given.
pub const KEY_FILE_ENV: &str = "OSS_KEY_FILE";

/// Why no credentials could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("no key: {0} does not exist (pass --key-file FILE or set OSS_KEY_FILE)")]
    Missing(PathBuf),
    #[error("cannot read the key file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("the key file {0} holds no key: {1}")]
    Malformed(PathBuf, crate::auth::KeyError),
    #[error("no key: neither --key-file, OSS_KEY_FILE, XDG_CONFIG_HOME nor HOME is set")]
    NoHome,
}

/// Where the key is: `flag` (`--key-file`), else `$OSS_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/oss/key`, else `~/.config/oss/key`.
pub fn key_file_path(flag: Option<&Path>) -> std::result::Result<PathBuf, KeyFileError> {
    if let Some(f) = flag {
        return Ok(f.to_path_buf());
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(f) = env(KEY_FILE_ENV) {
        return Ok(PathBuf::from(f));
    }
    if let Some(x) = env("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("oss").join("key"));
    }
    let home = env("HOME").ok_or(KeyFileError::NoHome)?;
    Ok(PathBuf::from(home).join(".config").join("oss").join("key"))
}

/// Reads the credentials (`NAME:KEY`, one line) from where [`key_file_path`] says.
pub fn load_credentials(flag: Option<&Path>) -> std::result::Result<Credentials, KeyFileError> {
    let path = key_file_path(flag)?;
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing(path))
        }
        Err(e) => return Err(KeyFileError::Read(path, e)),
    };
    Credentials::from_key_line(&text).map_err(|e| KeyFileError::Malformed(path, e))
}
/// Idle connections kept per client.
const POOL_MAX: usize = 32;

pub struct Client {
    addr: String,
    creds: Credentials,
    connect_timeout: Duration,
    pool: Mutex<Vec<Connection>>,
}

/// Called with the number of body bytes moved so far.
pub type ProgressFn<'a> = &'a mut (dyn FnMut(u64) + Send);

impl Client {
    pub fn new(addr: impl Into<String>, creds: Credentials) -> Self {
        Client {
            addr: addr.into(),
            creds,
            connect_timeout: Duration::from_secs(5),
            pool: Mutex::new(Vec::new()),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn conn(&self) -> Result<Connection> {
        loop {
            let pooled = self.pool.lock().unwrap().pop();
            match pooled {
                Some(c) if c.is_reusable() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        Connection::connect(&self.addr, self.connect_timeout, &self.creds)
            .await
            .map_err(|e| match e {
                Error::Io(io) => Error::Remote(WireError::Unavailable(format!(
                    "cannot reach the proxy at {}: {io}",
                    self.addr
                ))),
                Error::Timeout => Error::Remote(WireError::Unavailable(format!(
                    "cannot reach the proxy at {}: timed out",
                    self.addr
                ))),
                e => e,
            })
    }

    fn put_back(&self, c: Connection) {
        let mut pool = self.pool.lock().unwrap();
        if pool.len() < POOL_MAX {
            pool.push(c);
        }
    }

    /// One request, one header answer, no body either way. Retries once on a pooled
    /// connection that the proxy closed while it sat idle.
    async fn call(&self, req: &ClientRequest) -> Result<Response> {
        for attempt in 0..2 {
            let mut c = self.conn().await?;
            let sent = async {
                c.write_header(req).await?;
                c.flush().await
            }
            .await;
            let r = match sent {
                Ok(()) => c.read_response().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(resp) => {
                    self.put_back(c);
                    return Ok(resp);
                }
                Err(Error::Remote(e)) => {
                    self.put_back(c);
                    return Err(Error::Remote(e));
                }
                Err(Error::Closed) | Err(Error::Io(_)) if attempt == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Closed)
    }

    /// Uploads `reader` as `name`. `size` is a hint the proxy checks; `None` for unknown
    /// (stdin). Answers only when every replica is durable.
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        name: &ObjectName,
        size: Option<u64>,
        reader: &mut R,
        progress: ProgressFn<'_>,
    ) -> Result<ObjectMeta> {
        self.upload_with(name, size, Attrs::default(), reader, progress)
            .await
    }

    /// [`Client::upload`] with a content type and metadata stored alongside.
    pub async fn upload_with<R: AsyncRead + Unpin>(
        &self,
        name: &ObjectName,
        size: Option<u64>,
        attrs: Attrs,
        reader: &mut R,
        progress: ProgressFn<'_>,
    ) -> Result<ObjectMeta> {
        let mut c = self.conn().await?;
        let sent = async {
            c.write_header(&ClientRequest::Upload {
                name: name.clone(),
                size,
                attrs,
            })
            .await?;
            let mut md5 = PipelinedMd5::new();
            let mut total = 0u64;
            loop {
                let mut buf = md5.buffer();
                // Returned buffers keep their length: no zero-filling on the hot path.
                if buf.len() < CHUNK {
                    buf.resize(CHUNK, 0);
                }
                let n = read_full(reader, &mut buf).await?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                c.write_data(&buf).await?;
                md5.feed(buf).await;
                total += n as u64;
                progress(total);
            }
            c.write_end().await?;
            c.write_header(&UploadTrailer {
                md5: Some(md5.finish().await),
            })
            .await?;
            c.flush().await
        }
        .await;
        match sent {
            Ok(()) => {}
            // A local read error: the proxy must not store a partial object. Closing the
            // connection without END makes it drop the upload.
            Err(Error::Io(e)) if !is_conn_error(&e) => return Err(Error::Io(e)),
            // The proxy may have answered (and closed) early; its reason beats "broken pipe".
            Err(e) => {
                return match c.read_response().await {
                    Err(Error::Remote(w)) => Err(Error::Remote(w)),
                    _ => Err(e),
                }
            }
        }
        match c.read_response().await? {
            Response::Stored(meta) => {
                self.put_back(c);
                Ok(meta)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Downloads `len` bytes (all if `None`) from `offset` into `writer`. A full download
    /// is checked against the object's MD5; a mismatch is [`WireError::Corrupt`].
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
        writer: &mut W,
        progress: ProgressFn<'_>,
    ) -> Result<ObjectMeta> {
        let mut c = self.conn().await?;
        c.write_header(&ClientRequest::Download {
            name: name.clone(),
            offset,
            len,
        })
        .await?;
        c.flush().await?;
        let (meta, got_offset, got_len) = match c.read_response().await {
            Ok(Response::Object { meta, offset, len }) => (meta, offset, len),
            Ok(other) => return Err(unexpected(other)),
            Err(Error::Remote(e)) => {
                self.put_back(c);
                return Err(Error::Remote(e));
            }
            Err(e) => return Err(e),
        };
        let whole = got_offset == 0 && got_len == meta.size;
        let mut md5 = whole.then(PipelinedMd5::new);
        let mut spare = Vec::with_capacity(CHUNK);
        let mut total = 0u64;
        loop {
            let mut buf = match md5.as_ref() {
                Some(m) => m.buffer(),
                None => std::mem::take(&mut spare),
            };
            match c.read_chunk(&mut buf).await? {
                Chunk::Data(n) => {
                    buf.truncate(n);
                    writer.write_all(&buf).await?;
                    total += n as u64;
                    progress(total);
                    match md5.as_mut() {
                        Some(m) => m.feed(buf).await,
                        None => spare = buf,
                    }
                }
                Chunk::End => break,
                Chunk::Abort(e) => return Err(Error::Remote(e)),
            }
        }
        if total != got_len {
            return Err(Error::Protocol(format!(
                "expected {got_len} bytes, got {total}"
            )));
        }
        if let Some(m) = md5 {
            let got: [u8; 16] = m.finish().await;
            if got != meta.md5 {
                return Err(Error::Remote(WireError::Corrupt(format!(
                    "{name}: MD5 of the received bytes does not match the stored MD5"
                ))));
            }
        }
        writer.flush().await?;
        self.put_back(c);
        Ok(meta)
    }

    /// Reads a range into memory (for small reads such as FUSE's); `len` is bounded by the caller.
    pub async fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: u64,
    ) -> Result<(ObjectMeta, Vec<u8>)> {
        let mut out = Vec::with_capacity(len.min(4 << 20) as usize);
        let meta = self
            .download(name, offset, Some(len), &mut out, &mut |_| {})
            .await?;
        Ok((meta, out))
    }

    pub async fn stat(&self, name: &ObjectName) -> Result<ObjectMeta> {
        match self
            .call(&ClientRequest::Stat { name: name.clone() })
            .await?
        {
            Response::Object { meta, .. } => Ok(meta),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes every replica. `Ok(false)`: there was nothing to delete.
    pub async fn delete(&self, name: &ObjectName) -> Result<bool> {
        match self
            .call(&ClientRequest::Delete { name: name.clone() })
            .await?
        {
            Response::Deleted { existed } => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    /// One listing page: live files and (with a delimiter) subdirectories, sorted by key.
    /// `truncated`: ask again with `marker` = the last item's key for more.
    pub async fn list_page(&self, query: &ListQuery) -> Result<(Vec<ListItem>, bool)> {
        match self.call(&ClientRequest::List(query.clone())).await? {
            Response::Page { items, truncated } => Ok((items, truncated)),
            other => Err(unexpected(other)),
        }
    }

    /// Every page of a listing, collected (the query's marker is where it starts).
    pub async fn list_all(&self, query: &ListQuery) -> Result<Vec<ListItem>> {
        let mut q = query.clone();
        let mut all = Vec::new();
        loop {
            let (items, truncated) = self.list_page(&q).await?;
            let Some(last) = items.last() else { break };
            q.marker = last.key().to_owned();
            all.extend(items);
            if !truncated {
                break;
            }
        }
        Ok(all)
    }

    /// Every live file of a user (all depths), sorted by name, in pages as large as a page
    /// may be (fewer round trips; a page stays within its byte bound anyway).
    pub async fn list(&self, user: &str) -> Result<Vec<ObjectMeta>> {
        let q = ListQuery {
            user: user.to_owned(),
            limit: crate::wire::MAX_LIST_LIMIT,
            ..ListQuery::default()
        };
        Ok(self
            .list_all(&q)
            .await?
            .into_iter()
            .filter_map(|i| match i {
                ListItem::Object(m) => Some(m),
                ListItem::Prefix(_) => None,
            })
            .collect())
    }

    /// Server-side copy of `src`'s newest version to `dst`; `attrs: None` keeps the
    /// source's content type and metadata.
    pub async fn copy(
        &self,
        src: &ObjectName,
        dst: &ObjectName,
        attrs: Option<Attrs>,
    ) -> Result<ObjectMeta> {
        match self
            .call(&ClientRequest::Copy {
                src: src.clone(),
                dst: dst.clone(),
                attrs,
            })
            .await?
        {
            Response::Stored(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_users(&self) -> Result<Vec<String>> {
        match self.call(&ClientRequest::ListUsers).await? {
            Response::Users(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    pub async fn status(&self) -> Result<ClusterStatus> {
        match self.call(&ClientRequest::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn add_disk(&self, addr: &str) -> Result<()> {
        self.expect_ok(&ClientRequest::AddDisk {
            addr: addr.to_owned(),
        })
        .await
    }

    pub async fn remove_disk(&self, addr: &str) -> Result<()> {
        self.expect_ok(&ClientRequest::RemoveDisk {
            addr: addr.to_owned(),
        })
        .await
    }

    pub async fn repair(&self) -> Result<()> {
        self.expect_ok(&ClientRequest::Repair).await
    }

    pub async fn audit(&self) -> Result<()> {
        self.expect_ok(&ClientRequest::Audit).await
    }

    /// Each replica's state (after the proxy repaired what it could).
    pub async fn check(&self, name: &ObjectName) -> Result<Vec<(String, ReplicaState)>> {
        match self
            .call(&ClientRequest::Check { name: name.clone() })
            .await?
        {
            Response::Checked(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster's capacity (for `df`); any key may ask.
    pub async fn usage(&self) -> Result<crate::wire::Usage> {
        match self.call(&ClientRequest::Usage).await? {
            Response::Usage(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    /// Admin: a new user; returns the key line to show once.
    pub async fn user_add(&self, name: &str) -> Result<String> {
        self.new_key(&ClientRequest::UserAdd {
            name: name.to_owned(),
        })
        .await
    }

    /// Admin: a new key for a user; the old one stops working at once.
    pub async fn user_rotate(&self, name: &str) -> Result<String> {
        self.new_key(&ClientRequest::UserRotate {
            name: name.to_owned(),
        })
        .await
    }

    pub async fn user_list(&self) -> Result<Vec<String>> {
        match self.call(&ClientRequest::UserList).await? {
            Response::Users(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    pub async fn user_remove(&self, name: &str) -> Result<()> {
        self.expect_ok(&ClientRequest::UserRemove {
            name: name.to_owned(),
        })
        .await
    }

    async fn new_key(&self, req: &ClientRequest) -> Result<String> {
        match self.call(req).await? {
            Response::NewKey(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    async fn expect_ok(&self, req: &ClientRequest) -> Result<()> {
        match self.call(req).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: Response) -> Error {
    Error::Protocol(format!("unexpected answer {r:?}"))
}

fn is_conn_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | UnexpectedEof
    )
}

/// Fills `buf` as far as the reader allows; 0 only at end of input.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// MD5 on a thread of its own, so hashing (the most expensive step of a transfer, about
/// 0.8 GB/s per core) overlaps the network and disk I/O instead of following it. Buffers
/// go to the hasher and come back for reuse; at most `DEPTH` are in flight, so memory stays
/// bounded.
struct PipelinedMd5 {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    done: Option<tokio::task::JoinHandle<[u8; 16]>>,
}

impl PipelinedMd5 {
    const DEPTH: usize = 4;

    fn new() -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(Self::DEPTH);
        let (back_tx, back) = std::sync::mpsc::channel();
        let done = tokio::task::spawn_blocking(move || {
            let mut h = Md5::new();
            while let Some(buf) = rx.blocking_recv() {
                h.update(&buf);
                let _ = back_tx.send(buf);
            }
            h.finalize().into()
        });
        PipelinedMd5 {
            tx: Some(tx),
            back,
            done: Some(done),
        }
    }

    /// A buffer to fill: a returned one (with its old length and contents) if any, else a
    /// new empty one.
    fn buffer(&self) -> Vec<u8> {
        self.back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK))
    }

    async fn feed(&mut self, buf: Vec<u8>) {
        if let Some(tx) = &self.tx {
            // Fails only if the hasher is gone, which `finish` reports.
            let _ = tx.send(buf).await;
        }
    }

    async fn finish(mut self) -> [u8; 16] {
        drop(self.tx.take());
        match self.done.take() {
            Some(h) => h.await.expect("the MD5 thread does not panic"),
            None => [0; 16],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipelined_md5_matches_the_plain_one() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        for piece in [1usize, 1000, CHUNK, 3 * CHUNK + 17] {
            let mut m = PipelinedMd5::new();
            for c in data.chunks(piece).take(200) {
                let mut b = m.buffer();
                b.clear();
                b.extend_from_slice(c);
                m.feed(b).await;
            }
            let n = (piece * 200).min(data.len());
            let want: [u8; 16] = Md5::digest(&data[..n]).into();
            assert_eq!(m.finish().await, want, "pieces of {piece}");
        }
        let empty: [u8; 16] = Md5::digest(b"").into();
        assert_eq!(PipelinedMd5::new().finish().await, empty);
    }
}
