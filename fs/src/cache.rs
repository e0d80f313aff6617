//! What ossfs remembers of the proxy's answers, so `ls -l` costs one listing and not one
//! round trip per file. Pure data: the caller passes `now`, which keeps it testable.
//!
//! Freshness: a listing is trusted for [`Cache::ttl`] (1 s by default); within that time a
//! name absent from it is answered "no such file" without asking the proxy. (Listings are
//! only *taken* by `readdir` from offset 0, which always asks the proxy; the cache answers
//! the lookups that follow it.) A single file's
//! attributes learnt from a stat, an upload or a listing are trusted for the same time.
//! Writes made through this mount update the cache at once, so they are never hidden by it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use oss_proto::{ObjectMeta, Timestamp};

/// What `ls -l` shows of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    /// Microseconds since the Unix epoch (the proxy's write timestamp).
    pub mtime: Timestamp,
}

impl From<&ObjectMeta> for FileInfo {
    fn from(m: &ObjectMeta) -> Self {
        FileInfo {
            size: m.size,
            mtime: m.timestamp,
        }
    }
}

/// The cache's answer about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Hit(FileInfo),
    /// Known not to exist (a fresh listing does not have it).
    Absent,
    /// Ask the proxy.
    Miss,
}

#[derive(Debug, Default)]
struct UserDir {
    listed_at: Option<Instant>,
    files: BTreeMap<String, (FileInfo, Instant)>,
}

#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    dirs: HashMap<String, UserDir>,
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

    pub fn file(&self, user: &str, file: &str, now: Instant) -> Cached {
        let Some(d) = self.dirs.get(user) else {
            return Cached::Miss;
        };
        if let Some((info, at)) = d.files.get(file) {
            if self.fresh(*at, now) {
                return Cached::Hit(*info);
            }
        }
        match d.listed_at {
            Some(at) if self.fresh(at, now) && !d.files.contains_key(file) => Cached::Absent,
            _ => Cached::Miss,
        }
    }

    pub fn put_file(&mut self, user: &str, file: &str, info: FileInfo, now: Instant) {
        self.dirs
            .entry(user.to_owned())
            .or_default()
            .files
            .insert(file.to_owned(), (info, now));
    }

    /// The file is gone (deleted here, or the proxy said "not found").
    pub fn remove_file(&mut self, user: &str, file: &str) {
        if let Some(d) = self.dirs.get_mut(user) {
            d.files.remove(file);
        }
    }

    /// A full listing of `user` replaces what was known of that user.
    pub fn put_listing(&mut self, user: &str, entries: &[ObjectMeta], now: Instant) {
        let d = self.dirs.entry(user.to_owned()).or_default();
        d.files = entries
            .iter()
            .filter(|m| !m.deleted)
            .map(|m| (m.name.file().to_owned(), (FileInfo::from(m), now)))
            .collect();
        d.listed_at = Some(now);
    }

    /// The files of a fresh listing, sorted by name; `None` when it must be fetched again.
    pub fn listing(&self, user: &str, now: Instant) -> Option<Vec<(String, FileInfo)>> {
        let d = self.dirs.get(user)?;
        if !d.listed_at.is_some_and(|at| self.fresh(at, now)) {
            return None;
        }
        Some(d.files.iter().map(|(k, (i, _))| (k.clone(), *i)).collect())
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

    /// Whether `user` is known to exist: made here, in a fresh user list, or with a file
    /// in the cache. `None`: ask the proxy.
    pub fn user_exists(&self, user: &str, now: Instant) -> Option<bool> {
        if self.made.contains(user) {
            return Some(true);
        }
        if let Some(d) = self.dirs.get(user) {
            if d.files.values().any(|(_, at)| self.fresh(*at, now)) {
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
        self.dirs.remove(user);
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
        }
    }

    #[test]
    fn listing_answers_lookups_until_it_expires() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(c.file("alice", "a", t0), Cached::Miss);
        c.put_listing("alice", &[meta("alice/a", 3), meta("alice/b", 4)], t0);
        let info = FileInfo { size: 3, mtime: 7 };
        assert_eq!(c.file("alice", "a", t0), Cached::Hit(info));
        assert_eq!(c.file("alice", "zz", t0), Cached::Absent);
        assert_eq!(c.file("bob", "a", t0), Cached::Miss);
        let names: Vec<_> = c
            .listing("alice", t0)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(c.file("alice", "a", later), Cached::Miss);
        assert_eq!(c.file("alice", "zz", later), Cached::Miss);
        assert!(c.listing("alice", later).is_none());
    }

    #[test]
    fn local_writes_and_deletes_show_at_once() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        c.put_listing("alice", &[meta("alice/a", 3)], t0);
        let info = FileInfo { size: 10, mtime: 9 };
        c.put_file("alice", "new", info, t0);
        assert_eq!(c.file("alice", "new", t0), Cached::Hit(info));
        assert_eq!(c.listing("alice", t0).unwrap().len(), 2);
        c.remove_file("alice", "a");
        assert_eq!(c.file("alice", "a", t0), Cached::Absent);
        // A stat result outlives an older listing for its own TTL.
        let t1 = t0 + Duration::from_millis(900);
        c.put_file("alice", "s", info, t1);
        assert_eq!(
            c.file("alice", "s", t0 + Duration::from_millis(1500)),
            Cached::Hit(info)
        );
    }

    #[test]
    fn tombstones_are_not_files() {
        let mut c = Cache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let mut gone = meta("alice/gone", 0);
        gone.deleted = true;
        c.put_listing("alice", &[gone], t0);
        assert_eq!(c.file("alice", "gone", t0), Cached::Absent);
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
    }
}
