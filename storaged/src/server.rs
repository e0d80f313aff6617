//! The accept loop and the per-connection loop.
//!
//! Each connection: handshake, then read a request, handle it, repeat. A malformed frame or
//! any protocol error closes that connection only. A login must finish within
//! [`Config::frame_timeout`] and [`Config::idle_timeout`], and at most
//! [`MAX_LOGGING_IN`](oss_proto::admission::MAX_LOGGING_IN) connections log in at once (the
//! oldest dropped beyond, as in the proxy); a logged-in connection that sends nothing for
//! [`Config::idle_timeout`] is closed. On shutdown the listener closes, idle connections
//! close, and requests in flight get [`Config::shutdown_grace`] to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use oss_proto::admission::{LoginQueue, Ticket};
use oss_proto::auth::{Throttle, Verifier};
use oss_proto::wire::{Connection, Error as WireIoError, Response, StorageRequest, CLUSTER_USER};
use oss_proto::WireError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::audit::Auditor;
use crate::error::Error;
use crate::handler;
use crate::store::Store;
use crate::Config;

/// What every connection task shares.
pub struct Ctx {
    pub store: Arc<Store>,
    pub auditor: Arc<Auditor>,
    pub cfg: Config,
    /// Slows down addresses whose logins keep failing.
    pub throttle: Throttle,
}

/// An opened store, ready to serve.
pub struct Server {
    ctx: Arc<Ctx>,
}

/// Opens the store and serves `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, cfg: Config, shutdown: impl Future) -> Result<(), Error> {
    let server = tokio::task::spawn_blocking(move || Server::open(cfg))
        .await
        .map_err(|e| Error::Io {
            context: "opening the store".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
    server.serve(listener, shutdown).await
}

impl Server {
    /// Opens the data directory (blocking: it scans every footer).
    pub fn open(cfg: Config) -> Result<Server, Error> {
        let (store, report) = Store::open(&cfg.data)?;
        tracing::info!(
            data = %cfg.data.display(),
            objects = report.objects,
            tmp_removed = report.tmp_removed,
            quarantined = report.quarantined.len(),
            "store opened"
        );
        let store = Arc::new(store);
        let auditor = Arc::new(Auditor::new(store.clone(), cfg.audit_rate));
        Ok(Server {
            ctx: Arc::new(Ctx {
                store,
                auditor,
                cfg,
                throttle: Throttle::default(),
            }),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.ctx.store
    }

    pub async fn serve(self, listener: TcpListener, shutdown: impl Future) -> Result<(), Error> {
        let ctx = self.ctx;
        let (stop_tx, stop_rx) = watch::channel(false);
        let auditor_task = ctx
            .cfg
            .audit_interval
            .filter(|d| !d.is_zero())
            .map(|d| tokio::spawn(ctx.auditor.clone().run_periodic(d)));
        let mut conns = JoinSet::new();
        let logging_in = LoginQueue::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let span = tracing::info_span!("conn", %peer);
                        let ticket = logging_in.admit();
                        conns.spawn(
                            serve_conn(ctx.clone(), stream, peer, ticket, stop_rx.clone())
                                .instrument(span),
                        );
                    }
                    Err(e) => {
                        // Usually out of descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a connection task failed");
                    }
                }
            }
        }
        tracing::info!(in_flight = conns.len(), "shutting down");
        drop(listener);
        let _ = stop_tx.send(true);
        ctx.auditor.cancel();
        if let Some(t) = auditor_task {
            t.abort();
        }
        let drained = tokio::time::timeout(ctx.cfg.shutdown_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = conns.len(),
                "requests still running at the deadline; dropping them"
            );
            conns.shutdown().await;
        }
        Ok(())
    }
}

async fn serve_conn(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    ticket: Ticket,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Connection::new(stream);
    let logged_in = tokio::select! {
        l = ticket.login(login(&ctx, &mut conn, peer)) => l == Some(true),
        _ = stop.wait_for(|s| *s) => false,
    };
    if !logged_in {
        return;
    }
    loop {
        // Between requests a connection may idle (the proxy pools them), but not past
        // --idle-timeout nor past a shutdown.
        let next = tokio::time::timeout(ctx.cfg.idle_timeout, conn.read_header::<StorageRequest>());
        let req = tokio::select! {
            r = next => match r {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!(
                        idle_timeout = ?ctx.cfg.idle_timeout,
                        "idle past --idle-timeout; closing the connection"
                    );
                    return;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        match req {
            Ok(None) => return,
            Ok(Some(req)) => {
                let span = handler::span(&req);
                if let Err(e) = handler::handle(&ctx, &mut conn, req).instrument(span).await {
                    tracing::info!(error = %e, "closing the connection");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "bad request frame; closing the connection");
                // Best effort: tell the peer why before closing.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    conn.write_header(&Response::Error(WireError::BadRequest(e.to_string())))
                        .await?;
                    conn.flush().await
                })
                .await;
                return;
            }
        }
    }
}

/// The handshake: only the cluster user, with the cluster secret, within the login
/// deadline (the shorter of `frame_timeout` and `idle_timeout`). True once logged in.
async fn login(ctx: &Ctx, conn: &mut Connection, peer: std::net::SocketAddr) -> bool {
    let delay = ctx.throttle.delay(peer.ip(), Instant::now());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // A fresh salt every time, since this server holds the secret itself.
    let secret = &ctx.cfg.secret;
    let attempt = conn.accept_hello(secret, |user| {
        (user == CLUSTER_USER).then(|| Verifier::new(secret))
    });
    let deadline = ctx.cfg.frame_timeout.min(ctx.cfg.idle_timeout);
    match tokio::time::timeout(deadline, attempt).await {
        Ok(Ok(_)) => {
            ctx.throttle.succeeded(peer.ip());
            true
        }
        Ok(Err(WireIoError::Remote(WireError::AuthFailed(why)))) => {
            tracing::warn!(%peer, %why, "refused a peer that does not know the cluster secret");
            ctx.throttle.failed(peer.ip(), Instant::now());
            false
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "handshake failed");
            false
        }
        Err(_) => {
            tracing::info!("handshake timed out");
            false
        }
    }
}
