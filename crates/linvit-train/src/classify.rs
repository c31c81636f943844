//! The image classifier's run: epochs of batches through the [`Trainer`], validation, the
//! epoch rows and their plot, `best/`, and progress on stderr. [`Classify`] is the
//! classifier's [`Task`]; `train.rs` builds the run (config, data, the first model or a
//! checkpoint) and its passes.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use linvit_data::{mixup::mix_targets, Batch, DataConfig, Loader, LoaderOptions, Split};
use linvit_models::Model;

use crate::checkpoint::{self, EpochSums, Position, TrainState};
use crate::config::Precision;
use crate::eval::evaluate_model;
use crate::metrics::{EpochRow, StepRow};
use crate::optim::{collect_grads, ema_update, AdamState, AdamW};
use crate::train::{
    data_parallel, gather_grads, mix_seed, top1_correct, PassMode, Progress, Setup, TrainOptions,
    TrainSummary,
};
use crate::trainer::{Counters, Pass, Recipe, Schedule, Task, Trainer};
use crate::{plot, TrainConfig, TrainError};

/// The image classifier as a [`Task`]: data-parallel passes of soft-target cross entropy over
/// the worker devices, the EMA, and the files that evaluation and `best/` read.
pub(crate) struct Classify {
    setup: Setup,
    /// The main device first: it holds the model, the optimizer and the summed gradients.
    workers: Vec<Device>,
    ema: Option<Model>,
}

impl Task for Classify {
    type Model = Model;
    type Batch = Batch;
    /// The batch's logits, `[n, classes]`, on the host.
    type Output = Vec<f32>;

    fn pass(
        &self,
        model: &Model,
        batch: &Batch,
        micro_step: u64,
        loss_scale: f64,
    ) -> Pass<Vec<f32>> {
        let t = &self.setup.config.train;
        let k = self.setup.dataset.num_classes();
        let targets =
            (batch.targets.clone()).unwrap_or_else(|| mix_targets(&batch.labels, k, 1.0, 0.0));
        let seed = mix_seed(t.seed, micro_step);
        let mode = PassMode {
            half: t.precision.half(),
            loss_scale,
        };
        let passes = data_parallel(model, batch, &targets, k, &self.workers, seed, mode);
        let loss: f64 = passes.iter().map(|p| p.weighted_loss).sum();
        let output = (passes.iter())
            .flat_map(|p| p.logits.iter().copied())
            .collect();
        let grads = loss.is_finite().then(|| {
            let grads = gather_grads(model, passes, &self.workers[0]);
            collect_grads(model, grads).0
        });
        Pass {
            loss,
            grads,
            output,
        }
    }

    fn after_step(&mut self, model: &Model) {
        if let Some(e) = self.ema.take() {
            self.ema = Some(ema_update(e, model, self.setup.config.train.ema));
        }
    }

    fn save(&self, dir: &Path, model: &Model) -> Result<(), TrainError> {
        let s = &self.setup;
        let classes = &s.dataset.class_names;
        checkpoint::save_classifier(
            dir,
            &s.model_config,
            model,
            self.ema.as_ref(),
            classes,
            &s.config_toml,
        )
    }
}

/// A classifier run in progress: the trainer, and the epochs' record around it.
pub(crate) struct Run<'a> {
    trainer: Trainer<Classify>,
    run_dir: &'a Path,
    options: &'a TrainOptions,
    /// `setup.config.train` and the data section with the dataset's values filled in.
    t: TrainConfig,
    data: DataConfig,
    /// The epochs so far, the best validation and, at a checkpoint, where the run stands.
    state: TrainState,
    reporter: Reporter,
    /// Corrupt files the loader skipped (`data.skip_corrupt = true`), reported at the end.
    skipped_files: Vec<String>,
}

/// The running figures of the epoch being trained.
struct Epoch {
    index: usize,
    batches: usize,
    start: Instant,
    /// Loss, accuracy and time over the epoch's batches so far.
    sums: EpochSums,
}

impl<'a> Run<'a> {
    /// Prepares the run: parameter groups and frozen layers, the devices, the loss scale, the
    /// schedule, and the step history rewritten to the checkpoint (rows past it, from an
    /// interrupted epoch, are dropped).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        setup: Setup,
        run_dir: &'a Path,
        ad: &Device,
        model: Model,
        adam: AdamState,
        ema: Option<Model>,
        state: TrainState,
        options: &'a TrainOptions,
    ) -> Result<Self, TrainError> {
        let t = setup.config.train.clone();
        let data = setup.config.effective_data();
        let batches = setup.dataset.train.len() / t.batch_size;
        let steps_per_epoch = batches.div_ceil(t.accum_steps) as u64;
        let groups = crate::groups::param_groups(&model, &t)?;
        let model = crate::groups::freeze(model, &groups);
        if options.progress != Progress::Quiet {
            eprint!("{}", groups.summary);
        }
        let workers = std::iter::once(ad.clone())
            .chain(options.devices.iter().map(|d| d.clone().autodiff()))
            .collect();
        state.history.write(run_dir)?;
        let recipe = Recipe {
            adam: AdamW {
                betas: t.betas,
                eps: t.eps,
                weight_decay: t.weight_decay,
            },
            schedule: Schedule {
                total: steps_per_epoch * t.epochs as u64,
                warmup: (t.warmup_epochs * steps_per_epoch as f64).round() as u64,
                lr: t.lr,
                warmup_lr: t.warmup_lr,
                min_lr: t.min_lr,
            },
            clip_grad: t.clip_grad,
            accum_steps: t.accum_steps,
            skip_nonfinite: t.skip_nonfinite,
            lr_scale: groups.lr_scale,
            keep_checkpoints: t.keep_checkpoints,
        };
        let at = Counters {
            step: state.position.step,
            micro_step: state.position.micro_step,
            loss_scale: (t.precision == Precision::F16)
                .then(|| state.loss_scale.clone().unwrap_or_default()),
            elapsed_s: state.elapsed_s,
        };
        let task = Classify {
            setup,
            workers,
            ema,
        };
        Ok(Run {
            trainer: Trainer::new(task, model, adam, recipe, at, run_dir)?,
            reporter: Reporter::new(options.progress),
            skipped_files: Vec::new(),
            run_dir,
            options,
            t,
            data,
            state,
        })
    }

    /// Trains the remaining epochs (or up to `stop_after_epochs`) and sums the run up.
    pub(crate) fn run(mut self) -> Result<TrainSummary, TrainError> {
        while self.state.position.epoch < self.t.epochs {
            let epoch = self.state.position.epoch;
            if self.options.stop_after_epochs.is_some_and(|n| epoch >= n) {
                break;
            }
            let run = self.train_epoch(epoch)?;
            self.finish_epoch(run)?;
        }
        Ok(self.summary())
    }

    fn setup(&self) -> &Setup {
        &self.trainer.task().setup
    }

    /// The epoch's batches from where the run stands: a mid-epoch checkpoint resumes at its
    /// batch with the epoch's sums so far. The loader still decodes the batches before it (its
    /// augmentation streams are per epoch), which costs data loading only.
    fn train_epoch(&mut self, index: usize) -> Result<Epoch, TrainError> {
        let loader = Loader::new(
            &self.setup().dataset,
            &self.data,
            Split::Train,
            &LoaderOptions::for_split(Split::Train, self.t.batch_size, index as u64),
        )?;
        let batches = loader.num_batches();
        self.reporter.start_epoch(index, self.t.epochs, batches);
        // An epoch's step rows cover its own batches only.
        self.trainer.take_window();
        let first_batch = self.state.position.batch;
        let mut run = Epoch {
            index,
            batches,
            start: Instant::now(),
            sums: self.state.partial.take().unwrap_or_default(),
        };
        for (i, batch) in loader.enumerate().skip(first_batch) {
            let batch = batch?;
            self.note_skipped_files(&batch);
            if !batch.is_empty() {
                self.train_batch(&mut run, i, batch)?;
            }
        }
        Ok(run)
    }

    /// `file: reason` of each corrupt image the loader left out of `batch`, once.
    fn note_skipped_files(&mut self, batch: &Batch) {
        for skip in &batch.skipped {
            let file = skip
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| format!("image {}", skip.index));
            let line = format!("{file}: {}", skip.reason);
            if !self.skipped_files.contains(&line) {
                self.skipped_files.push(line);
            }
        }
    }

    /// Batch `i` of the epoch through the trainer (its last closes the accumulation), then its
    /// accuracy, the step row and a mid-epoch checkpoint where due.
    fn train_batch(&mut self, run: &mut Epoch, i: usize, batch: Batch) -> Result<(), TrainError> {
        let batch_start = Instant::now();
        let n = batch.len();
        let last = i + 1 == run.batches;
        let Some(done) = self.trainer.batch(&batch, n, last, run.index + 1)? else {
            return Ok(());
        };
        let k = self.setup().dataset.num_classes();
        run.sums.correct += top1_correct(&done.output, k, &batch.labels);
        run.sums.loss_sum += done.loss * n as f64;
        run.sums.seen += n;
        run.sums.train_time_s += batch_start.elapsed().as_secs_f64();
        let ips = run.sums.seen as f64 / run.sums.train_time_s.max(1e-9);
        self.reporter.batch(done.loss, self.trainer.lr(), ips);
        let step = self.trainer.step();
        if done.stepped && step.checked_rem(self.t.log_every as u64) == Some(0) {
            self.log_step(run)?;
        }
        let every = self.t.checkpoint_every;
        if done.stepped && !last && every > 0 && step.is_multiple_of(every) {
            self.state.position.batch = i + 1;
            self.state.partial = Some(run.sums.clone());
            self.checkpoint()?;
            self.state.partial = None;
        }
        Ok(())
    }

    /// The step row of the window since the last one: shown, appended to `steps.csv`, kept.
    fn log_step(&mut self, run: &mut Epoch) -> Result<(), TrainError> {
        let w = self.trainer.take_window();
        let row = StepRow {
            step: w.step,
            epoch: run.index + 1,
            loss: w.loss,
            lr: w.lr,
            grad_norm: w.grad_norm,
            images_per_s: w.items_per_s,
        };
        self.reporter.step_line(&row, self.t.epochs);
        row.append(self.run_dir)?;
        self.state.history.steps.push(row);
        Ok(())
    }

    /// Writes a checkpoint of the run as it stands: `epoch-NNNN`, or
    /// `epoch-NNNN-batch-NNNNNN` inside an epoch.
    fn checkpoint(&mut self) -> Result<(), TrainError> {
        let at = self.trainer.counters();
        let state = &mut self.state;
        state.position.step = at.step;
        state.position.micro_step = at.micro_step;
        state.loss_scale = at.loss_scale;
        state.elapsed_s = at.elapsed_s;
        let epoch = state.position.epoch;
        let name = match state.position.batch {
            0 => format!("epoch-{epoch:04}"),
            b => format!("epoch-{epoch:04}-batch-{b:06}"),
        };
        self.trainer.checkpoint(&name, epoch, state)?;
        Ok(())
    }

    /// The epoch's end: validation where due, the epoch row, the checkpoint, `best/` where the
    /// validation improved, the history and its plot.
    fn finish_epoch(&mut self, run: Epoch) -> Result<(), TrainError> {
        let epoch = run.index;
        let sums = &run.sums;
        let images_per_s = sums.seen as f64 / sums.train_time_s.max(1e-9);
        let last = epoch + 1 == self.t.epochs;
        let (mut val_loss, mut val_top1, mut val_top5, mut ema_top1) = (None, None, None, None);
        if (epoch + 1).checked_rem(self.t.eval_every) == Some(0) || last {
            let e = self.evaluate(&self.trainer.model().valid())?;
            val_loss = Some(e.loss);
            val_top1 = Some(e.top1);
            val_top5 = Some(e.top5);
            if let Some(em) = &self.trainer.task().ema {
                ema_top1 = Some(self.evaluate(em)?.top1);
            }
        }
        let step = self.trainer.step();
        let row = EpochRow {
            epoch: epoch + 1,
            step,
            lr: self.trainer.lr(),
            train_loss: sums.loss_sum / sums.seen.max(1) as f64,
            train_top1: sums.correct as f64 / sums.seen.max(1) as f64,
            val_loss,
            val_top1,
            val_top5,
            ema_val_top1: ema_top1,
            images_per_s,
            epoch_s: run.start.elapsed().as_secs_f64(),
        };
        self.reporter.epoch_line(&row, self.t.epochs);
        self.state.history.epochs.push(row);
        self.state.position = Position {
            epoch: epoch + 1,
            batch: 0,
            ..self.state.position
        };
        let best = self.state.best_val_top1;
        let improved = val_top1.is_some_and(|v| best.is_none_or(|b| v > b));
        if improved {
            self.state.best_val_top1 = val_top1;
            self.state.best_epoch = Some(epoch + 1);
        }
        self.checkpoint()?;
        if improved {
            let info = serde_json::json!({
                "epoch": epoch + 1,
                "step": step,
                "val_top1": val_top1,
                "val_top5": val_top5,
            });
            let s = self.setup();
            checkpoint::save_best(
                self.run_dir,
                &s.model_config,
                self.trainer.model().valid(),
                &s.dataset.class_names,
                &s.config_toml,
                &info,
            )?;
        }
        self.state.history.write(self.run_dir)?;
        let curves = self.run_dir.join("curves.png");
        if let Err(e) = plot::plot_curves(&self.state.history, &curves) {
            eprintln!("warning: {e}");
        }
        Ok(())
    }

    fn evaluate(&self, model: &Model) -> Result<crate::eval::Evaluation, TrainError> {
        let (t, data) = (&self.t, &self.data);
        let dataset = &self.setup().dataset;
        evaluate_model(model, dataset, data, t.batch_size, t.val_limit)
    }

    fn summary(self) -> TrainSummary {
        let rows = &self.state.history.epochs;
        let final_row = rows.last();
        let best = self.run_dir.join("best");
        let at = self.trainer.counters();
        TrainSummary {
            run_dir: self.run_dir.to_path_buf(),
            epochs: self.state.position.epoch,
            steps: at.step,
            final_val_top1: final_row.and_then(|r| r.val_top1),
            final_val_top5: final_row.and_then(|r| r.val_top5),
            best_val_top1: self.state.best_val_top1,
            best_epoch: self.state.best_epoch,
            seconds: at.elapsed_s,
            images_per_s: if rows.is_empty() {
                0.0
            } else {
                rows.iter().map(|r| r.images_per_s).sum::<f64>() / rows.len() as f64
            },
            checkpoint: self.trainer.last_checkpoint().cloned(),
            best: best.is_dir().then_some(best),
            skipped_files: self.skipped_files,
            skipped_steps: self.trainer.skipped_steps().to_vec(),
        }
    }
}

/// Progress on stderr: a bar or plain lines (see [`Progress`]).
struct Reporter {
    mode: Progress,
    bar: Option<ProgressBar>,
}

impl Reporter {
    fn new(mode: Progress) -> Self {
        let mode = match mode {
            Progress::Auto if std::io::stderr().is_terminal() => Progress::Bar,
            Progress::Auto => Progress::Lines,
            m => m,
        };
        Reporter { mode, bar: None }
    }

    fn start_epoch(&mut self, epoch: usize, epochs: usize, batches: usize) {
        if self.mode == Progress::Bar {
            let bar =
                ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{}/{epochs}", epoch + 1));
            self.bar = Some(bar);
        }
    }

    fn batch(&self, loss: f64, lr: f64, ips: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {ips:.0} img/s"));
            bar.inc(1);
        }
    }

    fn step_line(&self, row: &StepRow, epochs: usize) {
        if self.mode == Progress::Lines {
            eprintln!(
                "epoch {}/{epochs} step {} loss {:.4} lr {:.3e} {:.0} img/s",
                row.epoch, row.step, row.loss, row.lr, row.images_per_s
            );
        }
    }

    fn epoch_line(&mut self, r: &EpochRow, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.mode == Progress::Quiet {
            return;
        }
        let val = match (r.val_loss, r.val_top1, r.val_top5) {
            (Some(l), Some(a), Some(b)) => {
                format!(
                    " | val loss {l:.4} top-1 {:.2}% top-5 {:.2}%",
                    a * 100.0,
                    b * 100.0
                )
            }
            _ => String::new(),
        };
        eprintln!(
            "epoch {}/{epochs} train loss {:.4} top-1 {:.2}%{val} | lr {:.3e} {:.0} img/s {:.1}s",
            r.epoch,
            r.train_loss,
            r.train_top1 * 100.0,
            r.lr,
            r.images_per_s,
            r.epoch_s
        );
    }
}
