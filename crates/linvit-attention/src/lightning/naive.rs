//! The quadratic form `O = ((Q K^T) * M) V` with `M[r, c] = lambda^(r-c)` for `c <= r`, else 0:
//! what the Lightning Attention repo's `linear_attn` and TransNormerLLM's training path compute.
//! Quadratic in time and memory; the reference the other forms are tested against.

use burn::tensor::Tensor;

use super::{carry_in, carry_out, zero_state, Decay};

/// Continues from `state` (zeros when `None`) and returns the outputs and the final state.
///
/// # Shapes
/// - q, k: `[B, h, n, d]`, v: `[B, h, n, e]`, state: `[B, h, d, e]`
/// - -> (`[B, h, n, e]`, `[B, h, d, e]`)
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    decay: &Decay,
    state: Option<Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let [_, h, n, _] = q.dims();
    let mask = decay.causal_mask(h, n, &q.device());
    let mut out = (q.clone().matmul(k.clone().swap_dims(2, 3)) * mask).matmul(v.clone());
    if let Some(state) = &state {
        out = out + carry_in(q, decay, state.clone());
    }
    let state = state.unwrap_or_else(|| zero_state(&k, &v));
    (out, carry_out(k, v, decay, state))
}
