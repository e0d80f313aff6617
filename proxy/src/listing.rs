//! Listings: one page of a user's names, merged from every storage server's sorted index.
//!
//! Each server answers a page of its own entries in name order, starting after a marker:
//! objects and tombstones (a name's newest version may sit on another server), and with a
//! delimiter the common prefixes holding a live name there. The proxy merges these sorted
//! streams like a k-way merge sort: the smallest key is emitted only when every server either
//! has shown a key at least as large or has nothing more, and a server whose page ran out is
//! asked for its next page (marker = the last key it sent) first. Equal keys are one entry: for
//! an object its newest version, which is dropped if it is a tombstone.
//!
//! So a page holds every live name in its key range exactly once and in order, a prefix like
//! `a/` appears once although `a-b` sorts before it and `a0` after it, and the next page
//! (marker = this page's last key) starts exactly after it: a marker that is a prefix skips
//! the whole subtree on every server. The cost of a page is the entries it returns plus the
//! tombstones among them, not the size of the user.
//!
//! A subdirectory is shown while some server holds a live name below it. A name deleted
//! while one of its replicas was unreachable can keep its directory visible (empty) until
//! that replica gets the tombstone (`oss repair`, or the next touch of the name).

use std::collections::VecDeque;
use std::sync::Arc;

use oss_proto::wire::{
    ListItem, ListQuery, Response, StorageRequest, WireError, LIST_PAGE_BYTES, MAX_LIST_LIMIT,
};
use tracing::warn;

use crate::backend::unexpected;
use crate::cluster::{Member, Proxy};

/// Entries asked of each server per page: enough that a small client page is one round trip
/// per server even with a replica's duplicates and some tombstones.
const MIN_SERVER_PAGE: u32 = 256;

/// One server's part of a listing.
#[derive(Debug, Default)]
struct Stream {
    buf: VecDeque<ListItem>,
    /// The server said more follows after `last`.
    more: bool,
    /// The last key received: the marker of the next page.
    last: String,
}

/// The k-way merge of every server's sorted pages. Pure: the caller fetches what
/// [`Merge::wanted`] names and hands it to [`Merge::feed`].
#[derive(Debug)]
pub struct Merge {
    streams: Vec<Stream>,
}

impl Merge {
    /// `n` servers, none heard from yet: each must be fed its first page.
    pub fn new(n: usize) -> Self {
        Merge {
            streams: (0..n)
                .map(|_| Stream {
                    more: true,
                    ..Stream::default()
                })
                .collect(),
        }
    }

    /// Servers whose next page is needed before anything more can be emitted, with the
    /// marker to ask from (`None`: the query's own marker).
    pub fn wanted(&self) -> Vec<(usize, Option<String>)> {
        self.streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.buf.is_empty() && s.more)
            .map(|(i, s)| (i, (!s.last.is_empty()).then(|| s.last.clone())))
            .collect()
    }

    pub fn feed(&mut self, i: usize, items: Vec<ListItem>, more: bool) {
        let s = &mut self.streams[i];
        if let Some(l) = items.last() {
            s.last = l.key().to_owned();
        }
        // A page with nothing in it cannot have more after it (the server would loop).
        s.more = more && !items.is_empty();
        s.buf.extend(items);
    }

    /// A server that failed: what it would have said is missing from the merge.
    pub fn drop_stream(&mut self, i: usize) {
        self.streams[i] = Stream::default();
    }

    /// The next entry in key order (possibly a tombstone), merged over every server; `None`
    /// when every server is done. Call only when [`Merge::wanted`] is empty.
    pub fn pop(&mut self) -> Option<ListItem> {
        debug_assert!(self.wanted().is_empty());
        let key = self
            .streams
            .iter()
            .filter_map(|s| s.buf.front())
            .map(|i| i.key())
            .min()?
            .to_owned();
        let mut best: Option<ListItem> = None;
        for s in &mut self.streams {
            if s.buf.front().is_some_and(|i| i.key() == key) {
                let item = s.buf.pop_front().expect("front exists");
                best = Some(match (best, item) {
                    (Some(ListItem::Object(a)), ListItem::Object(b)) => {
                        ListItem::Object(if b.timestamp > a.timestamp { b } else { a })
                    }
                    (Some(a), _) => a,
                    (None, b) => b,
                });
            }
        }
        best
    }
}

fn is_live(item: &ListItem) -> bool {
    match item {
        ListItem::Object(m) => !m.deleted,
        ListItem::Prefix(_) => true,
    }
}

/// One page of `q`, merged over every listing server. Fails when so many servers are
/// unreachable that a name could be missing from every answer.
pub async fn list(proxy: &Arc<Proxy>, q: ListQuery) -> Result<Response, WireError> {
    let limit = q.validate()?;
    let servers: Vec<Member> = proxy.listing_servers();
    let mut merge = Merge::new(servers.len());
    let mut failed = 0usize;
    let per_server = (limit as u32).clamp(MIN_SERVER_PAGE, MAX_LIST_LIMIT);
    let mut items = Vec::new();
    let mut bytes = 0usize;
    let truncated = loop {
        let wanted = merge.wanted();
        if !wanted.is_empty() {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, marker) in wanted {
                let mut sq = q.clone();
                if let Some(m) = marker {
                    sq.marker = m;
                }
                sq.limit = per_server;
                let (p, m) = (proxy.clone(), servers[i].clone());
                tasks.spawn(async move {
                    let r = p.backends.call(&m.addr, &StorageRequest::List(sq)).await;
                    (i, m, r)
                });
            }
            while let Some(r) = tasks.join_next().await {
                let (i, m, r) = r.map_err(|e| WireError::Internal(e.to_string()))?;
                match r {
                    Ok(Response::Page { items, truncated }) => merge.feed(i, items, truncated),
                    Err(oss_proto::Error::Remote(
                        e @ (WireError::InvalidName(_) | WireError::BadRequest(_)),
                    )) => return Err(e),
                    other => {
                        let e = match other {
                            Ok(r) => unexpected(r).to_wire(),
                            Err(e) => e.to_wire(),
                        };
                        warn!(server = %m.addr, error = %e, "listing failed on a server");
                        merge.drop_stream(i);
                        failed += 1;
                        if failed >= proxy.replicas() {
                            return Err(WireError::Unavailable(format!(
                                "{failed} storage servers did not answer; the listing would be incomplete"
                            )));
                        }
                    }
                }
            }
            continue;
        }
        match merge.pop() {
            None => break false,
            Some(item) if is_live(&item) => {
                if items.len() >= limit || bytes >= LIST_PAGE_BYTES {
                    break true;
                }
                bytes += item.approx_size();
                items.push(item);
            }
            Some(_) => {}
        }
    };
    Ok(Response::Page { items, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::{ObjectMeta, ObjectName};

    fn obj(file: &str, ts: u64, deleted: bool) -> ListItem {
        ListItem::Object(ObjectMeta {
            name: ObjectName::new("u", file).unwrap(),
            size: 0,
            md5: [0; 16],
            timestamp: ts,
            deleted,
            attrs: Default::default(),
        })
    }

    fn pre(p: &str) -> ListItem {
        ListItem::Prefix(p.into())
    }

    /// Drives a merge over in-memory servers that answer pages of `page` items after a
    /// marker, as storage servers do; returns the live keys of one client page of `limit`.
    fn run(
        servers: &[Vec<ListItem>],
        page: usize,
        marker: &str,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let mut m = Merge::new(servers.len());
        let mut out = Vec::new();
        loop {
            let wanted = m.wanted();
            if !wanted.is_empty() {
                for (i, mk) in wanted {
                    let mk = mk.unwrap_or_else(|| marker.to_owned());
                    let rest: Vec<ListItem> = servers[i]
                        .iter()
                        .filter(|it| it.key() > mk.as_str())
                        .cloned()
                        .collect();
                    let more = rest.len() > page;
                    m.feed(i, rest.into_iter().take(page).collect(), more);
                }
                continue;
            }
            match m.pop() {
                None => return (out, false),
                Some(it) if is_live(&it) => {
                    if out.len() >= limit {
                        return (out, true);
                    }
                    out.push(it.key().to_owned());
                }
                Some(_) => {}
            }
        }
    }

    fn servers() -> Vec<Vec<ListItem>> {
        vec![
            vec![
                obj("a-b", 1, false),
                pre("a/"),
                obj("c", 5, true),
                obj("d", 1, false),
            ],
            vec![
                pre("a/"),
                obj("a0", 1, false),
                obj("c", 4, false),
                obj("e", 1, false),
            ],
            vec![obj("a-b", 1, false), obj("b", 2, false), obj("d", 2, true)],
        ]
    }

    #[test]
    fn newest_wins_and_prefixes_appear_once() {
        for page in [1, 2, 100] {
            let (keys, more) = run(&servers(), page, "", 100);
            assert_eq!(
                keys,
                ["a-b", "a/", "a0", "b", "e"],
                "server pages of {page}"
            );
            assert!(!more);
        }
    }

    #[test]
    fn client_pages_join_up_exactly() {
        for page in [1, 2, 3, 100] {
            for limit in [1, 2, 3] {
                let mut marker = String::new();
                let mut all = Vec::new();
                loop {
                    let (keys, more) = run(&servers(), page, &marker, limit);
                    assert!(keys.len() <= limit);
                    all.extend(keys.iter().cloned());
                    match keys.last() {
                        Some(l) if more => marker = l.clone(),
                        _ => break,
                    }
                }
                assert_eq!(
                    all,
                    ["a-b", "a/", "a0", "b", "e"],
                    "page {page} limit {limit}"
                );
            }
        }
    }

    #[test]
    fn a_failed_server_is_left_out() {
        let mut m = Merge::new(2);
        m.feed(0, vec![obj("x", 1, false)], false);
        m.drop_stream(1);
        assert!(m.wanted().is_empty());
        assert_eq!(m.pop().map(|i| i.key().to_owned()), Some("x".into()));
        assert!(m.pop().is_none());
    }
}
