//! The in-memory index: what is on disk, by name, by partition and by user.
//!
//! Built at startup from the footers and kept in step by every commit, quarantine, reclaim
//! and partition drop (always under the object's lock). Head and listings are answered from
//! it without touching the disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    /// user → names, tombstones included. Sorted so listings need no sort.
    by_user: BTreeMap<String, BTreeSet<ObjectName>>,
    /// Live objects per user (a user with only tombstones is not listed by `users`).
    live_per_user: HashMap<String, u64>,
    live_objects: u64,
    live_bytes: u64,
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
            .insert(name.clone());
        if !meta.deleted {
            self.live_objects += 1;
            self.live_bytes += meta.size;
            *self
                .live_per_user
                .entry(name.user().to_owned())
                .or_default() += 1;
        }
        self.by_name.insert(name, Entry { part, meta });
        old
    }

    pub fn remove(&mut self, name: &ObjectName) -> Option<Entry> {
        let e = self.by_name.remove(name)?;
        if let Some(set) = self.by_part.get_mut(&e.part) {
            set.remove(name);
            if set.is_empty() {
                self.by_part.remove(&e.part);
            }
        }
        if let Some(set) = self.by_user.get_mut(name.user()) {
            set.remove(name);
            if set.is_empty() {
                self.by_user.remove(name.user());
            }
        }
        if !e.meta.deleted {
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

    /// Every entry of a user, tombstones included, sorted by name.
    pub fn list_user(&self, user: &str) -> Vec<ObjectMeta> {
        self.by_user
            .get(user)
            .map(|set| set.iter().map(|n| self.by_name[n].meta.clone()).collect())
            .unwrap_or_default()
    }

    /// Every entry of a partition, tombstones included, sorted by name.
    pub fn list_part(&self, part: u32) -> Vec<ObjectMeta> {
        self.by_part
            .get(&part)
            .map(|set| set.iter().map(|n| self.by_name[n].meta.clone()).collect())
            .unwrap_or_default()
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
        }
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
        assert_eq!(ix.list_user("bob").len(), 1, "tombstones are listed");
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
