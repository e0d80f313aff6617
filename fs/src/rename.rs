//! Planning the rename of a directory: the object store has no rename, so every object
//! below the directory (and its marker) is copied to its new name, then deleted. Pure: the
//! caller lists, copies and deletes.

use oss_proto::name::NameError;
use oss_proto::ObjectName;

use crate::inode::DirKey;

/// The copies a directory rename makes, in order: the marker first (the new directory shows
/// as soon as the first copy lands), then the objects in listing order. Deletes go in the
/// reverse order, so the old directory is the last thing to disappear.
///
/// `objects` are the live objects below `from` (any depth, as a listing of prefix
/// `from/` without a delimiter returns them); `marker` says whether `from` has one. Names
/// outside `from` are ignored. Fails, before anything is copied, if a new name would be
/// invalid (too long).
pub fn plan_dir_rename(
    from: &DirKey,
    to: &DirKey,
    marker: bool,
    objects: &[ObjectName],
) -> Result<Vec<(ObjectName, ObjectName)>, NameError> {
    let mut plan = Vec::with_capacity(objects.len() + 1);
    if marker {
        if let (Some(a), Some(b)) = (from.marker(), to.marker()) {
            plan.push((a, b));
        }
    }
    let (src, dst) = (from.prefix(), to.prefix());
    for o in objects {
        if !from.holds(o) {
            continue;
        }
        let rest = &o.file()[src.len()..];
        plan.push((
            o.clone(),
            ObjectName::new(&to.user, &format!("{dst}{rest}"))?,
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dk(user: &str, path: &str) -> DirKey {
        DirKey {
            user: user.into(),
            path: path.into(),
        }
    }

    fn names(v: &[&str]) -> Vec<ObjectName> {
        v.iter().map(|s| ObjectName::parse(s).unwrap()).collect()
    }

    fn shown(plan: &[(ObjectName, ObjectName)]) -> Vec<String> {
        plan.iter().map(|(a, b)| format!("{a} -> {b}")).collect()
    }

    #[test]
    fn every_object_below_moves_marker_first() {
        let objects = names(&[
            "alice/a/b/x",
            "alice/a/b/sub",
            "alice/a/b/sub/y",
            "alice/a/bc",
        ]);
        let plan = plan_dir_rename(&dk("alice", "a/b"), &dk("bob", "z"), true, &objects).unwrap();
        assert_eq!(
            shown(&plan),
            [
                "alice/a/b -> bob/z",
                "alice/a/b/x -> bob/z/x",
                "alice/a/b/sub -> bob/z/sub",
                "alice/a/b/sub/y -> bob/z/sub/y",
            ]
        );
    }

    #[test]
    fn without_a_marker_only_the_contents_move() {
        let objects = names(&["alice/d/f"]);
        let plan =
            plan_dir_rename(&dk("alice", "d"), &dk("alice", "e/d"), false, &objects).unwrap();
        assert_eq!(shown(&plan), ["alice/d/f -> alice/e/d/f"]);
        let empty = plan_dir_rename(&dk("alice", "d"), &dk("alice", "e"), false, &[]).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_new_name_too_long_fails_before_any_copy() {
        let deep = format!(
            "alice/d/{}/{}/{}",
            "x".repeat(250),
            "y".repeat(250),
            "z".repeat(250)
        );
        let objects = names(&[&deep]);
        let to = dk("alice", &format!("{}/{}", "n".repeat(255), "m".repeat(255)));
        let e = plan_dir_rename(&dk("alice", "d"), &to, false, &objects).unwrap_err();
        assert_eq!(e, NameError::FileTooLong);
    }
}
