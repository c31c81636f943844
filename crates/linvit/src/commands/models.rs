//! `linvit models`.

use std::process::ExitCode;

use crate::catalog;

#[derive(clap::Args)]
pub struct ModelsArgs {
    /// Print a JSON list of objects (name, params, flops, img_size, paper_params_m, ...).
    #[arg(long)]
    json: bool,
}

pub fn run(a: ModelsArgs) -> ExitCode {
    models(a.json)
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
