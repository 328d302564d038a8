//! Replacing a saved-model directory as a whole.
//!
//! The files are written into a fresh directory beside the target, created by `tempfile`
//! (exclusive, randomly named, so no planted symlink or concurrent saver is followed), then
//! renamed into place. POSIX cannot rename a directory over a non-empty one, so an existing
//! model is first renamed aside (`.kiln-old-<random>`), and removed once the new one is in
//! place. A crash therefore leaves the old model, or the new one, or the new one beside the
//! old one's copy; never a directory holding files of both. A directory that exists but is
//! not a saved model (no `model.txt` nor `graph.kiln`) is refused: `save` never replaces a
//! directory of the user's.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Whether `dir` is something `save` may replace: absent, empty, or a saved model.
fn replaceable(dir: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dir, "cannot inspect the save directory", e)),
        Ok(m) if !m.is_dir() => Err(Error::invalid_file(
            dir,
            "save: the path exists and is not a directory (a saved model is a directory); \
             refused",
        )),
        Ok(_) => {
            let empty = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, "cannot list the save directory", e))?
                .next()
                .is_none();
            let model = dir.join(super::CONFIG_FILE).is_file()
                || dir.join(crate::saved::GRAPH_FILE).is_file();
            if empty || model {
                Ok(true)
            } else {
                Err(Error::invalid_file(
                    dir,
                    "save: the directory exists and holds no saved model (no model.txt or \
                     graph.kiln); refused, so that no directory of yours is replaced",
                ))
            }
        }
    }
}

/// Writes a model into `dir` through `fill`, which writes the files into the directory it
/// is given; `dir` is replaced only if `fill` succeeds.
pub(crate) fn replace(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.file_name().is_none() {
        return Err(Error::invalid(format!(
            "save: {} does not name a directory to create",
            dir.display()
        )));
    }
    let exists = replaceable(dir)?;
    std::fs::create_dir_all(&parent)
        .map_err(|e| Error::io(&parent, "cannot create the parent directory", e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-save-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, "cannot create a temporary directory", e))?;
    fill(tmp.path())?;
    let old = if exists {
        let aside = tempfile::Builder::new()
            .prefix(".kiln-old-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, "cannot create a temporary directory", e))?;
        // The empty directory reserved a fresh name; the old model takes it.
        let aside = aside.keep();
        std::fs::remove_dir(&aside).map_err(|e| Error::io(&aside, "cannot prepare", e))?;
        std::fs::rename(dir, &aside)
            .map_err(|e| Error::io(dir, "cannot move the previous model aside", e))?;
        Some(aside)
    } else {
        None
    };
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, dir) {
        // Put the previous model back; the new files stay in `tmp` for inspection.
        if let Some(old) = &old {
            let _ = std::fs::rename(old, dir);
        }
        return Err(Error::io(dir, "cannot move the saved model into place", e));
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    if let Ok(f) = std::fs::File::open(&parent) {
        let _ = f.sync_all();
    }
    Ok(())
}
