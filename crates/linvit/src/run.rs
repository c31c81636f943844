//! The commands that train and use models: `train`, `eval`, `predict`, `data inspect`,
//! `bench data`. Each resolves raw arguments into one config in one place and returns a
//! one-line error for the user.

use crate::CliError;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use linvit_data::{inspect, throughput, write_sample_grid, DataConfig, Split};
use linvit_train::config::{resolve, resolve_data, RunConfig};
use linvit_train::{evaluate, predict, resume_with, train, TrainOptions, TrainSummary};

/// The run config of `linvit train`: the file, or the embedded quickstart, then `--set`.
pub fn run_config(file: Option<&Path>, sets: &[String]) -> Result<RunConfig, CliError> {
    let config = resolve(file, sets)?;
    config.validate()?;
    Ok(config)
}

/// `runs/NAME`, or `runs/NAME-2`, ... when taken.
pub fn fresh_run_dir(name: &str) -> PathBuf {
    let base = Path::new("runs").join(name);
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|i| Path::new("runs").join(format!("{name}-{i}")))
        .find(|p| !p.exists())
        .expect("some suffix is free")
}

/// Trains (or resumes) and returns the summary.
pub fn train_command(
    config: Option<&Path>,
    sets: &[String],
    out: Option<&Path>,
    resume: Option<&Path>,
    devices: &[Device],
) -> Result<TrainSummary, CliError> {
    let (device, more) = devices.split_first().ok_or("no device given")?;
    let options = TrainOptions {
        devices: more.to_vec(),
        ..TrainOptions::default()
    };
    if let Some(run_dir) = resume {
        return resume_with(run_dir, sets, device, &options).map_err(CliError::from);
    }
    let resolved = run_config(config, sets)?;
    let name = config
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "quickstart".into());
    let run_dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| fresh_run_dir(&name));
    eprintln!("run directory: {}", run_dir.display());
    train(&resolved, &run_dir, device, &options).map_err(CliError::from)
}

/// The data section of a config file (or the quickstart's) with `--set data.key=value`.
pub fn data_config(config: Option<&Path>, sets: &[String]) -> Result<DataConfig, CliError> {
    let data = resolve_data(config, sets)?;
    data.validate()?;
    Ok(data)
}

pub fn eval_command(
    checkpoint: &Path,
    data: Option<DataConfig>,
    confusion_png: Option<&Path>,
    device: &Device,
) -> Result<linvit_train::Evaluation, CliError> {
    let evaluation = evaluate(checkpoint, data.as_ref(), device)?;
    if let Some(path) = confusion_png {
        evaluation.write_confusion_png(path)?;
    }
    Ok(evaluation)
}

pub fn predict_command(
    checkpoint: &Path,
    images: &[PathBuf],
    top_k: usize,
    device: &Device,
) -> Result<Vec<linvit_train::Prediction>, CliError> {
    predict(checkpoint, images, top_k, device).map_err(CliError::from)
}

/// `linvit data inspect`: a summary, and a PNG grid of augmented training samples if asked.
pub fn inspect_command(
    data: &DataConfig,
    grid: Option<&Path>,
    json: bool,
) -> Result<String, CliError> {
    let report = inspect(data, Some(20_000))?;
    let mut text = crate::commands::render(&report, json)?;
    if let Some(path) = grid {
        write_sample_grid(data, Split::Train, 4, 8, path)?;
        if !json {
            text.push_str(&format!(
                "\nwrote a 4x8 grid of augmented samples to {}",
                path.display()
            ));
        }
    }
    Ok(text)
}

/// `linvit bench data`: decoded + augmented images per second on the training split.
pub fn bench_data_command(
    data: &DataConfig,
    images: usize,
    batch: usize,
    json: bool,
) -> Result<String, CliError> {
    let t = throughput(data, Split::Train, images, batch)?;
    crate::commands::render(&t, json)
}
