//! The engine cache: hits only for the exact key and intact bytes; every other case is a miss that
//! `ensure_engine` rebuilds.
#![cfg(unix)]

use crate::common;

use std::path::Path;

use common::{FakeTrtexec, listing, nano};
use trident_tensorrt::{
    BuildRequest, EngineCache, EngineKey, Error, GpuFacts, Precision, Sidecar, ensure_engine,
    sha256_file, sha256_hex,
};

fn key() -> EngineKey {
    EngineKey {
        onnx_sha256: sha256_hex(b"model"),
        tensorrt_version: "8.2.1".into(),
        gpu: nano(),
        precision: Precision::Fp16,
        input_shape: [1, 3, 640, 640],
    }
}

/// A cache with one entry for `key()` holding `bytes`.
fn cache_with_entry(bytes: &[u8]) -> (tempfile::TempDir, EngineCache) {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("built.engine");
    std::fs::write(&built, bytes).unwrap();
    let cache = EngineCache::new(dir.path().join("cache"));
    let path = cache.insert(&key(), &built, "trtexec").unwrap();
    assert_eq!(path, cache.engine_path(&key()));
    (dir, cache)
}

#[test]
fn hit_after_insert_with_sidecar_and_no_temporaries() {
    let (_dir, cache) = cache_with_entry(b"ENGINE");
    let hit = cache.lookup(&key()).unwrap().expect("hit");
    assert_eq!(std::fs::read(&hit).unwrap(), b"ENGINE");
    let id = key().id();
    assert_eq!(
        listing(cache.root()),
        vec![format!("{id}.engine"), format!("{id}.json")]
    );
    let sidecar: Sidecar =
        serde_json::from_slice(&std::fs::read(cache.sidecar_path(&key())).unwrap()).unwrap();
    assert_eq!(sidecar.key, key());
    assert_eq!(sidecar.engine_sha256, sha256_hex(b"ENGINE"));
    assert_eq!(sidecar.builder, "trtexec");
    assert!(sidecar.built_at_unix_s > 1_600_000_000);
}

#[test]
fn any_key_field_change_misses() {
    let (_dir, cache) = cache_with_entry(b"ENGINE");
    let gpu = |name: &str, cc| GpuFacts {
        name: name.into(),
        compute_capability: cc,
    };
    let variants = [
        EngineKey {
            onnx_sha256: sha256_hex(b"other model"),
            ..key()
        },
        EngineKey {
            tensorrt_version: "8.2.3".into(),
            ..key()
        },
        EngineKey {
            gpu: gpu("NVIDIA Tegra X2", (5, 3)),
            ..key()
        },
        EngineKey {
            gpu: gpu("NVIDIA Tegra X1", (6, 2)),
            ..key()
        },
        EngineKey {
            precision: Precision::Fp32,
            ..key()
        },
        EngineKey {
            input_shape: [1, 3, 320, 320],
            ..key()
        },
    ];
    for k in variants {
        assert_eq!(cache.lookup(&k).unwrap(), None, "{k:?}");
    }
    assert!(cache.lookup(&key()).unwrap().is_some());
}

#[test]
fn corrupt_engine_bytes_miss() {
    let (_dir, cache) = cache_with_entry(b"ENGINE");
    std::fs::write(cache.engine_path(&key()), b"ENGINF").unwrap();
    assert_eq!(cache.lookup(&key()).unwrap(), None);
    std::fs::remove_file(cache.engine_path(&key())).unwrap();
    assert_eq!(
        cache.lookup(&key()).unwrap(),
        None,
        "sidecar without engine"
    );
}

#[test]
fn foreign_or_broken_sidecar_misses() {
    let (_dir, cache) = cache_with_entry(b"ENGINE");
    // An entry for another key copied over this id's files: the engine matches its own sidecar,
    // but the sidecar names another model.
    let mut sidecar: Sidecar =
        serde_json::from_slice(&std::fs::read(cache.sidecar_path(&key())).unwrap()).unwrap();
    sidecar.key.onnx_sha256 = sha256_hex(b"someone else's model");
    std::fs::write(
        cache.sidecar_path(&key()),
        serde_json::to_vec(&sidecar).unwrap(),
    )
    .unwrap();
    assert_eq!(cache.lookup(&key()).unwrap(), None);

    std::fs::write(cache.sidecar_path(&key()), b"{ not json").unwrap();
    assert_eq!(cache.lookup(&key()).unwrap(), None);

    std::fs::remove_file(cache.sidecar_path(&key())).unwrap();
    assert_eq!(
        cache.lookup(&key()).unwrap(),
        None,
        "engine without sidecar"
    );
}

#[test]
fn empty_cache_and_empty_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = EngineCache::new(dir.path().join("never-created"));
    assert_eq!(cache.lookup(&key()).unwrap(), None);
    std::fs::write(dir.path().join("empty.engine"), b"").unwrap();
    let e = cache
        .insert(&key(), &dir.path().join("empty.engine"), "trtexec")
        .unwrap_err();
    assert!(e.to_string().contains("empty.engine"), "{e}");
    assert!(
        listing(cache.root()).is_empty(),
        "no temporary left: {:?}",
        listing(cache.root())
    );
}

fn onnx(dir: &Path, name: &str, bytes: &[u8]) -> (BuildRequest, String) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let sha = sha256_file(&p).unwrap();
    (BuildRequest::new(p, Precision::Fp16, [1, 3, 640, 640]), sha)
}

#[test]
fn ensure_engine_builds_once_then_hits_and_rebuilds_when_needed() {
    let fake = FakeTrtexec::new(8201);
    let t = fake.trtexec();
    let work = tempfile::tempdir().unwrap();
    let cache = EngineCache::new(work.path().join("engines"));
    let (req, sha) = onnx(work.path(), "yolo.onnx", b"model v1");

    let (engine, built) = ensure_engine(&cache, &t, &req, &sha, &nano()).unwrap();
    assert!(built);
    assert_eq!(std::fs::read(&engine).unwrap(), b"engine(model v1)");
    assert_eq!(fake.builds(), 1);

    let (again, built) = ensure_engine(&cache, &t, &req, &sha, &nano()).unwrap();
    assert!(!built);
    assert_eq!(again, engine);
    assert_eq!(fake.builds(), 1, "a hit runs no build");

    // Same content under another name: same engine (keyed by content, not name).
    let (renamed, sha2) = onnx(work.path(), "copy-of-yolo.onnx", b"model v1");
    assert_eq!(
        ensure_engine(&cache, &t, &renamed, &sha2, &nano()).unwrap(),
        (engine.clone(), false)
    );

    // Corrupt engine: rebuilt, not loaded.
    std::fs::write(&engine, b"garbage").unwrap();
    let (rebuilt, built) = ensure_engine(&cache, &t, &req, &sha, &nano()).unwrap();
    assert!(built);
    assert_eq!(std::fs::read(&rebuilt).unwrap(), b"engine(model v1)");
    assert_eq!(fake.builds(), 2);

    // Another precision or GPU is another engine.
    let fp32 = BuildRequest {
        precision: Precision::Fp32,
        ..req.clone()
    };
    assert!(ensure_engine(&cache, &t, &fp32, &sha, &nano()).unwrap().1);
    let xavier = GpuFacts {
        name: "NVIDIA Xavier".into(),
        compute_capability: (7, 2),
    };
    assert!(ensure_engine(&cache, &t, &req, &sha, &xavier).unwrap().1);
    assert_eq!(fake.builds(), 4);

    // New content under the old name: a miss, never the old engine.
    let (changed, sha3) = onnx(work.path(), "yolo.onnx", b"model v2");
    let (e3, built) = ensure_engine(&cache, &t, &changed, &sha3, &nano()).unwrap();
    assert!(built);
    assert_ne!(e3, engine);
    assert_eq!(std::fs::read(&e3).unwrap(), b"engine(model v2)");

    let leftovers: Vec<String> = listing(cache.root())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporaries left behind: {leftovers:?}"
    );
}

#[test]
fn ensure_engine_refuses_an_onnx_that_changed() {
    let fake = FakeTrtexec::new(8201);
    let work = tempfile::tempdir().unwrap();
    let cache = EngineCache::new(work.path().join("engines"));
    let (req, _) = onnx(work.path(), "yolo.onnx", b"model v2");
    let e = ensure_engine(
        &cache,
        &fake.trtexec(),
        &req,
        &sha256_hex(b"model v1"),
        &nano(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::OnnxChanged { .. }), "{e:?}");
    assert!(e.is_input_error());
    assert!(e.to_string().contains("yolo.onnx"), "{e}");
    assert_eq!(fake.builds(), 0);
}

#[test]
fn ensure_engine_failure_caches_nothing() {
    let fake = FakeTrtexec::new(8201);
    let work = tempfile::tempdir().unwrap();
    let cache = EngineCache::new(work.path().join("engines"));
    let (req, sha) = onnx(work.path(), "oom.onnx", b"big model");
    let e = ensure_engine(&cache, &fake.trtexec(), &req, &sha, &nano()).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
    assert!(
        listing(cache.root()).is_empty(),
        "{:?}",
        listing(cache.root())
    );
}
