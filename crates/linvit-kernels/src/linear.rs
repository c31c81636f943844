//! A linear layer `x w + bias` (Burn's `Linear`: `w` `[in, out]`), forward and backward.
//!
//! Why not flex's: it zeroes a new output, runs the product, then adds the bias in another pass
//! over the output. Here each block of rows starts as the bias and gemm accumulates into it
//! while it is in cache: one write of the output instead of three.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::matmul::{new_product_all_threads, product_on, Operand, Parallelism};
use crate::norm::RowNorm;
use crate::simd::multiversion;

/// How [`new_rows`] splits `rows`: `(rows per block, gemm's parallelism within a block)`.
///
/// Each block repacks the weights (gemm packs its operands per call), so blocks are long: 256
/// to 512 rows, about 4 per thread, their count a multiple of the threads so none waits. A
/// `[512, 512]` block of PVT-T's MLP (1 MiB) still sits in this Xeon's 2 MiB of L2 per core.
/// Measured on a PVT-T forward: packing took 6.8% of it at 128 rows per block, 3.8% at 512.
/// With too few rows for 2 such blocks per thread (Swin-T's last stage at batch 8 has 392),
/// all rows are one block and gemm splits it over the threads, packing the weights once.
fn blocks(rows: usize) -> (usize, Parallelism) {
    const SHORTEST: usize = 256;
    let threads = rayon::current_num_threads().max(1);
    if rows < 2 * threads * SHORTEST {
        return (rows.max(1), Parallelism::Rayon(threads));
    }
    let target = (rows / (4 * threads)).clamp(SHORTEST, 512);
    let count = rows.div_ceil(target).div_ceil(threads) * threads;
    (rows.div_ceil(count), Parallelism::None)
}

/// `x` `[rows, in]` times `weight` `[in, out]` plus `bias` `[out]` -> `[rows, out]`.
///
/// # Panics
/// On sizes that disagree (a caller bug).
pub fn linear(x: &[f32], width: usize, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    linear_in_block(BlockInput::dense(x, width), weight, bias, None)
}

/// The gradients [`linear_backward`] computes: the input's and the weight's only where asked
/// (`None` otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearGrads {
    /// `[rows, in]`.
    pub input: Option<Vec<f32>>,
    /// `[in, out]`.
    pub weight: Option<Vec<f32>>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// How a linear layer's weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[in, out]`: Burn's `Linear` ([`linear`]).
    InOut,
    /// `[out, in]`: PyTorch's `Linear`, a conv's flattened weight ([`linear_transposed`]).
    OutIn,
}

/// The gradients of `sum(linear(x, width, weight, bias) * grad)` for `x` `[rows, in]`, the
/// weight stored as `layout` says, and `grad` `[rows, out]`: `grad w^T` and `x^T grad` (in the
/// weight's layout) where `[input, weight]` ask for them (a frozen layer's weight needs no
/// product), and the column sums of `grad`. The transposes are strides given to gemm (it packs
/// its operands anyway), not copies, and the products are written straight into new buffers.
///
/// Why not flex's: under autodiff it transposes both operands into new tensors and then
/// multiplies into a zeroed buffer that it copies once more to align it.
pub fn linear_backward(
    x: &[f32],
    width: usize,
    weight: &[f32],
    layout: WeightLayout,
    grad: &[f32],
    [want_input, want_weight]: [bool; 2],
) -> LinearGrads {
    let out = weight.len() / width.max(1);
    // The weight as the `[out, in]` operand the input's gradient multiplies by: in `[in, out]`
    // storage, element (j, i) is w[i * out + j].
    let weight_t = match layout {
        WeightLayout::InOut => Operand(weight, [1, out]),
        WeightLayout::OutIn => Operand(weight, [width, 1]),
    };
    assert!(width > 0 && x.len().is_multiple_of(width) && weight.len() == width * out);
    let rows = x.len() / width;
    assert_eq!(grad.len(), rows * out, "linear_backward: gradient size");
    // [rows, in] = [rows, out] x [out, in].
    let input = want_input
        .then(|| new_product_all_threads(Operand(grad, [out, 1]), weight_t, [rows, width, out]));
    // x^T's element (i, r) is x[r * width + i]; grad^T's (j, r) is grad[r * out + j].
    let weight = want_weight.then(|| match layout {
        // [out, in] = [out, rows] x [rows, in].
        WeightLayout::OutIn => new_product_all_threads(
            Operand(grad, [1, out]),
            Operand(x, [width, 1]),
            [out, width, rows],
        ),
        // [in, out] = [in, rows] x [rows, out].
        WeightLayout::InOut => new_product_all_threads(
            Operand(x, [1, width]),
            Operand(grad, [out, 1]),
            [width, out, rows],
        ),
    });
    LinearGrads {
        input,
        weight,
        bias: column_sums(grad, out),
    }
}

/// The sums of the `width`-wide rows of `x`, element-wise: per block of rows on all cores,
/// then the blocks' sums in order (the same bits on any number of threads).
pub(crate) fn column_sums(x: &[f32], width: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = x
        .par_chunks(crate::rows_per_task(width) * width)
        .map(|rows| {
            let mut acc = vec![0f32; width];
            add_rows(&mut acc, rows);
            acc
        })
        .collect();
    crate::sum_in_order(partials.iter().map(Vec::as_slice), width)
}

multiversion! {
    /// `acc += each acc.len()-wide row of rows`.
    fn add_rows(acc: &mut [f32], rows: &[f32]) {
        for row in rows.chunks_exact(acc.len()) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
    }
}

/// The input rows of a kernel inside a transformer block: `x`'s `width`-wide rows, taken in the
/// order `order` (input row `i` is row `order[i]` of `x`) where given, through the block's
/// LayerNorm `norm` where given. Both are done per block of rows while it is in cache (a copy
/// of the rows), so neither a reordered nor a normalised tensor is written out.
#[derive(Clone, Copy, Debug)]
pub struct BlockInput<'a> {
    pub x: &'a [f32],
    pub width: usize,
    /// A permutation of `x`'s rows (Swin's windows, read in window order from an image).
    pub order: Option<&'a [usize]>,
    pub norm: Option<RowNorm<'a>>,
}

impl<'a> BlockInput<'a> {
    /// `x`'s rows as they are.
    pub fn dense(x: &'a [f32], width: usize) -> Self {
        BlockInput {
            x,
            width,
            order: None,
            norm: None,
        }
    }

    fn rows(&self) -> usize {
        self.order.map_or(self.x.len() / self.width, <[usize]>::len)
    }

    /// Input rows `first..first + count`: a slice of `x` where they need neither reordering nor
    /// normalising, else a copy, gathered and normalised.
    pub(crate) fn block(
        &self,
        first: usize,
        count: usize,
        parallelism: Parallelism,
    ) -> Cow<'a, [f32]> {
        let width = self.width;
        let mut rows = match self.order {
            Some(order) => {
                let mut rows = Vec::with_capacity(count * width);
                for &r in &order[first..][..count] {
                    rows.extend_from_slice(&self.x[r * width..][..width]);
                }
                rows
            }
            None if self.norm.is_some() => self.x[first * width..][..count * width].to_vec(),
            None => return Cow::Borrowed(&self.x[first * width..][..count * width]),
        };
        if let Some(norm) = self.norm {
            element_wise(parallelism, &mut rows, width * 64, |r| norm.rows(r));
        }
        Cow::Owned(rows)
    }
}

/// A linear layer inside a pre-norm block: `residual + input weight + bias`, the input's rows
/// reordered and normalised per block of rows while they are in cache (see [`BlockInput`]: a
/// block's `qkv` projection behind its `norm1`), `residual` optional. The output rows start as
/// `residual + bias` for gemm to accumulate into (a block's output projection adding the
/// block's input), so the residual add is not a pass of its own either.
///
/// # Panics
/// On sizes that disagree, or an `order` reaching past `x` (a caller bug).
pub fn linear_in_block(
    input: BlockInput,
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let width = input.width;
    assert!(width > 0 && weight.len().is_multiple_of(width));
    assert!(input.norm.is_none_or(|n| n.gamma.len() == width));
    let out_width = weight.len() / width;
    let weight = Operand(weight, [out_width, 1]);
    linear_with(input, weight, out_width, bias, residual)
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
    let weight = Operand(weight, [1, width]);
    linear_with(BlockInput::dense(x, width), weight, out_width, bias, None)
}

fn linear_with(
    input: BlockInput,
    weight: Operand,
    out_width: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let width = input.width;
    assert!(input.x.len().is_multiple_of(width));
    new_rows(
        input.rows(),
        out_width,
        bias,
        residual,
        |first, out, parallelism| {
            let rows = out.len() / out_width;
            let x = input.block(first, rows, parallelism);
            accumulate_product(parallelism, out, &x, weight, [rows, width, out_width]);
        },
    )
}

/// `f` over `data` in chunks of `chunk` elements (a multiple of the row width): on this thread
/// within a block of rows, split over the threads where the block is all rows (gemm's threads,
/// `Parallelism::Rayon`), so that work does not run on one core.
pub(crate) fn element_wise(
    parallelism: Parallelism,
    data: &mut [f32],
    chunk: usize,
    f: impl Fn(&mut [f32]) + Send + Sync,
) {
    match parallelism {
        Parallelism::Rayon(_) => data.par_chunks_mut(chunk).for_each(f),
        _ => f(data),
    }
}

/// A new `[rows, width]` buffer, each row first `residual`'s row plus `bias` (either may be
/// absent; zeros without both), handed to `work` in blocks of rows (first row, block, the
/// parallelism for gemm within it; see [`blocks`]) on rayon's threads.
pub(crate) fn new_rows(
    rows: usize,
    width: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    work: impl Fn(usize, &mut [f32], Parallelism) + Sync,
) -> Vec<f32> {
    assert!(bias.is_none_or(|b| b.len() == width));
    assert!(residual.is_none_or(|r| r.len() == rows * width));
    let (block, parallelism) = blocks(rows);
    let mut out = Vec::with_capacity(rows * width);
    out.spare_capacity_mut()
        .par_chunks_mut(block * width)
        .enumerate()
        .for_each(|(i, chunk)| {
            let residual = residual.map(|r| &r[i * block * width..][..chunk.len()]);
            work(i * block, fill(chunk, bias, residual, width), parallelism)
        });
    // SAFETY: the chunks cover all `rows * width` elements of the spare capacity, and `fill`
    // wrote every one of them.
    unsafe { out.set_len(rows * width) };
    out
}

/// Writes `residual + bias` (either may be absent, zeros without both) into every `width`-wide
/// row of `chunk` (`residual` as long as `chunk`) and returns it initialised. Written into the
/// spare capacity: zeroing the new buffer first would be a second pass over it.
fn fill<'a>(
    chunk: &'a mut [MaybeUninit<f32>],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    width: usize,
) -> &'a mut [f32] {
    let zeros = vec![0f32; if bias.is_none() { width } else { 0 }];
    fill_rows(chunk, bias.unwrap_or(&zeros), residual);
    let len = chunk.len();
    // SAFETY: `fill_rows` wrote every element (`chunk.len()` is a multiple of `width`, as
    // `new_rows` cuts whole rows), and `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast::<f32>(), len) }
}

multiversion! {
    /// [`fill`]'s loop: `bias` repeated, plus `residual` where given.
    fn fill_rows(chunk: &mut [MaybeUninit<f32>], bias: &[f32], residual: Option<&[f32]>) {
        let width = bias.len();
        assert!(chunk.len().is_multiple_of(width));
        match residual {
            Some(residual) => {
                assert_eq!(residual.len(), chunk.len());
                for (row, res) in chunk.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
                    for ((o, &r), &b) in row.iter_mut().zip(res).zip(bias) {
                        o.write(r + b);
                    }
                }
            }
            None => {
                for row in chunk.chunks_exact_mut(width) {
                    for (o, &b) in row.iter_mut().zip(bias) {
                        o.write(b);
                    }
                }
            }
        }
    }
}

/// `dst += x w` for `x` `[m, k]` (dense rows) and `w` `[k, n]` (any strides), on gemm.
pub(crate) fn accumulate_product(
    parallelism: Parallelism,
    dst: &mut [f32],
    x: &[f32],
    w: Operand,
    [m, k, n]: [usize; 3],
) {
    assert!(dst.len() == m * n && x.len() == m * k);
    product_on(
        parallelism,
        dst,
        [n, 1],
        Operand(x, [k, 1]),
        w,
        [m, n, k],
        true,
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{layer_norm_rows, wave};

    /// The backward against the products written out in f64 (37 inputs, 19 outputs, 301 rows:
    /// more rows than one block of the column sums).
    #[test]
    fn backward_matches_the_gradients_written_out() {
        let (rows, width, out) = (301, 37, 19);
        let x = wave(rows * width, 0.3);
        let w = wave(width * out, 0.7);
        let g = wave(rows * out, 1.1);
        let grads = linear_backward(&x, width, &w, WeightLayout::InOut, &g, [true, true]);
        let (input, weight) = (grads.input.unwrap(), grads.weight.unwrap());
        let close = |a: f32, b: f64, what: &str| {
            assert!(
                (a as f64 - b).abs() < 1e-5 * b.abs().max(1.0),
                "{what}: {a} vs {b}"
            )
        };
        for r in 0..rows {
            for i in 0..width {
                let d: f64 = (0..out)
                    .map(|j| g[r * out + j] as f64 * w[i * out + j] as f64)
                    .sum();
                close(input[r * width + i], d, "input");
            }
        }
        for i in 0..width {
            for j in 0..out {
                let d: f64 = (0..rows)
                    .map(|r| x[r * width + i] as f64 * g[r * out + j] as f64)
                    .sum();
                close(weight[i * out + j], d, "weight");
            }
        }
        for j in 0..out {
            let d: f64 = (0..rows).map(|r| g[r * out + j] as f64).sum();
            close(grads.bias[j], d, "bias");
        }
    }

    /// The backward with the weight stored `[out, in]` gives the same numbers as with `[in,
    /// out]`, the weight's gradient transposed.
    #[test]
    fn transposed_backward_matches_the_plain_one() {
        let (rows, width, out) = (301, 37, 19);
        let (x, w, g) = (
            wave(rows * width, 0.3),
            wave(width * out, 0.7),
            wave(rows * out, 1.1),
        );
        let w_t: Vec<f32> = (0..out * width)
            .map(|i| w[(i % width) * out + i / width])
            .collect();
        let plain = linear_backward(&x, width, &w, WeightLayout::InOut, &g, [true, true]);
        let transposed = linear_backward(&x, width, &w_t, WeightLayout::OutIn, &g, [true, true]);
        assert_eq!(plain.bias, transposed.bias);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-4);
        assert!(close(
            plain.input.as_ref().unwrap(),
            transposed.input.as_ref().unwrap()
        ));
        let dw = plain.weight.unwrap();
        let dw_t: Vec<f32> = (0..out * width)
            .map(|i| dw[(i % width) * out + i / width])
            .collect();
        assert!(close(&dw_t, transposed.weight.as_ref().unwrap()));
    }

    #[test]
    fn matches_the_product_written_out_with_and_without_bias_and_transposed() {
        // 300 rows: one block on gemm's threads; 2100: blocks on rayon's threads.
        for rows in [300, 2100] {
            check_rows(rows);
        }
    }

    fn check_rows(rows: usize) {
        let (width, out) = (9, 5);
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

    #[test]
    fn in_a_block_reorders_and_normalises_the_rows_first_and_adds_the_residual() {
        let (width, out) = (9, 5);
        for rows in [300, 2100] {
            let (x, w, b) = (
                wave(rows * width, 0.37),
                wave(width * out, 0.71),
                wave(out, 1.3),
            );
            let (gamma, beta, residual) =
                (wave(width, 0.9), wave(width, 1.7), wave(rows * out, 0.29));
            let norm = RowNorm {
                gamma: &gamma,
                beta: Some(&beta),
                eps: 1e-5,
            };
            // Input row r is row (11 r + 3) mod rows of x (11 is prime to 300 and 2100).
            let order: Vec<usize> = (0..rows).map(|r| (11 * r + 3) % rows).collect();
            let input = BlockInput {
                x: &x,
                width,
                order: Some(&order),
                norm: Some(norm),
            };
            let got = linear_in_block(input, &w, Some(&b), Some(&residual));
            let normed = layer_norm_rows(&x, &gamma, &beta, 1e-5);
            for r in 0..rows {
                let row = order[r];
                for o in 0..out {
                    let want: f64 = (0..width)
                        .map(|i| normed[row * width + i] * w[i * out + o] as f64)
                        .sum::<f64>()
                        + b[o] as f64
                        + residual[r * out + o] as f64;
                    let g = got[r * out + o] as f64;
                    assert!((g - want).abs() < 1e-5, "row {r} out {o}: {g} vs {want}");
                }
            }
        }
    }
}
