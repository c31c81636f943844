//! `linvit`: vision transformers with linear attention, on Burn.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use clap::{Parser, Subcommand};
use linvit::catalog;
use linvit::device::{parse_device, DEVICE_NAMES};
use linvit::reference::{discover, reference_root};
use linvit::verify::{verify_case, CaseReport, Status};
use linvit_attention::import::load_upstream;
use linvit_models::checkpoint::save_model;
use linvit_models::presets;

#[derive(Parser)]
#[command(
    name = "linvit",
    version,
    about = "Vision transformers with linear attention, on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the model presets with parameters, MACs and the papers' numbers.
    ///
    /// Example: linvit models --json
    Models {
        /// Print a JSON list of objects (name, params, flops, img_size, paper_params_m, ...).
        #[arg(long)]
        json: bool,
    },
    /// Load the authors' checkpoint (.pth or .safetensors, upstream or timm key names) into a
    /// preset and save it as a linvit model folder; every missing, unexpected or mis-shaped key
    /// is named.
    ///
    /// Example: linvit import flatten_swin_t flatten_swin_t.pth --out models/flatten_swin_t
    Import {
        /// Preset name (see `linvit models`).
        preset: String,
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Folder to write model.json and model.bpk into.
        #[arg(long)]
        out: PathBuf,
        /// Number of classes of the checkpoint's head, when not the preset's 1000.
        #[arg(long)]
        num_classes: Option<usize>,
    },
    /// Check our modules against tensors produced by the authors' PyTorch code.
    ///
    /// Each PATH is a case folder (holding case.json, weights.safetensors, io.safetensors) or a
    /// folder of case folders; without one, LINVIT_REFERENCE_DIR is used. Exits non-zero if any
    /// case fails or cannot be run.
    ///
    /// Example: linvit verify ../shared/reference --device flex
    Verify {
        /// Case folders, or folders of case folders.
        paths: Vec<PathBuf>,
        /// Backend to run on.
        #[arg(long, default_value = "flex", help = format!("Backend to run on: {DEVICE_NAMES}"))]
        device: String,
        /// Print one JSON object per case instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    match cli.command {
        Command::Models { json } => models(json),
        Command::Import {
            preset,
            checkpoint,
            out,
            num_classes,
        } => import(&preset, &checkpoint, &out, num_classes),
        Command::Verify {
            paths,
            device,
            json,
        } => verify(&paths, &device, json),
    }
}

fn verify(paths: &[PathBuf], device: &str, json: bool) -> ExitCode {
    let device = match parse_device(device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let default_root;
    let paths = if paths.is_empty() {
        match reference_root() {
            Some(root) => {
                default_root = [root];
                &default_root[..]
            }
            None => {
                eprintln!(
                    "error: no case folder given and LINVIT_REFERENCE_DIR names no folder; \
                     usage: linvit verify PATH..."
                );
                return ExitCode::from(2);
            }
        }
    } else {
        paths
    };
    let mut cases = Vec::new();
    for path in paths {
        match discover(path) {
            Ok(found) => cases.extend(found),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if !json {
        println!(
            "{:<34} {:>10} {:>10}  {:<6} detail",
            "case", "output", "gradient", "result"
        );
    }
    let mut failed = 0;
    for dir in &cases {
        let report = verify_case(dir, &device);
        if !report.passed() {
            failed += 1;
        }
        if json {
            println!(
                "{}",
                serde_json::to_string(&report).expect("reports serialise")
            );
        } else {
            print_row(&report);
        }
    }
    if !json {
        println!("{} of {} cases passed", cases.len() - failed, cases.len());
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_row(r: &CaseReport) {
    let ratio = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let (result, detail) = match &r.status {
        Status::Pass => (
            "PASS",
            format!("worst gradient {}", r.worst_grad.as_deref().unwrap_or("-")),
        ),
        Status::Fail(why) => ("FAIL", why.clone()),
        Status::Unsupported(why) => ("UNSUP", why.clone()),
        Status::Error(why) => ("ERROR", why.clone()),
    };
    println!(
        "{:<34} {:>10} {:>10}  {:<6} {}",
        r.case,
        ratio(r.output_ratio),
        ratio(r.grad_ratio),
        result,
        detail
    );
}

fn models(json: bool) -> ExitCode {
    let rows = catalog::rows();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<22} {:>9} {:>9} {:>6}  {:>9}  paper",
        "preset", "params", "MACs", "size", "published"
    );
    for r in &rows {
        println!(
            "{:<22} {:>8.2}M {:>8.2}G {:>6}  {:>9}  {}{}",
            r.name,
            r.params as f64 / 1e6,
            r.flops as f64 / 1e9,
            r.img_size.map(|s| s.to_string()).unwrap_or_default(),
            r.paper_params_m
                .map(|p| format!("{p}M"))
                .unwrap_or_else(|| "-".into()),
            r.paper,
            r.discrepancy.map(|d| format!(" ({d})")).unwrap_or_default(),
        );
    }
    ExitCode::SUCCESS
}

fn import(name: &str, checkpoint: &Path, out: &Path, num_classes: Option<usize>) -> ExitCode {
    let run = || -> Result<String, String> {
        let preset = presets::preset(name)?;
        let overrides = match num_classes {
            Some(n) => serde_json::json!({ "num_classes": n }),
            None => serde_json::json!({}),
        };
        let config = preset.config_with(&overrides)?;
        config.validate()?;
        let mut model = config.init(&Device::flex());
        let applied = load_upstream(&mut model, checkpoint, &config.renames())
            .map_err(|e| e.to_string())?
            .applied
            .len();
        save_model(out, &config, model).map_err(|e| e.to_string())?;
        Ok(format!(
            "imported {applied} tensors from {} into {name}; saved to {}",
            checkpoint.display(),
            out.display()
        ))
    };
    match run() {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so `linvit models | head` would panic on the closed pipe; restore the
/// default so the program ends quietly like other command-line tools.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread starts; resets one signal's disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
