//! The recurrent form: a `d x e` state per head, `S_t = lambda S_(t-1) + k_t^T v_t` (decay
//! before adding the current token, upstream's inclusive convention), `o_t = q_t S_t`.
//! Constant memory in the length: what generation runs one token at a time.

use burn::tensor::Tensor;

use super::{zero_state, Decay};

/// Runs the recurrence over all `n` tokens from `state` (zeros when `None`) and returns the
/// outputs and the state after the last token.
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
    let [b, h, n, _] = q.dims();
    let e = v.dims()[3];
    let device = q.device();
    let lambda = decay.head_factors(h, 1.0, &device);
    let mut state = state.unwrap_or_else(|| zero_state(&k, &v));
    let mut outputs = Vec::with_capacity(n);
    for t in 0..n {
        let (q_t, k_t, v_t) = (
            q.clone().narrow(2, t, 1),
            k.clone().narrow(2, t, 1),
            v.clone().narrow(2, t, 1),
        );
        state = step(state, k_t, v_t, lambda.clone());
        outputs.push(q_t.matmul(state.clone()));
    }
    let out = if outputs.is_empty() {
        Tensor::zeros([b, h, 0, e], &device)
    } else {
        Tensor::cat(outputs, 2)
    };
    (out, state)
}

/// One update `S <- lambda S + k^T v` for a token `k [B, h, 1, d]`, `v [B, h, 1, e]`, with
/// `lambda` `[1, h, 1, 1]`.
pub fn step(state: Tensor<4>, k: Tensor<4>, v: Tensor<4>, lambda: Tensor<4>) -> Tensor<4> {
    state * lambda + k.swap_dims(2, 3).matmul(v)
}
