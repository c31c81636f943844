//! Softmax attention within windows, for inference: Swin's window attention (relative position
//! bias, shifted-window mask) and any softmax attention over short token runs. Follows
//! `linvit_attention::softmax` (Microsoft's `WindowAttention`): scores `q k^T * scale + bias
//! [+ mask]`, softmax over the keys, times `v`, heads merged.
//!
//! Why fused: op by op on flex, a Swin-T stage-3 block cuts `q, k, v` apart and splits heads
//! (three copies), writes the `[windows, heads, 49, 49]` scores, adds the bias and the mask as
//! broadcast passes (the mask's 5-d broadcast walks a strided iterator), runs a softmax whose
//! `exp` is libm's scalar one, and merges heads again. Here each window's heads are done in
//! turn while the window is in cache: two small products on gemm reading `q, k, v` in place from
//! the `qkv` buffer, the bias and mask preloaded into the scores, and a vectorised softmax.

use rayon::prelude::*;

use crate::activation::exp;
use crate::matmul::{product, Operand};
use crate::rows::Rows;
use crate::simd::{max, multiversion, sum};

/// Softmax attention within windows of `tokens` rows; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct WindowAttention<'a> {
    pub heads: usize,
    /// Multiplies `q k^T` (usually `head_dim^-0.5`).
    pub scale: f32,
    /// `[heads, tokens, tokens]`, added to every window's scores (Swin's relative position bias).
    pub bias: Option<&'a [f32]>,
    /// `[masks, tokens, tokens]`, added to the scores of window `w % masks` (the shifted-window
    /// mask of one image's windows, windows of an image consecutive).
    pub mask: Option<&'a [f32]>,
}

impl WindowAttention<'_> {
    /// `q, k, v`: `[windows * tokens, C]` each -> `[windows * tokens, C]`, heads merged
    /// (head-major channels).
    ///
    /// # Panics
    /// On shapes that disagree (a caller bug, not a user input).
    pub fn forward(&self, tokens: usize, q: Rows, k: Rows, v: Rows) -> Vec<f32> {
        let (n, c, heads) = (tokens, q.width(), self.heads);
        let d = c / heads;
        assert!(n > 0 && d * heads == c && q.rows().is_multiple_of(n));
        for t in [&k, &v] {
            assert!(t.width() == c && t.rows() == q.rows());
        }
        assert!(self.bias.is_none_or(|b| b.len() == heads * n * n));
        assert!(self
            .mask
            .is_none_or(|m| !m.is_empty() && m.len() % (n * n) == 0));
        let masks = self.mask.map_or(1, |m| m.len() / (n * n));

        let mut out = vec![0f32; q.rows() * c];
        out.par_chunks_mut(n * c).enumerate().for_each(|(w, out)| {
            let first = w * n;
            let mask = self.mask.map(|m| &m[(w % masks) * n * n..][..n * n]);
            let mut scores = vec![0f32; n * n];
            for h in 0..heads {
                let bias = self.bias.map(|b| &b[h * n * n..][..n * n]);
                let preloaded = preload(&mut scores, bias, mask);
                product(
                    &mut scores,
                    [n, 1],
                    q.operand(first, h * d),
                    k.operand_transposed(first, h * d),
                    [n, n, d],
                    preloaded,
                    self.scale,
                );
                softmax_rows(&mut scores, n);
                product(
                    &mut out[h * d..],
                    [c, 1],
                    Operand(&scores, [n, 1]),
                    v.operand(first, h * d),
                    [n, d, n],
                    false,
                    1.0,
                );
            }
        });
        out
    }
}

/// Writes `bias + mask` (either may be absent) into `scores`; false where there is neither.
fn preload(scores: &mut [f32], bias: Option<&[f32]>, mask: Option<&[f32]>) -> bool {
    match (bias, mask) {
        (Some(b), Some(m)) => scores
            .iter_mut()
            .zip(b.iter().zip(m))
            .for_each(|(s, (b, m))| *s = b + m),
        (Some(t), None) | (None, Some(t)) => scores.copy_from_slice(t),
        (None, None) => return false,
    }
    true
}

multiversion! {
    /// Softmax of each `n`-wide row of `scores`, in place: `exp(x - max) / sum`.
    pub(crate) fn softmax_rows(scores: &mut [f32], n: usize) {
        for row in scores.chunks_exact_mut(n) {
            let max = max(row);
            row.iter_mut().for_each(|x| *x = exp(*x - max));
            let sum = sum(row);
            row.iter_mut().for_each(|x| *x /= sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wave;

    /// The attention written out in f64, one window and head at a time.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        n: usize,
        c: usize,
        heads: usize,
        scale: f64,
        qkv: &[f32],
        bias: &[f32],
        mask: &[f32],
        masks: usize,
    ) -> Vec<f64> {
        let d = c / heads;
        let windows = qkv.len() / (3 * c * n);
        let at = |t: usize, part: usize, ch: usize| qkv[t * 3 * c + part * c + ch] as f64;
        let mut out = vec![0f64; windows * n * c];
        for w in 0..windows {
            for h in 0..heads {
                for i in 0..n {
                    let s: Vec<f64> = (0..n)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|e| at(w * n + i, 0, h * d + e) * at(w * n + j, 1, h * d + e))
                                .sum();
                            dot * scale
                                + bias[(h * n + i) * n + j] as f64
                                + mask[((w % masks) * n + i) * n + j] as f64
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for ch in 0..d {
                        out[(w * n + i) * c + h * d + ch] = (0..n)
                            .map(|j| e[j] / total * at(w * n + j, 2, h * d + ch))
                            .sum();
                    }
                }
            }
        }
        out
    }

    /// 6 windows of 7 tokens (3 images of 2 windows, so 2 masks), 3 heads of 5 channels, on
    /// views of one `qkv` buffer.
    #[test]
    fn matches_the_attention_written_out_on_views_of_one_qkv_buffer() {
        let (n, c, heads, windows, masks) = (7, 15, 3, 6, 2);
        let qkv = wave(windows * n * 3 * c, 0.37);
        let bias = wave(heads * n * n, 1.3);
        let mask: Vec<f32> = (0..masks * n * n)
            .map(|i| if (i * 7) % 5 == 0 { -100.0 } else { 0.0 })
            .collect();
        let rows = windows * n;
        let part = |i: usize| Rows::new(&qkv, i * c, 3 * c, c, rows);
        let scale = 0.45;
        let attention = WindowAttention {
            heads,
            scale,
            bias: Some(&bias),
            mask: Some(&mask),
        };
        let got = attention.forward(n, part(0), part(1), part(2));
        let want = naive(n, c, heads, scale as f64, &qkv, &bias, &mask, masks);
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f64, |m, (&g, w)| m.max((g as f64 - w).abs()));
        assert!(worst < 1e-6, "worst error {worst:e}");
    }
}
