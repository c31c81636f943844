//! Training and sampling the TransNormer causal language model on bytes (`linvit lm train`,
//! `linvit lm generate`). Training runs the configured causal form (blocked by default);
//! generation prefills the prompt in the blocked form and then decodes one token at a time in
//! the recurrent form, carrying a fixed-size state per layer, so memory does not grow with
//! the number of generated tokens.
//!
//! The LM is a `Task` of the same `Trainer` (`trainer.rs`) as the image classifier:
//! PyTorch-exact AdamW, global-norm clipping, warmup + cosine per step, gradient accumulation,
//! the skip-or-stop rule for non-finite values and atomic checkpoints, on next-byte
//! cross-entropy. Losses are reported in bits per byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use linvit_attention::lightning::CausalForm;
use linvit_data::text::{fixed_windows, sample_windows, TextConfig, TextCorpus, VOCAB};
use linvit_models::checkpoint::write_atomic;
use linvit_models::transnormer::{DecodeState, TransnormerConfig, TransnormerForCausalLM};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::{apply_sets, deserialize_as, parse_file};
use crate::optim::{collect_grads, AdamState, AdamW};
use crate::train::seeded_init;
use crate::trainer::{Counters, Pass, Recipe, Schedule, Task, Trainer};
use crate::{ConfigError, TrainError};

/// The embedded default LM recipe (`configs/lm_quickstart.toml`).
pub const LM_QUICKSTART: &str = include_str!("../../../configs/lm_quickstart.toml");

/// A language-model run: `[model]`, `[data]`, `[train]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmRunConfig {
    pub model: TransnormerConfig,
    pub data: TextConfig,
    pub train: LmTrainConfig,
}

/// The optimisation side of an LM run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmTrainConfig {
    /// Optimizer steps. A micro-batch skipped for a non-finite loss (`skip_nonfinite`) is not
    /// replaced, so such a run takes fewer. Default: 400.
    pub steps: u64,
    /// Windows per step. Default: 16.
    pub batch_size: usize,
    /// Peak learning rate. Default: 3e-3.
    pub lr: f64,
    /// Final learning rate of the cosine. Default: 1e-4.
    pub min_lr: f64,
    /// Linear warmup steps from 0. Default: 20.
    pub warmup_steps: u64,
    /// AdamW weight decay (matrices only). Default: 0.01.
    pub weight_decay: f64,
    /// Global gradient-norm clip, 0 for none. Default: 1.0.
    pub clip_grad: f64,
    /// Micro-batches of `batch_size` windows summed per optimizer step. Default: 1.
    pub accum_steps: usize,
    /// Skip (and count) a micro-batch whose loss, or a step whose gradient norm, is NaN or
    /// infinite, instead of stopping the run. Default: false.
    pub skip_nonfinite: bool,
    /// Seed of model init and window sampling. Default: 0.
    pub seed: u64,
    /// Steps between log lines. Default: 25.
    pub log_every: u64,
    /// Steps between validations and checkpoints (and one at the end). Default: 100.
    pub eval_every: u64,
    /// Validation windows (consecutive, from the start of the held-out text). Default: 16.
    pub eval_windows: usize,
    /// Checkpoints kept (taken at every validation; `linvit lm train --resume` continues from
    /// the newest). Default: 2.
    pub keep_checkpoints: usize,
}

impl Default for LmTrainConfig {
    fn default() -> Self {
        Self {
            steps: 400,
            batch_size: 16,
            lr: 3e-3,
            min_lr: 1e-4,
            warmup_steps: 20,
            weight_decay: 0.01,
            clip_grad: 1.0,
            accum_steps: 1,
            skip_nonfinite: false,
            seed: 0,
            log_every: 25,
            eval_every: 100,
            eval_windows: 16,
            keep_checkpoints: 2,
        }
    }
}

impl LmRunConfig {
    /// Checks every section; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        self.model
            .validate()
            .map_err(|m| invalid("model", m.message))?;
        if self.model.vocab_size < VOCAB {
            return Err(invalid(
                "model.vocab_size",
                format!("{} is below the {VOCAB} byte ids", self.model.vocab_size),
            ));
        }
        self.data
            .validate()
            .map_err(|e| invalid("data", e.to_string()))?;
        let t = &self.train;
        for (key, ok) in [
            ("train.steps", t.steps > 0),
            ("train.batch_size", t.batch_size > 0),
            ("train.accum_steps", t.accum_steps > 0),
            ("train.lr", t.lr > 0.0 && t.lr.is_finite()),
            ("train.log_every", t.log_every > 0),
            ("train.eval_every", t.eval_every > 0),
            ("train.eval_windows", t.eval_windows > 0),
            ("train.keep_checkpoints", t.keep_checkpoints > 0),
        ] {
            if !ok {
                return Err(invalid(key, "must be positive".into()));
            }
        }
        Ok(())
    }
}

/// Reads an LM config (or the embedded quickstart) and applies `key=value` overrides.
pub fn resolve_lm(file: Option<&Path>, sets: &[String]) -> Result<LmRunConfig, ConfigError> {
    let mut doc = parse_file(file, LM_QUICKSTART, "configs/lm_quickstart.toml (embedded)")?;
    apply_sets(&mut doc, sets)?;
    let config: LmRunConfig = deserialize_as(doc)?;
    config.validate()?;
    Ok(config)
}

/// What a training run reached.
#[derive(Clone, Debug, Serialize)]
pub struct LmSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub params: usize,
    /// Validation bits per byte of the initial and the final model.
    pub initial_val_bpb: f64,
    pub final_val_bpb: f64,
    /// Mean training loss (bits per byte) over the last logging window.
    pub final_train_bpb: f64,
    pub tokens_per_s: f64,
    pub seconds: f64,
    pub corpus: String,
    /// `step N (epoch 1): what value` of every step skipped for a non-finite value.
    pub skipped_steps: Vec<String>,
}

fn io(path: &Path, e: impl ToString) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// `[B, n]` token ids on `device` from host windows.
fn ids(windows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let (b, n) = (windows.len(), windows[0].len());
    let flat: Vec<i64> = windows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(flat, [b, n]), device)
}

/// Mean next-token cross-entropy (nats) of windows of `n + 1` tokens.
fn loss(model: &TransnormerForCausalLM, windows: &[Vec<u32>], device: &Device) -> Tensor<1> {
    let inputs: Vec<Vec<u32>> = windows.iter().map(|w| w[..w.len() - 1].to_vec()).collect();
    let targets: Vec<Vec<u32>> = windows.iter().map(|w| w[1..].to_vec()).collect();
    let logits = model.forward(ids(&inputs, device));
    let [b, n, v] = logits.dims();
    let targets = ids(&targets, device).reshape([b * n]);
    CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits.reshape([b * n, v]), targets)
}

/// Validation bits per byte over `windows` (no gradients).
fn validate(model: &TransnormerForCausalLM, windows: &[Vec<u32>], device: &Device) -> f64 {
    let model = model.clone().no_grad();
    let mut total = 0.0;
    for chunk in windows.chunks(8) {
        let l = loss(&model, chunk, device).into_scalar::<f32>() as f64;
        total += l * chunk.len() as f64;
    }
    total / windows.len() as f64 / std::f64::consts::LN_2
}

/// Where an LM run stands: what its checkpoints hold besides the model and the optimizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LmState {
    /// Optimizer steps taken.
    step: u64,
    /// Micro-batches run. The windows of a micro-batch depend only on `(train.seed,
    /// micro_step)`, so with `step` this is the whole position of the run. Absent in
    /// checkpoints from before accumulation, where it equals `step`.
    #[serde(default)]
    micro_step: Option<u64>,
    /// `metrics.csv` so far.
    metrics: String,
    initial_val_bpb: f64,
    last_val_bpb: f64,
    /// Mean training loss of the last logging window; `None` before the first.
    last_train_bpb: Option<f64>,
    /// Seconds of training so far.
    elapsed_s: f64,
}

/// The LM as a [`Task`]: next-byte cross entropy on windows of `seq_len + 1` bytes.
struct NextByte {
    config: TransnormerConfig,
    ad: Device,
}

impl Task for NextByte {
    type Model = TransnormerForCausalLM;
    type Batch = Vec<Vec<u32>>;
    type Output = ();

    fn pass(
        &self,
        model: &TransnormerForCausalLM,
        windows: &Vec<Vec<u32>>,
        _micro_step: u64,
        loss_scale: f64,
    ) -> Pass<()> {
        let l = loss(model, windows, &self.ad);
        let value = l.clone().into_scalar::<f32>() as f64;
        let grads = value.is_finite().then(|| {
            let l = if loss_scale == 1.0 { l } else { l * loss_scale };
            collect_grads(model, GradientsParams::from_grads(l.backward(), model)).0
        });
        Pass {
            loss: value,
            grads,
            output: (),
        }
    }

    fn save(&self, dir: &Path, model: &TransnormerForCausalLM) -> Result<(), TrainError> {
        save_lm(dir, &self.config, model)
    }
}

/// Trains a new LM in `run_dir` (which must not hold one) on `device`; `log` gets progress lines.
/// A checkpoint is kept at every validation (`run_dir/checkpoints/step-NNNNNNNN`), from which
/// [`resume_lm`] continues.
pub fn train_lm(
    config: &LmRunConfig,
    run_dir: &Path,
    device: &Device,
    log: &mut dyn Write,
) -> Result<LmSummary, TrainError> {
    config.validate()?;
    if run_dir.join("model.json").exists() {
        return Err(TrainError::RunExists {
            path: run_dir.to_path_buf(),
        });
    }
    // The text is read before anything is written: a bad data path leaves no half-made run.
    let run = LmRun::open(config.clone(), run_dir, device)?;
    std::fs::create_dir_all(run_dir).map_err(|e| io(run_dir, e))?;
    let toml = toml::to_string(config).map_err(|e| io(run_dir, e))?;
    write_atomic(&run_dir.join("config.toml"), toml.as_bytes()).map_err(|e| io(run_dir, e))?;
    run.start(log)
}

/// Continues the LM run in `run_dir` from its newest complete checkpoint (from the seed when it
/// was stopped before its first) with the run's own `config.toml`; the weights it ends with
/// equal an uninterrupted run's on a deterministic backend (flex).
pub fn resume_lm(
    run_dir: &Path,
    device: &Device,
    log: &mut dyn Write,
) -> Result<LmSummary, TrainError> {
    let config = resolve_lm(Some(&run_dir.join("config.toml")), &[])?;
    let run = LmRun::open(config, run_dir, device)?;
    let Some(dir) = checkpoint::latest(run_dir)? else {
        return run.start(log);
    };
    let (_, model) = load_lm(&dir, &run.ad)?;
    let adam = checkpoint::load_adam(&dir.join("optimizer.safetensors"), device)?;
    let state: LmState = checkpoint::read_json(&dir.join("state.json"))?;
    let _ = writeln!(
        log,
        "lm: resuming {} at step {}",
        run_dir.display(),
        state.step
    );
    run.train(model, adam, state, log)
}

/// An LM run's fixed parts: its config, directory, text and device.
struct LmRun<'a> {
    config: LmRunConfig,
    run_dir: &'a Path,
    corpus: TextCorpus,
    /// The validation windows, the same at every validation.
    val: Vec<Vec<u32>>,
    ad: Device,
}

impl<'a> LmRun<'a> {
    fn open(config: LmRunConfig, run_dir: &'a Path, device: &Device) -> Result<Self, TrainError> {
        let corpus: TextCorpus = config.data.load()?;
        let (seq, t) = (config.data.seq_len, &config.train);
        let val = fixed_windows(&corpus.val, seq + 1, t.eval_windows);
        Ok(LmRun {
            config,
            run_dir,
            corpus,
            val,
            ad: device.clone().autodiff(),
        })
    }

    /// From the seed: the model initialised under `train.seed`, a fresh optimizer.
    fn start(self, log: &mut dyn Write) -> Result<LmSummary, TrainError> {
        let (ad, seed) = (&self.ad, self.config.train.seed);
        let model = seeded_init(ad, seed, || self.config.model.init(ad));
        let initial = validate(&model, &self.val, &self.ad);
        let _ = writeln!(
            log,
            "lm: {} parameters, {} train / {} val bytes from {}; val {initial:.3} bits/byte at step 0",
            self.config.model.num_params(),
            self.corpus.train.len(),
            self.corpus.val.len(),
            self.corpus.source
        );
        let state = LmState {
            step: 0,
            micro_step: Some(0),
            metrics: String::from("step,train_bpb,val_bpb,lr,tokens_per_s\n"),
            initial_val_bpb: initial,
            last_val_bpb: initial,
            last_train_bpb: None,
            elapsed_s: 0.0,
        };
        self.train(model, AdamState::default(), state, log)
    }

    /// The micro-batches from where `state` stands to `train.steps` optimizer steps through
    /// the [`Trainer`]: a log line every `log_every` steps, and at every `eval_every` (and at
    /// the end) a validation, a checkpoint, and its model published to the run directory.
    fn train(
        &self,
        model: TransnormerForCausalLM,
        adam: AdamState,
        mut state: LmState,
        log: &mut dyn Write,
    ) -> Result<LmSummary, TrainError> {
        let (t, seq) = (&self.config.train, self.config.data.seq_len);
        let recipe = Recipe {
            adam: AdamW {
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: t.weight_decay,
            },
            schedule: Schedule {
                total: t.steps,
                warmup: t.warmup_steps,
                lr: t.lr,
                warmup_lr: 0.0,
                min_lr: t.min_lr,
            },
            clip_grad: t.clip_grad,
            accum_steps: t.accum_steps,
            skip_nonfinite: t.skip_nonfinite,
            lr_scale: BTreeMap::new(),
            keep_checkpoints: t.keep_checkpoints,
        };
        let at = Counters {
            step: state.step,
            micro_step: state.micro_step.unwrap_or(state.step),
            loss_scale: None,
            elapsed_s: state.elapsed_s,
        };
        let task = NextByte {
            config: self.config.model.clone(),
            ad: self.ad.clone(),
        };
        let mut trainer = Trainer::new(task, model, adam, recipe, at, self.run_dir)?;
        let micro_batches = t.steps * t.accum_steps as u64;
        let tokens = t.batch_size * seq;
        while trainer.micro_step() < micro_batches {
            let micro = trainer.micro_step();
            let last = micro + 1 == micro_batches;
            let windows = sample_windows(&self.corpus.train, seq + 1, t.batch_size, t.seed, micro);
            let stepped = trainer
                .batch(&windows, tokens, last, 1)?
                .is_some_and(|d| d.stepped);
            let step = trainer.step();
            if !(stepped && step % t.log_every == 0 || last) {
                continue;
            }
            let w = trainer.take_window();
            let train_bpb = w.loss / std::f64::consts::LN_2;
            state.last_train_bpb = Some(train_bpb);
            let validated = stepped && step % t.eval_every == 0 || last;
            if validated {
                state.last_val_bpb = validate(trainer.model(), &self.val, &self.ad);
            }
            let val = validated.then_some(state.last_val_bpb);
            let (lr, tps) = (w.lr, w.items_per_s);
            let _ = writeln!(
                log,
                "step {step}/{}  train {train_bpb:.3} bits/byte{}  lr {lr:.2e}  {tps:.0} tokens/s",
                t.steps,
                val.map(|v| format!("  val {v:.3}")).unwrap_or_default()
            );
            let val_text = val.map(|v| format!("{v:.5}")).unwrap_or_default();
            (state.metrics).push_str(&format!(
                "{step},{train_bpb:.5},{val_text},{lr:.6e},{tps:.1}\n"
            ));
            let metrics = self.run_dir.join("metrics.csv");
            write_atomic(&metrics, state.metrics.as_bytes()).map_err(|e| io(&metrics, e))?;
            if validated {
                let at = trainer.counters();
                state.step = at.step;
                state.micro_step = Some(at.micro_step);
                state.elapsed_s = at.elapsed_s;
                let dir = trainer.checkpoint(&format!("step-{:08}", at.step), 0, &state)?;
                publish_model(&dir, self.run_dir)?;
            }
        }
        let at = trainer.counters();
        let summary = LmSummary {
            run_dir: self.run_dir.to_path_buf(),
            steps: at.step,
            params: self.config.model.num_params(),
            initial_val_bpb: state.initial_val_bpb,
            final_val_bpb: state.last_val_bpb,
            final_train_bpb: state.last_train_bpb.unwrap_or(f64::NAN),
            tokens_per_s: (at.micro_step as usize * tokens) as f64 / at.elapsed_s.max(1e-9),
            seconds: at.elapsed_s,
            corpus: self.corpus.source.clone(),
            skipped_steps: trainer.skipped_steps().to_vec(),
        };
        let json = serde_json::to_vec_pretty(&summary).map_err(|e| io(self.run_dir, e))?;
        let path = self.run_dir.join("summary.json");
        write_atomic(&path, &json).map_err(|e| io(&path, e))?;
        Ok(summary)
    }
}

/// Makes the checkpoint's model the run directory's (`model.json` + `model.bpk`, what `linvit lm
/// generate` reads): each file copied beside its target and renamed over it, so the model is
/// serialised once per validation.
fn publish_model(checkpoint: &Path, run_dir: &Path) -> Result<(), TrainError> {
    for name in ["model.bpk", "model.json"] {
        let (from, tmp, to) = (
            checkpoint.join(name),
            run_dir.join(format!("{name}.tmp")),
            run_dir.join(name),
        );
        std::fs::copy(&from, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &to).map_err(|e| io(&to, e))?;
    }
    Ok(())
}

/// Saves the model as `model.json` + `model.bpk`, each written atomically.
fn save_lm(
    dir: &Path,
    config: &TransnormerConfig,
    model: &TransnormerForCausalLM,
) -> Result<(), TrainError> {
    let weights = dir.join("model.bpk");
    let tmp = dir.join("model.bpk.tmp");
    model.clone().save_file(&tmp).map_err(|e| io(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &weights).map_err(|e| io(&weights, e))?;
    let json = serde_json::to_vec_pretty(config).map_err(|e| io(dir, e))?;
    write_atomic(&dir.join("model.json"), &json).map_err(|e| io(dir, e))
}

/// Loads a model saved by `linvit lm train` from its run directory.
pub fn load_lm(
    dir: &Path,
    device: &Device,
) -> Result<(TransnormerConfig, TransnormerForCausalLM), TrainError> {
    let json = dir.join("model.json");
    let text = std::fs::read_to_string(&json).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TrainError::NoCheckpoint {
            path: dir.to_path_buf(),
        },
        _ => io(&json, e),
    })?;
    let config: TransnormerConfig = serde_json::from_str(&text).map_err(|e| io(&json, e))?;
    config.validate().map_err(|e| io(&json, e))?;
    let weights = dir.join("model.bpk");
    let model =
        config
            .init(device)
            .try_load_file(&weights)
            .map_err(|e| TrainError::Checkpoint {
                path: weights.clone(),
                reason: e.to_string(),
            })?;
    Ok((config, model))
}

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 picks the most likely token.
    pub temperature: f64,
    /// Sample among the `top_k` most likely tokens; 0 for all.
    pub top_k: usize,
    pub seed: u64,
}

/// How a generation went.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated: usize,
    pub prefill_ms: f64,
    pub tokens_per_s: f64,
    /// Bytes of recurrent state per sequence, the same after every token.
    pub state_bytes: usize,
}

/// Continues `prompt` by `tokens` tokens: blocked prefill, then recurrent steps. `on_token`
/// sees each new token as it is produced.
pub fn generate(
    model: &TransnormerForCausalLM,
    prompt: &[u32],
    tokens: usize,
    sampling: Sampling,
    device: &Device,
    mut on_token: impl FnMut(u32),
) -> (Vec<u32>, GenerateStats) {
    let mut rng = ChaCha8Rng::seed_from_u64(sampling.seed);
    let start = Instant::now();
    let prompt: Vec<u32> = if prompt.is_empty() {
        vec![b'\n' as u32]
    } else {
        prompt.to_vec()
    };
    let form = match model.form {
        CausalForm::Recurrent => CausalForm::Blocked { block_size: 64 },
        other => other,
    };
    let (logits, mut state) =
        model.forward_from(ids(std::slice::from_ref(&prompt), device), None, form);
    let prefill_ms = start.elapsed().as_secs_f64() * 1e3;
    let state_bytes = state_size(&state);
    let [_, n, _] = logits.dims();
    let mut last = logits.narrow(1, n - 1, 1);
    let mut out = Vec::with_capacity(tokens);
    let decode_start = Instant::now();
    for _ in 0..tokens {
        let next = sample(last, sampling, &mut rng);
        on_token(next);
        out.push(next);
        let (logits, s) = model.forward_from(
            ids(&[vec![next]], device),
            Some(state),
            CausalForm::Recurrent,
        );
        debug_assert_eq!(state_size(&s), state_bytes);
        state = s;
        last = logits;
    }
    let stats = GenerateStats {
        prompt_tokens: prompt.len(),
        generated: tokens,
        prefill_ms,
        tokens_per_s: tokens as f64 / decode_start.elapsed().as_secs_f64().max(1e-9),
        state_bytes,
    };
    (out, stats)
}

/// Bytes held by the per-layer states of one sequence (float32).
pub fn state_size(state: &DecodeState) -> usize {
    state
        .iter()
        .map(|s| s.kv.dims().iter().skip(1).product::<usize>() * 4)
        .sum()
}

/// Picks the next token from logits `[1, 1, vocab]`.
fn sample(logits: Tensor<3>, s: Sampling, rng: &mut ChaCha8Rng) -> u32 {
    let [_, _, v] = logits.dims();
    let logits = logits.reshape([v]);
    if s.temperature <= 0.0 {
        return logits.argmax(0).into_scalar::<i64>() as u32;
    }
    let logp: Vec<f32> = log_softmax(logits.div_scalar(s.temperature), 0)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    let mut order: Vec<usize> = (0..logp.len()).collect();
    order.sort_by(|&a, &b| logp[b].total_cmp(&logp[a]));
    if s.top_k > 0 {
        order.truncate(s.top_k);
    }
    let weights: Vec<f64> = order.iter().map(|&i| (logp[i] as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut pick = rng.random::<f64>() * total;
    for (&i, w) in order.iter().zip(&weights) {
        if pick < *w {
            return i as u32;
        }
        pick -= w;
    }
    order[order.len() - 1] as u32
}
