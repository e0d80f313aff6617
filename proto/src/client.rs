//! The async client of the proxy, used by `oss` and `ossfs`.
//!
//! A [`Client`] keeps a small pool of handshaken connections so that many small requests do
//! not each pay for a TCP connect and a handshake. A connection goes back to the pool only
//! after a request completed cleanly; anything that went wrong mid-stream closes it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::name::ObjectName;
use crate::sync::Locked;
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

/// How long a request keeps trying, by default, while the proxy cannot be reached or went
/// away mid-request (a restart, a network blip): faults are pauses, not errors.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct Client {
    addr: String,
    creds: Credentials,
    connect_timeout: Duration,
    retry_for: Duration,
    pool: Mutex<Vec<Connection>>,
}

/// The waits between tries of one request: doubling from 50 ms up to 2 s, until the
/// request's retry budget is spent.
struct Backoff {
    deadline: tokio::time::Instant,
    next: Duration,
}

impl Backoff {
    fn new(budget: Duration) -> Self {
        Backoff {
            deadline: tokio::time::Instant::now() + budget,
            next: BACKOFF_FIRST,
        }
    }

    /// Waits before the next try; false (at once) when the budget is spent.
    async fn wait(&mut self, addr: &str, why: &Error) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        let d = self.next.min(self.deadline - now);
        tracing::debug!(proxy = addr, error = %why, wait_ms = d.as_millis() as u64, "retrying");
        tokio::time::sleep(d).await;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        true
    }
}

/// A failure of the path to the proxy (refused, reset, closed, timed out), not an answer:
/// trying again may succeed.
fn transient(e: &Error) -> bool {
    match e {
        Error::Io(io) => {
            use std::io::ErrorKind::*;
            is_conn_error(io)
                || matches!(
                    io.kind(),
                    ConnectionRefused | TimedOut | HostUnreachable | NetworkUnreachable
                )
        }
        Error::Closed | Error::Timeout => true,
        Error::Remote(_) | Error::Protocol(_) => false,
    }
}

/// An upload source that cannot be read again (a pipe): see [`Client::upload_with`].
struct ReadOnce<'a, R>(&'a mut R);

impl<R: AsyncRead + Unpin> AsyncRead for ReadOnce<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<R> AsyncSeek for ReadOnce<'_, R> {
    fn start_seek(self: std::pin::Pin<&mut Self>, _: std::io::SeekFrom) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    fn poll_complete(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<u64>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }
}

/// Called with the number of body bytes moved so far.
pub type ProgressFn<'a> = &'a mut (dyn FnMut(u64) + Send);

impl Client {
    pub fn new(addr: impl Into<String>, creds: Credentials) -> Self {
        Client {
            addr: addr.into(),
            creds,
            connect_timeout: Duration::from_secs(5),
            retry_for: DEFAULT_RETRY_FOR,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// How long each request keeps trying while the proxy cannot be reached or goes away
    /// ([`DEFAULT_RETRY_FOR`]; zero: one try).
    pub fn with_retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A pooled connection (`true`) or a new one; errors as they came.
    async fn conn(&self) -> Result<(Connection, bool)> {
        loop {
            let pooled = self.pool.locked().pop();
            match pooled {
                Some(c) if c.is_reusable() => return Ok((c, true)),
                Some(_) => continue,
                None => break,
            }
        }
        let c = Connection::connect(&self.addr, self.connect_timeout, &self.creds).await?;
        Ok((c, false))
    }

    /// A connection, tried again with backoff while the proxy cannot be reached.
    async fn connect(&self, backoff: &mut Backoff) -> Result<(Connection, bool)> {
        loop {
            match self.conn().await {
                Err(e) if transient(&e) => {
                    if !backoff.wait(&self.addr, &e).await {
                        return Err(self.unreachable(e));
                    }
                }
                r => return r,
            }
        }
    }

    /// A connect failure as users read it.
    fn unreachable(&self, e: Error) -> Error {
        let why = match e {
            Error::Io(io) => io.to_string(),
            Error::Timeout => "timed out".to_owned(),
            Error::Closed => "it closed the connection".to_owned(),
            e => return e,
        };
        let d = self.retry_for;
        let tried = if d.is_zero() {
            String::new()
        } else if d < Duration::from_secs(1) {
            format!(" (tried for {} ms)", d.as_millis())
        } else {
            format!(" (tried for {} s)", d.as_secs())
        };
        Error::Remote(WireError::Unavailable(format!(
            "cannot reach the proxy at {}: {why}{tried}",
            self.addr
        )))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.retry_for)
    }

    fn put_back(&self, c: Connection) {
        let mut pool = self.pool.locked();
        if pool.len() < POOL_MAX {
            pool.push(c);
        }
    }

    /// After the proxy went away, its other pooled connections are dead too.
    fn forget_pool(&self) {
        self.pool.locked().clear();
    }

    /// One request, one header answer, no body either way.
    async fn call(&self, req: &ClientRequest) -> Result<Response> {
        let (c, resp) = self.exchange(req).await?;
        self.put_back(c);
        Ok(resp)
    }

    /// Sends `req` and reads its header answer; the connection comes back with it (a body
    /// may follow). A pooled connection that the proxy closed while it sat idle is replaced
    /// at once; a request the proxy's going away cut short is sent again within the retry
    /// budget if it [is replayable](ClientRequest::is_replayable).
    async fn exchange(&self, req: &ClientRequest) -> Result<(Connection, Response)> {
        let mut backoff = self.backoff();
        loop {
            let (mut c, pooled) = self.connect(&mut backoff).await?;
            let r = async {
                c.write_header(req).await?;
                c.flush().await?;
                c.read_response().await
            }
            .await;
            match r {
                Ok(resp) => return Ok((c, resp)),
                Err(Error::Remote(e)) => {
                    self.put_back(c);
                    return Err(Error::Remote(e));
                }
                Err(e) if transient(&e) && pooled => self.forget_pool(),
                Err(e) if transient(&e) && req.is_replayable() => {
                    if !backoff.wait(&self.addr, &e).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
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

    /// [`Client::upload`] with a content type and metadata stored alongside. Tried again
    /// while the proxy cannot be reached, and after it went away mid-upload as long as no
    /// byte of `reader` was read yet; past that a pipe cannot be sent again and the upload
    /// fails (a file can: [`Client::upload_replayable`]).
    pub async fn upload_with<R: AsyncRead + Unpin>(
        &self,
        name: &ObjectName,
        size: Option<u64>,
        attrs: Attrs,
        reader: &mut R,
        progress: ProgressFn<'_>,
    ) -> Result<ObjectMeta> {
        self.upload_retrying(name, size, attrs, &mut ReadOnce(reader), false, progress)
            .await
    }

    /// [`Client::upload_with`] from a source that can be read again from its start (a
    /// file): an upload cut short by the proxy's going away is sent again, whole, within the
    /// retry budget.
    pub async fn upload_replayable<R: AsyncRead + AsyncSeek + Unpin>(
        &self,
        name: &ObjectName,
        size: Option<u64>,
        attrs: Attrs,
        reader: &mut R,
        progress: ProgressFn<'_>,
    ) -> Result<ObjectMeta> {
        self.upload_retrying(name, size, attrs, reader, true, progress)
            .await
    }

    async fn upload_retrying<R: AsyncRead + AsyncSeek + Unpin>(
        &self,
        name: &ObjectName,
        size: Option<u64>,
        attrs: Attrs,
        reader: &mut R,
        replayable: bool,
        progress: ProgressFn<'_>,
    ) -> Result<ObjectMeta> {
        let mut backoff = self.backoff();
        loop {
            let (c, pooled) = self.connect(&mut backoff).await?;
            let mut read = false;
            let e = match self
                .upload_on(c, name, size, attrs.clone(), reader, &mut read, progress)
                .await
            {
                Ok(meta) => return Ok(meta),
                Err(e) if transient(&e) => e,
                Err(e) => return Err(e),
            };
            self.forget_pool();
            if read && !replayable {
                return Err(Error::Remote(WireError::Unavailable(format!(
                    "the proxy at {} went away during the upload ({e}); its source cannot be \
                     read again, so it was not retried: upload it again",
                    self.addr
                ))));
            }
            if !pooled && !backoff.wait(&self.addr, &e).await {
                return Err(e);
            }
            if read {
                reader.seek(std::io::SeekFrom::Start(0)).await?;
                progress(0);
            }
        }
    }

    /// One try of an upload on `c`; `read` tells whether any byte of `reader` was taken.
    #[allow(clippy::too_many_arguments)]
    async fn upload_on<R: AsyncRead + Unpin>(
        &self,
        mut c: Connection,
        name: &ObjectName,
        size: Option<u64>,
        attrs: Attrs,
        reader: &mut R,
        read: &mut bool,
        progress: ProgressFn<'_>,
    ) -> Result<ObjectMeta> {
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
                *read = true;
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
        // Tried again until the object's header arrived: nothing was written yet.
        let req = ClientRequest::Download {
            name: name.clone(),
            offset,
            len,
        };
        let (mut c, (meta, got_offset, got_len)) = match self.exchange(&req).await? {
            (c, Response::Object { meta, offset, len }) => (c, (meta, offset, len)),
            (_, other) => return Err(unexpected(other)),
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
            let chunk = match c.read_chunk(&mut buf).await {
                Ok(chunk) => chunk,
                // The proxy went away mid-body (a restart): go on from where it stopped, on
                // a new connection, if the same version is still there.
                Err(e) if transient(&e) => {
                    let rest = ClientRequest::Download {
                        name: name.clone(),
                        offset: got_offset + total,
                        len: Some(got_len - total),
                    };
                    c = self.resume(&rest, &meta, e).await?;
                    if md5.is_none() {
                        spare = buf;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            match chunk {
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

    /// Asks for the rest of a download cut short; the connection comes back positioned at
    /// its body if the version is the one the download began with (else [`WireError::Stale`]:
    /// mixing two versions' bytes would be corruption).
    async fn resume(
        &self,
        rest: &ClientRequest,
        meta: &ObjectMeta,
        cut: Error,
    ) -> Result<Connection> {
        tracing::debug!(proxy = %self.addr, error = %cut, "download cut short; resuming");
        match self.exchange(rest).await? {
            (c, Response::Object { meta: now, .. })
                if now.timestamp == meta.timestamp && now.md5 == meta.md5 =>
            {
                Ok(c)
            }
            // Dropped, not pooled: its body is unread.
            (_, Response::Object { meta: now, .. }) => Err(Error::Remote(WireError::Stale {
                current: now.timestamp,
            })),
            (_, other) => Err(unexpected(other)),
        }
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
