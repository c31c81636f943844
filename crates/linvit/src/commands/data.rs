//! `linvit data inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Counts per split and class, image size, mean/std; --grid writes augmented samples.
    ///
    /// Example: linvit data inspect --set data.kind=idx --grid samples.png
    Inspect {
        /// A run config whose [data] to read (default: the quickstart's).
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Write a 4x8 PNG grid of augmented training samples.
        #[arg(long)]
        grid: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: DataCommand) -> ExitCode {
    let DataCommand::Inspect {
        config,
        sets,
        grid,
        json,
    } = command;
    super::report(
        crate::run::data_config(config.as_deref(), &sets)
            .and_then(|data| crate::run::inspect_command(&data, grid.as_deref(), json)),
    )
}
