//! GELU in its erf form (PyTorch's `nn.GELU()`), `x * (1 + erf(x / sqrt 2)) / 2`, for inference.
//!
//! Why not flex's own GELU: it calls libm's scalar `erff` on one thread, and was a quarter of
//! a FLatten-PVT-T forward on flex. Here `erf` is a rational approximation that vectorises
//! (the one XLA and Eigen use for f32: within a few ulp of the true erf on all of f32, see the
//! test), over all cores.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::simd::multiversion;
use crate::CHUNK;

/// `gelu(x)` element-wise, into a new buffer.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    // Written straight into the new buffer's spare capacity: zeroing it first cost as much as
    // a third of the GELU itself (MLP activations are the largest tensors of a forward).
    out.spare_capacity_mut()
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(out, x)| gelu_chunk(out, x));
    // SAFETY: the chunks above cover all `x.len()` elements of the spare capacity, and
    // `gelu_chunk` writes every element of its chunk.
    unsafe { out.set_len(x.len()) };
    out
}

fn gelu_chunk(out: &mut [MaybeUninit<f32>], x: &[f32]) {
    assert_eq!(out.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx512() {
        // SAFETY: the CPU has AVX-512, and `out` is as long as `x`.
        return unsafe { x86::gelu(out.as_mut_ptr().cast(), x.as_ptr(), x.len()) };
    }
    gelu_chunk_portable(out, x)
}

multiversion! {
    fn gelu_chunk_portable(out: &mut [MaybeUninit<f32>], x: &[f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            o.write(gelu_one(x));
        }
    }
}

/// [`gelu`] in place, on one thread (for kernels that already split their work).
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx512() {
        let at = x.as_mut_ptr();
        // SAFETY: the CPU has AVX-512; `x86::gelu` may write where it reads.
        return unsafe { x86::gelu(at, at, x.len()) };
    }
    gelu_in_place_portable(x)
}

multiversion! {
    fn gelu_in_place_portable(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_one(*v);
        }
    }
}

/// The gradient of [`gelu`] at `x` times `grad`, element-wise, into a new buffer:
/// `grad * (cdf(x) + x pdf(x))` with `cdf(x) = (1 + erf(x / sqrt 2)) / 2` and
/// `pdf(x) = exp(-x^2 / 2) / sqrt(2 pi)`, the exact derivative of the erf form (as PyTorch's
/// `gelu_backward` with `approximate='none'`).
///
/// Why ours: flex's GELU backward is several tensor ops over libm's scalar `erff`, and was a
/// tenth of a FLatten-PVT-T training step. Written with [`erf`] and [`exp`] it vectorises, over
/// all cores, in one pass.
pub fn gelu_backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        grad.len(),
        "gelu_backward: input and gradient differ in length"
    );
    let mut out = Vec::with_capacity(x.len());
    out.spare_capacity_mut()
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(out, (x, grad))| gelu_backward_chunk(out, x, grad));
    // SAFETY: the chunks cover all `x.len()` elements, and every element of each is written.
    unsafe { out.set_len(x.len()) };
    out
}

multiversion! {
    fn gelu_backward_chunk(out: &mut [MaybeUninit<f32>], x: &[f32], grad: &[f32]) {
        for ((o, &x), &g) in out.iter_mut().zip(x).zip(grad) {
            o.write(g * gelu_derivative(x));
        }
    }
}

/// `d gelu / dx` at `x`.
#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    // 1 / sqrt(2 pi)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = (erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5;
    cdf + x * exp(-0.5 * x * x) * INV_SQRT_2PI
}

/// Softmax over each `width`-wide row of `x` (`exp(x - max) / sum`), into a new buffer, the
/// rows spread over all cores.
///
/// Why: under autodiff Burn writes softmax as five ops (max, subtract, exp, sum, divide), each a
/// pass over the attention scores with its own backward; see `softmax_backward`.
pub fn softmax(x: &[f32], width: usize) -> Vec<f32> {
    assert!(
        width > 0 && x.len().is_multiple_of(width),
        "softmax: rows of {width}"
    );
    let mut out = x.to_vec();
    out.par_chunks_mut(crate::rows_per_task(width) * width)
        .for_each(|rows| crate::window::softmax_rows(rows, width));
    out
}

/// The gradient of [`softmax`]'s input from its output `y` and the output's gradient `grad`,
/// row by row: `y * (grad - sum(grad * y))`.
pub fn softmax_backward(y: &[f32], grad: &[f32], width: usize) -> Vec<f32> {
    assert!(width > 0 && y.len().is_multiple_of(width) && grad.len() == y.len());
    let mut out = grad.to_vec();
    let rows = crate::rows_per_task(width) * width;
    out.par_chunks_mut(rows)
        .zip(y.par_chunks(rows))
        .for_each(|(g, y)| softmax_backward_rows(g, y, width));
    out
}

multiversion! {
    /// [`softmax_backward`] on whole rows; `grad` becomes the input's gradient.
    pub(crate) fn softmax_backward_rows(grad: &mut [f32], y: &[f32], width: usize) {
        for (g, y) in grad.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
            let dot = crate::simd::dot(g, y);
            for (g, &y) in g.iter_mut().zip(y) {
                *g = y * (*g - dot);
            }
        }
    }
}

/// GELU written with AVX-512 intrinsics, where the compiled loops above are bound by their
/// arithmetic: Rust never fuses a multiply and an add, so `erf`'s two polynomials cost twelve
/// multiplies and twelve adds per vector. Here they are twelve fused multiply-adds (one
/// rounding each, so results may differ from [`gelu_one`]'s in the last bit), and the tail is
/// done with masked loads, not one element at a time. Measured in `experiments/bench/README.md`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ERF_P, ERF_Q};

    /// `out[i] = gelu(x[i])` for `i < len`; `out` may be `x`.
    ///
    /// # Safety
    /// AVX-512F; `x` readable and `out` writable for `len` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu(out: *mut f32, x: *const f32, len: usize) {
        let mut i = 0;
        while i + 16 <= len {
            _mm512_storeu_ps(out.add(i), gelu16(_mm512_loadu_ps(x.add(i))));
            i += 16;
        }
        if i < len {
            let mask: __mmask16 = (1u16 << (len - i)) - 1;
            let v = _mm512_maskz_loadu_ps(mask, x.add(i));
            _mm512_mask_storeu_ps(out.add(i), mask, gelu16(v));
        }
    }

    /// [`super::gelu_one`] on 16 lanes, its polynomials' steps fused.
    #[inline(always)]
    unsafe fn gelu16(v: __m512) -> __m512 {
        let x = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        // Clamped as `f32::clamp` does; a NaN lane comes back through the final `v *`.
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
        let x2 = _mm512_mul_ps(x, x);
        let horner = |coefficients: &[f32]| {
            coefficients[1..]
                .iter()
                .fold(_mm512_set1_ps(coefficients[0]), |acc, &c| {
                    _mm512_fmadd_ps(acc, x2, _mm512_set1_ps(c))
                })
        };
        let erf = _mm512_div_ps(_mm512_mul_ps(x, horner(&ERF_P)), horner(&ERF_Q));
        let one_plus = _mm512_add_ps(erf, _mm512_set1_ps(1.0));
        _mm512_mul_ps(_mm512_mul_ps(v, one_plus), _mm512_set1_ps(0.5))
    }
}

#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    x * (erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) / 2.0
}

/// `erf(x)` as `x P(x^2) / Q(x^2)` on `[-4, 4]` (where f32's erf reaches +-1), branch-free so
/// loops over it vectorise.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let horner = |coefficients: &[f32]| {
        coefficients[1..]
            .iter()
            .fold(coefficients[0], |acc, &c| acc * x2 + c)
    };
    x * horner(&ERF_P) / horner(&ERF_Q)
}

/// [`erf`]'s numerator and denominator polynomials in `x^2`, highest power first.
const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_600e-3,
    -1.609_603_3e-2,
];
const ERF_Q: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329e-3,
    -1.426_474e-2,
];

/// `exp(x)` for f32, branch-free so loops over it vectorise: `2^n exp(r)` with `n` the nearest
/// integer to `x / ln 2`, `r = x - n ln 2` in two parts (Cody and Waite) and Cephes' degree-6
/// polynomial for `exp(r)` on `|r| <= ln 2 / 2`; within 2 ulp of the true exp (see the test).
/// Below -87 (exp(-87) = 1.6e-38, near the smallest normal f32) it returns 0; above 88 it
/// saturates at `exp(88)`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let clamped = x.clamp(-87.0, 88.0);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // `n` as an integer, read from the mantissa of `shifted` (`n + 1.5 * 2^23` keeps it in the
    // low bits): `n as i32` is a saturating cast, which LLVM does one lane at a time.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = clamped - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_2_ulp_of_double_precision_exp() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let exact = (x as f64).exp();
            worst = worst.max((exp(x) as f64 - exact).abs() / exact);
        }
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    /// erf to double precision by its Taylor series (|x| < 3) or the complementary continued
    /// fraction (|x| >= 3).
    fn erf_f64(x: f64) -> f64 {
        let a = x.abs();
        let value = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        value.copysign(x)
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_double_precision_erf() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let exact = erf_f64(x as f64);
            let err = (erf(x) as f64 - exact).abs();
            worst = worst.max(err / exact.abs().max(1e-30).min(1.0).max(f32::EPSILON as f64));
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "worst error {worst:e}");
    }

    /// On CPUs with AVX-512 the intrinsics run; the compiled loops must agree with them within
    /// the tolerance above (the fused multiply-adds round once, so not bit for bit).
    #[test]
    fn compiled_and_vectorised_gelu_agree() {
        let x: Vec<f32> = (-3000..3001).map(|i| i as f32 * 2.7e-3).collect();
        let mut compiled = x.clone();
        gelu_in_place_portable(&mut compiled);
        for ((&c, &g), &x) in compiled.iter().zip(&gelu(&x)).zip(&x) {
            // Far in the negative tail, `1 + erf` is a few ulp of 1, times `x`: absolute.
            assert!(
                (c - g).abs() <= 1e-6 * c.abs().max(1.0),
                "x={x}: {c} vs {g}"
            );
        }
    }

    /// The derivative against a central difference of the erf form in double precision, and
    /// scaled by the incoming gradient element by element (odd length: a tail that is no whole
    /// chunk or vector).
    #[test]
    fn gelu_backward_is_the_derivative_of_the_erf_form_times_the_gradient() {
        let gelu_f64 = |x: f64| x * (erf_f64(x / std::f64::consts::SQRT_2) + 1.0) / 2.0;
        let x: Vec<f32> = (-4001..4000).map(|i| i as f32 * 1.7e-3).collect();
        let grad: Vec<f32> = (0..x.len()).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
        let back = gelu_backward(&x, &grad);
        assert_eq!(back.len(), x.len());
        for ((&b, &x), &g) in back.iter().zip(&x).zip(&grad) {
            let h = 1e-6;
            let x = x as f64;
            let exact = (gelu_f64(x + h) - gelu_f64(x - h)) / (2.0 * h) * g as f64;
            assert!(
                (b as f64 - exact).abs() <= 2e-6 * exact.abs().max(1.0),
                "x={x}: {b} vs {exact}"
            );
        }
    }

    /// Softmax and its backward against f64, on rows of 49 (Swin's window; no whole vector),
    /// enough rows for several tasks.
    #[test]
    fn softmax_and_its_backward_match_double_precision() {
        let width = 49;
        let rows = 1000;
        let x: Vec<f32> = crate::testing::wave(rows * width, 0.77)
            .iter()
            .map(|v| 6.0 * v)
            .collect();
        let g = crate::testing::wave(rows * width, 0.13);
        let y = softmax(&x, width);
        let dx = softmax_backward(&y, &g, width);
        for r in 0..rows {
            let row = &x[r * width..][..width];
            let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let total: f64 = e.iter().sum();
            let exact: Vec<f64> = e.iter().map(|v| v / total).collect();
            let gr = &g[r * width..][..width];
            let dot: f64 = exact.iter().zip(gr).map(|(y, g)| y * *g as f64).sum();
            for i in 0..width {
                let (yi, di) = (y[r * width + i] as f64, dx[r * width + i] as f64);
                assert!(
                    (yi - exact[i]).abs() < 1e-6,
                    "y[{r}, {i}]: {yi} vs {}",
                    exact[i]
                );
                let d = exact[i] * (gr[i] as f64 - dot);
                assert!((di - d).abs() < 2e-6, "dx[{r}, {i}]: {di} vs {d}");
            }
        }
    }

    #[test]
    fn gelu_is_within_1e_6_of_the_erf_form_in_double_precision() {
        // 7999 elements: whole vectors and a tail of 15.
        let x: Vec<f32> = (-4000..3999).map(|i| i as f32 * 2.5e-3).collect();
        let mut in_place = x.clone();
        gelu_in_place(&mut in_place);
        assert_eq!(in_place, gelu(&x));
        for (g, &x) in gelu(&x).iter().zip(&x) {
            let exact = x as f64 * (1.0 + erf_f64(x as f64 / 2f64.sqrt())) / 2.0;
            // Far in the negative tail erf(x) is -1 within one f32 ulp (6e-8), so absolute.
            let tolerance = 1e-6 * exact.abs().max(1.0);
            assert!(
                (*g as f64 - exact).abs() <= tolerance,
                "x={x}: {g} vs {exact}"
            );
        }
    }
}
