//! The instruction set of the kernels' inner loops, chosen at run time.
//!
//! Why: the workspace builds for baseline x86-64 (SSE2), where LLVM vectorises loops 4 lanes
//! wide without fused multiply-add; the same loops compiled for AVX2+FMA or AVX-512 run several
//! times faster. [`multiversion!`] compiles a function body once per instruction set and calls
//! the widest one the CPU has (the check is a cached atomic load). Results can differ in the last
//! bits between machines (FMA rounds once), never between runs on one machine.

/// Defines `fn NAME(args) -> ret { body }` compiled for AVX-512, AVX2+FMA and the baseline,
/// dispatching at run time. Arguments are plain identifiers.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn x86_v4($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn x86_v3($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU has every feature `x86_v4` was compiled for.
                    return unsafe { x86_v4($($arg),*) };
                }
                if $crate::simd::has_avx2_fma() {
                    // SAFETY: as above, for `x86_v3`.
                    return unsafe { x86_v3($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// An instruction set the kernels' inner loops are compiled for, widest last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The build's baseline (SSE2 on x86-64; NEON on aarch64), what LLVM vectorises to unaided.
    Portable,
    /// AVX2 with fused multiply-add.
    Avx2,
    /// AVX-512 (F and VL) with AVX2 and FMA.
    Avx512,
}

impl Isa {
    /// The spellings `LINVIT_ISA` takes, and [`Isa::name`] gives.
    pub const NAMES: [(Isa, &'static str); 3] = [
        (Isa::Portable, "portable"),
        (Isa::Avx2, "avx2"),
        (Isa::Avx512, "avx512"),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(i, _)| *i == self)
            .map_or("portable", |(_, n)| n)
    }

    fn from_name(name: &str) -> Option<Isa> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(i, _)| *i)
    }
}

/// The widest instruction set this CPU runs.
pub fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
            return Isa::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// `LINVIT_ISA` (`portable`, `avx2` or `avx512`): the widest instruction set the kernels may
/// use, so that a narrower machine's path can be measured on a wider one. `Ok(None)` where it is
/// unset; an error names a value that is not one of those, or one this CPU cannot run.
pub fn requested() -> Result<Option<Isa>, String> {
    let Ok(value) = std::env::var("LINVIT_ISA") else {
        return Ok(None);
    };
    let names: Vec<&str> = Isa::NAMES.iter().map(|(_, n)| *n).collect();
    let isa = Isa::from_name(value.trim())
        .ok_or_else(|| format!("LINVIT_ISA={value}: not one of {}", names.join(", ")))?;
    if isa > detected() {
        return Err(format!(
            "LINVIT_ISA={value}: this CPU's widest instruction set is {}",
            detected().name()
        ));
    }
    Ok(Some(isa))
}

/// The instruction set the kernels run: the detected one, narrowed by `LINVIT_ISA` (a value
/// that [`requested`] refuses is ignored here; callers that can report it check it first).
/// Read once per process.
pub fn selected() -> Isa {
    static SELECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *SELECTED.get_or_init(|| requested().ok().flatten().unwrap_or_else(detected))
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    selected() == Isa::Avx512
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    selected() >= Isa::Avx2
}

/// Width of the partial results in the reductions below: a float sum in one accumulator is a
/// serial chain LLVM may not reorder, so it would not vectorise; `LANES` interleaved ones do.
pub(crate) const LANES: usize = 16;

/// Folds `x` with `step` into `LANES` partial results from `init`, joins them with `join`, then
/// folds in the elements past the last full group.
#[inline(always)]
fn fold_lanes(
    x: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    join: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        acc.iter_mut()
            .zip(chunk)
            .for_each(|(a, &v)| *a = step(*a, v));
    }
    let joined = join_lanes(acc, &join);
    chunks.remainder().iter().fold(joined, |a, &v| step(a, v))
}

/// Joins the `LANES` partial results pairwise, halves then quarters and so on: four vector
/// steps. Folding them one by one was a chain of 16 dependent scalar steps, which on rows of
/// 32-100 elements (a head's dot, a window's scores) cost more than the vector loop itself.
#[inline(always)]
pub(crate) fn join_lanes(mut acc: [f32; LANES], join: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] = join(acc[i], acc[i + width]);
        }
    }
    acc[0]
}

#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512.
        return unsafe { x86::sum(x) };
    }
    fold_lanes(x, 0.0, |a, v| a + v, |a, b| a + b)
}

#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    fold_lanes(x, f32::NEG_INFINITY, f32::max, f32::max)
}

/// `a . b` over their common length.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512.
        return unsafe { x86::dot(a, b) };
    }
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (mut a_chunks, mut b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (a, b) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((s, x), y) in acc.iter_mut().zip(a).zip(b) {
            *s += x * y;
        }
    }
    let tail = a_chunks.remainder().iter().zip(b_chunks.remainder());
    tail.fold(join_lanes(acc, |a, b| a + b), |s, (x, y)| s + x * y)
}

/// [`sum`] and [`dot`] with AVX-512 intrinsics, lane for lane the same arithmetic in the same
/// order (so the same bits). Why: LLVM vectorised the compiled loops' 16 partial sums as eight
/// 2-lane vectors, loading two floats at a time; a LayerNorm row (a sum and a dot) ran at
/// ~1 ns per element (experiments/bench/README.md).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{join_lanes, LANES};

    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn sum(x: &[f32]) -> f32 {
        let mut chunks = x.chunks_exact(LANES);
        let mut acc = _mm512_setzero_ps();
        for chunk in &mut chunks {
            acc = _mm512_add_ps(acc, _mm512_loadu_ps(chunk.as_ptr()));
        }
        let joined = join_lanes(lanes(acc), |a, b| a + b);
        chunks.remainder().iter().fold(joined, |a, &v| a + v)
    }

    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let (mut a_chunks, mut b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let mut acc = _mm512_setzero_ps();
        for (a, b) in (&mut a_chunks).zip(&mut b_chunks) {
            let product = _mm512_mul_ps(_mm512_loadu_ps(a.as_ptr()), _mm512_loadu_ps(b.as_ptr()));
            acc = _mm512_add_ps(acc, product);
        }
        let tail = a_chunks.remainder().iter().zip(b_chunks.remainder());
        tail.fold(join_lanes(lanes(acc), |a, b| a + b), |s, (x, y)| s + x * y)
    }

    #[inline(always)]
    unsafe fn lanes(v: __m512) -> [f32; LANES] {
        let mut out = [0f32; LANES];
        _mm512_storeu_ps(out.as_mut_ptr(), v);
        out
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::testing::wave;

    #[test]
    fn vectorised_sum_and_dot_give_the_same_bits_as_the_compiled_loops() {
        if !has_avx512() {
            eprintln!("SKIPPED: no AVX-512 on this CPU, so the vectorised reductions never run");
            return;
        }
        for len in [0, 1, 15, 16, 17, 49, 96, 100, 1536] {
            let (a, b) = (wave(len, 0.37), wave(len, 0.71));
            let compiled_sum = fold_lanes(&a, 0.0, |a, v| a + v, |a, b| a + b);
            // SAFETY: checked above that the CPU has AVX-512.
            let (sum, dot) = unsafe { (x86::sum(&a), x86::dot(&a, &b)) };
            assert_eq!(sum.to_bits(), compiled_sum.to_bits(), "sum of {len}");
            assert_eq!(dot.to_bits(), dot_lanes(&a, &b).to_bits(), "dot of {len}");
        }
    }
}
