//! All-or-nothing unpacking: into a temporary folder beside the destination, moved into place
//! by one rename only when the caller is satisfied with what it holds.

use std::path::{Path, PathBuf};

use super::{Extracted, Limits, extract};
use crate::error::{Error, Result};

/// A package unpacked into a temporary folder beside its destination (same filesystem, so the
/// final move is one atomic rename). Dropped without [`StagedPackage::commit`], the folder is
/// removed.
#[derive(Debug)]
pub struct StagedPackage {
    dir: Option<tempfile::TempDir>,
    target: PathBuf,
    extracted: Extracted,
}

/// Unpacks `archive` into a fresh temporary folder beside `final_dest`. `final_dest` must not
/// exist (checked now and again at commit). On error nothing is left behind.
pub fn extract_staged(archive: &Path, final_dest: &Path, limits: &Limits) -> Result<StagedPackage> {
    refuse_existing(final_dest)?;
    let parent = match final_dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create directory", parent, e))?;
    let name = final_dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package".into());
    // A dot name: a crash between unpacking and commit leaves a hidden folder, never something
    // that looks like an installed package.
    let dir = tempfile::Builder::new()
        .prefix(&format!(".{name}.staging-"))
        .tempdir_in(parent)
        .map_err(|e| Error::io("cannot create temporary folder in", parent, e))?;
    // `dir` is removed when this returns early.
    let extracted = extract(archive, dir.path(), limits)?;
    Ok(StagedPackage {
        dir: Some(dir),
        target: final_dest.to_path_buf(),
        extracted,
    })
}

/// What [`sync_tree`] flushed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub files: usize,
    pub folders: usize,
}

/// fsyncs every regular file under `dir`, then every folder (children before parents, `dir`
/// last), so their data and their directory entries are on the disk. Symbolic links have no
/// data of their own; the folder holding them is synced.
pub fn sync_tree(dir: &Path) -> Result<Synced> {
    let mut synced = Synced::default();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot read directory", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("cannot read", &path, e))?;
        if kind.is_dir() {
            let inner = sync_tree(&path)?;
            synced.files += inner.files;
            synced.folders += inner.folders;
        } else if kind.is_file() {
            sync_path(&path)?;
            synced.files += 1;
        }
    }
    sync_path(dir)?;
    synced.folders += 1;
    Ok(synced)
}

/// fsync of one file or folder (a folder opened read-only: fsync on it flushes its entries).
fn sync_path(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("cannot flush to disk", path, e))
}

fn refuse_existing(target: &Path) -> Result<()> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(Error::invalid(
            target.display().to_string(),
            "already exists; a package is installed into a new folder (remove it or choose another)",
        ));
    }
    Ok(())
}

impl StagedPackage {
    /// Where the package is unpacked now.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(&self.target, |d| d.path())
    }

    /// Where [`StagedPackage::commit`] moves it.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// What the extraction wrote.
    pub fn extracted(&self) -> &Extracted {
        &self.extracted
    }

    /// Moves the folder to its destination with one rename and returns the destination. Fails,
    /// removing the staged folder, if the destination appeared meanwhile. (Between that check
    /// and the rename another process could still create an empty folder there, which the rename
    /// would replace; installs are expected to be serialised by their caller.)
    pub fn commit(mut self) -> Result<PathBuf> {
        refuse_existing(&self.target)?;
        let Some(dir) = self.dir.take() else {
            return Ok(self.target.clone());
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Temporary folders are private (0700); an installed package is 0755 like its folders.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("cannot write", dir.path(), e))?;
        }
        // Durable before visible: every file and folder reaches the disk before the rename
        // makes the release look installed, and the rename itself after it. A power cut then
        // leaves either no release folder or a complete one — never one of empty files that
        // fails its hash check at every start.
        let synced = sync_tree(dir.path())?;
        let staging = dir.keep();
        if let Err(e) = std::fs::rename(&staging, &self.target) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::io(
                "cannot move the package into place at",
                &self.target,
                e,
            ));
        }
        if let Some(parent) = self.target.parent() {
            sync_path(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })?;
        }
        tracing::info!(
            to = %self.target.display(),
            synced_files = synced.files,
            synced_folders = synced.folders,
            "package installed"
        );
        Ok(self.target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tree_flushes_every_file_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("release");
        std::fs::create_dir_all(root.join("models/a")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        for f in ["manifest.json", "models/a/m.onnx", "models/b.onnx", "bin/x"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink("x", root.join("bin/y")).unwrap();
        // release, models, models/a, bin; the link is not a file of its own.
        assert_eq!(
            sync_tree(&root).unwrap(),
            Synced {
                files: 4,
                folders: 4
            }
        );
        let e = sync_tree(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
