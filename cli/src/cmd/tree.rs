//! `oss list`, `oss mkdir`, `oss copy` and `oss move`: a user's names seen as directories.
//!
//! Directories are implicit in names (`photos/2024/cat.jpg` makes `photos/` and
//! `photos/2024/`), plus explicit markers that keep empty ones: a zero-byte object named like
//! the directory without its trailing '/', content type [`Attrs::DIRECTORY`]. A listing shows
//! either as one `name/` line.
//!
//! Listings stream page by page (each next page asked with `marker` = the last key), so
//! `oss list USER -r` of a million names holds one page at a time.

use std::collections::BTreeSet;

use anyhow::Result;

use oss_proto::name::{hex, validate_file, validate_user};
use oss_proto::wire::{Attrs, ListItem, ListQuery};
use oss_proto::{Error, NameError, ObjectMeta, ObjectName, WireError};

use crate::error::{self, CliError};
use crate::fmt::{self, Align};
use crate::io::emit;
use crate::Ctx;

/// What `oss list` was asked to show: a user's top level, or one directory of theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    /// The directory without its trailing '/'; `None` for the user's top level.
    pub dir: Option<String>,
}

impl Target {
    /// `alice`, `alice/` (the top level), `alice/photos/` or `alice/photos` (the directory
    /// photos/). The directory must be a valid file name once its one trailing '/' is cut.
    pub fn parse(s: &str) -> Result<Target, NameError> {
        let (user, dir) = s.split_once('/').unwrap_or((s, ""));
        validate_user(user)?;
        if dir.is_empty() {
            return Ok(Target {
                user: user.to_owned(),
                dir: None,
            });
        }
        let dir = dir.strip_suffix('/').unwrap_or(dir);
        validate_file(dir)?;
        Ok(Target {
            user: user.to_owned(),
            dir: Some(dir.to_owned()),
        })
    }

    /// The listing prefix, relative to the user: `photos/`, or empty for the top level.
    pub fn prefix(&self) -> String {
        self.dir
            .as_ref()
            .map(|d| format!("{d}/"))
            .unwrap_or_default()
    }

    /// How messages name it: `alice` or `alice/photos/`.
    fn shown(&self) -> String {
        match &self.dir {
            None => self.user.clone(),
            Some(d) => format!("{}/{d}/", self.user),
        }
    }
}

pub async fn list(ctx: &Ctx, target: &str, long: bool, recursive: bool) -> Result<()> {
    list_with(ctx, target, long, recursive, &mut |text| emit(text)).await
}

/// [`list`], handing each page's lines to `out` as the page arrives.
pub async fn list_with(
    ctx: &Ctx,
    target: &str,
    long: bool,
    recursive: bool,
    out: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<()> {
    let t = Target::parse(target).map_err(|e| error::invalid_name(&e))?;
    let mut q = ListQuery {
        user: t.user.clone(),
        prefix: t.prefix(),
        delimiter: (!recursive).then_some('/'),
        ..ListQuery::default()
    };
    let mut lister = Lister::new(q.prefix.len(), long);
    loop {
        let (items, truncated) = match ctx.client.list_page(&q).await {
            Ok(page) => page,
            // A user is only a prefix: one without files has an empty listing.
            Err(Error::Remote(WireError::NotFound)) => (Vec::new(), false),
            Err(e) => return Err(ctx.fail(&e, &t.shown()).into()),
        };
        out(&lister.page(&items))?;
        let Some(last) = items.last().filter(|_| truncated) else {
            break;
        };
        // Keys only grow; a page that does not would have us ask for it forever.
        if !q.marker.is_empty() && last.key() <= q.marker.as_str() {
            return Err(CliError::new(format!(
                "{}: the proxy at {} returned a listing that does not advance past {:?}",
                t.shown(),
                ctx.proxy,
                q.marker
            ))
            .into());
        }
        q.marker = last.key().to_owned();
    }
    match (&t.dir, lister.shown) {
        (Some(dir), 0) => empty_dir(ctx, &t.user, dir).await,
        _ => Ok(()),
    }
}

/// A directory with nothing listed in it exists only if its marker does (`ls` of an empty
/// directory prints nothing; of a missing one, an error).
async fn empty_dir(ctx: &Ctx, user: &str, dir: &str) -> Result<()> {
    let name = ObjectName::new(user, dir).map_err(|e| error::invalid_name(&e))?;
    match ctx.client.stat(&name).await {
        Ok(m) if m.is_dir_marker() => Ok(()),
        Ok(_) => Err(CliError::new(format!("not a directory: {name}")).into()),
        Err(Error::Remote(WireError::NotFound)) => {
            Err(CliError::new(format!("not found: {name}/")).into())
        }
        Err(e) => Err(ctx.fail(&e, name.as_str()).into()),
    }
}

/// Turns listing pages into lines: names relative to the listed directory, a directory
/// marker and its prefix folded into one `name/` line, in key order.
pub struct Lister {
    /// Bytes of the listing prefix, cut from every key.
    cut: usize,
    long: bool,
    /// The last key handled: keys only grow, so one at or before it is a repeat (a prefix
    /// the next page begins with again).
    last: Option<String>,
    /// `name/` of the markers shown whose prefix may still come. A marker `a/b` sorts
    /// before its prefix `a/b/` with only names like `a/b-x` between, so this stays small:
    /// an entry leaves once the keys pass it.
    pending: BTreeSet<String>,
    /// Lines printed so far.
    pub shown: u64,
}

impl Lister {
    pub fn new(cut: usize, long: bool) -> Self {
        Lister {
            cut,
            long,
            last: None,
            pending: BTreeSet::new(),
            shown: 0,
        }
    }

    /// The lines of one page. With `-l` each page is aligned on its own, so a listing of
    /// any length needs no more than one page in memory.
    pub fn page(&mut self, items: &[ListItem]) -> String {
        let mut rows: Vec<Vec<String>> = Vec::new();
        for item in items {
            let key = item.key();
            if self.last.as_deref().is_some_and(|l| key <= l) {
                continue;
            }
            self.last = Some(key.to_owned());
            while self.pending.first().is_some_and(|p| p.as_str() < key) {
                self.pending.pop_first();
            }
            match item {
                ListItem::Object(m) if m.deleted => {}
                ListItem::Object(m) if m.is_dir_marker() => {
                    let dir = format!("{key}/");
                    rows.push(self.row(&dir, Some(m), true));
                    self.pending.insert(dir);
                }
                ListItem::Object(m) => rows.push(self.row(key, Some(m), false)),
                ListItem::Prefix(p) => {
                    if !self.pending.remove(p.as_str()) {
                        rows.push(self.row(p, None, true));
                    }
                }
            }
        }
        self.shown += rows.len() as u64;
        if self.long {
            fmt::table(
                &rows,
                &[Align::Right, Align::Left, Align::Left, Align::Left],
            )
        } else {
            rows.into_iter()
                .map(|mut r| {
                    let mut name = r.pop().unwrap_or_default();
                    name.push('\n');
                    name
                })
                .collect()
        }
    }

    /// Size, MD5, time and name (`-l`), or just the name. A directory has no size or MD5,
    /// and a time only when a marker gives it one.
    fn row(&self, key: &str, meta: Option<&ObjectMeta>, dir: bool) -> Vec<String> {
        let name = key.get(self.cut..).unwrap_or(key).to_owned();
        if !self.long {
            return vec![name];
        }
        let time = meta.map_or_else(|| "-".to_owned(), |m| fmt::iso_utc(m.timestamp));
        match meta {
            Some(m) if !dir => vec![m.size.to_string(), hex(&m.md5), time, name],
            _ => vec!["-".into(), "-".into(), time, name],
        }
    }
}

pub async fn mkdir(ctx: &Ctx, dir: &str) -> Result<()> {
    // `mkdir photos/` is `mkdir photos`, as in a shell.
    let bare = dir.strip_suffix('/').unwrap_or(dir);
    let name = ObjectName::parse(bare).map_err(|e| error::invalid_name(&e))?;
    match ctx.client.stat(&name).await {
        Ok(m) if m.is_dir_marker() => return Ok(()),
        Ok(_) => return Err(CliError::new(format!("{name}: exists and is a file")).into()),
        Err(Error::Remote(WireError::NotFound)) => {}
        Err(e) => return Err(ctx.fail(&e, name.as_str()).into()),
    }
    ctx.client
        .upload_with(
            &name,
            Some(0),
            Attrs::directory(),
            &mut tokio::io::empty(),
            &mut |_| {},
        )
        .await
        .map_err(|e| ctx.fail(&e, name.as_str()))?;
    Ok(())
}

pub async fn copy(ctx: &Ctx, src: &str, dst: &str) -> Result<()> {
    let (src, dst) = two_names(src, dst)?;
    copy_file(ctx, &src, &dst, "copy copies").await
}

pub async fn move_file(ctx: &Ctx, src: &str, dst: &str) -> Result<()> {
    let (src, dst) = two_names(src, dst)?;
    copy_file(ctx, &src, &dst, "move moves").await?;
    match ctx.client.delete(&src).await {
        // Not there any more: someone deleted it meanwhile; gone either way.
        Ok(_) => Ok(()),
        Err(e) => Err(CliError::new(format!(
            "{src}: copied to {dst} but not deleted: {}",
            ctx.fail(&e, "").msg
        ))
        .into()),
    }
}

fn two_names(src: &str, dst: &str) -> Result<(ObjectName, ObjectName), CliError> {
    let src = ObjectName::parse(src).map_err(|e| error::invalid_name(&e))?;
    let dst = ObjectName::parse(dst).map_err(|e| error::invalid_name(&e))?;
    if src == dst {
        // A move onto itself would copy and then delete the only copy.
        return Err(CliError::new(format!("{src} and {dst} are the same file")));
    }
    Ok((src, dst))
}

/// Copies one file inside the cluster; a directory as the source is refused by name.
/// `what` completes the refusal: "oss copy copies files only".
async fn copy_file(ctx: &Ctx, src: &ObjectName, dst: &ObjectName, what: &str) -> Result<()> {
    let is_dir = || CliError::new(format!("{src}: is a directory (oss {what} files only)"));
    let not_found = || CliError::new(format!("not found: {src}"));
    match ctx.client.stat(src).await {
        Ok(m) if m.is_dir_marker() => return Err(is_dir().into()),
        Ok(_) => {}
        Err(Error::Remote(WireError::NotFound)) => {
            return Err(if has_children(ctx, src).await? {
                is_dir()
            } else {
                not_found()
            }
            .into());
        }
        Err(e) => return Err(ctx.fail(&e, src.as_str()).into()),
    }
    match ctx.client.copy(src, dst, None).await {
        Ok(_) => Ok(()),
        Err(Error::Remote(WireError::NotFound)) => Err(not_found().into()),
        Err(e) => Err(ctx.fail(&e, &format!("{src} -> {dst}")).into()),
    }
}

/// Whether some live name lies below `name/` (an implicit directory).
async fn has_children(ctx: &Ctx, name: &ObjectName) -> Result<bool> {
    let q = ListQuery {
        user: name.user().to_owned(),
        prefix: format!("{}/", name.file()),
        delimiter: Some('/'),
        limit: 1,
        ..ListQuery::default()
    };
    match ctx.client.list_page(&q).await {
        Ok((items, _)) => Ok(!items.is_empty()),
        Err(Error::Remote(WireError::NotFound)) => Ok(false),
        Err(e) => Err(ctx.fail(&e, name.as_str()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64, ts: u64) -> ListItem {
        ListItem::Object(ObjectMeta {
            name: ObjectName::new("alice", name).unwrap(),
            size,
            md5: [0xab; 16],
            timestamp: ts,
            deleted: false,
            attrs: Attrs::default(),
        })
    }

    fn marker(name: &str, ts: u64) -> ListItem {
        let ListItem::Object(mut m) = file(name, 0, ts) else {
            unreachable!()
        };
        m.attrs = Attrs::directory();
        ListItem::Object(m)
    }

    fn prefix(p: &str) -> ListItem {
        ListItem::Prefix(p.into())
    }

    #[test]
    fn targets() {
        let t = |user: &str, dir: Option<&str>| Target {
            user: user.into(),
            dir: dir.map(Into::into),
        };
        assert_eq!(Target::parse("alice"), Ok(t("alice", None)));
        assert_eq!(Target::parse("alice/"), Ok(t("alice", None)));
        assert_eq!(
            Target::parse("alice/photos"),
            Ok(t("alice", Some("photos")))
        );
        assert_eq!(
            Target::parse("alice/photos/"),
            Ok(t("alice", Some("photos")))
        );
        assert_eq!(Target::parse("alice/a/b/"), Ok(t("alice", Some("a/b"))));
        assert_eq!(Target::parse("alice/a/b/").unwrap().prefix(), "a/b/");
        assert_eq!(Target::parse("alice").unwrap().prefix(), "");
        assert_eq!(
            Target::parse("alice//"),
            Err(NameError::Empty(oss_proto::name::Part::File))
        );
        assert_eq!(Target::parse("alice/a//"), Err(NameError::EmptySegment));
        assert_eq!(Target::parse("alice/a/../b"), Err(NameError::DotSegment));
        assert_eq!(
            Target::parse(""),
            Err(NameError::Empty(oss_proto::name::Part::User))
        );
    }

    #[test]
    fn one_level_with_folded_markers() {
        let mut l = Lister::new("photos/".len(), false);
        let page = vec![
            file("photos/a.txt", 1, 0),
            marker("photos/b", 0),
            file("photos/b-x", 1, 0),
            prefix("photos/b/"),
            prefix("photos/c/"),
            marker("photos/d", 0),
        ];
        assert_eq!(l.page(&page), "a.txt\nb/\nb-x\nc/\nd/\n");
        assert_eq!(l.shown, 5);
        assert!(l.pending.contains("photos/d/"));
        // The prefix of a marker on the previous page is folded too.
        assert_eq!(
            l.page(&[prefix("photos/d/"), file("photos/e", 0, 0)]),
            "e\n"
        );
        assert!(l.pending.is_empty());
    }

    #[test]
    fn a_prefix_repeated_on_the_next_page_is_shown_once() {
        let mut l = Lister::new(0, false);
        assert_eq!(l.page(&[file("a-b", 0, 0), prefix("a/")]), "a-b\na/\n");
        assert_eq!(l.page(&[prefix("a/"), file("a0", 0, 0)]), "a0\n");
        assert_eq!(l.page(&[]), "");
    }

    #[test]
    fn long_listing_of_files_and_directories() {
        let mut l = Lister::new(0, true);
        let md5 = "ab".repeat(16);
        let out = l.page(&[
            file("a.txt", 5, 1_795_608_000_000_000),
            file("big", 123_456, 0),
            marker("m", 1_795_608_000_000_000),
            prefix("sub/"),
        ]);
        assert_eq!(
            out,
            format!(
                "     5  {md5}  2026-11-25T12:00:00Z  a.txt\n\
                 123456  {md5}  1970-01-01T00:00:00Z  big\n\
                 \x20    -  -{pad}  2026-11-25T12:00:00Z  m/\n\
                 \x20    -  -{pad}  -                     sub/\n",
                pad = " ".repeat(31)
            )
        );
        // Every line has four whitespace-separated columns, the name last.
        for line in out.lines() {
            assert_eq!(line.split_whitespace().count(), 4, "{line:?}");
        }
        assert_eq!(Lister::new(0, true).page(&[]), "");
    }

    #[test]
    fn recursive_names_keep_their_path_below_the_listed_directory() {
        let mut l = Lister::new("d/".len(), false);
        let out = l.page(&[file("d/a", 0, 0), marker("d/e", 0), file("d/s/t/u", 0, 0)]);
        assert_eq!(out, "a\ne/\ns/t/u\n");
    }
}
