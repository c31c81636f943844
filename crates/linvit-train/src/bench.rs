//! The training step timed on its own: one fixed batch, the model's forward, soft-target cross
//! entropy, backward and an AdamW update, repeated until a time budget is spent. `linvit bench
//! model` and the ablation runner's quiet benchmark both time it here, so their img/s agree.
//!
//! Several models compared on a machine whose speed drifts (a shared VM drifts by 10-30% over
//! minutes) are timed interleaved ([`interleaved_steps`]): in rounds, each model a slice of
//! every round, so a slow minute slows them all alike.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, FloatDType, Tensor, TensorData};
use linvit_models::{Model, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::config::Precision;
use crate::optim::{cast_params, collect_grads, AdamState, AdamW};
use crate::soft_cross_entropy;
use crate::workers::on_workers;

/// Timing budget of one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Timed calls at least (after one untimed warm-up call).
    pub min_reps: usize,
    /// Keep timing until this many seconds have passed (or `max_reps`).
    pub seconds: f64,
    pub max_reps: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            min_reps: 3,
            seconds: 2.0,
            max_reps: 50,
        }
    }
}

/// The median wall time in milliseconds of `f` (which must block until its work is done).
pub fn time_ms(budget: Budget, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < budget.min_reps
        || (start.elapsed().as_secs_f64() < budget.seconds && times.len() < budget.max_reps)
    {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// A model, a batch of random images and one-hot targets on an autodiff device, ready to time
/// training steps on. Built before any timing starts, so a memory probe started after
/// [`TrainStep::new`] sees the step's own allocations only.
pub struct TrainStep {
    device: Device,
    model: Option<Model>,
    images: Tensor<4>,
    targets: Tensor<2>,
    half: Option<FloatDType>,
    adam: AdamState,
    batch: usize,
}

impl TrainStep {
    /// `config`'s model at its own input shape and class count, `batch` images per step, on
    /// `device` (made autodiff here).
    pub fn new(config: &ModelConfig, batch: usize, precision: Precision, device: &Device) -> Self {
        let device = device.clone().autodiff();
        // Flex draws from one process-wide RNG (see `train::RNG_LOCK`): the draws here (the
        // weights, materialised now, and the batch) and in every step (drop path) hold the lock,
        // so that a run training beside a benchmark stays deterministic.
        let _rng = crate::train::rng_lock();
        let model = config.init(&device);
        crate::optim::params_by_path(&model);
        let [channels, side] = config.input();
        let classes = config.num_classes();
        let images = Tensor::<4>::random(
            [batch, channels, side, side],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let mut onehot = vec![0f32; batch * classes];
        for i in 0..batch {
            onehot[i * classes + (i * 7919) % classes] = 1.0;
        }
        let targets = Tensor::<2>::from_data(TensorData::new(onehot, [batch, classes]), &device);
        TrainStep {
            model: Some(model),
            device,
            images,
            targets,
            half: precision.half(),
            adam: AdamState::default(),
            batch,
        }
    }

    /// The same step with `train.freeze` applied, as a run with that config trains: frozen
    /// parameters get no gradient and no update.
    pub fn with_frozen(mut self, train: &crate::TrainConfig) -> Result<Self, crate::ConfigError> {
        let model = self
            .model
            .take()
            .expect("the model is in place between steps");
        let groups = crate::groups::param_groups(&model, train)?;
        self.model = Some(crate::groups::freeze(model, &groups));
        Ok(self)
    }

    /// One step: forward (in `precision`, f32 master weights), loss, backward, update, on
    /// rayon's workers as training runs it.
    pub fn step(&mut self) {
        let _rng = crate::train::rng_lock();
        on_workers(|| self.step_holding_rng())
    }

    /// [`step`](Self::step) on the calling thread, to measure what running on the workers
    /// gives (`examples/on_workers.rs`).
    pub fn step_on_caller(&mut self) {
        let _rng = crate::train::rng_lock();
        self.step_holding_rng()
    }

    /// The step, with [`crate::train::RNG_LOCK`] held by the caller (drop path draws).
    fn step_holding_rng(&mut self) {
        let hp = AdamW {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.05,
        };
        let m = self
            .model
            .take()
            .expect("the model is put back after each step");
        let logits = match self.half {
            None => m.forward(self.images.clone()),
            Some(h) => cast_params(m.clone(), h)
                .forward(self.images.clone().cast(h))
                .cast(FloatDType::F32),
        };
        let loss = soft_cross_entropy(logits, self.targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let (grads, _) = collect_grads(&m, grads);
        let m = hp.step(m, grads, &mut self.adam, 1e-4);
        let _ = self.device.sync();
        self.model = Some(m);
    }

    /// The median step time in milliseconds and the images per second it gives.
    pub fn time(&mut self, budget: Budget) -> (f64, f64) {
        let ms = time_ms(budget, || self.step());
        (ms, self.batch as f64 / (ms / 1e3))
    }

    /// Images per step.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// Budget of [`interleaved_steps`]: each model is timed for `seconds` in all, spread over
/// `rounds` rounds, and for at least 2 steps a round.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rounds {
    pub rounds: usize,
    pub seconds: f64,
}

/// The step times in milliseconds of every model `build` makes, timed interleaved: in each of
/// `budget.rounds` rounds, model `i` is built (`build(i)`; one model in memory at a time), takes
/// one untimed warm-up step, then steps for `budget.seconds / budget.rounds`.
pub fn interleaved_steps<E>(
    models: usize,
    budget: Rounds,
    mut build: impl FnMut(usize) -> Result<TrainStep, E>,
) -> Result<Vec<Vec<f64>>, E> {
    let slice = budget.seconds / budget.rounds.max(1) as f64;
    let mut times = vec![Vec::new(); models];
    for _ in 0..budget.rounds.max(1) {
        for (i, out) in times.iter_mut().enumerate() {
            let mut step = build(i)?;
            step.step();
            let start = Instant::now();
            let mut n = 0;
            while n < 2 || start.elapsed().as_secs_f64() < slice {
                let t = Instant::now();
                step.step();
                out.push(t.elapsed().as_secs_f64() * 1e3);
                n += 1;
            }
        }
    }
    Ok(times)
}

/// The median of `xs` (sorted in place); NaN for none.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// A `kB` field of `/proc/self/status` (`VmHWM:`, `VmRSS:`), in kB; `None` off Linux.
pub fn proc_status_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
