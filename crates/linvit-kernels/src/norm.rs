//! LayerNorm on rows: for kernels that run a block's pre-norm on each block of rows while it is
//! in cache instead of writing the normalised tensor out, and for training, a forward that keeps
//! each row's statistics and the one-pass backward that uses them.

use rayon::prelude::*;

use crate::simd::{dot, multiversion, sum};

/// LayerNorm over each row: `(x - mean) / sqrt(var + eps) * gamma + beta`, the variance biased
/// (PyTorch's and Burn's `LayerNorm`).
#[derive(Clone, Copy, Debug)]
pub struct RowNorm<'a> {
    pub gamma: &'a [f32],
    pub beta: Option<&'a [f32]>,
    pub eps: f32,
}

impl RowNorm<'_> {
    /// Normalises each `gamma.len()`-wide row of `x` in place.
    pub fn rows(&self, x: &mut [f32]) {
        let width = self.gamma.len();
        assert!(x.len().is_multiple_of(width));
        assert!(self.beta.is_none_or(|b| b.len() == width));
        for row in x.chunks_exact_mut(width) {
            normalise_row(row, self.gamma, self.beta, self.eps);
        }
    }
}

multiversion! {
    /// One row of [`RowNorm`], in place: mean, then the variance around it (two passes over a
    /// row in L1, no cancellation), then the affine map. Returns the row's mean and
    /// `1 / sqrt(var + eps)`.
    fn normalise_row(out: &mut [f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32) -> (f32, f32) {
        let n = out.len() as f32;
        let mean = sum(out) / n;
        out.iter_mut().for_each(|o| *o -= mean);
        let inv = 1.0 / (dot(out, out) / n + eps).sqrt();
        match beta {
            Some(beta) => {
                for ((o, &g), &b) in out.iter_mut().zip(gamma).zip(beta) {
                    *o = *o * inv * g + b;
                }
            }
            None => {
                for (o, &g) in out.iter_mut().zip(gamma) {
                    *o = *o * inv * g;
                }
            }
        }
        (mean, inv)
    }
}

/// What [`RowNorm::forward_keeping_stats`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct NormForward {
    /// The normalised rows, `[rows, C]`.
    pub out: Vec<f32>,
    /// Per row, `[rows]`.
    pub mean: Vec<f32>,
    /// Per row, `1 / sqrt(var + eps)`, `[rows]`.
    pub rstd: Vec<f32>,
}

/// What [`layer_norm_backward`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct NormGrads {
    pub input: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

impl RowNorm<'_> {
    /// Each `gamma.len()`-wide row of `x`, normalised, with its statistics; the rows in blocks
    /// on all cores. The training forward: it keeps each row's mean and reciprocal standard
    /// deviation for [`layer_norm_backward`], which gives the gradients of the input, `gamma`
    /// and `beta` in one pass over the rows (what PyTorch's fused `native_layer_norm` saves and
    /// computes). Why: Burn differentiates LayerNorm as the ten tensor ops it is written with,
    /// each a pass over `[B, N, C]` with its own saved intermediate.
    pub fn forward_keeping_stats(&self, x: &[f32]) -> NormForward {
        let width = self.gamma.len();
        assert!(width > 0 && x.len().is_multiple_of(width));
        assert!(self.beta.is_none_or(|b| b.len() == width));
        let rows = x.len() / width;
        let mut out = x.to_vec();
        let mut mean = vec![0f32; rows];
        let mut rstd = vec![0f32; rows];
        let block = crate::rows_per_task(width);
        out.par_chunks_mut(block * width)
            .zip(mean.par_chunks_mut(block).zip(rstd.par_chunks_mut(block)))
            .for_each(|(out, (mean, rstd))| {
                for ((row, m), r) in out.chunks_exact_mut(width).zip(mean).zip(rstd) {
                    (*m, *r) = normalise_row(row, self.gamma, self.beta, self.eps);
                }
            });
        NormForward { out, mean, rstd }
    }
}

/// The gradients of `sum(layer_norm(x) * grad)` from the input, `gamma` and the statistics of
/// [`RowNorm::forward_keeping_stats`] (beta and epsilon are not needed). Per row, with
/// `xhat = (x - mean) * rstd` and `a = grad * gamma`:
/// `dx = rstd * (a - mean(a) - xhat * mean(a * xhat))`; `dgamma` sums `grad * xhat` and
/// `dbeta` sums `grad` over the rows, per task and then over tasks in order (so the same bits
/// on any number of threads).
pub fn layer_norm_backward(
    gamma: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    grad: &[f32],
) -> NormGrads {
    let width = gamma.len();
    assert!(x.len() == grad.len() && x.len() == mean.len() * width && mean.len() == rstd.len());
    let block = crate::rows_per_task(width);
    let mut input = crate::zeros(x.len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = input
        .par_chunks_mut(block * width)
        .zip(
            x.par_chunks(block * width)
                .zip(grad.par_chunks(block * width)),
        )
        .zip(mean.par_chunks(block).zip(rstd.par_chunks(block)))
        .map(|((dx, (x, grad)), (mean, rstd))| {
            let mut dgamma = vec![0f32; width];
            let mut dbeta = vec![0f32; width];
            let rows = dx
                .chunks_exact_mut(width)
                .zip(x.chunks_exact(width).zip(grad.chunks_exact(width)));
            for ((dx, (x, g)), (&m, &r)) in rows.zip(mean.iter().zip(rstd)) {
                norm_backward_row(dx, x, g, gamma, [m, r], &mut dgamma, &mut dbeta);
            }
            (dgamma, dbeta)
        })
        .collect();
    NormGrads {
        input,
        gamma: crate::sum_in_order(partials.iter().map(|(g, _)| g.as_slice()), width),
        beta: crate::sum_in_order(partials.iter().map(|(_, b)| b.as_slice()), width),
    }
}

multiversion! {
    /// One row of [`layer_norm_backward`]; `stats` is the row's `[mean, rstd]`.
    fn norm_backward_row(
        dx: &mut [f32],
        x: &[f32],
        grad: &[f32],
        gamma: &[f32],
        stats: [f32; 2],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let [mean, rstd] = stats;
        let n = x.len() as f32;
        // dx holds xhat first, then the gradient.
        for (h, &x) in dx.iter_mut().zip(x) {
            *h = (x - mean) * rstd;
        }
        let sum_a = dot(grad, gamma);
        let sum_axhat = dot3(grad, gamma, dx);
        let mean_a = sum_a / n;
        let mean_axhat = sum_axhat / n;
        for ((((d, &g), &w), dg), db) in dx.iter_mut().zip(grad).zip(gamma).zip(dgamma).zip(dbeta) {
            let h = *d;
            *dg += g * h;
            *db += g;
            *d = rstd * (g * w - mean_a - h * mean_axhat);
        }
    }
}

/// `sum(a * b * c)` in 16 interleaved partial sums, so the loop vectorises.
#[inline(always)]
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let whole = a.len() / 16 * 16;
    for ((a, b), c) in a[..whole]
        .chunks_exact(16)
        .zip(b[..whole].chunks_exact(16))
        .zip(c[..whole].chunks_exact(16))
    {
        for j in 0..16 {
            acc[j] += a[j] * b[j] * c[j];
        }
    }
    let tail: f32 = (whole..a.len()).map(|i| a[i] * b[i] * c[i]).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{layer_norm_rows, wave};

    /// Forward against LayerNorm in f64, and the backward against central differences of
    /// `sum(layer_norm(x) * g)` in f64, for the input, gamma and beta (rows of 37: no whole
    /// vector; 3 rows and 700 rows, more than one task).
    #[test]
    fn training_forward_and_backward_match_layer_norm_in_double_precision() {
        let width = 37;
        let gamma: Vec<f32> = wave(width, 0.9).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = wave(width, 1.7);
        let norm = RowNorm {
            gamma: &gamma,
            beta: Some(&beta),
            eps: 1e-5,
        };
        for rows in [3, 700] {
            let x: Vec<f32> = wave(rows * width, 0.31)
                .iter()
                .map(|v| 2.0 * v + 0.3)
                .collect();
            let g = wave(rows * width, 0.53);
            let f = norm.forward_keeping_stats(&x);
            let exact = layer_norm_rows(&x, &gamma, &beta, 1e-5);
            for (a, b) in f.out.iter().zip(&exact) {
                assert!((*a as f64 - b).abs() < 2e-6, "forward: {a} vs {b}");
            }
            let grads = layer_norm_backward(&gamma, &x, &f.mean, &f.rstd, &g);
            // The central difference of sum(layer_norm(x) * g) in f64 along entry `e` of input
            // `which` (0: x, 1: gamma, 2: beta).
            let inputs = [x.clone(), gamma.clone(), beta.clone()];
            let h = 1e-2f32;
            let slope = |which: usize, e: usize| {
                let objective = |step: f32| -> f64 {
                    let mut v = inputs.clone();
                    v[which][e] += step;
                    layer_norm_rows(&v[0], &v[1], &v[2], 1e-5)
                        .iter()
                        .zip(&g)
                        .map(|(y, g)| y * *g as f64)
                        .sum()
                };
                (objective(h) - objective(-h)) / (2.0 * h as f64)
            };
            let checks = [
                (
                    0,
                    &grads.input,
                    (0..x.len()).step_by(97).collect::<Vec<_>>(),
                    "dx",
                ),
                (1, &grads.gamma, (0..width).collect(), "dgamma"),
                (2, &grads.beta, (0..width).collect(), "dbeta"),
            ];
            for (which, got, entries, name) in checks {
                for e in entries {
                    let d = slope(which, e);
                    assert!(
                        (got[e] as f64 - d).abs() < 1e-3 * d.abs().max(1.0),
                        "{name}[{e}]"
                    );
                }
            }
        }
    }
}
