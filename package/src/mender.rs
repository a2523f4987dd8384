//! A Mender artifact (format version 3) carrying a signed trident package, for fleets that
//! update through a Mender server instead of `trident deploy`.
//!
//! The artifact is written here rather than by the `mender-artifact` tool so that release CI
//! and field engineers need nothing beyond `trident`, and so that the same package always gives
//! the same artifact bytes (no timestamps, owners or compression levels of the machine that
//! built it). Tests read every artifact back with the real `mender-artifact validate`/`read`
//! and install it with the real Mender client.
//!
//! # Layout (Mender's "Artifact format v3", no compression)
//!
//! An uncompressed tar with, in this order:
//! - `version`: `{"format":"mender","version":3}`;
//! - `manifest`: `<sha256>  <name>` for `version`, `header.tar` and every payload file
//!   (`data/0000/<file>`), sorted by name;
//! - `header.tar`: `header-info` (payload type, `artifact_name`, the `device_type`s Mender
//!   refuses others by), `headers/0000/type-info` (the `trident` payload's provides and what
//!   they clear) and `headers/0000/meta-data` (version, package file and downgrade policy for
//!   the Update Module);
//! - `data/0000.tar`: the package archive and its `.minisig`.
//!
//! The package is zstd already: compressing it again would cost time on the unit for nothing,
//! so neither the header nor the data is compressed. Mender's own artifact signature
//! (`manifest.sig`) is optional and made afterwards with `mender-artifact sign`; the trident
//! signature inside is what the unit always checks.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use trident_core::package::Manifest;

use crate::error::{Error, Result};

/// The payload type, and so the name of the Update Module on the unit
/// (`/usr/share/mender/modules/v3/trident`).
pub const PAYLOAD_TYPE: &str = "trident";

/// The provide Mender shows as the installed software's version (`rootfs-image.<name>.version`,
/// the key Mender's UI and "software" filters read).
pub const VERSION_PROVIDE: &str = "rootfs-image.trident.version";

/// What goes into an artifact besides the package; also the `mender:` section of
/// `configs/release.yaml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenderOptions {
    /// Mender `device_type`s that may install it (the unit's `/var/lib/mender/device_type`).
    pub device_types: Vec<String>,
    /// Artifact name; default `<package name>-<version>`.
    #[serde(default)]
    pub artifact_name: Option<String>,
    /// Let the unit install it over a newer release (a deliberate downgrade from the server).
    #[serde(default)]
    pub allow_downgrade: bool,
}

impl MenderOptions {
    /// Refuses what Mender would: no device type, or names it cannot carry.
    pub fn check(&self) -> Result<()> {
        if self.device_types.is_empty() {
            return Err(Error::invalid(
                "mender.device_types",
                "at least one Mender device type is needed (e.g. jetson-nano); units whose \
                 /var/lib/mender/device_type is not listed refuse the artifact",
            ));
        }
        for d in &self.device_types {
            check_name("mender.device_types", d)?;
        }
        if let Some(name) = &self.artifact_name {
            check_name("mender.artifact_name", name)?;
        }
        Ok(())
    }
}

/// What [`write_artifact`] made.
#[derive(Clone, Debug)]
pub struct MenderArtifact {
    pub path: PathBuf,
    pub artifact_name: String,
    pub bytes: u64,
}

/// The file name of the artifact for a package archive: `trident-1.2.0-jetson-nano-jp46.mender`.
pub fn artifact_file_name(package: &Path) -> String {
    let name = package
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".tar.zst").unwrap_or(&name);
    format!("{stem}.mender")
}

/// Checks a Mender name (artifact name, device type): Mender's server and client accept these
/// characters; anything else (spaces, quotes, slashes) is refused here rather than on a unit.
fn check_name(field: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{value:?} is not a usable Mender name (1 to 256 of A-Z a-z 0-9 . _ + -)"),
        ))
    }
}

/// Writes `<out_dir>/<package stem>.mender` for `package` (with `<package>.minisig` beside it;
/// an unsigned package is refused) whose verified manifest is `manifest`. Written to a temporary name,
/// fsynced and renamed: a failure leaves no artifact.
pub fn write_artifact(
    package: &Path,
    manifest: &Manifest,
    opts: &MenderOptions,
    out_dir: &Path,
) -> Result<MenderArtifact> {
    opts.check()?;
    let artifact_name = opts
        .artifact_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", manifest.name, manifest.version));
    check_name("mender.artifact_name", &artifact_name)?;

    // Units install signed packages only: an artifact without the signature would fail on every
    // unit, after the fleet downloaded it.
    let signature = crate::verify::signature_path(package);
    if !signature.is_file() {
        return Err(Error::invalid(
            package.display().to_string(),
            format!(
                "no signature {} beside it: units install signed packages only",
                signature.display()
            ),
        ));
    }
    let mut files = Vec::new();
    for p in [package.to_path_buf(), signature] {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::invalid(p.display().to_string(), "not a file name"))?;
        check_name("package file name", &name)?;
        let sha256 = trident_core::digest::sha256_file(&p)?;
        let size = std::fs::metadata(&p)
            .map_err(|e| Error::io("cannot read", &p, e))?
            .len();
        files.push(PayloadFile {
            name,
            source: p,
            sha256,
            size,
        });
    }
    let package_file = files[0].name.clone();

    let version = br#"{"format":"mender","version":3}"#.to_vec();
    let header = header_tar(manifest, opts, &artifact_name, &package_file)?;

    let mut sums: Vec<(String, String)> = vec![
        ("version".into(), digest(&version)),
        ("header.tar".into(), digest(&header)),
    ];
    for f in &files {
        sums.push((format!("data/0000/{}", f.name), f.sha256.clone()));
    }
    sums.sort();
    let manifest_text: String = sums
        .iter()
        .map(|(name, sum)| format!("{sum}  {name}\n"))
        .collect();

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io("cannot create", out_dir, e))?;
    let path = out_dir.join(artifact_file_name(package));
    let mut tmp = tempfile::Builder::new()
        .prefix(".mender-")
        .tempfile_in(out_dir)
        .map_err(|e| Error::io("cannot create a temporary file in", out_dir, e))?;
    {
        let mut outer = tar::Builder::new(std::io::BufWriter::new(tmp.as_file_mut()));
        append(&mut outer, "version", version.len() as u64, &version[..])?;
        append(
            &mut outer,
            "manifest",
            manifest_text.len() as u64,
            manifest_text.as_bytes(),
        )?;
        append(&mut outer, "header.tar", header.len() as u64, &header[..])?;
        // The data tar is streamed: its size is known from the files' sizes, so a package of
        // hundreds of MiB is never held in memory.
        let data_size: u64 = files.iter().map(|f| 512 + padded(f.size)).sum::<u64>() + 1024;
        let mut header = tar_header("data/0000.tar", data_size)?;
        header.set_cksum();
        let reader = DataTar::new(&files)?;
        outer
            .append(&header, reader)
            .map_err(|e| Error::io("cannot write", &path, e))?;
        let w = outer
            .into_inner()
            .map_err(|e| Error::io("cannot write", &path, e))?;
        w.into_inner()
            .map_err(|e| Error::io("cannot write", &path, e.into_error()))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("cannot sync", tmp.path(), e))?;
    let bytes = tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::io("cannot read", tmp.path(), e))?
        .len();
    tmp.persist(&path)
        .map_err(|e| Error::io("cannot write", &path, e.error))?;
    if let Ok(dir) = std::fs::File::open(out_dir) {
        let _ = dir.sync_all();
    }
    Ok(MenderArtifact {
        path,
        artifact_name,
        bytes,
    })
}

struct PayloadFile {
    name: String,
    source: PathBuf,
    sha256: String,
    size: u64,
}

/// `header.tar`: header-info, type-info and meta-data of the one `trident` payload.
fn header_tar(
    manifest: &Manifest,
    opts: &MenderOptions,
    artifact_name: &str,
    package_file: &str,
) -> Result<Vec<u8>> {
    let header_info = json!({
        "payloads": [{"type": PAYLOAD_TYPE}],
        "artifact_provides": {"artifact_name": artifact_name},
        "artifact_depends": {"device_type": opts.device_types},
    });
    // Installing a trident release replaces what an earlier one provided (and nothing else the
    // unit provides, such as its root filesystem's version).
    let type_info = json!({
        "type": PAYLOAD_TYPE,
        "artifact_provides": {
            VERSION_PROVIDE: manifest.version,
            "trident.package": package_file,
            "trident.target": format!("{}-jetpack{}-tensorrt{}", manifest.target.device, manifest.target.jetpack, manifest.target.tensorrt),
        },
        "clears_artifact_provides": ["rootfs-image.trident.*", "trident.*"],
    });
    let meta = MetaData {
        trident_version: &manifest.version,
        trident_package: package_file,
        trident_allow_downgrade: opts.allow_downgrade,
    };
    let meta = serde_json::to_vec(&meta).map_err(|e| Error::invalid("meta-data", e.to_string()))?;
    tar_bytes(&[
        ("header-info", json_bytes(&header_info)),
        ("headers/0000/type-info", json_bytes(&type_info)),
        ("headers/0000/meta-data", meta),
    ])
}

/// What the Update Module reads from `header/meta-data` (flat, so a POSIX sh `sed` reads it).
#[derive(Serialize)]
struct MetaData<'a> {
    trident_version: &'a str,
    trident_package: &'a str,
    trident_allow_downgrade: bool,
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a json! value serializes")
}

fn digest(bytes: &[u8]) -> String {
    trident_core::digest::sha256_hex(bytes)
}

fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

/// A ustar header: mode 0644, owner 0, mtime 0 — the same bytes on every machine.
fn tar_header(path: &str, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .map_err(|e| Error::invalid(path, format!("not a tar member name: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    Ok(h)
}

fn append<W: Write>(b: &mut tar::Builder<W>, path: &str, size: u64, data: impl Read) -> Result<()> {
    let mut h = tar_header(path, size)?;
    h.set_cksum();
    b.append(&h, data)
        .map_err(|e| Error::io("cannot write", PathBuf::from(path), e))
}

/// A small tar held in memory.
fn tar_bytes(members: &[(&str, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in members {
        append(&mut b, path, data.len() as u64, &data[..])?;
    }
    b.into_inner()
        .map_err(|e| Error::io("cannot write", PathBuf::from("header.tar"), e))
}

/// `data/0000.tar` as a stream: each file's ustar header, its bytes, padding; two zero blocks.
struct DataTar {
    parts: std::collections::VecDeque<Box<dyn Read>>,
}

impl DataTar {
    fn new(files: &[PayloadFile]) -> Result<Self> {
        let mut parts: std::collections::VecDeque<Box<dyn Read>> = Default::default();
        for f in files {
            let mut h = tar_header(&f.name, f.size)?;
            h.set_cksum();
            parts.push_back(Box::new(std::io::Cursor::new(h.as_bytes().to_vec())));
            let file = std::fs::File::open(&f.source)
                .map_err(|e| Error::io("cannot read", &f.source, e))?;
            // Exactly `size` bytes, even if the file grew since it was hashed.
            parts.push_back(Box::new(file.take(f.size)));
            let pad = (padded(f.size) - f.size) as usize;
            parts.push_back(Box::new(std::io::Cursor::new(vec![0u8; pad])));
        }
        parts.push_back(Box::new(std::io::Cursor::new(vec![0u8; 1024])));
        Ok(DataTar { parts })
    }
}

impl Read for DataTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(part) = self.parts.front_mut() {
            let n = part.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.parts.pop_front();
        }
        Ok(0)
    }
}
