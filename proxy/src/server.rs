//! The client-facing side: accept connections, handshake, dispatch each request to its
//! handler, answer.

use std::future::Future;
use std::sync::Arc;

use oss_proto::wire::{ClientRequest, Connection, Error, Response, WireError};
use tokio::net::TcpListener;
use tracing::{debug, info, warn, Instrument};

use crate::cluster::Proxy;
use crate::object::{self, Outcome};
use crate::{repair, worker};

pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down");
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let p = proxy.clone();
                    let span = tracing::info_span!("client", %peer);
                    tokio::spawn(async move { handle_connection(p, Connection::new(stream)).await }.instrument(span));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn handle_connection(proxy: Arc<Proxy>, mut conn: Connection) {
    if let Err(e) = conn.accept_hello().await {
        debug!(error = %e, "handshake refused");
        return;
    }
    loop {
        let req: ClientRequest = match conn.read_header().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(Error::Protocol(why)) => {
                warn!(%why, "malformed request; closing the connection");
                let _ = conn
                    .write_header(&Response::Error(WireError::BadRequest(why)))
                    .await;
                let _ = conn.flush().await;
                return;
            }
            Err(e) => {
                debug!(error = %e, "connection ended");
                return;
            }
        };
        let kind = request_kind(&req);
        let span = tracing::debug_span!("request", kind);
        let out = dispatch(&proxy, &mut conn, req).instrument(span).await;
        if let Some(resp) = out.resp {
            if conn.write_header(&resp).await.is_err() {
                return;
            }
        }
        if conn.flush().await.is_err() || out.close {
            return;
        }
    }
}

fn request_kind(r: &ClientRequest) -> &'static str {
    match r {
        ClientRequest::Upload { .. } => "upload",
        ClientRequest::Download { .. } => "download",
        ClientRequest::Stat { .. } => "stat",
        ClientRequest::Delete { .. } => "delete",
        ClientRequest::List(_) => "list",
        ClientRequest::Copy { .. } => "copy",
        ClientRequest::ListUsers => "list-users",
        ClientRequest::Status => "status",
        ClientRequest::AddDisk { .. } => "add-disk",
        ClientRequest::RemoveDisk { .. } => "remove-disk",
        ClientRequest::Check { .. } => "check",
        ClientRequest::Repair => "repair",
        ClientRequest::Audit => "audit",
    }
}

fn answer(r: Result<Response, WireError>) -> Outcome {
    Outcome {
        resp: Some(r.unwrap_or_else(Response::Error)),
        close: false,
    }
}

async fn dispatch(proxy: &Arc<Proxy>, conn: &mut Connection, req: ClientRequest) -> Outcome {
    match req {
        ClientRequest::Upload { name, size, attrs } => {
            object::upload(proxy, conn, name, size, attrs).await
        }
        ClientRequest::Copy { src, dst, attrs } => object::copy(proxy, src, dst, attrs).await,
        ClientRequest::Download { name, offset, len } => {
            object::download(proxy, conn, name, offset, len).await
        }
        ClientRequest::Stat { name } => object::stat(proxy, name).await,
        ClientRequest::Delete { name } => object::delete(proxy, name).await,
        ClientRequest::List(q) => answer(crate::listing::list(proxy, q).await),
        ClientRequest::ListUsers => object::list_users(proxy).await,
        ClientRequest::Status => answer(Ok(Response::Status(proxy.status()))),
        ClientRequest::AddDisk { addr } => answer(proxy.add_disk(addr).await.map(|_| Response::Ok)),
        ClientRequest::RemoveDisk { addr } => {
            answer(proxy.remove_disk(addr).await.map(|_| Response::Ok))
        }
        ClientRequest::Check { name } => {
            answer(repair::check(proxy, &name).await.map(Response::Checked))
        }
        ClientRequest::Repair => answer(worker::start_repair(proxy).map(|_| Response::Ok)),
        ClientRequest::Audit => answer(worker::audit_all(proxy).await.map(|_| Response::Ok)),
    }
}
