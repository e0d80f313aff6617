//! Bodies both ways: a response body that is either small and whole or streamed from a
//! read (bounded: a few chunks in flight), and an upload's request body as a
//! [`BodySource`] for the one write path.

use std::pin::Pin;
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
        (Body::Stream { rx, len }, ChannelSink { tx })
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
pub struct ChannelSink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChannelSink {
    pub async fn send(&mut self, b: Bytes) -> Result<(), Gone> {
        self.tx.send(Ok(b)).await.map_err(|_| Gone)
    }
}

impl Sink for ChannelSink {
    async fn start(&mut self, _: &ObjectMeta, _: u64, _: u64) -> Result<(), Gone> {
        Ok(())
    }
    async fn data(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        self.send(Bytes::copy_from_slice(bytes)).await
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
