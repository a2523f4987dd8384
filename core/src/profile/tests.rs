//! Profile loading: the shipped profiles, the YAML round trip, and every validation error naming
//! its field and line.

use std::path::{Path, PathBuf};

use super::*;
use crate::error::Error;

const BASE: &str = "\
name: test
target_fps: 5
power:
  cap_w: 5.0
budget:
  energy_wh: 10
  duration_h: 2
capture:
  window_s: 30
  period_s: 120
control:
  min_dwell_s: 10
  up_margin: 0.1
estimates:
  idle_w: 1.7
  tta_factor: 2.8
  models:
    high_recall: { latency_ms: 33, active_w: 5.1 }
    balanced: { latency_ms: 33, active_w: 5.1 }
    high_precision: { latency_ms: 33, active_w: 5.1 }
ladder:
  - name: ensemble-tta
    models: [high_recall, balanced, high_precision]
    tta: true
    fps: 3
  - name: ensemble
    models: [high_recall, balanced, high_precision]
    fps: 5
  - name: balanced
    models: [balanced]
    fps: 5
";

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles")
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    text[..at].matches('\n').count() + 1
}

/// Parses `BASE` with `from` replaced by `to`; returns the error and its line.
fn broken(from: &str, to: &str) -> (Error, String, usize) {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    let text = BASE.replacen(from, to, 1);
    let err = Profile::parse(&text, Path::new("p.yaml")).expect_err(&format!("{from} → {to}"));
    let message = err.to_string();
    (err, message, line_of(BASE, from))
}

fn assert_error(from: &str, to: &str, field: &str, words: &str) {
    let (err, message, line) = broken(from, to);
    assert!(err.is_input_error(), "{message}");
    let Error::Located { line: got, .. } = err else {
        panic!("not a profile error: {message}");
    };
    assert!(
        message.starts_with(&format!("p.yaml:{line}:")) && got == line,
        "expected line {line} in: {message}"
    );
    assert!(message.contains(field), "expected {field} in: {message}");
    assert!(message.contains(words), "expected {words:?} in: {message}");
}

#[test]
fn base_profile_is_valid() {
    let p = Profile::parse(BASE, Path::new("p.yaml")).unwrap();
    assert_eq!(p.ladder.len(), 3);
    assert_eq!(p.power.ina3221, Path::new(NANO_INA3221_PATH));
    assert_eq!(p.control.min_dwell_s, 10.0);
    assert_eq!(
        p.control.cap_horizon_s,
        ControlConfig::default().cap_horizon_s
    );
}

#[test]
fn shipped_profiles_load() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(profiles_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let p = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                Some(p.name.as_str()),
                path.file_stem().and_then(|s| s.to_str())
            );
            names.push(p.name);
        }
    }
    names.sort();
    assert_eq!(names, ["host-cpu", "nano-10w", "nano-5w"]);
}

#[test]
fn yaml_round_trip() {
    for name in ["nano-10w", "nano-5w", "host-cpu"] {
        let path = profiles_dir().join(format!("{name}.yaml"));
        let p = Profile::load(&path).unwrap();
        let text = p.to_yaml().unwrap();
        let again = Profile::parse(&text, Path::new("again.yaml")).unwrap();
        assert_eq!(p, again, "{name}:\n{text}");
    }
    // An untagged file comes back tagged, and otherwise equal.
    let p = Profile::parse(BASE, Path::new("p.yaml")).unwrap();
    let again = Profile::parse(&p.to_yaml().unwrap(), Path::new("q.yaml")).unwrap();
    assert_eq!(again.schema.as_deref(), Some(SCHEMA));
    assert_eq!(
        Profile {
            schema: None,
            ..again
        },
        p
    );
}

#[test]
fn empty_ladder() {
    let at = BASE.find("ladder:\n").unwrap();
    let text = format!("{}ladder: []\n", &BASE[..at]);
    let message = Profile::parse(&text, Path::new("p.yaml"))
        .unwrap_err()
        .to_string();
    let line = line_of(&text, "ladder: []");
    assert!(message.starts_with(&format!("p.yaml:{line}:")), "{message}");
    assert!(
        message.contains("ladder: must have at least one level"),
        "{message}"
    );
}

#[test]
fn levels_must_be_best_first() {
    // The single-model level moved to the top.
    let at = BASE.find("ladder:\n").unwrap();
    let text = format!(
        "{}ladder:\n  - {{ name: balanced, models: [balanced], fps: 5 }}\n  \
         - {{ name: ensemble, models: [high_recall, balanced], fps: 5 }}\n",
        &BASE[..at]
    );
    let message = Profile::parse(&text, Path::new("p.yaml"))
        .unwrap_err()
        .to_string();
    let line = line_of(&text, "{ name: ensemble");
    assert!(message.starts_with(&format!("p.yaml:{line}:")), "{message}");
    assert!(
        message.contains("ladder[1]: levels must be ordered best-first"),
        "{message}"
    );
}

#[test]
fn unknown_model() {
    assert_error(
        "models: [balanced]",
        "models: [balansed]",
        "ladder[2].models[0]",
        "unknown model `balansed`",
    );
}

#[test]
fn duplicate_model_and_level_name() {
    assert_error(
        "models: [balanced]",
        "models: [balanced, balanced]",
        "ladder[2].models[1]",
        "listed twice",
    );
    assert_error(
        "name: balanced",
        "name: ensemble",
        "ladder[2].name",
        "names two levels",
    );
}

#[test]
fn fps_must_be_positive() {
    let at = BASE.rfind("fps: 5").unwrap();
    let text = format!("{}fps: 0\n", &BASE[..at]);
    let message = Profile::parse(&text, Path::new("p.yaml"))
        .unwrap_err()
        .to_string();
    let line = text.lines().count();
    assert!(message.starts_with(&format!("p.yaml:{line}:")), "{message}");
    assert!(
        message.contains("ladder[2].fps: must be a number > 0"),
        "{message}"
    );
    assert_error("target_fps: 5", "target_fps: -1", "target_fps", "> 0");
}

#[test]
fn power_and_budget_fields() {
    assert_error("cap_w: 5.0", "cap_w: 0", "power.cap_w", "> 0");
    assert_error("energy_wh: 10", "energy_wh: -3", "budget.energy_wh", "> 0");
    assert_error("duration_h: 2", "duration_h: 0", "budget.duration_h", "> 0");
}

#[test]
fn window_longer_than_period() {
    assert_error(
        "window_s: 30",
        "window_s: 130",
        "capture.window_s",
        "≤ capture.period_s",
    );
}

#[test]
fn control_and_estimate_fields() {
    assert_error(
        "up_margin: 0.1",
        "up_margin: 1.5",
        "control.up_margin",
        "[0, 1)",
    );
    assert_error(
        "min_dwell_s: 10",
        "min_dwell_s: -1",
        "control.min_dwell_s",
        "≥ 0",
    );
    assert_error(
        "tta_factor: 2.8",
        "tta_factor: 0.5",
        "estimates.tta_factor",
        "≥ 1",
    );
    assert_error(
        "balanced: { latency_ms: 33,",
        "balanced: { latency_ms: 0,",
        "estimates.models.balanced.latency_ms",
        "> 0",
    );
}

#[test]
fn parse_errors_name_line_and_field() {
    // A value of the wrong type: the field path comes from the location.
    assert_error("fps: 3", "fps: fast", "ladder[0].fps", "");
    // An unknown key (a typo).
    let (_, message, line) = broken("tta: true", "ttta: true");
    assert!(message.starts_with(&format!("p.yaml:{line}:")), "{message}");
    assert!(message.contains("unknown field `ttta`"), "{message}");
    // A missing required field.
    let (_, message, _) = broken("target_fps: 5\n", "");
    assert!(message.contains("missing field `target_fps`"), "{message}");
}

#[test]
fn missing_file_is_an_input_error() {
    let err = Profile::load(Path::new("/nonexistent/profile.yaml")).unwrap_err();
    assert!(err.is_input_error());
    assert!(err.to_string().contains("/nonexistent/profile.yaml"));
}

#[test]
fn predicted_power_follows_the_ladder() {
    let p = Profile::parse(BASE, Path::new("p.yaml")).unwrap();
    // ensemble-tta: 3 × 33 ms × 2.8 = 277 ms per frame at 3 fps → 83 % busy.
    let tta = predict(&p, 0, |m| p.model_latency_s(m), 1.0);
    assert!((tta.frame_s - 0.2772).abs() < 1e-9);
    assert!((tta.power - (1.7 + 5.1 * 3.0 * 0.2772)).abs() < 1e-9);
    // A correction ratio scales the whole prediction; too-slow levels are capped at 1/frame.
    let slow = predict(&p, 1, |_| 0.5, 1.1);
    assert!((slow.fps - 1.0 / 1.5).abs() < 1e-12);
    assert!((slow.power - 1.1 * (1.7 + 5.1)).abs() < 1e-9);
}

#[test]
fn tables_without_tta_views_drop_tta_levels_and_keep_the_ladder_ordered() {
    let path = profiles_dir().join("host-cpu.yaml");
    let shipped = Profile::load(&path).unwrap();
    assert!(shipped.ladder.iter().any(|l| l.tta));

    // Tables that keep no TTA view: a TTA level would be its plain twin at a lower frame rate,
    // which breaks best-first ordering; the level goes and the ladder stays valid.
    let mut none = shipped.clone();
    let dropped = none.fit_tta(1.0, false);
    assert_eq!(dropped, vec!["ensemble-tta".to_string()]);
    assert!(none.ladder.iter().all(|l| !l.tta));
    assert_eq!(none.ladder.len(), shipped.ladder.len() - 1);
    none.validate().unwrap();

    // Tables with views: every level stays, priced at the measured cost.
    let mut kept = shipped.clone();
    assert!(kept.fit_tta(1.9, true).is_empty());
    assert_eq!(kept.ladder, shipped.ladder);
    assert_eq!(kept.estimates.tta_factor, 1.9);
    assert_eq!(kept.passes(0), 1.9);
    kept.validate().unwrap();

    // A ladder of TTA levels only is left alone rather than emptied.
    let mut only = shipped.clone();
    only.ladder.retain(|l| l.tta);
    assert!(only.fit_tta(1.0, false).is_empty());
    assert_eq!(only.ladder.len(), 1);
}

#[test]
fn the_schema_tag_is_written_accepted_when_absent_and_refused_when_unknown() {
    let untagged = Profile::parse(BASE, Path::new("p.yaml")).unwrap();
    assert_eq!(untagged.schema, None, "files older than the tag load");
    let yaml = untagged.to_yaml().unwrap();
    assert!(yaml.contains(&format!("schema: {SCHEMA}")), "{yaml}");
    assert_eq!(
        Profile::parse(&yaml, Path::new("p.yaml"))
            .unwrap()
            .schema
            .as_deref(),
        Some(SCHEMA)
    );
    let (err, message, _) = broken("name: test", "schema: trident-profile/2\nname: test");
    assert!(err.is_input_error());
    assert!(
        message.starts_with("p.yaml:1:") && message.contains("schema") && message.contains(SCHEMA),
        "{message}"
    );
}

#[test]
fn a_level_running_a_model_that_is_not_loaded_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, BASE).unwrap();
    let p = Profile::load(&path).unwrap();
    p.check_models(&path, &["high_recall", "balanced", "high_precision"])
        .unwrap();
    let err = p.check_models(&path, &["balanced"]).unwrap_err();
    assert!(err.is_input_error());
    let message = err.to_string();
    let line = line_of(BASE, "models: [high_recall, balanced, high_precision]");
    assert!(
        message.starts_with(&format!("{}:{line}:", path.display()))
            && message.contains("ladder[0].models[0]")
            && message.contains("`high_recall`")
            && message.contains("(balanced)"),
        "{message}"
    );
}
