//! `linvit ablate`: the thin command over `linvit_train::ablate` (a base config plus sweep
//! axes, run point by point, summarised as tables and plots).

use std::path::PathBuf;

use linvit_train::ablate::{run_experiment, Experiment};
use linvit_train::{Progress, TrainOptions};

/// `linvit ablate` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct AblateArgs {
    /// The experiment file: a run config with an [ablation] table (base, seeds, variants, axes).
    pub experiment: PathBuf,
    /// List the points (with their run directories and whether they are finished) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Override a key of the base config: --set train.epochs=2
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Where the points' run directories go (one per resolved config, shared by experiments).
    #[arg(long, default_value = "runs/ablate")]
    pub runs: PathBuf,
    /// Where results.csv, results.md and the plots go (default: next to the file, named after it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "flex", help = format!("Backend: {}", crate::device::DEVICE_NAMES))]
    pub device: String,
}

/// Runs `linvit ablate`; returns what to print.
pub fn ablate_command(args: &AblateArgs) -> Result<String, String> {
    let experiment = Experiment::load(&args.experiment, &args.sets).map_err(|e| e.to_string())?;
    if args.dry_run {
        return Ok(experiment.listing(&args.runs));
    }
    let device = crate::device::parse_device(&args.device)?;
    let out = args.out.clone().unwrap_or_else(|| {
        args.experiment
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(&experiment.name)
    });
    let options = TrainOptions {
        progress: Progress::Lines,
        ..TrainOptions::default()
    };
    let results = run_experiment(&experiment, &args.runs, &out, &device, &options)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} points; results in {}",
        results.len(),
        out.join("results.md").display()
    ))
}
