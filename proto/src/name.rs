//! Object names (`USER/FILENAME`), their validation, and placement hashing.
//!
//! A file name is a path: segments separated by '/'. Directories are not objects of their
//! own; they exist in the names below them (and in explicit markers, see
//! [`crate::wire::Attrs::DIRECTORY`]).
//!
//! Placement is fixed by design.md: `hash32` is the first 4 bytes (big-endian) of
//! `MD5("USER/FILENAME")`, and with `2^P` partitions `partition = hash32 >> (32 - P)`.

use std::fmt;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Longest user name, and longest segment of a file name, in bytes (the usual `NAME_MAX`).
pub const MAX_PART_LEN: usize = 255;
/// Longest file name (all its segments and slashes), in bytes: Swift's
/// `max_object_name_length`.
pub const MAX_FILE_LEN: usize = 1024;
/// Longest listing prefix or marker, in bytes: a file name and then some.
pub const MAX_PREFIX_LEN: usize = MAX_FILE_LEN + 1;

/// Why a name was refused. Every variant is a user mistake, never a server fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NameError {
    #[error("name must be USER/FILENAME")]
    MissingSlash,
    #[error("{0} name is empty")]
    Empty(Part),
    #[error("{0} name may not be '.' or '..'")]
    Dot(Part),
    #[error("{0} name may not contain '/'")]
    Slash(Part),
    #[error("{0} name may not contain NUL")]
    Nul(Part),
    #[error("{0} name is longer than {MAX_PART_LEN} bytes")]
    TooLong(Part),
    #[error("file name may not have an empty segment (a leading, trailing or doubled '/')")]
    EmptySegment,
    #[error("file name may not have a '.' or '..' segment")]
    DotSegment,
    #[error("file name segment is longer than {MAX_PART_LEN} bytes")]
    SegmentTooLong,
    #[error("file name is longer than {MAX_FILE_LEN} bytes")]
    FileTooLong,
    #[error("listing prefix or marker is longer than {MAX_PREFIX_LEN} bytes or contains NUL")]
    BadPrefix,
}

/// Which half of a name an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    User,
    File,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::User => "user",
            Part::File => "file",
        })
    }
}

/// Checks a user name: one segment of 1–255 bytes, not `.` or `..`, no '/' or NUL.
pub fn validate_user(s: &str) -> Result<(), NameError> {
    let part = Part::User;
    if s.is_empty() {
        return Err(NameError::Empty(part));
    }
    if s == "." || s == ".." {
        return Err(NameError::Dot(part));
    }
    if s.contains('/') {
        return Err(NameError::Slash(part));
    }
    if s.contains('\0') {
        return Err(NameError::Nul(part));
    }
    if s.len() > MAX_PART_LEN {
        return Err(NameError::TooLong(part));
    }
    Ok(())
}

/// Checks a file name: segments separated by '/', each 1–255 bytes, not `.` or `..`, no
/// NUL; at most [`MAX_FILE_LEN`] bytes in all.
pub fn validate_file(s: &str) -> Result<(), NameError> {
    let part = Part::File;
    if s.is_empty() {
        return Err(NameError::Empty(part));
    }
    if s.contains('\0') {
        return Err(NameError::Nul(part));
    }
    if s == "." || s == ".." {
        return Err(NameError::Dot(part));
    }
    if s.len() > MAX_FILE_LEN {
        return Err(NameError::FileTooLong);
    }
    for seg in s.split('/') {
        if seg.is_empty() {
            return Err(NameError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(NameError::DotSegment);
        }
        if seg.len() > MAX_PART_LEN {
            return Err(if s.contains('/') {
                NameError::SegmentTooLong
            } else {
                NameError::TooLong(part)
            });
        }
    }
    Ok(())
}

/// Checks one part (a user or a file name).
pub fn validate_part(s: &str, part: Part) -> Result<(), NameError> {
    match part {
        Part::User => validate_user(s),
        Part::File => validate_file(s),
    }
}

/// Checks a listing prefix or marker (relative to a user): any text without NUL, at most
/// [`MAX_PREFIX_LEN`] bytes. It need not be a valid file name (`"pho"` and `"photos/"` are
/// both prefixes).
pub fn validate_prefix(s: &str) -> Result<(), NameError> {
    if s.len() > MAX_PREFIX_LEN || s.contains('\0') {
        return Err(NameError::BadPrefix);
    }
    Ok(())
}

/// A validated object name. Constructing one is the only way to get one, so every
/// `ObjectName` that exists is valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectName {
    full: String,
    slash: usize,
}

impl ObjectName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let slash = s.find('/').ok_or(NameError::MissingSlash)?;
        let (user, file) = (&s[..slash], &s[slash + 1..]);
        validate_user(user)?;
        validate_file(file)?;
        Ok(ObjectName {
            full: s.to_owned(),
            slash,
        })
    }

    pub fn new(user: &str, file: &str) -> Result<Self, NameError> {
        validate_user(user)?;
        validate_file(file)?;
        Ok(ObjectName {
            full: format!("{user}/{file}"),
            slash: user.len(),
        })
    }

    pub fn user(&self) -> &str {
        &self.full[..self.slash]
    }

    pub fn file(&self) -> &str {
        &self.full[self.slash + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// MD5 of the full name; its hex form names the object's file on a storage server.
    pub fn digest(&self) -> [u8; 16] {
        Md5::digest(self.full.as_bytes()).into()
    }

    pub fn hash32(&self) -> u32 {
        let d = self.digest();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// The partition of this name in a ring of `2^part_power` partitions.
    pub fn partition(&self, part_power: u8) -> u32 {
        partition_of(self.hash32(), part_power)
    }
}

/// `hash32 >> (32 - P)`; a ring of one partition (`P = 0`) maps everything to 0.
pub fn partition_of(hash32: u32, part_power: u8) -> u32 {
    if part_power == 0 {
        0
    } else {
        hash32 >> (32 - u32::from(part_power))
    }
}

impl TryFrom<String> for ObjectName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        ObjectName::parse(&s)
    }
}

impl From<ObjectName> for String {
    fn from(n: ObjectName) -> String {
        n.full
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Lower-case hex of some bytes (MD5 digests in listings and file names).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_file() {
        let n = ObjectName::parse("alice/report.pdf").unwrap();
        assert_eq!(n.user(), "alice");
        assert_eq!(n.file(), "report.pdf");
        assert_eq!(n.as_str(), "alice/report.pdf");
        assert_eq!(ObjectName::new("alice", "report.pdf").unwrap(), n);
    }

    #[test]
    fn refuses_bad_names() {
        let long = "x".repeat(256);
        let cases: Vec<(String, NameError)> = vec![
            ("alice".into(), NameError::MissingSlash),
            ("/f".into(), NameError::Empty(Part::User)),
            ("alice/".into(), NameError::Empty(Part::File)),
            ("./f".into(), NameError::Dot(Part::User)),
            ("alice/..".into(), NameError::Dot(Part::File)),
            ("a/b/".into(), NameError::EmptySegment),
            ("a//b".into(), NameError::EmptySegment),
            ("a/x/./b".into(), NameError::DotSegment),
            ("a/x/..".into(), NameError::DotSegment),
            ("a/x\0/b".into(), NameError::Nul(Part::File)),
            (format!("alice/d/{long}"), NameError::SegmentTooLong),
            (
                format!("alice/{}", ["x"; 513].join("/")),
                NameError::FileTooLong,
            ),
            ("al\0ice/f".into(), NameError::Nul(Part::User)),
            (format!("alice/{long}"), NameError::TooLong(Part::File)),
            (format!("{long}/f"), NameError::TooLong(Part::User)),
        ];
        for (s, want) in cases {
            assert_eq!(ObjectName::parse(&s), Err(want), "{s:?}");
        }
        assert!(ObjectName::parse(&format!("alice/{}", "x".repeat(255))).is_ok());
        assert!(ObjectName::parse("alice/.hidden").is_ok());
        // Nested names: the user is the first segment, the rest is the file name.
        let n = ObjectName::parse("alice/photos/2024/cat.jpg").unwrap();
        assert_eq!((n.user(), n.file()), ("alice", "photos/2024/cat.jpg"));
        assert!(ObjectName::parse(&format!("alice/{}", ["x"; 512].join("/"))).is_ok());
        let seg = "s".repeat(255);
        let max = format!("{seg}/{seg}/{seg}/{}/{}", "t".repeat(127), "t".repeat(128));
        assert_eq!(max.len(), 1024);
        assert!(ObjectName::parse(&format!("alice/{max}")).is_ok());
        assert_eq!(
            ObjectName::parse(&format!("alice/{max}x")),
            Err(NameError::FileTooLong)
        );
        assert!(ObjectName::parse("alice/a/.b/..c").is_ok());
        assert_eq!(validate_prefix("photos/"), Ok(()));
        assert_eq!(validate_prefix("a\0"), Err(NameError::BadPrefix));
    }

    #[test]
    fn placement_of_nested_names_is_md5_of_the_whole_name() {
        // From `printf %s alice/docs/a.txt | md5sum`: the '/' inside the file name is hashed
        // like any other byte, and flat names keep the partitions they always had.
        let n = ObjectName::parse("alice/docs/a.txt").unwrap();
        assert_eq!(hex(&n.digest()), "34530e377bf300551428256a13edf4e0");
        assert_eq!(n.hash32(), 0x34530e37);
    }

    #[test]
    fn placement_is_top_bits_of_md5() {
        // MD5("alice/report.pdf") computed independently with `printf %s alice/report.pdf | md5sum`.
        let n = ObjectName::parse("alice/report.pdf").unwrap();
        let d = n.digest();
        let h = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        assert_eq!(n.hash32(), h);
        assert_eq!(n.partition(10), h >> 22);
        assert_eq!(n.partition(0), 0);
        assert_eq!(n.partition(32), h);
        assert_eq!(partition_of(0xffff_ffff, 10), 1023);
        assert_eq!(partition_of(0x0040_0000, 10), 1);
    }

    #[test]
    fn md5_matches_reference() {
        // Both values from `printf %s NAME | md5sum`.
        let n = ObjectName::parse("alice/report.pdf").unwrap();
        assert_eq!(hex(&n.digest()), "4fae873e0832859a74bdea9958a02c54");
        assert_eq!(n.hash32(), 0x4fae873e);
        assert_eq!(n.partition(10), 0x4fae873e >> 22);
        let n = ObjectName::parse("a/b").unwrap();
        assert_eq!(hex(&n.digest()), "a7e86136543b019d72468ceebf71fb8e");
    }
}
