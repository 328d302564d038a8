//! Replacing a file atomically: the one way kiln writes files (ARCHITECTURE.md, invariant 12).
//!
//! Checkpoints, saved graphs and plots are written to a temporary file in the target's
//! directory, fsynced, renamed over the target (atomic on POSIX), and the directory is
//! fsynced so the rename itself survives a crash. A reader or a crash therefore sees the old
//! file or the new one, never a mix, and a failed write leaves no temporary file behind.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`, atomically.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(&tmp, "cannot create the temporary file", e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io(&tmp, "cannot write the temporary file", e))?;
        f.sync_all()
            .map_err(|e| Error::io(&tmp, "cannot sync the temporary file", e))?;
        drop(f);
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(path, "cannot replace the file with its new version", e))?;
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
