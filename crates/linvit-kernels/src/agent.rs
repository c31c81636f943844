//! Agent attention for inference (Han et al., ECCV 2024; `linvit_attention::agent` is the op
//! path and says which upstream code it follows): `m` agent tokens pooled from the grid queries
//! gather from all keys, then every query reads from the agents, both with softmax and a
//! position bias, plus a depthwise conv on the values.
//!
//! Why fused: op by op on flex, one block splits heads apart (copies of `q, k, v` and the
//! agents), writes both score tensors, adds the biases as broadcast passes, runs a softmax of
//! several passes with libm's scalar `exp`, merges heads, and adds the conv's output in one more
//! pass; on Agent-DeiT-T those layout copies and passes took as long as the products. Here each
//! image is finished while it is in cache: its agents pooled by one product, then per head four
//! small products on gemm reading `q, k, v` in place (from the `qkv` buffer), the biases
//! preloaded into the scores, a vectorised softmax, and the conv added to the output rows.

use rayon::prelude::*;

use crate::focused::HeadSharedDwc;
use crate::matmul::{product, Operand};
use crate::rows::Rows;
use crate::window::softmax_rows;

/// Agent attention on token rows; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct AgentAttention<'a> {
    pub heads: usize,
    /// Multiplies both score products (`head_dim^-0.5`).
    pub scale: f32,
    /// Tokens before the grid in every image's queries and keys (a CLS token): attended like
    /// any token, but not pooled into the agents and not convolved.
    pub prefix: usize,
    /// `[m, N]`: each agent as a weighted sum of the `N` grid queries (adaptive average
    /// pooling written as a matrix).
    pub pool: &'a [f32],
    /// `[heads, m, n_k]`: added to the agents' scores over the keys.
    pub agent_bias: &'a [f32],
    /// `[heads, n_q, m]`: added to the queries' scores over the agents.
    pub query_bias: &'a [f32],
    /// The depthwise conv over all channels of the values (a weight of `C` channels), added to
    /// the grid tokens' output; only where the values lie on the query grid.
    pub dwc: Option<HeadSharedDwc<'a>>,
}

impl AgentAttention<'_> {
    /// Queries `[B * n_q, C]`, keys and values `[B * n_k, C]` -> `[B * n_q, C]` (heads merged,
    /// head-major channels), the rows read in place. Each image on its own thread.
    ///
    /// # Panics
    /// On row counts, widths and bias sizes that disagree with `batch` and each other (a caller
    /// bug, not a user input).
    pub fn forward(&self, batch: usize, q: Rows, k: Rows, v: Rows) -> Vec<f32> {
        let (c, heads, prefix) = (q.width(), self.heads, self.prefix);
        assert!(heads > 0 && c.is_multiple_of(heads) && batch > 0);
        assert!(k.width() == c && v.width() == c && k.rows() == v.rows());
        assert!(q.rows().is_multiple_of(batch) && k.rows().is_multiple_of(batch));
        let (d, n_q, n_k) = (c / heads, q.rows() / batch, k.rows() / batch);
        assert!(n_q > prefix && n_k > 0);
        let grid = n_q - prefix;
        let m = self.pool.len() / grid;
        assert!(m > 0 && m * grid == self.pool.len());
        assert!(self.agent_bias.len() == heads * m * n_k);
        assert!(self.query_bias.len() == heads * n_q * m);
        let taps = self.dwc.map(|dwc| dwc.spread(c));
        if let Some(dwc) = &self.dwc {
            assert!(dwc.grid[0] * dwc.grid[1] == grid && n_k == n_q);
        }

        let mut out = vec![0f32; q.rows() * c];
        out.par_chunks_mut(n_q * c)
            .enumerate()
            .for_each(|(b, out)| {
                let (first_q, first_k) = (b * n_q, b * n_k);
                let mut agents = vec![0f32; m * c];
                let pool = Operand(self.pool, [grid, 1]);
                let grid_q = q.operand(first_q + prefix, 0);
                product(&mut agents, [c, 1], pool, grid_q, [m, c, grid], false, 1.0);
                let mut gather = vec![0f32; m * n_k];
                let mut agent_v = vec![0f32; m * d];
                let mut broadcast = vec![0f32; n_q * m];
                for h in 0..heads {
                    // The agents' softmax over the keys, then what they gather from the values.
                    gather.copy_from_slice(&self.agent_bias[h * m * n_k..][..m * n_k]);
                    let agents_h = Operand(&agents[h * d..], [c, 1]);
                    let keys_t = k.operand_transposed(first_k, h * d);
                    product(
                        &mut gather,
                        [n_k, 1],
                        agents_h,
                        keys_t,
                        [m, n_k, d],
                        true,
                        self.scale,
                    );
                    softmax_rows(&mut gather, n_k);
                    let values = v.operand(first_k, h * d);
                    let weights = Operand(&gather, [n_k, 1]);
                    product(
                        &mut agent_v,
                        [d, 1],
                        weights,
                        values,
                        [m, d, n_k],
                        false,
                        1.0,
                    );
                    // The queries' softmax over the agents, then what they read from them.
                    broadcast.copy_from_slice(&self.query_bias[h * n_q * m..][..n_q * m]);
                    let queries = q.operand(first_q, h * d);
                    let agents_t = Operand(&agents[h * d..], [1, c]);
                    let mnk = [n_q, m, d];
                    product(
                        &mut broadcast,
                        [m, 1],
                        queries,
                        agents_t,
                        mnk,
                        true,
                        self.scale,
                    );
                    softmax_rows(&mut broadcast, m);
                    let weights = Operand(&broadcast, [m, 1]);
                    let read = Operand(&agent_v, [d, 1]);
                    product(
                        &mut out[h * d..],
                        [c, 1],
                        weights,
                        read,
                        [n_q, d, m],
                        false,
                        1.0,
                    );
                }
                if let (Some(dwc), Some(taps)) = (&self.dwc, &taps) {
                    let image = v.from(first_k + prefix, 0);
                    dwc.add_to_tokens(&mut out[prefix * c..], image, v.stride(), taps, 0);
                }
            });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wave;

    /// Softmax of a row, in f64.
    fn softmax(row: &[f64]) -> Vec<f64> {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|x| x / total).collect()
    }

    /// The attention written out in f64 from the definition, one image and head at a time, the
    /// conv (3x3, same padding, per channel) on the grid tokens.
    fn naive(a: &AgentAttention, batch: usize, q: &[f32], kv: &[f32], c: usize) -> Vec<f64> {
        let (heads, prefix) = (a.heads, a.prefix);
        let d = c / heads;
        let n = q.len() / (batch * c);
        let grid = n - prefix;
        let m = a.pool.len() / grid;
        let qa = |b: usize, t: usize, ch: usize| q[(b * n + t) * c + ch] as f64;
        let ka = |b: usize, t: usize, ch: usize| kv[(b * n + t) * 2 * c + ch] as f64;
        let va = |b: usize, t: usize, ch: usize| kv[(b * n + t) * 2 * c + c + ch] as f64;
        let mut out = vec![0f64; batch * n * c];
        for b in 0..batch {
            let agent = |i: usize, ch: usize| -> f64 {
                (0..grid)
                    .map(|t| a.pool[i * grid + t] as f64 * qa(b, prefix + t, ch))
                    .sum()
            };
            for h in 0..heads {
                let dot = |x: &dyn Fn(usize) -> f64, y: &dyn Fn(usize) -> f64| -> f64 {
                    (0..d).map(|e| x(h * d + e) * y(h * d + e)).sum()
                };
                let agent_v: Vec<Vec<f64>> = (0..m)
                    .map(|i| {
                        let s: Vec<f64> = (0..n)
                            .map(|j| {
                                dot(&|ch| agent(i, ch), &|ch| ka(b, j, ch)) * a.scale as f64
                                    + a.agent_bias[(h * m + i) * n + j] as f64
                            })
                            .collect();
                        let w = softmax(&s);
                        (0..d)
                            .map(|e| (0..n).map(|j| w[j] * va(b, j, h * d + e)).sum())
                            .collect()
                    })
                    .collect();
                for t in 0..n {
                    let s: Vec<f64> = (0..m)
                        .map(|i| {
                            dot(&|ch| qa(b, t, ch), &|ch| agent(i, ch)) * a.scale as f64
                                + a.query_bias[(h * n + t) * m + i] as f64
                        })
                        .collect();
                    let w = softmax(&s);
                    for e in 0..d {
                        out[(b * n + t) * c + h * d + e] =
                            (0..m).map(|i| w[i] * agent_v[i][e]).sum();
                    }
                }
            }
            let Some(dwc) = a.dwc else { continue };
            let ([gh, gw], k) = (dwc.grid, dwc.kernel as isize);
            for t in 0..grid {
                let (y, x) = ((t / gw) as isize, (t % gw) as isize);
                for ch in 0..c {
                    let mut s = dwc.bias.map_or(0.0, |bias| bias[ch] as f64);
                    for dy in 0..k {
                        for dx in 0..k {
                            let (sy, sx) = (y + dy - k / 2, x + dx - k / 2);
                            if (0..gh as isize).contains(&sy) && (0..gw as isize).contains(&sx) {
                                let source = prefix + sy as usize * gw + sx as usize;
                                let tap =
                                    dwc.weight[ch * (k * k) as usize + (dy * k + dx) as usize];
                                s += tap as f64 * va(b, source, ch);
                            }
                        }
                    }
                    out[(b * n + prefix + t) * c + ch] += s;
                }
            }
        }
        out
    }

    /// Two images of a CLS token and a 5x4 grid, 4 agents (each pooling a quarter of the
    /// grid), 3 heads of 4 channels, keys and values read in place from
    /// one `[tokens, 2C]` buffer, with and without the conv.
    #[test]
    fn matches_the_attention_written_out_with_a_prefix_and_the_conv() {
        let (batch, prefix, grid, c, heads, m) = (2, 1, [5, 4], 12, 3, 4);
        let n = prefix + grid[0] * grid[1];
        let q = wave(batch * n * c, 0.37);
        let kv = wave(batch * n * 2 * c, 0.53);
        let pool: Vec<f32> = (0..m * 20)
            .map(|i| {
                let (agent, t) = (i / 20, i % 20);
                let quarter = (t / 4 >= 3) as usize * 2 + (t % 4 >= 2) as usize;
                if quarter == agent {
                    1.0 / 6.0
                } else {
                    0.0
                }
            })
            .collect();
        let (agent_bias, query_bias) = (wave(heads * m * n, 0.91), wave(heads * n * m, 1.7));
        let (weight, bias) = (wave(c * 9, 0.29), wave(c, 0.61));
        let dwc = HeadSharedDwc {
            weight: &weight,
            bias: Some(&bias),
            kernel: 3,
            grid,
        };
        for dwc in [Some(dwc), None] {
            let attention = AgentAttention {
                heads,
                scale: 0.5,
                prefix,
                pool: &pool,
                agent_bias: &agent_bias,
                query_bias: &query_bias,
                dwc,
            };
            let rows = batch * n;
            let (keys, values) = (
                Rows::new(&kv, 0, 2 * c, c, rows),
                Rows::new(&kv, c, 2 * c, c, rows),
            );
            let got = attention.forward(batch, Rows::dense(&q, c), keys, values);
            let want = naive(&attention, batch, &q, &kv, c);
            let worst = got
                .iter()
                .zip(&want)
                .fold(0f64, |w, (&g, x)| w.max((g as f64 - x).abs()));
            assert!(
                worst < 1e-5,
                "conv {}: worst error {worst:e}",
                dwc.is_some()
            );
        }
    }
}
