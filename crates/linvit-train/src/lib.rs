//! linvit-train: the papers' training recipe for linvit models, as a library the `linvit`
//! command line calls.
//!
//! - [`resolve`]: a [`RunConfig`] from a TOML file (or the embedded quickstart) and `--set`
//!   overrides; unknown keys, wrong types and bad values fail here, naming the key.
//! - [`train`] / [`resume`]: the loop (AdamW with PyTorch's defaults and the authors'
//!   no-decay rule, warmup + cosine per iteration, soft-target cross entropy for label
//!   smoothing / mixup / cutmix, drop path, global-norm clipping, EMA, gradient accumulation),
//!   writing `config.toml`, metrics (CSV + JSONL), `curves.png`, atomic checkpoints and `best/`
//!   into the run directory. A resumed run equals an uninterrupted one bit for bit on flex.
//! - [`evaluate`] / [`predict`]: a saved checkpoint on a validation split or on image files.
//!
//! Why not burn-train's `Learner`: its checkpoints (`model/optim/scheduler-N.bpk`) are not
//! written atomically, carry no data-loader position or RNG state and no EMA, its AdamW defaults
//! (eps 1e-5, weight decay 1e-4) and per-tensor clipping differ from the PyTorch recipe, and its
//! metrics files are not ours. Our engine is short: `trainer.rs` (the `Trainer` that
//! the classifier, `classify.rs`, and the LM, `lm.rs`, both run through) and `optim.rs`.

pub mod ablate;
pub mod bench;
pub mod charts;
pub mod checkpoint;
mod classify;
pub mod config;
pub mod eval;
pub mod explain;
pub mod groups;
pub mod init;
pub mod lm;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod train;
mod trainer;
pub mod workers;

use std::path::PathBuf;

pub use config::{resolve, ConfigError, ModelSection, RunConfig, TrainConfig, QUICKSTART};
pub use eval::{
    checkpoint_dir, evaluate, predict, predictions_csv, ClassAccuracy, Evaluation, Prediction,
};
pub use metrics::{EpochRow, History, StepRow};
pub use train::{
    resume, resume_with, soft_cross_entropy, train, Progress, TrainOptions, TrainSummary,
};

/// Why a run, an evaluation or a prediction stopped; names the key, file or step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] linvit_data::DataError),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path} already holds a run; resume it or choose another directory")]
    RunExists { path: PathBuf },
    #[error("{path}: no complete checkpoint to resume or load")]
    NoCheckpoint { path: PathBuf },
    #[error(
        "the {what} is {loss} at step {step} (epoch {epoch}); the run stopped{} (set train.skip_nonfinite = true to skip such steps instead)",
        checkpoint.as_ref().map(|p| format!(", the last good checkpoint is {}", p.display())).unwrap_or_else(|| " before its first checkpoint".into())
    )]
    NonFinite {
        /// `loss` or `gradient norm`.
        what: &'static str,
        epoch: usize,
        step: u64,
        /// The non-finite value.
        loss: f64,
        checkpoint: Option<PathBuf>,
    },
}
