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

use crate::activation::{exp, softmax_backward_rows};
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

/// The gradients [`WindowAttention::backward`] computes.
#[derive(Clone, Debug)]
pub struct WindowGrads {
    /// `[windows * tokens, C]` each.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// `[heads, tokens, tokens]`, summed over the windows; where the attention has a bias.
    pub bias: Option<Vec<f32>>,
}

impl WindowAttention<'_> {
    /// Checks the sizes; returns the head dim and the number of masks.
    fn sizes(&self, n: usize, q: &Rows, k: &Rows, v: &Rows) -> (usize, usize) {
        let (c, heads) = (q.width(), self.heads);
        let d = c / heads;
        assert!(n > 0 && d * heads == c && q.rows().is_multiple_of(n));
        for t in [k, v] {
            assert!(t.width() == c && t.rows() == q.rows());
        }
        assert!(self.bias.is_none_or(|b| b.len() == heads * n * n));
        assert!(self
            .mask
            .is_none_or(|m| !m.is_empty() && m.len() % (n * n) == 0));
        (d, self.mask.map_or(1, |m| m.len() / (n * n)))
    }

    /// `q, k, v`: `[windows * tokens, C]` each -> `[windows * tokens, C]`, heads merged
    /// (head-major channels).
    ///
    /// # Panics
    /// On shapes that disagree (a caller bug, not a user input).
    pub fn forward(&self, tokens: usize, q: Rows, k: Rows, v: Rows) -> Vec<f32> {
        let n = tokens;
        self.sizes(n, &q, &k, &v);
        let mut out = crate::zeros(q.rows() * q.width());
        out.par_chunks_mut(n * q.width())
            .enumerate()
            .for_each(|(w, out)| {
                let mut scores = vec![0f32; n * n];
                self.window(n, w, [&q, &k, &v], out, &mut scores);
            });
        out
    }

    /// [`Self::forward`], keeping each window's and head's softmax `[windows, heads, tokens,
    /// tokens]` for [`Self::backward`] (what PyTorch's autograd keeps for the same ops).
    ///
    /// # Panics
    /// As [`Self::forward`].
    pub fn forward_keeping(
        &self,
        tokens: usize,
        q: Rows,
        k: Rows,
        v: Rows,
    ) -> (Vec<f32>, Vec<f32>) {
        let (n, c, heads) = (tokens, q.width(), self.heads);
        self.sizes(n, &q, &k, &v);
        let windows = q.rows() / n;
        let mut out = crate::zeros(q.rows() * c);
        let mut probs = crate::zeros(windows * heads * n * n);
        out.par_chunks_mut(n * c)
            .zip(probs.par_chunks_mut(heads * n * n))
            .enumerate()
            .for_each(|(w, (out, probs))| {
                self.window(n, w, [&q, &k, &v], out, probs);
            });
        (out, probs)
    }

    /// Window `w`'s attention into `out` (`[tokens, C]`), each head's scores and then softmax in
    /// `scores`: one `[tokens, tokens]` buffer all heads reuse, or `[heads, tokens, tokens]` that
    /// keeps each head's.
    fn window(&self, n: usize, w: usize, [q, k, v]: [&Rows; 3], out: &mut [f32], all: &mut [f32]) {
        let (c, heads) = (q.width(), self.heads);
        let (d, masks) = (c / heads, self.mask.map_or(1, |m| m.len() / (n * n)));
        let first = w * n;
        let mask = self.mask.map(|m| &m[(w % masks) * n * n..][..n * n]);
        for h in 0..heads {
            let scores = match all.len() == n * n {
                true => &mut all[..],
                false => &mut all[h * n * n..][..n * n],
            };
            let bias = self.bias.map(|b| &b[h * n * n..][..n * n]);
            let preloaded = preload(scores, bias, mask);
            let keys_t = k.operand_transposed(first, h * d);
            let queries = q.operand(first, h * d);
            product(
                scores,
                [n, 1],
                queries,
                keys_t,
                [n, n, d],
                preloaded,
                self.scale,
            );
            softmax_rows(scores, n);
            let weights = Operand(scores, [n, 1]);
            let values = v.operand(first, h * d);
            product(
                &mut out[h * d..],
                [c, 1],
                weights,
                values,
                [n, d, n],
                false,
                1.0,
            );
        }
    }

    /// The gradients of `sum(forward_keeping(..) * grad)` for `q, k, v` and the bias (where
    /// there is one; the mask is a constant), from the inputs and the kept softmax `probs`. Each
    /// window on its own thread; the bias's gradient is summed over the windows in order (the
    /// same bits on any number of threads).
    ///
    /// # Panics
    /// On sizes that disagree with the forward's (a caller bug).
    pub fn backward(
        &self,
        tokens: usize,
        [q, k, v]: [Rows; 3],
        probs: &[f32],
        grad: &[f32],
    ) -> WindowGrads {
        let (n, c, heads) = (tokens, q.width(), self.heads);
        let (d, _) = self.sizes(n, &q, &k, &v);
        let windows = q.rows() / n;
        assert!(probs.len() == windows * heads * n * n && grad.len() == q.rows() * c);
        let [mut dq, mut dk, mut dv] = [0; 3].map(|_| crate::zeros(q.rows() * c));
        // Each window's scores' gradient, per head: the bias's gradient before the sum.
        let mut d_scores = vec![0f32; windows * heads * n * n];
        dq.par_chunks_mut(n * c)
            .zip(dk.par_chunks_mut(n * c))
            .zip(dv.par_chunks_mut(n * c))
            .zip(d_scores.par_chunks_mut(heads * n * n))
            .enumerate()
            .for_each(|(w, (((dq, dk), dv), d_scores))| {
                let first = w * n;
                for h in 0..heads {
                    let probs = &probs[(w * heads + h) * n * n..][..n * n];
                    let d_out = Operand(&grad[first * c + h * d..], [c, 1]);
                    let d_s = &mut d_scores[h * n * n..][..n * n];
                    // out = probs v.
                    let values_t = v.operand_transposed(first, h * d);
                    product(d_s, [n, 1], d_out, values_t, [n, n, d], false, 1.0);
                    let probs_t = Operand(probs, [1, n]);
                    product(
                        &mut dv[h * d..],
                        [c, 1],
                        probs_t,
                        d_out,
                        [n, d, n],
                        false,
                        1.0,
                    );
                    // Through the softmax to the scores = scale q k^T + bias + mask.
                    softmax_backward_rows(d_s, probs, n);
                    let (keys, queries) = (k.operand(first, h * d), q.operand(first, h * d));
                    let s = self.scale;
                    let d_op = Operand(d_s, [n, 1]);
                    product(&mut dq[h * d..], [c, 1], d_op, keys, [n, d, n], false, s);
                    let d_op_t = Operand(d_s, [1, n]);
                    product(
                        &mut dk[h * d..],
                        [c, 1],
                        d_op_t,
                        queries,
                        [n, d, n],
                        false,
                        s,
                    );
                }
            });
        let len = heads * n * n;
        let bias = self
            .bias
            .map(|_| crate::sum_in_order(d_scores.chunks(len), len));
        WindowGrads {
            q: dq,
            k: dk,
            v: dv,
            bias,
        }
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
