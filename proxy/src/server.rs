//! The client-facing side: accept connections, handshake, dispatch each request to its
//! handler, answer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oss_proto::admission::LoginQueue;
use oss_proto::auth::Verifier;

use oss_proto::wire::{ClientRequest, Connection, Error, Response, WireError};
use tokio::net::TcpListener;
use tracing::{debug, info, warn, Instrument};

use crate::cluster::Proxy;
use crate::object::{self, Outcome};
use crate::users::ADMIN;
use crate::{repair, worker};

pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // At most `admission::MAX_LOGGING_IN` connections log in at once; beyond, the oldest go.
    let logging_in = LoginQueue::default();
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
                    let ticket = logging_in.admit();
                    tokio::spawn(async move {
                        let mut conn = Connection::new(stream);
                        if let Some(Some(login)) = ticket.login(login(&p, &mut conn, peer)).await {
                            serve_requests(p, conn, login).await;
                        }
                    }.instrument(span));
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

/// Longest a client may take over its login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a connection logged in as, and with which verifier (so a removed or rotated key
/// stops working on connections that are already open).
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    verifier: Verifier,
}

impl Login {
    pub fn new(user: String, verifier: Verifier) -> Self {
        Login { user, verifier }
    }

    /// False once the user was removed or their key rotated.
    pub fn still_valid(&self, proxy: &Proxy) -> bool {
        proxy.users.still_valid(&self.user, &self.verifier)
    }

    pub fn is_admin(&self) -> bool {
        self.user == ADMIN
    }
}

async fn login(proxy: &Proxy, conn: &mut Connection, peer: SocketAddr) -> Option<Login> {
    let delay = proxy.throttle.delay(peer.ip(), Instant::now());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut used = None;
    let attempt = conn.accept_hello(&proxy.cfg.secret, |user| {
        let v = proxy.users.verifier(user);
        used = v.clone();
        v
    });
    match tokio::time::timeout(LOGIN_TIMEOUT.min(proxy.cfg.idle_timeout), attempt).await {
        Ok(Ok(user)) => {
            proxy.throttle.succeeded(peer.ip());
            Some(Login {
                user,
                verifier: used.expect("a login succeeds only with a verifier"),
            })
        }
        Ok(Err(Error::Remote(WireError::AuthFailed(why)))) => {
            proxy.throttle.failed(peer.ip(), Instant::now());
            warn!(%peer, %why, "login failed");
            None
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "handshake refused");
            None
        }
        Err(_) => {
            debug!(%peer, "login timed out");
            None
        }
    }
}

/// The one permission check: a user's key reaches only names below its own user; the admin
/// key reaches everything. Cluster operations and user management are the admin's.
pub fn authorize(login: &Login, req: &ClientRequest) -> Result<(), WireError> {
    if login.is_admin() {
        return Ok(());
    }
    let own = |user: &str, what: &str| {
        if user == login.user {
            Ok(())
        } else {
            Err(WireError::PermissionDenied(format!(
                "{} may not {what} {user}'s files",
                login.user
            )))
        }
    };
    match req {
        ClientRequest::Upload { name, .. } => own(name.user(), "write"),
        ClientRequest::Download { name, .. } | ClientRequest::Stat { name } => {
            own(name.user(), "read")
        }
        ClientRequest::Delete { name } => own(name.user(), "delete"),
        ClientRequest::List(q) => own(&q.user, "list"),
        ClientRequest::Copy { src, dst, .. } => {
            own(src.user(), "read")?;
            own(dst.user(), "write")
        }
        ClientRequest::ListUsers | ClientRequest::Usage => Ok(()),
        ClientRequest::Status
        | ClientRequest::AddDisk { .. }
        | ClientRequest::RemoveDisk { .. }
        | ClientRequest::Check { .. }
        | ClientRequest::Repair
        | ClientRequest::Audit
        | ClientRequest::UserAdd { .. }
        | ClientRequest::UserList
        | ClientRequest::UserRemove { .. }
        | ClientRequest::UserRotate { .. } => Err(WireError::PermissionDenied(format!(
            "{} is an admin operation",
            request_kind(req)
        ))),
    }
}

/// The requests of a logged-in connection, one after the other, until it closes, breaks,
/// or sends nothing for `--idle-timeout`.
async fn serve_requests(proxy: Arc<Proxy>, mut conn: Connection, login: Login) {
    loop {
        let next = tokio::time::timeout(proxy.cfg.idle_timeout, conn.read_header()).await;
        let req: ClientRequest = match next {
            Err(_) => {
                debug!("idle past --idle-timeout; closing the connection");
                return;
            }
            Ok(r) => match r {
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
            },
        };
        let kind = request_kind(&req);
        let span = tracing::debug_span!("request", kind, user = %login.user);
        let allowed = if login.still_valid(&proxy) {
            authorize(&login, &req)
        } else {
            Err(WireError::AuthFailed(format!(
                "the key of {} was removed or replaced",
                login.user
            )))
        };
        let out = match allowed {
            Ok(()) => {
                dispatch(&proxy, &mut conn, req, &login)
                    .instrument(span)
                    .await
            }
            Err(e) => {
                info!(user = %login.user, kind, error = %e, "refused");
                // An upload's body follows its request: it is not read, so the
                // connection cannot go on.
                let close = matches!(req, ClientRequest::Upload { .. })
                    || matches!(e, WireError::AuthFailed(_));
                Outcome {
                    resp: Some(Response::Error(e)),
                    close,
                }
            }
        };
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
        ClientRequest::Usage => "usage",
        ClientRequest::UserAdd { .. } => "user add",
        ClientRequest::UserList => "user list",
        ClientRequest::UserRemove { .. } => "user remove",
        ClientRequest::UserRotate { .. } => "user rotate",
    }
}

fn answer(r: Result<Response, WireError>) -> Outcome {
    Outcome {
        resp: Some(r.unwrap_or_else(Response::Error)),
        close: false,
    }
}

async fn dispatch(
    proxy: &Arc<Proxy>,
    conn: &mut Connection,
    req: ClientRequest,
    login: &Login,
) -> Outcome {
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
        // A user sees only its own directory at the top.
        ClientRequest::ListUsers if !login.is_admin() => {
            answer(Ok(Response::Users(vec![login.user.clone()])))
        }
        ClientRequest::ListUsers => object::list_users(proxy).await,
        ClientRequest::UserAdd { name } => {
            answer(proxy.users.add(&name).map(Response::NewKey).inspect(|_| {
                info!(user = %name, "user added");
            }))
        }
        ClientRequest::UserList => answer(Ok(Response::Users(proxy.users.names()))),
        ClientRequest::Usage => answer(Ok(Response::Usage(proxy.usage()))),
        ClientRequest::UserRemove { name } => answer(
            proxy
                .users
                .remove(&name)
                .map(|()| Response::Ok)
                .inspect(|_| {
                    info!(user = %name, "user removed");
                }),
        ),
        ClientRequest::UserRotate { name } => answer(
            proxy
                .users
                .rotate(&name)
                .map(Response::NewKey)
                .inspect(|_| {
                    info!(user = %name, "key rotated");
                }),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::wire::ListQuery;
    use oss_proto::ObjectName;

    fn login(user: &str) -> Login {
        let key = oss_proto::auth::Key::from_text(&[b'k'; 40]).unwrap();
        Login {
            user: user.into(),
            verifier: Verifier::new(&key),
        }
    }

    fn name(s: &str) -> ObjectName {
        ObjectName::parse(s).unwrap()
    }

    #[test]
    fn users_reach_only_their_own_names_and_the_admin_everything() {
        let alice = login("alice");
        let own = [
            ClientRequest::Download {
                name: name("alice/a/b"),
                offset: 0,
                len: None,
            },
            ClientRequest::Delete {
                name: name("alice/x"),
            },
            ClientRequest::List(ListQuery {
                user: "alice".into(),
                ..Default::default()
            }),
            ClientRequest::Copy {
                src: name("alice/x"),
                dst: name("alice/y"),
                attrs: None,
            },
            ClientRequest::ListUsers,
        ];
        for r in &own {
            assert_eq!(authorize(&alice, r), Ok(()), "{r:?}");
        }
        let foreign = [
            ClientRequest::Stat {
                name: name("bob/x"),
            },
            ClientRequest::Upload {
                name: name("bob/x"),
                size: None,
                attrs: Default::default(),
            },
            ClientRequest::List(ListQuery {
                user: "bob".into(),
                ..Default::default()
            }),
            ClientRequest::Copy {
                src: name("bob/x"),
                dst: name("alice/y"),
                attrs: None,
            },
            ClientRequest::Copy {
                src: name("alice/x"),
                dst: name("bob/y"),
                attrs: None,
            },
            ClientRequest::Status,
            ClientRequest::AddDisk { addr: "x".into() },
            ClientRequest::Repair,
            ClientRequest::Check {
                name: name("alice/x"),
            },
            ClientRequest::UserAdd { name: "eve".into() },
        ];
        for r in &foreign {
            assert!(
                matches!(authorize(&alice, r), Err(WireError::PermissionDenied(_))),
                "{r:?}"
            );
            assert_eq!(authorize(&login(ADMIN), r), Ok(()), "{r:?}");
        }
    }
}
