//! `linvit verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use linvit_attention::Path;

use crate::device::{parse_device, DEVICE_NAMES};
use crate::reference::{discover, reference_root};
use crate::verify::{verify_case, CaseReport, Status};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Case folders, or folders of case folders.
    paths: Vec<PathBuf>,
    /// Backend to run on.
    #[arg(long, default_value = "flex", help = format!("Backend to run on: {DEVICE_NAMES}"))]
    device: String,
    /// Print one JSON object per case instead of a table.
    #[arg(long)]
    json: bool,
    /// `auto`: on flex, the fused CPU kernels (inference) and fused autodiff nodes with their
    /// own backward (training) wherever they apply, as `linvit train` runs; `ops`: Burn's ops
    /// throughout, the reference the fused path is tested against.
    #[arg(long, default_value = "auto", value_parser = str::parse::<Path>)]
    path: Path,
}

pub fn run(a: VerifyArgs) -> ExitCode {
    a.path.run(|| verify(&a.paths, &a.device, a.json))
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
        println!("path: {}", Path::current().name());
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
            format!(
                "worst {} {}; {} fused nodes",
                // Decode cases compare prefill logits and recurrent states, not gradients.
                if r.kind == "decode" {
                    "state/prefill"
                } else {
                    "gradient"
                },
                r.worst_grad.as_deref().unwrap_or("-"),
                r.fused_nodes
            ),
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
