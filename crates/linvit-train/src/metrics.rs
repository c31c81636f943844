//! Metrics of a run: one row per epoch (`metrics.csv`, `metrics.jsonl`) and one every
//! `train.log_every` optimizer steps (`steps.csv`, `steps.jsonl`), kept in the checkpoint too so
//! a resumed run rewrites the files exactly as an uninterrupted one would have; the curves as
//! `curves.png`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use linvit_models::checkpoint::write_atomic;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// One epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based.
    pub epoch: usize,
    /// Optimizer steps taken by the end of the epoch.
    pub step: u64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub train_loss: f64,
    /// Against the unmixed labels.
    pub train_top1: f64,
    pub val_loss: Option<f64>,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub ema_val_top1: Option<f64>,
    /// Training images per second (forward, backward, step; evaluation excluded).
    pub images_per_s: f64,
    pub epoch_s: f64,
}

/// One logging window of steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    pub step: u64,
    pub epoch: usize,
    /// Mean loss over the window.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping (when clipping is on).
    pub grad_norm: Option<f64>,
    pub images_per_s: f64,
}

/// Everything logged so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRow>,
    pub steps: Vec<StepRow>,
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

fn io(path: &Path, e: impl ToString) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write(path: &Path, text: &str) -> Result<(), TrainError> {
    write_atomic(path, text.as_bytes()).map_err(|e| io(&e.path, e.reason))
}

impl History {
    /// Rewrites the four metrics files in `run_dir` from this history.
    pub fn write(&self, run_dir: &Path) -> Result<(), TrainError> {
        let mut csv = String::from(
            "epoch,step,lr,train_loss,train_top1,val_loss,val_top1,val_top5,ema_val_top1,images_per_s,epoch_s\n",
        );
        let mut jsonl = String::new();
        for r in &self.epochs {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{},{},{},{},{}",
                r.epoch,
                r.step,
                r.lr,
                r.train_loss,
                r.train_top1,
                opt(r.val_loss),
                opt(r.val_top1),
                opt(r.val_top5),
                opt(r.ema_val_top1),
                r.images_per_s,
                r.epoch_s
            );
            jsonl.push_str(&serde_json::to_string(r).map_err(|e| io(run_dir, e))?);
            jsonl.push('\n');
        }
        write(&run_dir.join("metrics.csv"), &csv)?;
        write(&run_dir.join("metrics.jsonl"), &jsonl)?;
        let mut csv = String::from(StepRow::CSV_HEADER);
        let mut jsonl = String::new();
        for r in &self.steps {
            csv.push_str(&r.csv());
            jsonl.push_str(&serde_json::to_string(r).map_err(|e| io(run_dir, e))?);
            jsonl.push('\n');
        }
        write(&run_dir.join("steps.csv"), &csv)?;
        write(&run_dir.join("steps.jsonl"), &jsonl)
    }
}

impl StepRow {
    const CSV_HEADER: &'static str = "step,epoch,loss,lr,grad_norm,images_per_s\n";

    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{}\n",
            self.step,
            self.epoch,
            self.loss,
            self.lr,
            opt(self.grad_norm),
            self.images_per_s
        )
    }

    /// Appends this row to `steps.csv` / `steps.jsonl` as it happens (the files are rewritten
    /// from the history at each epoch end).
    pub fn append(&self, run_dir: &Path) -> Result<(), TrainError> {
        for (name, line) in [
            ("steps.csv", self.csv()),
            (
                "steps.jsonl",
                format!(
                    "{}\n",
                    serde_json::to_string(self).map_err(|e| io(run_dir, e))?
                ),
            ),
        ] {
            let path = run_dir.join(name);
            let new = !path.exists();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            if new && name == "steps.csv" {
                f.write_all(Self::CSV_HEADER.as_bytes())
                    .map_err(|e| io(&path, e))?;
            }
            f.write_all(line.as_bytes()).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }
}
