//! Replacing a file atomically: the one way kiln writes files (ARCHITECTURE.md, invariant 12).
//!
//! Checkpoints, saved graphs and plots are written to a temporary file in the target's
//! directory, fsynced, renamed over the target (atomic on POSIX), and the directory is
//! fsynced so the rename itself survives a crash. A reader or a crash therefore sees the old
//! file or the new one, never a mix, and a failed write leaves no temporary file behind.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {what}: {e}", path.display()))
}

/// Replaces `path` with `bytes`, atomically.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Io(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
        f.write_all(bytes)
            .map_err(|e| io_err(&tmp, "cannot write", e))?;
        f.sync_all().map_err(|e| io_err(&tmp, "cannot sync", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, "cannot replace", e))?;
        // Make the rename durable (best effort: not every platform opens directories).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
