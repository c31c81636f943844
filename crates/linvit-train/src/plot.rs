//! PNG plots with plotters' bitmap backend: training curves and confusion matrices. Text is
//! drawn with a TrueType font found on the system (DejaVu/Liberation); without one the plots are
//! drawn without labels rather than failing. Encoded as PNG by `image`.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::metrics::History;
use crate::TrainError;

const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a system font once; whether text can be drawn.
pub(crate) fn has_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p)
                .ok()
                .map(|bytes| {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
                })
                .unwrap_or(false)
        })
    })
}

pub(crate) fn plot_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        reason: format!("cannot draw the plot: {e}"),
    }
}

pub(crate) fn save_png(path: &Path, buf: Vec<u8>, (w, h): (u32, u32)) -> Result<(), TrainError> {
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(path, "bad buffer"))?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| plot_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| plot_err(path, e))
}

type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// What plotters reports when drawing into an in-memory bitmap fails.
pub(crate) type DrawError =
    DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    series: &[Series],
) -> Result<(), DrawError> {
    let text = has_font();
    let points = series.iter().flat_map(|s| s.2.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        if !y.is_finite() {
            continue;
        }
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Ok(());
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + y0.abs().max(1e-3);
    }
    let mut builder = ChartBuilder::on(area);
    builder.margin(10);
    if text {
        builder
            .caption(title, ("sans-serif", 18))
            .x_label_area_size(30)
            .y_label_area_size(55);
    }
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            let mut mesh = chart.configure_mesh();
            if text {
                mesh.x_desc(x_label).x_labels(6).y_labels(8);
            } else {
                mesh.disable_x_mesh()
                    .disable_y_mesh()
                    .x_labels(0)
                    .y_labels(0);
            }
            mesh.draw()?;
            for (name, color, pts) in series.iter().filter(|s| !s.2.is_empty()) {
                let pts: Vec<(f64, f64)> =
                    pts.iter().copied().filter(|p| p.1.is_finite()).collect();
                let s = chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
                if text {
                    let c = *color;
                    s.label(*name)
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c));
                }
            }
            if text {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()?;
            }
        }};
    }
    draw!(builder.build_cartesian_2d(x0..x1, y0..y1)?);
    Ok(())
}

/// `curves.png`: loss, accuracy and learning rate of a run.
pub fn plot_curves(history: &History, path: &Path) -> Result<(), TrainError> {
    let size = (1200u32, 400u32);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let areas = root.split_evenly((1, 3));
        let ep = |f: &dyn Fn(&crate::metrics::EpochRow) -> Option<f64>| -> Vec<(f64, f64)> {
            history
                .epochs
                .iter()
                .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
                .collect()
        };
        let loss = [
            ("train", BLUE, ep(&|r| Some(r.train_loss))),
            ("val", RED, ep(&|r| r.val_loss)),
        ];
        let acc = [
            ("train top-1", BLUE, ep(&|r| Some(r.train_top1))),
            ("val top-1", RED, ep(&|r| r.val_top1)),
            ("val top-5", GREEN, ep(&|r| r.val_top5)),
            ("EMA val top-1", MAGENTA, ep(&|r| r.ema_val_top1)),
        ];
        let lr: Vec<(f64, f64)> = history
            .steps
            .iter()
            .map(|r| (r.step as f64, r.lr))
            .collect();
        panel(&areas[0], "loss", "epoch", &loss).map_err(|e| plot_err(path, e))?;
        panel(&areas[1], "accuracy", "epoch", &acc).map_err(|e| plot_err(path, e))?;
        panel(&areas[2], "learning rate", "step", &[("lr", BLACK, lr)])
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(path, buf, size)
}

/// A confusion matrix as a heat map: rows true class, columns predicted, shaded by the row's
/// fraction.
pub fn plot_confusion(
    confusion: &[Vec<u64>],
    class_names: &[String],
    path: &Path,
) -> Result<(), TrainError> {
    let k = confusion.len().max(1);
    let text = has_font();
    let cell = (600 / k).clamp(4, 48) as u32;
    let margin = if text { 120 } else { 10 };
    let side = cell * k as u32 + margin + 10;
    let size = (side, side);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        for (i, row) in confusion.iter().enumerate() {
            let total: u64 = row.iter().sum::<u64>().max(1);
            for (j, &c) in row.iter().enumerate() {
                let f = c as f64 / total as f64;
                let shade = (255.0 * (1.0 - f)) as u8;
                let x = (margin + j as u32 * cell) as i32;
                let y = (margin + i as u32 * cell) as i32;
                let color = if i == j {
                    RGBColor(shade, 255, shade)
                } else {
                    RGBColor(255, shade, shade)
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    color.filled(),
                ))
                .map_err(|e| plot_err(path, e))?;
                if text && cell >= 28 && c > 0 {
                    root.draw(&Text::new(
                        c.to_string(),
                        (x + 3, y + cell as i32 / 3),
                        ("sans-serif", 11),
                    ))
                    .map_err(|e| plot_err(path, e))?;
                }
            }
        }
        if text {
            let style = ("sans-serif", 12);
            root.draw(&Text::new("rows: true, columns: predicted", (5, 5), style))
                .map_err(|e| plot_err(path, e))?;
            if cell >= 12 {
                for (i, name) in class_names.iter().enumerate().take(k) {
                    let short: String = name.chars().take(16).collect();
                    let y = (margin + i as u32 * cell + cell / 3) as i32;
                    root.draw(&Text::new(short.clone(), (5, y), style))
                        .map_err(|e| plot_err(path, e))?;
                    let x = (margin + i as u32 * cell) as i32;
                    root.draw(&Text::new(
                        short,
                        (x + 2, margin as i32 - 14),
                        ("sans-serif", 10),
                    ))
                    .map_err(|e| plot_err(path, e))?;
                }
            }
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(path, buf, size)
}

/// A log-log line plot, one line per named series (benchmarks: time or throughput against the
/// number of tokens). Non-positive points are left out.
pub fn plot_loglog(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), TrainError> {
    const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, BLACK, CYAN];
    let size = (900u32, 600u32);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    let positive = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .copied()
            .filter(|&(x, y)| x > 0.0 && y > 0.0 && y.is_finite())
            .collect()
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| positive(&s.1)).collect();
    if all.is_empty() {
        return Err(plot_err(path, "no positive points to plot"));
    }
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        let lo = all.iter().map(f).fold(f64::MAX, f64::min);
        let hi = all.iter().map(f).fold(f64::MIN, f64::max);
        (lo / 1.5)..(hi * 1.5)
    };
    let (xs, ys) = (bounds(|p| p.0), bounds(|p| p.1));
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let text = has_font();
        let mut builder = ChartBuilder::on(&root);
        builder.margin(15);
        if text {
            builder
                .caption(title, ("sans-serif", 20))
                .x_label_area_size(40)
                .y_label_area_size(70);
        }
        let mut chart = builder
            .build_cartesian_2d(xs.log_scale(), ys.log_scale())
            .map_err(|e| plot_err(path, e))?;
        let whole = |v: &f64| format!("{v:.0}");
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(x_label)
                .y_desc(y_label)
                .x_labels(6)
                .y_labels(8)
                .x_label_formatter(&whole)
                .y_label_formatter(&whole);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| plot_err(path, e))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts = positive(pts);
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| plot_err(path, e))?;
            let line = chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?;
            if text {
                line.label(name.as_str())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(path, buf, size)
}
