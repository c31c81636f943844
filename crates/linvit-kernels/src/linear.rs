//! A linear layer `x w + bias` (Burn's `Linear`: `w` `[in, out]`), for inference.
//!
//! Why not flex's: it zeroes a new output, runs the product, then adds the bias in another pass
//! over the output. Here each block of rows starts as the bias and gemm accumulates into it
//! while it is in cache: one write of the output instead of three.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::matmul::{product, Operand};

/// Rows per task: at least 4 tasks per thread where there are enough rows, each between 64
/// and 512 rows. Longer blocks repack the weights less often (gemm packs its operands per
/// call: 6.8% of a PVT-T forward at 128 rows, 3.8% at 512), and a `[512, 512]` block of
/// PVT-T's MLP (1 MiB) still sits in this Xeon's 2 MiB of L2 per core.
fn block_rows(rows: usize) -> usize {
    (rows / (4 * rayon::current_num_threads())).clamp(64, 512)
}

/// `x` `[rows, in]` times `weight` `[in, out]` plus `bias` `[out]` -> `[rows, out]`.
///
/// # Panics
/// On sizes that disagree (a caller bug).
pub fn linear(x: &[f32], width: usize, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert!(width > 0 && weight.len().is_multiple_of(width));
    let out_width = weight.len() / width;
    linear_with(x, width, Operand(weight, [out_width, 1]), out_width, bias)
}

/// [`linear`] with the weight stored `[out, in]` (PyTorch's `Linear`, a conv's flattened
/// `[out, C * kh * kw]`), read transposed in place.
///
/// # Panics
/// On sizes that disagree (a caller bug).
pub fn linear_transposed(
    x: &[f32],
    width: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(width > 0 && weight.len().is_multiple_of(width));
    let out_width = weight.len() / width;
    linear_with(x, width, Operand(weight, [1, width]), out_width, bias)
}

fn linear_with(
    x: &[f32],
    width: usize,
    weight: Operand,
    out_width: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(x.len().is_multiple_of(width));
    new_rows(x.len() / width, out_width, bias, |first, out| {
        let rows = out.len() / out_width;
        let x = &x[first * width..][..rows * width];
        product(
            out,
            [out_width, 1],
            Operand(x, [width, 1]),
            Operand(weight.0, weight.1),
            [rows, out_width, width],
            true,
            1.0,
        );
    })
}

/// A new `[rows, width]` buffer, each row first `bias` (zeros without one), handed to `work` in
/// blocks of rows (first row, block) on rayon's threads.
pub(crate) fn new_rows(
    rows: usize,
    width: usize,
    bias: Option<&[f32]>,
    work: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    assert!(bias.is_none_or(|b| b.len() == width));
    let block = block_rows(rows);
    let mut out = Vec::with_capacity(rows * width);
    out.spare_capacity_mut()
        .par_chunks_mut(block * width)
        .enumerate()
        .for_each(|(i, chunk)| work(i * block, fill(chunk, bias, width)));
    // SAFETY: the chunks cover all `rows * width` elements of the spare capacity, and `fill`
    // wrote every one of them.
    unsafe { out.set_len(rows * width) };
    out
}

/// Writes `bias` (or zeros) into every `width`-wide row of `chunk` and returns it initialised.
/// Written into the spare capacity: zeroing the new buffer first would be a second pass over it.
fn fill<'a>(
    chunk: &'a mut [MaybeUninit<f32>],
    bias: Option<&[f32]>,
    width: usize,
) -> &'a mut [f32] {
    for row in chunk.chunks_exact_mut(width) {
        match bias {
            Some(bias) => row.iter_mut().zip(bias).for_each(|(o, &b)| {
                o.write(b);
            }),
            None => row.iter_mut().for_each(|o| {
                o.write(0.0);
            }),
        }
    }
    let len = chunk.len();
    // SAFETY: every element was written above (`chunk.len()` is a multiple of `width`, as
    // `new_rows` cuts whole rows), and `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast::<f32>(), len) }
}

/// `dst += x w` for `x` `[m, k]`, `w` `[k, n]`, on gemm, one thread.
pub(crate) fn accumulate_product(dst: &mut [f32], x: &[f32], w: &[f32], [m, k, n]: [usize; 3]) {
    assert!(dst.len() == m * n && x.len() == m * k && w.len() == k * n);
    product(
        dst,
        [n, 1],
        Operand(x, [k, 1]),
        Operand(w, [n, 1]),
        [m, n, k],
        true,
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_product_written_out_with_and_without_bias_and_transposed() {
        // 300 rows: four blocks of 64 and a partial one (on 1 or 2 threads).
        let (rows, width, out) = (300, 9, 5);
        let wave = |n: usize, s: f32| (0..n).map(|i| (i as f32 * s).sin()).collect::<Vec<_>>();
        let (x, w, b) = (
            wave(rows * width, 0.37),
            wave(width * out, 0.71),
            wave(out, 1.3),
        );
        let w_t: Vec<f32> = (0..out * width)
            .map(|i| w[(i % width) * out + i / width])
            .collect();
        let runs = [Some(&b[..]), None].into_iter().flat_map(|bias| {
            [
                (bias, linear(&x, width, &w, bias)),
                (bias, linear_transposed(&x, width, &w_t, bias)),
            ]
        });
        for (bias, got) in runs {
            for r in 0..rows {
                for o in 0..out {
                    let want: f64 = (0..width)
                        .map(|i| x[r * width + i] as f64 * w[i * out + o] as f64)
                        .sum::<f64>()
                        + bias.map_or(0.0, |b| b[o] as f64);
                    let g = got[r * out + o] as f64;
                    assert!((g - want).abs() < 1e-6, "row {r} out {o}: {g} vs {want}");
                }
            }
        }
    }
}
