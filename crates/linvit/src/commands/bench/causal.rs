//! `linvit bench causal`: speed of causal attention over long sequences, the claim of
//! Lightning Attention-2: the blocked form's tokens/s stays flat as the length grows, while
//! softmax attention (Burn's fused `attention` with `is_causal`) and the quadratic masked form
//! slow down with the length. Forward and forward+backward (a training step's attention part)
//! are timed separately.
//!
//! Memory is reported analytically, as the bytes of the largest intermediate each form builds
//! (the `n x n` score matrix, or the per-block `B x B` tiles): a point whose estimate exceeds
//! `--max-bytes` is reported as skipped with that reason rather than run into an allocation
//! failure.

use crate::CliError;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Tensor};
use linvit_attention::lightning::{alibi_slopes, causal_linear_attention, CausalForm, Decay};
use serde::Serialize;

/// A causal attention form the benchmark runs (`--forms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// Lightning-2's blocked linear attention (`--block` tokens per block).
    Blocked,
    /// Linear attention one token at a time on a `d x d` state.
    Recurrent,
    /// Linear attention with the `N x N` decay mask.
    Quadratic,
    /// Burn's fused causal softmax attention.
    Softmax,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Blocked => "blocked",
            Form::Recurrent => "recurrent",
            Form::Quadratic => "quadratic",
            Form::Softmax => "softmax",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct CausalBench {
    pub tokens: Vec<usize>,
    pub forms: Vec<Form>,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Timed repetitions per point (the median is reported), after one warm-up run.
    pub repeats: usize,
    /// Points whose largest intermediate would exceed this are skipped.
    pub max_bytes: u64,
}

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct CausalRow {
    pub form: Form,
    pub tokens: usize,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub block_size: Option<usize>,
    pub forward_ms: Option<f64>,
    pub train_ms: Option<f64>,
    pub forward_tokens_per_s: Option<f64>,
    pub train_tokens_per_s: Option<f64>,
    /// Bytes of the largest intermediate (analytic).
    pub peak_intermediate_bytes: u64,
    /// Why the point was not run.
    pub skipped: Option<String>,
}

impl CausalBench {
    /// Checks the sizes before anything runs (clap has checked the form names).
    pub fn validate(&self) -> Result<(), CliError> {
        if self.forms.is_empty() {
            return Err("--forms: give at least one form".into());
        }
        if self.tokens.is_empty() || self.tokens.contains(&0) {
            return Err("--tokens: give positive token counts, e.g. 1024,4096,16384".into());
        }
        if self.batch == 0 || self.heads == 0 || self.head_dim == 0 || self.block_size == 0 {
            return Err("--batch, --heads, --head-dim and --block must be positive".into());
        }
        Ok(())
    }

    fn intermediate_bytes(&self, form: Form, n: usize) -> u64 {
        let bh = (self.batch * self.heads) as u64;
        let n = n as u64;
        let d = self.head_dim as u64;
        4 * bh
            * match form {
                Form::Blocked => {
                    let b = (self.block_size as u64).min(n);
                    n.div_ceil(b) * b * b + n.div_ceil(b) * d * d
                }
                Form::Recurrent => n * d + d * d,
                Form::Quadratic | Form::Softmax => n * n,
            }
    }
}

/// Runs every point on `device`; `log` gets one line per point as it finishes.
pub fn run(
    bench: &CausalBench,
    device: &Device,
    mut log: impl FnMut(&CausalRow),
) -> Vec<CausalRow> {
    let mut rows = Vec::new();
    for &form in &bench.forms {
        for &n in &bench.tokens {
            let bytes = bench.intermediate_bytes(form, n);
            let mut row = CausalRow {
                form,
                tokens: n,
                batch: bench.batch,
                heads: bench.heads,
                head_dim: bench.head_dim,
                block_size: (form == Form::Blocked).then_some(bench.block_size),
                forward_ms: None,
                train_ms: None,
                forward_tokens_per_s: None,
                train_tokens_per_s: None,
                peak_intermediate_bytes: bytes,
                skipped: None,
            };
            if bytes > bench.max_bytes {
                row.skipped = Some(format!(
                    "needs {:.1} GB for its largest intermediate (limit --max-bytes {:.1} GB)",
                    bytes as f64 / 1e9,
                    bench.max_bytes as f64 / 1e9
                ));
            } else {
                let forward = time(bench, || point(bench, form, n, device, false));
                let train = time(bench, || point(bench, form, n, device, true));
                let tokens = (bench.batch * n) as f64;
                row.forward_ms = Some(forward * 1e3);
                row.train_ms = Some(train * 1e3);
                row.forward_tokens_per_s = Some(tokens / forward);
                row.train_tokens_per_s = Some(tokens / train);
            }
            log(&row);
            rows.push(row);
        }
    }
    rows
}

/// Median seconds of `repeats` runs after one warm-up (the benchmarks' one timing loop).
fn time(bench: &CausalBench, f: impl FnMut()) -> f64 {
    let reps = bench.repeats.max(1);
    let budget = linvit_train::bench::Budget {
        min_reps: reps,
        seconds: 0.0,
        max_reps: reps,
    };
    linvit_train::bench::time_ms(budget, f) / 1e3
}

/// One forward (and backward when `train`), synchronised by reading a scalar back.
fn point(bench: &CausalBench, form: Form, n: usize, device: &Device, train: bool) {
    let device = if train {
        device.clone().autodiff()
    } else {
        device.clone()
    };
    let (b, h, d) = (bench.batch, bench.heads, bench.head_dim);
    let input = || {
        let t = Tensor::<4>::random([b, h, n, d], Distribution::Normal(0.0, 0.5), &device);
        if train {
            t.require_grad()
        } else {
            t
        }
    };
    let (q, k, v) = (input(), input(), input());
    let decay = Decay::slopes(alibi_slopes(h));
    let linear =
        |form| causal_linear_attention(q.clone(), k.clone(), v.clone(), &decay, form, None).0;
    let out = match form {
        Form::Softmax => attention(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            None,
            AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: true,
            },
        ),
        Form::Blocked => linear(CausalForm::Blocked {
            block_size: bench.block_size,
        }),
        Form::Recurrent => linear(CausalForm::Recurrent),
        Form::Quadratic => linear(CausalForm::Quadratic),
    };
    if train {
        let grads = out.sum().backward();
        let g = q.grad(&grads).expect("q takes part in every form");
        let _ = g.sum().into_scalar::<f32>();
    } else {
        let _ = out.sum().into_scalar::<f32>();
    }
}
