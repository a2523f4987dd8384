//! Helpers shared by the integration tests: a small fake package, and hostile archives written
//! byte by byte (tar::Builder refuses `..` and absolute names, which is exactly what these tests
//! need to produce).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use trident_core::digest::sha256_hex;
use trident_core::package::{MANIFEST, Manifest, PackagedFile, PackagedModel, SCHEMA, TargetFacts};
use trident_package::ArchiveEntry;

/// The files of a small package (path, content), manifest not included.
pub const FILES: &[(&str, &[u8])] = &[
    ("models/balanced.onnx", b"onnx model bytes"),
    ("calibration/calibration.yaml", b"temperature: 1.0\n"),
    ("profiles/nano.yaml", b"fps: 6\n"),
];

pub fn target(arch: &str) -> TargetFacts {
    TargetFacts {
        device: "jetson-nano".into(),
        arch: arch.into(),
        jetpack: "4.6".into(),
        tensorrt: "8.2".into(),
        max_glibc: "2.27".into(),
    }
}

/// A manifest listing `files` (path, content) with the first as the one model.
pub fn manifest_for(files: &[(&str, &[u8])], target: TargetFacts) -> Manifest {
    Manifest {
        schema: SCHEMA.into(),
        name: "trident".into(),
        version: "0.1.0".into(),
        git_revision: None,
        target,
        models: vec![PackagedModel {
            variant: "balanced".into(),
            file: files[0].0.into(),
            sha256: sha256_hex(files[0].1),
            input: vec![1, 3, 64, 64],
            output: vec![1, 6, 84],
            classes: vec!["fish".into(), "crab".into()],
            conf_floor: None,
        }],
        calibration: Some(PackagedFile {
            file: files[1].0.into(),
            sha256: sha256_hex(files[1].1),
        }),
        profiles: vec![files[2].0.into()],
        binary: None,
        tensorrt_shim: None,
        files: files
            .iter()
            .map(|(p, c)| (p.to_string(), sha256_hex(c)))
            .collect(),
    }
}

/// Writes `files` and `manifest` under `src` and returns the archive entries for them.
pub fn write_sources(
    src: &Path,
    files: &[(&str, &[u8])],
    manifest: &Manifest,
) -> Vec<ArchiveEntry> {
    let mut entries = Vec::new();
    for (path, content) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        entries.push(ArchiveEntry::file(*path, p));
    }
    let m = src.join(MANIFEST);
    std::fs::write(&m, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
    entries.push(ArchiveEntry::file(MANIFEST, m));
    entries
}

/// A complete package archive at `dir/name` (sources in `dir/src-<name>`).
pub fn package(dir: &Path, name: &str, files: &[(&str, &[u8])], manifest: &Manifest) -> PathBuf {
    let src = dir.join(format!("src-{name}"));
    let entries = write_sources(&src, files, manifest);
    let out = dir.join(name);
    trident_package::write_archive(&entries, &out).unwrap();
    out
}

/// The names directly inside `dir`.
pub fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A tar stream written header by header, any name and type allowed.
#[derive(Default)]
pub struct RawTar {
    bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    /// One member; `name` and `link` are copied into the header unchecked.
    pub fn member(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&[u8]>,
        mode: u32,
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name);
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link);
            }
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.member(name.as_bytes(), tar::EntryType::Regular, data, None, 0o644)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.member(name.as_bytes(), tar::EntryType::Directory, b"", None, 0o755)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.member(
            name.as_bytes(),
            tar::EntryType::Symlink,
            b"",
            Some(target.as_bytes()),
            0o777,
        )
    }

    /// The tar bytes with the end-of-archive marker.
    pub fn tar(&self) -> Vec<u8> {
        let mut t = self.bytes.clone();
        t.extend(std::iter::repeat_n(0u8, 1024));
        t
    }

    /// The archive compressed with zstd with a content checksum, as a package file would be.
    pub fn zst(&self) -> Vec<u8> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_checksum(true).unwrap();
        std::io::Write::write_all(&mut enc, &self.tar()).unwrap();
        enc.finish().unwrap()
    }

    /// Writes the compressed archive to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.zst()).unwrap();
        path.to_path_buf()
    }
}
