//! What an executable needs from the system that runs it: its machine, the newest glibc symbol
//! version it links against, and its program interpreter. A binary built against a newer glibc
//! than the device's (JetPack 4.6 ships Ubuntu 18.04's glibc 2.27) fails at start with
//! "version `GLIBC_2.28' not found"; the package check catches that on the host.

use std::cmp::Ordering;
use std::path::Path;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, FileKind};

use crate::error::{Error, Result};

/// Facts about an ELF executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfFacts {
    /// `aarch64`, `x86_64`, `arm`, `x86`, `riscv64`, … (Rust's `std::env::consts::ARCH` names),
    /// or `machine N` for others.
    pub machine: String,
    /// The highest `GLIBC_x.y[.z]` version among its needed symbol versions (`.gnu.version_r`),
    /// compared numerically; `None` for a static or non-glibc binary.
    pub max_glibc: Option<String>,
    /// The `PT_INTERP` program interpreter, e.g. `/lib/ld-linux-aarch64.so.1`.
    pub interpreter: Option<String>,
}

/// Reads the ELF facts of the file at `path`.
pub fn inspect(path: &Path) -> Result<ElfFacts> {
    let data = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    let bad = |message: String| Error::invalid(path.display().to_string(), message);
    let facts = match FileKind::parse(&*data) {
        Ok(FileKind::Elf64) => facts::<elf::FileHeader64<Endianness>>(&data),
        Ok(FileKind::Elf32) => facts::<elf::FileHeader32<Endianness>>(&data),
        _ => {
            return Err(bad(
                "is not an ELF file (expected a Linux executable)".into()
            ));
        }
    };
    facts.map_err(|e| bad(format!("malformed ELF file: {e}")))
}

fn facts<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> object::Result<ElfFacts> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let machine = match header.e_machine(endian) {
        elf::EM_AARCH64 => "aarch64".to_string(),
        elf::EM_X86_64 => "x86_64".to_string(),
        elf::EM_ARM => "arm".to_string(),
        elf::EM_386 => "x86".to_string(),
        elf::EM_RISCV if header.is_type_64() => "riscv64".to_string(),
        elf::EM_RISCV => "riscv32".to_string(),
        elf::EM_PPC64 => "powerpc64".to_string(),
        other => format!("machine {other}"),
    };
    let mut interpreter = None;
    for segment in header.program_headers(endian, data)? {
        if let Some(i) = segment.interpreter(endian, data)? {
            interpreter = Some(String::from_utf8_lossy(i).into_owned());
        }
    }
    let sections = header.sections(endian, data)?;
    let mut max_glibc: Option<String> = None;
    if let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        while let Some((_, mut auxes)) = needs.next()? {
            while let Some(aux) = auxes.next()? {
                let name = String::from_utf8_lossy(aux.name(endian, strings)?);
                // `GLIBC_PRIVATE`, `GLIBC_ABI_DT_RELR` and the like are not release numbers.
                let Some(version) = name.strip_prefix("GLIBC_") else {
                    continue;
                };
                if parse_version(version).is_none() {
                    continue;
                }
                if max_glibc
                    .as_deref()
                    .is_none_or(|m| compare_versions(version, m) == Some(Ordering::Greater))
                {
                    max_glibc = Some(version.to_string());
                }
            }
        }
    }
    Ok(ElfFacts {
        machine,
        max_glibc,
        interpreter,
    })
}

/// The numeric parts of a dotted version (`2.27` → `[2, 27]`); `None` unless every part is a
/// number.
pub fn parse_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    v.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// Compares dotted versions numerically, missing parts counting as 0 (`2.27` = `2.27.0` <
/// `2.28` < `2.100`); `None` when either is not a dotted number.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse_version(a)?, parse_version(b)?);
    let n = a.len().max(b.len());
    let part = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    Some(
        (0..n)
            .map(|i| part(&a, i).cmp(&part(&b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal),
    )
}

/// `a ≤ b` numerically; false when either is not a dotted number.
pub fn version_le(a: &str, b: &str) -> bool {
    matches!(
        compare_versions(a, b),
        Some(Ordering::Less | Ordering::Equal)
    )
}

/// Whether two versions share major and minor (`4.6.1` and `4.6` do; `4.5` and `4.6` do not);
/// false when either is not a dotted number.
pub fn same_major_minor(a: &str, b: &str) -> bool {
    match (parse_version(a), parse_version(b)) {
        (Some(a), Some(b)) => {
            let mm = |v: &[u64]| (v[0], v.get(1).copied().unwrap_or(0));
            mm(&a) == mm(&b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_le("2.27", "2.27"));
        assert!(version_le("2.9", "2.27"), "numeric, not lexical");
        assert!(!version_le("2.28", "2.27"));
        assert!(version_le("2.27", "2.27.1") && version_le("2.27.0", "2.27"));
        assert!(!version_le("2.x", "2.27") && !version_le("", "1"));
        assert!(same_major_minor("4.6.1", "4.6") && !same_major_minor("4.5.1", "4.6"));
        assert_eq!(compare_versions("10.0", "9.9"), Some(Ordering::Greater));
    }

    #[test]
    fn this_machines_ls_is_a_glibc_executable() {
        let facts = inspect(Path::new("/bin/ls")).unwrap();
        assert_eq!(facts.machine, std::env::consts::ARCH);
        let glibc = facts.max_glibc.expect("/bin/ls needs GLIBC_ symbols");
        assert!(version_le("2.2", &glibc), "{glibc}");
        assert!(facts.interpreter.unwrap().contains("ld-linux"));
    }

    #[test]
    fn a_non_elf_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("script.sh");
        std::fs::write(&p, "#!/bin/sh\necho hi\n").unwrap();
        let e = inspect(&p).unwrap_err().to_string();
        assert!(e.contains("script.sh") && e.contains("not an ELF"), "{e}");
    }

    #[test]
    fn a_cross_compiled_aarch64_binary_reports_its_machine_and_glibc() {
        let gcc = Path::new("/usr/bin/aarch64-linux-gnu-gcc");
        if !gcc.exists() {
            eprintln!(
                "skipped: {} is not installed (cargo xtask setup)",
                gcc.display()
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("hello.c");
        // `fopen64`/`printf` pull versioned glibc symbols.
        std::fs::write(
            &src,
            "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }\n",
        )
        .unwrap();
        let exe = dir.path().join("hello");
        let out = std::process::Command::new(gcc)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let facts = inspect(&exe).unwrap();
        assert_eq!(facts.machine, "aarch64");
        assert!(facts.max_glibc.is_some(), "{facts:?}");
        assert_eq!(
            facts.interpreter.as_deref(),
            Some("/lib/ld-linux-aarch64.so.1")
        );
    }
}
