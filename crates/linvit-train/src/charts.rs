//! General x/y charts for benchmarks and ablations, drawn side by side into one PNG: lines with
//! markers (time vs tokens, training curves) or markers alone (accuracy vs throughput), each axis
//! linear or logarithmic. Same font and PNG handling as `plot.rs`.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::{has_font, plot_err, save_png};
use crate::TrainError;

/// One named series of points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

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
        });
        self
    }

    /// The data range over finite points (positive ones on a log axis), padded a little.
    fn range(&self) -> Option<((f64, f64), (f64, f64))> {
        let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(x, y)| ok(x, self.log_x) && ok(y, self.log_y))
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
        Some((pad(x0, x1, self.log_x), pad(y0, y1, self.log_y)))
    }
}

fn draw_chart(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), String> {
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
            let mut ctx = $ctx.map_err(|e| e.to_string())?;
            let mut mesh = ctx.configure_mesh();
            if text {
                mesh.x_desc(chart.x_label.as_str())
                    .y_desc(chart.y_label.as_str());
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw().map_err(|e| e.to_string())?;
            for (i, s) in chart.series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|&(x, y)| {
                        x.is_finite()
                            && y.is_finite()
                            && (!chart.log_x || x > 0.0)
                            && (!chart.log_y || y > 0.0)
                    })
                    .collect();
                if chart.lines {
                    ctx.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                        .map_err(|e| e.to_string())?;
                }
                let drawn = ctx
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(|e| e.to_string())?;
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
                    .draw()
                    .map_err(|e| e.to_string())?;
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
    let size = (560 * n, 440u32);
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
