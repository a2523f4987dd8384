//! Reuse of a demo stage's outputs, only when everything that went into them is unchanged.
//!
//! A stage's key is the SHA-256 of its inputs' contents (files, whole folders, the binary that
//! runs it, its arguments). After a stage succeeds its key is stamped in `demo/.stamps/<stage>`;
//! the next run skips the stage when the key is the same and the outputs are still there. The
//! stamp is removed before a stage runs, so an interrupted stage is never taken for a finished
//! one. Timestamps play no part: a rebuilt binary or a regenerated dataset with other bytes
//! changes the key, the same bytes do not.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The inputs of one stage, hashed as they are added.
pub struct Inputs {
    hash: Sha256,
}

impl Inputs {
    pub fn new(stage: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"trident-demo-stage/1\0");
        hash.update(stage.as_bytes());
        Inputs { hash }
    }

    /// A value that shapes the outputs (an argument, a setting).
    pub fn text(mut self, s: &str) -> Self {
        self.hash.update((s.len() as u64).to_le_bytes());
        self.hash.update(s.as_bytes());
        self
    }

    /// A file's content.
    pub fn file(mut self, path: &Path) -> Result<Self> {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        let mut content = Sha256::new();
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            content.update(&buf[..n]);
        }
        self.hash.update(len.to_le_bytes());
        self.hash.update(content.finalize());
        Ok(self)
    }

    /// Every file under a folder: relative paths and contents, in sorted order.
    pub fn dir(mut self, root: &Path) -> Result<Self> {
        let mut files = Vec::new();
        walk(root, &mut files)?;
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(root)
                .unwrap_or(&f)
                .to_string_lossy()
                .into_owned();
            self = self.text(&rel).file(&f)?;
        }
        Ok(self)
    }

    pub fn key(self) -> String {
        self.hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Where stage stamps live.
pub struct Stamps {
    dir: PathBuf,
}

impl Stamps {
    pub fn new(demo: &Path) -> Self {
        Stamps {
            dir: demo.join(".stamps"),
        }
    }

    /// True when `stage` last finished with this `key` and all of `outputs` still exist.
    /// Otherwise the stamp is removed: the stage runs, and only its success stamps it again.
    pub fn reusable(&self, stage: &str, key: &str, outputs: &[PathBuf]) -> bool {
        let path = self.dir.join(stage);
        let same = std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == key);
        if same && outputs.iter().all(|p| p.exists()) {
            return true;
        }
        let _ = std::fs::remove_file(&path);
        false
    }

    /// Records that `stage` finished with `key`.
    pub fn record(&self, stage: &str, key: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        trident_core::fsutil::write_atomic(&self.dir.join(stage), format!("{key}\n").as_bytes())
            .with_context(|| format!("stamping the {stage} stage"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_content_not_timestamps() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.txt"), "one").unwrap();
        std::fs::write(data.join("sub/b.txt"), "two").unwrap();
        let key = || {
            Inputs::new("train")
                .text("--epochs 3")
                .dir(&data)
                .unwrap()
                .key()
        };
        let k1 = key();
        // Rewriting the same bytes (a regenerated dataset) keeps the key.
        std::fs::write(data.join("a.txt"), "one").unwrap();
        assert_eq!(key(), k1);
        // Other bytes, another file, other arguments or another stage change it.
        std::fs::write(data.join("sub/b.txt"), "twO").unwrap();
        let k2 = key();
        assert_ne!(k2, k1);
        std::fs::write(data.join("c.txt"), "").unwrap();
        assert_ne!(key(), k2);
        let k3 = key();
        assert_ne!(
            Inputs::new("train")
                .text("--epochs 4")
                .dir(&data)
                .unwrap()
                .key(),
            k3
        );
        assert_ne!(
            Inputs::new("export")
                .text("--epochs 3")
                .dir(&data)
                .unwrap()
                .key(),
            k3
        );
    }

    #[test]
    fn a_stage_is_reused_only_with_its_key_and_outputs() {
        let d = tempfile::tempdir().unwrap();
        let stamps = Stamps::new(d.path());
        let out = d.path().join("best.safetensors");
        std::fs::write(&out, "w").unwrap();
        assert!(!stamps.reusable("train", "k1", std::slice::from_ref(&out)));
        stamps.record("train", "k1").unwrap();
        assert!(stamps.reusable("train", "k1", std::slice::from_ref(&out)));
        // Another key: not reused, and the old stamp is gone (an interrupted rerun stays unstamped).
        assert!(!stamps.reusable("train", "k2", std::slice::from_ref(&out)));
        assert!(!stamps.reusable("train", "k1", std::slice::from_ref(&out)));
        stamps.record("train", "k1").unwrap();
        std::fs::remove_file(&out).unwrap();
        assert!(!stamps.reusable("train", "k1", &[out]));
    }
}
