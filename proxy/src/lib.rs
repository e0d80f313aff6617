//! oss-proxy: the only door for clients. It owns the ring, places and fetches replicas,
//! checks the storage servers' health and repairs what is missing or corrupt.
//!
//! - [`config`]: settings from the command line.
//! - [`containers`]: containers made through the Swift door and the account's metadata.
//! - [`state`]: the persisted ring, rebalance plan and servers outside the ring.
//! - [`cluster`]: the live view (state + backends), placement decisions, admin operations.
//! - [`backend`]: pooled connections to storage servers, deadlines, failure accounting.
//! - [`health`]: liveness of each storage server (disk checks and failed requests).
//! - [`object`]: the data path: upload, server-side copy, download, stat, delete.
//! - [`listing`]: listing pages merged from every server's sorted index.
//! - [`repair`]: the one copy mechanism (object, partition) and everything built on it.
//! - [`replicator`]: stand-in copies going home, recorded on write and found by passes.
//! - [`worker`]: background work: disk checks, partition moves, quarantine repair, repair passes.
//! - [`server`]: accepting clients, their logins, and dispatching their requests (with the
//!   one permission check).
//! - [`users`]: who may log in: per-user verifiers and the admin key.
//! - [`swift`]: the OpenStack Swift door (HTTP), onto the same operations.

pub mod backend;
pub mod cluster;
pub mod config;
pub mod containers;
pub mod health;
pub mod listing;
pub mod object;
pub mod repair;
pub mod replicator;
pub mod server;
pub mod state;
pub mod swift;
pub mod users;
pub mod worker;

use std::future::Future;

pub use cluster::{OpenError, Proxy};
pub use config::Config;

/// The Swift door's listener and settings (`--http`).
pub struct HttpDoor {
    pub listener: tokio::net::TcpListener,
    pub token_life: std::time::Duration,
}

/// Serves clients of an opened proxy ([`Proxy::open`]) on `listener` (and the Swift door
/// on its own, if given) until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    http: Option<HttpDoor>,
    proxy: std::sync::Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) {
    // A first round of disk checks before serving, so the first requests already know
    // which servers are down.
    worker::check_servers(&proxy).await;
    // Old copies a previous run flipped away from but did not delete yet.
    worker::settle_pending_drops(&proxy).await;
    let bg = [
        tokio::spawn(worker::health_loop(proxy.clone())),
        tokio::spawn(worker::move_worker(proxy.clone())),
        tokio::spawn(worker::quarantine_loop(proxy.clone())),
        tokio::spawn(replicator::run(proxy.clone())),
    ];
    let (stop, stopped) = tokio::sync::watch::channel(());
    let door = http.map(|h| {
        let mut stopped = stopped.clone();
        tokio::spawn(swift::serve(
            proxy.clone(),
            h.listener,
            h.token_life,
            async move {
                let _ = stopped.changed().await;
            },
        ))
    });
    server::serve(proxy, listener, shutdown).await;
    let _ = stop.send(());
    if let Some(d) = door {
        let _ = d.await;
    }
    for t in bg {
        t.abort();
    }
}
