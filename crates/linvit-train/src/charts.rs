//! General x/y charts for benchmarks and ablations, drawn side by side into one PNG: lines with
//! markers (time vs tokens, training curves) or markers alone (accuracy vs throughput), each axis
//! linear or logarithmic. Same font and PNG handling as `plot.rs`.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::{has_font, plot_err, save_png, DrawError};
use crate::TrainError;

/// One named series of points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A vertical error bar per point, `y ± error` (e.g. the sample std over seeds); empty:
    /// none.
    pub errors: Vec<f64>,
}

/// Panel height in pixels, and what of it the plot area itself gets (less the caption, the
/// x-label area and margins): the legend's share of the height follows from these.
const PANEL_HEIGHT: u32 = 440;
const PLOT_HEIGHT: f64 = 350.0;
/// A legend row's height in pixels, and the legend box's padding.
const LEGEND_ROW: f64 = 20.0;
const LEGEND_PAD: f64 = 16.0;

/// One panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    /// Join the points of a series with a line (else markers only).
    pub lines: bool,
    pub series: Vec<Series>,
}

impl Chart {
    /// A linear-axis chart with lines.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            lines: true,
            series: Vec::new(),
        }
    }

    pub fn log_log(self) -> Self {
        Chart {
            log_x: true,
            log_y: true,
            ..self
        }
    }

    pub fn markers_only(self) -> Self {
        Chart {
            lines: false,
            ..self
        }
    }

    pub fn with_series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
            errors: Vec::new(),
        });
        self
    }

    /// A series whose points carry vertical error bars `y ± error` (one per point).
    pub fn with_error_bars(
        mut self,
        name: impl Into<String>,
        points: Vec<(f64, f64)>,
        errors: Vec<f64>,
    ) -> Self {
        assert_eq!(points.len(), errors.len(), "one error per point");
        self.series.push(Series {
            name: name.into(),
            points,
            errors,
        });
        self
    }

    /// Whether a point can be drawn: finite, and positive on a log axis.
    fn shows(&self, x: f64, y: f64) -> bool {
        let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
        ok(x, self.log_x) && ok(y, self.log_y)
    }

    /// The share of the plot's height, from the top, that the legend box covers.
    pub fn legend_share(&self) -> f64 {
        ((LEGEND_ROW * self.series.len() as f64 + LEGEND_PAD) / PLOT_HEIGHT).min(0.6)
    }

    /// The axis ranges: every finite point (positive ones on a log axis) and its error bar,
    /// padded a little, with the y axis extended upwards so that the legend's band at the top
    /// holds no point: the legend box is opaque, and a point under it (the best accuracy, at
    /// the top) would be hidden.
    pub fn range(&self) -> Option<((f64, f64), (f64, f64))> {
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| {
                s.points.iter().enumerate().flat_map(|(i, &(x, y))| {
                    let e = s
                        .errors
                        .get(i)
                        .copied()
                        .filter(|e| e.is_finite())
                        .unwrap_or(0.0);
                    [(x, y - e), (x, y + e)]
                })
            })
            .filter(|&(x, y)| self.shows(x, y))
            .collect();
        if pts.is_empty() {
            return None;
        }
        let pad = |lo: f64, hi: f64, log: bool| {
            if log {
                (lo / 1.3, hi * 1.3)
            } else if hi > lo {
                let d = (hi - lo) * 0.05;
                (lo - d, hi + d)
            } else {
                (lo - lo.abs().max(1.0) * 0.05, hi + hi.abs().max(1.0) * 0.05)
            }
        };
        let fold = |f: fn(&(f64, f64)) -> f64| {
            pts.iter()
                .map(f)
                .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)))
        };
        let (x0, x1) = fold(|p| p.0);
        let (y0, y1) = fold(|p| p.1);
        let (y0, y1) = pad(y0, y1, self.log_y);
        // Room for the legend: the points' range becomes the lower (1 - share) of the axis.
        let grow = 1.0 / (1.0 - self.legend_share());
        let y1 = if self.log_y {
            y0 * (y1 / y0).powf(grow)
        } else {
            y0 + (y1 - y0) * grow
        };
        Some((pad(x0, x1, self.log_x), (y0, y1)))
    }
}

fn draw_chart(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), DrawError> {
    let Some(((x0, x1), (y0, y1))) = chart.range() else {
        return Ok(());
    };
    let text = has_font();
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(&chart.title, ("sans-serif", 18))
            .x_label_area_size(35)
            .y_label_area_size(60);
    }
    macro_rules! draw {
        ($ctx:expr) => {{
            let mut ctx = $ctx?;
            let mut mesh = ctx.configure_mesh();
            if text {
                mesh.x_desc(chart.x_label.as_str())
                    .y_desc(chart.y_label.as_str());
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw()?;
            for (i, s) in chart.series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|&(x, y)| chart.shows(x, y))
                    .collect();
                if chart.lines {
                    ctx.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                }
                let bars: Vec<(f64, f64, f64)> = s
                    .points
                    .iter()
                    .zip(&s.errors)
                    .filter(|(&(x, y), e)| chart.shows(x, y) && e.is_finite() && **e > 0.0)
                    .map(|(&(x, y), &e)| (x, y, e))
                    .collect();
                ctx.draw_series(bars.iter().map(|&(x, y, e)| {
                    ErrorBar::new_vertical(x, y - e, y, y + e, color.stroke_width(2), 10)
                }))?;
                let drawn =
                    ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
                if text {
                    drawn
                        .label(s.name.as_str())
                        .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
                }
            }
            if text {
                ctx.configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperLeft)
                    .draw()?;
            }
        }};
    }
    match (chart.log_x, chart.log_y) {
        (false, false) => draw!(builder.build_cartesian_2d(x0..x1, y0..y1)),
        (true, false) => draw!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
        (false, true) => draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
        (true, true) => {
            draw!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale()))
        }
    }
    Ok(())
}

/// Draws `charts` side by side (each 560x440) into the PNG at `path`.
pub fn draw_charts(path: &Path, charts: &[Chart]) -> Result<(), TrainError> {
    let n = charts.len().max(1) as u32;
    let size = (560 * n, PANEL_HEIGHT);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let areas = root.split_evenly((1, n as usize));
        for (area, chart) in areas.iter().zip(charts) {
            draw_chart(area, chart).map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(path, buf, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_range_ignores_points_that_a_log_axis_cannot_show() {
        let chart = Chart::new("t", "x", "y")
            .log_log()
            .with_series("a", vec![(0.0, 1.0), (10.0, 100.0), (100.0, f64::NAN)]);
        let ((x0, x1), (y0, y1)) = chart.range().unwrap();
        assert!(x0 > 0.0 && x0 < 10.0 && x1 > 10.0, "{x0} {x1}");
        assert!(y0 < 100.0 && y1 > 100.0, "{y0} {y1}");
    }

    #[test]
    fn every_point_and_error_bar_lies_inside_the_axes_and_below_the_legend() {
        // An ablation table whose best accuracy is also the slowest point: top left, where the
        // legend goes (the committed flatten_components plot hid it there).
        let rows = [
            ("vanilla linear", 636.0, 79.53, 0.14),
            ("+ focusing (p=3)", 164.0, 79.50, 0.42),
            ("+ focusing + DWC (FLatten)", 167.0, 80.38, 0.26),
            ("softmax", 555.0, 79.43, 0.14),
        ];
        let mut chart = Chart::new("acc", "img/s", "top-1").markers_only();
        for (name, x, y, e) in rows {
            chart = chart.with_error_bars(name, vec![(x, y)], vec![e]);
        }
        let ((x0, x1), (y0, y1)) = chart.range().unwrap();
        let legend_bottom = y1 - (y1 - y0) * chart.legend_share();
        for (name, x, y, e) in rows {
            assert!(x0 < x && x < x1, "{name}: x {x} outside {x0}..{x1}");
            assert!(y0 < y - e, "{name}: error bar below the axis");
            assert!(
                y + e < legend_bottom,
                "{name}: {y} + {e} under the legend (from {legend_bottom})"
            );
        }
        // On a log axis too.
        let chart = Chart::new("t", "x", "y")
            .log_log()
            .with_series("a", vec![(1.0, 1.0), (10.0, 1000.0)]);
        let ((_, _), (y0, y1)) = chart.range().unwrap();
        let share = chart.legend_share();
        assert!((1000f64.ln() - y0.ln()) / (y1.ln() - y0.ln()) < 1.0 - share);
    }

    #[test]
    fn charts_are_written_as_png() {
        let dir = std::env::temp_dir().join(format!("linvit-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.png");
        let charts = [
            Chart::new("time", "tokens", "ms")
                .log_log()
                .with_series("softmax", vec![(196.0, 1.0), (784.0, 16.0)]),
            Chart::new("acc", "img/s", "top-1")
                .markers_only()
                .with_series("p=3", vec![(100.0, 0.9)]),
        ];
        draw_charts(&path, &charts).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (1120, 440));
    }
}
