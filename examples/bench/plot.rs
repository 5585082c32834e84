//! SVG line charts (plotters): one y value per category on the x axis, a coloured line per
//! series, for the writers, ping-pong and fan-out results.

use std::path::Path;

use plotters::prelude::*;

use crate::common::Res;

/// One line on a chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Line colour.
    pub color: RGBColor,
    /// Dashed line with hollow markers instead of a solid one.
    pub dashed: bool,
    /// (x category index, y) pairs.
    pub points: Vec<(usize, f64)>,
}

/// A fixed colour per well-known target, a neutral one for others.
pub fn target_color(target: &str) -> RGBColor {
    match target {
        "postgres" => RGBColor(0x33, 0x66, 0xcc),
        "pgbouncer" => RGBColor(0xdd, 0x77, 0x11),
        "pgherald" => RGBColor(0x22, 0x99, 0x44),
        _ => RGBColor(0x88, 0x44, 0xaa),
    }
}

/// Draws `series` over the categories `x_labels` into an 900×540 SVG at `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_labels: &[String],
    series: &[Series],
) -> Res<()> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    // Categories sit at 0, 1, …, n-1 with half a step of margin; asking for n+1 labels
    // makes plotters put its key points on the integers, and the formatter names them.
    let n = x_labels.len().max(1);
    let x_range = -0.5..n as f64 - 0.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, 0.0..y_max)
        .map_err(|e| err(&e))?;
    let label_of = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            x_labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_labels(n + 1)
        .y_desc(y_desc)
        .x_label_formatter(&label_of)
        .y_label_formatter(&|y| short_number(*y))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    for s in series {
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(i, y)| (i as f64, y)).collect();
        let style = ShapeStyle {
            color: s.color.to_rgba(),
            filled: !s.dashed,
            stroke_width: 2,
        };
        let anno = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                .map_err(|e| err(&e))?
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| err(&e))?
        };
        let dashed = s.dashed;
        anno.label(s.label.clone()).legend(move |(x, y)| {
            let st = ShapeStyle {
                color: style.color,
                filled: true,
                stroke_width: 2,
            };
            if dashed {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (8, 0)], st)
                    + PathElement::new(vec![(13, 0), (20, 0)], st)
            } else {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (20, 0)], st)
                    + PathElement::new(vec![(0, 0), (0, 0)], st)
            }
        });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, style)))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// 1234567 → "1.2M", 12345 → "12.3k".
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
