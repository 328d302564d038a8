//! Replacing a file atomically: the one way kiln writes files (ARCHITECTURE.md, invariant 12).
//!
//! Checkpoints, saved graphs and plots are written to a temporary file in the target's
//! directory, fsynced, renamed over the target (atomic on POSIX), and the directory is
//! fsynced so the rename itself survives a crash. A reader or a crash therefore sees the old
//! file or the new one, never a mix, and a failed write leaves no temporary file behind.
//!
//! The temporary file is created by `tempfile`: exclusively (`O_CREAT | O_EXCL`, which also
//! refuses to open through a symlink, dangling or not) under a random name. A predictable name
//! (kiln once used `.{file}.tmp-{pid}`) let anyone who can write the directory plant a
//! symlink there and have `save` overwrite the file it points to, and made two threads saving
//! to one path collide on one temporary. With a random name each writer has its own file, and
//! the last rename wins with a complete file.
//!
//! Every temporary's name starts with [`TEMP_PREFIX`] (`.kiln-tmp-`). A writer killed between
//! creating and renaming leaves one behind; nothing else can remove it, so each successful
//! write removes the temporaries of that prefix in the same directory whose last change is
//! older than [`STALE_AFTER`] (one hour: no live save takes that long between two writes to
//! its file, so an in-progress save of another process is never touched). The removal is best
//! effort: a temporary that cannot be removed is left alone and does not fail the write.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The prefix of every temporary file kiln creates next to a file it replaces.
pub(crate) const TEMP_PREFIX: &str = ".kiln-tmp-";

/// A temporary of [`TEMP_PREFIX`] unchanged for this long belongs to a killed writer.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

/// Replaces `path` with `bytes`, atomically.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.file_name().is_none() {
        return Err(Error::invalid(format!(
            "{}: not a file path",
            path.display()
        )));
    }
    if !dir.is_dir() {
        return Err(Error::io(
            path,
            format!(
                "cannot write it: the directory {} does not exist (kiln does not create it; \
                 create it first)",
                dir.display()
            ),
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    // Dropping `tmp` on any error below removes the temporary file.
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(&dir)
        .map_err(|e| Error::io(path, "cannot create a temporary file in its directory", e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io(tmp.path(), "cannot write the temporary file", e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), "cannot sync the temporary file", e))?;
    tmp.persist(path).map_err(|e| {
        Error::io(
            path,
            "cannot replace the file with its new version",
            e.error,
        )
    })?;
    // Make the rename durable (best effort: not every platform opens directories).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    remove_stale(&dir, STALE_AFTER);
    Ok(())
}

/// Removes the temporaries of [`TEMP_PREFIX`] in `dir` unchanged for at least `age`, best
/// effort, and returns the ones it removed.
pub(crate) fn remove_stale(dir: &Path, age: Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        // `DirEntry::metadata` does not follow symlinks: only regular files are removed.
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d >= age);
        if meta.is_file() && old && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}
