//! Line charts and bar charts rendered to PNG in memory and written atomically.
//!
//! plotters draws with `ab_glyph` and the DejaVu Sans font compiled into the binary, so charts
//! render the same on a build host, in CI and on a Jetson without fontconfig.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

mod bars;

pub use bars::{Bar, BarPanel, bar_charts};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot draw chart {path}: {message}")]
    Draw { path: String, message: String },
    #[error(transparent)]
    Write(#[from] trident_core::Error),
}

/// One named curve.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn thicker (e.g. the mean over classes).
    pub emphasis: bool,
}

/// A chart's frame.
#[derive(Clone, Debug)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
}

const SIZE: (u32, u32) = (800, 600);
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; failure here would be a build defect.
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("embedded DejaVu Sans does not parse"));
    });
}

/// Draws `series` as lines and writes the PNG to `path` atomically.
pub fn line_chart(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<(), Error> {
    render(path, SIZE, |root| draw(root, chart, series))
}

/// Several charts in a grid of `columns` panels per row (e.g. training curves), one PNG.
pub fn chart_grid(
    path: &Path,
    columns: usize,
    panels: &[(Chart<'_>, Vec<Series>)],
) -> Result<(), Error> {
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (PANEL.0 * columns as u32, PANEL.1 * rows as u32);
    render(path, size, |root| {
        for (area, (chart, series)) in root.split_evenly((rows, columns)).iter().zip(panels) {
            draw(area, chart, series)?;
        }
        Ok(())
    })
}

const PANEL: (u32, u32) = (520, 380);

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn render(
    path: &Path,
    size: (u32, u32),
    paint: impl FnOnce(&Area<'_>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), Error> {
    register_font();
    let draw_error = |e: &dyn std::fmt::Display| Error::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut rgb = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_error(&e))?;
        paint(&root).map_err(|e| draw_error(&e))?;
        root.present().map_err(|e| draw_error(&e))?;
    }
    let img = image::RgbImage::from_raw(size.0, size.1, rgb).expect("buffer matches chart size");
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| draw_error(&e))?;
    trident_core::fsutil::write_atomic(path, &png)?;
    Ok(())
}

fn draw(
    root: &Area<'_>,
    chart: &Chart<'_>,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut ctx = ChartBuilder::on(root)
        .caption(chart.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(
            chart.x_range.0..chart.x_range.1,
            chart.y_range.0..chart.y_range.1,
        )?;
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = if s.emphasis {
            BLUE.to_rgba()
        } else {
            Palette99::pick(i).mix(0.8)
        };
        let width = if s.emphasis { 3 } else { 1 };
        let style = ShapeStyle::from(colour).stroke_width(width);
        ctx.draw_series(LineSeries::new(s.points.iter().copied(), style))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if !series.is_empty() {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_with_drawn_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        let s = Series {
            name: "diag".into(),
            points: vec![(0.0, 0.0), (1.0, 1.0)],
            emphasis: true,
        };
        let chart = Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
        };
        line_chart(&p, &chart, &[s]).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        // The emphasised series is blue; some pixels must be.
        assert!(img.pixels().any(|p| p.0 == [0, 0, 255]));
    }
}
