//! `linvit lm train` and `linvit lm generate`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::device::DEVICE_NAMES;

#[derive(clap::Subcommand)]
pub enum LmCommand {
    /// Train a TransNormer language model on bytes. Without --config it runs the LM quickstart
    /// on the embedded procedural stories (a few minutes on 2 CPU cores).
    ///
    /// Examples: linvit lm train
    ///           linvit lm train --set data.path=book.txt --set train.steps=2000
    ///           linvit lm train --resume runs/lm_quickstart
    Train {
        #[command(flatten)]
        files: super::RunFiles,
        /// Continue the run in this directory from its newest checkpoint (taken at every
        /// validation), with the run's own config.
        #[arg(long, conflicts_with_all = ["config", "out", "sets"])]
        resume: Option<PathBuf>,
        #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
        device: String,
    },
    /// Continue a prompt with a trained LM: the prompt is prefilled in blocks, then every new
    /// token costs one recurrent step on a fixed-size state (memory does not grow).
    ///
    /// Example: linvit lm generate --checkpoint runs/lm_quickstart --prompt "Mara lived near"
    Generate {
        /// A run directory of `linvit lm train`.
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "")]
        prompt: String,
        /// Tokens (bytes) to generate.
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        /// Softmax temperature; 0 always takes the most likely byte.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Sample among the k most likely bytes (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print timing and state size as JSON on stderr.
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
        device: String,
    },
}

pub fn run(command: LmCommand) -> ExitCode {
    match command {
        LmCommand::Train {
            files,
            resume,
            device,
        } => super::with_device(&device, |device| {
            let s = match resume {
                Some(run_dir) => crate::lm::resume_command(&run_dir, device)?,
                None => crate::lm::train_command(
                    files.config.as_deref(),
                    &files.sets,
                    files.out.as_deref(),
                    device,
                )?,
            };
            super::print_skipped_steps(&s.skipped_steps);
            Ok(format!(
                "trained {} steps in {:.0} s ({:.0} tokens/s); validation {:.3} -> {:.3} bits/byte; run in {}",
                s.steps,
                s.seconds,
                s.tokens_per_s,
                s.initial_val_bpb,
                s.final_val_bpb,
                s.run_dir.display()
            ))
        }),
        LmCommand::Generate {
            checkpoint,
            prompt,
            tokens,
            temperature,
            top_k,
            seed,
            stats,
            device,
        } => super::with_device(&device, |device| {
            let sampling = linvit_train::lm::Sampling {
                temperature,
                top_k,
                seed,
            };
            let s = crate::lm::generate_command(&checkpoint, &prompt, tokens, sampling, device)?;
            if stats {
                eprintln!("{}", serde_json::to_string(&s)?);
            }
            Ok(String::new())
        }),
    }
}
