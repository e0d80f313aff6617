//! Containers made through the Swift door, and the account's metadata: what Swift keeps in
//! its account and container databases that oss's names do not already say, persisted
//! crash-safely in `STATE_DIR/containers.json` by the proxy (which owns the namespace, as
//! it owns the ring and the users).
//!
//! A container is an oss user's top-level directory. It exists while it has objects, or
//! while it has a record here (`PUT` of the container made one; `DELETE` of an empty one
//! removes it). The record holds the container's creation time and its
//! `X-Container-Meta-*` metadata; counts and bytes come from the objects themselves.

use oss_proto::sync::Locked;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use oss_proto::wire::Timestamp;
use serde::{Deserialize, Serialize};

use crate::state::{write_durably, StateError};

const FILE: &str = "containers.json";
const FORMAT: u32 = 1;

/// What is kept of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// When it was first created (µs since the epoch).
    pub created: Timestamp,
    /// When it was last created or its metadata changed (its `Last-Modified`).
    #[serde(default)]
    pub modified: Timestamp,
    /// Its metadata: lower-case names without `x-container-meta-`.
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Table {
    format: u32,
    /// The account's metadata (`X-Account-Meta-*`), lower-case names.
    account: BTreeMap<String, String>,
    containers: BTreeMap<String, Container>,
}

/// Count, bytes and newest time of a container's live objects.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub count: u64,
    pub bytes: u64,
    pub newest: Timestamp,
}

/// The container table.
#[derive(Debug)]
pub struct Containers {
    dir: PathBuf,
    table: Mutex<Table>,
    /// Per container: a counter of the writes and deletes the proxy started or finished in
    /// it, and the totals last counted with the counter they were counted at. Every write
    /// goes through this proxy, so totals counted while the counter did not move stay true
    /// until it moves.
    counted: Mutex<std::collections::HashMap<String, (u64, Option<Totals>)>>,
}

impl Containers {
    pub fn open(dir: &Path) -> Result<Containers, StateError> {
        let path = dir.join(FILE);
        let table = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let t: Table = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                if t.format != FORMAT {
                    return Err(StateError::Format {
                        path,
                        found: t.format,
                    });
                }
                t
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table {
                format: FORMAT,
                ..Default::default()
            },
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ok(Containers {
            dir: dir.to_path_buf(),
            table: Mutex::new(table),
            counted: Mutex::default(),
        })
    }

    fn counted(&self) -> MutexGuard<'_, std::collections::HashMap<String, (u64, Option<Totals>)>> {
        self.counted.locked()
    }

    /// A write or delete in `container` starts or ends: its counted totals are stale.
    pub fn touch(&self, container: &str) {
        let mut c = self.counted();
        let e = c.entry(container.to_owned()).or_insert((0, None));
        e.0 += 1;
        e.1 = None;
    }

    /// The counter now, and the totals if they were counted since the last write.
    pub fn cached_totals(&self, container: &str) -> (u64, Option<Totals>) {
        self.counted().get(container).copied().unwrap_or((0, None))
    }

    /// Keeps totals counted while the counter stood at `at` (dropped if it moved since).
    pub fn store_totals(&self, container: &str, at: u64, t: Totals) {
        let mut c = self.counted();
        let e = c.entry(container.to_owned()).or_insert((0, None));
        if e.0 == at {
            e.1 = Some(t);
        }
    }

    /// The table, locked; changes are made on a copy and committed (see [`Self::change`]).
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.locked()
    }

    /// Applies `f` to a copy of the table, writes the copy durably, then makes it current:
    /// a failed write changes nothing.
    fn change<T>(&self, f: impl FnOnce(&mut Table) -> T) -> Result<T, StateError> {
        let mut cur = self.lock();
        let mut next = cur.clone();
        let out = f(&mut next);
        let text = serde_json::to_vec_pretty(&next).expect("the table serializes");
        write_durably(&self.dir, FILE, &text, 0o644)?;
        *cur = next;
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<Container> {
        self.lock().containers.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }

    /// Creates `name` if it has no record (true), and applies `update` to its metadata.
    pub fn put(&self, name: &str, now: Timestamp, update: &MetaUpdate) -> Result<bool, StateError> {
        self.change(|t| {
            let mut created = false;
            let c = t.containers.entry(name.to_owned()).or_insert_with(|| {
                created = true;
                Container {
                    created: now,
                    modified: now,
                    meta: BTreeMap::new(),
                }
            });
            c.modified = now;
            update.apply(&mut c.meta);
            created
        })
    }

    /// Applies `update` to the metadata of `name`, creating its record if it existed only
    /// through its objects.
    pub fn post(&self, name: &str, now: Timestamp, update: &MetaUpdate) -> Result<(), StateError> {
        self.put(name, now, update).map(|_| ())
    }

    /// Forgets `name`'s record; true if there was one.
    pub fn remove(&self, name: &str) -> Result<bool, StateError> {
        if !self.lock().containers.contains_key(name) {
            return Ok(false);
        }
        self.change(|t| t.containers.remove(name).is_some())
    }

    pub fn account_meta(&self) -> BTreeMap<String, String> {
        self.lock().account.clone()
    }

    pub fn post_account(&self, update: &MetaUpdate) -> Result<(), StateError> {
        self.change(|t| update.apply(&mut t.account))
    }
}

/// A change to a metadata map: names set to values, names removed (`X-Remove-…-Meta-*`, or
/// set to an empty value, as Swift does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaUpdate {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl MetaUpdate {
    pub fn apply(&self, meta: &mut BTreeMap<String, String>) {
        for k in &self.remove {
            meta.remove(k);
        }
        for (k, v) in &self.set {
            if v.is_empty() {
                meta.remove(k);
            } else {
                meta.insert(k.clone(), v.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(set: &[(&str, &str)], remove: &[&str]) -> MetaUpdate {
        MetaUpdate {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn records_persist_and_metadata_updates_merge() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::open(dir.path()).unwrap();
        assert!(c
            .put("alice", 7, &update(&[("color", "red")], &[]))
            .unwrap());
        assert!(!c.put("alice", 9, &update(&[("size", "big")], &[])).unwrap());
        c.post("alice", 9, &update(&[("color", "")], &["nothing"]))
            .unwrap();
        c.post_account(&update(&[("quota", "1")], &[])).unwrap();
        let again = Containers::open(dir.path()).unwrap();
        let a = again.get("alice").unwrap();
        assert_eq!(a.created, 7);
        assert_eq!(
            a.meta.into_iter().collect::<Vec<_>>(),
            vec![("size".to_string(), "big".to_string())]
        );
        assert_eq!(
            again.account_meta().get("quota").map(String::as_str),
            Some("1")
        );
        assert!(again.remove("alice").unwrap());
        assert!(!again.remove("alice").unwrap());
        assert!(Containers::open(dir.path()).unwrap().names().is_empty());
    }

    #[test]
    fn totals_counted_across_a_write_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::open(dir.path()).unwrap();
        let t = Totals {
            count: 1,
            bytes: 2,
            newest: 3,
        };
        let (at, none) = c.cached_totals("a");
        assert_eq!(none, None);
        c.store_totals("a", at, t);
        assert_eq!(c.cached_totals("a").1, Some(t));
        // A write starts while totals are being counted: what was counted is not kept.
        let (at, _) = c.cached_totals("a");
        c.touch("a");
        assert_eq!(c.cached_totals("a").1, None);
        c.store_totals("a", at, t);
        assert_eq!(c.cached_totals("a").1, None);
        c.touch("a");
        let (at, _) = c.cached_totals("a");
        c.store_totals("a", at, t);
        assert_eq!(c.cached_totals("a").1, Some(t));
        assert_eq!(c.cached_totals("b").1, None);
    }

    #[test]
    fn a_table_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            r#"{"format": 99, "account": {}, "containers": {}}"#,
        )
        .unwrap();
        assert!(matches!(
            Containers::open(dir.path()),
            Err(StateError::Format { found: 99, .. })
        ));
    }
}
