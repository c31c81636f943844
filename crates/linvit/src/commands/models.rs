//! `linvit models`.

use std::process::ExitCode;

use serde::Serialize;

use crate::catalog::{self, PresetRow};

#[derive(clap::Args)]
pub struct ModelsArgs {
    /// Print a JSON list of objects (name, params, flops, img_size, paper_params_m, ...).
    #[arg(long)]
    json: bool,
}

pub fn run(a: ModelsArgs) -> ExitCode {
    super::report(super::render(&Catalog(catalog::rows()), a.json))
}

/// What `linvit models` prints: a table of the presets, or with `--json` the list.
#[derive(Serialize)]
#[serde(transparent)]
struct Catalog(Vec<PresetRow>);

impl std::fmt::Display for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<22} {:>9} {:>9} {:>6}  {:>9}  paper",
            "preset", "params", "MACs", "size", "published"
        )?;
        for r in &self.0 {
            write!(
                f,
                "\n{:<22} {:>8.2}M {:>8.2}G {:>6}  {:>9}  {}{}",
                r.name,
                r.params as f64 / 1e6,
                r.flops as f64 / 1e9,
                r.img_size.map(|s| s.to_string()).unwrap_or_default(),
                r.paper_params_m
                    .map(|p| format!("{p}M"))
                    .unwrap_or_else(|| "-".into()),
                r.paper,
                r.discrepancy.map(|d| format!(" ({d})")).unwrap_or_default(),
            )?;
        }
        Ok(())
    }
}
