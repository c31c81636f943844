//! GELU in its erf form (PyTorch's `nn.GELU()`), `x * (1 + erf(x / sqrt 2)) / 2`, for inference.
//!
//! Why not flex's own GELU: it calls libm's scalar `erff` on one thread, and was a quarter of
//! a FLatten-PVT-T forward on flex. Here `erf` is a rational approximation that vectorises
//! (the one XLA and Eigen use for f32: within a few ulp of the true erf on all of f32, see the
//! test), over all cores.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::simd::multiversion;
use crate::{new_buffer, CHUNK};

/// `gelu(x)` element-wise, into a new buffer.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    // Not zeroed first (see `new_buffer`): that cost as much as a third of the GELU itself
    // (MLP activations are the largest tensors of a forward).
    let write =
        |i: usize, out: &mut [MaybeUninit<f32>]| gelu_chunk(out, &x[i * CHUNK..][..out.len()]);
    // SAFETY: `gelu_chunk` writes every element of its chunk.
    unsafe { new_buffer(x.len(), CHUNK, write) }
}

fn gelu_chunk(out: &mut [MaybeUninit<f32>], x: &[f32]) {
    assert_eq!(out.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `out` is as long as `x`.
    if unsafe { x86::gelu(out.as_mut_ptr().cast(), x.as_ptr(), x.len()) } {
        return;
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
    {
        let at = x.as_mut_ptr();
        // SAFETY: `x86::gelu` may write where it reads.
        if unsafe { x86::gelu(at, at, x.len()) } {
            return;
        }
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
    let write = |i: usize, out: &mut [MaybeUninit<f32>]| {
        let (x, grad) = (
            &x[i * CHUNK..][..out.len()],
            &grad[i * CHUNK..][..out.len()],
        );
        gelu_backward_chunk(out, x, grad)
    };
    // SAFETY: `gelu_backward_chunk` writes every element of its chunk.
    unsafe { new_buffer(x.len(), CHUNK, write) }
}

fn gelu_backward_chunk(out: &mut [MaybeUninit<f32>], x: &[f32], grad: &[f32]) {
    assert!(out.len() == x.len() && grad.len() == x.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `out`, `x` and `grad` are equally long.
    if unsafe { x86::gelu_backward(out.as_mut_ptr().cast(), x.as_ptr(), grad.as_ptr(), x.len()) } {
        return;
    }
    gelu_backward_chunk_portable(out, x, grad)
}

multiversion! {
    fn gelu_backward_chunk_portable(out: &mut [MaybeUninit<f32>], x: &[f32], grad: &[f32]) {
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

/// GELU and its derivative written with intrinsics, for AVX-512 (16 lanes) and AVX2+FMA (8),
/// where the compiled loops above are bound by their arithmetic: Rust never fuses a multiply
/// and an add, so `erf`'s two polynomials cost twelve multiplies and twelve adds per vector,
/// and `exp`'s six more each. Here every step is one fused multiply-add (one rounding each, so
/// results may differ from [`gelu_one`] and [`gelu_derivative`] in the last bits). One generic
/// body serves both widths through [`Vector`]. Measured in `experiments/bench/README.md` and
/// `experiments/bench/fused_training.md`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ERF_P, ERF_Q};

    /// `out[i] = gelu(x[i])` for `i < len`, on the widest vectors the selected instruction set
    /// has; `false` (nothing written) where it has neither AVX-512 nor AVX2+FMA. `out` may be
    /// `x`.
    ///
    /// # Safety
    /// `x` readable and `out` writable for `len` floats.
    pub(super) unsafe fn gelu(out: *mut f32, x: *const f32, len: usize) -> bool {
        widest::<Gelu>(out, [x, x], len)
    }

    /// `out[i] = grad[i] * gelu'(x[i])`, as [`gelu`] dispatches.
    ///
    /// # Safety
    /// `x` and `grad` readable and `out` writable for `len` floats.
    pub(super) unsafe fn gelu_backward(
        out: *mut f32,
        x: *const f32,
        grad: *const f32,
        len: usize,
    ) -> bool {
        widest::<GeluGrad>(out, [x, grad], len)
    }

    /// [`map`] of `F` on the widest vectors the selected instruction set has; `false` where it
    /// has neither.
    unsafe fn widest<F: Elementwise>(out: *mut f32, ab: [*const f32; 2], len: usize) -> bool {
        if crate::simd::has_avx512() {
            map_512::<F>(out, ab, len);
        } else if crate::simd::has_avx2_fma() {
            map_256::<F>(out, ab, len);
        } else {
            return false;
        }
        true
    }

    /// [`map`] on AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn map_512<F: Elementwise>(out: *mut f32, ab: [*const f32; 2], len: usize) {
        map::<__m512, F>(out, ab, len);
    }

    /// [`map`] on AVX2+FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn map_256<F: Elementwise>(out: *mut f32, ab: [*const f32; 2], len: usize) {
        map::<__m256, F>(out, ab, len);
    }

    /// What the loops need of a vector register.
    pub(super) trait Vector: Copy {
        const LANES: usize;
        unsafe fn splat(x: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
        unsafe fn add(self, b: Self) -> Self;
        unsafe fn sub(self, b: Self) -> Self;
        unsafe fn mul(self, b: Self) -> Self;
        unsafe fn div(self, b: Self) -> Self;
        /// `self` clamped to `[lo, hi]`.
        unsafe fn clamp(self, lo: f32, hi: f32) -> Self;
        /// `self * b + c`, rounded once.
        unsafe fn fmadd(self, b: Self, c: Self) -> Self;
        /// `2^n` for the integer `n` that `self = n + ROUND` holds in its low mantissa bits.
        unsafe fn pow2_of_rounded(self) -> Self;
        /// `self` where `x >= bound`, 0 elsewhere.
        unsafe fn zero_below(self, x: Self, bound: f32) -> Self;
    }

    impl Vector for __m512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            _mm512_add_ps(self, b)
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            _mm512_sub_ps(self, b)
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            _mm512_mul_ps(self, b)
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            _mm512_div_ps(self, b)
        }
        #[inline(always)]
        unsafe fn clamp(self, lo: f32, hi: f32) -> Self {
            _mm512_min_ps(_mm512_max_ps(self, Self::splat(lo)), Self::splat(hi))
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn pow2_of_rounded(self) -> Self {
            let n = _mm512_sub_epi32(_mm512_castps_si512(self), _mm512_set1_epi32(ROUND_BITS));
            let biased = _mm512_add_epi32(n, _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased))
        }
        #[inline(always)]
        unsafe fn zero_below(self, x: Self, bound: f32) -> Self {
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, Self::splat(bound));
            _mm512_maskz_mov_ps(keep, self)
        }
    }

    impl Vector for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            _mm256_add_ps(self, b)
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            _mm256_sub_ps(self, b)
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            _mm256_mul_ps(self, b)
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            _mm256_div_ps(self, b)
        }
        #[inline(always)]
        unsafe fn clamp(self, lo: f32, hi: f32) -> Self {
            _mm256_min_ps(_mm256_max_ps(self, Self::splat(lo)), Self::splat(hi))
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn pow2_of_rounded(self) -> Self {
            let n = _mm256_sub_epi32(_mm256_castps_si256(self), _mm256_set1_epi32(ROUND_BITS));
            let biased = _mm256_add_epi32(n, _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
        }
        #[inline(always)]
        unsafe fn zero_below(self, x: Self, bound: f32) -> Self {
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, Self::splat(bound));
            _mm256_and_ps(self, keep)
        }
    }

    /// An element-wise function of two vectors (a trait rather than a closure, so that it is
    /// inlined into the `target_feature` functions above whatever LLVM's heuristics say).
    pub(super) trait Elementwise {
        unsafe fn apply<V: Vector>(a: V, b: V) -> V;
    }

    /// `gelu(a)`.
    pub(super) struct Gelu;
    impl Elementwise for Gelu {
        #[inline(always)]
        unsafe fn apply<V: Vector>(a: V, _: V) -> V {
            gelu_v(a)
        }
    }

    /// `b * gelu'(a)`.
    pub(super) struct GeluGrad;
    impl Elementwise for GeluGrad {
        #[inline(always)]
        unsafe fn apply<V: Vector>(a: V, b: V) -> V {
            gelu_grad_v(a, b)
        }
    }

    /// `out[i] = F(a[i], b[i])` for `i < len`, a vector at a time; the tail goes through a
    /// padded buffer.
    #[inline(always)]
    unsafe fn map<V: Vector, F: Elementwise>(out: *mut f32, [a, b]: [*const f32; 2], len: usize) {
        let mut i = 0;
        while i + V::LANES <= len {
            F::apply(V::load(a.add(i)), V::load(b.add(i))).store(out.add(i));
            i += V::LANES;
        }
        let rest = len - i;
        if rest > 0 {
            let (mut pa, mut pb, mut po) = ([0f32; 16], [0f32; 16], [0f32; 16]);
            std::ptr::copy_nonoverlapping(a.add(i), pa.as_mut_ptr(), rest);
            std::ptr::copy_nonoverlapping(b.add(i), pb.as_mut_ptr(), rest);
            F::apply(V::load(pa.as_ptr()), V::load(pb.as_ptr())).store(po.as_mut_ptr());
            std::ptr::copy_nonoverlapping(po.as_ptr(), out.add(i), rest);
        }
    }

    /// `x P(x^2) / Q(x^2)` (see [`super::erf`]) of `x` already clamped to `[-4, 4]`.
    #[inline(always)]
    unsafe fn erf_clamped<V: Vector>(x: V) -> V {
        let x2 = x.mul(x);
        let horner = |coefficients: &[f32]| {
            coefficients[1..]
                .iter()
                .fold(V::splat(coefficients[0]), |acc, &c| {
                    acc.fmadd(x2, V::splat(c))
                })
        };
        x.mul(horner(&ERF_P)).div(horner(&ERF_Q))
    }

    /// `1.5 * 2^23` and its bits: adding it rounds a float to an integer (see [`super::exp`]).
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;

    /// [`super::exp`] on every lane, each step fused.
    #[inline(always)]
    unsafe fn exp<V: Vector>(x: V) -> V {
        let clamped = x.clamp(-87.0, 88.0);
        let shifted = clamped.fmadd(V::splat(std::f32::consts::LOG2_E), V::splat(ROUND));
        let n = shifted.sub(V::splat(ROUND));
        let r = n.fmadd(V::splat(-0.693_359_4), clamped);
        let r = n.fmadd(V::splat(2.121_944_4e-4), r);
        let p = [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ]
        .iter()
        .fold(V::splat(1.987_569_1e-4), |p, &c| p.fmadd(r, V::splat(c)));
        let y = p.mul(r).fmadd(r, r.add(V::splat(1.0)));
        y.mul(shifted.pow2_of_rounded()).zero_below(x, -87.0)
    }

    /// [`super::gelu_one`], each step fused; a NaN lane comes back through the final `v *`.
    #[inline(always)]
    unsafe fn gelu_v<V: Vector>(v: V) -> V {
        let x = v
            .mul(V::splat(std::f32::consts::FRAC_1_SQRT_2))
            .clamp(-4.0, 4.0);
        let one_plus = erf_clamped(x).add(V::splat(1.0));
        v.mul(one_plus).mul(V::splat(0.5))
    }

    /// `g * gelu'(v)` ([`super::gelu_derivative`]), each step fused.
    #[inline(always)]
    unsafe fn gelu_grad_v<V: Vector>(v: V, g: V) -> V {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let x = v
            .mul(V::splat(std::f32::consts::FRAC_1_SQRT_2))
            .clamp(-4.0, 4.0);
        let cdf = erf_clamped(x).fmadd(V::splat(0.5), V::splat(0.5));
        let pdf = exp(v.mul(v).mul(V::splat(-0.5))).mul(V::splat(INV_SQRT_2PI));
        v.fmadd(pdf, cdf).mul(g)
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

    /// Both vector widths against the compiled loops, for GELU and its derivative: over
    /// [-20, 20] (`exp`'s underflow past |x| = 13.2, `erf`'s clamp), with a tail for each width
    /// and a NaN, which must come out NaN. A width the CPU lacks is left out.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_vector_widths_agree_with_the_compiled_loops() {
        let mut x: Vec<f32> = (-8001..8000).map(|i| i as f32 * 2.5e-3).collect();
        x.push(f32::NAN);
        let g: Vec<f32> = (0..x.len()).map(|i| 0.5 - (i % 5) as f32 * 0.3).collect();
        let mut forward = x.clone();
        gelu_in_place_portable(&mut forward);
        let mut backward = Vec::with_capacity(x.len());
        gelu_backward_chunk_portable(&mut backward.spare_capacity_mut()[..x.len()], &x, &g);
        // SAFETY: the chunk function wrote all `x.len()` elements.
        unsafe { backward.set_len(x.len()) };
        let avx512 = is_x86_feature_detected!("avx512f");
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        use x86::{Gelu, GeluGrad};
        type Map = unsafe fn(*mut f32, [*const f32; 2], usize);
        let widths: [(bool, Map, Map); 2] = [
            (avx512, x86::map_512::<Gelu>, x86::map_512::<GeluGrad>),
            (avx2, x86::map_256::<Gelu>, x86::map_256::<GeluGrad>),
        ];
        let close = |a: f32, b: f32| (a - b).abs() <= 2e-6 * a.abs().max(1.0);
        for (i, (present, gelu_v, backward_v)) in widths.into_iter().enumerate() {
            if !present {
                continue;
            }
            let (mut f, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            // SAFETY: the CPU has the width's features; all buffers hold `x.len()` floats.
            unsafe {
                gelu_v(f.as_mut_ptr(), [x.as_ptr(), x.as_ptr()], x.len());
                backward_v(b.as_mut_ptr(), [x.as_ptr(), g.as_ptr()], x.len());
            }
            for j in 0..x.len() {
                let (xj, n) = (x[j], x.len() - 1);
                assert_eq!(f[j].is_nan() || b[j].is_nan(), j == n, "width {i}, x={xj}");
                if j < n {
                    assert!(
                        close(forward[j], f[j]),
                        "width {i}, x={xj}: {} vs {}",
                        forward[j],
                        f[j]
                    );
                    assert!(
                        close(backward[j], b[j]),
                        "width {i}, x={xj}: {} vs {}",
                        backward[j],
                        b[j]
                    );
                }
            }
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
