//! The transformer MLP `fc1 -> [ReLU] -> GELU -> fc2` (timm's `Mlp`, PVT's and Swin's), for
//! inference.
//!
//! Why fused: op by op on flex, the hidden activation (4-8x the block's width; 51 MiB for
//! PVT-T's first stage at batch 8) is written by `fc1`, read and written by the bias add, by
//! GELU, and read by `fc2`, each pass mostly on one thread. Here each block of rows goes through
//! both products (gemm, with the bias preloaded, as [`crate::linear`]) and GELU while its hidden
//! rows are in cache.

use crate::activation::gelu_in_place;
use crate::linear::{accumulate_product, element_wise, new_rows, BlockInput};
use crate::matmul::Operand;
use crate::norm::RowNorm;

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
        let input = BlockInput {
            x,
            width,
            order: None,
            norm: self.norm,
        };
        new_rows(
            rows,
            out_width,
            self.fc2_bias,
            residual,
            |first, out, parallelism| {
                let n = out.len() / out_width;
                let x = input.block(first, n, parallelism);
                let mut h = match self.fc1_bias {
                    Some(bias) => bias.repeat(n),
                    None => vec![0f32; n * hidden],
                };
                accumulate_product(parallelism, &mut h, &x, fc1, [n, width, hidden]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{layer_norm_rows, wave};

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
        let input: Vec<f64> = if with_norm {
            layer_norm_rows(&x, &gamma, &beta, 1e-5)
        } else {
            x.iter().map(|&v| v as f64).collect()
        };
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
