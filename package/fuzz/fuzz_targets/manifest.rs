//! `manifest.json` from an untrusted package: parsing and validation must return an error, never
//! panic, whatever the bytes; what validates must round-trip and keep every path inside the
//! package.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trident_core::package::{Manifest, check_relative};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data, Path::new("manifest.json")) {
        for path in m.files.keys() {
            assert!(check_relative(path).is_ok(), "validated a path that leaves: {path}");
        }
        let again = serde_json::to_vec(&m).expect("a parsed manifest serialises");
        let back = Manifest::parse(&again, Path::new("manifest.json")).expect("round trip");
        assert_eq!(back, m);
    }
});
