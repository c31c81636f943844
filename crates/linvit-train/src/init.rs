//! `model.init`: a run's first weights from a checkpoint instead of a random draw (fine-tuning,
//! the authors' `--finetune`). The weights load as `linvit import` loads them, with two changes:
//! a classifier head of another shape (another class count) is left as the seed drew it, and a
//! linvit checkpoint (a run, checkpoint or model folder) is accepted besides the authors' files.

use std::path::{Path, PathBuf};

use linvit_attention::import::load_checkpoint;
use linvit_models::{Model, ModelConfig};

use crate::{ConfigError, TrainError};

fn init_err(message: impl Into<String>) -> TrainError {
    ConfigError::Invalid {
        key: "model.init".into(),
        message: message.into(),
    }
    .into()
}

/// The weights file `path` stands for: a file as it is (`.pth`, `.pt`, `.bin`, `.safetensors`,
/// `.bpk`); a folder's `model.bpk` (a model or checkpoint folder, a run directory's `best/`,
/// else its newest checkpoint).
pub fn weights_file(path: &Path) -> Result<PathBuf, TrainError> {
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("pth" | "pt" | "bin" | "safetensors" | "bpk") => Ok(path.to_path_buf()),
            _ => Err(init_err(format!(
                "{}: not a checkpoint (.pth, .pt, .bin, .safetensors or a linvit folder)",
                path.display()
            ))),
        };
    }
    if !path.is_dir() {
        return Err(init_err(format!(
            "{}: no such file or folder",
            path.display()
        )));
    }
    let dir = crate::eval::checkpoint_dir(path).map_err(|_| {
        init_err(format!(
            "{}: neither a run directory with a checkpoint nor a model folder",
            path.display()
        ))
    })?;
    Ok(dir.join("model.bpk"))
}

/// What loading `model.init` did: lines to print.
#[derive(Clone, Debug, Default)]
pub struct InitReport {
    pub lines: Vec<String>,
}

/// Loads `path` into `model` (built from `config`, already seeded): every tensor must fit, up
/// to resizing; the head keeps its fresh values where its shape differs.
pub fn load_init(
    mut model: Model,
    config: &ModelConfig,
    path: &Path,
) -> Result<(Model, InitReport), TrainError> {
    let file = weights_file(path)?;
    let loaded = load_checkpoint(
        &mut model,
        &file,
        &config.renames(),
        config.resize_rule(),
        linvit_models::is_head,
    )
    .map_err(|e| init_err(e.to_string()))?;
    let mut lines = vec![format!(
        "model.init: loaded {} tensors from {}",
        loaded.applied.applied.len(),
        file.display()
    )];
    lines.extend(
        loaded
            .fresh
            .iter()
            .map(|k| format!("model.init: left fresh (another shape): {k}")),
    );
    lines.extend(
        loaded
            .resized
            .iter()
            .map(|k| format!("model.init: resized {k}")),
    );
    Ok((model, InitReport { lines }))
}
