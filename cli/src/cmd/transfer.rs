//! `oss upload` and `oss download`: streaming, never a whole file in memory.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};

use oss_proto::wire::Attrs;
use oss_proto::ObjectName;

use crate::error::{self, BrokenPipe, CliError};
use crate::io::{interrupted, stderr_is_tty, Watch};
use crate::progress::Bar;
use crate::Ctx;

/// The shell's status for "killed by SIGINT" (128 + 2).
const EXIT_INTERRUPTED: u8 = 130;

/// Local buffer size: one wire chunk, so a read fills a frame in one go.
const BUF: usize = oss_proto::wire::CHUNK;

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

pub async fn upload(ctx: &Ctx, name: &str, local: Option<&Path>) -> Result<()> {
    let name = ObjectName::parse(name).map_err(|e| error::invalid_name(&e))?;
    let local: PathBuf = local.map_or_else(|| PathBuf::from(name.file()), Path::to_path_buf);
    let tty = stderr_is_tty();

    if is_dash(&local) {
        let mut input = Watch::new(tokio::io::stdin());
        let mut bar = Bar::new(tty, name.as_str(), None);
        let r = ctx
            .client
            .upload(&name, None, &mut input, &mut |n| bar.update(n))
            .await;
        bar.finish(r.is_ok());
        return match r {
            Ok(_) => Ok(()),
            Err(e) => Err(match input.failed() {
                Some(io) => CliError::new(format!("cannot read stdin: {}", error::io_msg(io))),
                None => ctx.fail(&e, name.as_str()),
            }
            .into()),
        };
    }

    // Everything local is checked before the proxy hears of the upload.
    let cannot_read = |e: &std::io::Error| error::local("read", &local, e);
    let meta = tokio::fs::metadata(&local)
        .await
        .map_err(|e| cannot_read(&e))?;
    if meta.is_dir() {
        return Err(cannot_read(&std::io::Error::from_raw_os_error(libc::EISDIR)).into());
    }
    let file = File::open(&local).await.map_err(|e| cannot_read(&e))?;
    // Regular files have a size the proxy can check, and can be read again if the proxy
    // goes away mid-upload; pipes and devices cannot.
    let size = meta.is_file().then_some(meta.len());
    let mut input = Watch::new(BufReader::with_capacity(BUF, file));
    let mut bar = Bar::new(tty, name.as_str(), size);
    let mut progress = |n| bar.update(n);
    let r = if meta.is_file() {
        ctx.client
            .upload_replayable(&name, size, Attrs::default(), &mut input, &mut progress)
            .await
    } else {
        ctx.client
            .upload(&name, size, &mut input, &mut progress)
            .await
    };
    bar.finish(r.is_ok());
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(match input.failed() {
            Some(io) => cannot_read(io),
            None => ctx.fail(&e, name.as_str()),
        }
        .into()),
    }
}

pub async fn download(ctx: &Ctx, name: &str, local: Option<&Path>) -> Result<()> {
    let name = ObjectName::parse(name).map_err(|e| error::invalid_name(&e))?;
    let tty = stderr_is_tty();
    match local {
        Some(p) if is_dash(p) => to_stdout(ctx, &name, tty).await,
        _ => {
            let dest = destination(local, last_segment(name.file())).await;
            if is_special(&dest).await {
                to_special(ctx, &name, &dest, tty).await
            } else {
                to_file(ctx, &name, &dest, tty).await
            }
        }
    }
}

/// A destination that exists and is neither a regular file nor a directory: a device
/// (`/dev/null`), a FIFO, a socket. It is written in place, as `cp` does: renaming a temp
/// file onto it would replace the device node with a regular file.
async fn is_special(dest: &Path) -> bool {
    match tokio::fs::metadata(dest).await {
        Ok(m) => !m.is_file() && !m.is_dir(),
        Err(_) => false,
    }
}

async fn to_special(ctx: &Ctx, name: &ObjectName, dest: &Path, tty: bool) -> Result<()> {
    let cannot_write = |e: &std::io::Error| error::local("write", dest, e);
    let file = OpenOptions::new()
        .write(true)
        .open(dest)
        .await
        .map_err(|e| cannot_write(&e))?;
    let mut out = Watch::new(BufWriter::with_capacity(BUF, file));
    match (streamed(ctx, name, tty, &mut out).await?, out.failed()) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(io)) => Err(cannot_write(io).into()),
        (Err(e), None) => Err(ctx.fail(&e, name.as_str()).into()),
    }
}

/// Downloads `name` into `out` with a progress bar on a terminal: the client library's
/// result (the caller words it, since a failed local write shows in `out.failed()`).
async fn streamed<W: tokio::io::AsyncWrite + Unpin>(
    ctx: &Ctx,
    name: &ObjectName,
    tty: bool,
    out: &mut Watch<W>,
) -> Result<Result<(), oss_proto::Error>> {
    let total = size_for_bar(ctx, name, tty).await?;
    let mut bar = Bar::new(tty, name.as_str(), total);
    let r = ctx
        .client
        .download(name, 0, None, out, &mut |n| bar.update(n))
        .await;
    bar.finish(r.is_ok());
    Ok(r.map(|_| ()))
}

/// The size for a progress bar's percentage: worth one round trip only when it is drawn.
async fn size_for_bar(ctx: &Ctx, name: &ObjectName, tty: bool) -> Result<Option<u64>> {
    if !tty {
        return Ok(None);
    }
    match ctx.client.stat(name).await {
        Ok(m) => Ok(Some(m.size)),
        Err(e) => Err(ctx.fail(&e, name.as_str()).into()),
    }
}

async fn to_stdout(ctx: &Ctx, name: &ObjectName, tty: bool) -> Result<()> {
    let mut out = Watch::new(tokio::io::stdout());
    match (streamed(ctx, name, tty, &mut out).await?, out.failed()) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(io)) if io.kind() == ErrorKind::BrokenPipe => Err(BrokenPipe.into()),
        (Err(_), Some(io)) => {
            Err(CliError::new(format!("cannot write to stdout: {}", error::io_msg(io))).into())
        }
        (Err(e), None) => Err(ctx.fail(&e, name.as_str()).into()),
    }
}

/// A nested name's last segment: `photos/2024/cat.jpg` is saved as `cat.jpg`, as `cp`, `wget`
/// and `aws s3 cp` name what they fetch, so a download never creates local directories.
fn last_segment(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// `LOCAL_PATH`, or `file` in the cwd; an existing directory gets `file` inside it.
async fn destination(local: Option<&Path>, file: &str) -> PathBuf {
    match local {
        None => PathBuf::from(file),
        Some(p) => match tokio::fs::metadata(p).await {
            Ok(m) if m.is_dir() => p.join(file),
            _ => p.to_path_buf(),
        },
    }
}

/// The temp file beside `dest`: same directory (so the rename is atomic), hidden, and
/// tagged with our pid so two concurrent downloads do not share one.
fn temp_path(dest: &Path) -> PathBuf {
    let base = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let tmp = format!(".{base}.oss-tmp-{}", std::process::id());
    match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp),
        _ => PathBuf::from(tmp),
    }
}

/// Removes the temp file unless the download made it to the destination.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How many times a download to a file starts over when the object was replaced while it
/// ran (a resumed transfer found a newer version): a file can be rewritten, a pipe cannot.
const RESTARTS: u32 = 3;

async fn to_file(ctx: &Ctx, name: &ObjectName, dest: &Path, tty: bool) -> Result<()> {
    let tmp = temp_path(dest);
    let cannot_write = |e: &std::io::Error| error::local("write", dest, e);
    let mut guard = TempGuard(Some(tmp.clone()));
    let total = size_for_bar(ctx, name, tty).await?;
    let mut restarts = 0;
    let out = loop {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .await
            .map_err(|e| cannot_write(&e))?;
        // Replacing a file keeps its permissions, as `cp` onto an existing file does.
        if let Ok(m) = tokio::fs::metadata(dest).await {
            if m.is_file() {
                let _ = tokio::fs::set_permissions(&tmp, m.permissions()).await;
            }
        }
        let mut out = Watch::new(BufWriter::with_capacity(BUF, file));
        let mut bar = Bar::new(tty, name.as_str(), total);
        let mut progress = |n| bar.update(n);
        let transfer = ctx.client.download(name, 0, None, &mut out, &mut progress);
        let r = tokio::select! {
            r = transfer => r,
            // Leaving drops the guard (removing the temp file) and the bar (clearing its line).
            why = interrupted() => {
                return Err(CliError { msg: why.into(), code: EXIT_INTERRUPTED }.into());
            }
        };
        bar.finish(r.is_ok());
        match r {
            Ok(_) => break out,
            Err(oss_proto::Error::Remote(oss_proto::WireError::Stale { .. }))
                if restarts < RESTARTS && out.failed().is_none() =>
            {
                restarts += 1;
            }
            Err(e) => {
                return Err(match out.failed() {
                    Some(io) => cannot_write(io),
                    None => ctx.fail(&e, name.as_str()),
                }
                .into())
            }
        }
    };
    // The library verified the MD5; make the bytes durable, then let them appear.
    let mut buf = out.into_inner();
    buf.flush().await.map_err(|e| cannot_write(&e))?;
    let file = buf.into_inner();
    file.sync_all().await.map_err(|e| cannot_write(&e))?;
    drop(file);
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(|e| cannot_write(&e))?;
    guard.0 = None;
    // Best effort: the rename itself survives a crash only once the directory is synced.
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(d) = File::open(&dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_sit_beside_the_destination() {
        let pid = std::process::id();
        assert_eq!(
            temp_path(Path::new("x.bin")),
            PathBuf::from(format!(".x.bin.oss-tmp-{pid}"))
        );
        assert_eq!(
            temp_path(Path::new("/tmp/d/x.bin")),
            PathBuf::from(format!("/tmp/d/.x.bin.oss-tmp-{pid}"))
        );
    }

    #[test]
    fn downloads_are_named_by_the_last_segment() {
        assert_eq!(last_segment("f"), "f");
        assert_eq!(last_segment("photos/2024/cat.jpg"), "cat.jpg");
    }

    #[tokio::test]
    async fn destination_defaults() {
        assert_eq!(destination(None, "f").await, PathBuf::from("f"));
        let d = std::env::temp_dir();
        assert_eq!(destination(Some(&d), "f").await, d.join("f"));
        assert_eq!(
            destination(Some(Path::new("/no/such/dir/g")), "f").await,
            PathBuf::from("/no/such/dir/g")
        );
    }
}
