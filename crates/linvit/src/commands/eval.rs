//! `linvit eval`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::device::DEVICE_NAMES;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A run directory (its best checkpoint) or a checkpoint folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluate on this config's [data] instead of the run's own.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override data keys: --set data.kind=idx --set data.path=/usr/share/datasets/fashion-mnist
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Write the confusion matrix as a PNG.
    #[arg(long)]
    confusion: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
    device: String,
}

pub fn run(a: EvalArgs) -> ExitCode {
    super::with_device(&a.device, |device| {
        let data = if a.config.is_some() || !a.sets.is_empty() {
            Some(crate::run::data_config(a.config.as_deref(), &a.sets)?)
        } else {
            None
        };
        let e = crate::run::eval_command(&a.checkpoint, data, a.confusion.as_deref(), device)?;
        super::render(&e, a.json)
    })
}
