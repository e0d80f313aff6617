//! The proxy's persisted state: the live ring, the rebalance plan, servers outside the ring.
//!
//! One JSON file, `STATE_DIR/cluster.json`, written atomically (temp file, fsync, rename,
//! fsync of the directory) after every change, so a restarted proxy resumes a rebalance
//! where it stopped. It carries a format number; an unknown one is refused.
//!
//! The plan is a queue of partition-replica moves, executed strictly in order by one
//! worker. `target` is the ring as it will be once every queued move is done; new plans
//! (an added, removed or offline server) are computed from `target`, never from `ring`, so
//! that the final assignment keeps the replicas of every partition on distinct servers.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oss_proto::ring::{DevId, Move, Ring};
use oss_proto::wire::{Progress, ServerState, Timestamp};
use serde::{Deserialize, Serialize};

pub const STATE_FORMAT: u32 = 1;
const STATE_FILE: &str = "cluster.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveKind {
    /// Copy from `from` (online), flip, then drop the partition on `from`.
    Rebalance,
    /// `from` is gone: copy from the partition's surviving replica, flip.
    Refill,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMove {
    pub mv: Move,
    pub kind: MoveKind,
    /// Index into `Persisted::jobs` of the job this move belongs to.
    pub job: usize,
}

/// A partition whose copy on `addr` must be deleted: it moved away and the ring flipped.
/// Persisted with the flip, so a proxy killed between the flip and the delete still
/// deletes it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDrop {
    pub part: u32,
    pub addr: String,
    /// The job whose move this finishes: it shows as running until its drops are done.
    #[serde(default)]
    pub job: usize,
}

/// A server that is not (or no longer) in the ring but still matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideServer {
    pub addr: String,
    pub state: ServerState,
    pub since: Timestamp,
    /// Its leftover partitions were pushed to their owners and dropped.
    pub cleaned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub format: u32,
    pub ring: Ring,
    pub target: Ring,
    pub queue: Vec<QueuedMove>,
    /// Devices to forget once none of their moves are left (removed or offline ones).
    pub leaving: Vec<DevId>,
    pub outside: Vec<OutsideServer>,
    pub jobs: Vec<Progress>,
    /// Old copies still to delete after flips (absent in files written before it existed).
    #[serde(default)]
    pub drops: Vec<PendingDrop>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid oss state file: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path} has state format {found}; this proxy understands {STATE_FORMAT}")]
    Format { path: PathBuf, found: u32 },
}

impl Persisted {
    pub fn new(ring: Ring) -> Self {
        Persisted {
            format: STATE_FORMAT,
            target: ring.clone(),
            ring,
            queue: Vec::new(),
            leaving: Vec::new(),
            outside: Vec::new(),
            jobs: Vec::new(),
            drops: Vec::new(),
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// `Ok(None)` when the directory holds no state yet.
    pub fn load(dir: &Path) -> Result<Option<Self>, StateError> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if head.format != STATE_FORMAT {
            return Err(StateError::Format {
                path,
                found: head.format,
            });
        }
        let p: Persisted = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let corrupt = |why: String| StateError::Corrupt {
            path: path.clone(),
            why,
        };
        p.target.validate().map_err(|e| corrupt(e.to_string()))?;
        // The live ring is between two valid rings while moves run; its rows only have to
        // name known servers and have the right length.
        if p.ring.assignment.len() != p.ring.partitions() as usize {
            return Err(corrupt(
                "live ring has the wrong number of partitions".into(),
            ));
        }
        for row in &p.ring.assignment {
            if row.len() != usize::from(p.ring.replicas)
                || row.iter().any(|&d| p.addr_of(d).is_none())
            {
                return Err(corrupt("live ring names an unknown server".into()));
            }
        }
        Ok(Some(p))
    }

    /// Atomic replace (see [`write_durably`]).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(self).expect("state serializes");
        write_durably(dir, STATE_FILE, &text, 0o644)
    }

    /// Devices that will hold replicas of `part` when its queued moves are done, plus the
    /// ones that hold them now: everything a read must consult and a write must reach.
    pub fn replica_set(&self, part: u32) -> Vec<DevId> {
        let mut set: Vec<DevId> = self.ring.replicas_of(part).to_vec();
        for q in &self.queue {
            if q.mv.part == part && !set.contains(&q.mv.to) {
                set.push(q.mv.to);
            }
        }
        set
    }

    pub fn addr_of(&self, id: DevId) -> Option<&str> {
        self.ring
            .device(id)
            .or_else(|| self.target.device(id))
            .map(|d| d.addr.as_str())
    }
}

/// Replaces `dir/name` atomically and durably: a temp file created with `mode`, written and
/// fsynced, renamed over the old one, then the directory fsynced. The one way every file of
/// the state directory is written (the ring and plan, the user table, the admin key).
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let path = dir.join(name);
    let werr = |source| StateError::Write {
        path: path.clone(),
        source,
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    fs::rename(&tmp, &path).map_err(werr)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Ring {
        Ring::new(4, 2, &["a:1".into(), "b:1".into(), "c:1".into()]).unwrap()
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Persisted::load(dir.path()).unwrap().is_none());
        let p = Persisted::new(ring());
        p.save(dir.path()).unwrap();
        assert_eq!(Persisted::load(dir.path()).unwrap(), Some(p));
        assert!(!dir.path().join(".cluster.json.tmp").exists());
    }

    #[test]
    fn refuses_unknown_format_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Persisted::new(ring());
        p.format = 99;
        p.save(dir.path()).unwrap();
        assert!(matches!(
            Persisted::load(dir.path()),
            Err(StateError::Format { found: 99, .. })
        ));
        fs::write(Persisted::path(dir.path()), "{not json").unwrap();
        assert!(matches!(
            Persisted::load(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn replica_set_includes_move_targets() {
        let r = ring();
        let mut p = Persisted::new(r.clone());
        let owners = r.replicas_of(3).to_vec();
        let other = (0..3).find(|d| !owners.contains(d)).unwrap();
        p.queue.push(QueuedMove {
            mv: Move {
                part: 3,
                replica: 0,
                from: owners[0],
                to: other,
            },
            kind: MoveKind::Rebalance,
            job: 0,
        });
        let set = p.replica_set(3);
        assert_eq!(set.len(), 3);
        assert!(set.contains(&other));
        assert_eq!(p.replica_set(4), r.replicas_of(4).to_vec());
    }
}
