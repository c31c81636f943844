//! Fused CPU kernels behind linvit's inference fast paths, written on plain `f32` slices.
//!
//! Why hand-written kernels: on Burn's CPU backend (flex) every tensor op is its own pass over
//! memory, and most element-wise passes run on one thread. FLatten's forward is about 25 such
//! passes over `[B, N, C]` around two small products, so at 3136 tokens it spent ~30 ms where
//! its arithmetic needs ~2 ms (experiments/bench/README.md). A kernel here does the same
//! mathematics in a handful of cache-friendly passes on all cores.
//!
//! Scope: f32. Most kernels serve inference; `activation` (GELU, softmax), `norm`
//! (`RowNorm::forward_keeping_stats`, `layer_norm_backward`), `depthwise`, `focus`, `linear`
//! (`linear_backward`, either weight layout), `patch::unpatch`, `linear_attention`,
//! `agent` and `window` (`forward_keeping`, `backward`) also have the backward passes that
//! `linvit-attention` wraps as autodiff operations for training on flex, and `optim` is the
//! optimizer's update. Burn's ops stay the reference, and the path every other backend runs;
//! `linvit-attention` picks this crate only for f32 tensors on flex (`Path::Auto`), and its
//! tests hold the two paths together.

pub mod activation;
pub mod agent;
pub mod depthwise;
pub mod focus;
pub mod focused;
pub mod linear;
pub mod linear_attention;
mod matmul;
pub mod mlp;
pub mod norm;
pub mod optim;
pub mod patch;
pub mod rows;
mod simd;
pub mod window;

use rayon::prelude::*;
pub use rows::Rows;
use std::mem::MaybeUninit;

/// Elements per task of the parallel kernels: 16K (64 KiB), so a task's data stays in L2 and
/// there are many tasks to share out.
pub(crate) const CHUNK: usize = 1 << 14;

/// A new buffer of `len` zeros, written by all of rayon's threads where it is large: the
/// kernels' outputs and gradients that they then fill in parts (head by head, image by image).
///
/// Why not `vec![0.0; len]`: its memset runs on the calling thread while the other cores wait,
/// and where freed memory is kept for reuse (the `linvit` binary's allocator setting) `calloc`
/// cannot skip it. In a profile of agent_swin_t's training step, such memsets were a tenth of
/// the time one core sat idle while the other worked.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    if len < 4 * CHUNK {
        return vec![0f32; len];
    }
    // SAFETY: `fill` writes every element of each chunk.
    unsafe { new_buffer(len, CHUNK, |_, chunk| chunk.fill(MaybeUninit::new(0.0))) }
}

/// A new buffer of `len` elements written by `write` on rayon's threads, straight into its
/// spare capacity (zeroing it first would be one more pass over it): `write` gets each chunk of
/// `chunk` elements (the last one may be shorter) with the chunk's index.
///
/// # Safety
/// `write` must write every element of each chunk it gets.
pub(crate) unsafe fn new_buffer(
    len: usize,
    chunk: usize,
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Send + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, chunk)| write(i, chunk));
    // SAFETY: the chunks cover all `len` elements, and the caller's `write` wrote each of them.
    unsafe { out.set_len(len) };
    out
}

/// Whole `width`-wide rows per task of a row-wise kernel: about [`CHUNK`] elements.
pub(crate) fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

/// The element-wise sum of `partials`, each `width` long, added in the order given: per-task
/// partial sums reduced this way give the same bits on any number of threads.
pub(crate) fn sum_in_order<'a>(
    partials: impl IntoIterator<Item = &'a [f32]>,
    width: usize,
) -> Vec<f32> {
    let mut sums = vec![0f32; width];
    for p in partials {
        sums.iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    sums
}

/// Which instruction set the kernels run ([`isa::selected`]), and the `LINVIT_ISA` switch.
pub mod isa {
    pub use crate::simd::{detected, requested, selected, Isa};
}

/// Inputs for the unit tests.
#[cfg(test)]
mod testing {
    /// `sin(i * step)` for `i < len`: smooth, signed, no two neighbours equal.
    pub fn wave(len: usize, step: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * step).sin()).collect()
    }

    /// Each `gamma.len()`-wide row of `x` through LayerNorm, in f64: the reference for kernels
    /// that fuse a block's pre-norm.
    pub fn layer_norm_rows(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
        let width = gamma.len();
        x.chunks(width)
            .flat_map(|row| {
                let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                let mean = row.iter().sum::<f64>() / width as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                let inv = 1.0 / (var + eps).sqrt();
                (0..width).map(move |i| (row[i] - mean) * inv * gamma[i] as f64 + beta[i] as f64)
            })
            .collect()
    }
}
