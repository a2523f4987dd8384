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
        let staging = dir.keep();
        if let Err(e) = std::fs::rename(&staging, &self.target) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::io(
                "cannot move the package into place at",
                &self.target,
                e,
            ));
        }
        tracing::info!(to = %self.target.display(), "package installed");
        Ok(self.target.clone())
    }
}
