//! FLatten focused linear attention (Han et al., ICCV 2023), the part between the projections:
//! the focusing function on queries and keys, the normalised linear product per head, and the
//! head-shared depthwise conv on the values. The mathematics and the order of operations follow
//! `linvit_attention::focused` (which follows upstream's `models/flatten_*.py`); see SPEC.md.
//!
//! Two passes, each split over rayon's threads: (1) per chunk of 256 key rows, while it is in
//! cache: the focusing function, then per head `kv = k'^T v / sqrt(n)` (`d x d`, on gemm, the
//! multiply flex runs on) and `mean(k')`, summed over the chunks; (2) per block of 64 query rows,
//! while it is in cache: the focusing function, `q kv / (q . mean(k') + 1e-6)` per head and the
//! depthwise conv read from the neighbouring value rows. Nothing `N x N`; `q` and `k` are read
//! once, `v` twice, the output written once.

use rayon::prelude::*;

use crate::matmul::{product, Operand};
use crate::rows::Rows;
use crate::simd::{dot, join_lanes, multiversion, LANES};

/// The head-shared depthwise conv on the values (`nn.Conv2d(d, d, k, padding=k//2, groups=d)`
/// applied to every head's `[d, H, W]` image), fused only where the values lie on the query grid.
/// A weight of all `C` channels (`d = C`) is the plain depthwise conv agent attention adds.
#[derive(Clone, Copy, Debug)]
pub struct HeadSharedDwc<'a> {
    /// `[d, k, k]` (PyTorch's `[d, 1, k, k]`).
    pub weight: &'a [f32],
    /// `[d]`.
    pub bias: Option<&'a [f32]>,
    /// Odd kernel size `k` (same padding).
    pub kernel: usize,
    /// Query grid `[H, W]`; the values must be its `H*W` tokens, row-major.
    pub grid: [usize; 2],
}

/// Focused linear attention on token rows; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct FocusedAttention<'a> {
    pub heads: usize,
    /// Power p of the focusing function.
    pub power: u32,
    /// `softplus(scale)` per channel, `[C]`.
    pub softplus_scale: &'a [f32],
    /// Added to each batch's keys before the focusing function (FLatten's positional encoding,
    /// zeros for prefix tokens), `[n, C]`.
    pub key_offset: &'a [f32],
    pub dwc: Option<HeadSharedDwc<'a>>,
}

impl FocusedAttention<'_> {
    /// Queries `[B * N, C]`, keys and values `[B * n, C]` -> `[B * N, C]` (heads merged,
    /// head-major channels). The rows are read in place (views of one `qkv` buffer, say).
    ///
    /// # Panics
    /// On row counts and widths that disagree with `batch`, the channel count or the grid (a
    /// caller bug, not a user input).
    pub fn forward(&self, batch: usize, q: Rows, k: Rows, v: Rows) -> Vec<f32> {
        let c = self.softplus_scale.len();
        let inv_sp: Vec<f32> = self.softplus_scale.iter().map(|s| 1.0 / s).collect();
        let heads = self.heads;
        let d = c / heads;
        assert!(d * heads == c && batch > 0 && q.rows().is_multiple_of(batch));
        assert!(q.width() == c && k.width() == c && v.width() == c);
        let n_q = q.rows() / batch;
        let n_k = k.rows() / batch;
        assert!(
            n_k > 0
                && k.rows() == v.rows()
                && k.rows().is_multiple_of(batch)
                && self.key_offset.len() == n_k * c
        );
        let taps = self.dwc.map(|dwc| dwc.spread(c));
        if let Some(dwc) = &self.dwc {
            assert!(dwc.grid[0] * dwc.grid[1] == n_q && n_q == n_k);
        }

        let key_scale = (n_k as f32).powf(-0.5);
        let sums = self.key_sums(batch, k, v, &inv_sp, key_scale);

        // Blocks of query rows, each finished in a small buffer while it is in cache (focusing
        // function, the product per head, the division, the conv), then written out once.
        let mut out = Vec::with_capacity(q.rows() * c);
        out.spare_capacity_mut()
            .par_chunks_mut(n_q * c)
            .enumerate()
            .for_each(|(b, out)| {
                let sums = &sums[b * heads..(b + 1) * heads];
                out.par_chunks_mut(QUERY_BLOCK * c)
                    .enumerate()
                    .for_each(|(block, out)| {
                        let rows = out.len() / c;
                        let first = b * n_q + block * QUERY_BLOCK;
                        let mut focused = vec![0f32; rows * c];
                        for (i, f) in focused.chunks_exact_mut(c).enumerate() {
                            let q = q.row(first + i);
                            focus_row(f, q, &inv_sp, None, self.power, 1.0);
                        }
                        let mut block_out = vec![0f32; rows * c];
                        for (h, sums) in sums.iter().enumerate() {
                            let (kv, mean) = sums.split_at(d * d);
                            let (q, out) = (&focused[h * d..], &mut block_out[h * d..]);
                            product(
                                out,
                                [c, 1],
                                Operand(q, [c, 1]),
                                Operand(kv, [d, 1]),
                                [rows, d, d],
                                false,
                                1.0,
                            );
                            divide_by_denominators(out, q, mean, c);
                        }
                        if let (Some(dwc), Some(taps)) = (&self.dwc, &taps) {
                            let image = v.from(b * n_k, 0);
                            let first = block * QUERY_BLOCK;
                            dwc.add_to_tokens(&mut block_out, image, v.stride(), taps, first);
                        }
                        for (o, x) in out.iter_mut().zip(block_out) {
                            o.write(x);
                        }
                    });
            });
        // SAFETY: the blocks above cover all `q.rows() * c` elements of the spare capacity and
        // each writes every element of its block.
        unsafe { out.set_len(q.rows() * c) };
        out
    }

    /// Per batch and head, `kv = s k_h'^T v_h` (`d x d`, row-major) followed by `mean = s k_h'^T
    /// 1` (`d`), `k'` the focused keys and `s = key_scale`: `[batch * heads][d * d + d]`.
    ///
    /// The keys are focused a chunk of rows at a time into a buffer that stays in cache, and
    /// each chunk's sums are added up per batch in chunk order (so the result does not depend on
    /// the thread count). Writing the focused keys out whole and reading them back cost a third
    /// of the kernel's memory traffic.
    fn key_sums(
        &self,
        batch: usize,
        k: Rows,
        v: Rows,
        inv_sp: &[f32],
        key_scale: f32,
    ) -> Vec<Vec<f32>> {
        let (c, heads) = (k.width(), self.heads);
        let d = c / heads;
        let n_k = k.rows() / batch;
        let chunks = n_k.div_ceil(KEY_CHUNK);
        let partial: Vec<Vec<f32>> = (0..batch * chunks)
            .into_par_iter()
            .map(|task| {
                let (b, start) = (task / chunks, (task % chunks) * KEY_CHUNK);
                let rows = KEY_CHUNK.min(n_k - start);
                let mut focused = vec![0f32; rows * c];
                let mut column_sums = vec![0f32; c];
                for (i, f) in focused.chunks_exact_mut(c).enumerate() {
                    let offset = &self.key_offset[(start + i) * c..][..c];
                    let k = k.row(b * n_k + start + i);
                    focus_row(f, k, inv_sp, Some(offset), self.power, key_scale);
                    add_to(&mut column_sums, f);
                }
                let mut sums = vec![0f32; heads * (d * d + d)];
                for (h, sums) in sums.chunks_exact_mut(d * d + d).enumerate() {
                    let (kv, mean) = sums.split_at_mut(d * d);
                    product(
                        kv,
                        [d, 1],
                        Operand(&focused[h * d..], [1, c]),
                        v.operand(b * n_k + start, h * d),
                        [d, d, rows],
                        false,
                        key_scale,
                    );
                    for (m, s) in mean.iter_mut().zip(&column_sums[h * d..]) {
                        *m = s * key_scale;
                    }
                }
                sums
            })
            .collect();
        partial
            .chunks(chunks)
            .flat_map(|chunks| {
                let mut total = chunks[0].clone();
                for chunk in &chunks[1..] {
                    add_to(&mut total, chunk);
                }
                total
                    .chunks_exact(d * d + d)
                    .map(<[f32]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Key rows per task of the first pass: a `[256, C]` chunk of focused keys stays in L2.
const KEY_CHUNK: usize = 256;

multiversion! {
    /// `acc += x` element-wise.
    fn add_to(acc: &mut [f32], x: &[f32]) {
        acc.iter_mut().zip(x).for_each(|(a, x)| *a += x);
    }
}

/// Query rows per task of the last pass: `[64, C]` blocks stay in L1/L2 while they are worked.
const QUERY_BLOCK: usize = 64;

multiversion! {
    /// FLatten's kernel on one `c`-channel row: `(relu(x + offset) + 1e-6) / softplus(scale)`
    /// (times `1 / softplus(scale)`, given as `inv_sp`: a division per element cost a fifth of
    /// the kernel), then the focusing function `x^p * ||x|| / ||x^p|| * times`, written to `x`
    /// from `input`. Where `||x^p||^2` underflows or overflows in f32 it is computed on
    /// `y = x / max(x)` instead, the same number and finite for every `p` (as
    /// `linvit_attention::focused::focus` explains).
    pub(crate) fn focus_row(
        x: &mut [f32],
        input: &[f32],
        inv_sp: &[f32],
        off: Option<&[f32]>,
        p: u32,
        times: f32,
    ) {
        // One pass for the kernel, the power and both squared norms, one for the scale; the
        // power is picked outside the loop so each exponent gets its own vector loop.
        let norms = |inv_peak: f32, x: &mut [f32]| match p {
            1 => kernel_and_norms(x, input, inv_sp, off, inv_peak, power::<1>),
            2 => kernel_and_norms(x, input, inv_sp, off, inv_peak, power::<2>),
            3 => kernel_and_norms(x, input, inv_sp, off, inv_peak, power::<3>),
            4 => kernel_and_norms(x, input, inv_sp, off, inv_peak, power::<4>),
            _ => kernel_and_norms(x, input, inv_sp, off, inv_peak, |v| powi(v, p)),
        };
        // The power of the kernel itself where its norm is a normal float (x * 1.0 is exact, so
        // these rows get the literal formula's bits); the pass over the row for its maximum
        // only where the norm underflowed or overflowed. Scaling every row, in either of two
        // layouts, cost 20% of focused attention's forward (experiments/bench/focusing_stable).
        let (mut norm2, mut power_norm2) = norms(1.0, x);
        if !power_norm2.is_normal() {
            (norm2, power_norm2) = norms(1.0 / kernel_peak(input, inv_sp, off), x);
        }
        let factor = norm2.sqrt() / power_norm2.sqrt() * times;
        x.iter_mut().for_each(|v| *v *= factor);
    }
}

/// The largest kernel value of a row, `max((relu(input + off) + 1e-6) * inv_sp)` (> 0), in
/// [`LANES`] partial maxima (so the loop vectorises), then the rest one by one.
#[inline(always)]
fn kernel_peak(input: &[f32], inv_sp: &[f32], off: Option<&[f32]>) -> f32 {
    let c = input.len();
    assert!(inv_sp.len() == c && off.is_none_or(|o| o.len() == c));
    let kernel = |i: f32, o: f32, s: f32| ((i + o).max(0.0) + 1e-6) * s;
    let mut peak = [0f32; LANES];
    let full = c - c % LANES;
    for start in (0..full).step_by(LANES) {
        let group = start..start + LANES;
        let is: &[f32; LANES] = input[group.clone()].try_into().unwrap();
        let ss: &[f32; LANES] = inv_sp[group.clone()].try_into().unwrap();
        let os: [f32; LANES] = off.map_or([0.0; LANES], |o| o[group].try_into().unwrap());
        for l in 0..LANES {
            peak[l] = peak[l].max(kernel(is[l], os[l], ss[l]));
        }
    }
    let mut peak = join_lanes(peak, f32::max);
    for i in full..c {
        peak = peak.max(kernel(input[i], off.map_or(0.0, |o| o[i]), inv_sp[i]));
    }
    peak
}

/// Writes `power(kernel(input) * inv_peak)` to `x` and returns `(||kernel||^2,
/// ||power(kernel * inv_peak)||^2)`, the sums kept in [`LANES`] partial sums over whole groups
/// of lanes (fixed-size arrays, so the loop vectorises), then the rest one by one.
#[inline(always)]
fn kernel_and_norms(
    x: &mut [f32],
    input: &[f32],
    inv_sp: &[f32],
    off: Option<&[f32]>,
    inv_peak: f32,
    power: impl Fn(f32) -> f32,
) -> (f32, f32) {
    let c = x.len();
    assert!(input.len() == c && inv_sp.len() == c && off.is_none_or(|o| o.len() == c));
    // The kernel and its scaled power at one element: (kernel^2, power^2, power).
    let element = |i: f32, o: f32, s: f32| {
        let v = ((i + o).max(0.0) + 1e-6) * s;
        let pv = power(v * inv_peak);
        (v * v, pv * pv, pv)
    };
    let (mut n2, mut np2) = ([0f32; LANES], [0f32; LANES]);
    let full = c - c % LANES;
    for start in (0..full).step_by(LANES) {
        let group = start..start + LANES;
        let xs: &mut [f32; LANES] = (&mut x[group.clone()]).try_into().unwrap();
        let is: &[f32; LANES] = input[group.clone()].try_into().unwrap();
        let ss: &[f32; LANES] = inv_sp[group.clone()].try_into().unwrap();
        let os: [f32; LANES] = off.map_or([0.0; LANES], |o| o[group].try_into().unwrap());
        for l in 0..LANES {
            let (v2, pv2, pv) = element(is[l], os[l], ss[l]);
            n2[l] += v2;
            np2[l] += pv2;
            xs[l] = pv;
        }
    }
    let (mut n2, mut np2) = (join_lanes(n2, |a, b| a + b), join_lanes(np2, |a, b| a + b));
    for i in full..c {
        let (v2, pv2, pv) = element(input[i], off.map_or(0.0, |o| o[i]), inv_sp[i]);
        n2 += v2;
        np2 += pv2;
        x[i] = pv;
    }
    (n2, np2)
}

/// `x^P` for the common exponents, rounded as [`powi`] (and as
/// `linvit_attention::focused::powi_by_mul`), written so each vectorises.
#[inline(always)]
pub(crate) fn power<const P: u32>(v: f32) -> f32 {
    match P {
        1 => v,
        2 => v * v,
        3 => v * v * v,
        4 => {
            let s = v * v;
            s * s
        }
        _ => powi(v, P),
    }
}

pub(crate) fn powi(x: f32, p: u32) -> f32 {
    match p {
        0 => 1.0,
        1 => x,
        2 => x * x,
        _ => {
            let half = powi(x, p / 2);
            let half = half * half;
            if p % 2 == 1 {
                half * x
            } else {
                half
            }
        }
    }
}

multiversion! {
    /// One head's block of numerators `out` (rows `c` apart, `d` wide) divided by its
    /// denominators `q . mean + 1e-6`, `q` the focused queries laid out like `out`.
    fn divide_by_denominators(out: &mut [f32], q: &[f32], mean: &[f32], c: usize) {
        let d = mean.len();
        for (out, q) in out.chunks_mut(c).zip(q.chunks(c)) {
            let inv = 1.0 / (dot(&q[..d], mean) + 1e-6);
            out[..d].iter_mut().for_each(|x| *x *= inv);
        }
    }
}

impl HeadSharedDwc<'_> {
    /// The weights spread over all `c` channels (channel `ch` uses the head dim's kernel
    /// `ch % d`), one `[c]` row per tap, and the bias likewise `[c]`: the inner loop then runs
    /// over contiguous channels.
    pub(crate) fn spread(&self, c: usize) -> Spread {
        let k = self.kernel;
        let d = self.weight.len() / (k * k);
        assert!(k % 2 == 1 && c.is_multiple_of(d));
        Spread {
            taps: (0..k * k)
                .flat_map(|tap| (0..c).map(move |ch| self.weight[(ch % d) * k * k + tap]))
                .collect(),
            bias: (0..c)
                .map(|ch| self.bias.map_or(0.0, |b| b[ch % d]))
                .collect(),
        }
    }

    /// Adds the conv's output at tokens `first..` (row-major on the grid) to `out` (`[rows,
    /// C]`), reading the values' image `[H*W, C]` from `image`, its rows `stride` apart.
    pub(crate) fn add_to_tokens(
        &self,
        out: &mut [f32],
        image: &[f32],
        stride: usize,
        spread: &Spread,
        first: usize,
    ) {
        dwc_tokens(
            out,
            image,
            stride,
            &spread.taps,
            &spread.bias,
            self.grid,
            self.kernel,
            first,
        )
    }
}

/// [`HeadSharedDwc`]'s weights `[k*k, C]` and bias `[C]` over all channels.
pub(crate) struct Spread {
    taps: Vec<f32>,
    bias: Vec<f32>,
}

multiversion! {
    fn dwc_tokens(
        out: &mut [f32],
        image: &[f32],
        stride: usize,
        taps: &[f32],
        bias: &[f32],
        grid: [usize; 2],
        k: usize,
        first: usize,
    ) {
        let [h, w] = grid;
        let c = bias.len();
        let r = k / 2;
        // (source row, tap row) of every tap, the source counted from the first row of the
        // token's neighbourhood: the taps of every token whose neighbourhood is inside the grid.
        let inner: Vec<(usize, usize)> = (0..k * k)
            .map(|t| (((t / k) * w + t % k) * stride, t * c))
            .collect();
        let mut border = Vec::with_capacity(k * k);
        #[cfg(target_arch = "x86_64")]
        let vectors = crate::simd::has_avx512();
        for (i, acc) in out.chunks_exact_mut(c).enumerate() {
            let (y, x) = ((first + i) / w, (first + i) % w);
            let (start, offsets) = if y >= r && y + r < h && x >= r && x + r < w {
                (((y - r) * w + x - r) * stride, &inner[..])
            } else {
                // Near the border, only the taps that land inside the grid, in tap order.
                border.clear();
                for dy in r.saturating_sub(y)..k.min(h + r - y) {
                    for dx in r.saturating_sub(x)..k.min(w + r - x) {
                        let source = ((y + dy - r) * w + x + dx - r) * stride;
                        border.push((source, (dy * k + dx) * c));
                    }
                }
                (0, &border[..])
            };
            let image = &image[start..];
            #[cfg(target_arch = "x86_64")]
            if vectors {
                // SAFETY: the CPU has AVX-512 (`vectors`).
                unsafe { x86::conv_token(acc, bias, image, taps, offsets) };
                continue;
            }
            conv_token(acc, bias, image, taps, offsets);
        }
    }
}

/// Adds one token's conv output to `acc` (all its channels): in groups of channels whose sums
/// stay in registers across the taps, 64 wide (four independent add chains), then 16, then
/// one at a time.
#[inline(always)]
fn conv_token(
    acc: &mut [f32],
    bias: &[f32],
    image: &[f32],
    taps: &[f32],
    offsets: &[(usize, usize)],
) {
    let c = acc.len();
    let mut ch = 0;
    while ch + 64 <= c {
        conv_channels::<64>(acc, ch, bias, image, taps, offsets);
        ch += 64;
    }
    while ch + LANES <= c {
        conv_channels::<LANES>(acc, ch, bias, image, taps, offsets);
        ch += LANES;
    }
    for ch in ch..c {
        conv_channels::<1>(acc, ch, bias, image, taps, offsets);
    }
}

/// Adds one token's conv output on channels `ch..ch + N` to `acc`: the bias plus each tap
/// `(source, tap)` of `offsets` in order (every channel group rounds alike).
#[inline(always)]
fn conv_channels<const N: usize>(
    acc: &mut [f32],
    ch: usize,
    bias: &[f32],
    image: &[f32],
    taps: &[f32],
    offsets: &[(usize, usize)],
) {
    let mut sum: [f32; N] = bias[ch..ch + N].try_into().unwrap();
    for &(source, tap) in offsets {
        let src = &image[source + ch..][..N];
        let tap = &taps[tap + ch..][..N];
        for j in 0..N {
            sum[j] += tap[j] * src[j];
        }
    }
    for j in 0..N {
        acc[ch + j] += sum[j];
    }
}

/// The depthwise conv's sums written with AVX-512 intrinsics. Why: in the compiled loops of
/// [`conv_token`], LLVM kept one vector of sums in memory, a store and a reload on the add chain
/// at every tap; here each group's sums are registers, up to 128 channels (8 vectors) at once,
/// which made the whole focused kernel 15-20% faster at Swin-T's first stage and 7-9% at
/// its second (experiments/bench/README.md). Same arithmetic in the same order, so the same bits.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::conv_token`] on AVX-512.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn conv_token(
        acc: &mut [f32],
        bias: &[f32],
        image: &[f32],
        taps: &[f32],
        offsets: &[(usize, usize)],
    ) {
        let c = acc.len();
        let mut ch = 0;
        while ch + 16 <= c {
            let vectors = ((c - ch) / 16).min(8);
            match vectors {
                8 => conv_vectors::<8>(acc, ch, bias, image, taps, offsets),
                7 => conv_vectors::<7>(acc, ch, bias, image, taps, offsets),
                6 => conv_vectors::<6>(acc, ch, bias, image, taps, offsets),
                5 => conv_vectors::<5>(acc, ch, bias, image, taps, offsets),
                4 => conv_vectors::<4>(acc, ch, bias, image, taps, offsets),
                3 => conv_vectors::<3>(acc, ch, bias, image, taps, offsets),
                2 => conv_vectors::<2>(acc, ch, bias, image, taps, offsets),
                _ => conv_vectors::<1>(acc, ch, bias, image, taps, offsets),
            }
            ch += 16 * vectors;
        }
        for ch in ch..c {
            super::conv_channels::<1>(acc, ch, bias, image, taps, offsets);
        }
    }

    /// [`super::conv_channels`] on `V` whole vectors of channels from `ch`: the bias, then
    /// per tap a multiply and an add, as there.
    #[inline(always)]
    unsafe fn conv_vectors<const V: usize>(
        acc: &mut [f32],
        ch: usize,
        bias: &[f32],
        image: &[f32],
        taps: &[f32],
        offsets: &[(usize, usize)],
    ) {
        let width = 16 * V;
        let (acc, bias) = (&mut acc[ch..][..width], &bias[ch..][..width]);
        let mut sum: [__m512; V] =
            std::array::from_fn(|v| _mm512_loadu_ps(bias[16 * v..].as_ptr()));
        for &(source, tap) in offsets {
            let (src, tap) = (&image[source + ch..][..width], &taps[tap + ch..][..width]);
            for (v, sum) in sum.iter_mut().enumerate() {
                let t = _mm512_loadu_ps(tap[16 * v..].as_ptr());
                let x = _mm512_loadu_ps(src[16 * v..].as_ptr());
                *sum = _mm512_add_ps(*sum, _mm512_mul_ps(t, x));
            }
        }
        for (v, &sum) in sum.iter().enumerate() {
            let a = acc[16 * v..].as_mut_ptr();
            _mm512_storeu_ps(a, _mm512_add_ps(_mm512_loadu_ps(a), sum));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_round_as_repeated_squaring() {
        for &x in &[0.3f32, 1.7, 2.5e-3] {
            for (p, got) in [power::<1>, power::<2>, power::<3>, power::<4>]
                .iter()
                .enumerate()
            {
                assert_eq!(got(x), powi(x, p as u32 + 1), "x={x} p={}", p + 1);
            }
            assert_eq!(powi(x, 3), (x * x) * x);
        }
    }

    /// The focusing function in f64, scaled by the row's maximum first so that the reference
    /// itself cannot underflow (`x^p / ||x^p||` does not change under scaling).
    fn focus_f64(input: &[f32], inv_sp: &[f32], p: i32) -> Vec<f64> {
        let x: Vec<f64> = input
            .iter()
            .zip(inv_sp)
            .map(|(&i, &s)| (f64::from(i).max(0.0) + 1e-6) * f64::from(s))
            .collect();
        let peak = x.iter().cloned().fold(0.0, f64::max);
        let y: Vec<f64> = x.iter().map(|v| (v / peak).powi(p)).collect();
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let y_norm = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        y.iter().map(|v| v * norm / y_norm).collect()
    }

    #[test]
    fn the_focusing_function_is_finite_and_exact_for_any_power_even_on_relu_zeroed_rows() {
        let c = 37; // whole lane groups and a tail
        let inv_sp: Vec<f32> = (0..c).map(|i| 0.5 + 0.03 * i as f32).collect();
        let ordinary: Vec<f32> = (0..c).map(|i| ((i * 7 % 11) as f32 - 4.0) * 0.3).collect();
        let zeroed: Vec<f32> = (0..c).map(|i| -0.1 - 0.01 * i as f32).collect();
        for p in [1u32, 2, 3, 4, 5, 8, 16, 32] {
            for (what, input) in [("ordinary", &ordinary), ("relu-zeroed", &zeroed)] {
                let mut got = vec![0f32; c];
                focus_row(&mut got, input, &inv_sp, None, p, 1.0);
                let want = focus_f64(input, &inv_sp, p as i32);
                let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
                for (g, w) in got.iter().zip(&want) {
                    assert!(g.is_finite(), "p {p} {what}: {g}");
                    let err = (f64::from(*g) - w).abs() / scale;
                    assert!(err < 1e-6, "p {p} {what}: {g} vs {w}");
                }
            }
        }
    }

    /// The AVX-512 conv against the compiled loops, bit for bit: widths of whole groups of 8
    /// vectors, fewer, and a tail of single channels.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vectorised_conv_gives_the_same_bits_as_the_compiled_loops() {
        if !crate::simd::has_avx512() {
            eprintln!("SKIPPED: no AVX-512 on this CPU, so the vectorised conv never runs");
            return;
        }
        use crate::testing::wave;
        for c in [16, 40, 96, 200, 272] {
            let (image, taps, bias) = (wave(30 * c, 0.37), wave(25 * c, 0.71), wave(c, 1.3));
            let offsets: Vec<(usize, usize)> = (0..25).map(|t| ((t * 7 % 30) * c, t * c)).collect();
            let start = wave(c, 0.13);
            let (mut compiled, mut vectorised) = (start.clone(), start);
            conv_token(&mut compiled, &bias, &image, &taps, &offsets);
            // SAFETY: checked above that the CPU has AVX-512.
            unsafe { x86::conv_token(&mut vectorised, &bias, &image, &taps, &offsets) };
            assert_eq!(compiled, vectorised, "{c} channels");
        }
    }

    #[test]
    fn depthwise_conv_of_a_single_one_reproduces_the_flipped_kernel() {
        // One head of 1 channel on a 3x3 grid, a 1 at the centre: the output at (y, x) is the
        // tap that reads the centre, w[1 - (y - 1)][1 - (x - 1)] = w[2 - y][2 - x].
        let weight: Vec<f32> = (1..=9).map(|i| i as f32).collect();
        let dwc = HeadSharedDwc {
            weight: &weight,
            bias: Some(&[0.5]),
            kernel: 3,
            grid: [3, 3],
        };
        let mut v = vec![0f32; 9];
        v[4] = 1.0;
        let mut out = vec![0f32; 9];
        dwc.add_to_tokens(&mut out, &v, 1, &dwc.spread(1), 0);
        for y in 0..3 {
            for x in 0..3 {
                assert_eq!(out[y * 3 + x], weight[(2 - y) * 3 + (2 - x)] + 0.5);
            }
        }
    }

    #[test]
    fn uniform_keys_give_the_mean_of_the_values() {
        // All keys equal: every query attends uniformly, so the output is mean(v) per head
        // (up to the 1e-6 in the denominator).
        let (b, n, c, heads) = (1, 5, 4, 2);
        let sp = vec![1.0f32; c];
        let offset = vec![0f32; n * c];
        let attention = FocusedAttention {
            heads,
            power: 3,
            softplus_scale: &sp,
            key_offset: &offset,
            dwc: None,
        };
        let q: Vec<f32> = (0..n * c).map(|i| (i % 7) as f32 * 0.1 + 0.2).collect();
        let k = vec![0.5f32; n * c];
        let v: Vec<f32> = (0..n * c).map(|i| i as f32).collect();
        let out = attention.forward(
            b,
            Rows::dense(&q, c),
            Rows::dense(&k, c),
            Rows::dense(&v, c),
        );
        for ch in 0..c {
            let mean = (0..n).map(|t| v[t * c + ch]).sum::<f32>() / n as f32;
            for t in 0..n {
                let got = out[t * c + ch];
                assert!(
                    (got - mean).abs() < 1e-4 * mean.abs().max(1.0),
                    "{got} vs {mean}"
                );
            }
        }
    }
}
