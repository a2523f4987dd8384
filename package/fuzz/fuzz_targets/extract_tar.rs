//! The tar walker on untrusted, uncompressed bytes: the same rules as `extract` without the
//! zstd layer in the way, so the fuzzer reaches entry headers, names, links and sizes quickly.
//! It must return an error, never panic, and never write outside its folder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trident_package::extract::{Limits, extract_tar_from_reader};

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("temp dir");
    let dest = root.path().join("pkg");
    let limits = Limits {
        max_entries: 64,
        max_entry_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
    };
    let _ = extract_tar_from_reader(data, &dest, &limits, "fuzz.tar");
    for entry in std::fs::read_dir(root.path()).expect("read temp dir") {
        let name = entry.expect("entry").file_name();
        assert_eq!(name, "pkg", "the extractor wrote {name:?} outside its folder");
    }
});
