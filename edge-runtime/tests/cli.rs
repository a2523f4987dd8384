//! The `trident-edge` binary as a field engineer runs it: models from a folder or an unpacked
//! package, calibration tables found beside them, a test feed under the host-cpu profile, and
//! bad input refused with exit status 2 and a message that says what is wrong.

mod common;

use common::{NAMES, VARIANTS, edge, s, text};
use std::path::{Path, PathBuf};
use std::process::Command;

use trident_core::calibration::{CalibrationTables, TtaTransform};
use trident_core::package::{Manifest, PackagedFile, PackagedModel, TargetFacts};

fn sha(bytes: &[u8]) -> String {
    trident_core::digest::sha256_hex(bytes)
}

/// The three variants as copies of the Ultralytics fixture (96 px, three classes), with cards.
fn models(dir: &Path) -> (PathBuf, String) {
    trident_e2e::fixture_models(dir, &VARIANTS, &NAMES)
}

fn tables(digest: &str) -> CalibrationTables {
    let mut t = trident_e2e::fixture_tables(digest, &VARIANTS, &NAMES, 1.3);
    t.fusion.iou_thr = 0.6;
    t.fusion.weights = [("balanced".to_string(), 2.0)].into();
    t.thresholds = [("urchin".to_string(), 0.3)].into();
    t.tta = vec![TtaTransform {
        flip: true,
        scale: 1.0,
        gain: 0.01,
        cost: 2.0,
    }];
    t
}

fn profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/host-cpu.yaml")
}

fn run_args<'a>(
    models_flag: &'a str,
    models: &'a str,
    out: &'a str,
    duration: &'a str,
) -> Vec<&'a str> {
    vec![
        "run",
        models_flag,
        models,
        "--profile",
        s_static(profile()),
        "--source",
        "test://ball",
        "--width",
        "160",
        "--height",
        "120",
        "--duration",
        duration,
        "--backend",
        "tract",
        "--http",
        "off",
        "--out",
        out,
    ]
}

/// The profile path outlives every test (leaked once).
fn s_static(p: PathBuf) -> &'static str {
    Box::leak(p.into_os_string().into_string().unwrap().into_boxed_str())
}

#[test]
fn a_models_folder_with_tables_runs_on_a_test_feed_and_prints_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (models, digest) = models(dir.path());
    tables(&digest)
        .save(&models.join("calibration.yaml"))
        .unwrap();
    let out = dir.path().join("out");
    let o = edge(&run_args("--models", s(&models), s(&out), "3s"));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("trident-edge run:"), "{}", text(&o));
    assert!(stdout.contains("per frame (ms): capture"), "{}", text(&o));
    for v in VARIANTS {
        assert!(stdout.contains(&format!("model {v}:")), "{}", text(&o));
    }
    let lines = std::fs::read_to_string(out.join("detections.jsonl")).unwrap();
    assert!(lines.lines().count() >= 3, "{lines}");

    // The same folder with the tables refused for another model: exit 2, naming the model.
    let mut other = tables(&digest);
    other.models[2].sha256 = "0".repeat(64);
    other.save(&models.join("calibration.yaml")).unwrap();
    let o = edge(&run_args("--models", s(&models), s(&out), "1s"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("calibration.yaml") && err.contains("another `high_precision` model"),
        "{err}"
    );
    // … unless told to run without tables.
    let mut args = run_args("--models", s(&models), s(&out), "1s");
    args.push("--no-calibration");
    let o = edge(&args);
    assert!(o.status.success(), "{}", text(&o));
}

/// An unpacked package as `trident export --package` lays it out.
fn package(dir: &Path) -> PathBuf {
    let root = dir.join("pkg");
    let (models, digest) = models(&root);
    assert_eq!(models, root.join("models"));
    std::fs::create_dir_all(root.join("calibration")).unwrap();
    let cal = root.join("calibration/calibration.yaml");
    tables(&digest).save(&cal).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for entry in ["models", "calibration"] {
        for f in std::fs::read_dir(root.join(entry)).unwrap() {
            let p = f.unwrap().path();
            let rel = format!("{entry}/{}", p.file_name().unwrap().to_string_lossy());
            files.insert(rel, sha(&std::fs::read(&p).unwrap()));
        }
    }
    let manifest = Manifest {
        schema: trident_core::package::SCHEMA.into(),
        name: "trident".into(),
        version: "0.0.0-test".into(),
        git_revision: None,
        target: TargetFacts {
            device: "jetson-nano".into(),
            arch: "aarch64".into(),
            jetpack: "4.6".into(),
            tensorrt: "8.2".into(),
            max_glibc: "2.27".into(),
        },
        models: VARIANTS
            .iter()
            .map(|v| PackagedModel {
                variant: v.to_string(),
                file: format!("models/{v}.onnx"),
                sha256: digest.clone(),
                input: vec![1, 3, 96, 96],
                output: vec![1, 7, 189],
                classes: NAMES.iter().map(|n| n.to_string()).collect(),
                conf_floor: Some(0.25),
            })
            .collect(),
        calibration: Some(PackagedFile {
            file: "calibration/calibration.yaml".into(),
            sha256: files["calibration/calibration.yaml"].clone(),
        }),
        profiles: vec![],
        binary: None,
        tensorrt_shim: None,
        files,
    };
    std::fs::write(
        root.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    root
}

#[test]
fn a_package_runs_and_a_changed_byte_in_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package(dir.path());
    let out = dir.path().join("out");
    let args = run_args("--package", s(&pkg), s(&out), "1s");
    let o = edge(&args);
    assert!(o.status.success(), "{}", text(&o));

    let cal = pkg.join("calibration/calibration.yaml");
    let t = std::fs::read_to_string(&cal).unwrap();
    std::fs::write(&cal, t.replace("0.6", "0.7")).unwrap();
    let o = edge(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("calibration.yaml") && err.contains("was changed"),
        "{err}"
    );
}

#[test]
fn bad_input_exits_2_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _) = models(dir.path());
    let out = dir.path().join("out");

    let mut args = run_args("--models", s(&models), s(&out), "1s");
    args.extend(["--snapshot-classes", "shark"]);
    let o = edge(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--snapshot-classes shark"));

    let nowhere = dir.path().join("nowhere");
    let o = edge(&run_args("--models", s(&nowhere), s(&out), "1s"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere"));

    // --models and --package together: a usage error from clap (also 2).
    let mut args = run_args("--models", s(&models), s(&out), "1s");
    args.extend(["--package", s(&models)]);
    let o = edge(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn prepare_is_a_clear_no_op_without_a_gpu_and_refuses_a_broken_package() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package(dir.path());
    let cache = dir.path().join("engines");
    let o = Command::new(env!("CARGO_BIN_EXE_trident-edge"))
        .args(["prepare", "--package", s(&pkg), "--engine-cache", s(&cache)])
        // No GPU here; make sure no trtexec on the build machine is found either.
        .env("PATH", "/usr/bin:/bin")
        .env_remove("TRTEXEC")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("nothing to prepare")
            && stdout.contains("high_recall, balanced, high_precision"),
        "{}",
        text(&o)
    );
    assert!(
        !cache.join("x").exists()
            && std::fs::read_dir(&cache).map_or(true, |mut d| d.next().is_none())
    );

    std::fs::write(pkg.join("models/balanced.onnx"), b"not the model").unwrap();
    let o = edge(&["prepare", "--package", s(&pkg), "--engine-cache", s(&cache)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("balanced.onnx"));
}

#[test]
fn the_health_command_waits_for_a_healthy_runtime_and_fails_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _) = models(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = dir.path().join("out");
    let mut args = run_args("--models", s(&models), s(&out), "60s");
    let http = args.iter().position(|a| *a == "off").unwrap();
    args[http] = &addr;
    let mut runtime = Command::new(env!("CARGO_BIN_EXE_trident-edge"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let o = edge(&["health", "--addr", &addr, "--wait", "60s"]);
    let healthy = o.status.success();
    let json = edge(&["health", "--addr", &addr, "--json"]);
    let _ = runtime.kill();
    let _ = runtime.wait();
    assert!(healthy, "{}", text(&o));
    assert!(text(&o).contains("healthy"), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["version"].is_string(), "{report}");

    // Nobody listening: exit 1 at once, saying so.
    let o = edge(&["health", "--addr", &addr]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no answer"), "{}", text(&o));
}
