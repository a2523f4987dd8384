//! Profile validation: every rule a profile must meet, each failure named by its field path
//! (`ladder[2].fps`), which [`crate::yaml::locate`] turns into the file's line:column.

use std::collections::HashSet;

use super::{Profile, SCHEMA, predict};

type Check = std::result::Result<(), (String, String)>;

fn fail(field: impl Into<String>, message: impl Into<String>) -> Check {
    Err((field.into(), message.into()))
}

fn positive(field: &str, value: f64) -> Check {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        fail(field, format!("must be a number > 0 (got {value})"))
    }
}

fn non_negative(field: &str, value: f64) -> Check {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        fail(field, format!("must be a number ≥ 0 (got {value})"))
    }
}

fn fraction(field: &str, value: f64) -> Check {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        fail(field, format!("must be in [0, 1) (got {value})"))
    }
}

/// Every rule a profile must meet; the first broken one is returned as (field path, message).
pub(super) fn validate(p: &Profile) -> Check {
    if let Some(schema) = p.schema.as_deref().filter(|s| *s != SCHEMA) {
        return fail(
            "schema",
            format!("`{schema}` is not a schema this version reads: expected {SCHEMA}"),
        );
    }
    if p.name.trim().is_empty() {
        return fail("name", "must not be empty");
    }
    positive("target_fps", p.target_fps)?;
    positive("power.cap_w", p.power.cap_w)?;
    if p.power.tegrastats.interval_ms == 0 {
        return fail("power.tegrastats.interval_ms", "must be > 0");
    }
    if let Some(b) = &p.budget {
        positive("budget.energy_wh", b.energy_wh)?;
        positive("budget.duration_h", b.duration_h)?;
    }
    if let Some(c) = &p.capture {
        positive("capture.window_s", c.window_s)?;
        positive("capture.period_s", c.period_s)?;
        if c.window_s > c.period_s {
            return fail(
                "capture.window_s",
                format!(
                    "must be ≤ capture.period_s ({} > {})",
                    c.window_s, c.period_s
                ),
            );
        }
        if !(0.0..c.period_s).contains(&c.offset_s) {
            return fail("capture.offset_s", "must be in [0, capture.period_s)");
        }
    }
    let c = &p.control;
    positive("control.period_s", c.period_s)?;
    non_negative("control.min_dwell_s", c.min_dwell_s)?;
    fraction("control.up_margin", c.up_margin)?;
    fraction("control.down_margin", c.down_margin)?;
    positive("control.cap_horizon_s", c.cap_horizon_s)?;
    non_negative("control.sensor_retry_s", c.sensor_retry_s)?;
    let e = &p.estimates;
    non_negative("estimates.idle_w", e.idle_w)?;
    if !(e.tta_factor.is_finite() && e.tta_factor >= 1.0) {
        return fail(
            "estimates.tta_factor",
            format!("must be ≥ 1 (got {})", e.tta_factor),
        );
    }
    if e.models.is_empty() {
        return fail("estimates.models", "must name at least one model");
    }
    for (name, m) in &e.models {
        positive(&format!("estimates.models.{name}.latency_ms"), m.latency_ms)?;
        non_negative(&format!("estimates.models.{name}.active_w"), m.active_w)?;
    }
    if p.ladder.is_empty() {
        return fail("ladder", "must have at least one level");
    }
    let known: Vec<&str> = e.models.keys().map(String::as_str).collect();
    let mut names = HashSet::new();
    for (i, level) in p.ladder.iter().enumerate() {
        if level.name.trim().is_empty() {
            return fail(format!("ladder[{i}].name"), "must not be empty");
        }
        if !names.insert(level.name.as_str()) {
            return fail(
                format!("ladder[{i}].name"),
                format!("`{}` names two levels", level.name),
            );
        }
        if level.models.is_empty() {
            return fail(
                format!("ladder[{i}].models"),
                "must name at least one model",
            );
        }
        for (j, model) in level.models.iter().enumerate() {
            if !known.contains(&model.as_str()) {
                return fail(
                    format!("ladder[{i}].models[{j}]"),
                    format!(
                        "unknown model `{model}`; estimates.models has: {}",
                        known.join(", ")
                    ),
                );
            }
            if level.models[..j].contains(model) {
                return fail(
                    format!("ladder[{i}].models[{j}]"),
                    format!("`{model}` is listed twice"),
                );
            }
        }
        positive(&format!("ladder[{i}].fps"), level.fps)?;
    }
    // Best first: every level must be cheaper than the one above it, otherwise the controller
    // would step down into a level that costs more.
    let power = |i| predict(p, i, |m| p.model_latency_s(m), 1.0).power;
    for i in 1..p.ladder.len() {
        let (above, this) = (power(i - 1), power(i));
        if this >= above {
            return fail(
                format!("ladder[{i}]"),
                format!(
                    "levels must be ordered best-first (most expensive first): `{}` is predicted \
                     at {this:.2} W, not below `{}` at {above:.2} W",
                    p.ladder[i].name,
                    p.ladder[i - 1].name
                ),
            );
        }
    }
    Ok(())
}
