//! The `trident-edge` binary as a field engineer runs it: models from a folder or an unpacked
//! package, calibration tables found beside them, a test feed under the host-cpu profile, and
//! bad input refused with exit status 2 and a message that says what is wrong.

use crate::common;

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
fn the_http_limits_are_documented_run_options() {
    let o = edge(&["run", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    for expected in [
        "--http-max-connections <N>",
        "[default: 16]",
        "Retry-After",
        "--http-timeout <DURATION>",
        "[default: 5s]",
    ] {
        assert!(help.contains(expected), "{expected}:\n{help}");
    }
    // At least one connection; a bad value is a usage error.
    let dir = tempfile::tempdir().unwrap();
    let (models, _) = models(dir.path());
    let out = dir.path().join("out");
    let mut args = run_args("--models", s(&models), s(&out), "1s");
    args.extend(["--http-max-connections", "0"]);
    let o = edge(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--http-max-connections"),
        "{}",
        text(&o)
    );
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

/// A free loopback port's `127.0.0.1:PORT`.
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `trident-edge run` serving /healthz on `addr` for up to a minute (killed by the caller).
fn spawn_runtime(models_flag: &str, models: &Path, out: &Path, addr: &str) -> std::process::Child {
    let mut args = run_args(models_flag, s(models), s(out), "60s");
    let http = args.iter().position(|a| *a == "off").unwrap();
    args[http] = addr;
    Command::new(env!("CARGO_BIN_EXE_trident-edge"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The last line the command wrote (stderr, where a failure ends).
fn last_line(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn the_health_command_waits_for_a_healthy_runtime_and_fails_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _) = models(dir.path());
    let addr = free_addr();
    let mut runtime = spawn_runtime("--models", &models, &dir.path().join("out"), &addr);

    let o = edge(&["health", "--addr", &addr, "--wait", "60s"]);
    let healthy = o.status.success();
    let json = edge(&["health", "--addr", &addr, "--json"]);
    // A models folder has no package version: a gate expecting one (even the binary's) fails.
    let gated = edge(&[
        "health",
        "--addr",
        &addr,
        "--expect-version",
        env!("CARGO_PKG_VERSION"),
    ]);
    let _ = runtime.kill();
    let _ = runtime.wait();
    assert!(healthy, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!("{addr}: healthy — ")),
        "{}",
        text(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["version"].is_null(), "{report}");
    assert_eq!(report["runtime_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(gated.status.code(), Some(1), "{}", text(&gated));
    assert_eq!(
        last_line(&gated),
        format!(
            "error: {addr}: version none (not run from a package), expected {}",
            env!("CARGO_PKG_VERSION")
        ),
        "{}",
        text(&gated)
    );

    // Nobody listening: exit 1 at once, saying so.
    let o = edge(&["health", "--addr", &addr]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no answer"), "{}", text(&o));
}

/// What the deploy stage asks on a unit after its switch: the package's version, a process
/// started after the switch, and frames from every model of the active level.
#[test]
fn the_health_gate_passes_a_packaged_runtime_started_after_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package(dir.path());
    let addr = free_addr();
    let switch = unix_now();
    let mut runtime = spawn_runtime("--package", &pkg, &dir.path().join("out"), &addr);
    let switch_arg = format!("{switch:.3}");
    let gate = |version: &str, after: &str, frames: &str, wait: &str| {
        edge(&[
            "health",
            "--addr",
            &addr,
            "--wait",
            wait,
            "--expect-version",
            version,
            "--started-after",
            after,
            "--min-frames",
            frames,
        ])
    };
    let passed = gate("0.0.0-test", &switch_arg, "2", "60s");
    let json = edge(&["health", "--addr", &addr, "--json"]);
    let wrong_version = gate("0.1.0", &switch_arg, "1", "0.5s");
    let later = format!("{:.3}", switch + 3600.0);
    let old_process = gate("0.0.0-test", &later, "1", "0.5s");
    let too_few = gate("0.0.0-test", &switch_arg, "1000000000", "0.5s");
    let _ = runtime.kill();
    let _ = runtime.wait();

    assert!(passed.status.success(), "{}", text(&passed));
    assert!(
        String::from_utf8_lossy(&passed.stdout)
            .starts_with(&format!("{addr}: healthy — version 0.0.0-test, ")),
        "{}",
        text(&passed)
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["version"], "0.0.0-test", "{report}");
    assert_eq!(report["runtime_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        report["started_at_unix_s"].as_f64().unwrap() > switch,
        "{report}"
    );
    assert_eq!(report["pid"], runtime.id(), "{report}");
    let level = report["level_models"].as_array().unwrap();
    assert!(!level.is_empty(), "{report}");
    assert!(
        report["min_level_model_frames"].as_u64().unwrap() >= 2,
        "{report}"
    );

    for (o, want) in [
        (
            &wrong_version,
            "version 0.0.0-test, expected 0.1.0 (waited 500ms)".to_string(),
        ),
        (&old_process, "s before the switch (pid ".to_string()),
        (
            &too_few,
            "frames, 1000000000 needed (waited 500ms)".to_string(),
        ),
    ] {
        assert_eq!(o.status.code(), Some(1), "{}", text(o));
        let line = last_line(o);
        assert!(
            line.starts_with(&format!("error: {addr}: ")) && line.contains(&want),
            "{want}: {}",
            text(o)
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with(&format!("{addr}: NOT healthy — ")),
            "{}",
            text(o)
        );
    }
    assert!(
        last_line(&too_few).contains(": model "),
        "{}",
        text(&too_few)
    );
}

/// The command against the real HTTP module serving a health state this test drives: it waits
/// until every condition holds, and names the ones that do not.
#[test]
fn the_health_command_names_each_failed_condition_and_waits_until_all_hold() {
    use std::sync::Arc;
    use std::time::Duration;
    use trident_edge::health::{Health, HealthConfig};
    use trident_edge::http::HttpServer;

    let health = Arc::new(Health::new(HealthConfig::default()));
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&health)).unwrap();
    let addr = server.local_addr().to_string();
    let started = health.report().started_at_unix_s;
    let ask = |extra: &[&str]| {
        let mut args = vec!["health", "--addr", addr.as_str()];
        args.extend_from_slice(extra);
        edge(&args)
    };

    // Not begun: 503, and no condition given: the status alone fails it.
    let o = ask(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        last_line(&o),
        format!("error: {addr}: /healthz answered 503: starting: the run loop has not begun")
    );

    health
        .update()
        .begin(["test://ball"], ["high_recall", "balanced"]);
    health.update().version(Some("1.0.0"));
    health.update().level(1, "balanced");
    health.update().level_models(&["balanced"]);
    health.update().frame(0);
    health.update().model_pass(0, 0.01);
    // 200 now: no condition, healthy.
    let o = ask(&[]);
    assert!(o.status.success(), "{}", text(&o));

    let after = format!("{:.3}", started + 12.0);
    let o = ask(&[
        "--expect-version",
        "1.1.0",
        "--started-after",
        &after,
        "--min-frames",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let line = last_line(&o);
    assert!(
        line.starts_with(&format!(
            "error: {addr}: version 1.0.0, expected 1.1.0; process started 12 s before the \
             switch (pid {}, ",
            std::process::id()
        )) && line.ends_with("; model balanced processed 0 frames, 1 needed"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .starts_with(&format!("{addr}: NOT healthy — version 1.0.0, 1 frames")),
        "{}",
        text(&o)
    );

    // --wait: the conditions come true while it asks (the new version, balanced's frames).
    let before = format!("{:.3}", started - 1.0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(800));
            health.update().version(Some("1.1.0"));
            std::thread::sleep(Duration::from_millis(400));
            for _ in 0..3 {
                let mut u = health.update();
                u.frame(0);
                u.model_pass(1, 0.01);
            }
        });
        let o = ask(&[
            "--wait",
            "30s",
            "--expect-version",
            "1.1.0",
            "--started-after",
            &before,
            "--min-frames",
            "3",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout)
                .starts_with(&format!("{addr}: healthy — version 1.1.0, 4 frames")),
            "{}",
            text(&o)
        );
    });
    server.shutdown();
}
