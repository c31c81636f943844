//! Training and sampling the TransNormer causal language model on bytes (`linvit lm train`,
//! `linvit lm generate`). Training runs the configured causal form (blocked by default);
//! generation prefills the prompt in the blocked form and then decodes one token at a time in
//! the recurrent form, carrying a fixed-size state per layer, so memory does not grow with
//! the number of generated tokens.
//!
//! The recipe is the image classifier's optimizer (PyTorch-exact AdamW, global-norm clipping,
//! warmup + cosine per step) on next-byte cross-entropy; losses are reported in bits per byte.

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
use crate::optim::{clip_global_norm, collect_grads, lr_at, AdamState, AdamW};
use crate::train::seeded_init;
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
    /// Optimizer steps. Default: 400.
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
    /// Optimizer steps taken. The windows of a step depend only on `(train.seed, step)`, so
    /// this is the whole position of the run.
    step: u64,
    /// `metrics.csv` so far.
    metrics: String,
    initial_val_bpb: f64,
    last_val_bpb: f64,
    /// Mean training loss of the last logging window; `None` before the first.
    last_train_bpb: Option<f64>,
    /// Seconds of training so far.
    elapsed_s: f64,
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
    run.train(model, adam, state, Some(dir), log)
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
            metrics: String::from("step,train_bpb,val_bpb,lr,tokens_per_s\n"),
            initial_val_bpb: initial,
            last_val_bpb: initial,
            last_train_bpb: None,
            elapsed_s: 0.0,
        };
        self.train(model, AdamState::default(), state, None, log)
    }

    /// Steps from `state.step` to `train.steps`: a log line every `log_every` steps, and at
    /// every `eval_every` (and the last) a validation, `model.*` in the run directory, and a
    /// checkpoint.
    fn train(
        &self,
        mut model: TransnormerForCausalLM,
        mut adam: AdamState,
        mut state: LmState,
        mut last_checkpoint: Option<PathBuf>,
        log: &mut dyn Write,
    ) -> Result<LmSummary, TrainError> {
        let (t, seq, ad) = (&self.config.train, self.config.data.seq_len, &self.ad);
        let hp = AdamW {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: t.weight_decay,
        };
        let start = Instant::now();
        let elapsed_before = state.elapsed_s;
        let (mut window_loss, mut window_steps, mut window_start) = (0.0, 0u64, Instant::now());
        for step in state.step..t.steps {
            let windows = sample_windows(&self.corpus.train, seq + 1, t.batch_size, t.seed, step);
            let l = loss(&model, &windows, ad);
            let value = l.clone().into_scalar::<f32>() as f64;
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    what: "loss",
                    epoch: 1,
                    step: step + 1,
                    loss: value,
                    checkpoint: last_checkpoint,
                });
            }
            let grads = GradientsParams::from_grads(l.backward(), &model);
            let (grads, _) = collect_grads(&model, grads);
            let grads = if t.clip_grad > 0.0 {
                clip_global_norm(grads, t.clip_grad).0
            } else {
                grads
            };
            let lr = lr_at(step, t.steps, t.warmup_steps, t.lr, 0.0, t.min_lr);
            model = hp.step(model, grads, &mut adam, lr);
            window_loss += value / std::f64::consts::LN_2;
            window_steps += 1;
            let done = step + 1;
            if done % t.log_every != 0 && done != t.steps {
                continue;
            }
            let train_bpb = window_loss / window_steps as f64;
            state.last_train_bpb = Some(train_bpb);
            let tokens = (window_steps as usize * t.batch_size * seq) as f64;
            let tps = tokens / window_start.elapsed().as_secs_f64().max(1e-9);
            let validated = done % t.eval_every == 0 || done == t.steps;
            if validated {
                state.last_val_bpb = validate(&model, &self.val, ad);
            }
            let val = validated.then_some(state.last_val_bpb);
            let _ = writeln!(
                log,
                "step {done}/{}  train {train_bpb:.3} bits/byte{}  lr {lr:.2e}  {tps:.0} tokens/s",
                t.steps,
                val.map(|v| format!("  val {v:.3}")).unwrap_or_default()
            );
            let val_text = val.map(|v| format!("{v:.5}")).unwrap_or_default();
            (state.metrics).push_str(&format!(
                "{done},{train_bpb:.5},{val_text},{lr:.6e},{tps:.1}\n"
            ));
            let metrics = self.run_dir.join("metrics.csv");
            write_atomic(&metrics, state.metrics.as_bytes()).map_err(|e| io(&metrics, e))?;
            if validated {
                state.step = done;
                state.elapsed_s = elapsed_before + start.elapsed().as_secs_f64();
                let dir = self.checkpoint(&model, &adam, &state)?;
                publish_model(&dir, self.run_dir)?;
                last_checkpoint = Some(dir);
            }
            (window_loss, window_steps, window_start) = (0.0, 0, Instant::now());
        }
        let seconds = elapsed_before + start.elapsed().as_secs_f64();
        let summary = LmSummary {
            run_dir: self.run_dir.to_path_buf(),
            steps: t.steps,
            params: self.config.model.num_params(),
            initial_val_bpb: state.initial_val_bpb,
            final_val_bpb: state.last_val_bpb,
            final_train_bpb: state.last_train_bpb.unwrap_or(f64::NAN),
            tokens_per_s: (t.steps as usize * t.batch_size * seq) as f64 / seconds.max(1e-9),
            seconds,
            corpus: self.corpus.source.clone(),
        };
        let json = serde_json::to_vec_pretty(&summary).map_err(|e| io(self.run_dir, e))?;
        let path = self.run_dir.join("summary.json");
        write_atomic(&path, &json).map_err(|e| io(&path, e))?;
        Ok(summary)
    }

    /// `checkpoints/step-NNNNNNNN`: the model, the optimizer and the state, committed whole.
    fn checkpoint(
        &self,
        model: &TransnormerForCausalLM,
        adam: &AdamState,
        state: &LmState,
    ) -> Result<PathBuf, TrainError> {
        let name = format!("step-{:08}", state.step);
        let keep = self.config.train.keep_checkpoints;
        checkpoint::commit(self.run_dir, &name, (0, state.step), keep, |tmp| {
            save_lm(tmp, &self.config.model, model)?;
            checkpoint::save_adam(&tmp.join("optimizer.safetensors"), adam)?;
            checkpoint::write_json(&tmp.join("state.json"), state)
        })
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
    let (logits, mut state) = model.forward_from(ids(&[prompt.clone()], device), None, form);
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
