//! Bar charts: one bar per category (e.g. FPS per ladder level), panels in a grid.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{Area, Error, FONT, PANEL, render};

/// One bar.
#[derive(Clone, Debug)]
pub struct Bar {
    pub label: String,
    pub value: f64,
}

/// A bar panel: one bar per category (e.g. FPS per ladder level).
#[derive(Clone, Debug)]
pub struct BarPanel<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub bars: Vec<Bar>,
    /// Optional horizontal reference line drawn across the panel with its label (e.g.
    /// `("target 5 fps", 5.0)`).
    pub reference: Option<(String, f64)>,
}

/// Bar panels side by side in a grid of `columns` panels per row, one PNG written atomically.
///
/// Non-finite values are drawn as missing ("n/a" at the base line); an empty panel still gets
/// its frame and title.
pub fn bar_charts(path: &Path, columns: usize, panels: &[BarPanel<'_>]) -> Result<(), Error> {
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (PANEL.0 * columns as u32, PANEL.1 * rows as u32);
    render(path, size, |root| {
        for (area, panel) in root.split_evenly((rows, columns)).iter().zip(panels) {
            draw_bars(area, panel)?;
        }
        Ok(())
    })
}

pub(crate) const BAR_COLOUR: RGBColor = RGBColor(70, 130, 180);
pub(crate) const REFERENCE_COLOUR: RGBColor = RGBColor(220, 40, 40);
const MISSING_COLOUR: RGBColor = RGBColor(140, 140, 140);
/// Fraction of a category's slot taken by its bar.
const BAR_WIDTH: f64 = 0.7;
/// Head room above the tallest bar (or the reference line) for the value labels.
const HEAD_ROOM: f64 = 1.15;
/// Largest and smallest font sizes for category and value labels.
const LABEL_FONT: (u32, u32) = (14, 8);

/// The y range: from 0 (or the lowest negative value) to the largest finite value or reference,
/// with head room; `(0, 1)` when there is nothing to scale to.
fn y_range(panel: &BarPanel<'_>) -> (f64, f64) {
    let values = panel
        .bars
        .iter()
        .map(|b| b.value)
        .chain(panel.reference.as_ref().map(|r| r.1))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi > lo {
        (lo * HEAD_ROOM, hi * HEAD_ROOM)
    } else {
        (0.0, 1.0)
    }
}

/// `v` to 3 significant digits without trailing zeros (7.9 → "7.9", 1234.6 → "1235");
/// scientific notation for very small or very large magnitudes.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor();
    if !(-3.0..6.0).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (2.0 - magnitude).max(0.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn text_width(area: &Area<'_>, text: &str, size: u32) -> Result<u32, Box<dyn std::error::Error>> {
    Ok(area
        .estimate_text_size(text, &(FONT, size).into_font().into_text_style(area))?
        .0)
}

/// The largest font size at which every text fits in `width` pixels, if any.
fn fitting_size(
    area: &Area<'_>,
    texts: &[String],
    width: u32,
    largest: u32,
) -> Result<Option<u32>, Box<dyn std::error::Error>> {
    for size in (LABEL_FONT.1..=largest).rev() {
        let mut fits = true;
        for t in texts {
            fits &= text_width(area, t, size)? <= width;
        }
        if fits {
            return Ok(Some(size));
        }
    }
    Ok(None)
}

/// `text` shortened with an ellipsis until it fits in `width` pixels at `size`.
fn truncate(
    area: &Area<'_>,
    text: &str,
    width: u32,
    size: u32,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut chars: Vec<char> = text.chars().collect();
    let mut out = text.to_string();
    while !chars.is_empty() && text_width(area, &out, size)? > width {
        chars.pop();
        out = chars.iter().collect::<String>() + "…";
    }
    Ok(out)
}

/// Category labels laid out to stay readable: shrink the font first, then alternate labels
/// between two rows, then shorten them. Returns the labels, font size and whether staggered.
fn layout_labels(
    area: &Area<'_>,
    bars: &[Bar],
    slot: u32,
) -> Result<(Vec<String>, u32, bool), Box<dyn std::error::Error>> {
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let gap = 4;
    if let Some(size) = fitting_size(area, &labels, slot.saturating_sub(gap), LABEL_FONT.0)? {
        return Ok((labels, size, false));
    }
    let wide = (2 * slot).saturating_sub(gap);
    if let Some(size) = fitting_size(area, &labels, wide, LABEL_FONT.0)? {
        return Ok((labels, size, true));
    }
    let size = LABEL_FONT.1;
    let labels = labels
        .iter()
        .map(|l| truncate(area, l, wide, size))
        .collect::<Result<_, _>>()?;
    Ok((labels, size, true))
}

fn draw_bars(root: &Area<'_>, panel: &BarPanel<'_>) -> Result<(), Box<dyn std::error::Error>> {
    let n = panel.bars.len();
    let (y_lo, y_hi) = y_range(panel);
    let x_hi = n.max(1) as f64;
    let mut ctx = ChartBuilder::on(root)
        .caption(panel.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_hi, y_lo..y_hi)?;
    // The category labels are drawn below, one per bar, instead of numeric x ticks.
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(panel.y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    if n == 0 {
        return Ok(());
    }

    let (x_pixels, _) = ctx.plotting_area().get_pixel_range();
    let slot = (x_pixels.end - x_pixels.start).max(1) as u32 / n as u32;
    let (labels, label_size, staggered) = layout_labels(root, &panel.bars, slot)?;
    let values: Vec<String> = panel.bars.iter().map(|b| format_value(b.value)).collect();
    let value_size =
        fitting_size(root, &values, slot.saturating_sub(2), 13)?.unwrap_or(LABEL_FONT.1);

    let half = BAR_WIDTH / 2.0;
    let finite = |b: &&Bar| b.value.is_finite();
    ctx.draw_series(
        panel
            .bars
            .iter()
            .enumerate()
            .filter(|(_, b)| finite(b))
            .map(|(i, b)| {
                let x = i as f64 + 0.5;
                Rectangle::new([(x - half, 0.0), (x + half, b.value)], BAR_COLOUR.filled())
            }),
    )?;
    ctx.draw_series(
        values
            .iter()
            .zip(&panel.bars)
            .enumerate()
            .map(|(i, (text, b))| {
                let x = i as f64 + 0.5;
                let (y, colour) = if finite(&b) {
                    (b.value, BLACK)
                } else {
                    (0.0, MISSING_COLOUR)
                };
                // Above a positive bar, below a negative one.
                let (offset, v) = if y < 0.0 {
                    (3, VPos::Top)
                } else {
                    (-3, VPos::Bottom)
                };
                let style = (FONT, value_size)
                    .into_font()
                    .color(&colour)
                    .pos(Pos::new(HPos::Center, v));
                EmptyElement::at((x, y)) + Text::new(text.clone(), (0, offset), style)
            }),
    )?;

    if let Some((name, y)) = panel.reference.as_ref().filter(|r| r.1.is_finite()) {
        let style = REFERENCE_COLOUR.stroke_width(2);
        ctx.draw_series(DashedLineSeries::new([(0.0, *y), (x_hi, *y)], 8, 5, style))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        // The legend goes to the upper corner above the lower half of the bars.
        let tallest = |bars: &[Bar]| {
            bars.iter()
                .map(|b| b.value)
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max)
        };
        let (left, right) = panel.bars.split_at(n / 2);
        let position = if tallest(left) < tallest(right) {
            SeriesLabelPosition::UpperLeft
        } else {
            SeriesLabelPosition::UpperRight
        };
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(position)
            .draw()?;
    }

    // Category labels centred under their bars, alternating rows when staggered.
    let base = root.get_base_pixel();
    let row_height = label_size as i32 + 3;
    let style = (FONT, label_size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, label) in labels.into_iter().enumerate() {
        let (x, y) = ctx.backend_coord(&(i as f64 + 0.5, y_lo));
        let row = if staggered { (i % 2) as i32 } else { 0 };
        let at = (x - base.0, y - base.1 + 6 + row * row_height);
        root.draw(&Text::new(label, at, style.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: f64) -> Bar {
        Bar {
            label: label.into(),
            value,
        }
    }

    fn panel(bars: Vec<Bar>, reference: Option<(String, f64)>) -> BarPanel<'static> {
        BarPanel {
            title: "fps",
            y_label: "frames / s",
            bars,
            reference,
        }
    }

    fn count(img: &image::RgbImage, colour: RGBColor, x: std::ops::Range<u32>) -> usize {
        img.enumerate_pixels()
            .filter(|(px, _, p)| x.contains(px) && p.0 == [colour.0, colour.1, colour.2])
            .count()
    }

    fn render_one(p: BarPanel<'_>) -> image::RgbImage {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.png");
        bar_charts(&path, 1, &[p]).unwrap();
        image::open(&path).unwrap().to_rgb8()
    }

    #[test]
    fn two_panel_grid_draws_bars_in_each_half_and_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.png");
        let labels = [
            "fast",
            "balanced",
            "balanced-slow",
            "accurate",
            "ensemble",
            "ensemble-tta",
            "ensemble-tta-slow",
            "max",
        ];
        let left = panel(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| bar(l, 12.0 - i as f64 * 1.3))
                .collect(),
            Some(("target 5 fps".into(), 5.0)),
        );
        let right = panel(vec![bar("a", 0.25), bar("b", 0.5)], None);
        bar_charts(&path, 2, &[left, right]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2 * PANEL.0, PANEL.1));
        assert!(count(&img, BAR_COLOUR, 0..PANEL.0) > 1000);
        assert!(count(&img, BAR_COLOUR, PANEL.0..2 * PANEL.0) > 1000);
        assert!(count(&img, REFERENCE_COLOUR, 0..PANEL.0) > 100);
        assert_eq!(count(&img, REFERENCE_COLOUR, PANEL.0..2 * PANEL.0), 0);
    }

    #[test]
    fn a_taller_bar_covers_more_pixels() {
        // Same y scale through the reference line; only the bar height differs.
        let reference = Some(("cap".to_string(), 10.0));
        let short = render_one(panel(vec![bar("x", 2.0)], reference.clone()));
        let tall = render_one(panel(vec![bar("x", 8.0)], reference));
        assert_eq!(short.dimensions(), PANEL);
        let (s, t) = (
            count(&short, BAR_COLOUR, 0..PANEL.0),
            count(&tall, BAR_COLOUR, 0..PANEL.0),
        );
        assert!(s > 0 && t > 3 * s, "short {s}, tall {t}");
    }

    #[test]
    fn empty_nan_and_zero_panels_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        let panels = [
            panel(vec![], None),
            panel(vec![bar("nan", f64::NAN), bar("inf", f64::INFINITY)], None),
            panel(vec![bar("zero", 0.0)], Some(("nan".into(), f64::NAN))),
            panel(vec![bar("neg", -3.0), bar("pos", 2.0)], None),
        ];
        bar_charts(&path, 2, &panels).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2 * PANEL.0, 2 * PANEL.1));
        // The all-missing panel (top right) has no bars; the empty one still has its frame.
        let top_right = img
            .enumerate_pixels()
            .filter(|(x, y, p)| {
                *x >= PANEL.0 && *y < PANEL.1 && p.0 == [BAR_COLOUR.0, BAR_COLOUR.1, BAR_COLOUR.2]
            })
            .count();
        assert_eq!(top_right, 0);
        assert!(
            img.enumerate_pixels()
                .any(|(x, y, p)| x < PANEL.0 && y < PANEL.1 && p.0 == [0, 0, 0])
        );
        bar_charts(&dir.path().join("none.png"), 3, &[]).unwrap();
    }

    #[test]
    fn values_print_with_three_significant_digits() {
        let cases = [
            (7.9, "7.9"),
            (7.94, "7.94"),
            (7.946, "7.95"),
            (12.0, "12"),
            (123.4, "123"),
            (1234.6, "1235"),
            (0.5, "0.5"),
            (0.012345, "0.0123"),
            (-2.5, "-2.5"),
            (0.0, "0"),
            (9.996, "10"),
            (f64::NAN, "n/a"),
            (1.5e-7, "1.50e-7"),
        ];
        for (v, s) in cases {
            assert_eq!(format_value(v), s, "{v}");
        }
    }

    #[test]
    fn y_range_has_head_room_over_values_and_reference() {
        let r = y_range(&panel(vec![bar("a", 2.0)], Some(("t".into(), 10.0))));
        assert!((r.0 - 0.0).abs() < 1e-12 && (r.1 - 11.5).abs() < 1e-9);
        let r = y_range(&panel(vec![bar("a", f64::NAN), bar("b", 0.0)], None));
        assert_eq!(r, (0.0, 1.0));
    }
}
