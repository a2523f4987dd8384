//! Profile validation, and the map from field paths (`ladder[2].fps`) to YAML line:column that
//! lets a validation error point into the file.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::profile::{Profile, predict};

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

/// A YAML node with the location of every child, for mapping field paths to line:column.
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value::<Spanned<Node>>()?));
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Every node of the document as (field path, line, column).
fn index(text: &str) -> Vec<(String, usize, usize)> {
    fn walk(node: &Spanned<Node>, path: String, out: &mut Vec<(String, usize, usize)>) {
        let at = node.referenced;
        out.push((path.clone(), at.line() as usize, at.column() as usize));
        match &node.value {
            Node::Map(entries) => {
                for (key, child) in entries {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(child, child_path, out);
                }
            }
            Node::Seq(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{path}[{i}]"), out);
                }
            }
            Node::Scalar => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(root) = serde_saphyr::from_str::<Spanned<Node>>(text) {
        walk(&root, String::new(), &mut out);
    }
    out
}

/// Line and column of the value at `field` (e.g. `ladder[2].fps`), or of its nearest ancestor
/// present in the file (a missing field points at its parent).
pub(super) fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let nodes = index(text);
    let mut path = field;
    loop {
        if let Some((_, line, column)) = nodes.iter().find(|(p, ..)| p == path) {
            return Some((*line, *column));
        }
        path = &path[..path.rfind(['.', '['])?];
    }
}

/// The deepest field path whose value starts at `line`:`column`, if any.
pub(super) fn path_at(text: &str, line: usize, column: usize) -> Option<String> {
    index(text)
        .into_iter()
        .filter(|(_, l, c)| (*l, *c) == (line, column))
        .map(|(p, ..)| p)
        .max_by_key(String::len)
}
