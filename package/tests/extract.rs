//! Unpacking: a faithful round trip, and one test per rule against hostile archives. Every
//! refusal must name the member and leave nothing outside the destination.

use crate::common;

use std::path::{Path, PathBuf};

use common::RawTar;
use tar::EntryType;
use trident_package::{
    ArchiveEntry, Error, Limits, extract, extract_from_reader, extract_staged, write_archive,
};

/// A test folder holding `pkg.tar.zst` and the destination `dest`.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn pkg(&self) -> PathBuf {
        self.root().join("pkg.tar.zst")
    }
    fn dest(&self) -> PathBuf {
        self.root().join("dest")
    }

    /// Extracts `tar`, expects a refusal naming `entry` and saying `says`, and checks that the
    /// only things next to the destination are the archive and the destination.
    fn refused(&self, tar: &RawTar, limits: &Limits, entry: &str, says: &str) -> String {
        tar.write(&self.pkg());
        let e = extract(&self.pkg(), &self.dest(), limits).unwrap_err();
        let text = e.to_string();
        assert!(e.is_input_error(), "{text}");
        assert!(
            text.contains(&format!("`{entry}`")),
            "names {entry}: {text}"
        );
        assert!(text.contains(says), "says {says}: {text}");
        let expected: std::collections::BTreeSet<String> =
            ["dest".to_string(), "pkg.tar.zst".to_string()].into();
        assert_eq!(common::names(self.root()), expected, "written outside dest");
        // The staged form leaves nothing at all.
        std::fs::remove_dir_all(self.dest()).unwrap();
        let staged_text = extract_staged(&self.pkg(), &self.dest(), limits)
            .unwrap_err()
            .to_string();
        assert_eq!(staged_text, text);
        assert_eq!(
            common::names(self.root()),
            ["pkg.tar.zst".to_string()].into(),
            "staging folder left behind"
        );
        text
    }
}

#[cfg(unix)]
#[test]
fn a_written_archive_unpacks_to_the_same_files_and_modes() {
    use std::os::unix::fs::PermissionsExt;
    let case = Case::new();
    let src = case.root().join("src");
    let mut entries = Vec::new();
    for (p, c) in [("a/b/c.txt", "c"), ("a/d.txt", "d"), ("top.json", "{}")] {
        std::fs::create_dir_all(src.join(p).parent().unwrap()).unwrap();
        std::fs::write(src.join(p), c).unwrap();
        entries.push(ArchiveEntry::file(p, src.join(p)));
    }
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/run"), vec![7u8; 100_000]).unwrap();
    entries.push(ArchiveEntry::executable("bin/run", src.join("bin/run")));
    write_archive(&entries, &case.pkg()).unwrap();

    let done = extract(&case.pkg(), &case.dest(), &Limits::default()).unwrap();
    assert_eq!(done.files, 4);
    assert_eq!(done.dirs, 3, "a, a/b, bin");
    assert_eq!(done.bytes, 100_000 + 1 + 1 + 2);
    for e in &entries {
        let out = case.dest().join(&e.path);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&e.source).unwrap()
        );
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, if e.executable { 0o755 } else { 0o644 }, "{}", e.path);
    }
    let mode = std::fs::metadata(case.dest().join("a/b"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);
}

#[cfg(unix)]
#[test]
fn setuid_and_odd_modes_are_reduced_to_0644_or_0755() {
    use std::os::unix::fs::PermissionsExt;
    let case = Case::new();
    let mut t = RawTar::new();
    t.member(b"suid", EntryType::Regular, b"x", None, 0o4755)
        .member(b"sgid", EntryType::Regular, b"x", None, 0o2640)
        .member(b"world", EntryType::Regular, b"x", None, 0o666);
    t.write(&case.pkg());
    extract(&case.pkg(), &case.dest(), &Limits::default()).unwrap();
    let mode = |n: &str| {
        std::fs::metadata(case.dest().join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        (mode("suid"), mode("sgid"), mode("world")),
        (0o755, 0o644, 0o644)
    );
}

#[test]
fn absolute_names_are_refused() {
    let case = Case::new();
    let target = case.root().join("abs-evil");
    let name = target.display().to_string();
    let mut t = RawTar::new();
    t.file("ok.txt", b"fine").file(&name, b"evil");
    case.refused(&t, &Limits::default(), &name, "absolute");
    assert!(!target.exists());
}

#[test]
fn parent_components_are_refused() {
    for name in ["../x", "a/../../x", "a/../b"] {
        let case = Case::new();
        let mut t = RawTar::new();
        t.dir("a/").file(name, b"evil");
        case.refused(&t, &Limits::default(), name, "leaves the package");
        assert!(!case.root().join("x").exists());
    }
}

#[test]
fn dot_and_empty_parts_and_non_utf8_names_are_refused() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.file("./x", b"x");
    case.refused(&t, &Limits::default(), "./x", "`.` component");
    // Second spellings of `a/b` (Path::components would drop these parts silently).
    for name in ["a/./b", "a//b", "a/b/"] {
        let case = Case::new();
        let mut t = RawTar::new();
        t.file("a/c", b"c").file(name, b"x");
        case.refused(&t, &Limits::default(), name, "empty or `.` part");
    }
    // A link placed with a `.` part would otherwise count one folder too many: `x/./l ->
    // ../..` is the folder above the package.
    let case = Case::new();
    let mut t = RawTar::new();
    t.dir("x/").symlink("x/./l", "../..");
    case.refused(&t, &Limits::default(), "x/./l", "empty or `.` part");

    let case = Case::new();
    let mut t = RawTar::new();
    t.member(b"bad\xff.txt", EntryType::Regular, b"x", None, 0o644);
    case.refused(&t, &Limits::default(), "bad\u{fffd}.txt", "not UTF-8");
}

#[test]
fn symlinks_to_absolute_paths_are_refused() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.symlink("passwd", "/etc/passwd");
    case.refused(
        &t,
        &Limits::default(),
        "passwd",
        "absolute path `/etc/passwd`",
    );
}

#[test]
fn symlinks_leading_outside_are_refused() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.dir("a/").symlink("a/l", "../../x");
    case.refused(&t, &Limits::default(), "a/l", "leads outside the package");
}

#[test]
fn symlinks_escaping_through_other_links_are_refused() {
    // `here -> .` is harmless alone, and `up -> here/..` looks like the root lexically, but
    // through `here` it is the folder above the package.
    let case = Case::new();
    let mut t = RawTar::new();
    t.symlink("here", ".").symlink("up", "here/..");
    case.refused(&t, &Limits::default(), "up", "through other links");
}

#[test]
fn members_are_never_written_through_a_link() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.symlink("here", ".").file("here/x", b"through the link");
    case.refused(&t, &Limits::default(), "here/x", "is a symbolic link");
}

#[cfg(unix)]
#[test]
fn symlinks_that_stay_inside_are_created() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.file("models/balanced.onnx", b"m")
        .symlink("models/latest.onnx", "balanced.onnx")
        .symlink("top", "models/../models/balanced.onnx");
    t.write(&case.pkg());
    let done = extract(&case.pkg(), &case.dest(), &Limits::default()).unwrap();
    assert_eq!(done.symlinks, 2);
    assert_eq!(
        std::fs::read_link(case.dest().join("models/latest.onnx")).unwrap(),
        Path::new("balanced.onnx")
    );
    assert_eq!(std::fs::read(case.dest().join("top")).unwrap(), b"m");
}

#[test]
fn hard_links_are_refused() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.file("a", b"x")
        .member(b"b", EntryType::Link, b"", Some(b"a"), 0o644);
    case.refused(&t, &Limits::default(), "b", "hard links");
}

#[test]
fn devices_and_fifos_are_refused() {
    for (kind, says) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
        (EntryType::Continuous, "unknown member type"),
        (EntryType::XHeader, "pax extended header"),
    ] {
        let case = Case::new();
        let mut t = RawTar::new();
        t.member(b"dev", kind, b"", None, 0o644).file("after", b"x");
        case.refused(&t, &Limits::default(), "dev", says);
    }
}

#[test]
fn duplicate_members_are_refused() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.file("a.txt", b"one").file("a.txt", b"two");
    case.refused(&t, &Limits::default(), "a.txt", "appears twice");
    // A file where an earlier member made a folder.
    let case = Case::new();
    let mut t = RawTar::new();
    t.file("a/b", b"x").file("a", b"y");
    case.refused(&t, &Limits::default(), "a", "collides");
}

#[test]
fn an_oversize_member_is_refused() {
    let case = Case::new();
    let limits = Limits {
        max_entry_bytes: 10,
        ..Limits::default()
    };
    let mut t = RawTar::new();
    t.file("small", b"0123456789").file("big", b"0123456789A");
    case.refused(&t, &limits, "big", "max_entry_bytes");
}

#[test]
fn archives_over_the_total_are_refused() {
    let case = Case::new();
    let limits = Limits {
        max_total_bytes: 12,
        ..Limits::default()
    };
    let mut t = RawTar::new();
    t.file("a", b"01234567").file("b", b"01234567");
    case.refused(&t, &limits, "b", "max_total_bytes");
}

#[test]
fn too_many_members_are_refused() {
    let case = Case::new();
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let mut t = RawTar::new();
    t.file("a", b"").file("b", b"").file("c", b"");
    case.refused(&t, &limits, "c", "max_entries");
}

#[test]
fn truncated_and_corrupt_archives_are_refused() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.file("a", &vec![1u8; 4000]).file("b", &[2u8; 3000]);
    let whole = t.zst();
    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("last byte gone", whole[..whole.len() - 1].to_vec()),
        ("not zstd", b"PK\x03\x04 a zip file".to_vec()),
        (
            "trailing garbage",
            [whole.clone(), b"garbage".to_vec()].concat(),
        ),
    ] {
        std::fs::write(case.pkg(), &bytes).unwrap();
        let e = extract_staged(&case.pkg(), &case.dest(), &Limits::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, Error::Archive { .. }) && text.contains("pkg.tar.zst"),
            "{what}: {text}"
        );
        assert_eq!(
            common::names(case.root()),
            ["pkg.tar.zst".to_string()].into(),
            "{what}"
        );
    }
    // A tar without zstd around it is not a package either.
    std::fs::write(case.pkg(), t.tar()).unwrap();
    assert!(extract_staged(&case.pkg(), &case.dest(), &Limits::default()).is_err());
}

#[test]
fn a_flipped_byte_in_the_compressed_data_fails_the_checksum() {
    let case = Case::new();
    let mut t = RawTar::new();
    t.file(
        "a",
        &(0..60_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let mut bytes = t.zst();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(case.pkg(), &bytes).unwrap();
    let e = extract(&case.pkg(), &case.dest(), &Limits::default()).unwrap_err();
    assert!(matches!(e, Error::Archive { .. }), "{e}");
}

#[test]
fn the_destination_must_be_new_or_empty() {
    let case = Case::new();
    RawTar::new().file("a", b"x").write(&case.pkg());
    std::fs::create_dir(case.dest()).unwrap();
    std::fs::write(case.dest().join("old"), b"old").unwrap();
    let e = extract(&case.pkg(), &case.dest(), &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("empty folder"), "{e}");
    let e = extract_staged(&case.pkg(), &case.dest(), &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[test]
fn staged_extraction_moves_into_place_only_on_commit() {
    let case = Case::new();
    RawTar::new().file("a/b.txt", b"x").write(&case.pkg());
    {
        let staged = extract_staged(&case.pkg(), &case.dest(), &Limits::default()).unwrap();
        assert!(staged.path().join("a/b.txt").exists());
        assert!(!case.dest().exists());
        assert_eq!(staged.extracted().files, 1);
    }
    // Dropped: nothing left.
    assert_eq!(
        common::names(case.root()),
        ["pkg.tar.zst".to_string()].into()
    );

    let staged = extract_staged(&case.pkg(), &case.dest(), &Limits::default()).unwrap();
    assert_eq!(staged.commit().unwrap(), case.dest());
    assert_eq!(std::fs::read(case.dest().join("a/b.txt")).unwrap(), b"x");
    assert_eq!(
        common::names(case.root()),
        ["dest".to_string(), "pkg.tar.zst".to_string()].into()
    );

    // A destination that appears between staging and commit is not replaced.
    let other = case.root().join("other");
    let staged = extract_staged(&case.pkg(), &other, &Limits::default()).unwrap();
    std::fs::create_dir(&other).unwrap();
    let e = staged.commit().unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert!(common::names(&other).is_empty());
    assert_eq!(
        common::names(case.root()).len(),
        3,
        "no staging folder left"
    );
}

#[test]
fn arbitrary_bytes_from_a_reader_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // A fuzz target's view: random-ish bytes, a zstd frame of random bytes, an empty stream.
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for bytes in [
        noise.clone(),
        zstd::encode_all(&noise[..], 1).unwrap(),
        Vec::new(),
    ] {
        let dest = tempfile::tempdir_in(dir.path()).unwrap();
        let r = extract_from_reader(&bytes[..], dest.path(), &Limits::default(), "fuzz input");
        if let Err(e) = r {
            assert!(e.to_string().starts_with("fuzz input"), "{e}");
        }
    }
}

#[test]
fn data_hidden_in_non_file_members_counts_against_the_limit() {
    let case = Case::new();
    let limits = Limits {
        max_entries: 1,
        max_entry_bytes: 1,
        max_total_bytes: 0,
    };
    // A folder member carrying 200 kB that a tar reader skips over.
    let mut t = RawTar::new();
    t.member(
        b"d/",
        EntryType::Directory,
        &vec![0x55u8; 200_000],
        None,
        0o755,
    );
    t.write(&case.pkg());
    let e = extract_staged(&case.pkg(), &case.dest(), &limits).unwrap_err();
    assert!(e.to_string().contains("unpacks to more than"), "{e}");
    assert_eq!(
        common::names(case.root()),
        ["pkg.tar.zst".to_string()].into()
    );
}

#[test]
fn a_reader_unpacks_into_a_destination_it_creates() {
    // The fuzz target's contract: `dest` does not exist beforehand.
    let case = Case::new();
    let mut t = RawTar::new();
    t.file("a/b.txt", b"hello");
    let done = extract_from_reader(&t.zst()[..], &case.dest(), &Limits::default(), "mem").unwrap();
    assert_eq!(done.files, 1);
    assert_eq!(
        std::fs::read(case.dest().join("a/b.txt")).unwrap(),
        b"hello"
    );
    // A file in the way is refused by name.
    let file = case.root().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = extract_from_reader(&t.zst()[..], &file, &Limits::default(), "mem").unwrap_err();
    assert!(e.to_string().contains("must be an empty folder"), "{e}");
}

#[test]
fn the_uncompressed_entry_point_applies_the_same_rules() {
    let case = Case::new();
    let mut good = RawTar::new();
    good.dir("models").file("models/a.onnx", b"onnx");
    let done = trident_package::extract_tar_from_reader(
        good.tar().as_slice(),
        &case.dest(),
        &Limits::default(),
        "good.tar",
    )
    .unwrap();
    assert_eq!(done.files, 1);
    assert_eq!(
        std::fs::read(case.dest().join("models/a.onnx")).unwrap(),
        b"onnx"
    );

    let mut bad = RawTar::new();
    bad.file("../escape", b"x");
    let dest = case.root().join("bad");
    let e = trident_package::extract_tar_from_reader(
        bad.tar().as_slice(),
        &dest,
        &Limits::default(),
        "bad.tar",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`../escape`"), "{e}");
    assert!(!case.root().join("escape").exists());
}
