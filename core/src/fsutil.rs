//! Output that is either complete or absent: write to a temporary sibling, then rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees a half-written file and a crash leaves the old content in place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create directory", parent, e))?;
    let mut builder = tempfile::Builder::new();
    // Temporary files are private (0600); the result should read like any other output: keep the
    // mode of the file being replaced, else 0644 less the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777);
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let mut tmp = builder
        .prefix(&format!(
            ".{}.",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ))
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(|e| Error::io("cannot create temporary file in", parent, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("cannot write", path, e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("cannot write", path, e.error))?;
    Ok(())
}

/// A folder built under a temporary name beside its destination and moved into place by
/// [`StagingDir::commit`]; dropped without commit, it is removed.
#[derive(Debug)]
pub struct StagingDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Prepares to write `target`. Fails if `target` exists and is not empty, unless `force`.
    pub fn new(target: &Path, force: bool) -> Result<Self> {
        if !force && dir_has_entries(target) {
            return Err(Error::invalid(
                target.display().to_string(),
                "output folder exists and is not empty (use --force to replace it)",
            ));
        }
        if target.exists() && !target.is_dir() {
            return Err(Error::invalid(
                target.display().to_string(),
                "output exists and is not a folder",
            ));
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::io("cannot create directory", &parent, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(|e| Error::io("cannot remove", &staging, e))?;
        }
        std::fs::create_dir(&staging)
            .map_err(|e| Error::io("cannot create directory", &staging, e))?;
        Ok(Self {
            staging,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write the content.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Replaces the destination with the staged folder.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            std::fs::remove_dir_all(&self.target)
                .map_err(|e| Error::io("cannot replace", &self.target, e))?;
        }
        std::fs::rename(&self.staging, &self.target)
            .map_err(|e| Error::io("cannot move output into place at", &self.target, e))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

fn dir_has_entries(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut it| it.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn atomic_output_is_readable_by_others_and_keeps_a_replaced_files_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_atomic(&p, b"one").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o044,
            0o044 & !0o022 & mode,
            "group/other read unless the umask forbids: {mode:o}"
        );
        assert_ne!(
            mode, 0o600,
            "a private temp-file mode leaked into the output"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn staging_dir_refuses_non_empty_target_and_cleans_up_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        assert!(StagingDir::new(&target, false).is_err());
        {
            let s = StagingDir::new(&target, true).unwrap();
            std::fs::write(s.path().join("new"), b"y").unwrap();
        }
        // Dropped without commit: the old content is intact and no staging folder remains.
        assert!(target.join("keep").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let s = StagingDir::new(&target, true).unwrap();
        std::fs::write(s.path().join("new"), b"y").unwrap();
        s.commit().unwrap();
        assert!(target.join("new").exists() && !target.join("keep").exists());
    }
}
