//! The inode table: inode numbers ↔ nodes of the mount (the root, a directory, a file).
//!
//! Invariants:
//! - the root is inode 1 and never goes away;
//! - a *linked* node maps to exactly one inode and back (`by_node[n] == i` ⇔ `by_ino[i].node == n`
//!   and `by_ino[i].linked`);
//! - an inode stays in the table while the kernel holds lookups on it (it counts `lookup`,
//!   `create` and `mkdir` replies; `forget` gives them back), even after an unlink or a
//!   rename onto it detached it from its name;
//! - inode numbers are never reused within one mount, so a stale kernel reference can never
//!   reach another file;
//! - renaming a directory renames every linked node below it too (the kernel keeps using
//!   the inodes of its children under the new name).

use std::collections::HashMap;

use oss_proto::name::NameError;
use oss_proto::ObjectName;

pub const ROOT: u64 = 1;

/// A directory of the mount: a user's top level (`path` empty) or a directory below it
/// (`path` like `a/b`: no leading or trailing '/').
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirKey {
    pub user: String,
    pub path: String,
}

impl DirKey {
    pub fn user(user: &str) -> Self {
        DirKey {
            user: user.to_owned(),
            path: String::new(),
        }
    }

    /// The listing prefix of what lies in this directory: `""` or `"a/b/"`.
    pub fn prefix(&self) -> String {
        if self.path.is_empty() {
            String::new()
        } else {
            format!("{}/", self.path)
        }
    }

    pub fn is_user(&self) -> bool {
        self.path.is_empty()
    }

    /// The object a child called `name` would be (a file, or a subdirectory's marker).
    pub fn child_object(&self, name: &str) -> Result<ObjectName, NameError> {
        if name.contains('/') {
            return Err(NameError::Slash(oss_proto::name::Part::File));
        }
        ObjectName::new(&self.user, &format!("{}{name}", self.prefix()))
    }

    pub fn child_dir(&self, name: &str) -> DirKey {
        DirKey {
            user: self.user.clone(),
            path: format!("{}{name}", self.prefix()),
        }
    }

    /// The marker object of this directory (`None` for a user's top level: a marker cannot
    /// have an empty file name).
    pub fn marker(&self) -> Option<ObjectName> {
        if self.path.is_empty() {
            None
        } else {
            ObjectName::new(&self.user, &self.path).ok()
        }
    }

    /// The directory holding this one and this one's name (`None` for a user's top level).
    pub fn parent(&self) -> Option<(DirKey, &str)> {
        if self.path.is_empty() {
            return None;
        }
        let (dir, name) = match self.path.rfind('/') {
            Some(i) => (&self.path[..i], &self.path[i + 1..]),
            None => ("", self.path.as_str()),
        };
        Some((
            DirKey {
                user: self.user.clone(),
                path: dir.to_owned(),
            },
            name,
        ))
    }

    /// The directory of a file and the file's last segment.
    pub fn of_object(name: &ObjectName) -> (DirKey, &str) {
        let f = name.file();
        let (dir, base) = match f.rfind('/') {
            Some(i) => (&f[..i], &f[i + 1..]),
            None => ("", f),
        };
        (
            DirKey {
                user: name.user().to_owned(),
                path: dir.to_owned(),
            },
            base,
        )
    }

    /// True if `self` is `other` or lies below it.
    pub fn is_within(&self, other: &DirKey) -> bool {
        self.user == other.user
            && (other.path.is_empty()
                || self.path == other.path
                || self.path.starts_with(&other.prefix()))
    }

    /// True if the object lies (at any depth) below this directory.
    pub fn holds(&self, name: &ObjectName) -> bool {
        name.user() == self.user && name.file().starts_with(&self.prefix())
    }
}

impl std::fmt::Display for DirKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.path)
    }
}

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Dir(DirKey),
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
            Node::Dir(d) => Some(&d.user),
            Node::File(n) => Some(n.user()),
        }
    }

    /// This node's name after its directory `from` became `to`; `None` if it is not in
    /// `from` (at any depth).
    pub(crate) fn moved(&self, from: &DirKey, to: &DirKey) -> Option<Node> {
        match self {
            Node::Root => None,
            Node::Dir(d) if d.is_within(from) => {
                let rest = &d.path[from.path.len()..];
                Some(Node::Dir(DirKey {
                    user: to.user.clone(),
                    path: format!("{}{rest}", to.path),
                }))
            }
            Node::File(n) if from.holds(n) => {
                let rest = &n.file()[from.prefix().len()..];
                ObjectName::new(&to.user, &format!("{}{rest}", to.prefix()))
                    .ok()
                    .map(Node::File)
            }
            _ => None,
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

    /// The directory `from` is now `to`, with everything below it: each linked node keeps
    /// its inode under its new name; nodes that held the new names are detached.
    pub fn rename_dir(&mut self, from: &DirKey, to: &DirKey) {
        if from == to {
            return;
        }
        let moves: Vec<(u64, Node)> = self
            .by_node
            .iter()
            .filter_map(|(n, &i)| n.moved(from, to).map(|m| (i, m)))
            .collect();
        for (i, _) in &moves {
            if let Some(s) = self.by_ino.get(i) {
                self.by_node.remove(&s.node);
            }
        }
        // Whatever is still linked at or below `to` is not part of the move: detach it.
        let stale: Vec<Node> = self
            .by_node
            .keys()
            .filter(|n| match n {
                Node::Dir(d) => d.is_within(to),
                Node::File(f) => to.holds(f),
                Node::Root => false,
            })
            .cloned()
            .collect();
        for n in stale {
            self.unlink(&n);
        }
        for (i, new) in moves {
            if let Some(s) = self.by_ino.get_mut(&i) {
                s.node = new.clone();
            }
            self.by_node.insert(new, i);
        }
    }

    /// Inodes of linked files at any depth below `dir` (files being written there).
    pub fn files_under<'a>(
        &'a self,
        dir: &'a DirKey,
    ) -> impl Iterator<Item = (u64, &'a ObjectName)> + 'a {
        self.by_ino.iter().filter_map(move |(&i, s)| match &s.node {
            Node::File(n) if s.linked && dir.holds(n) => Some((i, n)),
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

    fn dk(user: &str, path: &str) -> DirKey {
        DirKey {
            user: user.into(),
            path: path.into(),
        }
    }

    fn dir(user: &str, path: &str) -> Node {
        Node::Dir(dk(user, path))
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
        let u = t.lookup(&dir("alice", ""));
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
    fn directories_and_files_of_the_same_name_are_different_nodes() {
        let mut t = InodeTable::new();
        let d = t.lookup(&dir("alice", "a/b"));
        let f = t.lookup(&file("alice/a/b"));
        assert_ne!(d, f);
        assert!(t.get(d).unwrap().is_dir());
        assert!(!t.get(f).unwrap().is_dir());
        assert_eq!(t.get(d).unwrap().user(), Some("alice"));
    }

    #[test]
    fn rename_dir_moves_everything_below_and_only_that() {
        let mut t = InodeTable::new();
        let d = t.lookup(&dir("alice", "a"));
        let sub = t.lookup(&dir("alice", "a/s"));
        let f = t.lookup(&file("alice/a/s/f"));
        let g = t.lookup(&file("alice/a/g"));
        // Siblings whose names merely start alike stay where they are.
        let other = t.lookup(&file("alice/ab"));
        let other_dir = t.lookup(&dir("alice", "a-b"));
        // An empty directory at the target is replaced.
        let old_target = t.lookup(&dir("bob", "x"));
        t.rename_dir(&dk("alice", "a"), &dk("bob", "x"));
        assert_eq!(t.find(&dir("bob", "x")), Some(d));
        assert_eq!(t.find(&dir("bob", "x/s")), Some(sub));
        assert_eq!(t.find(&file("bob/x/s/f")), Some(f));
        assert_eq!(t.find(&file("bob/x/g")), Some(g));
        assert_eq!(t.get(f), Some(&file("bob/x/s/f")));
        assert_eq!(t.find(&file("alice/ab")), Some(other));
        assert_eq!(t.find(&dir("alice", "a-b")), Some(other_dir));
        assert_eq!(t.find(&dir("alice", "a")), None);
        assert_eq!(t.find(&file("alice/a/g")), None);
        assert!(!t.is_linked(old_target));
        assert_eq!(t.get(old_target), Some(&dir("bob", "x")));
        t.forget(old_target, 1);
        assert_eq!(t.find(&dir("bob", "x")), Some(d), "old target's forget");
        let mut under: Vec<String> = t
            .files_under(&dk("bob", "x"))
            .map(|(_, n)| n.to_string())
            .collect();
        under.sort();
        assert_eq!(under, ["bob/x/g", "bob/x/s/f"]);
    }

    #[test]
    fn files_under_lists_linked_files_at_any_depth() {
        let mut t = InodeTable::new();
        t.lookup(&file("alice/a"));
        t.lookup(&file("alice/d/b"));
        t.lookup(&file("alice/d/e/c"));
        t.lookup(&file("alice/de"));
        t.lookup(&file("bob/c"));
        t.unlink(&file("alice/d/b"));
        let names = |d: DirKey| {
            let mut v: Vec<_> = t.files_under(&d).map(|(_, n)| n.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(dk("alice", "")),
            ["alice/a", "alice/d/e/c", "alice/de"]
        );
        assert_eq!(names(dk("alice", "d")), ["alice/d/e/c"]);
    }

    #[test]
    fn dir_keys() {
        let top = DirKey::user("alice");
        assert_eq!(top.prefix(), "");
        assert_eq!(top.marker(), None);
        assert_eq!(top.parent(), None);
        let a = top.child_dir("a");
        let ab = a.child_dir("b");
        assert_eq!(ab, dk("alice", "a/b"));
        assert_eq!(ab.prefix(), "a/b/");
        assert_eq!(ab.marker().unwrap().as_str(), "alice/a/b");
        assert_eq!(ab.parent(), Some((a.clone(), "b")));
        assert_eq!(a.parent(), Some((top.clone(), "a")));
        assert_eq!(ab.child_object("f").unwrap().as_str(), "alice/a/b/f");
        assert!(ab.child_object("x/y").is_err());
        let n = ObjectName::parse("alice/a/b/f").unwrap();
        assert_eq!(DirKey::of_object(&n), (ab.clone(), "f"));
        let n = ObjectName::parse("alice/f").unwrap();
        assert_eq!(DirKey::of_object(&n), (top.clone(), "f"));
        assert!(ab.is_within(&a) && ab.is_within(&top) && ab.is_within(&ab));
        assert!(!dk("alice", "ab").is_within(&a));
        assert!(a.holds(&ObjectName::parse("alice/a/x").unwrap()));
        assert!(!a.holds(&ObjectName::parse("alice/ab").unwrap()));
        assert!(!a.holds(&ObjectName::parse("alice/a").unwrap()));
    }
}
