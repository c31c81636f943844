//! `linvit predict`.

use std::path::PathBuf;
use std::process::ExitCode;

use linvit_train::Prediction;
use serde::Serialize;

use crate::device::DEVICE_NAMES;

#[derive(clap::Args)]
pub struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files, and folders (every .jpg/.jpeg/.png below them, sorted).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    #[arg(long)]
    json: bool,
    /// Also write the predictions to this CSV file: image, then class and probability for
    /// each of the top k.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
    device: String,
}

pub fn run(a: PredictArgs) -> ExitCode {
    super::with_device(&a.device, |device| {
        let predictions = crate::run::predict_command(&a.checkpoint, &a.images, a.top_k, device)?;
        if let Some(path) = &a.csv {
            let text = linvit_train::predictions_csv(&predictions);
            linvit_models::checkpoint::write_atomic(path, text.as_bytes())?;
        }
        super::render(&Predictions(predictions), a.json)
    })
}

/// What `linvit predict` prints: each image with its top classes, or with `--json` the list.
#[derive(Serialize)]
#[serde(transparent)]
struct Predictions(Vec<Prediction>);

impl std::fmt::Display for Predictions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", p.image.display())?;
            for (name, _, prob) in &p.top {
                write!(f, "\n  {:>6.2}%  {name}", 100.0 * prob)?;
            }
        }
        Ok(())
    }
}
