//! The object file's footer: encoding and strict decoding. The layout is documented byte by
//! byte in the [`crate::store`] module doc; this module is the only code that knows it.

use oss_proto::wire::Attrs;
use oss_proto::{ObjectMeta, ObjectName};
use serde::{Deserialize, Serialize};

/// Last 8 bytes of every object file; the trailing `01` is the file format version.
pub const MAGIC: [u8; 8] = *b"OSSOBJ01";
/// Version of the metadata record (inside the record, so it can change without a new magic).
/// Version 2 appends the object's [`Attrs`]; version 1 records (written before names could
/// hold '/' and objects carried metadata) still read, with empty attributes.
pub const RECORD_VERSION: u32 = 2;
/// Data bytes covered by one CRC32C. 64 KiB keeps the table at 1/16384 of the data (256 KiB
/// for a 4 GiB object) while a range read of a few bytes reads at most 2 × 64 KiB.
pub const BLOCK: u64 = 64 << 10;
/// `u32 record length + u32 record CRC + 8 magic bytes`.
pub const TRAILER_LEN: u64 = 16;
/// Upper bound of an encoded record: a name is at most 1,280 bytes, attributes at most
/// 4,096 bytes of metadata (plus 3 length bytes an item, 90 items) and a 256-byte content
/// type, the fixed fields under 60. Anything larger is a torn or foreign file, refused before
/// allocating.
pub const MAX_RECORD: u32 = 16 << 10;
/// Reading this many bytes from the end of a file always yields the whole trailer + record.
pub const TAIL_READ: u64 = MAX_RECORD as u64 + TRAILER_LEN;

/// The metadata record as it is postcard-encoded on disk. Field order is part of the format.
/// These are the fields of every version; version 2 follows them with [`Attrs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    version: u32,
    name: String,
    size: u64,
    md5: [u8; 16],
    timestamp: u64,
    deleted: bool,
    block_size: u32,
}

/// Why a file is not a valid object file. Every variant means "do not serve, quarantine".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("file of {0} bytes is too short for a footer")]
    TooShort(u64),
    #[error("bad magic (torn or foreign file)")]
    BadMagic,
    #[error("metadata length {0} is out of bounds")]
    BadRecordLen(u32),
    #[error("metadata checksum mismatch")]
    RecordCrc,
    #[error("metadata does not decode: {0}")]
    Decode(String),
    #[error("unknown metadata version {0}")]
    Version(u32),
    #[error("unsupported block size {0}")]
    BlockSize(u32),
    #[error("invalid name in metadata: {0}")]
    Name(String),
    #[error("tombstone with {0} data bytes")]
    TombstoneWithData(u64),
    #[error("file is {actual} bytes, its footer says {expected}")]
    Length { expected: u64, actual: u64 },
}

/// What the footer says about its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub meta: ObjectMeta,
}

impl Footer {
    /// Number of data blocks (and CRC table entries).
    pub fn blocks(&self) -> u64 {
        blocks(self.meta.size)
    }

    /// Offset of the CRC table (it starts right after the data).
    pub fn crc_offset(&self) -> u64 {
        self.meta.size
    }

    pub fn crc_len(&self) -> u64 {
        4 * self.blocks()
    }
}

pub fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

/// The bytes that follow the data: CRC table, record, trailer.
pub fn encode_footer(meta: &ObjectMeta, crcs: &[u32]) -> Vec<u8> {
    debug_assert_eq!(crcs.len() as u64, blocks(meta.size));
    let record = Record {
        version: RECORD_VERSION,
        name: meta.name.as_str().to_owned(),
        size: meta.size,
        md5: meta.md5,
        timestamp: meta.timestamp,
        deleted: meta.deleted,
        block_size: BLOCK as u32,
    };
    // Encoding plain structs into a Vec cannot fail.
    let mut rec = postcard::to_stdvec(&record).expect("postcard encodes a plain struct");
    rec.extend(postcard::to_stdvec(&meta.attrs).expect("postcard encodes a plain struct"));
    let mut out = Vec::with_capacity(crcs.len() * 4 + rec.len() + TRAILER_LEN as usize);
    for c in crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(&rec);
    out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&rec).to_le_bytes());
    out.extend_from_slice(&MAGIC);
    out
}

/// Decodes the footer from `tail`, the last `tail.len()` bytes of a file of `file_len` bytes.
/// `tail` must hold at least `min(file_len, TAIL_READ)` bytes. Checks everything that can be
/// checked without reading the data: magic, record bounds and CRC, version, block size,
/// the name, and that the file length is exactly what the record implies.
pub fn decode_footer(tail: &[u8], file_len: u64) -> Result<Footer, FormatError> {
    let t = tail.len();
    if file_len < TRAILER_LEN || (t as u64) < TRAILER_LEN {
        return Err(FormatError::TooShort(file_len));
    }
    if tail[t - 8..] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let rec_len = u32::from_le_bytes(tail[t - 16..t - 12].try_into().expect("4 bytes"));
    let rec_crc = u32::from_le_bytes(tail[t - 12..t - 8].try_into().expect("4 bytes"));
    if rec_len > MAX_RECORD
        || u64::from(rec_len) + TRAILER_LEN > file_len
        || rec_len as usize + TRAILER_LEN as usize > t
    {
        return Err(FormatError::BadRecordLen(rec_len));
    }
    let rec_start = t - 16 - rec_len as usize;
    let rec = &tail[rec_start..t - 16];
    if crc32c::crc32c(rec) != rec_crc {
        return Err(FormatError::RecordCrc);
    }
    let (record, rest): (Record, _) =
        postcard::take_from_bytes(rec).map_err(|e| FormatError::Decode(e.to_string()))?;
    let (attrs, rest) = match record.version {
        1 => (Attrs::default(), rest),
        2 => postcard::take_from_bytes::<Attrs>(rest)
            .map_err(|e| FormatError::Decode(e.to_string()))?,
        v => return Err(FormatError::Version(v)),
    };
    if !rest.is_empty() {
        return Err(FormatError::Decode(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    if u64::from(record.block_size) != BLOCK {
        return Err(FormatError::BlockSize(record.block_size));
    }
    let name = ObjectName::parse(&record.name).map_err(|e| FormatError::Name(e.to_string()))?;
    if record.deleted && record.size != 0 {
        return Err(FormatError::TombstoneWithData(record.size));
    }
    let expected = record
        .size
        .checked_add(4 * blocks(record.size))
        .and_then(|n| n.checked_add(u64::from(rec_len) + TRAILER_LEN))
        .ok_or(FormatError::Length {
            expected: u64::MAX,
            actual: file_len,
        })?;
    if expected != file_len {
        return Err(FormatError::Length {
            expected,
            actual: file_len,
        });
    }
    Ok(Footer {
        meta: ObjectMeta {
            name,
            size: record.size,
            md5: record.md5,
            timestamp: record.timestamp,
            deleted: record.deleted,
            attrs,
        },
    })
}

/// Decodes a CRC table (`4 * blocks` bytes, u32 LE each).
pub fn decode_crcs(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// Running CRC32C per block over a stream of arbitrary-sized pieces.
#[derive(Debug, Default)]
pub struct BlockCrcs {
    crcs: Vec<u32>,
    cur: u32,
    in_block: u64,
}

impl BlockCrcs {
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (BLOCK - self.in_block) as usize;
            let n = room.min(data.len());
            self.cur = crc32c::crc32c_append(self.cur, &data[..n]);
            self.in_block += n as u64;
            data = &data[n..];
            if self.in_block == BLOCK {
                self.crcs.push(self.cur);
                self.cur = 0;
                self.in_block = 0;
            }
        }
    }

    pub fn finish(mut self) -> Vec<u32> {
        if self.in_block > 0 {
            self.crcs.push(self.cur);
        }
        self.crcs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            name: ObjectName::parse("alice/f").unwrap(),
            size,
            md5: [3; 16],
            timestamp: 77,
            deleted: false,
            attrs: Attrs::default(),
        }
    }

    #[test]
    fn footer_round_trip_and_length_check() {
        for size in [0u64, 1, BLOCK, BLOCK + 1] {
            let m = meta(size);
            let data = vec![5u8; size as usize];
            let mut c = BlockCrcs::default();
            c.update(&data);
            let crcs = c.finish();
            assert_eq!(crcs.len() as u64, blocks(size));
            let footer = encode_footer(&m, &crcs);
            let mut file = data.clone();
            file.extend_from_slice(&footer);
            let len = file.len() as u64;
            let f = decode_footer(&file, len).unwrap();
            assert_eq!(f.meta, m);
            assert_eq!(
                decode_crcs(&file[size as usize..(size + f.crc_len()) as usize]),
                crcs
            );
            // A file with one byte more (or less) in front is refused.
            assert!(decode_footer(&file, len + 1).is_err());
        }
    }

    #[test]
    fn attrs_and_nested_names_round_trip() {
        let mut m = meta(3);
        m.name = ObjectName::parse("alice/photos/2024/cat.jpg").unwrap();
        m.attrs.content_type = "image/jpeg".into();
        m.attrs.set_mtime_micros(1_700_000_000_000_001);
        m.attrs.set_mode(0o100755);
        let mut c = BlockCrcs::default();
        c.update(b"abc");
        let mut file = b"abc".to_vec();
        file.extend(encode_footer(&m, &c.finish()));
        let f = decode_footer(&file, file.len() as u64).unwrap();
        assert_eq!(f.meta, m);
    }

    #[test]
    fn version_1_records_still_read() {
        // A format-1 file as every earlier server wrote it: the record without attributes.
        let m = meta(0);
        let record = Record {
            version: 1,
            name: "alice/f".into(),
            size: 0,
            md5: m.md5,
            timestamp: 77,
            deleted: false,
            block_size: BLOCK as u32,
        };
        let rec = postcard::to_stdvec(&record).unwrap();
        let mut file = rec.clone();
        file.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32c::crc32c(&rec).to_le_bytes());
        file.extend_from_slice(&MAGIC);
        let f = decode_footer(&file, file.len() as u64).unwrap();
        assert_eq!(f.meta, m);
        // An unknown record version is refused.
        let mut r3 = record.clone();
        r3.version = 3;
        let rec = postcard::to_stdvec(&r3).unwrap();
        let mut file = rec.clone();
        file.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32c::crc32c(&rec).to_le_bytes());
        file.extend_from_slice(&MAGIC);
        assert_eq!(
            decode_footer(&file, file.len() as u64).unwrap_err(),
            FormatError::Version(3)
        );
    }

    #[test]
    fn block_crcs_do_not_depend_on_piece_sizes() {
        let data: Vec<u8> = (0..(3 * BLOCK + 17))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut whole = BlockCrcs::default();
        whole.update(&data);
        let mut pieces = BlockCrcs::default();
        for p in data.chunks(1000) {
            pieces.update(p);
        }
        let a = whole.finish();
        assert_eq!(a, pieces.finish());
        assert_eq!(a[0], crc32c::crc32c(&data[..BLOCK as usize]));
        assert_eq!(a[3], crc32c::crc32c(&data[3 * BLOCK as usize..]));
    }
}
