//! `linvit import`.

use crate::CliError;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use linvit_attention::import::load_upstream_resized;
use linvit_models::checkpoint::save_model;
use linvit_models::presets;

#[derive(clap::Args)]
pub struct ImportArgs {
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
    /// Change one of the preset's constructor arguments (as `linvit models --json` lists
    /// them), value in JSON: `--arg img_size=384 --arg window_size=12`. Position embeddings,
    /// Swin's relative position tables, FLatten's positional encodings and agent biases
    /// trained at another size are resized as the authors' fine-tuning code does.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    args: Vec<String>,
}

pub fn run(a: ImportArgs) -> ExitCode {
    import(&a.preset, &a.checkpoint, &a.out, a.num_classes, &a.args)
}

fn import(
    name: &str,
    checkpoint: &Path,
    out: &Path,
    num_classes: Option<usize>,
    args: &[String],
) -> ExitCode {
    let run = || -> Result<String, CliError> {
        let preset = presets::preset(name)?;
        let mut overrides = preset_overrides(args)?;
        if let Some(n) = num_classes {
            overrides.insert("num_classes".into(), n.into());
        }
        // The upstream mapping names a bad argument as `args.KEY`; here it came from `--arg`.
        let config = preset.config_with(&overrides.into()).map_err(|e| {
            match e.message.strip_prefix("args.") {
                Some(rest) => cli_error!("--arg {rest}"),
                None => e.into(),
            }
        })?;
        config.validate()?;
        let mut model = config.init(&Device::flex());
        let (applied, resized) = load_upstream_resized(
            &mut model,
            checkpoint,
            &config.renames(),
            config.resize_rule(),
        )?;
        save_model(out, &config, model)?;
        let mut msg = String::new();
        for line in &resized {
            msg.push_str(&format!("resized {line}\n"));
        }
        msg.push_str(&format!(
            "imported {} tensors from {} into {name}; saved to {}",
            applied.applied.len(),
            checkpoint.display(),
            out.display()
        ));
        Ok(msg)
    };
    super::report(run())
}

/// `KEY=VALUE` constructor arguments for a preset; the value is JSON (a bare word is a string).
/// The keys are checked where the arguments resolve ([`linvit_models::upstream::resolve`]).
fn preset_overrides(
    args: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    let mut out = serde_json::Map::new();
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| cli_error!("--arg {arg:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
        out.insert(key.to_string(), value);
    }
    Ok(out)
}
