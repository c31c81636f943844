//! `linvit ablate`: the thin command over `linvit_train::ablate` (a base config plus sweep
//! axes, run point by point, summarised as tables and plots).

use crate::CliError;
use std::path::PathBuf;

use linvit_train::ablate::{default_out, report, run_experiment, AblateOptions, Experiment};
use linvit_train::{Progress, TrainOptions};

/// `linvit ablate` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct AblateArgs {
    /// The experiment file: a run config with an [ablation] table (base, seeds, variants, axes).
    #[arg(required_unless_present = "report")]
    pub experiment: Option<PathBuf>,
    /// List the points (with their run directories and whether they are finished) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Rebuild results.md/.csv and the plots from finished run directories (or folders of them)
    /// alone, for every experiment they hold; trains and times nothing.
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with_all = ["experiment", "dry_run", "sets", "jobs", "rebench"])]
    pub report: Vec<PathBuf>,
    /// Override a key of the base config: --set train.epochs=2
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Where the points' run directories go (one per resolved config, shared by experiments).
    #[arg(long, default_value = "runs/ablate")]
    pub runs: PathBuf,
    /// Where results.csv, results.md and the plots go (default: next to the file, named after it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Points trained at once. The training step of each point is timed afterwards, alone,
    /// whatever this is. Above 1 the table has no peak memory (the points share the process),
    /// and a point's numbers may differ from a one-at-a-time run in the last bits (the points
    /// share the thread pool); 1 gives the same numbers for the same seed every time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,
    /// Time every point's training step again, also where it was timed before.
    #[arg(long)]
    pub rebench: bool,
    #[arg(long, default_value = "flex", help = format!("Backend: {}", crate::device::DEVICE_NAMES))]
    pub device: String,
}

/// Runs `linvit ablate`; returns what to print.
pub fn ablate_command(args: &AblateArgs) -> Result<String, CliError> {
    if !args.report.is_empty() {
        let folders = report(&args.report, args.out.as_deref())?;
        let list: Vec<String> = folders
            .iter()
            .map(|f| f.join("results.md").display().to_string())
            .collect();
        return Ok(format!("rebuilt {}", list.join(", ")));
    }
    let path = args.experiment.as_ref().expect("clap requires it");
    let experiment = Experiment::load(path, &args.sets)?;
    if args.dry_run {
        return Ok(experiment.listing(&args.runs));
    }
    let device = crate::device::parse_device(&args.device)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(path, &experiment.name));
    let options = AblateOptions {
        train: TrainOptions {
            progress: Progress::Lines,
            ..TrainOptions::default()
        },
        jobs: args.jobs as usize,
        rebench: args.rebench,
        ..AblateOptions::default()
    };
    let results = run_experiment(&experiment, &args.runs, &out, &device, &options)?;
    Ok(format!(
        "{} points; results in {}",
        results.len(),
        out.join("results.md").display()
    ))
}
