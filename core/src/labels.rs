//! YOLO label files: one `class cx cy w h` line per object, coordinates normalised to 0–1.

use crate::geometry::BoxXywh;

/// How far (in normalised units) a box may stick out of the frame before it is an error.
/// Label tools round to 6 decimals and some clip after converting; 0.1 % of the frame absorbs that.
pub const OUT_OF_FRAME_TOLERANCE: f64 = 1e-3;

/// One object from a label file, normalised to the image size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabelBox {
    pub class: usize,
    pub cx: f64,
    pub cy: f64,
    pub w: f64,
    pub h: f64,
}

impl LabelBox {
    /// Pixel box for an image of `width × height`.
    pub fn to_pixels(&self, width: u32, height: u32) -> BoxXywh {
        let (iw, ih) = (f64::from(width), f64::from(height));
        BoxXywh::from_center(self.cx * iw, self.cy * ih, self.w * iw, self.h * ih)
    }

    /// Normalised label for a pixel box in an image of `width × height`.
    pub fn from_pixels(class: usize, b: &BoxXywh, width: u32, height: u32) -> Self {
        let (iw, ih) = (f64::from(width), f64::from(height));
        LabelBox {
            class,
            cx: (b.x + b.w / 2.0) / iw,
            cy: (b.y + b.h / 2.0) / ih,
            w: b.w / iw,
            h: b.h / ih,
        }
    }

    /// The line as Ultralytics writes it (6 decimals).
    pub fn to_line(&self) -> String {
        format!(
            "{} {:.6} {:.6} {:.6} {:.6}",
            self.class, self.cx, self.cy, self.w, self.h
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// A problem found on one line of a label file (1-based line number).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelIssue {
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

#[derive(Clone, Debug, Default)]
pub struct ParsedLabels {
    /// The boxes of every line that had no error.
    pub boxes: Vec<LabelBox>,
    pub issues: Vec<LabelIssue>,
}

impl ParsedLabels {
    pub fn has_errors(&self) -> bool {
        self.issues.iter().any(|i| i.severity == Severity::Error)
    }
}

/// Parses and validates a label file's text against a dataset of `num_classes` classes.
///
/// Every problem is reported with its line; a bad line does not stop the others from being read.
pub fn parse_labels(text: &str, num_classes: usize) -> ParsedLabels {
    let mut out = ParsedLabels::default();
    let mut seen: Vec<&str> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let mut error = |message: String| {
            out.issues.push(LabelIssue {
                line: line_no,
                severity: Severity::Error,
                message,
            })
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            error(format!(
                "expected 5 fields `class cx cy w h`, found {}",
                fields.len()
            ));
            continue;
        }
        let class = match fields[0].parse::<usize>() {
            Ok(c) if c < num_classes => c,
            Ok(c) => {
                error(format!(
                    "class {c} out of range: the dataset has {num_classes} classes (0..={})",
                    num_classes.saturating_sub(1)
                ));
                continue;
            }
            Err(_) => {
                error(format!(
                    "class `{}` is not a non-negative integer",
                    fields[0]
                ));
                continue;
            }
        };
        let mut values = [0f64; 4];
        let mut bad = false;
        for (k, name) in ["cx", "cy", "w", "h"].iter().enumerate() {
            match fields[k + 1].parse::<f64>() {
                Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => values[k] = v,
                Ok(v) => {
                    error(format!("{name} = {v} is outside [0, 1]"));
                    bad = true;
                }
                Err(_) => {
                    error(format!("{name} `{}` is not a number", fields[k + 1]));
                    bad = true;
                }
            }
        }
        if bad {
            continue;
        }
        let [cx, cy, w, h] = values;
        if w <= 0.0 || h <= 0.0 {
            error(format!("box has non-positive size w = {w}, h = {h}"));
            continue;
        }
        let t = OUT_OF_FRAME_TOLERANCE;
        if cx - w / 2.0 < -t
            || cx + w / 2.0 > 1.0 + t
            || cy - h / 2.0 < -t
            || cy + h / 2.0 > 1.0 + t
        {
            error(format!(
                "box cx={cx} cy={cy} w={w} h={h} extends outside the image (x {:.4}..{:.4}, y {:.4}..{:.4})",
                cx - w / 2.0,
                cx + w / 2.0,
                cy - h / 2.0,
                cy + h / 2.0
            ));
            continue;
        }
        if seen.contains(&line) {
            out.issues.push(LabelIssue {
                line: line_no,
                severity: Severity::Warning,
                message: "duplicate of an earlier line".into(),
            });
            continue;
        }
        seen.push(line);
        out.boxes.push(LabelBox {
            class,
            cx,
            cy,
            w,
            h,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_lines_and_skips_blank_ones() {
        let p = parse_labels("0 0.5 0.5 0.2 0.4\n\n2 0.1 0.1 0.1 0.1\n", 3);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(p.boxes.len(), 2);
        assert_eq!(p.boxes[1].class, 2);
    }

    #[test]
    fn reports_each_bad_line_with_its_number() {
        let text = "0 0.5 0.5 0.2\n5 0.5 0.5 0.2 0.2\n0 0.5 1.5 0.2 0.2\n0 0.5 0.5 0 0.2\n0 0.95 0.5 0.2 0.2\nx 0.5 0.5 0.2 0.2\n";
        let p = parse_labels(text, 3);
        let lines: Vec<usize> = p.issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5, 6]);
        assert!(p.issues[0].message.contains("expected 5 fields"));
        assert!(p.issues[1].message.contains("class 5 out of range"));
        assert!(p.issues[2].message.contains("outside [0, 1]"));
        assert!(p.issues[3].message.contains("non-positive size"));
        assert!(p.issues[4].message.contains("extends outside the image"));
        assert!(p.issues[5].message.contains("not a non-negative integer"));
        assert!(p.boxes.is_empty());
    }

    #[test]
    fn tolerates_rounding_at_the_frame_edge_and_warns_on_duplicates() {
        let p = parse_labels("0 0.9 0.5 0.2002 0.2\n0 0.9 0.5 0.2002 0.2\n", 1);
        assert_eq!(p.boxes.len(), 1);
        assert_eq!(p.issues.len(), 1);
        assert_eq!(p.issues[0].severity, Severity::Warning);
        assert!(!p.has_errors());
    }

    #[test]
    fn pixel_roundtrip() {
        let l = LabelBox {
            class: 1,
            cx: 0.5,
            cy: 0.25,
            w: 0.2,
            h: 0.1,
        };
        let px = l.to_pixels(320, 240);
        assert_eq!(px, BoxXywh::new(128.0, 48.0, 64.0, 24.0));
        let back = LabelBox::from_pixels(1, &px, 320, 240);
        assert!((back.cx - l.cx).abs() < 1e-12 && (back.h - l.h).abs() < 1e-12);
    }
}
