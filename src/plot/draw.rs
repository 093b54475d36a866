//! Drawing a [`Plot`] with plotters: PNG (bitmap) or SVG, time on x in minutes from the
//! start (the start's UTC time in the axis title), values on y, a legend, and anomaly
//! periods shaded. Text needs a TrueType font: the first of `DTAAS_PLOT_FONT` and the
//! usual system paths that exists.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::data::Plot;

/// Where fonts usually are (Debian/Ubuntu `fonts-dejavu-core`, Fedora, Liberation).
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// Line colours, in legend order.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

/// The shade of anomaly periods.
const SHADE: RGBColor = RGBColor(255, 170, 170);

pub fn render(path: &Path, size: (u32, u32), title: &str, plot: &Plot) -> anyhow::Result<()> {
    load_font()?;
    let svg = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("svg") => true,
        Some(ext) if ext.eq_ignore_ascii_case("png") => false,
        _ => anyhow::bail!("{}: the file name must end in .png or .svg", path.display()),
    };
    let result = if svg {
        draw(SVGBackend::new(path, size).into_drawing_area(), title, plot)
    } else {
        draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            title,
            plot,
        )
    };
    result.map_err(|e| e.context(format!("cannot draw {}", path.display())))
}

fn load_font() -> anyhow::Result<()> {
    let candidates = std::env::var("DTAAS_PLOT_FONT")
        .ok()
        .into_iter()
        .chain(FONT_PATHS.iter().map(|p| p.to_string()));
    for candidate in candidates {
        if let Ok(bytes) = std::fs::read(&candidate) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    anyhow::bail!(
        "no TrueType font found for the plot's text; install one (apt-get install fonts-dejavu-core) \
         or set DTAAS_PLOT_FONT to a .ttf file"
    )
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    plot: &Plot,
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let minutes = |ts: i64| (ts - plot.start) as f64 / 60e9;
    let x_end = minutes(plot.end).max(1e-3);
    let values = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let (mut y_min, mut y_max) =
        values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((y_max - y_min) * 0.05).max(0.5);
    y_min -= pad;
    y_max += pad;
    let start = chrono::DateTime::from_timestamp_nanos(plot.start).format("%Y-%m-%d %H:%M:%S UTC");
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end, y_min..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(format!("time (min) since {start}, data time"))
        .y_desc("temperature (°C)")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    if !plot.shaded.is_empty() {
        chart
            .draw_series(plot.shaded.iter().map(|&(a, b)| {
                Rectangle::new(
                    [(minutes(a), y_min), (minutes(b), y_max)],
                    SHADE.mix(0.45).filled(),
                )
            }))
            .map_err(err)?
            .label("anomaly (lid open)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], SHADE.filled()));
    }
    for (i, series) in plot.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                series.points.iter().map(|&(ts, v)| (minutes(ts), v)),
                style,
            ))
            .map_err(err)?
            .label(series.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
