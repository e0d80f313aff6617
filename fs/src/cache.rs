//! What ossfs remembers of the proxy's answers, per directory, so `ls -l` of a directory
//! costs one (paged) listing of that directory and not one round trip per file. Pure data:
//! the caller passes `now`, which keeps it testable.
//!
//! Freshness: a directory's listing is trusted for [`Cache::ttl`] (1 s by default); within
//! that time a name absent from it is answered "no such file" without asking the proxy.
//! (Listings are only *taken* by `readdir` from offset 0, which always asks the proxy; the
//! cache answers the lookups that follow it.) A single entry learnt from a lookup, an
//! upload or a listing is trusted for the same time. Writes made through this mount update
//! the cache at once, so they are never hidden by it.
//!
//! A listing page holds files, directory markers and common prefixes; [`fold`] turns it
//! into one entry per name: a marker `a/b` and a prefix `a/b/` are the one directory `b`,
//! and a directory hides a regular file of the same name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use oss_proto::wire::{Attrs, ListItem, ListQuery};
use oss_proto::{ObjectMeta, ObjectName, Timestamp};

use crate::attrs;
use crate::inode::DirKey;

/// What `ls -l` shows of a file (or of a directory's marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    /// Microseconds since the Unix epoch (the proxy's write timestamp).
    pub timestamp: Timestamp,
    pub attrs: Attrs,
}

impl FileInfo {
    /// The modification time to show, in ns since the epoch.
    pub fn mtime_ns(&self) -> u64 {
        attrs::shown_mtime_ns(&self.attrs, self.timestamp)
    }

    /// The access time to show, in ns since the epoch (the mtime unless one was set).
    pub fn atime_ns(&self) -> u64 {
        attrs::shown_atime_ns(&self.attrs, self.timestamp)
    }
}

impl From<&ObjectMeta> for FileInfo {
    fn from(m: &ObjectMeta) -> Self {
        FileInfo {
            size: m.size,
            timestamp: m.timestamp,
            attrs: m.attrs.clone(),
        }
    }
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(FileInfo),
    /// A directory, with its marker when it has one (an implicit directory has none).
    Dir(Option<FileInfo>),
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Dir(_))
    }
}

/// The cache's answer about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Hit(Entry),
    /// Known not to exist (a fresh listing does not have it).
    Absent,
    /// Ask the proxy.
    Miss,
}

/// The listing of one directory: its prefix with delimiter '/', so its cost follows the
/// directory's size, never the user's (paged by the client's `list_all`).
pub fn dir_query(dir: &DirKey) -> ListQuery {
    ListQuery {
        user: dir.user.clone(),
        prefix: dir.prefix(),
        delimiter: Some('/'),
        // A directory is read whole (readdir, then `ls -l`'s lookups): the largest pages,
        // so 10,000 entries take a round trip or two, not ten.
        limit: oss_proto::wire::MAX_LIST_LIMIT,
        ..ListQuery::default()
    }
}

/// A directory's link count: 2 (its name and its `.`) plus one `..` per subdirectory, when
/// the number of subdirectories is known; 2 when it is not.
pub fn dir_nlink(subdirs: Option<usize>) -> u32 {
    let n = u32::try_from(subdirs.unwrap_or(0)).unwrap_or(u32::MAX);
    n.saturating_add(2)
}

/// Whether anything lies below `obj/` (or below a directory, `prefix` = its prefix): one
/// entry is enough.
pub fn below_query(user: &str, prefix: String) -> ListQuery {
    ListQuery {
        user: user.to_owned(),
        prefix,
        limit: 1,
        ..ListQuery::default()
    }
}

/// [`below_query`] for the name `obj` as a directory.
pub fn below_object(obj: &ObjectName) -> ListQuery {
    below_query(obj.user(), format!("{}/", obj.file()))
}

/// Folds one directory's listing (prefix `prefix`, delimiter '/') into its entries, by name.
/// Also returns the names where a regular file is hidden by a directory of the same name.
pub fn fold(prefix: &str, items: &[ListItem]) -> (BTreeMap<String, Entry>, Vec<String>) {
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let mut shadowed = Vec::new();
    for item in items {
        let (name, entry) = match item {
            ListItem::Object(m) if m.deleted => continue,
            ListItem::Object(m) => {
                let Some(name) = m.name.file().strip_prefix(prefix) else {
                    continue;
                };
                let info = FileInfo::from(m);
                if m.is_dir_marker() {
                    (name, Entry::Dir(Some(info)))
                } else {
                    (name, Entry::File(info))
                }
            }
            ListItem::Prefix(p) => {
                let Some(name) = p.strip_prefix(prefix) else {
                    continue;
                };
                (name.trim_end_matches('/'), Entry::Dir(None))
            }
        };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let merged = match (out.remove(name), entry) {
            (None, e) => e,
            // A marker and a prefix: one directory, described by its marker.
            (Some(Entry::Dir(a)), Entry::Dir(b)) => Entry::Dir(a.or(b)),
            (Some(Entry::File(_)), d @ Entry::Dir(_))
            | (Some(d @ Entry::Dir(_)), Entry::File(_)) => {
                shadowed.push(name.to_owned());
                d
            }
            // Two objects of one name cannot be listed; keep the later.
            (Some(Entry::File(_)), f @ Entry::File(_)) => f,
        };
        out.insert(name.to_owned(), merged);
    }
    (out, shadowed)
}

#[derive(Debug, Default)]
struct DirCache {
    listed_at: Option<Instant>,
    entries: BTreeMap<String, (Entry, Instant)>,
    /// Names the proxy said do not exist (a lookup before a `create`, a delete here).
    absent: HashMap<String, Instant>,
}

/// Directories kept beyond this many are dropped once stale (a `find` over a big tree
/// must not keep every listing it ever saw).
const MAX_DIRS: usize = 512;

#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    dirs: HashMap<DirKey, DirCache>,
    users: Option<(Vec<String>, Instant)>,
    /// Users made with `mkdir` on this mount: they exist here until removed, even while
    /// the proxy knows nothing of them (it only knows users with files).
    made: BTreeSet<String>,
}

impl Cache {
    pub fn new(ttl: Duration) -> Self {
        Cache {
            ttl,
            dirs: HashMap::new(),
            users: None,
            made: BTreeSet::new(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn fresh(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) <= self.ttl
    }

    pub fn entry(&self, dir: &DirKey, name: &str, now: Instant) -> Cached {
        let Some(d) = self.dirs.get(dir) else {
            return Cached::Miss;
        };
        if let Some((e, at)) = d.entries.get(name) {
            if self.fresh(*at, now) {
                return Cached::Hit(e.clone());
            }
        }
        if d.absent.get(name).is_some_and(|at| self.fresh(*at, now)) {
            return Cached::Absent;
        }
        match d.listed_at {
            Some(at) if self.fresh(at, now) && !d.entries.contains_key(name) => Cached::Absent,
            _ => Cached::Miss,
        }
    }

    pub fn put_entry(&mut self, dir: &DirKey, name: &str, e: Entry, now: Instant) {
        let d = self.dirs.entry(dir.clone()).or_default();
        d.absent.remove(name);
        d.entries.insert(name.to_owned(), (e, now));
    }

    /// The proxy has nothing of this name (for the TTL, or until this mount writes it).
    pub fn put_absent(&mut self, dir: &DirKey, name: &str, now: Instant) {
        let d = self.dirs.entry(dir.clone()).or_default();
        d.entries.remove(name);
        d.absent.insert(name.to_owned(), now);
    }

    /// The name is gone (deleted here, or the proxy said "not found").
    pub fn remove_entry(&mut self, dir: &DirKey, name: &str) {
        if let Some(d) = self.dirs.get_mut(dir) {
            d.entries.remove(name);
        }
    }

    /// A full listing of `dir` replaces what was known of it.
    pub fn put_listing(&mut self, dir: &DirKey, entries: &BTreeMap<String, Entry>, now: Instant) {
        self.prune(now);
        let d = self.dirs.entry(dir.clone()).or_default();
        d.entries = entries
            .iter()
            .map(|(k, e)| (k.clone(), (e.clone(), now)))
            .collect();
        d.absent.clear();
        d.listed_at = Some(now);
    }

    /// The entries of a fresh listing, sorted by name; `None` when it must be fetched again.
    pub fn listing(&self, dir: &DirKey, now: Instant) -> Option<Vec<(String, Entry)>> {
        let d = self.dirs.get(dir)?;
        if !d.listed_at.is_some_and(|at| self.fresh(at, now)) {
            return None;
        }
        Some(
            d.entries
                .iter()
                .map(|(k, (e, _))| (k.clone(), e.clone()))
                .collect(),
        )
    }

    /// How many subdirectories `dir` has, from a fresh listing (kept up to date by this
    /// mount's own mkdir, rmdir and rename); `None` without one.
    pub fn subdirs(&self, dir: &DirKey, now: Instant) -> Option<usize> {
        let d = self.dirs.get(dir)?;
        if !d.listed_at.is_some_and(|at| self.fresh(at, now)) {
            return None;
        }
        Some(d.entries.values().filter(|(e, _)| e.is_dir()).count())
    }

    /// Forgets `dir` and every directory below it (it was removed or renamed).
    pub fn forget_tree(&mut self, dir: &DirKey) {
        self.dirs.retain(|k, _| !k.is_within(dir));
    }

    fn prune(&mut self, now: Instant) {
        if self.dirs.len() < MAX_DIRS {
            return;
        }
        let ttl = self.ttl;
        let fresh = |at: Instant| now.saturating_duration_since(at) <= ttl;
        self.dirs.retain(|_, d| {
            d.listed_at.is_some_and(fresh)
                || d.entries.values().any(|(_, at)| fresh(*at))
                || d.absent.values().any(|at| fresh(*at))
        });
    }

    pub fn put_users(&mut self, users: Vec<String>, now: Instant) {
        self.users = Some((users, now));
    }

    /// A fresh list of users (the proxy's plus those made here), sorted and deduplicated.
    pub fn users(&self, now: Instant) -> Option<Vec<String>> {
        let (users, at) = self.users.as_ref()?;
        if !self.fresh(*at, now) {
            return None;
        }
        let all: BTreeSet<String> = users.iter().cloned().chain(self.made.clone()).collect();
        Some(all.into_iter().collect())
    }

    /// Whether `user` is known to exist: made here, in a fresh user list, or with an entry
    /// in the cache. `None`: ask the proxy.
    pub fn user_exists(&self, user: &str, now: Instant) -> Option<bool> {
        if self.made.contains(user) {
            return Some(true);
        }
        if let Some(d) = self.dirs.get(&DirKey::user(user)) {
            if d.entries.values().any(|(_, at)| self.fresh(*at, now)) {
                return Some(true);
            }
        }
        let (users, at) = self.users.as_ref()?;
        if self.fresh(*at, now) {
            Some(users.iter().any(|u| u == user))
        } else {
            None
        }
    }

    pub fn make_user(&mut self, user: &str) -> bool {
        self.made.insert(user.to_owned())
    }

    pub fn is_made(&self, user: &str) -> bool {
        self.made.contains(user)
    }

    /// Forgets a user removed with `rmdir`.
    pub fn remove_user(&mut self, user: &str) {
        self.made.remove(user);
        self.forget_tree(&DirKey::user(user));
        if let Some((users, _)) = self.users.as_mut() {
            users.retain(|u| u != user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::ObjectName;

    fn meta(name: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            name: ObjectName::parse(name).unwrap(),
            size,
            md5: [0; 16],
            timestamp: 7,
            deleted: false,
            attrs: Attrs::default(),
        }
    }

    fn marker(name: &str) -> ObjectMeta {
        ObjectMeta {
            attrs: Attrs::directory(),
            ..meta(name, 0)
        }
    }

    fn obj(name: &str, size: u64) -> ListItem {
        ListItem::Object(meta(name, size))
    }

    fn dk(user: &str, path: &str) -> DirKey {
        DirKey {
            user: user.into(),
            path: path.into(),
        }
    }

    fn info(size: u64) -> FileInfo {
        FileInfo {
            size,
            timestamp: 7,
            attrs: Attrs::default(),
        }
    }

    fn listing(entries: &[(&str, Entry)]) -> BTreeMap<String, Entry> {
        entries
            .iter()
            .map(|(k, e)| (k.to_string(), e.clone()))
            .collect()
    }

    #[test]
    fn fold_merges_markers_and_prefixes_and_dirs_hide_files() {
        // As a listing of prefix "a/" sorts them: "a/b" < "a/b-c" < "a/b/" < "a/c" < ...
        let items = vec![
            ListItem::Object(marker("alice/a/b")),
            obj("alice/a/b-c", 3),
            ListItem::Prefix("a/b/".into()),
            obj("alice/a/f", 5),
            ListItem::Prefix("a/f/".into()),
            ListItem::Prefix("a/implicit/".into()),
            ListItem::Object(marker("alice/a/m")),
        ];
        let (entries, shadowed) = fold("a/", &items);
        let names: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["b", "b-c", "f", "implicit", "m"]);
        assert_eq!(
            entries["b"],
            Entry::Dir(Some(FileInfo::from(&marker("alice/a/b"))))
        );
        assert_eq!(entries["b-c"], Entry::File(info(3)));
        assert_eq!(entries["f"], Entry::Dir(None), "a directory hides a file");
        assert_eq!(entries["implicit"], Entry::Dir(None));
        assert!(matches!(entries["m"], Entry::Dir(Some(_))));
        assert_eq!(shadowed, ["f"]);
        // A file listed after its directory's prefix (other order) is hidden too.
        let (entries, shadowed) = fold("", &[ListItem::Prefix("x/".into()), obj("alice/x", 1)]);
        assert_eq!(entries["x"], Entry::Dir(None));
        assert_eq!(shadowed, ["x"]);
        // Tombstones and names outside the prefix are not entries.
        let mut gone = meta("alice/a/gone", 0);
        gone.deleted = true;
        let (entries, _) = fold("a/", &[ListItem::Object(gone), obj("alice/zz", 1)]);
        assert!(entries.is_empty());
    }

    #[test]
    fn queries_name_one_directory_never_the_whole_user() {
        let q = dir_query(&dk("alice", "a/b"));
        assert_eq!((q.user.as_str(), q.prefix.as_str()), ("alice", "a/b/"));
        assert_eq!(q.delimiter, Some('/'));
        let q = dir_query(&DirKey::user("alice"));
        assert_eq!((q.prefix.as_str(), q.delimiter), ("", Some('/')));
        let q = below_object(&ObjectName::parse("alice/a/b").unwrap());
        assert_eq!((q.prefix.as_str(), q.limit), ("a/b/", 1));
        let q = below_query("alice", String::new());
        assert_eq!((q.prefix.as_str(), q.limit, q.delimiter), ("", 1, None));
    }

    #[test]
    fn listing_answers_lookups_until_it_expires() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let d = dk("alice", "a/b");
        assert_eq!(c.entry(&d, "f", t0), Cached::Miss);
        let l = listing(&[("f", Entry::File(info(3))), ("sub", Entry::Dir(None))]);
        c.put_listing(&d, &l, t0);
        assert_eq!(c.entry(&d, "f", t0), Cached::Hit(Entry::File(info(3))));
        assert_eq!(c.entry(&d, "sub", t0), Cached::Hit(Entry::Dir(None)));
        assert_eq!(c.entry(&d, "zz", t0), Cached::Absent);
        // Other directories are not answered by this listing, not even the parent.
        assert_eq!(c.entry(&dk("alice", "a"), "f", t0), Cached::Miss);
        assert_eq!(c.entry(&dk("alice", ""), "f", t0), Cached::Miss);
        assert_eq!(c.entry(&dk("bob", "a/b"), "f", t0), Cached::Miss);
        let names: Vec<_> = c
            .listing(&d, t0)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["f", "sub"]);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(c.entry(&d, "f", later), Cached::Miss);
        assert_eq!(c.entry(&d, "zz", later), Cached::Miss);
        assert!(c.listing(&d, later).is_none());
    }

    #[test]
    fn subdirectories_are_counted_only_from_a_fresh_listing() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let d = dk("alice", "a");
        assert_eq!(c.subdirs(&d, t0), None);
        assert_eq!(dir_nlink(None), 2);
        // A single entry learnt from a lookup says nothing of the others.
        c.put_entry(&d, "s0", Entry::Dir(None), t0);
        assert_eq!(c.subdirs(&d, t0), None);
        let l = listing(&[
            ("f", Entry::File(info(3))),
            ("s1", Entry::Dir(None)),
            ("s2", Entry::Dir(Some(info(0)))),
        ]);
        c.put_listing(&d, &l, t0);
        assert_eq!(c.subdirs(&d, t0), Some(2));
        assert_eq!(dir_nlink(c.subdirs(&d, t0)), 4);
        // mkdir and rmdir here keep the count.
        c.put_entry(&d, "s3", Entry::Dir(Some(info(0))), t0);
        assert_eq!(c.subdirs(&d, t0), Some(3));
        c.remove_entry(&d, "s1");
        c.put_absent(&d, "s1", t0);
        assert_eq!(c.subdirs(&d, t0), Some(2));
        c.put_entry(&d, "g", Entry::File(info(1)), t0);
        assert_eq!(c.subdirs(&d, t0), Some(2), "files do not count");
        assert_eq!(c.subdirs(&d, t0 + Duration::from_secs(2)), None, "expired");
        assert_eq!(dir_nlink(Some(0)), 2);
        assert_eq!(dir_nlink(Some(usize::MAX)), u32::MAX);
    }

    #[test]
    fn ten_thousand_files_cost_one_listing() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let d = dk("alice", "big");
        let l: BTreeMap<String, Entry> = (0..10_000)
            .map(|i| (format!("f{i:05}"), Entry::File(info(i))))
            .collect();
        c.put_listing(&d, &l, t0);
        for i in (0..10_000).step_by(997) {
            assert_eq!(
                c.entry(&d, &format!("f{i:05}"), t0),
                Cached::Hit(Entry::File(info(i)))
            );
        }
    }

    #[test]
    fn local_writes_and_deletes_show_at_once() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let d = dk("alice", "");
        c.put_listing(&d, &listing(&[("a", Entry::File(info(3)))]), t0);
        c.put_entry(&d, "new", Entry::File(info(10)), t0);
        assert_eq!(c.entry(&d, "new", t0), Cached::Hit(Entry::File(info(10))));
        assert_eq!(c.listing(&d, t0).unwrap().len(), 2);
        c.remove_entry(&d, "a");
        assert_eq!(c.entry(&d, "a", t0), Cached::Absent);
        // A name found missing is absent for the TTL, until written here.
        let d2 = dk("alice", "x");
        c.put_absent(&d2, "gone", t0);
        assert_eq!(c.entry(&d2, "gone", t0), Cached::Absent);
        assert_eq!(c.entry(&d2, "other", t0), Cached::Miss);
        assert_eq!(
            c.entry(&d2, "gone", t0 + Duration::from_secs(2)),
            Cached::Miss
        );
        c.put_entry(&d2, "gone", Entry::File(info(2)), t0);
        assert_eq!(c.entry(&d2, "gone", t0), Cached::Hit(Entry::File(info(2))));
        // An entry learnt later outlives an older listing for its own TTL.
        let t1 = t0 + Duration::from_millis(900);
        c.put_entry(&d, "s", Entry::File(info(1)), t1);
        assert_eq!(
            c.entry(&d, "s", t0 + Duration::from_millis(1500)),
            Cached::Hit(Entry::File(info(1)))
        );
    }

    #[test]
    fn forget_tree_drops_a_directory_and_what_is_below_only() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let l = listing(&[("f", Entry::File(info(1)))]);
        for p in ["a", "a/b", "a/b/c", "ab", ""] {
            c.put_listing(&dk("alice", p), &l, t0);
        }
        c.forget_tree(&dk("alice", "a"));
        for (p, kept) in [
            ("a", false),
            ("a/b", false),
            ("a/b/c", false),
            ("ab", true),
            ("", true),
        ] {
            assert_eq!(c.listing(&dk("alice", p), t0).is_some(), kept, "{p}");
        }
    }

    #[test]
    fn stale_directories_are_pruned_when_there_are_many() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let l = listing(&[("f", Entry::File(info(1)))]);
        for i in 0..MAX_DIRS {
            c.put_listing(&dk("alice", &format!("d{i}")), &l, t0);
        }
        let later = t0 + Duration::from_secs(5);
        c.put_listing(&dk("alice", "new"), &l, later);
        assert!(c.dirs.len() <= 2, "{} directories kept", c.dirs.len());
        assert!(c.listing(&dk("alice", "new"), later).is_some());
    }

    #[test]
    fn users_made_here_stay_until_removed() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(c.user_exists("bob", t0), None);
        c.put_users(vec!["alice".into()], t0);
        assert_eq!(c.user_exists("bob", t0), Some(false));
        assert!(c.make_user("bob"));
        assert!(!c.make_user("bob"));
        assert_eq!(c.user_exists("bob", t0), Some(true));
        assert_eq!(c.users(t0).unwrap(), ["alice", "bob"]);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(c.users(later), None);
        assert_eq!(c.user_exists("bob", later), Some(true));
        assert_eq!(c.user_exists("alice", later), None);
        c.remove_user("bob");
        assert_eq!(c.user_exists("bob", t0), Some(false));
        // A fresh entry in a user's top level means the user exists.
        c.put_entry(&DirKey::user("carol"), "x", Entry::File(info(1)), later);
        assert_eq!(c.user_exists("carol", later), Some(true));
    }
}
