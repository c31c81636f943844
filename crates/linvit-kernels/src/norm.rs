//! LayerNorm on rows, for kernels that run a block's pre-norm on each block of rows while it is
//! in cache instead of writing the normalised tensor out.

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
