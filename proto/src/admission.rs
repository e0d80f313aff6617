//! Admission of connections that have not finished their login, shared by both servers
//! (the proxy's client door and every storage server).
//!
//! The accept loop admits each new connection into one [`LoginQueue`] and hands the
//! [`Ticket`] to the connection's task, which runs its login through [`Ticket::login`]. At
//! most [`MAX_LOGGING_IN`] connections wait in the queue; a newcomer beyond that evicts the
//! oldest. A flood of silent or trickling connections then costs a behaving peer nothing: it
//! logs in within milliseconds, long before a few hundred newer ones push it out, and each
//! silent one is gone at the server's login deadline anyway.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::sync::Locked;

/// Connections logging in at once, at most: beyond, the oldest is dropped for the newcomer.
/// Far above what a proxy's pool or a few busy clients open at once, far below a
/// process's descriptor limit.
pub const MAX_LOGGING_IN: usize = 256;

/// The connections that have not finished their login, oldest first: each can be told to
/// give up.
#[derive(Default)]
struct Pending {
    next: u64,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Pending {
    /// Registers a new connection; evicts the oldest beyond [`MAX_LOGGING_IN`].
    fn admit(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next;
        self.next += 1;
        self.queue.push_back((id, tx));
        if self.queue.len() > MAX_LOGGING_IN {
            if let Some((_, oldest)) = self.queue.pop_front() {
                let _ = oldest.send(());
            }
        }
        (id, rx)
    }

    /// The login of `id` ended (either way): it can no longer be evicted.
    fn done(&mut self, id: u64) {
        if let Some(i) = self.queue.iter().position(|(x, _)| *x == id) {
            self.queue.remove(i);
        }
    }
}

/// One server's connections still logging in; clones share the queue.
#[derive(Clone, Default)]
pub struct LoginQueue(Arc<Mutex<Pending>>);

impl LoginQueue {
    /// Admits a connection just accepted. Call it in the accept loop, so that "oldest" means
    /// accepted first.
    pub fn admit(&self) -> Ticket {
        let (id, evicted) = self.0.locked().admit();
        Ticket {
            id,
            evicted,
            queue: self.clone(),
        }
    }

    /// Connections in the queue now.
    pub fn len(&self) -> usize {
        self.0.locked().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's place in a [`LoginQueue`]; it leaves the queue when dropped.
pub struct Ticket {
    id: u64,
    evicted: oneshot::Receiver<()>,
    queue: LoginQueue,
}

impl Ticket {
    /// Runs `login` unless the connection is evicted first (`None` then, logged here); the
    /// connection leaves the queue either way.
    pub async fn login<F: Future>(mut self, login: F) -> Option<F::Output> {
        tokio::select! {
            out = login => Some(out),
            _ = &mut self.evicted => {
                tracing::debug!("too many connections logging in; dropped the oldest");
                None
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.queue.0.locked().done(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_logins_evicts_the_oldest_not_the_newest() {
        let mut p = Pending::default();
        let mut waiting: Vec<_> = (0..MAX_LOGGING_IN).map(|_| p.admit()).collect();
        // Finished logins leave the queue: they are never evicted.
        let (done, mut done_rx) = waiting.remove(0);
        p.done(done);
        let (_, mut newest) = p.admit();
        let (_, mut newer) = p.admit();
        // One over the limit: the oldest still waiting (the second admitted) is told to go.
        assert!(
            waiting[0].1.try_recv().is_ok(),
            "the oldest was not evicted"
        );
        assert!(
            waiting[1].1.try_recv().is_err(),
            "more than the oldest went"
        );
        assert!(newest.try_recv().is_err() && newer.try_recv().is_err());
        assert!(done_rx.try_recv().is_err(), "a finished login was evicted");
        assert_eq!(p.queue.len(), MAX_LOGGING_IN);
    }

    #[tokio::test]
    async fn a_ticket_leaves_the_queue_when_its_login_ends_or_it_is_evicted() {
        let q = LoginQueue::default();
        let first = q.admit();
        let mut rest: Vec<Ticket> = (0..MAX_LOGGING_IN - 1).map(|_| q.admit()).collect();
        assert_eq!(q.len(), MAX_LOGGING_IN);
        // A login that finishes gives its answer and frees its place.
        let last = rest.pop().unwrap();
        assert_eq!(last.login(async { 7 }).await, Some(7));
        assert_eq!(q.len(), MAX_LOGGING_IN - 1);
        // Two newcomers: the second pushes the oldest out, whose login never ends then.
        let a = q.admit();
        let _b = q.admit();
        assert_eq!(q.len(), MAX_LOGGING_IN);
        assert_eq!(first.login(std::future::pending::<()>()).await, None);
        assert_eq!(q.len(), MAX_LOGGING_IN);
        // A ticket dropped without a login (its task ended early) leaves too.
        drop(a);
        assert_eq!(q.len(), MAX_LOGGING_IN - 1);
    }
}
