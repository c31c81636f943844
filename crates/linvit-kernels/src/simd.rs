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

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && has_avx2_fma()
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}
