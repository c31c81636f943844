//! The transformer MLP `fc1 -> [ReLU] -> GELU -> fc2` (timm's `Mlp`, PVT's and Swin's), for
//! inference.
//!
//! Why fused: op by op on flex, the hidden activation (4-8x the block's width; 51 MiB for
//! PVT-T's first stage at batch 8) is written by `fc1`, read and written by the bias add, by
//! GELU, and read by `fc2`, each pass mostly on one thread. Here each block of rows goes through
//! both products (gemm, with the bias preloaded, as [`crate::linear`]) and GELU while its hidden
//! rows are in cache.

use crate::activation::gelu_in_place;
use rayon::prelude::*;

use crate::linear::{accumulate_product, new_rows};
use crate::matmul::{Operand, Parallelism};
use crate::simd::{dot, multiversion, sum};

/// Weights as Burn's `Linear` stores them: `[in, out]` row-major, biases `[out]`; optionally
/// the block's LayerNorm in front of `fc1`.
#[derive(Clone, Copy, Debug)]
pub struct Mlp<'a> {
    /// LayerNorm applied to each input row before `fc1` (a transformer block's `norm2`), done
    /// per block of rows in cache, so the normalised rows are never written out.
    pub norm: Option<RowNorm<'a>>,
    pub fc1_weight: &'a [f32],
    pub fc1_bias: Option<&'a [f32]>,
    pub fc2_weight: &'a [f32],
    pub fc2_bias: Option<&'a [f32]>,
    /// ReLU after `fc1` (PVTv2's `linear` variant).
    pub relu: bool,
}

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
    /// row in L1, no cancellation), then the affine map.
    fn normalise_row(out: &mut [f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32) {
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
    }
}

impl Mlp<'_> {
    /// `x` `[rows, in]` -> `[rows, out]` (`norm` applied to `x` first where given), plus
    /// `residual` `[rows, out]` where given. A block's `x + mlp(norm(x))` is one call with `x`
    /// as both input and residual: the output rows start as `x + fc2.bias` and `fc2` accumulates
    /// into them, so neither the normalised rows nor the residual add is a pass of its own.
    ///
    /// # Panics
    /// On weight, bias and residual sizes that do not chain (a caller bug).
    pub fn forward(&self, x: &[f32], width: usize, residual: Option<&[f32]>) -> Vec<f32> {
        let hidden = self.fc1_weight.len() / width;
        let out_width = self.fc2_weight.len() / hidden;
        assert!(
            hidden * width == self.fc1_weight.len() && out_width * hidden == self.fc2_weight.len()
        );
        assert!(self.fc1_bias.is_none_or(|b| b.len() == hidden));
        assert!(self.fc2_bias.is_none_or(|b| b.len() == out_width));
        assert!(x.len().is_multiple_of(width));
        assert!(self.norm.is_none_or(|nm| nm.gamma.len() == width));
        let rows = x.len() / width;
        let fc1 = Operand(self.fc1_weight, [hidden, 1]);
        let fc2 = Operand(self.fc2_weight, [out_width, 1]);
        new_rows(
            rows,
            out_width,
            self.fc2_bias,
            residual,
            |first, out, parallelism| {
                let n = out.len() / out_width;
                let x = &x[first * width..][..n * width];
                let normalised;
                let x = match &self.norm {
                    Some(norm) => {
                        let mut rows = x.to_vec();
                        element_wise(parallelism, &mut rows, width * 64, |r| norm.rows(r));
                        normalised = rows;
                        &normalised[..]
                    }
                    None => x,
                };
                let mut h = match self.fc1_bias {
                    Some(bias) => bias.repeat(n),
                    None => vec![0f32; n * hidden],
                };
                accumulate_product(parallelism, &mut h, x, fc1, [n, width, hidden]);
                element_wise(parallelism, &mut h, 1 << 14, |h| {
                    if self.relu {
                        h.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    gelu_in_place(h);
                });
                accumulate_product(parallelism, out, &h, fc2, [n, hidden, out_width]);
            },
        )
    }
}

/// `f` over `data` in chunks of `chunk` elements (a multiple of the row width): on this thread
/// within a block of rows, split over the threads where the block is all rows (gemm's threads,
/// `Parallelism::Rayon`), so that work does not run on one core.
fn element_wise(
    parallelism: Parallelism,
    data: &mut [f32],
    chunk: usize,
    f: impl Fn(&mut [f32]) + Send + Sync,
) {
    match parallelism {
        Parallelism::Rayon(_) => data.par_chunks_mut(chunk).for_each(f),
        _ => f(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wave;

    #[test]
    fn matches_the_layers_written_out_on_a_small_case() {
        // 300 rows (one block, gemm's threads) and 2100 (blocks on rayon's threads, the
        // last shorter), 5 -> 7 -> 3, without and with a residual, and with both a residual
        // and a LayerNorm in front.
        for rows in [300, 2100] {
            check_rows(rows, false, false);
            check_rows(rows, true, false);
            check_rows(rows, true, true);
        }
    }

    fn check_rows(rows: usize, with_residual: bool, with_norm: bool) {
        let (width, hidden, out) = (5, 7, 3);
        let (x, w1, b1, w2, b2) = (
            wave(rows * width, 0.37),
            wave(width * hidden, 0.71),
            wave(hidden, 1.3),
            wave(hidden * out, 0.53),
            wave(out, 2.1),
        );
        let (gamma, beta) = (wave(width, 0.9), wave(width, 1.7));
        let mlp = Mlp {
            norm: with_norm.then_some(RowNorm {
                gamma: &gamma,
                beta: Some(&beta),
                eps: 1e-5,
            }),
            fc1_weight: &w1,
            fc1_bias: Some(&b1),
            fc2_weight: &w2,
            fc2_bias: Some(&b2),
            relu: false,
        };
        let residual = wave(rows * out, 0.29);
        let got = mlp.forward(&x, width, with_residual.then_some(&residual[..]));
        let input: Vec<f64> = x
            .chunks(width)
            .flat_map(|row| {
                let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                if !with_norm {
                    return row;
                }
                let mean = row.iter().sum::<f64>() / width as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                let inv = 1.0 / (var + 1e-5).sqrt();
                (0..width)
                    .map(|i| (row[i] - mean) * inv * gamma[i] as f64 + beta[i] as f64)
                    .collect()
            })
            .collect();
        let gelu =
            |v: f64| v * (1.0 + crate::activation::erf((v / 2f64.sqrt()) as f32) as f64) / 2.0;
        for r in 0..rows {
            let h: Vec<f64> = (0..hidden)
                .map(|j| {
                    let s: f64 = (0..width)
                        .map(|i| input[r * width + i] * w1[i * hidden + j] as f64)
                        .sum();
                    gelu(s + b1[j] as f64)
                })
                .collect();
            for o in 0..out {
                let y: f64 = (0..hidden)
                    .map(|j| h[j] * w2[j * out + o] as f64)
                    .sum::<f64>()
                    + b2[o] as f64
                    + if with_residual {
                        residual[r * out + o] as f64
                    } else {
                        0.0
                    };
                let g = got[r * out + o] as f64;
                assert!(
                    (g - y).abs() < 1e-5 * y.abs().max(1.0),
                    "row {r} out {o}: {g} vs {y}"
                );
            }
        }
    }
}
