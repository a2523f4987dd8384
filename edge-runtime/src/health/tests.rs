//! Unit tests of the health state and the metrics text.

use super::exposition::escape_label_value;
use super::exposition::{Exposition, format_value};
use super::*;

fn at(start: Instant, s: f64) -> Instant {
    start + Duration::from_secs_f64(s)
}

#[test]
fn histogram_buckets_are_cumulative_and_inf_equals_count() {
    let mut h = Histogram::default();
    for v in [0.001, 0.005, 0.02, 0.3, 7.0, f64::NAN, -1.0] {
        h.observe(v);
    }
    let got: Vec<(String, u64)> = h
        .cumulative()
        .map(|(le, n)| (format_value(le), n))
        .collect();
    let want = [
        ("0.005", 2),
        ("0.01", 2),
        ("0.025", 3),
        ("0.05", 3),
        ("0.1", 3),
        ("0.25", 3),
        ("0.5", 4),
        ("1", 4),
        ("2.5", 4),
        ("+Inf", 5),
    ];
    let want: Vec<(String, u64)> = want.iter().map(|&(l, n)| (l.to_string(), n)).collect();
    assert_eq!(got, want);
    assert_eq!(h.count(), 5);
    assert!((h.sum() - 7.326).abs() < 1e-12, "{}", h.sum());
}

#[test]
fn label_values_escape_backslashes_quotes_and_newlines() {
    let mut out = String::new();
    escape_label_value("rtsp://a\\b\"c\"\nd", &mut out);
    assert_eq!(out, r#"rtsp://a\\b\"c\"\nd"#);
}

#[test]
fn the_text_format_has_help_type_and_samples_in_order() {
    let mut e = Exposition::default();
    e.counter("trident_x_total", "Things.\nMore", 3);
    e.family("trident_y", "gauge", "Y.");
    e.sample("trident_y", &[("a", "1"), ("b", "q\"")], f64::INFINITY);
    e.sample("trident_y", &[], 0.25);
    assert_eq!(
        e.out,
        "# HELP trident_x_total Things.\\nMore\n# TYPE trident_x_total counter\n\
         trident_x_total 3\n\
         # HELP trident_y Y.\n# TYPE trident_y gauge\n\
         trident_y{a=\"1\",b=\"q\\\"\"} +Inf\ntrident_y 0.25\n"
    );
}

#[test]
fn fps_counts_the_last_window_and_falls_to_zero_when_frames_stop() {
    let t0 = Instant::now();
    let h = Health::new_at(HealthConfig::default(), t0);
    h.update_at(t0).begin(["test://ball"], ["m"]);
    // 10 fps for 8 s.
    for i in 1..=80 {
        h.update_at(at(t0, i as f64 * 0.1)).frame(0);
    }
    let r = h.report_at(at(t0, 8.0));
    assert!((r.fps - 10.0).abs() < 0.3, "{}", r.fps);
    assert_eq!(r.frames, 80);
    // Early on, the window is the uptime.
    let early = Health::new_at(HealthConfig::default(), t0);
    for i in 1..=10 {
        early.update_at(at(t0, i as f64 * 0.1)).frame(0);
    }
    assert!((early.report_at(at(t0, 1.0)).fps - 10.0).abs() < 1e-9);
    // Nothing in the last 5 s.
    assert_eq!(h.report_at(at(t0, 14.0)).fps, 0.0);
    // The ring only holds a window's worth.
    assert!(h.lock().recent.len() <= 51);
}

#[test]
fn staleness_waits_for_the_grace_and_ignores_pauses() {
    let t0 = Instant::now();
    let h = Health::new_at(HealthConfig::default(), t0);
    assert!(!h.report_at(t0).ok, "not begun");
    h.update_at(t0).begin(["test://"], ["a"]);
    // No frame yet, but within the grace.
    assert!(h.report_at(at(t0, 29.0)).ok);
    let r = h.report_at(at(t0, 31.0));
    assert!(!r.ok);
    assert!(r.problems[0].starts_with("no frame for 31.0 s"), "{r:?}");
    h.update_at(at(t0, 31.0)).frame(0);
    assert!(h.report_at(at(t0, 41.0)).ok);
    assert!(!h.report_at(at(t0, 41.5)).ok);
    // Paused: never stale; the wait restarts on resume.
    h.update_at(at(t0, 41.5)).capturing(false);
    assert!(h.report_at(at(t0, 100.0)).ok);
    h.update_at(at(t0, 100.0)).capturing(true);
    assert!(h.report_at(at(t0, 109.0)).ok);
    assert!(!h.report_at(at(t0, 111.0)).ok);
    h.update_at(at(t0, 111.0)).end();
    assert_eq!(h.report_at(at(t0, 111.0)).problems, ["the run has ended"]);
}

#[test]
fn the_report_names_the_package_version_the_runtime_version_and_the_process() {
    let t0 = Instant::now();
    // No package: version null, the runtime's own version apart.
    let h = Health::new_at(HealthConfig::default(), t0);
    let r = h.report_at(t0);
    assert_eq!(r.version, None);
    assert_eq!(r.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(r.pid, std::process::id());
    let now = unix_seconds(SystemTime::now());
    assert!(
        r.started_at_unix_s > 1.0e9 && r.started_at_unix_s <= now,
        "{} vs {now}",
        r.started_at_unix_s
    );
    // Taken once per process: a later Health reports the same start.
    let later = Health::new_at(HealthConfig::default(), t0);
    assert_eq!(later.report_at(t0).started_at_unix_s, r.started_at_unix_s);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["version"], serde_json::Value::Null);
    assert_eq!(v["runtime_version"], env!("CARGO_PKG_VERSION"));
    assert!(v["started_at_unix_s"].is_f64(), "{v}");
    assert_eq!(v["pid"], std::process::id());
    let m = h.metrics_at(t0);
    assert!(
        m.contains(&format!(
            "\ntrident_build_info{{runtime_version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{m}"
    );

    // The package, once verified: /healthz and trident_build_info carry its version.
    h.update_at(t0).version(Some("1.4.0-rc.1"));
    let r = h.report_at(t0);
    assert_eq!(r.version.as_deref(), Some("1.4.0-rc.1"));
    assert_eq!(r.runtime_version, env!("CARGO_PKG_VERSION"));
    let m = h.metrics_at(t0);
    assert!(
        m.contains(&format!(
            "\ntrident_build_info{{version=\"1.4.0-rc.1\",runtime_version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{m}"
    );
}

#[test]
fn per_model_frames_and_the_active_levels_models_and_their_fewest_frames() {
    let t0 = Instant::now();
    let h = Health::new_at(HealthConfig::default(), t0);
    // Before the run begins: null.
    let r = h.report_at(t0);
    assert_eq!(r.level_models, None);
    assert_eq!(r.min_level_model_frames, None);
    let v = serde_json::to_value(&r).unwrap();
    assert!(
        v["min_level_model_frames"].is_null() && v["level_models"].is_null(),
        "{v}"
    );

    // Begun: every model until the governor names its level; 0 before any frame.
    h.update_at(t0)
        .begin(["test://"], ["high_recall", "balanced", "high_precision"]);
    let r = h.report_at(t0);
    assert_eq!(
        r.level_models.as_deref(),
        Some(&["high_recall", "balanced", "high_precision"].map(String::from)[..])
    );
    assert_eq!(r.min_level_model_frames, Some(0));
    assert!(r.models.iter().all(|m| m.frames == 0), "{:?}", r.models);

    // The level runs two of the three; balanced is left out of its frames.
    {
        let mut u = h.update_at(at(t0, 0.1));
        u.level(2, "pair");
        u.level_models(&["high_recall", "high_precision"]);
    }
    for i in 0..5 {
        let mut u = h.update_at(at(t0, 0.2 + 0.1 * i as f64));
        u.frame(0);
        u.model_pass(0, 0.02);
        // NaN times are left out of the histogram, not out of the frames.
        u.model_pass(2, if i == 0 { f64::NAN } else { 0.02 });
    }
    let r = h.report_at(at(t0, 1.0));
    let frames: Vec<(&str, u64)> = r
        .models
        .iter()
        .map(|m| (m.model.as_str(), m.frames))
        .collect();
    assert_eq!(
        frames,
        [("high_recall", 5), ("balanced", 0), ("high_precision", 5)]
    );
    assert_eq!(
        r.level_models.as_deref(),
        Some(&["high_recall", "high_precision"].map(String::from)[..])
    );
    assert_eq!(r.min_level_model_frames, Some(5));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["models"][1]["frames"], 0);
    assert_eq!(v["models"][2]["frames"], 5);
    assert_eq!(v["min_level_model_frames"], 5);
    assert_eq!(
        v["level_models"],
        serde_json::json!(["high_recall", "high_precision"])
    );

    // Down to a level whose model has not run yet: its 0 frames are the fewest.
    h.update_at(at(t0, 1.0)).level_models(&["balanced"]);
    assert_eq!(h.report_at(at(t0, 1.0)).min_level_model_frames, Some(0));
    h.update_at(at(t0, 1.1)).model_pass(1, 0.03);
    assert_eq!(h.report_at(at(t0, 1.1)).min_level_model_frames, Some(1));
}

fn report_json(h: &Health, now: Instant) -> serde_json::Value {
    serde_json::to_value(h.report_at(now)).unwrap()
}

#[test]
fn the_gate_names_each_condition_that_fails_with_the_values_seen() {
    let t0 = Instant::now();
    let h = Health::new_at(
        HealthConfig {
            version: Some("1.0.0".into()),
            ..HealthConfig::default()
        },
        t0,
    );
    let started = h.report_at(t0).started_at_unix_s;
    let gate = Gate {
        expect_version: Some("1.1.0".into()),
        started_after: Some(started + 12.0),
        min_frames: Some(1),
    };
    // Not begun: 503 with the problem, and each condition.
    let f = gate.failures(503, &report_json(&h, t0));
    assert_eq!(f.len(), 4, "{f:?}");
    assert_eq!(
        f[0],
        "/healthz answered 503: starting: the run loop has not begun"
    );
    assert_eq!(f[1], "version 1.0.0, expected 1.1.0");
    assert!(
        f[2].starts_with("process started 12 s before the switch (pid "),
        "{}",
        f[2]
    );
    assert_eq!(
        f[3],
        "no model frames yet (the run has not begun), 1 needed"
    );

    h.update_at(t0)
        .begin(["test://"], ["high_recall", "balanced"]);
    h.update_at(t0).level_models(&["balanced"]);
    h.update_at(t0).frame(0);
    h.update_at(t0).model_pass(0, 0.01);
    let f = gate.failures(200, &report_json(&h, t0));
    assert_eq!(f[2], "model balanced processed 0 frames, 1 needed", "{f:?}");

    // Everything holds.
    h.update_at(t0).version(Some("1.1.0"));
    h.update_at(t0).model_pass(1, 0.01);
    let pass = Gate {
        started_after: Some(started - 0.5),
        ..gate.clone()
    };
    assert_eq!(
        pass.failures(200, &report_json(&h, t0)),
        Vec::<String>::new()
    );
    // A 503 fails even when the conditions hold; no condition: only the status counts.
    assert_eq!(pass.failures(503, &report_json(&h, t0)).len(), 1);
    assert!(
        Gate::default()
            .failures(200, &serde_json::json!({}))
            .is_empty()
    );
    let f = Gate {
        min_frames: Some(3),
        ..Gate::default()
    }
    .failures(200, &report_json(&h, t0));
    assert_eq!(f, ["model balanced processed 1 frame, 3 needed"]);

    // An older runtime's report without these fields: each condition says what is missing.
    let old = serde_json::json!({"ok": true, "problems": [], "version": "0.9.0"});
    let f = gate.failures(200, &old);
    assert_eq!(f[0], "version 0.9.0, expected 1.1.0");
    assert!(f[1].starts_with("process start time unknown"), "{}", f[1]);
    assert!(f[2].starts_with("model frames unknown"), "{}", f[2]);
    let f = gate.failures(200, &serde_json::json!({"version": null}));
    assert_eq!(
        f[0],
        "version none (not run from a package), expected 1.1.0"
    );
}
