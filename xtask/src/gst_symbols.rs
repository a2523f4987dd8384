//! The Nano's GStreamer is 1.14.5 and its GLib 2.56.4 (Ubuntu 18.04); the sysroot the binary links
//! against may be newer (Debian's stand-in is). A function newer than the Nano's would link here,
//! pass the qemu tests (which load the sysroot's libraries) and abort the binary on the unit at
//! start, `verify` included. So every undefined GStreamer/GLib/GObject symbol of the binary is
//! looked up in the Debian `symbols` files of the sysroot's packages (the version that introduced
//! it) and checked against the Nano's versions.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The Nano's versions (JetPack 4.6.x, Ubuntu 18.04).
pub const NANO_GSTREAMER: &str = "1.14.5";
pub const NANO_GLIB: &str = "2.56.4";

/// The libraries checked, each with the Nano's version of its package.
const LIBRARIES: &[(&str, &str)] = &[
    ("libgstreamer-1.0.so.0", NANO_GSTREAMER),
    ("libgstbase-1.0.so.0", NANO_GSTREAMER),
    ("libgstapp-1.0.so.0", NANO_GSTREAMER),
    ("libgstvideo-1.0.so.0", NANO_GSTREAMER),
    ("libglib-2.0.so.0", NANO_GLIB),
    ("libgobject-2.0.so.0", NANO_GLIB),
    ("libgio-2.0.so.0", NANO_GLIB),
];

/// `symbol → (library, minimum version)` from Debian `symbols` files' text: a line naming a
/// library (`libglib-2.0.so.0 libglib2.0-0 #MINVER#`) starts its section; ` name@Base 2.58.0`
/// lines follow.
pub fn parse_symbols(text: &str, into: &mut BTreeMap<String, (String, String)>) {
    let mut library: Option<String> = None;
    for line in text.lines() {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with('|')
            || line.starts_with('*')
        {
            continue;
        }
        if !line.starts_with(' ') {
            library = line.split_whitespace().next().map(str::to_string);
            continue;
        }
        let Some(lib) = &library else { continue };
        let mut parts = line.split_whitespace();
        let (Some(sym), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        // `(c++|optional)"…"` patterns are not C symbols; skip them.
        if sym.starts_with('(') {
            continue;
        }
        let name = sym.split('@').next().unwrap_or(sym);
        into.insert(name.to_string(), (lib.clone(), version.to_string()));
    }
}

/// Numeric components of a Debian version's upstream part (`1.16.0~rc1` → [1, 16, 0]).
fn numbers(version: &str) -> Vec<u64> {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let v = v.split(['~', '-', '+']).next().unwrap_or(v);
    v.split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect()
}

fn newer(version: &str, than: &str) -> bool {
    let (a, b) = (numbers(version), numbers(than));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    false
}

/// The binary's undefined symbols that the Nano's libraries do not have yet: `(symbol, library,
/// version that introduced it, the Nano's)`.
pub fn too_new(
    undefined: &[String],
    known: &BTreeMap<String, (String, String)>,
) -> Vec<(String, String, String, &'static str)> {
    let mut found = Vec::new();
    for sym in undefined {
        let name = sym.split('@').next().unwrap_or(sym);
        let Some((lib, version)) = known.get(name) else {
            continue;
        };
        let Some((_, nano)) = LIBRARIES.iter().find(|(l, _)| l == lib) else {
            continue;
        };
        if newer(version, nano) {
            found.push((name.to_string(), lib.clone(), version.clone(), *nano));
        }
    }
    found
}

/// The symbols files of the sysroot's packages (as dpkg installs them on a real root file system,
/// and as the stand-in sysroot's build extracts them).
fn symbols_files(sysroot: &Path) -> Vec<std::path::PathBuf> {
    let info = sysroot.join("var/lib/dpkg/info");
    let mut files: Vec<_> = std::fs::read_dir(&info)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".symbols")
                && (name.starts_with("libgstreamer")
                    || name.starts_with("libglib2.0-0")
                    || name.starts_with("libgstreamer-plugins-base1.0-0"))
        })
        .collect();
    files.sort();
    files
}

/// Checks `binary` against the sysroot's symbols files; fails naming each symbol that is too new.
/// Returns how many GStreamer/GLib symbols were checked.
pub fn check(binary: &Path, sysroot: &Path) -> Result<usize> {
    let files = symbols_files(sysroot);
    if files.is_empty() {
        bail!(
            "{}: no libgstreamer*/libglib2.0-0 *.symbols files; cannot check the binary's GStreamer \
             and GLib symbols against the Nano's {NANO_GSTREAMER} / {NANO_GLIB}",
            sysroot.join("var/lib/dpkg/info").display()
        );
    }
    let mut known = BTreeMap::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        parse_symbols(&text, &mut known);
    }
    let nm = ["aarch64-linux-gnu-nm", "nm"]
        .into_iter()
        .find(|n| crate::setup::output(std::process::Command::new(n).arg("--version")).is_some())
        .context("no nm (binutils) to list the binary's symbols")?;
    let listed = crate::setup::output(
        std::process::Command::new(nm)
            .args(["-D", "--undefined-only", "--format=posix"])
            .arg(binary),
    )
    .with_context(|| format!("{nm} -D {}", binary.display()))?;
    let undefined: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let checked = undefined
        .iter()
        .filter(|s| known.contains_key(s.split('@').next().unwrap_or(s)))
        .count();
    let bad = too_new(&undefined, &known);
    if !bad.is_empty() {
        let list: Vec<String> = bad
            .iter()
            .map(|(s, lib, v, nano)| format!("{s} ({lib} since {v}; the Nano has {nano})"))
            .collect();
        bail!(
            "{} uses {} function(s) newer than the Nano's GStreamer {NANO_GSTREAMER} / GLib {NANO_GLIB}; \
             it would abort at start on the unit:\n  {}",
            binary.display(),
            bad.len(),
            list.join("\n  ")
        );
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYMBOLS: &str = "\
libgstreamer-1.0.so.0 libgstreamer1.0-0 #MINVER#
* Build-Depends-Package: libgstreamer1.0-dev
 gst_init@Base 1.0.0
 gst_element_factory_find@Base 1.0.0
 gst_buffer_new_memdup@Base 1.20.0
 gst_pipeline_get_latency@Base 1.6.0
libglib-2.0.so.0 libglib2.0-0 #MINVER#
 g_main_loop_new@Base 2.12.0
 g_strv_builder_new@Base 2.68.0
 g_rc_box_new@Base 2.57.1
 (c++|optional)\"operator new\"@Base 2.0
";

    #[test]
    fn symbols_newer_than_the_nano_are_named_with_their_versions() {
        let mut known = BTreeMap::new();
        parse_symbols(SYMBOLS, &mut known);
        assert_eq!(
            known.get("gst_init"),
            Some(&("libgstreamer-1.0.so.0".to_string(), "1.0.0".to_string()))
        );
        assert!(!known.contains_key("operator"));
        let undefined: Vec<String> = [
            "gst_init",
            "gst_element_factory_find",
            "gst_pipeline_get_latency",
            "g_main_loop_new",
            "memcpy@GLIBC_2.17",
            "gst_buffer_new_memdup",
            "g_rc_box_new",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let bad = too_new(&undefined, &known);
        let names: Vec<&str> = bad.iter().map(|b| b.0.as_str()).collect();
        // 1.20 > 1.14.5 and 2.57.1 > 2.56.4; everything else is old enough or not GStreamer's.
        assert_eq!(names, ["gst_buffer_new_memdup", "g_rc_box_new"]);
        assert_eq!(bad[0].3, NANO_GSTREAMER);
        assert_eq!(bad[1].3, NANO_GLIB);
    }

    #[test]
    fn debian_versions_compare_by_their_upstream_numbers() {
        assert!(newer("1.16.0~rc1", "1.14.5"));
        assert!(!newer("1.14.5", "1.14.5"));
        assert!(!newer("1.14.0", "1.14.5"));
        assert!(newer("2.57.1", "2.56.4"));
        assert!(!newer("2.56.0-1ubuntu1", "2.56.4"));
        assert!(newer("1:2.60", "2.56.4"));
    }
}
