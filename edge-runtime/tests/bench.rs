//! `trident-edge bench` as a field engineer runs it, on a test feed with the fixture models:
//! on a fake Nano (device tree, nvpmodel, L4T, dpkg and an INA3221 channel under
//! `--system-root`), on a host without a sensor (power estimated from the profile), and without
//! a profile (the built-in ladder); the measured profile it writes, and what it refuses.

use crate::common;

use common::{NAMES, VARIANTS, edge, s, text};
use std::path::{Path, PathBuf};
use std::process::Output;

use trident_core::bench::{BenchReport, SCHEMA};
use trident_core::calibration::{CalibrationTables, TtaTransform};
use trident_edge::governor::Profile;

fn host_profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/host-cpu.yaml")
}

/// The host-cpu profile's figures with a ladder whose order no measured TTA cost can break
/// (host-cpu's own puts TTA at 5 fps over the plain ensemble at 8, which a cheap view on the
/// tiny fixture models can undercut): the three models with TTA, then `balanced` alone.
fn host_ladder_profile(dir: &Path) -> PathBuf {
    let mut p = Profile::load(&host_profile()).unwrap();
    p.name = "host-test".into();
    p.ladder
        .retain(|l| l.name == "ensemble-tta" || l.name == "balanced");
    for l in &mut p.ladder {
        l.fps = 8.0;
    }
    let path = dir.join("host-test.yaml");
    std::fs::write(&path, p.to_yaml().unwrap()).unwrap();
    path
}

/// Tables keeping one flipped test-time view, so that the TTA cost is measured.
fn tables_with_tta(digest: &str) -> CalibrationTables {
    let mut t = trident_e2e::fixture_tables(digest, &VARIANTS, &NAMES, 1.0);
    t.tta = vec![TtaTransform {
        flip: true,
        scale: 1.0,
        gain: 0.01,
        cost: 2.0,
    }];
    t
}

/// A Jetson Nano's files below a fake root: board, L4T 32.7.1, TensorRT and GStreamer
/// packages, nvpmodel in MAXN, four CPUs, the GPU clock, memory, and the INA3221 channel
/// reading a constant 4.2 W.
fn fake_nano(root: &Path) {
    let put = |rel: &str, content: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    put(
        "proc/device-tree/model",
        "NVIDIA Jetson Nano Developer Kit\0",
    );
    put("proc/sys/kernel/hostname", "nano-07\n");
    put("etc/nv_tegra_release", trident_e2e::fleet::NANO_L4T_RELEASE);
    put(
        "var/lib/dpkg/status",
        "Package: libnvinfer8\nStatus: install ok installed\nVersion: 8.2.1-1+cuda10.2\n\n\
         Package: libgstreamer1.0-0\nStatus: install ok installed\nVersion: 1.14.5-0ubuntu1~18.04.2\n\n",
    );
    put("var/lib/nvpmodel/status", "pmode:0000 fmode:quiet\n");
    put(
        "etc/nvpmodel.conf",
        "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=1 NAME=5W >\n",
    );
    put("sys/devices/system/cpu/online", "0-3\n");
    for cpu in 0..4 {
        put(
            &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq"),
            "1479000\n",
        );
    }
    put(
        "sys/devices/gpu.0/devfreq/57000000.gpu/cur_freq",
        "921600000\n",
    );
    put(
        "proc/meminfo",
        "MemTotal:        4059272 kB\nMemAvailable:    2011016 kB\n",
    );
    put(
        "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input",
        "4200\n",
    );
}

/// The Nano profile's ladder over the fixture models, reading the INA3221 under the root.
fn nano_profile(dir: &Path) -> PathBuf {
    let p = dir.join("nano.yaml");
    std::fs::write(
        &p,
        "name: nano-test\ntarget_fps: 5\npower: { cap_w: 5.0, source: ina3221 }\n\
         estimates:\n  idle_w: 1.7\n  tta_factor: 2.84\n  models:\n    high_recall: { latency_ms: 33.0, active_w: 5.1 }\n    \
         balanced: { latency_ms: 33.0, active_w: 5.1 }\n    high_precision: { latency_ms: 33.0, active_w: 5.1 }\n\
         ladder:\n  - { name: ensemble, models: [high_recall, balanced, high_precision], fps: 5 }\n  \
         - { name: balanced, models: [balanced], fps: 5 }\n",
    )
    .unwrap();
    p
}

fn bench_args<'a>(models: &'a str, out: &'a str, frames: &'a str) -> Vec<&'a str> {
    vec![
        "bench",
        "--models",
        models,
        "--source",
        "test://ball",
        "--width",
        "160",
        "--height",
        "120",
        "--frames",
        frames,
        "--warmup",
        "1",
        "--backend",
        "tract",
        "--out",
        out,
    ]
}

/// `trident-edge bench` of `models` into `dir/bench` (returned) with `extra` arguments, on a
/// system root without any power sensor or device file (`dir/empty-root`).
fn bench_without_sensor(
    dir: &Path,
    models: &Path,
    frames: &str,
    extra: &[&str],
) -> (Output, PathBuf) {
    let root = dir.join("empty-root");
    std::fs::create_dir_all(&root).unwrap();
    let out = dir.join("bench");
    let mut args = bench_args(s(models), s(&out), frames);
    args.extend(["--system-root", s(&root)]);
    args.extend(extra);
    (edge(&args), out)
}

#[test]
fn a_bench_on_a_nano_measures_power_from_the_ina3221_and_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _) = trident_e2e::fixture_models(dir.path(), &VARIANTS, &NAMES);
    let root = dir.path().join("root");
    fake_nano(&root);
    let out = dir.path().join("bench");
    let written = dir.path().join("measured.yaml");
    let profile = nano_profile(dir.path());
    let mut args = bench_args(s(&models), s(&out), "5");
    args.extend([
        "--profile",
        s(&profile),
        "--system-root",
        s(&root),
        "--idle",
        "0.3",
        "--write-profile",
        s(&written),
    ]);
    let o = edge(&args);
    let report =
        BenchReport::load(&out.join("bench.json")).unwrap_or_else(|e| panic!("{e}\n{}", text(&o)));
    assert_eq!(report.schema, SCHEMA);

    // Device facts come from the unit's own files.
    let d = &report.device;
    assert_eq!(d.board.as_deref(), Some("NVIDIA Jetson Nano Developer Kit"));
    assert_eq!(
        (d.l4t.as_deref(), d.jetpack.as_deref()),
        (Some("32.7.1"), Some("4.6.1"))
    );
    assert_eq!(d.tensorrt.as_deref(), Some("8.2.1"));
    assert_eq!(
        (d.power_mode.as_deref(), d.power_mode_id),
        (Some("MAXN"), Some(0))
    );
    assert_eq!(d.cpu.online, 4);
    assert_eq!(d.gpu_mhz.map(|m| m.round()), Some(922.0));
    assert!(d.gstreamer.is_some());

    // Power is the sensor's: 4.2 W idle and under load; energy per frame is power × time.
    assert_eq!(report.setup.power_source, "ina3221");
    assert!(report.setup.power_measured);
    assert!((report.idle.as_ref().unwrap().power_w - 4.2).abs() < 0.05);
    assert_eq!(report.models.len(), 3);
    for m in &report.models {
        assert_eq!((m.frames, m.latency_samples_ms.len()), (5, 5), "{}", m.name);
        assert_eq!(
            (m.backend.as_str(), m.precision.as_str(), m.input),
            ("tract", "fp32", [96, 96])
        );
        let l = &m.latency_ms;
        assert!(
            0.0 < l.min && l.min <= l.p50 && l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max
        );
        // The steps add up to the pass.
        let steps = m.preprocess_ms.mean + m.forward_ms.mean + m.postprocess_ms.mean;
        assert!(
            (steps - l.mean).abs() < 1e-6 * l.mean.max(1.0),
            "{steps} vs {}",
            l.mean
        );
        assert!((m.power_w.unwrap() - 4.2).abs() < 0.05);
        // No power above idle with a constant reading.
        assert!(m.active_w.unwrap() < 0.2, "{:?}", m.active_w);
    }
    let names: Vec<&str> = report.levels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["ensemble", "balanced"]);
    for l in &report.levels {
        assert_eq!(l.frames, 5);
        let (w, j) = (l.power_w.unwrap(), l.energy_j_per_frame.unwrap());
        assert!((w - 4.2).abs() < 0.05, "{w}");
        assert!(
            (j - w / l.fps).abs() < 1e-3 * j,
            "{j} J vs {w} W / {} fps",
            l.fps
        );
        assert!(l.capacity_fps > 0.0 && l.fps > 0.0 && l.rate_fps == 5.0);
        assert!(l.predicted_w.is_some() && l.peak_rss_mib.unwrap() > 1.0);
        let expected: Vec<&str> = l.models.iter().map(String::as_str).collect();
        assert_eq!(
            l.model_ms
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .len(),
            expected.len()
        );
    }
    assert_eq!(
        report
            .level("ensemble")
            .unwrap()
            .peak_system_mib
            .map(f64::round),
        Some(2000.0)
    );

    // People's outputs: Markdown with the headline and tables, and two charts.
    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    assert!(
        md.contains("NVIDIA Jetson Nano Developer Kit, MAXN"),
        "{md}"
    );
    assert!(
        md.contains("| ensemble |") && md.contains("| balanced | tract | fp32 |"),
        "{md}"
    );
    for png in ["latency.png", "levels.png"] {
        let img = image::open(out.join(png)).unwrap();
        assert!(img.width() >= 800, "{png}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("level ensemble:") && stdout.contains("J/frame"),
        "{}",
        text(&o)
    );

    // With a constant draw every level predicts the same power: the ladder would no longer be
    // best-first, so no profile is written and the command says why.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("nothing written") && stderr.contains("best-first"),
        "{stderr}"
    );
    assert!(!written.exists());
}

#[test]
fn without_a_sensor_power_is_estimated_and_the_measured_profile_replaces_latency_and_tta() {
    let dir = tempfile::tempdir().unwrap();
    let (models, digest) = trident_e2e::fixture_models(dir.path(), &VARIANTS, &NAMES);
    tables_with_tta(&digest)
        .save(&models.join("calibration.yaml"))
        .unwrap();
    let written = dir.path().join("host-measured.yaml");
    let base_path = host_ladder_profile(dir.path());
    let (o, out) = bench_without_sensor(
        dir.path(),
        &models,
        "4",
        &[
            "--profile",
            s(&base_path),
            "--levels",
            "ensemble-tta,balanced",
            "--write-profile",
            s(&written),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let report = BenchReport::load(&out.join("bench.json")).unwrap();
    assert_eq!(report.setup.power_source, "estimate");
    assert!(!report.setup.power_measured && report.idle.is_none());
    assert!(
        report.notes.iter().any(|n| n.contains("ESTIMATED")),
        "{:?}",
        report.notes
    );
    let names: Vec<&str> = report.levels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["ensemble-tta", "balanced"]);
    // The estimate is the profile's model: 10 W idle + 15 W × the share of time each model ran.
    let l = report.level("balanced").unwrap();
    let busy = l.model_ms["balanced"].mean / 1e3 * f64::from(l.frames);
    let seconds = f64::from(l.frames) / l.fps;
    let want = 10.0 + 15.0 * busy / seconds;
    assert!(
        (l.power_w.unwrap() - want).abs() < 0.05 * want,
        "{:?} vs {want}",
        l.power_w
    );
    // Timing noise of a few frames on a busy machine makes the factor itself vary (×1.3–2 seen);
    // that it is measured, per model, and what the profile gets is what is checked.
    let mut factors = Vec::new();
    for m in &report.models {
        let tta = m.tta.as_ref().expect("tables keep a view: TTA is measured");
        assert_eq!(tta.views, 1);
        assert!(
            tta.factor.is_finite() && tta.factor > 0.0,
            "{}: TTA ×{}",
            m.name,
            tta.factor
        );
        factors.push(tta.factor);
    }

    // The written profile loads as the governor loads it; latency and TTA cost are the measured
    // ones, power figures are kept from the base (nothing measured them).
    let base = Profile::load(&base_path).unwrap();
    let p = Profile::load(&written).unwrap();
    let head = std::fs::read_to_string(&written).unwrap();
    assert!(
        head.starts_with("# Deployment profile `host-test` with estimates MEASURED"),
        "{head}"
    );
    let measured = p.estimates.measured.as_ref().unwrap();
    assert_eq!(measured.power, "estimate");
    for m in &report.models {
        let e = &p.estimates.models[&m.name];
        assert!(
            (e.latency_ms - m.latency_ms.mean).abs() <= 0.006,
            "{}",
            m.name
        );
        assert_ne!(e.latency_ms, base.estimates.models[&m.name].latency_ms);
        assert_eq!(e.active_w, base.estimates.models[&m.name].active_w);
    }
    assert_eq!(p.estimates.idle_w, base.estimates.idle_w);
    let mean = (factors.iter().sum::<f64>() / factors.len() as f64).max(1.0);
    assert!(
        (p.estimates.tta_factor - mean).abs() <= 0.006,
        "{} vs {mean}",
        p.estimates.tta_factor
    );
    assert_eq!(
        (p.ladder, p.target_fps, p.power),
        (base.ladder, base.target_fps, base.power)
    );
}

#[test]
fn without_a_profile_the_whole_ensemble_then_each_model_is_measured_and_bad_requests_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _) = trident_e2e::fixture_models(dir.path(), &VARIANTS, &NAMES);
    let (o, out) = bench_without_sensor(dir.path(), &models, "2", &["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    // --json prints the report itself.
    let printed: BenchReport = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = printed.levels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["ensemble", "high_recall", "balanced", "high_precision"]
    );
    assert_eq!(printed.setup.power_source, "none");
    assert!(
        printed
            .levels
            .iter()
            .all(|l| l.power_w.is_none() && l.rate_fps == 30.0)
    );
    assert_eq!(BenchReport::load(&out.join("bench.json")).unwrap(), printed);

    // An unknown level names the ones there are; --write-profile needs a profile to start from.
    let (o, _) = bench_without_sensor(dir.path(), &models, "2", &["--levels", "ensemble,turbo"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("turbo") && stderr.contains("high_recall"),
        "{stderr}"
    );
    let p = dir.path().join("p.yaml");
    let (o, _) = bench_without_sensor(dir.path(), &models, "2", &["--write-profile", s(&p)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--profile"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_written_profile_keeps_the_operators_ladder_when_the_tables_keep_no_views() {
    // Loading fits the ladder to the tables (a TTA level without views is dropped for the
    // run); the profile written back must still be the operator's, with new estimates only.
    let dir = tempfile::tempdir().unwrap();
    let (models, digest) = trident_e2e::fixture_models(dir.path(), &VARIANTS, &NAMES);
    let mut tables = tables_with_tta(&digest);
    tables.tta.clear();
    tables.save(&models.join("calibration.yaml")).unwrap();
    let written = dir.path().join("measured.yaml");
    let base_path = host_profile();
    let (o, _) = bench_without_sensor(
        dir.path(),
        &models,
        "2",
        &[
            "--profile",
            s(&base_path),
            "--levels",
            "balanced",
            "--write-profile",
            s(&written),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let base = Profile::load(&base_path).unwrap();
    let p = Profile::load(&written).unwrap();
    assert_eq!(p.ladder, base.ladder);
    assert_eq!(p.estimates.tta_factor, base.estimates.tta_factor);
    // The fitted run did not offer the TTA level to measure.
    let (o, _) = bench_without_sensor(
        dir.path(),
        &models,
        "2",
        &["--profile", s(&base_path), "--levels", "ensemble-tta"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
