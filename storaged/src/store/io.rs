//! Blocking file I/O of one object: the temp file a write goes to, the streaming writer that
//! hashes as it writes, and the reader that verifies every block before handing it out.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use oss_proto::ObjectMeta;

use super::format::{self, BlockCrcs, Footer, FormatError, BLOCK, TAIL_READ};

/// Dirty bytes after which a writer asks the kernel to start writing back (without waiting):
/// the fsync at the end then finds most of a large object already on disk.
const WRITEBACK: u64 = 8 << 20;

/// Files up to this size are read whole on open (one pread serves footer, CRCs and data):
/// a small-object Get is then one open and one pread.
const SMALL_FILE: u64 = 256 << 10;

/// A file in `tmp/` that is removed on drop unless it was renamed into place.
#[derive(Debug)]
pub struct TempFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
    armed: bool,
}

impl TempFile {
    pub(super) fn create(path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file,
            armed: true,
        })
    }

    /// The file was renamed away: nothing to clean up any more.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temp file");
            }
        }
    }
}

/// Streams a body into a temp file, computing its MD5 and block CRCs on the way. Never holds
/// more than the piece it is given.
#[derive(Debug)]
pub struct BodyWriter {
    tmp: TempFile,
    md5: Md5,
    crcs: BlockCrcs,
    len: u64,
    /// Bytes whose write-back was started.
    started: u64,
}

/// A body fully written to its temp file (not yet synced, no footer yet).
#[derive(Debug)]
pub struct Body {
    pub(super) tmp: TempFile,
    pub md5: [u8; 16],
    pub crcs: Vec<u32>,
    pub len: u64,
}

impl BodyWriter {
    pub fn new(tmp: TempFile) -> Self {
        BodyWriter {
            tmp,
            md5: Md5::new(),
            crcs: BlockCrcs::default(),
            len: 0,
            started: 0,
        }
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.md5.update(data);
        self.crcs.update(data);
        self.tmp.file.write_all(data)?;
        self.len += data.len() as u64;
        if self.len - self.started >= WRITEBACK {
            start_writeback(&self.tmp.file, self.started, self.len - self.started);
            self.started = self.len;
        }
        Ok(())
    }

    pub fn finish(self) -> Body {
        Body {
            tmp: self.tmp,
            md5: self.md5.finalize().into(),
            crcs: self.crcs.finish(),
            len: self.len,
        }
    }
}

/// Starts writing a range of a file back to disk without waiting for it (a hint: errors
/// are ignored, the final fsync reports them).
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Why an object file cannot be opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Format(#[from] FormatError),
}

/// Why a verified read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("block at offset {0} fails its CRC")]
    Corrupt(u64),
    /// Every block matched its CRC but the whole does not match the stored MD5: the data
    /// rotted before its CRCs were computed, or the footer was written wrong.
    #[error("data does not match its stored MD5")]
    Md5,
}

/// Reads and checks only the footer (the startup scan).
pub fn read_footer(file: &File) -> Result<Footer, OpenError> {
    let len = file.metadata()?.len();
    let n = len.min(TAIL_READ);
    let mut tail = vec![0u8; n as usize];
    file.read_exact_at(&mut tail, len - n)?;
    Ok(format::decode_footer(&tail, len)?)
}

/// An open object file. Holding the descriptor pins this version: a concurrent overwrite
/// renames a new file over the name, and this reader keeps serving the old one whole.
#[derive(Debug)]
pub struct ObjectReader {
    file: File,
    pub meta: ObjectMeta,
    crcs: Vec<u32>,
    /// All data bytes when the file was small enough to read whole on open, else empty.
    small: Option<Vec<u8>>,
}

impl ObjectReader {
    /// Opens and reads the footer and CRC table (one pread for small files, two otherwise).
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len <= SMALL_FILE {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, 0)?;
            let footer = format::decode_footer(&buf, len)?;
            let size = footer.meta.size as usize;
            let crcs = format::decode_crcs(&buf[size..size + footer.crc_len() as usize]);
            buf.truncate(size);
            return Ok(ObjectReader {
                file,
                meta: footer.meta,
                crcs,
                small: Some(buf),
            });
        }
        let footer = read_footer(&file)?;
        let mut table = vec![0u8; footer.crc_len() as usize];
        file.read_exact_at(&mut table, footer.crc_offset())?;
        Ok(ObjectReader {
            file,
            meta: footer.meta,
            crcs: format::decode_crcs(&table),
            small: None,
        })
    }

    /// Reads `[offset, offset + len)` (which must lie within the object), reading the whole
    /// blocks that cover it and checking each block's CRC before any of its bytes is returned.
    pub fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, ReadError> {
        let size = self.meta.size;
        debug_assert!(offset.checked_add(len).is_some_and(|e| e <= size));
        if len == 0 {
            return Ok(Vec::new());
        }
        let first = offset / BLOCK;
        let start = first * BLOCK;
        let end = (offset + len)
            .div_ceil(BLOCK)
            .saturating_mul(BLOCK)
            .min(size);
        let skip = (offset - start) as usize;
        match &self.small {
            Some(all) => {
                let blocks = &all[start as usize..end as usize];
                self.verify_blocks(first, blocks)?;
                Ok(blocks[skip..skip + len as usize].to_vec())
            }
            None => {
                let mut buf = vec![0u8; (end - start) as usize];
                self.file.read_exact_at(&mut buf, start)?;
                self.verify_blocks(first, &buf)?;
                if skip == 0 && buf.len() as u64 == len {
                    return Ok(buf);
                }
                Ok(buf[skip..skip + len as usize].to_vec())
            }
        }
    }

    /// Checks consecutive blocks starting at block number `first`.
    fn verify_blocks(&self, first: u64, blocks: &[u8]) -> Result<(), ReadError> {
        for (i, block) in blocks.chunks(BLOCK as usize).enumerate() {
            let b = first + i as u64;
            if crc32c::crc32c(block) != self.crcs[b as usize] {
                return Err(ReadError::Corrupt(b * BLOCK));
            }
        }
        Ok(())
    }

    /// Reads everything in pieces of `piece` bytes, checking every block and the MD5.
    /// `each` is called with the byte count after every piece (rate limiting, cancellation);
    /// returning false stops early with `Ok(false)`.
    pub fn verify_all(
        &self,
        piece: u64,
        mut each: impl FnMut(u64) -> bool,
    ) -> Result<bool, ReadError> {
        let piece = piece.max(BLOCK) / BLOCK * BLOCK;
        let mut md5 = Md5::new();
        let mut off = 0;
        while off < self.meta.size {
            let n = piece.min(self.meta.size - off);
            let buf = self.read_range(off, n)?;
            md5.update(&buf);
            off += n;
            if !each(n) {
                return Ok(false);
            }
        }
        let got: [u8; 16] = md5.finalize().into();
        if got != self.meta.md5 {
            return Err(ReadError::Md5);
        }
        Ok(true)
    }
}
