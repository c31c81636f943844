//! The matrix products of the kernels, on the `gemm` crate.

pub(crate) use gemm::Parallelism;
use rayon::prelude::*;

/// A matrix operand: a slice and its `[row, column]` strides.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a>(pub &'a [f32], pub [usize; 2]);

/// Row-major rows `stride` apart as an operand.
pub(crate) fn rows(x: &[f32], stride: usize) -> Operand<'_> {
    Operand(x, [stride, 1])
}

/// The transpose of row-major rows `stride` apart as an operand (a stride swap, not a copy).
pub(crate) fn transposed(x: &[f32], stride: usize) -> Operand<'_> {
    Operand(x, [1, stride])
}

/// `dst = beta * lhs rhs` (`dst += ...` with `accumulate`) for `[m, n, k]` = rows of `lhs`,
/// columns of `rhs`, inner size, on gemm (the multiply flex runs on), one thread; the kernels
/// split their work over threads themselves. `dst_strides` are `[row, column]` strides.
pub(crate) fn product(
    dst: &mut [f32],
    dst_strides: [usize; 2],
    lhs: Operand,
    rhs: Operand,
    mnk: [usize; 3],
    accumulate: bool,
    beta: f32,
) {
    product_on(
        Parallelism::None,
        dst,
        dst_strides,
        lhs,
        rhs,
        mnk,
        accumulate,
        beta,
    )
}

/// [`product`] on `parallelism`: gemm's own threads (`Parallelism::Rayon(0)`) where one product
/// is all the work there is.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_on(
    parallelism: Parallelism,
    dst: &mut [f32],
    dst_strides: [usize; 2],
    lhs: Operand,
    rhs: Operand,
    [m, n, k]: [usize; 3],
    accumulate: bool,
    beta: f32,
) {
    assert!(last(dst_strides, m, n) < dst.len());
    // SAFETY: the assert keeps every element gemm writes (or reads, accumulating) inside `dst`,
    // which is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm_into(
            parallelism,
            dst.as_mut_ptr(),
            dst_strides,
            [lhs, rhs],
            [m, n, k],
            accumulate,
            beta,
        )
    }
}

/// `lhs rhs` for `[m, n, k]` into a new row-major `[m, n]` buffer, on `parallelism`. The buffer
/// is not zeroed first: gemm writes every element of a product it does not accumulate into
/// without reading it, so zeroing would be one more pass over the whole output.
pub(crate) fn new_product(
    parallelism: Parallelism,
    lhs: Operand,
    rhs: Operand,
    [m, n, k]: [usize; 3],
) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: `dst` has room for `m * n` elements, which the row-major strides `[n, 1]` cover
    // exactly, and is a new buffer, so it overlaps neither operand. Not accumulating, gemm takes
    // alpha as zero, and every one of its paths (micro-kernels, gemv; k = 0 returned above)
    // writes each `dst` element before any read of it, so all `m * n` are initialised when
    // `set_len` runs.
    unsafe {
        gemm_into(
            parallelism,
            dst.as_mut_ptr(),
            [n, 1],
            [lhs, rhs],
            [m, n, k],
            false,
            1.0,
        );
        dst.set_len(m * n);
    }
    dst
}

/// `lhs rhs` for `[m, n, k]` into a new row-major `[m, n]` buffer on all of rayon's threads.
///
/// A deep product (`k` at least 4 times the output's longer side) is cut along that side into
/// one block per thread, and each block is multiplied on one thread through the whole depth.
/// Any other product runs on gemm's own threads (`Parallelism::Rayon`).
///
/// Why: gemm's threads meet twice in every depth slice of a product (to pack the right operand,
/// then to multiply), and a left operand of few rows that is not stored column by column is
/// packed on one thread while the others wait. In a deep product with a small output there are
/// many slices and little work in each.
/// The linear layers' weight gradients over a whole batch's tokens are such products (`[96, 384]`
/// summed over 25088 rows in Swin-T's first stage). Timed call by call inside agent_swin_t's
/// training step (AVX2), the deep products took 173-182 ms a step in blocks against 191 on
/// gemm's threads, and that one ran at 166 GFLOP/s against 103. Shallower products were no
/// faster in blocks, some slower, so they stay on gemm's threads
/// (`experiments/bench/idle_core.md`).
///
/// The bits do not depend on the thread count or the blocks: gemm slices the depth of every
/// block as it would the whole product's (see [`blocks`]), so each output element sums the same
/// products in the same order in any block.
pub(crate) fn new_product_all_threads(
    lhs: Operand,
    rhs: Operand,
    [m, n, k]: [usize; 3],
) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    let Some((along_rows, edges)) = blocks([m, n, k], threads) else {
        return new_product(Parallelism::Rayon(threads), lhs, rhs, [m, n, k]);
    };
    let mut dst = Vec::<f32>::with_capacity(m * n);
    let out = SendPtr(dst.as_mut_ptr());
    edges.par_windows(2).for_each(|edge| {
        let (start, end) = (edge[0], edge[1]);
        if start == end {
            return;
        }
        let (offset, lhs, rhs, mnk) = match along_rows {
            true => (
                start * n,
                Operand(&lhs.0[start * lhs.1[0]..], lhs.1),
                rhs,
                [end - start, n, k],
            ),
            false => (
                start,
                lhs,
                Operand(&rhs.0[start * rhs.1[1]..], rhs.1),
                [m, end - start, k],
            ),
        };
        // SAFETY: the blocks' rows (or columns) `start..end` do not overlap, so each element of
        // the `[m, n]` buffer, which has room for all of them, is written by exactly one block,
        // and the buffer is new, so it overlaps neither operand.
        unsafe {
            gemm_into(
                Parallelism::None,
                out.at(offset),
                [n, 1],
                [lhs, rhs],
                mnk,
                false,
                1.0,
            )
        }
    });
    // SAFETY: the blocks cover every row (or column) once, and gemm, not accumulating, writes
    // every element of its block (see `new_product`), so all `m * n` are initialised.
    unsafe { dst.set_len(m * n) };
    dst
}

/// How [`new_product_all_threads`] cuts `[m, n, k]` over `threads`: along the rows (`true`) or
/// the columns, at the returned edges (`threads + 1`, ascending, some blocks possibly empty).
/// `None` where gemm's own threads take the whole product.
///
/// Only deep products are cut, and only into blocks that gemm multiplies the way it would the
/// whole product. Where both sides are at most 64, gemm slices the depth differently (`k` in
/// slices of 512, not `k` split evenly), and where a side is 1 or the output has at most 256
/// elements it takes other paths (gemv, dot products). So every block keeps at least 16
/// elements on each side and more than 64 on one of them.
fn blocks([m, n, k]: [usize; 3], threads: usize) -> Option<(bool, Vec<usize>)> {
    if threads < 2 || k < 4 * m.max(n) || m.min(n) < 16 {
        return None;
    }
    let along_rows = m >= n;
    let (len, other) = if along_rows { (m, n) } else { (n, m) };
    // Block edges fall on whole micro-kernel tiles where the side allows: 64 rows (AVX-512's
    // tile; AVX2's is 16) or 6 columns (both).
    let align = match along_rows {
        true if m >= 4 * 64 => 64,
        true => 16,
        false => 6,
    };
    let edges: Vec<usize> = (0..=threads)
        .map(|i| match i == threads {
            true => len,
            false => ((len * i / threads + align / 2) / align * align).min(len),
        })
        .collect();
    let shortest = edges
        .windows(2)
        .map(|edge| edge[1] - edge[0])
        .filter(|&l| l > 0)
        .min()?;
    (shortest >= 16 && shortest.max(other) > 64).then_some((along_rows, edges))
}

/// The output pointer shared by [`new_product_all_threads`]'s blocks, each writing its own
/// elements.
struct SendPtr(*mut f32);

impl SendPtr {
    /// The pointer `offset` elements on (a method, so that closures capture the whole `Sync`
    /// wrapper rather than its raw field).
    ///
    /// # Safety
    /// `offset` must stay inside the buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

// SAFETY: the blocks write disjoint elements through it (see `new_product_all_threads`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// The offset of the last element of a `rows x cols` matrix with `[row, column]` strides.
fn last([rs, cs]: [usize; 2], rows: usize, cols: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// gemm's call: `dst = beta * lhs rhs` (`dst += ...` with `accumulate`), the operands'
/// bounds checked here.
///
/// # Safety
/// `dst` must be valid for writes of every element of the `[m, n]` matrix at `dst_strides`
/// (and for reads of them with `accumulate`), and overlap neither operand.
unsafe fn gemm_into(
    parallelism: Parallelism,
    dst: *mut f32,
    dst_strides: [usize; 2],
    [lhs, rhs]: [Operand; 2],
    [m, n, k]: [usize; 3],
    accumulate: bool,
    beta: f32,
) {
    assert!(last(lhs.1, m, k) < lhs.0.len() && last(rhs.1, k, n) < rhs.0.len());
    // SAFETY: the assert keeps every operand element gemm reads inside its slice; the caller
    // vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_strides[1] as isize,
            dst_strides[0] as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.1[1] as isize,
            lhs.1[0] as isize,
            rhs.0.as_ptr(),
            rhs.1[1] as isize,
            rhs.1[0] as isize,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deep products cut into blocks, along rows (64-row and 16-row tiles) and along columns,
    /// on 2 and 3 threads, with plain and transposed operands, give gemm's bits on one thread.
    /// So do the products that gemm's threads take whole: shallow, small, or with blocks that
    /// would be too small.
    #[test]
    fn blocks_on_every_thread_give_the_one_thread_bits() {
        let value = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) / 317.0;
        // [m, n, k], and whether 2 and 3 threads cut it into blocks.
        let cases = [
            ([520, 20, 2600], [true, true]),
            ([300, 20, 1500], [true, false]),
            ([150, 17, 700], [true, false]),
            ([20, 400, 1700], [true, true]),
            ([70, 90, 500], [true, true]),
            ([40, 60, 600], [false, false]),
            ([300, 7, 1500], [false, false]),
            ([50, 40, 90], [false, false]),
        ];
        for ([m, n, k], cut) in cases {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 11)).collect();
            for (threads, cut) in [2, 3].into_iter().zip(cut) {
                assert_eq!(
                    blocks([m, n, k], threads).is_some(),
                    cut,
                    "{m}x{n}x{k}, {threads}"
                );
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                for (lhs, rhs) in [
                    (rows(&a, k), rows(&b, n)),
                    (transposed(&a, m), transposed(&b, k)),
                ] {
                    let want = new_product(Parallelism::None, lhs, rhs, [m, n, k]);
                    let got = pool.install(|| new_product_all_threads(lhs, rhs, [m, n, k]));
                    assert_eq!(got.len(), m * n);
                    let differ = want
                        .iter()
                        .zip(&got)
                        .filter(|(w, g)| w.to_bits() != g.to_bits());
                    assert_eq!(differ.count(), 0, "{m}x{n}x{k} on {threads} threads");
                }
            }
        }
    }
}
