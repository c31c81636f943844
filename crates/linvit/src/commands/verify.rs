//! `linvit verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use linvit_attention::Path;

use crate::device::{parse_device, DEVICE_NAMES};
use crate::reference::{discover, reference_root};
use crate::verify::{verify_all, VerifyReport};
use crate::CliError;

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
    a.path.run(|| {
        let found = parse_device(&a.device).and_then(|d| Ok((d, case_dirs(&a.paths)?)));
        let (device, dirs) = match found {
            Ok(found) => found,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        if !a.json {
            println!("{}", VerifyReport::head(Path::current()));
        }
        let report = verify_all(&dirs, &device, |row| {
            if a.json {
                println!("{}", serde_json::to_string(row).expect("reports serialise"));
            } else {
                println!("{row}");
            }
        });
        if !a.json {
            println!("{}", report.summary());
        }
        if report.all_passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

/// The case folders under `paths`, or under `LINVIT_REFERENCE_DIR` without any.
fn case_dirs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let root;
    let paths = match (paths, reference_root()) {
        ([], Some(r)) => {
            root = [r];
            &root[..]
        }
        ([], None) => {
            return Err(CliError::from(
                "no case folder given and LINVIT_REFERENCE_DIR names no folder; usage: linvit \
                 verify PATH...",
            ))
        }
        (paths, _) => paths,
    };
    let mut cases = Vec::new();
    for path in paths {
        cases.extend(discover(path)?);
    }
    Ok(cases)
}
