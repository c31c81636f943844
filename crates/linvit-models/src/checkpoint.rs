//! A linvit model on disk: a folder with `model.json` (the [`ModelConfig`]) and `model.bpk`
//! (Burn's burnpack record). Files are written to a temporary name, synced and renamed, so a
//! crash never leaves a half-written model under the real name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;

use crate::{Model, ModelConfig};

/// Why a saved model could not be written or read; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CheckpointError {
    pub path: PathBuf,
    pub reason: String,
}

fn err(path: &Path, reason: impl ToString) -> CheckpointError {
    CheckpointError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| err(&tmp, e))?;
    file.write_all(bytes).map_err(|e| err(&tmp, e))?;
    file.sync_all().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    if let Some(dir) = path.parent() {
        // Directory fsync makes the rename itself durable; not every filesystem allows it.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Saves a model and its config into `dir` (created if needed).
pub fn save_model(dir: &Path, config: &ModelConfig, model: Model) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let json = serde_json::to_vec_pretty(config).map_err(|e| err(dir, e))?;
    let weights = dir.join("model.bpk");
    let tmp = weights.with_extension("bpk.tmp");
    model.save_file(&tmp).map_err(|e| err(&tmp, e))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &weights).map_err(|e| err(&weights, e))?;
    write_atomic(&dir.join("model.json"), &json)
}

/// Reads the config saved in `dir`.
pub fn load_config(dir: &Path) -> Result<ModelConfig, CheckpointError> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
    let config: ModelConfig = serde_json::from_str(&text).map_err(|e| err(&path, e))?;
    config.validate().map_err(|e| err(&path, e))?;
    Ok(config)
}

/// Loads a model saved by [`save_model`] onto `device`.
pub fn load_model(dir: &Path, device: &Device) -> Result<(ModelConfig, Model), CheckpointError> {
    let config = load_config(dir)?;
    let weights = dir.join("model.bpk");
    if !weights.is_file() {
        return Err(err(&weights, "no such file"));
    }
    let model = config
        .init(device)
        .try_load_file(&weights)
        .map_err(|e| err(&weights, e))?;
    Ok((config, model))
}
