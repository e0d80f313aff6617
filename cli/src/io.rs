//! Local I/O helpers: remembering what a local reader or writer failed with (so it is not
//! blamed on the network), and printing to stdout without panicking on a closed pipe.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::BrokenPipe;

/// Wraps a local file or stdio stream and keeps the first error it returned. The client
/// library reports every I/O error alike; this tells a full local disk or a closed stdout
/// apart from a failing connection.
pub struct Watch<T> {
    inner: T,
    failed: Option<io::Error>,
}

impl<T> Watch<T> {
    pub fn new(inner: T) -> Self {
        Watch {
            inner,
            failed: None,
        }
    }

    /// The first error the wrapped stream returned, if any.
    pub fn failed(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn note<R>(&mut self, p: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(e)) = &p {
            if self.failed.is_none() {
                self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            }
        }
        p
    }
}

/// A watched file can be read again from its start (an upload the proxy's restart cut
/// short is sent again).
impl<T: tokio::io::AsyncSeek + Unpin> tokio::io::AsyncSeek for Watch<T> {
    fn start_seek(self: Pin<&mut Self>, pos: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().inner).start_seek(pos)
    }
    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_complete(cx);
        this.note(p)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watch<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.note(p)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watch<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(p)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(p)
    }
}

/// Writes text to stdout. A closed pipe (`oss list alice | head -1`) becomes [`BrokenPipe`],
/// which `main` turns into a quiet exit 0.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(BrokenPipe.into()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot write to stdout: {}",
            crate::error::io_msg(&e)
        )),
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP, so a command can clean up (a download's temp
/// file) before it exits; without it the default action would kill us mid-way.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        // Without handlers the default actions stay in place; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted",
        _ = term.recv() => "terminated",
        _ = hup.recv() => "hung up",
    }
}

/// Whether stderr is a terminal (progress is drawn only there).
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Failing(io::ErrorKind);

    impl AsyncWrite for Failing {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(self.0.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn watch_keeps_the_first_error() {
        let mut w = Watch::new(Failing(io::ErrorKind::BrokenPipe));
        assert!(w.write_all(b"x").await.is_err());
        assert_eq!(w.failed().unwrap().kind(), io::ErrorKind::BrokenPipe);
        let mut ok = Watch::new(&b"hello"[..]);
        let mut s = String::new();
        ok.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello");
        assert!(ok.failed().is_none());
    }
}
