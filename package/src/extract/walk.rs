//! Walking the members of a package archive: every acceptance rule for names, types, links and
//! sizes (see the parent module for the list).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{Extracted, Limits, MAX_LINK_HOPS, MAX_NAME_BYTES};
use crate::archive::package_path;
use crate::error::{Error, Result, io_chain};

pub(super) struct Walk<'a> {
    pub(super) dest: &'a Path,
    pub(super) origin: &'a Path,
    pub(super) limits: &'a Limits,
    pub(super) seen: HashSet<String>,
    /// Symbolic links created: package path → target.
    pub(super) links: BTreeMap<String, String>,
    pub(super) done: Extracted,
}

impl Walk<'_> {
    fn err(&self, entry: &str, message: impl Into<String>) -> Error {
        Error::archive(self.origin, Some(entry), message)
    }

    pub(super) fn members<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<()> {
        let origin = self.origin;
        let corrupt = |after: &Option<String>, e: std::io::Error| {
            let at = after.as_ref().map_or("at the start".to_string(), |n| {
                format!("after member `{n}`")
            });
            Error::archive(
                origin,
                None,
                format!("truncated or corrupt {at}: {}", io_chain(&e)),
            )
        };
        let mut last: Option<String> = None;
        // Raw mode: GNU long names are read here, with a size bound, and pax headers refused.
        let entries = archive.entries().map_err(|e| corrupt(&last, e))?.raw(true);
        let (mut long_name, mut long_link): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        let mut count = 0usize;
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt(&last, e))?;
            let kind = entry.header().entry_type();
            if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                let slot = if kind.is_gnu_longname() {
                    &mut long_name
                } else {
                    &mut long_link
                };
                let what = if kind.is_gnu_longname() {
                    "name"
                } else {
                    "link target"
                };
                if slot.is_some() || entry.size() > MAX_NAME_BYTES + 1 {
                    return Err(Error::archive(
                        origin,
                        None,
                        format!(
                            "a GNU long {what} record after {} is repeated or over {MAX_NAME_BYTES} bytes",
                            last.as_deref()
                                .map_or("the start".into(), |n| format!("`{n}`"))
                        ),
                    ));
                }
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| corrupt(&last, e))?;
                while bytes.last() == Some(&0) {
                    bytes.pop();
                }
                *slot = Some(bytes);
                continue;
            }
            let name_bytes = long_name
                .take()
                .unwrap_or_else(|| entry.path_bytes().into_owned());
            let link = long_link
                .take()
                .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
            let name = String::from_utf8(name_bytes).map_err(|e| {
                self.err(
                    &String::from_utf8_lossy(e.as_bytes()),
                    "name is not UTF-8; package paths are UTF-8",
                )
            })?;
            last = Some(name.clone());
            count += 1;
            if count > self.limits.max_entries {
                return Err(self.err(
                    &name,
                    format!(
                        "the archive has more than {} members (Limits::max_entries)",
                        self.limits.max_entries
                    ),
                ));
            }
            let is_dir = kind.is_dir();
            let rel = if is_dir {
                name.strip_suffix('/').unwrap_or(&name)
            } else {
                &name
            };
            package_path(rel).map_err(|m| self.err(&name, m))?;
            if !self.seen.insert(rel.to_string()) {
                return Err(self.err(&name, "appears twice in the archive"));
            }
            match kind {
                tar::EntryType::Directory => self.dir(rel, &name)?,
                tar::EntryType::Regular => {
                    let mode = entry.header().mode().unwrap_or(0o644);
                    let declared = entry.size();
                    self.file(rel, &name, &mut entry, declared, mode)?
                }
                tar::EntryType::Symlink => self.symlink(rel, &name, link)?,
                tar::EntryType::Link => {
                    return Err(self.err(&name, "hard links are not accepted in a package"));
                }
                other => {
                    let what = match other {
                        tar::EntryType::Char => "a character device",
                        tar::EntryType::Block => "a block device",
                        tar::EntryType::Fifo => "a fifo",
                        tar::EntryType::GNUSparse => "a sparse file",
                        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
                            "a pax extended header"
                        }
                        _ => "an unknown member type",
                    };
                    return Err(self.err(
                        &name,
                        format!(
                            "is {what}; a package holds only files, folders and symbolic links"
                        ),
                    ));
                }
            }
        }
        if long_name.is_some() || long_link.is_some() {
            return Err(Error::archive(
                origin,
                None,
                "the archive ends with a GNU long-name record and no member",
            ));
        }
        Ok(())
    }

    /// Makes sure every folder above `rel` is a real folder inside `dest` (created when missing;
    /// a link or a file there is refused) and returns where `rel` goes, which must not exist.
    fn place(&mut self, rel: &str, name: &str) -> Result<PathBuf> {
        let mut parts: Vec<&str> = rel.split('/').collect();
        let leaf = parts.pop().unwrap_or_default();
        let mut at = self.dest.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.err(
                        name,
                        format!(
                            "its folder `{}` is a symbolic link or a file; members are never written through links",
                            parts[..=i].join("/")
                        ),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    create_dir(&at)?;
                    self.done.dirs += 1;
                }
                Err(e) => return Err(Error::io("cannot read", &at, e)),
            }
        }
        at.push(leaf);
        Ok(at)
    }

    fn dir(&mut self, rel: &str, name: &str) -> Result<()> {
        let at = self.place(rel, name)?;
        match std::fs::symlink_metadata(&at) {
            // Created earlier as the folder of another member.
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(self.err(name, "collides with an earlier member")),
            Err(_) => {
                create_dir(&at)?;
                self.done.dirs += 1;
                Ok(())
            }
        }
    }

    fn file(
        &mut self,
        rel: &str,
        name: &str,
        data: &mut impl Read,
        declared: u64,
        mode: u32,
    ) -> Result<()> {
        let limits = *self.limits;
        let too_big = |size: u64| {
            format!(
                "is {size} bytes or more; one file may have {} (Limits::max_entry_bytes)",
                limits.max_entry_bytes
            )
        };
        let over_total = || {
            format!(
                "brings the files over {} bytes (Limits::max_total_bytes)",
                limits.max_total_bytes
            )
        };
        if declared > limits.max_entry_bytes {
            return Err(self.err(name, too_big(declared)));
        }
        if self.done.bytes.saturating_add(declared) > limits.max_total_bytes {
            return Err(self.err(name, over_total()));
        }
        let at = self.place(rel, name)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options.open(&at).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                self.err(name, "collides with an earlier member")
            } else {
                Error::io("cannot write", &at, e)
            }
        })?;
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = data.read(&mut buf).map_err(|e| {
                self.err(
                    name,
                    format!("content is truncated or corrupt: {}", io_chain(&e)),
                )
            })?;
            if n == 0 {
                break;
            }
            // Counted as read, whatever the header said.
            written += n as u64;
            self.done.bytes += n as u64;
            if written > limits.max_entry_bytes {
                return Err(self.err(name, too_big(written)));
            }
            if self.done.bytes > limits.max_total_bytes {
                return Err(self.err(name, over_total()));
            }
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("cannot write", &at, e))?;
        }
        if written != declared {
            return Err(self.err(
                name,
                format!("content is truncated: {written} of {declared} bytes"),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Only two modes: executable or not. Setuid, setgid, sticky and odd bits are dropped.
            let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            out.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("cannot write", &at, e))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        self.done.files += 1;
        Ok(())
    }

    fn symlink(&mut self, rel: &str, name: &str, target: Option<Vec<u8>>) -> Result<()> {
        let target = target.unwrap_or_default();
        let target =
            String::from_utf8(target).map_err(|_| self.err(name, "link target is not UTF-8"))?;
        if target.is_empty() || target.contains('\0') {
            return Err(self.err(name, "symbolic link without a usable target"));
        }
        if target.starts_with('/') {
            return Err(self.err(
                name,
                format!("symbolic link to the absolute path `{target}`; only links inside the package are accepted"),
            ));
        }
        // Lexically first (the archive's other links are checked once all are known).
        let mut depth: Vec<&str> = rel.split('/').collect();
        depth.pop();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if depth.pop().is_none() {
                        return Err(self.err(
                            name,
                            format!("symbolic link to `{target}` leads outside the package"),
                        ));
                    }
                }
                p => depth.push(p),
            }
        }
        let at = self.place(rel, name)?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &at).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                self.err(name, "collides with an earlier member")
            } else {
                Error::io("cannot write", &at, e)
            }
        })?;
        #[cfg(not(unix))]
        return Err(self.err(name, "symbolic links are not supported on this system"));
        self.links.insert(rel.to_string(), target);
        self.done.symlinks += 1;
        Ok(())
    }

    /// Resolves every link through the archive's own links: `a -> .` and `a/b -> ..` each look
    /// harmless, but `a/b` is then the folder above the package.
    pub(super) fn check_links(&self) -> Result<()> {
        for (link, target) in &self.links {
            let mut at: Vec<String> = link.split('/').map(str::to_string).collect();
            at.pop();
            let mut todo: VecDeque<String> = target.split('/').map(str::to_string).collect();
            let mut hops = 0;
            while let Some(part) = todo.pop_front() {
                match part.as_str() {
                    "" | "." => {}
                    ".." => {
                        if at.pop().is_none() {
                            return Err(self.err(
                                link,
                                format!("symbolic link to `{target}` leads outside the package through other links"),
                            ));
                        }
                    }
                    _ => {
                        at.push(part);
                        if let Some(next) = self.links.get(&at.join("/")) {
                            hops += 1;
                            if hops > MAX_LINK_HOPS {
                                return Err(self.err(link, "symbolic links in a loop"));
                            }
                            at.pop();
                            for p in next.split('/').rev() {
                                todo.push_front(p.to_string());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn create_dir(at: &Path) -> Result<()> {
    std::fs::create_dir(at).map_err(|e| Error::io("cannot create directory", at, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("cannot create directory", at, e))?;
    }
    Ok(())
}
