//! `linvit predict`.

use std::path::PathBuf;
use std::process::ExitCode;

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
            linvit_models::checkpoint::write_atomic(path, text.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        if a.json {
            return Ok(serde_json::to_string_pretty(&predictions)?);
        }
        let mut text = String::new();
        for p in &predictions {
            text.push_str(&format!("{}\n", p.image.display()));
            for (name, _, prob) in &p.top {
                text.push_str(&format!("  {:>6.2}%  {name}\n", 100.0 * prob));
            }
        }
        Ok(text.trim_end().to_string())
    })
}
