//! The training engine that the image classifier and the TransNormer LM share.
//!
//! A [`Task`] says what is trained: the model, the forward and backward pass of one
//! micro-batch, what moves along with each optimizer step (the classifier's EMA), and the
//! model's files in a checkpoint. The [`Trainer`] owns everything else: gradient accumulation,
//! the dynamic loss scale, global-norm clipping, the warmup + cosine schedule, AdamW with
//! per-parameter learning-rate scales, the skip-or-stop rule for non-finite values, the step
//! counters that a resume restores, the logging window's figures, and atomic checkpoints.
//!
//! The loops that drive it decide when to log, validate and checkpoint: `classify.rs` runs
//! epochs of batches, and `lm.rs` runs a number of steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use serde::Serialize;

use crate::checkpoint::{self, LossScale};
use crate::optim::{
    accumulate, clip_global_norm, global_norm, lr_at, scale, AdamState, AdamW, Grads,
};
use crate::workers::on_workers;
use crate::TrainError;

/// What one kind of run trains, as the [`Trainer`] sees it.
pub(crate) trait Task {
    type Model: Module;
    /// A micro-batch.
    type Batch;
    /// What a pass reports besides its loss (the classifier's logits, for its accuracy).
    type Output;

    /// The forward and backward pass of `batch`. The loss is multiplied by `loss_scale`
    /// before the backward pass; `micro_step` (micro-batches run before this one) seeds
    /// whatever the pass draws at random.
    fn pass(
        &self,
        model: &Self::Model,
        batch: &Self::Batch,
        micro_step: u64,
        loss_scale: f64,
    ) -> Pass<Self::Output>;

    /// Called after every optimizer step with the updated model.
    fn after_step(&mut self, _model: &Self::Model) {}

    /// Writes the model's part of a checkpoint (and the task's own, such as an EMA) into `dir`.
    fn save(&self, dir: &Path, model: &Self::Model) -> Result<(), TrainError>;
}

/// One micro-batch's forward and backward pass.
pub(crate) struct Pass<O> {
    /// The mean loss, without the loss scale.
    pub(crate) loss: f64,
    /// The gradients by parameter path, with the loss scale; `None` where the loss is not
    /// finite (no backward pass ran).
    pub(crate) grads: Option<Grads>,
    pub(crate) output: O,
}

/// Linear warmup from `warmup_lr` to `lr` over `warmup` steps, then cosine to `min_lr` at
/// `total` ([`lr_at`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    pub(crate) total: u64,
    pub(crate) warmup: u64,
    pub(crate) lr: f64,
    pub(crate) warmup_lr: f64,
    pub(crate) min_lr: f64,
}

impl Schedule {
    pub(crate) fn at(&self, step: u64) -> f64 {
        lr_at(
            step,
            self.total,
            self.warmup,
            self.lr,
            self.warmup_lr,
            self.min_lr,
        )
    }
}

/// How a run optimises.
pub(crate) struct Recipe {
    pub(crate) adam: AdamW,
    pub(crate) schedule: Schedule,
    /// The global-norm clip; 0 for none.
    pub(crate) clip_grad: f64,
    /// Micro-batches per optimizer step.
    pub(crate) accum_steps: usize,
    /// Skip a step with a non-finite loss or gradient norm, rather than stop the run.
    pub(crate) skip_nonfinite: bool,
    /// Learning-rate scales by parameter path (parameter groups); others train at the
    /// schedule's rate.
    pub(crate) lr_scale: BTreeMap<String, f64>,
    /// Checkpoints kept.
    pub(crate) keep_checkpoints: usize,
}

/// Where a run stands: what its checkpoint records for the engine.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// Optimizer steps taken (the schedule's position).
    pub(crate) step: u64,
    /// Micro-batches run, skipped ones included (the random streams' position).
    pub(crate) micro_step: u64,
    /// The dynamic loss scale of half-precision training; `None` for f32.
    pub(crate) loss_scale: Option<LossScale>,
    /// Seconds of training so far.
    pub(crate) elapsed_s: f64,
}

/// A micro-batch that ran (one whose loss was not finite and was skipped does not count).
pub(crate) struct Trained<O> {
    pub(crate) loss: f64,
    pub(crate) output: O,
    /// Whether it completed an optimizer step.
    pub(crate) stepped: bool,
}

/// The figures of the micro-batches since the last [`Trainer::take_window`].
pub(crate) struct Window {
    /// Optimizer steps taken.
    pub(crate) step: u64,
    /// The mean loss of the window's micro-batches.
    pub(crate) loss: f64,
    /// The learning rate of the latest step.
    pub(crate) lr: f64,
    /// The gradient norm of the latest step, before clipping.
    pub(crate) grad_norm: Option<f64>,
    /// Items (images, tokens) per second.
    pub(crate) items_per_s: f64,
}

/// The running sums of a [`Window`].
struct WindowSums {
    loss: f64,
    batches: usize,
    items: usize,
    start: Instant,
}

impl WindowSums {
    fn new() -> Self {
        WindowSums {
            loss: 0.0,
            batches: 0,
            items: 0,
            start: Instant::now(),
        }
    }
}

/// A run's model, its optimizer and where they stand, advanced one micro-batch at a time.
pub(crate) struct Trainer<T: Task> {
    task: T,
    /// Always `Some` between calls; taken only while the optimizer steps it (by value, so its
    /// parameters are updated in place).
    model: Option<T::Model>,
    adam: AdamState,
    recipe: Recipe,
    at: Counters,
    run_dir: PathBuf,
    started: Instant,
    /// The summed gradients of the micro-batches since the last step, and their number.
    pending: Option<Grads>,
    n_pending: usize,
    lr: f64,
    grad_norm: Option<f64>,
    window: WindowSums,
    last_checkpoint: Option<PathBuf>,
    skipped_steps: Vec<String>,
}

impl<T: Task> Trainer<T> {
    /// A run of `task` in `run_dir` from `model` and `adam` at `at` (all zero for a new run).
    pub(crate) fn new(
        task: T,
        model: T::Model,
        adam: AdamState,
        recipe: Recipe,
        at: Counters,
        run_dir: &Path,
    ) -> Result<Self, TrainError> {
        Ok(Trainer {
            lr: recipe.schedule.at(at.step),
            last_checkpoint: checkpoint::latest(run_dir)?,
            task,
            model: Some(model),
            adam,
            recipe,
            at,
            run_dir: run_dir.to_path_buf(),
            started: Instant::now(),
            pending: None,
            n_pending: 0,
            grad_norm: None,
            window: WindowSums::new(),
            skipped_steps: Vec::new(),
        })
    }

    pub(crate) fn model(&self) -> &T::Model {
        self.model
            .as_ref()
            .expect("the model is back after each optimizer step")
    }

    pub(crate) fn task(&self) -> &T {
        &self.task
    }

    /// Optimizer steps taken.
    pub(crate) fn step(&self) -> u64 {
        self.at.step
    }

    /// Micro-batches run, skipped ones included.
    pub(crate) fn micro_step(&self) -> u64 {
        self.at.micro_step
    }

    /// The counters now, with the seconds trained so far (what a checkpoint records).
    pub(crate) fn counters(&self) -> Counters {
        Counters {
            elapsed_s: self.at.elapsed_s + self.started.elapsed().as_secs_f64(),
            ..self.at.clone()
        }
    }

    /// The learning rate of the latest step (of the next one before any).
    pub(crate) fn lr(&self) -> f64 {
        self.lr
    }

    pub(crate) fn last_checkpoint(&self) -> Option<&PathBuf> {
        self.last_checkpoint.as_ref()
    }

    /// `step N (epoch E): what value` of every step skipped for a non-finite value.
    pub(crate) fn skipped_steps(&self) -> &[String] {
        &self.skipped_steps
    }

    /// Runs micro-batch `batch` of `items` images or tokens, adds its gradients to the pending
    /// ones, and takes the optimizer step once `accum_steps` are pending or `close` ends the
    /// accumulation early (an epoch's last batch). `epoch` (1-based) names the place in errors.
    /// Returns `None` for a batch skipped for a non-finite loss.
    pub(crate) fn batch(
        &mut self,
        batch: &T::Batch,
        items: usize,
        close: bool,
        epoch: usize,
    ) -> Result<Option<Trained<T::Output>>, TrainError> {
        let loss_scale = self.at.loss_scale.as_ref().map_or(1.0, |s| s.scale);
        let pass = (self.task).pass(self.model(), batch, self.at.micro_step, loss_scale);
        self.at.micro_step += 1;
        let Some(grads) = pass.grads.filter(|_| pass.loss.is_finite()) else {
            return self.skip_or_stop("loss", pass.loss, epoch).map(|()| None);
        };
        accumulate(&mut self.pending, grads);
        self.n_pending += 1;
        let stepped = self.n_pending == self.recipe.accum_steps || close;
        if stepped {
            self.optimizer_step(loss_scale, epoch)?;
        }
        let w = &mut self.window;
        w.loss += pass.loss;
        w.batches += 1;
        w.items += items;
        Ok(Some(Trained {
            loss: pass.loss,
            output: pass.output,
            stepped,
        }))
    }

    /// One optimizer step on the mean of the pending gradients (without the loss scale),
    /// clipped; then the task's own update.
    fn optimizer_step(&mut self, loss_scale: f64, epoch: usize) -> Result<(), TrainError> {
        let unscale = 1.0 / (self.n_pending as f64 * loss_scale);
        let (pending, clip) = (self.pending.take(), self.recipe.clip_grad);
        self.n_pending = 0;
        let (grads, norm) =
            on_workers(|| clipped(scale(pending.unwrap_or_default(), unscale), clip));
        self.grad_norm = Some(norm);
        self.lr = self.recipe.schedule.at(self.at.step);
        // A half-precision overflow halves the loss scale and skips the step, as GradScaler
        // does; at the smallest scale it is a real non-finite gradient.
        let overflow = match self.at.loss_scale.as_mut() {
            Some(s) if s.scale > LossScale::MIN => !s.update(norm.is_finite()),
            _ => false,
        };
        if norm.is_finite() {
            let model = self
                .model
                .take()
                .expect("the model is in place between steps");
            let (r, lr) = (&self.recipe, self.lr);
            let adam = &mut self.adam;
            let model = on_workers(|| (r.adam).step_scaled(model, grads, adam, lr, &r.lr_scale));
            self.model = Some(model);
        } else if !overflow {
            self.skip_or_stop("gradient norm", norm, epoch)?;
        }
        let model = self
            .model
            .as_ref()
            .expect("the model is back after the step");
        self.task.after_step(model);
        self.at.step += 1;
        Ok(())
    }

    /// A non-finite loss or gradient norm at the next step: recorded and skipped
    /// (`skip_nonfinite`), or the run stops, naming the step and the last good checkpoint.
    fn skip_or_stop(
        &mut self,
        what: &'static str,
        value: f64,
        epoch: usize,
    ) -> Result<(), TrainError> {
        let step = self.at.step + 1;
        if !self.recipe.skip_nonfinite {
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

    /// The figures since the last call, and a new window from now.
    pub(crate) fn take_window(&mut self) -> Window {
        let w = std::mem::replace(&mut self.window, WindowSums::new());
        Window {
            step: self.at.step,
            loss: w.loss / w.batches.max(1) as f64,
            lr: self.lr,
            grad_norm: self.grad_norm,
            items_per_s: w.items as f64 / w.start.elapsed().as_secs_f64().max(1e-9),
        }
    }

    /// Commits checkpoint `name` of the run: the task's files, the optimizer state, and
    /// `state.json` (the caller's record of the run, written last). `epoch` goes to the
    /// manifest with the step.
    pub(crate) fn checkpoint(
        &mut self,
        name: &str,
        epoch: usize,
        state: &impl Serialize,
    ) -> Result<PathBuf, TrainError> {
        let (task, model, adam) = (&self.task, self.model(), &self.adam);
        let keep = self.recipe.keep_checkpoints;
        let dir = checkpoint::commit(&self.run_dir, name, (epoch, self.at.step), keep, |tmp| {
            task.save(tmp, model)?;
            checkpoint::fault_pause("LINVIT_FAULT_CHECKPOINT_PAUSE_MS");
            checkpoint::save_adam(&tmp.join("optimizer.safetensors"), adam)?;
            checkpoint::write_json(&tmp.join("state.json"), state)
        })?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }
}

/// `grads` clipped to the global norm `clip` (not clipped at 0), and their norm before.
fn clipped(grads: Grads, clip: f64) -> (Grads, f64) {
    if clip > 0.0 {
        return clip_global_norm(grads, clip);
    }
    let norm = global_norm(&grads);
    (grads, norm)
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Device, Tensor};

    use super::*;

    #[derive(Module, Debug)]
    struct One {
        w: Param<Tensor<1>>,
    }

    /// A task whose micro-batch is its own loss and gradient, so the engine's arithmetic is
    /// checked alone. Its gradients carry the loss scale, as a real pass's do.
    struct Given;

    impl Task for Given {
        type Model = One;
        type Batch = (f64, [f32; 2]);
        type Output = ();

        fn pass(&self, model: &One, batch: &Self::Batch, _: u64, loss_scale: f64) -> Pass<()> {
            let (loss, g) = *batch;
            let g = Tensor::<1>::from_floats(g, &model.w.device()).mul_scalar(loss_scale);
            Pass {
                loss,
                grads: Some(Grads::from([("w".to_string(), g)])),
                output: (),
            }
        }

        fn save(&self, _: &Path, _: &One) -> Result<(), TrainError> {
            Ok(())
        }
    }

    fn trainer(
        accum_steps: usize,
        loss_scale: Option<f64>,
        skip_nonfinite: bool,
    ) -> Trainer<Given> {
        let device = Device::flex();
        let model = One {
            w: Param::from_tensor(Tensor::from_floats([1.0, -1.0], &device)),
        };
        let recipe = Recipe {
            adam: AdamW {
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
            },
            schedule: Schedule {
                total: 10,
                warmup: 0,
                lr: 0.1,
                warmup_lr: 0.0,
                min_lr: 0.0,
            },
            clip_grad: 0.0,
            accum_steps,
            skip_nonfinite,
            lr_scale: BTreeMap::new(),
            keep_checkpoints: 1,
        };
        let at = Counters {
            loss_scale: loss_scale.map(|scale| LossScale {
                scale,
                good_steps: 0,
            }),
            ..Counters::default()
        };
        let dir = std::env::temp_dir().join("linvit-trainer-test-no-run");
        Trainer::new(Given, model, AdamState::default(), recipe, at, &dir).unwrap()
    }

    fn weights(t: &Trainer<Given>) -> Vec<f32> {
        t.model().w.val().into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn accumulated_and_loss_scaled_micro_batches_step_on_their_mean_gradient() {
        let mut whole = trainer(1, None, false);
        let done = whole.batch(&(1.0, [2.0, 1.0]), 8, false, 1).unwrap();
        assert!(done.is_some_and(|d| d.stepped));

        let mut parts = trainer(2, Some(8.0), false);
        let first = parts.batch(&(0.5, [1.0, -3.0]), 4, false, 1).unwrap();
        assert!(first.is_some_and(|d| !d.stepped));
        assert_eq!(weights(&parts), [1.0, -1.0], "no step before the second");
        let second = parts.batch(&(1.5, [3.0, 5.0]), 4, false, 1).unwrap();
        assert!(second.is_some_and(|d| d.stepped));

        assert_eq!(weights(&parts), weights(&whole));
        assert_ne!(weights(&parts), [1.0, -1.0]);
        let (a, b) = (parts.counters(), whole.counters());
        assert_eq!((a.step, a.micro_step, b.step, b.micro_step), (1, 2, 1, 1));
        let w = parts.take_window();
        assert_eq!((w.step, w.loss), (1, 1.0));
        assert!(
            (w.grad_norm.unwrap() - 5f64.sqrt()).abs() < 1e-6,
            "the mean's norm"
        );
        assert_eq!(w.lr, 0.1);
    }

    #[test]
    fn a_non_finite_value_stops_the_run_or_is_skipped_and_counted() {
        let mut stops = trainer(1, None, false);
        match stops.batch(&(f64::NAN, [1.0, 1.0]), 1, false, 3) {
            Err(TrainError::NonFinite {
                what, step, epoch, ..
            }) => assert_eq!((what, step, epoch), ("loss", 1, 3)),
            other => panic!("expected a non-finite loss, got {:?}", other.map(|_| ())),
        }

        let mut skips = trainer(1, None, true);
        assert!(skips
            .batch(&(f64::NAN, [1.0, 1.0]), 1, false, 1)
            .unwrap()
            .is_none());
        assert!(skips
            .batch(&(1.0, [f32::INFINITY, 1.0]), 1, false, 1)
            .unwrap()
            .is_some());
        assert_eq!(weights(&skips), [1.0, -1.0], "neither was applied");
        let at = skips.counters();
        assert_eq!(
            (at.step, at.micro_step),
            (1, 2),
            "a skipped loss takes no step"
        );
        assert_eq!(
            skips.skipped_steps(),
            [
                "step 1 (epoch 1): loss NaN",
                "step 1 (epoch 1): gradient norm inf"
            ]
        );
    }
}
