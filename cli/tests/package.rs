//! `trident export --package` and `trident package verify|keygen` through the binary: a signed,
//! reproducible package that stock `minisign -V` accepts; tampering, wrong keys and bad inputs
//! exit non-zero with a clear message and leave no package behind.
//!
//! The runtime in these packages is a tiny aarch64 program compiled with zig against glibc
//! 2.27 (what matters here is its architecture and glibc needs); the shipped cross-compiled
//! binary is tested under qemu in `package_aarch64.rs`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{s, stderr, stdout};

const KEY_ENV: &str = "TRIDENT_SIGN_KEY";
const PASSWORD_ENV: &str = "TRIDENT_SIGN_KEY_PASSWORD";

/// `trident` with the signing variables cleared (the test's own environment must not leak in).
fn trident_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trident"));
    c.args(args).env_remove(KEY_ENV).env_remove(PASSWORD_ENV);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run trident")
}

fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let o = trident_env(
        &["package", "keygen", "--out", s(dir), "--unencrypted"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    (dir.join("trident.key"), dir.join("trident.pub"))
}

/// `trident package build --config C --out O EXTRA…`.
fn build(config: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["package", "build", "--config", s(config), "--out", s(out)];
    args.extend(extra);
    trident_env(&args, env)
}

const PACKAGE: &str = "trident-1.2.3-jetson-nano-jp46.tar.zst";

/// Files in `dir` (none when it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_signed_package_is_reproducible_complete_and_verifies_with_stock_minisign() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = trident_e2e::aarch64_program(dir.path(), "2.27");
    let config = trident_e2e::release_inputs(dir.path(), &runtime, "aarch64");
    let (secret, public) = keygen(&dir.path().join("keys"));

    let (a, b) = (dir.path().join("dist-a"), dir.path().join("dist-b"));
    let o = build(&config, &a, &["--sign-key", s(&secret)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(PACKAGE) && text.contains("signature:"),
        "{text}"
    );
    // The key may come from the environment instead of a file, as in release CI.
    let key_text = std::fs::read_to_string(&secret).unwrap();
    let o = build(&config, &b, &[], &[(KEY_ENV, &key_text)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains(key_text.lines().nth(1).unwrap())
            && !stderr(&o).contains(key_text.lines().nth(1).unwrap()),
        "the secret key was printed"
    );
    assert_eq!(
        listing(&a),
        [PACKAGE.to_string(), format!("{PACKAGE}.minisig")]
    );

    // Reproducible: the same inputs give the same bytes — also through the `export --package`
    // alias, which builds the same package.
    let (pa, pb) = (a.join(PACKAGE), b.join(PACKAGE));
    assert_eq!(
        std::fs::read(&pa).unwrap(),
        std::fs::read(&pb).unwrap(),
        "two builds of the same inputs differ"
    );
    let alias = dir.path().join("dist-alias");
    let o = trident_env(
        &[
            "export",
            "--package",
            "--config",
            s(&config),
            "--out",
            s(&alias),
            "--sign-key",
            s(&secret),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(alias.join(PACKAGE)).unwrap(),
        std::fs::read(&pa).unwrap()
    );

    // A stock minisign verifies the signature.
    let o = Command::new("minisign")
        .arg("-Vm")
        .arg(&pa)
        .arg("-p")
        .arg(&public)
        .output()
        .expect("run minisign (installed by `cargo xtask setup`)");
    assert!(o.status.success(), "minisign -V: {}", stderr(&o));

    // The host verifier: signature, every sha256, the manifest; unpack it and look inside.
    let unpacked = dir.path().join("unpacked");
    let o = trident_env(
        &[
            "package",
            "verify",
            s(&pa),
            "--pubkey",
            s(&public),
            "--extract",
            s(&unpacked),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("verified") && text.contains("signature: good"),
        "{text}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["schema"], "trident-package/1");
    assert_eq!(manifest["version"], "1.2.3");
    assert_eq!(manifest["target"]["max_glibc"], "2.27");
    assert_eq!(manifest["binary"]["file"], "bin/trident-edge");
    assert_eq!(
        manifest["binary"]["max_glibc"]
            .as_str()
            .map(|v| v <= "2.27"),
        Some(true)
    );
    let models: Vec<&str> = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["variant"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["high_recall", "balanced", "high_precision"]);
    let files = manifest["files"].as_object().unwrap();
    for f in [
        "bin/trident-edge",
        "calibration/calibration.yaml",
        "models/balanced.onnx",
        "models/balanced.card.json",
        "profiles/nano-10w.yaml",
        "profiles/nano-5w.yaml",
        "systemd/trident-edge.service",
        "shim/trident_trt.h",
        "shim/trident_trt.cpp",
        "shim/trident_trt_engine.cpp",
    ] {
        assert!(files.contains_key(f), "{f} not in the manifest");
        assert!(unpacked.join(f).is_file(), "{f} not unpacked");
    }
    // The shim's source in every package, keyed as the unit's build cache keys it; no prebuilt
    // library here (release_inputs names no prebuilt folder).
    let shim = &manifest["tensorrt_shim"];
    assert_eq!(shim["source"], "shim");
    assert_eq!(shim["source_sha256"].as_str().map(str::len), Some(64));
    assert!(shim["prebuilt"].is_null(), "{shim}");
    assert!(!files.contains_key("lib/libtrident_trt.so"));
    assert_eq!(
        std::fs::read(unpacked.join("bin/trident-edge")).unwrap(),
        std::fs::read(&runtime).unwrap()
    );

    // One flipped byte anywhere in the archive: the signature no longer holds.
    let mut bytes = std::fs::read(&pb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pb, &bytes).unwrap();
    let o = trident_env(&["package", "verify", s(&pb), "--pubkey", s(&public)], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).to_lowercase().contains("signature"),
        "{}",
        stderr(&o)
    );

    // Another key's signature is refused, naming both keys.
    let (_, other) = keygen(&dir.path().join("other-keys"));
    let o = trident_env(&["package", "verify", s(&pa), "--pubkey", s(&other)], &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("key"), "{}", stderr(&o));
}

#[test]
fn unsigned_packages_are_refused_unless_allowed_and_device_facts_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = trident_e2e::aarch64_program(dir.path(), "2.27");
    let config = trident_e2e::release_inputs(dir.path(), &runtime, "aarch64");
    let (_, public) = keygen(&dir.path().join("keys"));
    let out = dir.path().join("dist");
    let o = build(&config, &out, &["--unsigned"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing(&out), [PACKAGE]);
    let pkg = out.join(PACKAGE);

    let o = trident_env(&["package", "verify", s(&pkg), "--pubkey", s(&public)], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--allow-unsigned"), "{}", stderr(&o));
    let o = trident_env(&["package", "verify", s(&pkg), "--allow-unsigned"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("NOT checked"), "{}", stdout(&o));

    // A Nano's root file system: JetPack 4.6.1 (TensorRT 8.2.1) and 4.6 (8.0.1) both accept it
    // (only the TensorRT major binds), 4.5 refuses it and says what to flash.
    for (release, trt) in [
        (
            "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022",
            "8.2.1-1+cuda10.2",
        ),
        (
            "# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64, DATE: Mon Jul 26 19:20:30 UTC 2021",
            "8.0.1-1+cuda10.2",
        ),
    ] {
        let nano = dir.path().join(format!("nano-root-{trt}"));
        fake_root(&nano, release, trt);
        let o = trident_env(
            &[
                "package",
                "verify",
                s(&pkg),
                "--allow-unsigned",
                "--device-root",
                s(&nano),
            ],
            &[],
        );
        assert!(o.status.success(), "{trt}: {}", stderr(&o));
    }
    let old = dir.path().join("old-root");
    fake_root(
        &old,
        "# R32 (release), REVISION: 5.1, GCID: 27362550, BOARD: t210ref, EABI: aarch64, DATE: Wed Mar 10 22:24:17 UTC 2021",
        "7.1.3-1+cuda10.2",
    );
    let o = trident_env(
        &[
            "package",
            "verify",
            s(&pkg),
            "--allow-unsigned",
            "--device-root",
            s(&old),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("4.6") && e.contains("4.5"), "{e}");
    assert!(
        e.contains("flash JetPack 4.6 (L4T R32.6.1, TensorRT 8.0.1) or 4.6.1 and later"),
        "{e}"
    );
}

/// Adds `tensorrt_shim.prebuilt: <dir>` to a release config.
fn with_prebuilt(config: &Path, dir: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replace(
        "tensorrt_shim: {source: ",
        &format!("tensorrt_shim: {{prebuilt: {}, source: ", dir.display()),
    );
    assert!(text.contains("prebuilt"), "{text}");
    std::fs::write(config, text).unwrap();
}

fn shim_record(dir: &Path, tensorrt: &str) {
    std::fs::write(
        dir.join("shim.json"),
        format!(
            r#"{{"source_sha256": "{}", "tensorrt": "{tensorrt}", "compiler": "aarch64-linux-gnu-g++", "built_unix": 0}}"#,
            "0".repeat(64)
        ),
    )
    .unwrap();
}

#[test]
fn a_prebuilt_shim_is_packaged_only_for_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = trident_e2e::aarch64_program(dir.path(), "2.27");
    let config = trident_e2e::release_inputs(dir.path(), &runtime, "aarch64");
    let prebuilt = dir.path().join("tensorrt-shim");
    std::fs::create_dir_all(&prebuilt).unwrap();
    with_prebuilt(&config, &prebuilt);

    // An empty prebuilt folder (the sysroot had no TensorRT): source only.
    let out = dir.path().join("dist-source");
    let o = build(&config, &out, &["--unsigned"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("built on each unit"), "{}", stdout(&o));

    // An aarch64 library (packaging inspects, never loads it) with its record: packaged, hashed,
    // and named in the manifest with its TensorRT version.
    let lib = prebuilt.join("libtrident_trt.so");
    std::fs::copy(&runtime, &lib).unwrap();
    shim_record(&prebuilt, "8.2.1");
    let out = dir.path().join("dist-prebuilt");
    let o = build(&config, &out, &["--unsigned"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("lib/libtrident_trt.so prebuilt for TensorRT 8.2.1"),
        "{}",
        stdout(&o)
    );
    let unpacked = dir.path().join("unpacked");
    let o = trident_env(
        &[
            "package",
            "verify",
            s(&out.join(PACKAGE)),
            "--allow-unsigned",
            "--extract",
            s(&unpacked),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    let p = &manifest["tensorrt_shim"]["prebuilt"];
    assert_eq!(p["file"], "lib/libtrident_trt.so");
    assert_eq!(p["tensorrt"], "8.2.1");
    assert_eq!(manifest["files"]["lib/libtrident_trt.so"], p["sha256"]);
    assert_eq!(
        std::fs::read(unpacked.join("lib/libtrident_trt.so")).unwrap(),
        std::fs::read(&lib).unwrap()
    );

    // Built for TensorRT 10: refused, naming the record and both versions; nothing written.
    shim_record(&prebuilt, "10.3.0");
    let out = dir.path().join("dist-trt10");
    let o = build(&config, &out, &["--unsigned"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("shim.json") && stderr(&o).contains("10.3.0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(listing(&out), Vec::<String>::new());

    // A library of this machine (x86-64 here), not the Nano's: refused.
    shim_record(&prebuilt, "8.2.1");
    std::fs::copy(std::env::current_exe().unwrap(), &lib).unwrap();
    let o = build(&config, &dir.path().join("dist-host"), &["--unsigned"], &[]);
    if std::env::consts::ARCH != "aarch64" {
        assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
        assert!(
            stderr(&o).contains("the target needs aarch64"),
            "{}",
            stderr(&o)
        );
    }
}

/// A root file system as a Jetson has it: the L4T release file and dpkg's database.
fn fake_root(root: &Path, release: &str, tensorrt: &str) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/nv_tegra_release"), format!("{release}\n")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        format!(
            "Package: libc6\nStatus: install ok installed\nArchitecture: arm64\nVersion: 2.27-3ubuntu1.6\n\nPackage: libnvinfer8\nStatus: install ok installed\nArchitecture: arm64\nVersion: {tensorrt}\n\n"
        ),
    )
    .unwrap();
}

#[test]
fn bad_inputs_exit_non_zero_name_the_problem_and_leave_no_package() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = trident_e2e::aarch64_program(dir.path(), "2.27");
    let config = trident_e2e::release_inputs(dir.path(), &runtime, "aarch64");
    let (secret, _) = keygen(&dir.path().join("keys"));
    let key = ["--sign-key", s(&secret)];
    let text = std::fs::read_to_string(&config).unwrap();
    let variant = |name: &str, edit: &dyn Fn(&str) -> String| {
        let p = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, edit(&text)).unwrap();
        p
    };
    let check = |name: &str,
                 config: &Path,
                 extra: &[&str],
                 env: &[(&str, &str)],
                 code: i32,
                 words: &[&str]| {
        let out = dir.path().join(format!("dist-{name}"));
        let o = build(config, &out, extra, env);
        assert_eq!(o.status.code(), Some(code), "{name}: {}", stderr(&o));
        let e = stderr(&o);
        for w in words {
            assert!(e.contains(w), "{name}: `{w}` not in: {e}");
        }
        assert!(
            code == 0 || listing(&out).iter().all(|f| !f.contains("tar.zst")),
            "{name}: left {:?}",
            listing(&out)
        );
    };

    // No key at all, a key file that is not a key, an encrypted key without its password.
    check("no-key", &config, &[], &[], 2, &["--sign-key", KEY_ENV]);
    // The export alias refuses the export options it would ignore, before writing anything.
    for flag in [
        &["--half"][..],
        &["--opset", "12"],
        &["--checkpoint", "x.safetensors"],
    ] {
        let out = dir.path().join("dist-alias-flags");
        let mut args = vec![
            "export",
            "--package",
            "--config",
            s(&config),
            "--out",
            s(&out),
        ];
        args.extend(key);
        args.extend(flag);
        let o = trident_env(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{flag:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag[0]), "{flag:?}: {}", stderr(&o));
        assert!(!out.exists(), "{flag:?} left {:?}", listing(&out));
    }
    let garbage = common::write(dir.path(), "garbage.key", "not a minisign key\n");
    check(
        "bad-key",
        &config,
        &["--sign-key", s(&garbage)],
        &[],
        2,
        &["garbage.key"],
    );
    let enc = dir.path().join("enc-keys");
    let o = trident_env(
        &["package", "keygen", "--out", s(&enc)],
        &[(PASSWORD_ENV, "correct horse")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let enc_key = enc.join("trident.key");
    check(
        "no-password",
        &config,
        &["--sign-key", s(&enc_key)],
        &[],
        2,
        &[PASSWORD_ENV],
    );
    check(
        "password",
        &config,
        &["--sign-key", s(&enc_key)],
        &[(PASSWORD_ENV, "correct horse")],
        0,
        &[],
    );

    // Models that disagree on their classes.
    let odd = dir.path().join("odd");
    let (odd_models, _) = trident_e2e::fixture_models(
        &odd,
        &["high_recall", "balanced", "high_precision"],
        &["lionfish", "urchin", "abalone"],
    );
    let card = odd_models.join("balanced.card.json");
    let card_text = std::fs::read_to_string(&card)
        .unwrap()
        .replace("\"abalone\"", "\"octopus\"");
    std::fs::write(&card, card_text).unwrap();
    check(
        "classes",
        &config,
        &[&key[..], &["--models", s(&odd_models)]].concat(),
        &[],
        2,
        &["class"],
    );

    // Tables fitted for other models.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let tables = std::fs::read_to_string(dir.path().join("calibration.yaml")).unwrap();
    let digest = tables.split("sha256: ").nth(1).unwrap()[..64].to_string();
    let foreign = common::write(
        &other,
        "calibration.yaml",
        &tables.replace(&digest, &"ab".repeat(32)),
    );
    check(
        "tables",
        &config,
        &[&key[..], &["--calibration", s(&foreign)]].concat(),
        &[],
        2,
        &["calibration.yaml", "refit"],
    );

    // The runtime: missing, built for the host, needing a newer glibc than the Nano has.
    let missing = dir.path().join("no-such-binary");
    check(
        "missing-binary",
        &config,
        &[&key[..], &["--binary", s(&missing)]].concat(),
        &[],
        2,
        &["no-such-binary", "cargo xtask cross"],
    );
    let host = Path::new("/bin/true");
    check(
        "host-binary",
        &config,
        &[&key[..], &["--binary", s(host)]].concat(),
        &[],
        2,
        &["x86_64", "aarch64"],
    );
    let newer = trident_e2e::aarch64_program(dir.path(), "2.34");
    check(
        "new-glibc",
        &config,
        &[&key[..], &["--binary", s(&newer)]].concat(),
        &[],
        2,
        &["GLIBC_2.34", "2.27"],
    );

    // An output folder that cannot be created (below a regular file).
    let blocker = common::write(dir.path(), "blocker", "a file, not a folder");
    let o = build(&config, &blocker.join("dist"), &key, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("blocker"), "{}", stderr(&o));

    // A broken release config names its line.
    let broken = variant("broken", &|t: &str| {
        t.replace("max_glibc: \"2.27\"", "max_glibc: newest")
    });
    check(
        "config",
        &broken,
        &key,
        &[],
        2,
        &["broken.yaml", "device.max_glibc"],
    );
}
