//! `linvit train`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::device::DEVICE_NAMES;

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    files: super::RunFiles,
    /// Continue the run in this directory from its newest complete checkpoint.
    #[arg(long, conflicts_with_all = ["config", "out"])]
    resume: Option<PathBuf>,
    /// Backend, or a comma list for data-parallel training (`--devices wgpu:0,wgpu:1`):
    /// each batch is split over the devices; the first holds the optimizer.
    #[arg(long, visible_alias = "devices", default_value = "flex", help = format!("Backend: {DEVICE_NAMES}; a comma list trains data-parallel"))]
    device: String,
}

fn percent(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2}%", 100.0 * v))
        .unwrap_or_else(|| "-".into())
}

pub fn run(a: TrainArgs) -> ExitCode {
    super::with_devices(&a.device, |devices| {
        let summary = crate::run::train_command(
            a.files.config.as_deref(),
            &a.files.sets,
            a.files.out.as_deref(),
            a.resume.as_deref(),
            devices,
        )?;
        if !summary.skipped_files.is_empty() {
            eprintln!(
                "skipped {} corrupt training images:",
                summary.skipped_files.len()
            );
            for line in &summary.skipped_files {
                eprintln!("  {line}");
            }
        }
        super::print_skipped_steps(&summary.skipped_steps);
        Ok(format!(
            "trained {} epochs in {:.0} s ({:.1} img/s); final val top-1 {}; best {} (epoch {}); run in {}",
            summary.epochs,
            summary.seconds,
            summary.images_per_s,
            percent(summary.final_val_top1),
            percent(summary.best_val_top1),
            summary.best_epoch.map(|e| e.to_string()).unwrap_or("-".into()),
            summary.run_dir.display()
        ))
    })
}
