//! The matrix products of the kernels, on the `gemm` crate.

pub(crate) use gemm::Parallelism;

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
