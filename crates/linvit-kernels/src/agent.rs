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

use crate::activation::softmax_backward_rows;
use crate::focused::HeadSharedDwc;
use crate::matmul::{product, rows, transposed, Operand};
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

/// What [`AgentAttention::forward_keeping`] keeps for the backward, for every image: the agents
/// `[B, m, C]`, and per head the agents' softmax over the keys `[B, heads, m, n_k]`, what they
/// gathered `[B, heads, m, d]` and the queries' softmax over the agents `[B, heads, n_q, m]`
/// (the tensors PyTorch's autograd keeps for the same ops, less its head-split copies).
#[derive(Clone, Debug, Default)]
pub struct AgentSaved {
    agents: Vec<f32>,
    gather: Vec<f32>,
    agent_v: Vec<f32>,
    broadcast: Vec<f32>,
}

/// One image's part of [`AgentSaved`] (or scratch buffers of the same sizes).
struct ImageState<'s> {
    agents: &'s mut [f32],
    gather: &'s mut [f32],
    agent_v: &'s mut [f32],
    broadcast: &'s mut [f32],
}

impl<'s> ImageState<'s> {
    /// From the four buffers in [`AgentSaved`]'s order.
    fn new([agents, gather, agent_v, broadcast]: [&'s mut [f32]; 4]) -> Self {
        ImageState {
            agents,
            gather,
            agent_v,
            broadcast,
        }
    }
}

/// The gradients [`AgentAttention::backward`] computes.
#[derive(Clone, Debug)]
pub struct AgentGrads {
    /// `[B * n_q, C]`, `[B * n_k, C]` and `[B * n_k, C]`.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// `[heads, m, n_k]` and `[heads, n_q, m]`, summed over the images.
    pub agent_bias: Vec<f32>,
    pub query_bias: Vec<f32>,
}

/// The sizes one call works on, checked against each other.
#[derive(Clone, Copy)]
struct Sizes {
    c: usize,
    d: usize,
    n_q: usize,
    n_k: usize,
    grid: usize,
    m: usize,
}

impl Sizes {
    /// Per image: agents, gather, agent_v and broadcast elements.
    fn state(&self, heads: usize) -> [usize; 4] {
        let (m, d) = (self.m, self.d);
        [
            m * self.c,
            heads * m * self.n_k,
            heads * m * d,
            heads * self.n_q * m,
        ]
    }
}

impl AgentAttention<'_> {
    fn sizes(&self, batch: usize, q: &Rows, k: &Rows, v: &Rows) -> Sizes {
        let (c, heads, prefix) = (q.width(), self.heads, self.prefix);
        assert!(heads > 0 && c.is_multiple_of(heads) && batch > 0);
        assert!(k.width() == c && v.width() == c && k.rows() == v.rows());
        assert!(q.rows().is_multiple_of(batch) && k.rows().is_multiple_of(batch));
        let (d, n_q, n_k) = (c / heads, q.rows() / batch, k.rows() / batch);
        assert!(n_q > prefix && n_k > 0);
        let grid = n_q - prefix;
        let m = self.pool.len() / grid;
        assert!(m > 0 && m * grid == self.pool.len());
        Sizes {
            c,
            d,
            n_q,
            n_k,
            grid,
            m,
        }
    }

    /// Queries `[B * n_q, C]`, keys and values `[B * n_k, C]` -> `[B * n_q, C]` (heads merged,
    /// head-major channels), the rows read in place. Each image on its own thread.
    ///
    /// # Panics
    /// On row counts, widths and bias sizes that disagree with `batch` and each other (a caller
    /// bug, not a user input).
    pub fn forward(&self, batch: usize, q: Rows, k: Rows, v: Rows) -> Vec<f32> {
        let n = self.sizes(batch, &q, &k, &v);
        let taps = self.dwc.map(|dwc| dwc.spread(n.c));
        if let Some(dwc) = &self.dwc {
            assert!(dwc.grid[0] * dwc.grid[1] == n.grid && n.n_k == n.n_q);
        }
        let mut out = crate::zeros(q.rows() * n.c);
        out.par_chunks_mut(n.n_q * n.c)
            .enumerate()
            .for_each(|(b, out)| {
                let mut scratch = n.state(self.heads).map(|len| vec![0f32; len]);
                let state = ImageState::new(scratch.each_mut().map(Vec::as_mut_slice));
                self.image(n, b, [&q, &k, &v], out, state);
                if let (Some(dwc), Some(taps)) = (&self.dwc, &taps) {
                    let image = v.from(b * n.n_k + self.prefix, 0);
                    let out = &mut out[self.prefix * n.c..];
                    dwc.add_to_tokens(out, image, v.stride(), taps, 0);
                }
            });
        out
    }

    /// [`Self::forward`] without the conv (`dwc` must be `None`: in training it is a node of its
    /// own), keeping what [`Self::backward`] needs.
    ///
    /// # Panics
    /// As [`Self::forward`], and where `dwc` is set.
    pub fn forward_keeping(
        &self,
        batch: usize,
        q: Rows,
        k: Rows,
        v: Rows,
    ) -> (Vec<f32>, AgentSaved) {
        assert!(
            self.dwc.is_none(),
            "agent training: the conv is a node of its own"
        );
        let n = self.sizes(batch, &q, &k, &v);
        let lens = n.state(self.heads);
        let [mut agents, mut gather, mut agent_v, mut broadcast] =
            lens.map(|len| crate::zeros(batch * len));
        let mut out = crate::zeros(q.rows() * n.c);
        out.par_chunks_mut(n.n_q * n.c)
            .zip(agents.par_chunks_mut(lens[0]))
            .zip(gather.par_chunks_mut(lens[1]))
            .zip(agent_v.par_chunks_mut(lens[2]))
            .zip(broadcast.par_chunks_mut(lens[3]))
            .enumerate()
            .for_each(|(b, ((((out, agents), gather), agent_v), broadcast))| {
                let state = ImageState::new([agents, gather, agent_v, broadcast]);
                self.image(n, b, [&q, &k, &v], out, state);
            });
        let saved = AgentSaved {
            agents,
            gather,
            agent_v,
            broadcast,
        };
        (out, saved)
    }

    /// Image `b`'s attention into `out` (`[n_q, C]`), its agents, softmaxes and gathered values
    /// into `state`.
    fn image(&self, n: Sizes, b: usize, [q, k, v]: [&Rows; 3], out: &mut [f32], s: ImageState) {
        let (c, d, m, n_q, n_k) = (n.c, n.d, n.m, n.n_q, n.n_k);
        assert!(self.agent_bias.len() == self.heads * m * n_k);
        assert!(self.query_bias.len() == self.heads * n_q * m);
        let (first_q, first_k) = (b * n_q, b * n_k);
        let pool = Operand(self.pool, [n.grid, 1]);
        let grid_q = q.operand(first_q + self.prefix, 0);
        product(s.agents, [c, 1], pool, grid_q, [m, c, n.grid], false, 1.0);
        for h in 0..self.heads {
            let gather = &mut s.gather[h * m * n_k..][..m * n_k];
            let agent_v = &mut s.agent_v[h * m * d..][..m * d];
            let broadcast = &mut s.broadcast[h * n_q * m..][..n_q * m];
            // The agents' softmax over the keys, then what they gather from the values.
            gather.copy_from_slice(&self.agent_bias[h * m * n_k..][..m * n_k]);
            let agents_h = Operand(&s.agents[h * d..], [c, 1]);
            let keys_t = k.operand_transposed(first_k, h * d);
            product(
                gather,
                [n_k, 1],
                agents_h,
                keys_t,
                [m, n_k, d],
                true,
                self.scale,
            );
            softmax_rows(gather, n_k);
            let values = v.operand(first_k, h * d);
            let weights = Operand(gather, [n_k, 1]);
            product(agent_v, [d, 1], weights, values, [m, d, n_k], false, 1.0);
            // The queries' softmax over the agents, then what they read from them.
            broadcast.copy_from_slice(&self.query_bias[h * n_q * m..][..n_q * m]);
            let queries = q.operand(first_q, h * d);
            let agents_t = Operand(&s.agents[h * d..], [1, c]);
            product(
                broadcast,
                [m, 1],
                queries,
                agents_t,
                [n_q, m, d],
                true,
                self.scale,
            );
            softmax_rows(broadcast, m);
            let weights = Operand(broadcast, [m, 1]);
            let read = Operand(agent_v, [d, 1]);
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
    }

    /// The gradients of `sum(forward_keeping(..) * grad)` for the queries, keys, values and both
    /// biases, from the inputs and `saved` (the biases' values are not read). Each image on its
    /// own thread; the biases' gradients are summed over the images in order (the same bits on
    /// any number of threads).
    ///
    /// # Panics
    /// On sizes that disagree with the forward's (a caller bug).
    pub fn backward(
        &self,
        batch: usize,
        [q, k, v]: [Rows; 3],
        saved: &AgentSaved,
        grad: &[f32],
    ) -> AgentGrads {
        let n = self.sizes(batch, &q, &k, &v);
        let (c, n_q, n_k) = (n.c, n.n_q, n.n_k);
        let lens = n.state(self.heads);
        assert!(grad.len() == q.rows() * c && saved.agents.len() == batch * lens[0]);
        let bias_lens = [lens[1], lens[3]];
        let mut dq = crate::zeros(q.rows() * c);
        let mut dk = crate::zeros(k.rows() * c);
        let mut dv = crate::zeros(k.rows() * c);
        let mut d_agent_bias = vec![0f32; batch * bias_lens[0]];
        let mut d_query_bias = vec![0f32; batch * bias_lens[1]];
        dq.par_chunks_mut(n_q * c)
            .zip(dk.par_chunks_mut(n_k * c))
            .zip(dv.par_chunks_mut(n_k * c))
            .zip(d_agent_bias.par_chunks_mut(bias_lens[0]))
            .zip(d_query_bias.par_chunks_mut(bias_lens[1]))
            .enumerate()
            .for_each(|(b, ((((dq, dk), dv), d_ab), d_qb))| {
                let grads = ImageGrads {
                    q: dq,
                    k: dk,
                    v: dv,
                    agent_bias: d_ab,
                    query_bias: d_qb,
                };
                self.image_backward(n, b, [&q, &k, &v], saved, grad, grads);
            });
        let sum = |partials: &[f32], len: usize| crate::sum_in_order(partials.chunks(len), len);
        AgentGrads {
            q: dq,
            k: dk,
            v: dv,
            agent_bias: sum(&d_agent_bias, bias_lens[0]),
            query_bias: sum(&d_query_bias, bias_lens[1]),
        }
    }

    /// Image `b`'s gradients, head by head, in the reverse order of [`Self::image`].
    fn image_backward(
        &self,
        n: Sizes,
        b: usize,
        [q, k, v]: [&Rows; 3],
        saved: &AgentSaved,
        grad: &[f32],
        g: ImageGrads,
    ) {
        let (c, d, m, n_q, n_k, s) = (n.c, n.d, n.m, n.n_q, n.n_k, self.scale);
        let lens = n.state(self.heads);
        let (first_q, first_k) = (b * n_q, b * n_k);
        let agents = &saved.agents[b * lens[0]..][..lens[0]];
        let gather = &saved.gather[b * lens[1]..][..lens[1]];
        let agent_v = &saved.agent_v[b * lens[2]..][..lens[2]];
        let broadcast = &saved.broadcast[b * lens[3]..][..lens[3]];
        let grad = &grad[first_q * c..][..n_q * c];
        let mut d_agents = vec![0f32; m * c];
        let mut d_agent_v = vec![0f32; m * d];
        // `x_t` is x transposed (a stride swap), `d_x` the gradient of x.
        for h in 0..self.heads {
            let hd = h * d;
            let gather = &gather[h * m * n_k..][..m * n_k];
            let broadcast = &broadcast[h * n_q * m..][..n_q * m];
            let (d_out, agents_h) = (rows(&grad[hd..], c), rows(&agents[hd..], c));
            let agent_v_t = transposed(&agent_v[h * m * d..][..m * d], d);
            // out = broadcast agent_v: the queries' weights, then the gathered values.
            let d_bc = &mut g.query_bias[h * n_q * m..][..n_q * m];
            product(d_bc, [m, 1], d_out, agent_v_t, [n_q, m, d], false, 1.0);
            let bc_t = transposed(broadcast, m);
            product(&mut d_agent_v, [d, 1], bc_t, d_out, [m, d, n_q], false, 1.0);
            // Through the queries' softmax (its input's gradient is the bias's) to the queries
            // and the agents.
            softmax_backward_rows(d_bc, broadcast, m);
            let (d_bc, d_bc_t) = (rows(d_bc, m), transposed(d_bc, m));
            let dq = &mut g.q[hd..];
            product(dq, [c, 1], d_bc, agents_h, [n_q, d, m], false, s);
            let queries = q.operand(first_q, hd);
            let da = &mut d_agents[hd..];
            product(da, [c, 1], d_bc_t, queries, [m, d, n_q], false, s);
            // agent_v = gather v: the agents' weights, then the values.
            let d_ga = &mut g.agent_bias[h * m * n_k..][..m * n_k];
            let (d_av, values_t) = (rows(&d_agent_v, d), v.operand_transposed(first_k, hd));
            product(d_ga, [n_k, 1], d_av, values_t, [m, n_k, d], false, 1.0);
            let gather_t = transposed(gather, n_k);
            let dv = &mut g.v[hd..];
            product(dv, [c, 1], gather_t, d_av, [n_k, d, m], false, 1.0);
            // Through the agents' softmax to the agents and the keys.
            softmax_backward_rows(d_ga, gather, n_k);
            let (d_ga, d_ga_t, keys) = (
                rows(d_ga, n_k),
                transposed(d_ga, n_k),
                k.operand(first_k, hd),
            );
            let da = &mut d_agents[hd..];
            product(da, [c, 1], d_ga, keys, [m, d, n_k], true, s);
            let dk = &mut g.k[hd..];
            product(dk, [c, 1], d_ga_t, agents_h, [n_k, d, m], false, s);
        }
        // The agents are pooled grid queries: their gradient goes back through the pool.
        let (pool_t, d_agents) = (transposed(self.pool, n.grid), rows(&d_agents, c));
        let d_grid = &mut g.q[self.prefix * c..];
        product(d_grid, [c, 1], pool_t, d_agents, [n.grid, c, m], true, 1.0);
    }
}

/// One image's part of [`AgentGrads`], the biases' before the sum over images.
struct ImageGrads<'g> {
    q: &'g mut [f32],
    k: &'g mut [f32],
    v: &'g mut [f32],
    agent_bias: &'g mut [f32],
    query_bias: &'g mut [f32],
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
