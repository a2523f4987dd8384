//! Unit tests of the health state and the metrics text.

use super::exposition::escape_label_value;
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
