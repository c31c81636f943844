//! Resumable checkpoints in a run directory.
//!
//! ```text
//! run/
//!   config.toml                 the resolved run config, written before any work
//!   checkpoints/
//!     latest.json               manifest: the newest complete checkpoint
//!     epoch-0003/               model.json + model.bpk, optimizer.safetensors, ema/, state.json,
//!                               classes.json, config.toml
//!     epoch-0003-batch-000200/  the same, taken inside the 4th epoch before its batch 200
//!                               (`train.checkpoint_every`)
//!   best/                       model.json + model.bpk, classes.json, config.toml, best.json
//! ```
//!
//! An LM run (`lm.rs`) keeps `checkpoints/step-NNNNNNNN/` folders (model, optimizer, state.json)
//! the same way.
//!
//! A checkpoint is written whole into `checkpoints/.tmp-epoch-NNNN`, every file synced, then the
//! folder is renamed to its final name and only then does the manifest (itself written to a
//! temporary file and renamed) name it. A `kill -9` at any point leaves either the previous
//! manifest and checkpoint untouched or the new one complete; leftover `.tmp-*` folders are
//! removed on resume. `best/` is replaced by rename too (`best.tmp` -> `best`, the old one moved
//! aside first and restored on resume if the swap was cut short).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use linvit_models::checkpoint::{load_model, save_model, write_atomic};
use linvit_models::{Model, ModelConfig};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::metrics::History;
use crate::optim::{from_host, to_host, AdamState};
use crate::TrainError;

/// Where the data loader and the random streams stand; with the seeds in the config this
/// determines every later batch and drop-path mask.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Next epoch to run (0-based) = epochs completed.
    pub epoch: usize,
    /// Next batch of that epoch: 0 at an epoch end, more for a mid-epoch checkpoint
    /// (`train.checkpoint_every`).
    pub batch: usize,
    /// Optimizer steps taken (the scheduler's position).
    pub step: u64,
    /// Micro-batches run: the device RNG is re-seeded from (train.seed, micro_step) before each
    /// forward, so this is the drop-path RNG state.
    pub micro_step: u64,
}

/// Everything besides tensors that a resume needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainState {
    pub position: Position,
    pub best_val_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    pub history: History,
    /// Seconds of training so far (excluding time lost to interruptions).
    pub elapsed_s: f64,
    /// The running sums of the epoch a mid-epoch checkpoint was taken in (None at epoch ends),
    /// so the resumed epoch reports the loss and accuracy of all its batches.
    #[serde(default)]
    pub partial: Option<EpochSums>,
    /// The dynamic loss scale of `train.precision = "f16"` (None otherwise).
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
}

/// Dynamic loss scaling as `torch.cuda.amp.GradScaler`'s defaults: the loss is multiplied by
/// `scale` before the backward pass and the gradients divided by it; a step whose gradients
/// overflow is skipped and halves the scale; 2000 good steps in a row double it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Good steps since the last change.
    pub good_steps: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            scale: 65536.0,
            good_steps: 0,
        }
    }
}

impl LossScale {
    /// Below this the overflow is not the scale's doing: the step counts as non-finite.
    pub const MIN: f64 = 1.0;

    /// Records a step; returns whether its gradients were finite (and it may be applied).
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps == 2000 {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale /= 2.0;
            self.good_steps = 0;
        }
        finite
    }
}

/// Running sums over an epoch's batches so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub loss_sum: f64,
    pub seen: usize,
    pub correct: usize,
    pub train_time_s: f64,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    checkpoint: String,
    epoch: usize,
    step: u64,
}

fn err(path: &Path, reason: impl ToString) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| err(path, e))?;
    write_atomic(path, &bytes).map_err(|e| err(&e.path, e.reason))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
    serde_json::from_str(&text).map_err(|e| err(path, e))
}

fn sync_dir(dir: &Path) {
    // Directory fsync makes renames durable; not every filesystem allows it.
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// The files an evaluation or prediction needs: model, classes, run config.
pub(crate) fn write_model_dir(
    dir: &Path,
    model_config: &ModelConfig,
    model: Model,
    classes: &[String],
    config_toml: &str,
) -> Result<(), TrainError> {
    save_model(dir, model_config, model).map_err(|e| err(&e.path, e.reason))?;
    write_json(&dir.join("classes.json"), &classes)?;
    write_atomic(&dir.join("config.toml"), config_toml.as_bytes())
        .map_err(|e| err(&e.path, e.reason))
}

pub(crate) fn save_adam(path: &Path, state: &AdamState) -> Result<(), TrainError> {
    let mut named: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (prefix, map) in [
        ("exp_avg", &state.exp_avg),
        ("exp_avg_sq", &state.exp_avg_sq),
    ] {
        for (k, v) in to_host(map) {
            named.insert(
                format!("{prefix}/{k}"),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            );
        }
    }
    let views: Vec<(String, TensorView)> = named
        .iter()
        .map(|(k, b)| {
            let view =
                TensorView::new(Dtype::F32, vec![b.len() / 4], b).map_err(|e| err(path, e))?;
            Ok((k.clone(), view))
        })
        .collect::<Result<_, TrainError>>()?;
    let mut info = HashMap::new();
    info.insert("step".to_string(), state.step.to_string());
    let bytes = safetensors::serialize(views, Some(info)).map_err(|e| err(path, e))?;
    write_atomic(path, &bytes).map_err(|e| err(&e.path, e.reason))
}

pub(crate) fn load_adam(path: &Path, device: &Device) -> Result<AdamState, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(path, e))?;
    let step = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(path, "no optimizer step in the metadata"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(path, e))?;
    let mut m = BTreeMap::new();
    let mut v = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        match name.split_once('/') {
            Some(("exp_avg", k)) => m.insert(k.to_string(), data),
            Some(("exp_avg_sq", k)) => v.insert(k.to_string(), data),
            _ => return Err(err(path, format!("unexpected tensor {name}"))),
        };
    }
    Ok(AdamState {
        step,
        exp_avg: from_host(m, device),
        exp_avg_sq: from_host(v, device),
    })
}

/// What a checkpoint holds, loaded.
pub(crate) struct Loaded {
    pub model: Model,
    pub adam: AdamState,
    pub ema: Option<Model>,
    pub state: TrainState,
}

pub(crate) fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Fault injection for the crash tests, so a test can kill the process at a chosen point on
/// purpose rather than by luck (unset, they cost nothing):
/// - `LINVIT_FAULT_CHECKPOINT_PAUSE_MS` holds every checkpoint write open half-way (weights
///   written, optimizer state not yet) for that long;
/// - `LINVIT_FAULT_COMMIT_PAUSE_MS` holds the run for that long right after a checkpoint is
///   committed (renamed into place and named by the manifest).
pub(crate) fn fault_pause(variable: &str) {
    let pause = std::env::var(variable)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = pause {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// The classifier's files in a checkpoint folder: the model with its classes and run config,
/// and the EMA's model under `ema/`.
pub(crate) fn save_classifier(
    dir: &Path,
    model_config: &ModelConfig,
    model: &Model,
    ema: Option<&Model>,
    classes: &[String],
    config_toml: &str,
) -> Result<(), TrainError> {
    write_model_dir(dir, model_config, model.clone(), classes, config_toml)?;
    if let Some(ema) = ema {
        let ema_dir = dir.join("ema");
        save_model(&ema_dir, model_config, ema.clone()).map_err(|e| err(&e.path, e.reason))?;
        sync_dir(&ema_dir);
    }
    Ok(())
}

/// Commits the checkpoint folder `name` of a run, whole or not at all (see the module docs):
/// `write` fills a temporary folder (its `state.json` last: that file marks a folder complete),
/// which is synced and renamed, and only then does the manifest name it, with `(epoch, step)`.
/// All but the newest `keep` complete checkpoints are removed. Returns the folder. The image
/// classifier's and the LM's checkpoints both go through here.
pub(crate) fn commit(
    run_dir: &Path,
    name: &str,
    (epoch, step): (usize, u64),
    keep: usize,
    write: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    let root = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&root).map_err(|e| err(&root, e))?;
    let tmp = root.join(format!(".tmp-{name}"));
    let dir = root.join(name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    write(&tmp)?;
    sync_dir(&tmp);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| err(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| err(&dir, e))?;
    sync_dir(&root);
    let manifest = Manifest {
        checkpoint: name.to_string(),
        epoch,
        step,
    };
    write_json(&root.join("latest.json"), &manifest)?;
    prune(&root, keep)?;
    fault_pause("LINVIT_FAULT_COMMIT_PAUSE_MS");
    Ok(dir)
}

/// Complete checkpoint folders, oldest first by (epochs done, next batch), or by step for the
/// LM's.
fn complete_checkpoints(root: &Path) -> Vec<((usize, usize), PathBuf)> {
    let mut found: Vec<((usize, usize), PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let key = match name.strip_prefix("step-") {
                // The LM's checkpoints, by optimizer step.
                Some(step) => (step.parse().ok()?, 0),
                None => {
                    let rest = name.strip_prefix("epoch-")?;
                    match rest.split_once("-batch-") {
                        Some((epoch, batch)) => (epoch.parse().ok()?, batch.parse().ok()?),
                        None => (rest.parse().ok()?, 0),
                    }
                }
            };
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (key, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn prune(root: &Path, keep: usize) -> Result<(), TrainError> {
    let found = complete_checkpoints(root);
    let n = found.len().saturating_sub(keep);
    for (_, dir) in found.into_iter().take(n) {
        std::fs::remove_dir_all(&dir).map_err(|e| err(&dir, e))?;
    }
    Ok(())
}

/// The newest complete checkpoint of a run: the one the manifest names, or (if the manifest is
/// missing or names a folder that is gone) the newest complete folder. Removes leftovers of an
/// interrupted write.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    let root = checkpoints_dir(run_dir);
    if !root.is_dir() {
        return Ok(None);
    }
    for e in std::fs::read_dir(&root)
        .map_err(|e| err(&root, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp-") || name.ends_with(".tmp") {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    let manifest = root.join("latest.json");
    if manifest.is_file() {
        if let Ok(m) = read_json::<Manifest>(&manifest) {
            let dir = root.join(&m.checkpoint);
            if dir.join("state.json").is_file() {
                return Ok(Some(dir));
            }
        }
    }
    Ok(complete_checkpoints(&root).pop().map(|(_, p)| p))
}

/// Loads a checkpoint folder onto `device` (an autodiff device for training).
pub(crate) fn load(dir: &Path, device: &Device) -> Result<Loaded, TrainError> {
    let (_, model) = load_model(dir, device).map_err(|e| err(&e.path, e.reason))?;
    let adam = load_adam(&dir.join("optimizer.safetensors"), &device.clone().inner())?;
    let ema_dir = dir.join("ema");
    let ema = if ema_dir.is_dir() {
        let inner = device.clone().inner();
        Some(
            load_model(&ema_dir, &inner)
                .map_err(|e| err(&e.path, e.reason))?
                .1,
        )
    } else {
        None
    };
    let state: TrainState = read_json(&dir.join("state.json"))?;
    Ok(Loaded {
        model,
        adam,
        ema,
        state,
    })
}

/// Replaces `run/best` with this model (rename-based; see the module docs).
pub(crate) fn save_best(
    run_dir: &Path,
    model_config: &ModelConfig,
    model: Model,
    classes: &[String],
    config_toml: &str,
    info: &serde_json::Value,
) -> Result<PathBuf, TrainError> {
    let best = run_dir.join("best");
    let tmp = run_dir.join("best.tmp");
    let old = run_dir.join("best.old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    }
    write_model_dir(&tmp, model_config, model, classes, config_toml)?;
    write_json(&tmp.join("best.json"), info)?;
    sync_dir(&tmp);
    if best.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| err(&old, e))?;
        }
        std::fs::rename(&best, &old).map_err(|e| err(&old, e))?;
    }
    std::fs::rename(&tmp, &best).map_err(|e| err(&best, e))?;
    sync_dir(run_dir);
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| err(&old, e))?;
    }
    Ok(best)
}

/// Puts `best` back if a swap was cut short, and drops a half-written `best.tmp`.
pub(crate) fn repair_best(run_dir: &Path) {
    let best = run_dir.join("best");
    let old = run_dir.join("best.old");
    if !best.exists() && old.exists() {
        let _ = std::fs::rename(&old, &best);
    }
    let _ = std::fs::remove_dir_all(run_dir.join("best.tmp"));
    let _ = std::fs::remove_dir_all(&old);
}

/// All float parameters of a model as host vectors by path (for comparing runs bit for bit).
pub fn weights(model: &Model) -> BTreeMap<String, Vec<f32>> {
    let params: BTreeMap<String, Tensor<1>> = crate::optim::params_by_path(model);
    to_host(&params)
}
