//! Causal linear attention with a fixed per-head decay, the operator inside TransNormerLLM's
//! token mixer and the subject of Lightning Attention-2:
//!
//! `o_t = sum_{s <= t} lambda_h^(t-s) (q_t . k_s) v_s`, `lambda_h = exp(-slope_h)`,
//!
//! with no scale, no softmax and no normaliser (`shared/SPEC.md` §4–5). Three computations of the
//! same thing, as fla lays out its ops:
//! - [`naive`]: the quadratic masked product `((Q K^T) * M) V`, the reference;
//! - [`blocked`]: Lightning Attention-2, masked products inside blocks plus a carried `d x e`
//!   state across them, linear in the length;
//! - [`recurrent`]: one token at a time with a constant-size state, for generation.
//!
//! The state convention is upstream's inclusive one: `S_t = lambda S_(t-1) + k_t^T v_t`,
//! `o_t = q_t S_t`. Decay is never folded into q and k as `lambda^t` / `lambda^-s`, which would
//! overflow float32 on long sequences; every factor used here is `lambda^j` with `j >= 0`.

pub mod blocked;
pub mod naive;
pub mod recurrent;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Per-head decay rates: `lambda_h = exp(-slopes[h])`; `None` is no decay (`lambda = 1`).
/// Fixed, not learned: no gradient reaches them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decay {
    pub slopes: Option<Vec<f32>>,
}

impl Decay {
    /// No decay: plain causal linear attention.
    pub fn none() -> Self {
        Self { slopes: None }
    }

    /// Decay `exp(-slope_h)` per head.
    pub fn slopes(slopes: Vec<f32>) -> Self {
        Self {
            slopes: Some(slopes),
        }
    }

    /// TransNormerLLM's rates for layer `layer` of `layers`: ALiBi slopes scaled by
    /// `1 - layer / (layers - 1) + 1e-5`, the expression of `TransnormerModel.forward` (not the
    /// paper's formula). A one-layer model gets factor `1 + 1e-5` where upstream divides by zero.
    pub fn transnormer(heads: usize, layer: usize, layers: usize) -> Self {
        let factor = if layers > 1 {
            (1.0 - layer as f64 / (layers - 1) as f64 + 1e-5) as f32
        } else {
            1.0 + 1e-5
        };
        Self::slopes(alibi_slopes(heads).iter().map(|s| s * factor).collect())
    }

    /// `lambda_h^power`, computed as `exp(-(slope * power))` with the product rounded to f32
    /// first, as upstream builds its mask.
    pub fn power(&self, head: usize, power: f32) -> f32 {
        match &self.slopes {
            None => 1.0,
            Some(s) => (-(s[head] * power)).exp(),
        }
    }

    /// `[1, h, rows, 1]` with entry `lambda_h^(f(r))` for row `r`.
    pub(crate) fn row_factors(
        &self,
        heads: usize,
        rows: usize,
        power: impl Fn(usize) -> f32,
        device: &Device,
    ) -> Tensor<4> {
        let data: Vec<f32> = (0..heads)
            .flat_map(|h| (0..rows).map(move |r| (h, r)))
            .map(|(h, r)| self.power(h, power(r)))
            .collect();
        Tensor::from_data(TensorData::new(data, [1, heads, rows, 1]), device)
    }

    /// `[1, h, 1, 1]` with entry `lambda_h^power`.
    pub(crate) fn head_factors(&self, heads: usize, power: f32, device: &Device) -> Tensor<4> {
        let data: Vec<f32> = (0..heads).map(|h| self.power(h, power)).collect();
        Tensor::from_data(TensorData::new(data, [1, heads, 1, 1]), device)
    }

    /// The causal decay mask `[1, h, n, n]`: `lambda_h^(r-c)` on and below the diagonal, 0 above.
    pub(crate) fn causal_mask(&self, heads: usize, n: usize, device: &Device) -> Tensor<4> {
        let mut data = vec![0.0f32; heads * n * n];
        for h in 0..heads {
            // One row of powers serves every row of the mask: entry (r, c) is lambda^(r-c).
            let by_distance: Vec<f32> = (0..n).map(|dist| self.power(h, dist as f32)).collect();
            for r in 0..n {
                let start = (h * n + r) * n;
                for (c, x) in data[start..start + r + 1].iter_mut().enumerate() {
                    *x = by_distance[r - c];
                }
            }
        }
        Tensor::from_data(TensorData::new(data, [1, heads, n, n]), device)
    }
}

/// ALiBi slopes as TransNormerLLM's `_build_slope_tensor` (and Lightning Attention's) computes
/// them: `2^(-8(h+1)/H)` for a power-of-two `H`; otherwise the slopes of the next lower power of
/// two `c`, then every other slope of `2c` (H=3: 0.0625, 0.00390625, 0.25).
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    fn power_of_two(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    }
    fn slopes(n: usize) -> Vec<f64> {
        if n.is_power_of_two() {
            return power_of_two(n);
        }
        let lower = 1 << (usize::BITS - 1 - n.leading_zeros());
        let mut out = power_of_two(lower);
        out.extend(slopes(2 * lower).into_iter().step_by(2).take(n - lower));
        out
    }
    if heads == 0 {
        return Vec::new();
    }
    slopes(heads).into_iter().map(|s| s as f32).collect()
}

/// Which computation of causal linear attention to run. Saved in configs, never switched
/// silently: all three give the same numbers, at different costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case", deny_unknown_fields)]
pub enum CausalForm {
    /// `((Q K^T) * M) V`: quadratic time and memory; the reference.
    Quadratic,
    /// Lightning Attention-2 with blocks of `block_size` tokens: linear time, memory linear in
    /// the length (one `block x block` score tile per block).
    Blocked { block_size: usize },
    /// Token by token with a carried state: linear time, constant memory besides the output.
    Recurrent,
}

impl Default for CausalForm {
    fn default() -> Self {
        CausalForm::Blocked { block_size: 64 }
    }
}

/// Causal linear attention with decay in the chosen form, continuing from `state` (the
/// inclusive state after the tokens before these; zeros when `None`). Returns the outputs and
/// the state after the last token.
///
/// # Shapes
/// - q, k: `[B, h, n, d]`, v: `[B, h, n, e]`, state: `[B, h, d, e]`
/// - -> (`[B, h, n, e]`, `[B, h, d, e]`)
pub fn causal_linear_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    decay: &Decay,
    form: CausalForm,
    state: Option<Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    match form {
        CausalForm::Quadratic => naive::attention(q, k, v, decay, state),
        CausalForm::Blocked { block_size } => blocked::attention(q, k, v, decay, block_size, state),
        CausalForm::Recurrent => recurrent::attention(q, k, v, decay, state),
    }
}

/// What an incoming state adds to the outputs of the next `n` tokens: `lambda^(r+1) q_r S`.
///
/// # Shapes
/// - q: `[B, h, n, d]`, state: `[B, h, d, e]` -> `[B, h, n, e]`
pub(crate) fn carry_in(q: Tensor<4>, decay: &Decay, state: Tensor<4>) -> Tensor<4> {
    let [_, h, n, _] = q.dims();
    let from_start = decay.row_factors(h, n, |r| (r + 1) as f32, &q.device());
    (q * from_start).matmul(state)
}

/// The state after `n` more tokens: `lambda^n S + sum_r lambda^(n-1-r) k_r^T v_r`.
///
/// # Shapes
/// - k: `[B, h, n, d]`, v: `[B, h, n, e]`, state: `[B, h, d, e]` -> `[B, h, d, e]`
pub(crate) fn carry_out(k: Tensor<4>, v: Tensor<4>, decay: &Decay, state: Tensor<4>) -> Tensor<4> {
    let [_, h, n, _] = k.dims();
    let device = k.device();
    let to_end = decay.row_factors(h, n, |r| (n - 1 - r) as f32, &device);
    state * decay.head_factors(h, n as f32, &device) + (k * to_end).swap_dims(2, 3).matmul(v)
}

/// A zero state `[B, h, d, e]` for keys `[B, h, n, d]` and values `[B, h, n, e]`.
pub(crate) fn zero_state(k: &Tensor<4>, v: &Tensor<4>) -> Tensor<4> {
    let [b, h, _, d] = k.dims();
    Tensor::zeros([b, h, d, v.dims()[3]], &k.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_match_upstream_for_powers_of_two_and_others() {
        assert_eq!(alibi_slopes(4), vec![0.25, 0.0625, 0.015625, 0.00390625]);
        assert_eq!(alibi_slopes(3), vec![0.0625, 0.00390625, 0.25]);
        let eight = alibi_slopes(8);
        assert_eq!((eight[0], eight[7]), (0.5, 0.00390625));
        // H=6: slopes of 4, then every other of 8 (0.5, 0.125, ...) cut to 2.
        assert_eq!(
            alibi_slopes(6),
            vec![0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]
        );
    }

    #[test]
    fn layer_factor_follows_the_released_code() {
        let first = Decay::transnormer(4, 0, 4).slopes.unwrap();
        let last = Decay::transnormer(4, 3, 4).slopes.unwrap();
        assert!((first[0] - 0.250_002_5).abs() < 1e-7, "{first:?}");
        assert!((last[0] - 2.5e-6).abs() < 1e-10, "{last:?}");
    }
}
