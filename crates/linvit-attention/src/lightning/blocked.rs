//! Lightning Attention-2: the causal decayed linear attention computed in blocks of `B` tokens.
//! Inside a block, the masked product `((Q_i K_i^T) * D) V_i` with `D[r, c] = lambda^(r-c)`;
//! across blocks, the inclusive state `S` entering block `i` adds `lambda^(r+1) q_r S` to row
//! `r`, and `S <- lambda^B S + sum_r lambda^(B-1-r) k_r^T v_r`. Time and memory are linear in
//! the length: one `B x B` score tile per block and one `d x e` state per block boundary.
//!
//! All blocks are computed at once (the length is zero-padded to a multiple of `B`; padded keys
//! and values are zero, so they add nothing); only the scan that carries the state from block
//! to block is sequential, one `[B, h, d, e]` update per block.

use burn::tensor::Tensor;

use super::{carry_out, Decay};

/// Runs the blocked form from `state` (zeros when `None`) and returns the outputs and the
/// inclusive state after the last token (what a recurrent decoder continues from). Any length
/// works, including one that is not a multiple of the block.
///
/// # Shapes
/// - q, k: `[B, h, n, d]`, v: `[B, h, n, e]`, state: `[B, h, d, e]`
/// - -> (`[B, h, n, e]`, `[B, h, d, e]`)
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    decay: &Decay,
    block_size: usize,
    state: Option<Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, n, d] = q.dims();
    let e = v.dims()[3];
    let device = q.device();
    let state = state.unwrap_or_else(|| Tensor::zeros([b, h, d, e], &device));
    if n == 0 {
        return (Tensor::zeros([b, h, 0, e], &device), state);
    }
    let bs = block_size.clamp(1, n);
    let blocks = n.div_ceil(bs);
    let padded = blocks * bs;
    let pad = |t: Tensor<4>| {
        let [b, h, _, c] = t.dims();
        if padded == n {
            t
        } else {
            Tensor::cat(vec![t, Tensor::zeros([b, h, padded - n, c], &device)], 2)
        }
    };
    let [qb, kb, vb] = [q, k.clone(), v.clone()].map(|t| {
        let c = t.dims()[3];
        pad(t).reshape([b, h, blocks, bs, c])
    });

    let mask = decay.causal_mask(h, bs, &device).unsqueeze_dim::<5>(2); // [1, h, 1, bs, bs]
    let intra = (qb.clone().matmul(kb.clone().swap_dims(3, 4)) * mask).matmul(vb.clone());

    let to_end = decay
        .row_factors(h, bs, |r| (bs - 1 - r) as f32, &device)
        .unsqueeze_dim::<5>(2); // [1, h, 1, bs, 1]
    let contributions = (kb * to_end).swap_dims(3, 4).matmul(vb); // [b, h, blocks, d, e]
    let block_decay = decay.head_factors(h, bs as f32, &device);
    let mut carried = state;
    let mut entering = Vec::with_capacity(blocks);
    for i in 0..blocks {
        entering.push(carried.clone().unsqueeze_dim::<5>(2));
        if i + 1 < blocks {
            let added = contributions.clone().narrow(2, i, 1).squeeze_dim::<4>(2);
            carried = carried * block_decay.clone() + added;
        }
    }
    let entering = Tensor::cat(entering, 2); // [b, h, blocks, d, e]
    let from_start = decay
        .row_factors(h, bs, |r| (r + 1) as f32, &device)
        .unsqueeze_dim::<5>(2);
    let inter = (qb * from_start).matmul(entering);
    let out = (intra + inter).reshape([b, h, padded, e]).narrow(2, 0, n);

    // The last block may be ragged: its state update uses its own row count.
    let m = n - (blocks - 1) * bs;
    let last = carry_out(k.narrow(2, n - m, m), v.narrow(2, n - m, m), decay, carried);
    (out, last)
}
