//! Directory times kept in memory: when this mount adds, removes or renames an entry of a
//! directory, that directory's mtime and ctime become "now" here, without telling the
//! proxy (a `cp -r` costs no extra request per file).
//!
//! These times are kept by the mount that made the change only: other mounts do not see
//! them, and a remount forgets them. What lasts is a marker's stored time (set by `mkdir`
//! and `touch`/`utimensat` of the directory); a directory shows the later of the two.

use std::collections::HashMap;

use crate::inode::{DirKey, Node};

/// A directory's times as changed on this mount, in ns since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    /// The last entry change here (0: none since the mtime was last set explicitly).
    pub mtime: u64,
    /// The last entry or attribute change here.
    pub ctime: u64,
}

/// Per directory (the root or a [`DirKey`]): its times as changed on this mount.
#[derive(Debug, Default)]
pub struct DirTimes {
    by_dir: HashMap<Node, Changed>,
}

impl DirTimes {
    pub fn new() -> Self {
        Self::default()
    }

    /// An entry of `dir` was added, removed or renamed at `now`: mtime and ctime move on.
    pub fn entry_changed(&mut self, dir: Node, now: u64) {
        let c = self.by_dir.entry(dir).or_default();
        c.mtime = c.mtime.max(now);
        c.ctime = c.ctime.max(now);
    }

    /// `dir`'s mode or times were set (and stored in its marker) at `now`: the ctime moves
    /// on; with `mtime_set` the stored mtime is what shows from now on (`touch -d`,
    /// `rsync -a` and `tar` set an older one after filling the directory).
    pub fn attrs_set(&mut self, dir: Node, mtime_set: bool, now: u64) {
        let c = self.by_dir.entry(dir).or_default();
        if mtime_set {
            c.mtime = 0;
        }
        c.ctime = c.ctime.max(now);
    }

    pub fn get(&self, dir: &Node) -> Option<Changed> {
        self.by_dir.get(dir).copied()
    }

    /// `dir` is gone: forget it and everything below it.
    pub fn remove_tree(&mut self, dir: &DirKey) {
        self.by_dir
            .retain(|n, _| !matches!(n, Node::Dir(d) if d.is_within(dir)));
    }

    /// `from` became `to`: its times and those of the directories below move along (what
    /// was at or below `to` before is gone).
    pub fn rename_tree(&mut self, from: &DirKey, to: &DirKey) {
        if from == to {
            return;
        }
        let moved: Vec<(Node, Changed)> = self
            .by_dir
            .iter()
            .filter_map(|(n, c)| n.moved(from, to).map(|m| (m, *c)))
            .collect();
        self.remove_tree(from);
        self.remove_tree(to);
        self.by_dir.extend(moved);
    }

    /// The (mtime, ctime) to show: the later of the stored time and this mount's.
    pub fn shown(&self, dir: &Node, stored_mtime: u64, stored_ctime: u64) -> (u64, u64) {
        match self.get(dir) {
            Some(c) => (stored_mtime.max(c.mtime), stored_ctime.max(c.ctime)),
            None => (stored_mtime, stored_ctime),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dk(path: &str) -> DirKey {
        DirKey {
            user: "alice".into(),
            path: path.into(),
        }
    }

    fn d(path: &str) -> Node {
        Node::Dir(dk(path))
    }

    #[test]
    fn entry_changes_show_as_the_later_time() {
        let mut t = DirTimes::new();
        assert_eq!(t.shown(&d("a"), 10, 10), (10, 10), "nothing changed here");
        t.entry_changed(d("a"), 50);
        assert_eq!(t.shown(&d("a"), 10, 10), (50, 50));
        assert_eq!(
            t.shown(&d("a"), 70, 70),
            (70, 70),
            "a later stored time wins"
        );
        t.entry_changed(d("a"), 40);
        assert_eq!(t.shown(&d("a"), 10, 10), (50, 50), "never goes back");
        t.entry_changed(Node::Root, 60);
        assert_eq!(t.shown(&Node::Root, 1, 1), (60, 60));
        assert_eq!(
            t.shown(&d("b"), 1, 1),
            (1, 1),
            "other directories untouched"
        );
    }

    #[test]
    fn an_explicit_mtime_wins_but_the_ctime_moves_on() {
        let mut t = DirTimes::new();
        t.entry_changed(d("a"), 50);
        t.attrs_set(d("a"), true, 60);
        assert_eq!(
            t.shown(&d("a"), 5, 5),
            (5, 60),
            "touch -d: the set time shows"
        );
        t.attrs_set(d("a"), false, 70);
        assert_eq!(t.shown(&d("a"), 5, 5), (5, 70), "chmod: only the ctime");
    }

    #[test]
    fn renames_move_the_tree_and_removals_forget_it() {
        let mut t = DirTimes::new();
        t.entry_changed(d("a"), 1);
        t.entry_changed(d("a/s"), 2);
        t.entry_changed(d("ab"), 3);
        t.entry_changed(d("b"), 4);
        t.rename_tree(&dk("a"), &dk("b"));
        assert_eq!(t.get(&d("a")), None);
        assert_eq!(t.get(&d("a/s")), None);
        assert_eq!(t.get(&d("b")).map(|c| c.mtime), Some(1));
        assert_eq!(t.get(&d("b/s")).map(|c| c.mtime), Some(2));
        assert_eq!(t.get(&d("ab")).map(|c| c.mtime), Some(3), "a sibling stays");
        t.remove_tree(&dk("b"));
        assert_eq!(t.get(&d("b")), None);
        assert_eq!(t.get(&d("b/s")), None);
        assert_eq!(t.get(&d("ab")).map(|c| c.mtime), Some(3));
    }
}
