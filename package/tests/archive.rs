//! The package archive is deterministic and lists its members the documented way.

use crate::common;

use std::io::Read;
use std::path::Path;

use trident_package::archive::{DEFAULT_MTIME, archive_mtime};
use trident_package::{ArchiveEntry, Limits, extract, write_archive};

fn sources(dir: &Path) -> Vec<ArchiveEntry> {
    let files: &[(&str, &[u8])] = &[
        ("models/balanced.onnx", b"onnx"),
        ("bin/trident-edge", b"\x7fELF not really"),
        ("manifest.json", b"{}"),
        ("models/a-b/x.yaml", b"x: 1"),
        ("profiles/nano.yaml", b"fps: 6"),
    ];
    files
        .iter()
        .map(|(p, c)| {
            let src = dir.join(p);
            std::fs::create_dir_all(src.parent().unwrap()).unwrap();
            std::fs::write(&src, c).unwrap();
            if p.starts_with("bin/") {
                ArchiveEntry::executable(*p, src)
            } else {
                ArchiveEntry::file(*p, src)
            }
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn same_inputs_give_identical_bytes_whatever_the_files_metadata() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let entries = sources(&dir.path().join("src"));
    let one = dir.path().join("one.tar.zst");
    let sha_one = write_archive(&entries, &one).unwrap();

    // Rewrite every source with the same bytes, an old mtime and other permission bits, and list
    // them in reverse order.
    for e in &entries {
        let content = std::fs::read(&e.source).unwrap();
        std::fs::remove_file(&e.source).unwrap();
        std::fs::write(&e.source, &content).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(&e.source)
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400))
            .unwrap();
        std::fs::set_permissions(&e.source, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let reversed: Vec<_> = entries.iter().rev().cloned().collect();
    let two = dir.path().join("sub/two.tar.zst");
    let sha_two = write_archive(&reversed, &two).unwrap();

    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    assert_eq!(sha_one, sha_two);
    assert_eq!(sha_one, trident_core::digest::sha256_file(&one).unwrap());
    // No temporary files beside the outputs.
    assert_eq!(common::names(&dir.path().join("sub")).len(), 1);
}

#[test]
fn members_are_sorted_with_their_folders_and_carry_no_host_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.tar.zst");
    write_archive(&sources(&dir.path().join("src")), &out).unwrap();
    let tar = zstd::decode_all(std::fs::File::open(&out).unwrap()).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut listing = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert_eq!(h.mtime().unwrap(), archive_mtime());
        assert!(h.as_gnu().is_some(), "GNU header");
        listing.push((
            String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
            h.mode().unwrap(),
        ));
    }
    let expected = [
        ("bin/", 0o755),
        ("bin/trident-edge", 0o755),
        ("manifest.json", 0o644),
        ("models/", 0o755),
        ("models/a-b/", 0o755),
        ("models/a-b/x.yaml", 0o644),
        ("models/balanced.onnx", 0o644),
        ("profiles/", 0o755),
        ("profiles/nano.yaml", 0o644),
    ];
    let expected: Vec<(String, u32)> = expected.iter().map(|(p, m)| (p.to_string(), *m)).collect();
    assert_eq!(listing, expected);
    if std::env::var_os("SOURCE_DATE_EPOCH").is_none() {
        assert_eq!(archive_mtime(), DEFAULT_MTIME);
    }
    // A zstd frame with a content checksum (frame header descriptor bit 2).
    assert_eq!(
        &std::fs::read(&out).unwrap()[..4],
        &[0x28, 0xb5, 0x2f, 0xfd]
    );
    assert_ne!(std::fs::read(&out).unwrap()[4] & 0b100, 0);
}

#[test]
fn long_names_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("models/{}/{}.onnx", "d".repeat(120), "m".repeat(90));
    let src = dir.path().join("m.onnx");
    std::fs::write(&src, b"long").unwrap();
    let out = dir.path().join("p.tar.zst");
    write_archive(&[ArchiveEntry::file(long.clone(), src)], &out).unwrap();
    let dest = dir.path().join("x");
    extract(&out, &dest, &Limits::default()).unwrap();
    assert_eq!(std::fs::read(dest.join(&long)).unwrap(), b"long");
}

#[test]
fn bad_member_lists_are_refused_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    std::fs::write(&src, b"x").unwrap();
    let out = dir.path().join("out/p.tar.zst");
    let cases: Vec<(Vec<ArchiveEntry>, &str)> = vec![
        (
            vec![ArchiveEntry::file("a", &src), ArchiveEntry::file("a", &src)],
            "listed twice",
        ),
        (vec![ArchiveEntry::file("../a", &src)], "leaves the package"),
        (vec![ArchiveEntry::file("/etc/a", &src)], "absolute"),
        (vec![ArchiveEntry::file("a/./b", &src)], "empty or `.` part"),
        (vec![ArchiveEntry::file("a//b", &src)], "empty or `.` part"),
        (vec![ArchiveEntry::file("a/", &src)], "names a folder"),
        (
            vec![
                ArchiveEntry::file("a", &src),
                ArchiveEntry::file("a/b", &src),
            ],
            "both a file and the folder",
        ),
        (
            vec![ArchiveEntry::file("missing", dir.path().join("nope"))],
            "nope",
        ),
        (
            vec![ArchiveEntry::file("dir", dir.path())],
            "not a regular file",
        ),
    ];
    for (entries, says) in cases {
        let e = write_archive(&entries, &out).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
        assert!(!out.exists());
        if out.parent().unwrap().exists() {
            assert!(
                common::names(out.parent().unwrap()).is_empty(),
                "temp file left"
            );
        }
    }
}

#[test]
fn the_archive_is_a_single_tar_stream_readable_by_the_tar_crate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.tar.zst");
    write_archive(&sources(&dir.path().join("src")), &out).unwrap();
    let mut decoder = zstd::stream::read::Decoder::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut tar = Vec::new();
    decoder.read_to_end(&mut tar).unwrap();
    assert_eq!(tar.len() % 512, 0);
    assert!(
        tar[tar.len() - 1024..].iter().all(|&b| b == 0),
        "end-of-archive marker"
    );
}
