//! The inode table: inode numbers ↔ nodes of the mount (the root, a user, a user's file).
//!
//! Invariants:
//! - the root is inode 1 and never goes away;
//! - a *linked* node maps to exactly one inode and back (`by_node[n] == i` ⇔ `by_ino[i].node == n`
//!   and `by_ino[i].linked`);
//! - an inode stays in the table while the kernel holds lookups on it (it counts `lookup`,
//!   `create` and `mkdir` replies; `forget` gives them back), even after an unlink or a
//!   rename onto it detached it from its name;
//! - inode numbers are never reused within one mount, so a stale kernel reference can never
//!   reach another file.

use std::collections::HashMap;

use oss_proto::ObjectName;

pub const ROOT: u64 = 1;

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    User(String),
    File(ObjectName),
}

impl Node {
    pub fn is_dir(&self) -> bool {
        !matches!(self, Node::File(_))
    }

    /// The user a node belongs to (`None` for the root).
    pub fn user(&self) -> Option<&str> {
        match self {
            Node::Root => None,
            Node::User(u) => Some(u),
            Node::File(n) => Some(n.user()),
        }
    }
}

#[derive(Debug)]
struct Slot {
    node: Node,
    /// Lookups the kernel holds (it gives them back with `forget`).
    lookups: u64,
    /// False once unlinked or replaced by a rename: the name now belongs to someone else.
    linked: bool,
}

#[derive(Debug)]
pub struct InodeTable {
    by_ino: HashMap<u64, Slot>,
    by_node: HashMap<Node, u64>,
    next: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    pub fn new() -> Self {
        let mut t = InodeTable {
            by_ino: HashMap::new(),
            by_node: HashMap::new(),
            next: ROOT + 1,
        };
        t.by_ino.insert(
            ROOT,
            Slot {
                node: Node::Root,
                lookups: 1,
                linked: true,
            },
        );
        t.by_node.insert(Node::Root, ROOT);
        t
    }

    /// The node of an inode, whether or not it is still linked.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.by_ino.get(&ino).map(|s| &s.node)
    }

    /// True while the inode still owns its name.
    pub fn is_linked(&self, ino: u64) -> bool {
        self.by_ino.get(&ino).is_some_and(|s| s.linked)
    }

    /// The inode of a linked node, if it has one.
    pub fn find(&self, node: &Node) -> Option<u64> {
        self.by_node.get(node).copied()
    }

    /// The inode of `node`, allocating one if needed, without taking a lookup (readdir).
    pub fn ino_of(&mut self, node: &Node) -> u64 {
        if let Some(&i) = self.by_node.get(node) {
            return i;
        }
        let i = self.next;
        self.next += 1;
        self.by_ino.insert(
            i,
            Slot {
                node: node.clone(),
                lookups: 0,
                linked: true,
            },
        );
        self.by_node.insert(node.clone(), i);
        i
    }

    /// The inode of `node` with one more kernel lookup on it (lookup, create, mkdir replies).
    pub fn lookup(&mut self, node: &Node) -> u64 {
        let i = self.ino_of(node);
        if let Some(s) = self.by_ino.get_mut(&i) {
            s.lookups += 1;
        }
        i
    }

    /// The kernel dropped `n` lookups. The inode goes away when none are left.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(s) = self.by_ino.get_mut(&ino) else {
            return;
        };
        s.lookups = s.lookups.saturating_sub(n);
        if s.lookups == 0 {
            let s = self.by_ino.remove(&ino).expect("present");
            if s.linked {
                self.by_node.remove(&s.node);
            }
        }
    }

    /// The node no longer exists under its name (unlink, rmdir). Its inode lives on, detached,
    /// until the kernel forgets it; a new node of the same name gets a new inode.
    pub fn unlink(&mut self, node: &Node) {
        if let Some(i) = self.by_node.remove(node) {
            if let Some(s) = self.by_ino.get_mut(&i) {
                s.linked = false;
            }
            self.drop_if_unreferenced(i);
        }
    }

    /// `from` is now called `to`: its inode keeps its number (open handles follow it), and an
    /// inode that held `to` is detached.
    pub fn rename(&mut self, from: &Node, to: &Node) {
        if from == to {
            return;
        }
        self.unlink(to);
        if let Some(i) = self.by_node.remove(from) {
            if let Some(s) = self.by_ino.get_mut(&i) {
                s.node = to.clone();
            }
            self.by_node.insert(to.clone(), i);
        }
    }

    /// Inodes of linked files of `user` (for pending files in a listing).
    pub fn files_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = (u64, &'a ObjectName)> {
        self.by_ino.iter().filter_map(move |(&i, s)| match &s.node {
            Node::File(n) if s.linked && n.user() == user => Some((i, n)),
            _ => None,
        })
    }

    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ino.is_empty()
    }

    fn drop_if_unreferenced(&mut self, ino: u64) {
        if ino != ROOT && self.by_ino.get(&ino).is_some_and(|s| s.lookups == 0) {
            self.by_ino.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> Node {
        Node::File(ObjectName::parse(s).unwrap())
    }

    #[test]
    fn root_is_one_and_permanent() {
        let mut t = InodeTable::new();
        assert_eq!(t.find(&Node::Root), Some(ROOT));
        assert_eq!(t.get(ROOT), Some(&Node::Root));
        t.forget(ROOT, 100);
        assert_eq!(t.get(ROOT), Some(&Node::Root));
        assert!(t.is_linked(ROOT));
    }

    #[test]
    fn lookups_are_stable_and_counted() {
        let mut t = InodeTable::new();
        let a = t.lookup(&file("alice/a"));
        assert_eq!(t.lookup(&file("alice/a")), a);
        let u = t.lookup(&Node::User("alice".into()));
        assert_ne!(a, u);
        assert_eq!(t.get(a), Some(&file("alice/a")));
        t.forget(a, 1);
        assert_eq!(t.get(a), Some(&file("alice/a")), "one lookup left");
        t.forget(a, 1);
        assert_eq!(t.get(a), None);
        assert_eq!(t.find(&file("alice/a")), None);
        // Numbers are never reused.
        let a2 = t.lookup(&file("alice/a"));
        assert!(a2 > u);
    }

    #[test]
    fn readdir_numbers_take_no_reference() {
        let mut t = InodeTable::new();
        let a = t.ino_of(&file("alice/a"));
        assert_eq!(t.ino_of(&file("alice/a")), a);
        assert_eq!(t.lookup(&file("alice/a")), a);
        t.forget(a, 1);
        assert_eq!(t.get(a), None);
    }

    #[test]
    fn unlink_detaches_but_keeps_the_inode_until_forgotten() {
        let mut t = InodeTable::new();
        let a = t.lookup(&file("alice/a"));
        t.unlink(&file("alice/a"));
        assert!(!t.is_linked(a));
        assert_eq!(t.get(a), Some(&file("alice/a")));
        assert_eq!(t.find(&file("alice/a")), None);
        let b = t.lookup(&file("alice/a"));
        assert_ne!(a, b, "a new file of the same name is a new inode");
        t.forget(a, 1);
        assert_eq!(t.get(a), None);
        assert_eq!(
            t.find(&file("alice/a")),
            Some(b),
            "forgetting the old one keeps the new"
        );
    }

    #[test]
    fn unlink_without_lookups_frees_the_slot() {
        let mut t = InodeTable::new();
        let a = t.ino_of(&file("alice/a"));
        t.unlink(&file("alice/a"));
        assert_eq!(t.get(a), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rename_moves_the_inode_and_detaches_the_target() {
        let mut t = InodeTable::new();
        let a = t.lookup(&file("alice/a"));
        let b = t.lookup(&file("bob/b"));
        t.rename(&file("alice/a"), &file("bob/b"));
        assert_eq!(t.find(&file("bob/b")), Some(a));
        assert_eq!(t.get(a), Some(&file("bob/b")));
        assert_eq!(t.find(&file("alice/a")), None);
        assert!(!t.is_linked(b));
        assert!(t.is_linked(a));
        t.forget(b, 1);
        assert_eq!(
            t.find(&file("bob/b")),
            Some(a),
            "the old target's forget is harmless"
        );
        t.rename(&file("bob/b"), &file("bob/b"));
        assert_eq!(t.find(&file("bob/b")), Some(a));
    }

    #[test]
    fn files_of_lists_linked_files_of_one_user() {
        let mut t = InodeTable::new();
        t.lookup(&file("alice/a"));
        t.lookup(&file("alice/b"));
        t.lookup(&file("bob/c"));
        t.unlink(&file("alice/b"));
        let mut v: Vec<_> = t.files_of("alice").map(|(_, n)| n.to_string()).collect();
        v.sort();
        assert_eq!(v, vec!["alice/a"]);
    }
}
