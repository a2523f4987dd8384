//! Unpacking a package archive, hardened against hostile archives.
//!
//! Every rule is enforced here, member by member, before the member is written: tar's own
//! `unpack` is not used. (The one check made after the walk is of symbolic links through other
//! links, which needs every link known; a link itself writes nothing, and no member is ever
//! written through one.) A member is refused, with its name in the error, when its name is
//! absolute, has `..` or `.` parts or is not UTF-8; when it repeats or collides with an earlier
//! member; when it is a hard link, a device, a fifo, a sparse file, a pax header or any other
//! type than a file, a folder or a symbolic link; when it is a symbolic link whose target is
//! absolute or leads outside the package (followed through the archive's own links too); when it
//! would be written through a symbolic link; or when it is over a [`Limits`] bound. Sizes are
//! counted as bytes are read, never taken from headers, and the zstd window is capped, so a small
//! archive cannot claim gigabytes of memory or disk. Files get mode 0644 or 0755 (never setuid,
//! setgid or sticky), folders 0755; owners and timestamps are not restored.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result, io_chain};

mod staged;
mod walk;

pub use staged::{StagedPackage, Synced, extract_staged, sync_tree};
use walk::Walk;

/// The zstd window cap (2^27 = 128 MiB): level 19 uses 8 MiB; a larger claimed window is refused
/// instead of allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The longest member name or link target accepted (Linux `PATH_MAX`).
const MAX_NAME_BYTES: u64 = 4096;
/// Bytes of tar structure allowed per member on top of its content: its header, and a GNU long
/// name and long link target record (header, up to `MAX_NAME_BYTES` + NUL, padding) each.
const OVERHEAD_PER_ENTRY: u64 = 512 + 2 * (512 + MAX_NAME_BYTES + 512);
/// Symbolic links followed in one resolution before it counts as a loop (Linux's limit).
const MAX_LINK_HOPS: usize = 40;

/// Bounds on what an archive may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Members (files, folders, links), not counting GNU long-name records.
    pub max_entries: usize,
    /// Bytes of one file.
    pub max_entry_bytes: u64,
    /// Bytes of all files together.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    /// Suited to a Jetson Nano package: three models, their cards, tables, profiles and one
    /// binary are a few dozen members and a few hundred MB; the Nano has 4 GB of RAM and often a
    /// 16–64 GB card.
    fn default() -> Self {
        Limits {
            max_entries: 256,
            max_entry_bytes: 1 << 30,
            max_total_bytes: 2 << 30,
        }
    }
}

/// What an extraction wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Regular files.
    pub files: usize,
    /// Folders, those named in the archive and those created for members.
    pub dirs: usize,
    /// Symbolic links.
    pub symlinks: usize,
    /// Content bytes of all files.
    pub bytes: u64,
}

/// Unpacks `archive` into `dest`, which must be absent (it is created) or an empty folder.
///
/// On error `dest` may hold some members (never anything outside it); use [`extract_staged`] for
/// all-or-nothing.
pub fn extract(archive: &Path, dest: &Path, limits: &Limits) -> Result<Extracted> {
    let file = File::open(archive).map_err(|e| Error::io("cannot read", archive, e))?;
    extract_from_reader(
        BufReader::new(file),
        dest,
        limits,
        &archive.display().to_string(),
    )
}

/// Unpacks a `tar.zst` stream into `dest` (absent, then created, or an empty folder); `origin`
/// names the stream in errors. This is [`extract`] without the file: a fuzz target can feed it arbitrary bytes.
pub fn extract_from_reader<R: Read>(
    reader: R,
    dest: &Path,
    limits: &Limits,
    origin: &str,
) -> Result<Extracted> {
    prepare_dest(dest)?;
    let origin = Path::new(origin);
    let corrupt = |e: std::io::Error| {
        Error::archive(origin, None, format!("cannot decompress: {}", io_chain(&e)))
    };
    // The magic number first, for a plain message when the file is something else entirely.
    let mut reader = reader;
    let mut magic = Vec::with_capacity(4);
    (&mut reader)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|e| Error::archive(origin, None, format!("cannot read: {}", io_chain(&e))))?;
    if magic != ZSTD_MAGIC {
        return Err(Error::archive(
            origin,
            None,
            "is not zstd-compressed (a package is a .tar.zst; zstd data starts 28 b5 2f fd)",
        ));
    }
    let reader = std::io::Cursor::new(magic).chain(reader);
    let mut decoder = zstd::stream::read::Decoder::new(reader).map_err(corrupt)?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(corrupt)?;
    walk_tar(decoder, dest, limits, origin)
}

/// Unpacks an uncompressed tar stream with every rule of [`extract_from_reader`]. Packages are
/// always zstd-compressed; this entry point lets a fuzz target reach the tar walker directly
/// instead of through the decompressor.
pub fn extract_tar_from_reader<R: Read>(
    tar_stream: R,
    dest: &Path,
    limits: &Limits,
    origin: &str,
) -> Result<Extracted> {
    prepare_dest(dest)?;
    walk_tar(tar_stream, dest, limits, Path::new(origin))
}

/// `dest` must be absent (it is created) or an empty folder.
fn prepare_dest(dest: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dest)
            .map_err(|e| Error::io("cannot create directory", dest, e))?,
        Err(e) => return Err(Error::io("cannot read", dest, e)),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(dest).map_err(|e| Error::io("cannot read", dest, e))?;
    if !meta.is_dir()
        || std::fs::read_dir(dest)
            .map_err(|e| Error::io("cannot read", dest, e))?
            .next()
            .is_some()
    {
        return Err(Error::invalid(
            dest.display().to_string(),
            "must be an empty folder to unpack a package into",
        ));
    }
    Ok(())
}

/// Walks a (decompressed) tar stream into `dest` under the limits.
fn walk_tar<R: Read>(stream: R, dest: &Path, limits: &Limits, origin: &Path) -> Result<Extracted> {
    let cap = limits.max_total_bytes.saturating_add(
        OVERHEAD_PER_ENTRY.saturating_mul(limits.max_entries as u64 + 2) + 20 * 512,
    );
    let mut archive = tar::Archive::new(Budget {
        inner: stream,
        left: cap,
        exceeded: false,
    });
    let mut walk = Walk {
        dest,
        origin,
        limits,
        seen: HashSet::new(),
        links: BTreeMap::new(),
        done: Extracted::default(),
    };
    let walked = walk.members(&mut archive);
    let mut rest = archive.into_inner();
    let over = || {
        Error::archive(
            origin,
            None,
            format!(
                "unpacks to more than {cap} bytes (Limits::max_total_bytes {} plus tar structure)",
                limits.max_total_bytes
            ),
        )
    };
    match walked {
        Err(_) if rest.exceeded => return Err(over()),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    // Read to the end of the zstd frame: that checks its checksum and finds trailing data.
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if buf[..n].iter().all(|&b| b == 0) => {}
            Ok(_) => {
                return Err(Error::archive(
                    origin,
                    None,
                    "data after the end of the tar archive",
                ));
            }
            Err(_) if rest.exceeded => return Err(over()),
            Err(e) => {
                return Err(Error::archive(
                    origin,
                    None,
                    format!(
                        "truncated or corrupt after the last member: {}",
                        io_chain(&e)
                    ),
                ));
            }
        }
    }
    walk.check_links()?;
    Ok(walk.done)
}

/// Counts decompressed bytes and fails once `left` is used up, bounding everything the tar
/// reader consumes (content, headers, long names, skipped data).
struct Budget<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            // One more byte tells a stream that ends exactly at the cap from one that goes on.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded = true;
            return Err(std::io::Error::other("decompressed size over the limit"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}
