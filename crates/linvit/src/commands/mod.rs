//! The `linvit` subcommands: each file holds one command's arguments (clap) and the function
//! that runs it; `main.rs` only parses and dispatches. What the commands do lives in the
//! library modules beside this one (`run`, `bench`, `verify`, ...), which the tests call too.

use crate::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use clap::Subcommand;

use crate::device::{parse_device, remote_failure_as_error};

pub mod bench;
pub mod data;
pub mod eval;
pub mod explain;
pub mod import;
pub mod lm;
pub mod models;
pub mod predict;
pub mod serve;
pub mod train;
pub mod verify;

/// Where a training run's recipe comes from and where it goes: `linvit train` and
/// `linvit lm train` take these alike.
#[derive(clap::Args)]
pub struct RunFiles {
    /// A run config (TOML with [model], [data], [train]); default: the embedded quickstart.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any key: --set train.lr=1e-3 --set model.preset=tiny_agent_pvt
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run directory (default runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a classifier. Without --config it runs the quickstart: a tiny FLatten-PVT on the
    /// embedded procedural dataset, a few minutes on 2 CPU cores.
    ///
    /// Examples: linvit train
    ///           linvit train --config configs/fashion_mnist_flatten.toml --set train.epochs=5
    ///           linvit train --resume runs/quickstart
    Train(train::TrainArgs),
    /// Top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint on a dataset.
    ///
    /// Example: linvit eval --checkpoint runs/quickstart --confusion confusion.png
    Eval(eval::EvalArgs),
    /// The most probable classes of images (PNG/JPEG) under a checkpoint, in batches of the
    /// run's batch size.
    ///
    /// Example: linvit predict --checkpoint runs/quickstart cat.png photos/ --csv predictions.csv
    Predict(predict::PredictArgs),
    /// What the attention of a trained model does on given images: for every attention layer,
    /// the row of a query token (default: the centre) overlaid on the image (agent attention:
    /// also the keys its strongest agent gathers from), and the numerical rank and mean row
    /// entropy of each head's attention matrix (layers.csv, rank.png). The matrices are the
    /// ones each family implies: softmax's scores, FLatten's phi(q) phi(k)^T / normaliser,
    /// agent attention's query-to-agent times agent-to-key.
    ///
    /// Example: linvit explain --checkpoint runs/flatten image.png --out explain --compare runs/softmax
    Explain(explain::ExplainArgs),
    /// Host this machine's devices for `linvit train --device ws://HOST:PORT` on another
    /// machine (Burn's remote backend over WebSocket: unencrypted, for a trusted network).
    /// Prints the address once listening; serves until stopped. Needs a build with the opt-in
    /// `remote` feature (`cargo install --path crates/linvit --features remote`), on both sides.
    ///
    /// Example: linvit serve --bind 0.0.0.0:3000 --device wgpu
    ///          linvit train --device ws://gpu-box:3000     (on the other machine)
    Serve(serve::ServeArgs),
    /// Causal language models from TransNormer blocks: train, generate.
    Lm {
        #[command(subcommand)]
        command: lm::LmCommand,
    },
    /// Look at a dataset: counts, sizes, statistics, a grid of augmented samples.
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Run an ablation grid: a base config plus sweep axes, each point in its own run directory
    /// (finished points are not rerun), then results.csv, results.md and PNG plots.
    ///
    /// Example: linvit ablate experiments/flatten_components.toml --dry-run
    Ablate(crate::ablate::AblateArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// List the model presets with parameters, MACs and the papers' numbers.
    ///
    /// Example: linvit models --json
    Models(models::ModelsArgs),
    /// Load the authors' checkpoint (.pth or .safetensors, upstream or timm key names) into a
    /// preset and save it as a linvit model folder; every missing, unexpected or mis-shaped key
    /// is named.
    ///
    /// Example: linvit import flatten_swin_t flatten_swin_t.pth --out models/flatten_swin_t
    Import(import::ImportArgs),
    /// Check our modules against tensors produced by the authors' PyTorch code.
    ///
    /// Each PATH is a case folder (holding case.json, weights.safetensors, io.safetensors) or a
    /// folder of case folders; without one, LINVIT_REFERENCE_DIR is used. Exits non-zero if any
    /// case fails or cannot be run.
    ///
    /// Example: linvit verify ../shared/reference --device flex
    Verify(verify::VerifyArgs),
}

/// Runs a parsed command; returns the process's exit status.
pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Lm { command } => lm::run(command),
        Command::Data { command } => data::run(command),
        Command::Ablate(args) => report(crate::ablate::ablate_command(&args)),
        Command::Bench { command } => bench::run(command),
        Command::Models(args) => models::run(args),
        Command::Import(args) => import::run(args),
        Command::Verify(args) => verify::run(args),
    }
}

/// A command's report as the text it prints: its `Display` (a table, a summary), or with
/// `--json` its JSON. One path for both, so the two never disagree on what a report holds.
pub fn render<R: std::fmt::Display + serde::Serialize>(
    report: &R,
    json: bool,
) -> Result<String, CliError> {
    Ok(if json {
        serde_json::to_string_pretty(report)?
    } else {
        report.to_string()
    })
}

/// Prints a command's result to stdout, or its one-line error to stderr with exit status 1.
pub fn report(result: Result<String, CliError>) -> ExitCode {
    match result {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `--device` (exit status 2 on a bad name), then runs the command.
pub fn with_device(
    name: &str,
    command: impl FnOnce(&Device) -> Result<String, CliError>,
) -> ExitCode {
    with_parsed(parse_device(name), |device| {
        remote_failure_as_error(name, || command(&device))
    })
}

/// [`with_device`] for a comma list of devices (at least one).
pub fn with_devices(
    names: &str,
    command: impl FnOnce(&[Device]) -> Result<String, CliError>,
) -> ExitCode {
    let devices = names.split(',').map(|n| parse_device(n.trim())).collect();
    with_parsed(devices, |devices: Vec<Device>| {
        remote_failure_as_error(names, || command(&devices))
    })
}

/// Runs the command on what the device names parsed to; a bad name exits with status 2.
fn with_parsed<T>(
    parsed: Result<T, CliError>,
    command: impl FnOnce(T) -> Result<String, CliError>,
) -> ExitCode {
    match parsed {
        Ok(devices) => report(command(devices)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The steps a run skipped for a non-finite value (`train.skip_nonfinite`), the first 20, on
/// stderr.
fn print_skipped_steps(steps: &[String]) {
    if steps.is_empty() {
        return;
    }
    eprintln!(
        "skipped {} steps with a non-finite loss or gradient:",
        steps.len()
    );
    for line in steps.iter().take(20) {
        eprintln!("  {line}");
    }
}
