//! `linvit lm train` and `linvit lm generate`: the TransNormer causal language model on bytes.

use crate::CliError;
use std::io::Write;
use std::path::Path;

use burn::tensor::Device;
use linvit_data::text::{decode, encode};
use linvit_train::lm::{
    generate, load_lm, resolve_lm, resume_lm, train_lm, GenerateStats, LmSummary, Sampling,
};

use crate::run::fresh_run_dir;

/// Trains an LM from a config (or the embedded quickstart) with `--set` overrides.
pub fn train_command(
    config: Option<&Path>,
    sets: &[String],
    out: Option<&Path>,
    device: &Device,
) -> Result<LmSummary, CliError> {
    let resolved = resolve_lm(config, sets)?;
    let name = config
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "lm_quickstart".into());
    let run_dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| fresh_run_dir(&name));
    eprintln!("run directory: {}", run_dir.display());
    train_lm(&resolved, &run_dir, device, &mut std::io::stderr()).map_err(CliError::from)
}

/// Continues the LM run in `run_dir` from its newest checkpoint.
pub fn resume_command(run_dir: &Path, device: &Device) -> Result<LmSummary, CliError> {
    eprintln!("run directory: {}", run_dir.display());
    Ok(resume_lm(run_dir, device, &mut std::io::stderr())?)
}

/// Continues `prompt` from a trained LM, streaming the text to stdout as it is produced.
pub fn generate_command(
    checkpoint: &Path,
    prompt: &str,
    tokens: usize,
    sampling: Sampling,
    device: &Device,
) -> Result<GenerateStats, CliError> {
    let (_, model) = load_lm(checkpoint, device)?;
    let mut stdout = std::io::stdout();
    let _ = write!(stdout, "{prompt}");
    // Bytes arrive one at a time; print whole UTF-8 characters only.
    let mut pending: Vec<u32> = Vec::new();
    let (_, stats) = generate(&model, &encode(prompt), tokens, sampling, device, |token| {
        pending.push(token);
        let text = decode(&pending);
        if !text.ends_with('\u{FFFD}') || pending.len() >= 4 {
            let _ = write!(stdout, "{text}");
            let _ = stdout.flush();
            pending.clear();
        }
    });
    if !pending.is_empty() {
        let _ = write!(stdout, "{}", decode(&pending));
    }
    let _ = writeln!(stdout);
    Ok(stats)
}
