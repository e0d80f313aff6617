//! The in-memory index: what is on disk, by name, by partition and by user.
//!
//! Built at startup from the footers and kept in step by every commit, quarantine, reclaim
//! and partition drop (always under the object's lock). Head and listings are answered from
//! it without touching the disk.
//!
//! Listings are range scans of a user's sorted file names: a page starts at its marker (or
//! prefix) by a tree seek and reads only what it returns, and with the delimiter '/' a
//! subdirectory costs one seek past its subtree, whatever it holds. Whether a subdirectory
//! holds a live name is kept as a counter per directory prefix, so a directory whose files
//! were all deleted (tombstones only) is skipped without walking its tombstones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use oss_proto::wire::{ListItem, ListKey, ListQuery, LIST_PAGE_BYTES};
use oss_proto::{ObjectMeta, ObjectName};

/// One object's latest state (a live version or a tombstone) and where its file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub part: u32,
    pub meta: ObjectMeta,
}

#[derive(Debug, Default)]
pub struct Index {
    by_name: HashMap<ObjectName, Entry>,
    by_part: BTreeMap<u32, BTreeSet<ObjectName>>,
    /// user → file names, tombstones included. Sorted (as UTF-8 bytes, like Swift) so a
    /// listing is a range scan.
    by_user: BTreeMap<String, BTreeSet<String>>,
    /// `"user/dir/"` → live objects below that directory prefix, at any depth.
    live_dirs: HashMap<String, u64>,
    /// Live objects per user (a user with only tombstones is not listed by `users`).
    live_per_user: HashMap<String, u64>,
    live_objects: u64,
    live_bytes: u64,
    /// Per partition: the XOR of [`version_hash`] over its entries, kept in step by every
    /// insert and remove, so comparing two replicas of a partition costs 16 bytes.
    digests: HashMap<u32, [u8; 16]>,
}

/// One version's contribution to its partition's digest: name and timestamp identify it.
fn version_hash(meta: &ObjectMeta) -> [u8; 16] {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update(meta.name.as_str().as_bytes());
    h.update([0u8]);
    h.update(meta.timestamp.to_be_bytes());
    h.finalize().into()
}

fn xor_into(acc: &mut [u8; 16], x: &[u8; 16]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a ^= b;
    }
}

impl Index {
    pub fn get(&self, name: &ObjectName) -> Option<&Entry> {
        self.by_name.get(name)
    }

    /// Inserts or replaces; returns the entry it replaced.
    pub fn insert(&mut self, part: u32, meta: ObjectMeta) -> Option<Entry> {
        let name = meta.name.clone();
        let old = self.remove(&name);
        self.by_part.entry(part).or_default().insert(name.clone());
        self.by_user
            .entry(name.user().to_owned())
            .or_default()
            .insert(name.file().to_owned());
        if !meta.deleted {
            for d in dir_prefixes(&name) {
                *self.live_dirs.entry(d).or_default() += 1;
            }
            self.live_objects += 1;
            self.live_bytes += meta.size;
            *self
                .live_per_user
                .entry(name.user().to_owned())
                .or_default() += 1;
        }
        xor_into(self.digests.entry(part).or_default(), &version_hash(&meta));
        self.by_name.insert(name, Entry { part, meta });
        old
    }

    pub fn remove(&mut self, name: &ObjectName) -> Option<Entry> {
        let e = self.by_name.remove(name)?;
        if let Some(set) = self.by_part.get_mut(&e.part) {
            set.remove(name);
            if set.is_empty() {
                self.by_part.remove(&e.part);
                self.digests.remove(&e.part);
            } else if let Some(d) = self.digests.get_mut(&e.part) {
                xor_into(d, &version_hash(&e.meta));
            }
        }
        if let Some(set) = self.by_user.get_mut(name.user()) {
            set.remove(name.file());
            if set.is_empty() {
                self.by_user.remove(name.user());
            }
        }
        if !e.meta.deleted {
            for d in dir_prefixes(name) {
                if let Some(n) = self.live_dirs.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 {
                        self.live_dirs.remove(&d);
                    }
                }
            }
            self.live_objects -= 1;
            self.live_bytes -= e.meta.size;
            if let Some(n) = self.live_per_user.get_mut(name.user()) {
                *n -= 1;
                if *n == 0 {
                    self.live_per_user.remove(name.user());
                }
            }
        }
        Some(e)
    }

    /// One page of `q` (at most `limit` items): objects and tombstones in name order, and
    /// with a delimiter the common prefixes that hold a live object here. `true` when the
    /// page stopped before the end.
    pub fn list(&self, q: &ListQuery, limit: usize) -> (Vec<ListItem>, bool) {
        let Some(set) = self.by_user.get(&q.user) else {
            return (Vec::new(), false);
        };
        let mut items = Vec::new();
        let mut bytes = 0usize;
        // Where the scan (re)starts: after the marker, but never before the prefix.
        let mut lower: Bound<String> = if q.marker.as_str() >= q.prefix.as_str() {
            Bound::Excluded(q.marker.clone())
        } else {
            Bound::Included(q.prefix.clone())
        };
        'scan: loop {
            let range = set.range::<str, _>((lower.as_ref().map(String::as_str), Bound::Unbounded));
            for file in range {
                if !file.starts_with(q.prefix.as_str()) {
                    // Sorted: every later name is past the prefix too.
                    break 'scan;
                }
                if !q.end_marker.is_empty() && file.as_str() >= q.end_marker.as_str() {
                    break 'scan;
                }
                let item = match q.roll_up(file) {
                    ListKey::Name(_) => {
                        let name = ObjectName::new(&q.user, file).expect("indexed names are valid");
                        ListItem::Object(self.by_name[&name].meta.clone())
                    }
                    ListKey::Prefix(p) => {
                        let show = p > q.marker.as_str()
                            && (q.end_marker.is_empty() || p < q.end_marker.as_str())
                            && self.live_below(&q.user, p, set);
                        let item = show.then(|| ListItem::Prefix(p.to_owned()));
                        // Every name below `p` rolls up into `p`: seek past them all.
                        lower = past_prefix(p, q.delimiter.expect("a prefix needs a delimiter"));
                        if let Some(item) = item {
                            if items.len() >= limit || bytes >= LIST_PAGE_BYTES {
                                return (items, true);
                            }
                            bytes += item.approx_size();
                            items.push(item);
                        }
                        continue 'scan;
                    }
                };
                if items.len() >= limit || bytes >= LIST_PAGE_BYTES {
                    return (items, true);
                }
                bytes += item.approx_size();
                items.push(item);
            }
            break;
        }
        (items, false)
    }

    /// Whether a live object lies below `prefix` (which ends with a delimiter).
    fn live_below(&self, user: &str, prefix: &str, set: &BTreeSet<String>) -> bool {
        if prefix.ends_with('/') {
            return self.live_dirs.contains_key(&format!("{user}/{prefix}"));
        }
        // Another delimiter: walk the subtree until a live name (rare; Swift allows it).
        set.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|f| f.starts_with(prefix))
            .any(|f| {
                let name = ObjectName::new(user, f).expect("indexed names are valid");
                !self.by_name[&name].meta.deleted
            })
    }

    /// Every entry of a partition, tombstones included, sorted by name.
    pub fn list_part(&self, part: u32) -> Vec<ObjectMeta> {
        self.by_part
            .get(&part)
            .map(|set| set.iter().map(|n| self.by_name[n].meta.clone()).collect())
            .unwrap_or_default()
    }

    /// Up to `limit` (partition, digest) pairs of the partitions holding an entry, from
    /// partition `from` on, ascending; `true` if more follow. Two servers holding the same
    /// versions of a partition have the same digest.
    pub fn digests(&self, from: u32, limit: usize) -> (Vec<(u32, [u8; 16])>, bool) {
        let mut out = Vec::new();
        for &p in self.by_part.range(from..).map(|(p, _)| p) {
            if out.len() >= limit {
                return (out, true);
            }
            out.push((p, self.digests.get(&p).copied().unwrap_or_default()));
        }
        (out, false)
    }

    /// Partitions holding at least one entry, ascending.
    pub fn parts(&self) -> Vec<u32> {
        self.by_part.keys().copied().collect()
    }

    /// Users with at least one live object, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut v: Vec<String> = self.live_per_user.keys().cloned().collect();
        v.sort();
        v
    }

    /// Every entry, in no particular order (the auditor's work list).
    pub fn snapshot(&self) -> Vec<Entry> {
        self.by_name.values().cloned().collect()
    }

    /// (live objects, their bytes).
    pub fn live(&self) -> (u64, u64) {
        (self.live_objects, self.live_bytes)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// `"user/a/"`, `"user/a/b/"`, … for every directory a name lies in.
fn dir_prefixes(name: &ObjectName) -> impl Iterator<Item = String> + '_ {
    let full = name.as_str();
    let file_start = name.user().len() + 1;
    full[file_start..]
        .match_indices('/')
        .map(move |(i, _)| full[..file_start + i + 1].to_owned())
}

/// The lowest string after every string that starts with `p` (which ends with `d`): `p` with
/// `d` replaced by the next character. Code-point order is UTF-8 byte order, so nothing else
/// sorts in between.
fn past_prefix(p: &str, d: char) -> Bound<String> {
    let stem = &p[..p.len() - d.len_utf8()];
    let next = match d {
        '\u{D7FF}' => Some('\u{E000}'),
        d => char::from_u32(d as u32 + 1),
    };
    match next {
        Some(c) => Bound::Included(format!("{stem}{c}")),
        // No character follows U+10FFFF; ListQuery::validate refuses it as a delimiter.
        None => Bound::Excluded(p.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, size: u64, deleted: bool) -> ObjectMeta {
        ObjectMeta {
            name: ObjectName::parse(name).unwrap(),
            size,
            md5: [0; 16],
            timestamp: 1,
            deleted,
            attrs: Default::default(),
        }
    }

    #[test]
    fn partition_digests_depend_on_the_versions_held_not_on_history() {
        let v = |name: &str, ts| ObjectMeta {
            timestamp: ts,
            ..m(name, 1, false)
        };
        let (mut a, mut b) = (Index::default(), Index::default());
        a.insert(3, v("u/x", 1));
        a.insert(3, v("u/y", 2));
        a.insert(5, v("u/z", 1));
        b.insert(3, v("u/y", 2));
        b.insert(5, v("u/z", 1));
        b.insert(3, v("u/gone", 9));
        b.insert(3, v("u/x", 1));
        b.remove(&ObjectName::parse("u/gone").unwrap());
        assert_eq!(a.digests(0, 10), b.digests(0, 10));
        // A newer version (or a tombstone: a version too) changes the digest.
        b.insert(3, v("u/x", 4));
        assert_ne!(a.digests(0, 10).0[0], b.digests(0, 10).0[0]);
        assert_eq!(a.digests(0, 10).0[1], b.digests(0, 10).0[1]);
        a.insert(3, v("u/x", 4));
        assert_eq!(a.digests(0, 10), b.digests(0, 10));
        // Paged from a partition on; an emptied partition is gone.
        assert!(a.digests(0, 1).1);
        assert_eq!(
            a.digests(4, 10).0.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![5]
        );
        a.remove(&ObjectName::parse("u/z").unwrap());
        assert_eq!(a.digests(4, 10), (vec![], false));
    }

    fn keys(items: &[ListItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                ListItem::Object(m) if m.deleted => format!("-{}", m.name.file()),
                other => other.key().to_owned(),
            })
            .collect()
    }

    fn query(prefix: &str, delimiter: Option<char>, marker: &str) -> ListQuery {
        ListQuery {
            user: "u".into(),
            prefix: prefix.into(),
            delimiter,
            marker: marker.into(),
            ..Default::default()
        }
    }

    fn tree() -> Index {
        let mut ix = Index::default();
        for n in ["a-b", "a/1", "a/2", "a/x/y", "a0", "b", "c/gone", "d/e/f"] {
            ix.insert(1, m(&format!("u/{n}"), 1, n == "c/gone"));
        }
        ix.insert(1, m("v/other", 1, false));
        ix
    }

    #[test]
    fn one_level_rolls_up_subdirectories_once() {
        let ix = tree();
        let (items, more) = ix.list(&query("", Some('/'), ""), 100);
        assert_eq!(keys(&items), ["a-b", "a/", "a0", "b", "d/"]);
        assert!(!more);
        let (items, _) = ix.list(&query("a/", Some('/'), ""), 100);
        assert_eq!(keys(&items), ["a/1", "a/2", "a/x/"]);
        let (items, _) = ix.list(&query("", None, ""), 100);
        assert_eq!(
            keys(&items),
            ["a-b", "a/1", "a/2", "a/x/y", "a0", "b", "-c/gone", "d/e/f"]
        );
        let (items, _) = ix.list(&query("a", Some('/'), ""), 100);
        assert_eq!(keys(&items), ["a-b", "a/", "a0"]);
    }

    #[test]
    fn pages_never_repeat_or_skip_a_prefix() {
        let ix = tree();
        // Page through one item at a time, marker = last key, as a client does.
        let mut q = query("", Some('/'), "");
        let mut got = Vec::new();
        loop {
            let (items, more) = ix.list(&q, 1);
            got.extend(keys(&items));
            match items.last() {
                Some(last) if more => q.marker = last.key().to_owned(),
                _ => break,
            }
        }
        assert_eq!(got, ["a-b", "a/", "a0", "b", "d/"]);
        // A marker inside a subtree resumes after the whole prefix.
        let (items, _) = ix.list(&query("", Some('/'), "a/1"), 100);
        assert_eq!(keys(&items), ["a0", "b", "d/"]);
        let mut q = query("", Some('/'), "");
        q.end_marker = "b".into();
        assert_eq!(keys(&ix.list(&q, 100).0), ["a-b", "a/", "a0"]);
    }

    #[test]
    fn directories_of_tombstones_are_not_listed() {
        let mut ix = tree();
        ix.insert(1, m("u/d/e/f", 0, true));
        let (items, _) = ix.list(&query("", Some('/'), ""), 100);
        assert_eq!(keys(&items), ["a-b", "a/", "a0", "b"]);
        ix.insert(2, m("u/d/e/f", 1, false));
        let (items, _) = ix.list(&query("d/", Some('/'), ""), 100);
        assert_eq!(keys(&items), ["d/e/"]);
        ix.remove(&ObjectName::parse("u/d/e/f").unwrap());
        assert!(ix.live_dirs.keys().all(|k| !k.starts_with("u/d/")));
    }

    #[test]
    fn other_delimiters_work_too() {
        let ix = tree();
        let (items, _) = ix.list(&query("", Some('-'), ""), 100);
        assert_eq!(keys(&items)[..2], ["a-", "a/1"]);
    }

    #[test]
    fn counters_follow_inserts_and_removes() {
        let mut ix = Index::default();
        ix.insert(1, m("bob/b", 10, false));
        ix.insert(1, m("alice/a", 5, false));
        ix.insert(2, m("carol/c", 0, true));
        assert_eq!(ix.live(), (2, 15));
        assert_eq!(ix.users(), vec!["alice", "bob"]);
        // Replace bob/b by a tombstone.
        let old = ix.insert(1, m("bob/b", 0, true)).unwrap();
        assert_eq!(old.meta.size, 10);
        assert_eq!(ix.live(), (1, 5));
        assert_eq!(ix.users(), vec!["alice"]);
        let bob = ListQuery {
            user: "bob".into(),
            ..Default::default()
        };
        assert_eq!(ix.list(&bob, 10).0.len(), 1, "tombstones are listed");
        let names: Vec<_> = ix
            .list_part(1)
            .into_iter()
            .map(|m| m.name.to_string())
            .collect();
        assert_eq!(names, vec!["alice/a", "bob/b"]);
        ix.remove(&ObjectName::parse("alice/a").unwrap());
        assert_eq!(ix.live(), (0, 0));
        assert!(ix.users().is_empty());
        assert_eq!(ix.len(), 2);
    }
}
