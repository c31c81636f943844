//! `linvit explain`.

use crate::CliError;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use linvit_train::charts::{draw_charts, Chart};
use linvit_train::explain::{explain, write_overlay, Explanation};

use crate::device::DEVICE_NAMES;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// A run directory (its best checkpoint) or a checkpoint folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files, and folders (every .jpg/.jpeg/.png below them, sorted).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Folder for layers.csv, rank.png and maps/.
    #[arg(long)]
    out: PathBuf,
    /// The query token, as fractions of the image's height and width: ROW,COL in [0, 1].
    #[arg(long, default_value = "0.5,0.5", value_parser = parse_query)]
    query: [f64; 2],
    /// A second run to explain on the same images, side by side (e.g. softmax vs FLatten).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Side of the map PNGs in pixels.
    #[arg(long, default_value_t = 192)]
    size: u32,
    #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
    device: String,
}

fn parse_query(text: &str) -> Result<[f64; 2], CliError> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| cli_error!("{text:?}: expected ROW,COL, two numbers in [0, 1]"))?;
    match parts[..] {
        [r, c] if (0.0..=1.0).contains(&r) && (0.0..=1.0).contains(&c) => Ok([r, c]),
        _ => Err(cli_error!(
            "{text:?}: expected ROW,COL, two numbers in [0, 1]"
        )),
    }
}

pub fn run(a: ExplainArgs) -> ExitCode {
    super::with_device(&a.device, |device| explain_command(&a, device))
}

/// A run's name in file names and the CSV: its folder's name.
fn model_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

fn explain_command(a: &ExplainArgs, device: &Device) -> Result<String, CliError> {
    let mut models = vec![a.checkpoint.clone()];
    models.extend(a.compare.clone());
    let names: Vec<String> = models.iter().map(|m| model_name(m)).collect();
    if names.len() == 2 && names[0] == names[1] {
        return Err(cli_error!(
            "--compare {}: two runs named {:?}; rename one folder",
            models[1].display(),
            names[0]
        ));
    }
    let mut runs = Vec::new();
    for model in &models {
        runs.push(explain(model, &a.images, a.query, device)?);
    }
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    std::fs::create_dir_all(&a.out).map_err(|e| io(&a.out, e))?;
    let mut maps = 0;
    for (name, explained) in names.iter().zip(&runs) {
        for (i, e) in explained.iter().enumerate() {
            // Numbered: images from different folders may share a name.
            let stem = e.image.file_stem().unwrap_or_default().to_string_lossy();
            let dir = a.out.join("maps").join(format!("{i:02}_{stem}")).join(name);
            std::fs::create_dir_all(&dir).map_err(|err| io(&dir, err))?;
            for m in &e.maps {
                let file = dir.join(format!("layer{:02}_{}_{}.png", m.layer, m.kind, m.name));
                write_overlay(&file, &e.input, m, a.size).map_err(|err| err.to_string())?;
                maps += 1;
            }
        }
    }
    let csv = a.out.join("layers.csv");
    std::fs::write(&csv, layers_csv(&names, &runs)).map_err(|e| io(&csv, e))?;
    let png = a.out.join("rank.png");
    draw_charts(&png, &rank_charts(&names, &runs))
        .map_err(|e| cli_error!("{}: {e}", png.display()))?;
    Ok(format!(
        "{} image(s), {} model(s): {} per-head rows in {}, rank and entropy per layer in {}, {maps} maps under {}",
        runs[0].len(),
        runs.len(),
        runs.iter().flatten().map(|e| e.heads.len()).sum::<usize>(),
        csv.display(),
        png.display(),
        a.out.join("maps").display()
    ))
}

/// One line per model, image, layer and head.
fn layers_csv(names: &[String], runs: &[Vec<Explanation>]) -> String {
    let mut csv = String::from(
        "model,image,layer,kind,grid,windowed,head,rows,cols,rank_rows,rank,entropy,max_entropy\n",
    );
    for (name, explained) in names.iter().zip(runs) {
        for e in explained {
            for h in &e.heads {
                let _ = writeln!(
                    csv,
                    "{name},{},{},{},{}x{},{},{},{},{},{},{:.2},{},{:.4}",
                    e.image.display(),
                    h.layer,
                    h.kind,
                    h.grid[0],
                    h.grid[1],
                    h.windowed,
                    h.head,
                    h.rows,
                    h.cols,
                    h.rank_rows,
                    h.rank,
                    h.entropy.map(|v| format!("{v:.4}")).unwrap_or_default(),
                    h.max_entropy
                );
            }
        }
    }
    csv
}

/// Rank and mean row entropy per layer (means over heads and images), one series per model.
fn rank_charts(names: &[String], runs: &[Vec<Explanation>]) -> Vec<Chart> {
    let mut rank = Chart::new("numerical rank of the attention matrix", "layer", "rank");
    let mut entropy = Chart::new("mean row entropy", "layer", "entropy (nats)");
    for (name, explained) in names.iter().zip(runs) {
        let layers = explained
            .iter()
            .flat_map(|e| e.heads.iter().map(|h| h.layer + 1))
            .max()
            .unwrap_or(0);
        let mean = |layer: usize, f: &dyn Fn(&linvit_train::explain::HeadStats) -> Option<f64>| {
            let v: Vec<f64> = explained
                .iter()
                .flat_map(|e| e.heads.iter().filter(|h| h.layer == layer).filter_map(f))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let points = |f: &dyn Fn(&linvit_train::explain::HeadStats) -> Option<f64>| {
            (0..layers)
                .filter_map(|l| mean(l, f).map(|v| (l as f64, v)))
                .collect::<Vec<_>>()
        };
        rank = rank.with_series(name.clone(), points(&|h| Some(h.rank)));
        entropy = entropy.with_series(name.clone(), points(&|h| h.entropy));
    }
    vec![rank, entropy]
}
