//! The training loop: [`train`] starts a run in a directory, [`resume`] continues one from its
//! newest complete checkpoint, bit for bit on a deterministic backend (flex).
//!
//! Determinism: data order, augmentation and mixing depend only on `(data.seed, epoch)`
//! (linvit-data); model init and drop path draw from the device RNG, which is seeded from
//! `train.seed` before init and re-seeded from `(train.seed, micro_step)` before every forward,
//! so the whole RNG state is the step counter stored in the checkpoint. Flex's RNG is
//! process-wide, so seeding and the draws that follow hold one lock ([`RNG_LOCK`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use linvit_data::Dataset;
use linvit_models::{Model, ModelConfig};

use crate::checkpoint::{self, TrainState};
use crate::classify::Run;
use crate::optim::{cast_params, AdamState};
use crate::workers::on_workers;
use crate::{ConfigError, RunConfig, TrainError};

/// Held while the device RNG is seeded and drawn from (flex keeps one RNG per process).
pub(crate) static RNG_LOCK: Mutex<()> = Mutex::new(());

/// [`RNG_LOCK`], held until the guard drops (a panic elsewhere while holding it does not
/// poison it for the rest of the process). Never taken inside [`on_workers`]: see there.
pub(crate) fn rng_lock() -> MutexGuard<'static, ()> {
    RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model built by `init` on `ad` from `seed`, its parameters drawn now. Burn initialises
/// parameters lazily, on first use; left lazy, they would be drawn wherever the model is first
/// touched (a data-parallel replica forked before the first forward), and if that is a
/// `no_grad` copy, which shares them, they never track a gradient (the LM trained only its
/// embedding that way).
pub(crate) fn seeded_init<M: Module>(ad: &Device, seed: u64, init: impl FnOnce() -> M) -> M {
    let _rng = rng_lock();
    ad.seed(seed);
    let model = init();
    crate::optim::params_by_path(&model);
    model
}

/// How progress is shown on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// An indicatif bar with ETA, throughput and the current loss.
    Bar,
    /// One plain line every `train.log_every` steps and one per epoch.
    Lines,
    /// Nothing.
    Quiet,
}

/// Run-time options that are not part of the recipe.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub progress: Progress,
    /// Stop (cleanly, after its checkpoint) once this many epochs of the run are complete, as if
    /// interrupted; `resume` continues. Default: run to `train.epochs`.
    pub stop_after_epochs: Option<usize>,
    /// Further devices for data parallelism: every batch is split over the run's device and
    /// these (see [`data_parallel`]). Not part of the run's config: a run can resume on other
    /// devices. Empty: one device.
    pub devices: Vec<Device>,
}

/// What a run reached.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    /// Epochs complete.
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps: u64,
    pub final_val_top1: Option<f64>,
    pub final_val_top5: Option<f64>,
    pub best_val_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Training seconds (evaluation and checkpoints included, interruptions excluded).
    pub seconds: f64,
    /// Mean training throughput over the epochs run.
    pub images_per_s: f64,
    /// The newest complete checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// `run_dir/best`, when a validation ran.
    pub best: Option<PathBuf>,
    /// `file: reason` of every training image skipped as corrupt (`data.skip_corrupt = true`).
    pub skipped_files: Vec<String>,
    /// `step N (epoch E): what` of every step skipped for a NaN/Inf (`train.skip_nonfinite`).
    pub skipped_steps: Vec<String>,
}

/// Everything fixed for a run once its config and data are resolved.
pub(crate) struct Setup {
    pub(crate) config: RunConfig,
    pub(crate) config_toml: String,
    pub(crate) model_config: ModelConfig,
    pub(crate) dataset: Dataset,
}

/// Fills the values `[model]` and `[data]` leave to the dataset, builds the model config.
fn setup(config: &RunConfig) -> Result<Setup, TrainError> {
    config.validate()?;
    let dataset = linvit_data::open(&config.effective_data())?;
    let mut config = config.clone();
    let channels = config.data.channels.unwrap_or(dataset.source_channels());
    config.data.channels = Some(channels);
    let model_config = config.model_config(dataset.num_classes(), channels)?;
    if config.model.preset.is_some() {
        config.model.num_classes = Some(config.model.num_classes.unwrap_or(dataset.num_classes()));
        config.model.img_size = Some(config.data.image_size);
        config.model.in_chans = Some(channels);
    }
    let classes = match &model_config {
        ModelConfig::Vit(c) => c.num_classes,
        ModelConfig::Pvt(c) => c.num_classes,
        ModelConfig::Swin(c) => c.num_classes,
        ModelConfig::Cswin(c) => c.num_classes,
    };
    if classes != dataset.num_classes() {
        return Err(ConfigError::Invalid {
            key: "model.num_classes".into(),
            message: format!(
                "{classes} but the dataset has {} classes",
                dataset.num_classes()
            ),
        }
        .into());
    }
    let n_train = dataset.train.len();
    if n_train < config.train.batch_size {
        return Err(ConfigError::Invalid {
            key: "train.batch_size".into(),
            message: format!(
                "{} is more than the {n_train} training images",
                config.train.batch_size
            ),
        }
        .into());
    }
    Ok(Setup {
        config_toml: config.to_toml(),
        config,
        model_config,
        dataset,
    })
}

fn io(path: &Path, e: impl ToString) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Starts a run in `run_dir` (created; it must not hold a run already): checks the config and
/// the data, writes `config.toml`, then trains.
pub fn train(
    config: &RunConfig,
    run_dir: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    // `model.init` is checked before anything is written, and recorded as an absolute path.
    let mut config = config.clone();
    if let Some(path) = &config.model.init {
        crate::init::weights_file(path)?;
        config.model.init = Some(std::path::absolute(path).map_err(|e| io(path, e))?);
    }
    let setup = setup(&config)?;
    if run_dir.join("config.toml").exists() || checkpoint::checkpoints_dir(run_dir).exists() {
        return Err(TrainError::RunExists {
            path: run_dir.to_path_buf(),
        });
    }
    // Built before anything is written: a checkpoint in `model.init` that does not fit, or a
    // freeze pattern that matches nothing, leaves no half-made run behind.
    let ad = device.clone().autodiff();
    let model = first_model(&setup, &ad, options)?;
    std::fs::create_dir_all(run_dir).map_err(|e| io(run_dir, e))?;
    let path = run_dir.join("config.toml");
    linvit_models::checkpoint::write_atomic(&path, setup.config_toml.as_bytes())
        .map_err(|e| io(&e.path, e.reason))?;
    start(setup, run_dir, &ad, model, options)
}

/// The model a run starts from: drawn from `train.seed`, then, when fine-tuning, loaded from
/// `model.init` except a head of another shape. Its parameter groups are checked here too.
fn first_model(setup: &Setup, ad: &Device, options: &TrainOptions) -> Result<Model, TrainError> {
    let model = seeded_init(ad, setup.config.train.seed, || setup.model_config.init(ad));
    crate::groups::param_groups(&model, &setup.config.train)?;
    let Some(path) = &setup.config.model.init else {
        return Ok(model);
    };
    let (model, report) = crate::init::load_init(model, &setup.model_config, path)?;
    if options.progress != Progress::Quiet {
        for line in &report.lines {
            eprintln!("{line}");
        }
    }
    Ok(model)
}

/// Trains from the first model (optimizer state and schedule fresh).
fn start(
    setup: Setup,
    run_dir: &Path,
    ad: &Device,
    model: Model,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    let ema = (setup.config.train.ema > 0.0).then(|| model.valid());
    let (adam, state) = (AdamState::default(), TrainState::default());
    Run::new(setup, run_dir, ad, model, adam, ema, state, options)?.run()
}

/// Continues the run in `run_dir` from its newest complete checkpoint (from the start when it
/// was stopped before its first) with the run's own `config.toml`; the result equals an
/// uninterrupted run's on a deterministic backend.
pub fn resume(
    run_dir: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    resume_with(run_dir, &[], device, options)
}

/// [`resume`] with `key=value` overrides (e.g. `train.epochs=20` to extend a finished run); the
/// changed config is written back to `config.toml`. Changing the recipe mid-run breaks the
/// equality with an uninterrupted run, by design.
pub fn resume_with(
    run_dir: &Path,
    sets: &[String],
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    let path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let config = crate::config::from_toml(&text)?;
    let config = crate::config::with_sets(&config, sets)?;
    let setup = setup(&config)?;
    if !sets.is_empty() {
        linvit_models::checkpoint::write_atomic(&path, setup.config_toml.as_bytes())
            .map_err(|e| io(&e.path, e.reason))?;
    }
    checkpoint::repair_best(run_dir);
    let ad = device.clone().autodiff();
    let Some(dir) = checkpoint::latest(run_dir)? else {
        // Stopped before its first checkpoint: start over from the seed, which is exactly
        // where an uninterrupted run started.
        let model = first_model(&setup, &ad, options)?;
        return start(setup, run_dir, &ad, model, options);
    };
    let loaded = checkpoint::load(&dir, &ad)?;
    let ema = match (setup.config.train.ema > 0.0, loaded.ema) {
        (true, Some(e)) => Some(e),
        (true, None) => Some(loaded.model.valid()),
        (false, _) => None,
    };
    let (model, adam, state) = (loaded.model, loaded.adam, loaded.state);
    Run::new(setup, run_dir, &ad, model, adam, ema, state, options)?.run()
}

/// Soft-target cross entropy, `mean_i sum_k -t_ik log softmax(z_i)_k` (timm's
/// `SoftTargetCrossEntropy`); with one-hot targets it is the usual cross entropy.
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (log_softmax(logits, 1) * targets).sum_dim(1).neg().mean()
}

pub(crate) fn mix_seed(seed: u64, step: u64) -> u64 {
    let mut x = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Correct top-1 predictions among `logits` (`[n, k]`, host) for `labels`.
pub(crate) fn top1_correct(logits: &[f32], k: usize, labels: &[i64]) -> usize {
    logits
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, &l)| {
            let arg = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
            arg as i64 == l
        })
        .count()
}

/// One device's share of a batch after its forward and backward pass.
pub(crate) struct Pass {
    /// The share's mean loss times its fraction of the batch (these sum to the batch's mean).
    pub(crate) weighted_loss: f64,
    /// The share's logits, `[rows, k]`, on the host.
    pub(crate) logits: Vec<f32>,
    /// Its gradients, on its own device; `None` when the loss is not finite.
    grads: Option<GradientsParams>,
}

/// Rows `[start, end)` of each of `parts` near-equal shares of `n` rows, empty shares left out.
fn shares(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let (base, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|d| {
            let len = base + usize::from(d < extra);
            start += len;
            (start - len, start)
        })
        .filter(|(a, b)| b > a)
        .collect()
}

/// How every pass runs: `half` casts the weights and the images to that dtype inside the graph
/// (the logits come back to f32 for the loss, as under `torch.autocast`); the loss is multiplied
/// by `loss_scale` before the backward pass.
#[derive(Clone, Copy)]
pub(crate) struct PassMode {
    pub(crate) half: Option<FloatDType>,
    pub(crate) loss_scale: f64,
}

/// Forward and backward of rows `rows` of the batch on `device`, where `replica` lives.
/// The device RNG (drop path) is seeded with `seed` under [`RNG_LOCK`], so the draws do not
/// depend on how the workers' threads interleave.
#[allow(clippy::too_many_arguments)]
fn pass(
    replica: Model,
    batch: &linvit_data::Batch,
    targets: &[f32],
    k: usize,
    rows: (usize, usize),
    device: &Device,
    seed: u64,
    mode: PassMode,
) -> Pass {
    let [n, c, h, w] = batch.shape;
    let m = rows.1 - rows.0;
    let per_image = c * h * w;
    let images = batch.images[rows.0 * per_image..rows.1 * per_image].to_vec();
    let images = Tensor::<4>::from_data(TensorData::new(images, [m, c, h, w]), device);
    let targets = targets[rows.0 * k..rows.1 * k].to_vec();
    let targets = Tensor::<2>::from_data(TensorData::new(targets, [m, k]), device);
    let logits = {
        // Taken here, outside rayon's pool (see `on_workers`).
        let _rng = rng_lock();
        device.seed(seed);
        on_workers(|| match mode.half {
            None => replica.forward(images),
            Some(half) => cast_params(replica.clone(), half)
                .forward(images.cast(half))
                .cast(FloatDType::F32),
        })
    };
    let mut loss = soft_cross_entropy(logits.clone(), targets);
    let weight = m as f64 / n as f64;
    if m < n {
        loss = loss * weight;
    }
    let weighted_loss = loss.clone().into_scalar::<f32>() as f64;
    let logits = logits
        .inner()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    if mode.loss_scale != 1.0 {
        loss = loss * mode.loss_scale;
    }
    let grads = weighted_loss
        .is_finite()
        .then(|| on_workers(|| GradientsParams::from_grads(loss.backward(), &replica)));
    Pass {
        weighted_loss,
        logits,
        grads,
    }
}

/// Data parallelism as burn-train's `MultiDevice` strategy does it: every worker device runs a
/// near-equal share of the batch on a replica of the model, each in its own thread; the shares'
/// losses are weighted by their size, so the summed gradients are the whole batch's (up to
/// float reordering). One device runs the whole batch in this thread.
pub(crate) fn data_parallel(
    model: &Model,
    batch: &linvit_data::Batch,
    targets: &[f32],
    k: usize,
    workers: &[Device],
    seed: u64,
    mode: PassMode,
) -> Vec<Pass> {
    let parts = shares(batch.len(), workers.len());
    if parts.len() == 1 {
        let (rows, device) = (parts[0], &workers[0]);
        return vec![pass(
            model.clone(),
            batch,
            targets,
            k,
            rows,
            device,
            seed,
            mode,
        )];
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .zip(workers)
            .enumerate()
            .map(|(d, (&rows, device))| {
                // The first share draws exactly what one device would.
                let (replica, seed) = match d {
                    0 => (model.clone(), seed),
                    _ => (model.clone().fork(device), mix_seed(seed, d as u64)),
                };
                scope.spawn(move || pass(replica, batch, targets, k, rows, device, seed, mode))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The passes' gradients summed on the main device with burn-optim's accumulator.
pub(crate) fn gather_grads(model: &Model, passes: Vec<Pass>, main: &Device) -> GradientsParams {
    let mut grads: Vec<GradientsParams> = passes.into_iter().filter_map(|p| p.grads).collect();
    if grads.len() == 1 {
        return grads.remove(0);
    }
    let mut sum = GradientsAccumulator::<Model>::new();
    for g in grads {
        sum.accumulate(model, g.to_device(main, model));
    }
    sum.grads()
}

#[cfg(test)]
mod tests {
    use super::shares;
    use crate::checkpoint::LossScale;

    #[test]
    fn the_loss_scale_halves_on_overflow_and_doubles_after_2000_good_steps() {
        let mut s = LossScale::default();
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        for _ in 0..1999 {
            assert!(s.update(true));
        }
        assert_eq!((s.scale, s.good_steps), (32768.0, 1999));
        s.update(true);
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        s.update(true);
        s.update(false);
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
    }

    #[test]
    fn a_batch_splits_into_near_equal_contiguous_shares() {
        assert_eq!(shares(15, 2), [(0, 8), (8, 15)]);
        assert_eq!(shares(16, 4), [(0, 4), (4, 8), (8, 12), (12, 16)]);
        assert_eq!(shares(7, 1), [(0, 7)]);
        // Fewer images than devices: the idle devices get no share.
        assert_eq!(shares(2, 3), [(0, 1), (1, 2)]);
    }
}
