//! The classifier's training engine: epochs of batches, gradient accumulation, clipping, the
//! schedule, the skip-or-stop rule for non-finite values, EMA, metrics, progress and
//! checkpoints. [`Trainer::run`] reads as the list of its steps; `train.rs` builds the run
//! (config, data, first model or checkpoint) and runs the forward and backward passes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use linvit_data::{mixup::mix_targets, Batch, DataConfig, Loader, LoaderOptions, Split};
use linvit_models::Model;

use crate::checkpoint::{self, EpochSums, LossScale, Position, Snapshot, TrainState};
use crate::config::Precision;
use crate::eval::evaluate_model;
use crate::groups::ParamGroups;
use crate::metrics::{EpochRow, StepRow};
use crate::optim::{
    accumulate, clip_global_norm, collect_grads, ema_update, global_norm, lr_at, scale, AdamState,
    AdamW, Grads,
};
use crate::train::{
    data_parallel, gather_grads, mix_seed, top1_correct, PassMode, Progress, Setup, TrainOptions,
    TrainSummary,
};
use crate::{plot, TrainConfig, TrainError};

/// A run in progress: what is fixed for it, and the model, optimizer and state it advances.
pub(crate) struct Trainer<'a> {
    setup: Setup,
    run_dir: &'a Path,
    options: &'a TrainOptions,
    /// `setup.config.train` and the data section with the dataset's values filled in.
    t: TrainConfig,
    data: DataConfig,
    hp: AdamW,
    groups: ParamGroups,
    /// The main device first: it holds the model, the optimizer and the summed gradients.
    workers: Vec<Device>,
    total_steps: u64,
    warmup: u64,
    /// Always `Some` between calls; taken only while the optimizer steps it (by value, so
    /// its parameters are updated in place).
    model: Option<Model>,
    adam: AdamState,
    ema: Option<Model>,
    state: TrainState,
    reporter: Reporter,
    last_checkpoint: Option<PathBuf>,
    started: Instant,
    elapsed_before: f64,
    /// Corrupt files the loader skipped (`data.skip_corrupt = true`), reported at the end.
    skipped_files: Vec<String>,
    /// Steps skipped for a non-finite loss or gradient (`train.skip_nonfinite = true`).
    skipped_steps: Vec<String>,
}

/// The running figures of the epoch being trained.
struct Epoch {
    index: usize,
    batches: usize,
    start: Instant,
    /// Loss, accuracy and time over the epoch's batches so far.
    sums: EpochSums,
    /// Loss, batches and images since the last step row, and when that window began.
    window: (f64, usize, usize, Instant),
    lr: f64,
    grad_norm: Option<f64>,
    /// Summed gradients of the micro-batches since the last optimizer step, and their number.
    pending: Option<Grads>,
    n_pending: usize,
}

impl<'a> Trainer<'a> {
    /// Prepares the run: parameter groups and frozen layers, the devices, the loss scale, and
    /// the step history rewritten to the checkpoint (rows past it, from an interrupted epoch,
    /// are dropped).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        setup: Setup,
        run_dir: &'a Path,
        ad: &Device,
        model: Model,
        adam: AdamState,
        ema: Option<Model>,
        mut state: TrainState,
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
        if t.precision != Precision::F16 {
            state.loss_scale = None;
        } else if state.loss_scale.is_none() {
            state.loss_scale = Some(LossScale::default());
        }
        Ok(Trainer {
            hp: AdamW {
                betas: t.betas,
                eps: t.eps,
                weight_decay: t.weight_decay,
            },
            total_steps: steps_per_epoch * t.epochs as u64,
            warmup: (t.warmup_epochs * steps_per_epoch as f64).round() as u64,
            last_checkpoint: checkpoint::latest(run_dir)?,
            reporter: Reporter::new(options.progress),
            elapsed_before: state.elapsed_s,
            started: Instant::now(),
            skipped_files: Vec::new(),
            skipped_steps: Vec::new(),
            setup,
            run_dir,
            options,
            t,
            data,
            groups,
            workers,
            model: Some(model),
            adam,
            ema,
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

    fn model(&self) -> &Model {
        self.model
            .as_ref()
            .expect("the model is back after each optimizer step")
    }

    fn schedule(&self, step: u64) -> f64 {
        let t = &self.t;
        lr_at(
            step,
            self.total_steps,
            self.warmup,
            t.lr,
            t.warmup_lr,
            t.min_lr,
        )
    }

    /// The epoch's batches from where the run stands: a mid-epoch checkpoint resumes at its
    /// batch with the epoch's sums so far. The loader still decodes the batches before it (its
    /// augmentation streams are per epoch), which costs data loading only.
    fn train_epoch(&mut self, index: usize) -> Result<Epoch, TrainError> {
        let loader = Loader::new(
            &self.setup.dataset,
            &self.data,
            Split::Train,
            &LoaderOptions::for_split(Split::Train, self.t.batch_size, index as u64),
        )?;
        let batches = loader.num_batches();
        self.reporter.start_epoch(index, self.t.epochs, batches);
        let first_batch = self.state.position.batch;
        let mut run = Epoch {
            index,
            batches,
            start: Instant::now(),
            sums: self.state.partial.take().unwrap_or_default(),
            window: (0.0, 0, 0, Instant::now()),
            lr: self.schedule(self.state.position.step),
            grad_norm: None,
            pending: None,
            n_pending: 0,
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

    /// Batch `i` of the epoch: the passes, the accumulated gradients, the optimizer step where
    /// the accumulation is complete, the step row and a mid-epoch checkpoint where due.
    fn train_batch(&mut self, run: &mut Epoch, i: usize, batch: Batch) -> Result<(), TrainError> {
        let batch_start = Instant::now();
        let n = batch.len();
        let k = self.setup.dataset.num_classes();
        let targets =
            (batch.targets.clone()).unwrap_or_else(|| mix_targets(&batch.labels, k, 1.0, 0.0));
        let seed = mix_seed(self.t.seed, self.state.position.micro_step);
        let mode = PassMode {
            half: self.t.precision.half(),
            loss_scale: self.state.loss_scale.as_ref().map_or(1.0, |s| s.scale),
        };
        let passes = data_parallel(self.model(), &batch, &targets, k, &self.workers, seed, mode);
        self.state.position.micro_step += 1;
        let loss: f64 = passes.iter().map(|p| p.weighted_loss).sum();
        if !loss.is_finite() {
            return self.skip_or_stop("loss", loss, run.index + 1);
        }
        let host: Vec<f32> = passes
            .iter()
            .flat_map(|p| p.logits.iter().copied())
            .collect();
        run.sums.correct += top1_correct(&host, k, &batch.labels);
        run.sums.loss_sum += loss * n as f64;
        run.sums.seen += n;
        let grads = gather_grads(self.model(), passes, &self.workers[0]);
        accumulate(&mut run.pending, collect_grads(self.model(), grads).0);
        run.n_pending += 1;
        if run.n_pending == self.t.accum_steps || i + 1 == run.batches {
            self.optimizer_step(run, mode.loss_scale)?;
        }
        run.sums.train_time_s += batch_start.elapsed().as_secs_f64();
        run.window.0 += loss;
        run.window.1 += 1;
        run.window.2 += n;
        let ips = run.sums.seen as f64 / run.sums.train_time_s.max(1e-9);
        self.reporter.batch(loss, run.lr, ips);
        let step = self.state.position.step;
        if run.n_pending == 0 && step.checked_rem(self.t.log_every as u64) == Some(0) {
            self.log_step(run)?;
        }
        let every = self.t.checkpoint_every;
        if run.n_pending == 0 && i + 1 < run.batches && every > 0 && step % every == 0 {
            self.state.position.batch = i + 1;
            self.state.partial = Some(run.sums.clone());
            self.checkpoint()?;
            self.state.partial = None;
        }
        Ok(())
    }

    /// One optimizer step on the mean of the pending micro-batches' gradients (without the
    /// loss scale), clipped; then the EMA.
    fn optimizer_step(&mut self, run: &mut Epoch, loss_scale: f64) -> Result<(), TrainError> {
        let unscale = 1.0 / (run.n_pending as f64 * loss_scale);
        let grads = scale(run.pending.take().unwrap_or_default(), unscale);
        let (grads, norm) = if self.t.clip_grad > 0.0 {
            clip_global_norm(grads, self.t.clip_grad)
        } else {
            let norm = global_norm(&grads);
            (grads, norm)
        };
        run.grad_norm = Some(norm);
        run.lr = self.schedule(self.state.position.step);
        // An f16 overflow halves the loss scale and skips the step, as GradScaler does; at the
        // smallest scale it is a real non-finite gradient.
        let overflow = match self.state.loss_scale.as_mut() {
            Some(s) if s.scale > LossScale::MIN => !s.update(norm.is_finite()),
            _ => false,
        };
        if norm.is_finite() {
            let model = self
                .model
                .take()
                .expect("the model is in place between steps");
            let scales = &self.groups.lr_scale;
            let model = (self.hp).step_scaled(model, grads, &mut self.adam, run.lr, scales);
            self.model = Some(model);
        } else if !overflow {
            self.skip_or_stop("gradient norm", norm, run.index + 1)?;
        }
        if let Some(e) = self.ema.take() {
            self.ema = Some(ema_update(e, self.model(), self.t.ema));
        }
        self.state.position.step += 1;
        run.n_pending = 0;
        Ok(())
    }

    /// A non-finite loss or gradient norm at the next step: recorded and skipped
    /// (`train.skip_nonfinite`), or the run stops naming the step and the last good
    /// checkpoint.
    fn skip_or_stop(
        &mut self,
        what: &'static str,
        value: f64,
        epoch: usize,
    ) -> Result<(), TrainError> {
        let step = self.state.position.step + 1;
        if !self.t.skip_nonfinite {
            return Err(TrainError::NonFinite {
                what,
                epoch,
                step,
                loss: value,
                checkpoint: self.last_checkpoint.clone(),
            });
        }
        (self.skipped_steps).push(format!("step {step} (epoch {epoch}): {what} {value}"));
        Ok(())
    }

    /// The step row of the window since the last one: shown, appended to `steps.csv`, kept.
    fn log_step(&mut self, run: &mut Epoch) -> Result<(), TrainError> {
        let (loss, batches, images, start) = run.window;
        let row = StepRow {
            step: self.state.position.step,
            epoch: run.index + 1,
            loss: loss / batches.max(1) as f64,
            lr: run.lr,
            grad_norm: run.grad_norm,
            images_per_s: images as f64 / start.elapsed().as_secs_f64().max(1e-9),
        };
        self.reporter.step_line(&row, self.t.epochs);
        row.append(self.run_dir)?;
        self.state.history.steps.push(row);
        run.window = (0.0, 0, 0, Instant::now());
        Ok(())
    }

    /// Writes a checkpoint of the run as it stands.
    fn checkpoint(&mut self) -> Result<(), TrainError> {
        self.state.elapsed_s = self.elapsed_before + self.started.elapsed().as_secs_f64();
        let snap = Snapshot {
            model_config: &self.setup.model_config,
            model: self.model(),
            adam: &self.adam,
            ema: self.ema.as_ref(),
            state: &self.state,
            classes: &self.setup.dataset.class_names,
            config_toml: &self.setup.config_toml,
        };
        let keep = self.t.keep_checkpoints;
        self.last_checkpoint = Some(checkpoint::save(self.run_dir, &snap, keep)?);
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
            let e = self.evaluate(&self.model().valid())?;
            val_loss = Some(e.loss);
            val_top1 = Some(e.top1);
            val_top5 = Some(e.top5);
            if let Some(em) = &self.ema {
                ema_top1 = Some(self.evaluate(em)?.top1);
            }
        }
        let row = EpochRow {
            epoch: epoch + 1,
            step: self.state.position.step,
            lr: run.lr,
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
                "step": self.state.position.step,
                "val_top1": val_top1,
                "val_top5": val_top5,
            });
            checkpoint::save_best(
                self.run_dir,
                &self.setup.model_config,
                self.model().valid(),
                &self.setup.dataset.class_names,
                &self.setup.config_toml,
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
        evaluate_model(model, &self.setup.dataset, data, t.batch_size, t.val_limit)
    }

    fn summary(self) -> TrainSummary {
        let rows = &self.state.history.epochs;
        let final_row = rows.last();
        let best = self.run_dir.join("best");
        TrainSummary {
            run_dir: self.run_dir.to_path_buf(),
            epochs: self.state.position.epoch,
            steps: self.state.position.step,
            final_val_top1: final_row.and_then(|r| r.val_top1),
            final_val_top5: final_row.and_then(|r| r.val_top5),
            best_val_top1: self.state.best_val_top1,
            best_epoch: self.state.best_epoch,
            seconds: self.elapsed_before + self.started.elapsed().as_secs_f64(),
            images_per_s: if rows.is_empty() {
                0.0
            } else {
                rows.iter().map(|r| r.images_per_s).sum::<f64>() / rows.len() as f64
            },
            checkpoint: self.last_checkpoint,
            best: best.is_dir().then_some(best),
            skipped_files: self.skipped_files,
            skipped_steps: self.skipped_steps,
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
