//! Bodies both ways: a response body that is either small and whole or streamed from a
//! read (bounded: a few chunks in flight), and an upload's request body as a
//! [`BodySource`] for the one write path.

use oss_proto::sync::Locked;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use oss_proto::wire::{Chunk, ObjectMeta, UploadTrailer, WireError, CHUNK};
use tokio::sync::mpsc;

use crate::cluster::Proxy;
use crate::object::{BodySource, Gone, Sink, CLIENT_TIMEOUT};

/// Chunks a streamed response holds in flight at most.
const IN_FLIGHT: usize = 4;

/// A response body.
pub enum Body {
    Full(Option<Bytes>),
    /// Streamed from a read; `len` is announced as `Content-Length`.
    Stream {
        rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        len: u64,
    },
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }

    pub fn text(s: impl Into<Bytes>) -> Self {
        let b: Bytes = s.into();
        if b.is_empty() {
            Body::Full(None)
        } else {
            Body::Full(Some(b))
        }
    }

    /// A streamed body of `len` bytes and the sink that feeds it.
    pub fn channel(len: u64) -> (Self, ChannelSink) {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let sink = ChannelSink {
            tx,
            pool: Arc::new(Mutex::new(Vec::new())),
        };
        (Body::Stream { rx, len }, sink)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream { rx, .. } => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream { len, .. } => SizeHint::with_exact(*len),
        }
    }
}

/// Feeds a streamed [`Body`]: what [`crate::object::stream`] writes into.
///
/// Its chunks are copied into buffers that come back to the sink's pool when the HTTP
/// connection has written them, so a response of any size reuses the same few buffers:
/// allocating a fresh 256 KiB buffer per chunk on one thread and freeing it on another made
/// the allocator's footprint grow with the object (a 1 GiB GET peaked at 23 MiB of RSS, the
/// native path's at 8).
pub struct ChannelSink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    pool: Pool,
}

type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// Buffers a response keeps: those in the channel, the one the connection writes, the one
/// being filled.
const POOLED: usize = IN_FLIGHT + 2;

/// A chunk's bytes, lent to a response body; back to the pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pool = self.pool.locked();
        if pool.len() < POOLED {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

impl ChannelSink {
    pub async fn send(&mut self, b: Bytes) -> Result<(), Gone> {
        self.tx.send(Ok(b)).await.map_err(|_| Gone)
    }

    fn copy(&self, bytes: &[u8]) -> Bytes {
        let buf = self.pool.locked().pop();
        let mut buf = buf.unwrap_or_else(|| Vec::with_capacity(CHUNK.max(bytes.len())));
        buf.clear();
        buf.extend_from_slice(bytes);
        Bytes::from_owner(Pooled {
            buf,
            pool: self.pool.clone(),
        })
    }
}

impl Sink for ChannelSink {
    async fn start(&mut self, _: &ObjectMeta, _: u64, _: u64) -> Result<(), Gone> {
        Ok(())
    }
    async fn data(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        let b = self.copy(bytes);
        self.send(b).await
    }
    async fn end(&mut self) -> Result<(), Gone> {
        Ok(())
    }
    /// The response is cut short: the connection is closed under the client, which sees
    /// fewer bytes than `Content-Length` promised.
    async fn abort(&mut self, e: WireError) -> Result<(), Gone> {
        self.tx
            .send(Err(std::io::Error::other(e.to_string())))
            .await
            .map_err(|_| Gone)
    }
}

/// Why an upload body ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// More bytes than the object size limit.
    TooLarge,
    /// The client went away or stalled.
    Broken,
}

/// An upload's request body, re-cut into chunks. With an `ETag`, every storage server
/// checks the bytes against the client's MD5; without one, each says the MD5 of what it got
/// and the proxy commits the replicas only if they agree (no hash pass in the proxy).
pub struct Upload {
    body: Incoming,
    pending: Bytes,
    etag: Option<[u8; 16]>,
    total: u64,
    limit: u64,
    pub fault: Option<BodyFault>,
}

impl Upload {
    pub fn new(body: Incoming, etag: Option<[u8; 16]>, limit: u64) -> Self {
        Upload {
            body,
            pending: Bytes::new(),
            etag,
            total: 0,
            limit,
            fault: None,
        }
    }

    fn fail(&mut self, f: BodyFault, why: &str) -> WireError {
        self.fault = Some(f);
        WireError::Unavailable(why.to_owned())
    }
}

impl BodySource for Upload {
    async fn chunk(&mut self, _: &Proxy, buf: &mut Vec<u8>) -> Result<Chunk, WireError> {
        buf.clear();
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(CHUNK - buf.len());
                buf.extend_from_slice(&self.pending.split_to(n));
                if buf.len() == CHUNK {
                    break;
                }
            }
            let frame = match tokio::time::timeout(CLIENT_TIMEOUT, self.body.frame()).await {
                Err(_) => return Err(self.fail(BodyFault::Broken, "client stalled")),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "client upload body broke");
                    return Err(self.fail(BodyFault::Broken, "client went away"));
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                self.total += data.len() as u64;
                if self.total > self.limit {
                    return Err(self.fail(BodyFault::TooLarge, "object too large"));
                }
                self.pending = data;
            }
        }
        if buf.is_empty() {
            return Ok(Chunk::End);
        }
        Ok(Chunk::Data(buf.len()))
    }

    async fn trailer(&mut self) -> Result<UploadTrailer, WireError> {
        Ok(UploadTrailer { md5: self.etag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streamed_chunks_reuse_their_buffers() {
        let (mut body, mut sink) = Body::channel(8);
        let Body::Stream { rx, .. } = &mut body else {
            panic!("a channel body streams")
        };
        sink.data(b"abcd").await.unwrap();
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(&first[..], b"abcd");
        let at = first.as_ptr();
        drop(first);
        sink.data(b"efgh").await.unwrap();
        let second = rx.recv().await.unwrap().unwrap();
        assert_eq!(&second[..], b"efgh");
        assert_eq!(
            second.as_ptr(),
            at,
            "the written chunk's buffer came back to the pool"
        );
        // A chunk still held by the connection is not reused under it.
        sink.data(b"ijkl").await.unwrap();
        let third = rx.recv().await.unwrap().unwrap();
        assert_ne!(third.as_ptr(), second.as_ptr());
        assert_eq!((&second[..], &third[..]), (&b"efgh"[..], &b"ijkl"[..]));
    }
}
