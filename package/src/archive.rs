//! Writing the package archive: a deterministic `tar.zst`.
//!
//! The same inputs give the same bytes on every machine and every run, whatever the source
//! files' timestamps, owners or permission bits, so a package can be rebuilt and compared by its
//! SHA-256:
//!
//! - members are sorted by path (byte order; a folder sorts as `name/`, so it always precedes its
//!   contents), and every parent folder is emitted once as its own member;
//! - GNU headers (names over 100 bytes use the GNU long-name member), mtime = [`archive_mtime`],
//!   uid/gid 0, empty user and group names, mode 0644, or 0755 for folders and executables; no
//!   pax headers, so no atime/ctime;
//! - zstd level 19 with a content checksum, single-threaded (multi-threaded zstd splits the input
//!   at timing-independent but thread-count-dependent points; one thread is one output). libzstd
//!   is the bundled copy pinned by `zstd-sys`, so the compressor does not change under a build.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use trident_core::package::check_relative;

use crate::error::{Error, Result};

/// The archive timestamp when `SOURCE_DATE_EPOCH` is unset or invalid: 2020-01-01T00:00:00Z.
pub const DEFAULT_MTIME: u64 = 1_577_836_800;

/// zstd level of package archives: the strongest level that still decompresses fast on a Nano.
pub const ZSTD_LEVEL: i32 = 19;

/// One file to put into an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Package-relative path with `/` separators: no `..`, `.` or empty parts, not absolute
    /// (see [`trident_core::package::check_relative`]).
    pub path: String,
    /// The file on this machine whose content is stored.
    pub source: PathBuf,
    /// Stored with mode 0755 instead of 0644.
    pub executable: bool,
}

impl ArchiveEntry {
    /// A non-executable member.
    pub fn file(path: impl Into<String>, source: impl Into<PathBuf>) -> Self {
        ArchiveEntry {
            path: path.into(),
            source: source.into(),
            executable: false,
        }
    }

    /// An executable member (mode 0755).
    pub fn executable(path: impl Into<String>, source: impl Into<PathBuf>) -> Self {
        ArchiveEntry {
            executable: true,
            ..Self::file(path, source)
        }
    }
}

/// The mtime stored in every header: `SOURCE_DATE_EPOCH` (reproducible-builds.org: decimal
/// seconds since the epoch) when it is set and valid, else [`DEFAULT_MTIME`]. An invalid value is
/// reported as a warning, not an error, because it only affects the timestamp.
pub fn archive_mtime() -> u64 {
    match std::env::var("SOURCE_DATE_EPOCH") {
        // The ustar/GNU mtime field holds 11 octal digits.
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(t) if t < 8u64.pow(11) => t,
            _ => {
                tracing::warn!(
                    "SOURCE_DATE_EPOCH={v:?} is not a number of seconds; using {DEFAULT_MTIME}"
                );
                DEFAULT_MTIME
            }
        },
        Err(_) => DEFAULT_MTIME,
    }
}

/// What a member is, in sort order.
enum Member<'a> {
    Dir,
    File(&'a ArchiveEntry),
}

/// Writes `entries` as a deterministic `tar.zst` at `out` and returns the archive's SHA-256
/// (lower-case hex). The archive is written to a temporary file beside `out` and renamed, so
/// `out` is either the complete archive or untouched.
pub fn write_archive(entries: &[ArchiveEntry], out: &Path) -> Result<String> {
    write_archive_at_level(entries, out, ZSTD_LEVEL)
}

/// [`write_archive`] at another zstd level: 1–3 for a development package (a 50 MB debug runtime
/// takes ~0.3 s instead of ~30 s at 19). Deterministic for a given level; releases use
/// [`ZSTD_LEVEL`].
pub fn write_archive_at_level(entries: &[ArchiveEntry], out: &Path, level: i32) -> Result<String> {
    let members = plan(entries)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create directory", parent, e))?;
    let mut builder = tempfile::Builder::new();
    // Temporary files are private (0600); the archive is an ordinary output (0644 less umask).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = builder
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(|e| Error::io("cannot create temporary file in", parent, e))?;

    let mtime = archive_mtime();
    let write_err = |e: std::io::Error| Error::io("cannot write", out, e);
    let mut encoder = zstd::stream::write::Encoder::new(BufWriter::new(tmp.as_file()), level)
        .map_err(write_err)?;
    encoder.include_checksum(true).map_err(write_err)?;
    let mut tar = tar::Builder::new(encoder);
    for (path, member) in &members {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        match member {
            Member::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())
                    .map_err(write_err)?;
            }
            Member::File(entry) => {
                let file = std::fs::File::open(&entry.source)
                    .map_err(|e| Error::io("cannot read", &entry.source, e))?;
                let meta = file
                    .metadata()
                    .map_err(|e| Error::io("cannot read", &entry.source, e))?;
                if !meta.is_file() {
                    return Err(Error::invalid(
                        entry.source.display().to_string(),
                        format!("is not a regular file (wanted as package member `{path}`)"),
                    ));
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if entry.executable { 0o755 } else { 0o644 });
                header.set_size(meta.len());
                let data = Exact {
                    inner: file.take(meta.len()),
                    left: meta.len(),
                };
                tar.append_data(&mut header, path, data).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        Error::io(
                            "cannot read (the file shrank while being archived)",
                            &entry.source,
                            e,
                        )
                    } else {
                        write_err(e)
                    }
                })?;
            }
        }
    }
    let encoder = tar.into_inner().map_err(write_err)?;
    let buffered = encoder.finish().map_err(write_err)?;
    buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)?;
    let sha = trident_core::digest::sha256_file(tmp.path())?;
    tmp.persist(out)
        .map_err(|e| Error::io("cannot write", out, e.error))?;
    tracing::debug!(archive = %out.display(), members = members.len(), %sha, "archive written");
    Ok(sha)
}

/// A member name as packages spell it: [`check_relative`] (relative, no `..`, no `\\`), and
/// also no empty or `.` part anywhere. (`Path::components` silently drops those in the middle of
/// a path, so `a/./b` and `a//b` pass `check_relative`; they would be second spellings of `a/b`
/// and would throw off the depth counting of symbolic link targets.)
pub(crate) fn package_path(path: &str) -> std::result::Result<(), String> {
    check_relative(path)?;
    if path.split('/').any(|part| part.is_empty() || part == ".") {
        return Err(format!("`{path}` has an empty or `.` part"));
    }
    Ok(())
}

/// Checks the entries and returns every member (files and their parent folders) in archive order.
fn plan(entries: &[ArchiveEntry]) -> Result<Vec<(String, Member<'_>)>> {
    let mut files: BTreeMap<&str, &ArchiveEntry> = BTreeMap::new();
    for e in entries {
        if e.path.ends_with('/') {
            return Err(Error::invalid(
                format!("package member `{}`", e.path),
                "names a folder; list files only (folders are added for them)",
            ));
        }
        package_path(&e.path)
            .map_err(|m| Error::invalid(format!("package member `{}`", e.path), m))?;
        if files.insert(&e.path, e).is_some() {
            return Err(Error::invalid(
                format!("package member `{}`", e.path),
                "is listed twice",
            ));
        }
    }
    let mut dirs = BTreeSet::new();
    for path in files.keys() {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            dirs.insert(&path[..end]);
            end += 1;
        }
    }
    if let Some(clash) = dirs.iter().find(|d| files.contains_key(*d)) {
        return Err(Error::invalid(
            format!("package member `{clash}`"),
            "is both a file and the folder of other members",
        ));
    }
    // The sort key of a folder is `name/`: it precedes its contents and sorts among its siblings
    // the way `tar` lists it.
    let mut members: Vec<(String, Member<'_>)> = dirs
        .into_iter()
        .map(|d| (format!("{d}/"), Member::Dir))
        .chain(
            files
                .into_iter()
                .map(|(p, e)| (p.to_string(), Member::File(e))),
        )
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    for m in &mut members {
        if matches!(m.1, Member::Dir) {
            m.0.pop();
        }
    }
    Ok(members)
}

/// Reads exactly `left` bytes, failing if the file ends early (it shrank after its size was
/// stored in the header, which would corrupt every following member).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} bytes missing", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
