//! Depthwise 2-D convolution with same padding and stride 1 (`nn.Conv2d(c, c, k, padding=k//2,
//! groups=c)`) on `[planes, H, W]` images, forward and backward, for training on flex.
//!
//! Why: flex runs a depthwise conv through its general convolution, and differentiates it with
//! a transposed convolution for the input and a grouped weight-gradient convolution; both walk
//! the image once per tap in scalar loops (together a tenth of a FLatten-PVT-T training step).
//! Here each tap is one contiguous multiply-add over a zero-padded copy of the plane (see
//! [`Padded`]), which vectorises, and the planes are spread over all cores.
//!
//! Plane `p` uses channel `p % channels`' kernel: `[B, C, H, W]` is `B * C` planes of `C`
//! channels, and FLatten's head-shared conv on `[B * heads, d, H, W]` is `B * heads * d` planes
//! of `d` channels.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::simd::multiversion;

/// The shape of one depthwise convolution; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Depthwise {
    /// Images times channels.
    pub planes: usize,
    /// Distinct kernels; `planes` is a multiple of it.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Odd kernel side `k` (padding `k / 2`).
    pub kernel: usize,
}

/// The gradients [`Depthwise::backward`] computes.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthwiseGrads {
    /// `[planes, H, W]`.
    pub input: Vec<f32>,
    /// `[channels, k, k]`.
    pub weight: Vec<f32>,
    /// `[channels]`.
    pub bias: Vec<f32>,
}

impl Depthwise {
    fn check(&self, x: &[f32], weight: &[f32]) {
        let Depthwise {
            planes,
            channels,
            height,
            width,
            kernel,
        } = *self;
        assert!(kernel % 2 == 1, "depthwise conv: even kernel {kernel}");
        assert!(channels > 0 && planes.is_multiple_of(channels));
        assert_eq!(
            x.len(),
            planes * height * width,
            "depthwise conv: input size"
        );
        assert_eq!(
            weight.len(),
            channels * kernel * kernel,
            "depthwise conv: weight size"
        );
    }

    fn plane(&self) -> usize {
        self.height * self.width
    }

    fn padded(&self) -> Padded {
        Padded {
            height: self.height,
            width: self.width,
            kernel: self.kernel,
        }
    }

    /// The convolution of `x` `[planes, H, W]` with `weight` `[channels, k, k]` plus `bias`
    /// `[channels]`.
    pub fn forward(&self, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        self.check(x, weight);
        assert_eq!(bias.len(), self.channels, "depthwise conv: bias size");
        let (plane, taps, pad) = (self.plane(), self.kernel * self.kernel, self.padded());
        let mut out = Vec::with_capacity(x.len());
        out.spare_capacity_mut()
            .par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each_init(
                || (pad.buffer(), vec![0f32; pad.outputs()]),
                |(src, sums), (p, (out, x))| {
                    let ch = p % self.channels;
                    pad.fill(src, x);
                    sums.fill(bias[ch]);
                    correlate(sums, src, &weight[ch * taps..][..taps], pad);
                    pad.extract(out, sums);
                },
            );
        // SAFETY: the planes cover all `x.len()` elements, and `extract` wrote every one.
        unsafe { out.set_len(x.len()) };
        out
    }

    /// The gradients of `sum(forward(x) * grad)` with respect to the input, the weight and
    /// the bias.
    pub fn backward(&self, x: &[f32], weight: &[f32], grad: &[f32]) -> DepthwiseGrads {
        self.check(x, weight);
        assert_eq!(grad.len(), x.len(), "depthwise conv: gradient size");
        let (plane, taps, pad) = (self.plane(), self.kernel * self.kernel, self.padded());
        // The input's gradient is the correlation of the output's gradient with the kernel
        // turned by 180 degrees; each plane also yields its share of the weight's and the
        // bias's gradients, summed per channel below in plane order (deterministic).
        let flipped: Vec<f32> = weight
            .chunks(taps)
            .flat_map(|w| w.iter().rev().copied())
            .collect();
        let mut input = Vec::with_capacity(x.len());
        let shares: Vec<(Vec<f32>, f32)> = input
            .spare_capacity_mut()
            .par_chunks_mut(plane)
            .zip(x.par_chunks(plane).zip(grad.par_chunks(plane)))
            .enumerate()
            .map_init(
                || (pad.buffer(), pad.buffer(), vec![0f32; pad.outputs()]),
                |(src, grad_padded, sums), (p, (input, (x, grad)))| {
                    let ch = p % self.channels;
                    pad.fill(src, x);
                    pad.fill(grad_padded, grad);
                    sums.fill(0.0);
                    correlate(sums, grad_padded, &flipped[ch * taps..][..taps], pad);
                    pad.extract(input, sums);
                    let share = weight_share(src, grad_padded, pad);
                    (share, crate::simd::sum(grad))
                },
            )
            .collect();
        // SAFETY: the planes cover all `x.len()` elements, and `extract` wrote every one.
        unsafe { input.set_len(x.len()) };
        let mut weight_grad = vec![0f32; weight.len()];
        let mut bias_grad = vec![0f32; self.channels];
        for (p, (w, b)) in shares.iter().enumerate() {
            let ch = p % self.channels;
            for (acc, v) in weight_grad[ch * taps..][..taps].iter_mut().zip(w) {
                *acc += v;
            }
            bias_grad[ch] += b;
        }
        DepthwiseGrads {
            input,
            weight: weight_grad,
            bias: bias_grad,
        }
    }
}

/// The same convolution on tokens, channels last: `x` is `[images, H * W, C]`, the layout
/// attention's values are in, weight `[kernels, k, k]` and bias `[kernels]`; channel `c` uses
/// kernel `c % kernels`, as plane `p` does in [`Depthwise`] (FLatten's conv, shared by the
/// heads, on merged-head tokens `[B, N, heads * d]` has `d` kernels). A conv
/// between two token tensors then needs no transposes to planes and back: in training each was
/// a copy on one thread, and so was its gradient's (with the add after the conv, ~3% of
/// agent_deit_t's step). A tap is a multiply-add over a run of whole pixels of an image row,
/// `C` contiguous channels each, which vectorises over the channels; each output sums the bias
/// and then its taps in kernel-row order, as [`Depthwise`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseTokens {
    pub images: usize,
    pub height: usize,
    pub width: usize,
    /// Channels `C`, a multiple of `kernels`.
    pub channels: usize,
    /// Distinct kernels.
    pub kernels: usize,
    /// Odd kernel side `k` (padding `k / 2`).
    pub kernel: usize,
}

impl DepthwiseTokens {
    fn check(&self, x: &[f32], weight: &[f32]) {
        let k = self.kernel;
        assert!(k % 2 == 1, "depthwise conv: even kernel {k}");
        assert!(self.kernels > 0 && self.channels.is_multiple_of(self.kernels));
        assert_eq!(
            x.len(),
            self.images * self.height * self.row(),
            "depthwise conv: input size"
        );
        assert_eq!(
            weight.len(),
            self.kernels * k * k,
            "depthwise conv: weight size"
        );
    }

    /// The elements of one image row, `W` pixels of `C`.
    fn row(&self) -> usize {
        self.width * self.channels
    }

    /// `weight` `[kernels, k, k]` as `[k * k, C]` (a tap's weights for every channel
    /// contiguous), each kernel turned by 180 degrees where `flip`.
    fn tap_major(&self, weight: &[f32], flip: bool) -> Vec<f32> {
        let taps = self.kernel * self.kernel;
        let mut out = vec![0f32; taps * self.channels];
        for (t, row) in out.chunks_exact_mut(self.channels).enumerate() {
            let t = if flip { taps - 1 - t } else { t };
            for (c, v) in row.iter_mut().enumerate() {
                *v = weight[c % self.kernels * taps + t];
            }
        }
        out
    }

    /// Per-channel values `[C]` (or `[k * k, C]`) summed per kernel into `[kernels]` (or
    /// `[kernels, k, k]`), channels in order.
    fn per_kernel(&self, values: &[f32], taps: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.kernels * taps];
        for (t, row) in values.chunks_exact(self.channels).enumerate() {
            for (c, v) in row.iter().enumerate() {
                out[c % self.kernels * taps + t] += v;
            }
        }
        out
    }

    /// The convolution of `x` `[images, H * W, C]` with `weight` `[kernels, k, k]` plus `bias`
    /// `[kernels]`.
    pub fn forward(&self, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        self.check(x, weight);
        assert_eq!(bias.len(), self.kernels, "depthwise conv: bias size");
        let start: Vec<f32> = (0..self.channels).map(|c| bias[c % self.kernels]).collect();
        self.correlate(x, &self.tap_major(weight, false), &start)
    }

    /// The gradients of `sum(forward(x) * grad)` with respect to the input, the weight and
    /// the bias.
    pub fn backward(&self, x: &[f32], weight: &[f32], grad: &[f32]) -> DepthwiseGrads {
        self.check(x, weight);
        assert_eq!(grad.len(), x.len(), "depthwise conv: gradient size");
        // The input's gradient is the correlation of the output's gradient with the kernel
        // turned by 180 degrees.
        let zero = vec![0f32; self.channels];
        let input = self.correlate(grad, &self.tap_major(weight, true), &zero);
        // The weight's, `[k * k, C]` per block of image rows, the blocks summed in order (the
        // same bits on any number of threads).
        let (taps, rows) = (self.kernel * self.kernel, self.images * self.height);
        let per_task = crate::rows_per_task(self.row());
        let shares: Vec<Vec<f32>> = (0..rows.div_ceil(per_task))
            .into_par_iter()
            .map(|task| {
                let mut share = vec![0f32; taps * self.channels];
                for r in task * per_task..rows.min((task + 1) * per_task) {
                    weight_row(&mut share, x, grad, *self, r);
                }
                share
            })
            .collect();
        let tap_major = crate::sum_in_order(shares.iter().map(Vec::as_slice), taps * self.channels);
        let bias = crate::linear::column_sums(grad, self.channels);
        DepthwiseGrads {
            input,
            weight: self.per_kernel(&tap_major, taps),
            bias: self.per_kernel(&bias, 1),
        }
    }

    /// `start` (per channel) plus the correlation of `x` with `taps` `[k * k, C]`, an image row
    /// per task.
    fn correlate(&self, x: &[f32], taps: &[f32], start: &[f32]) -> Vec<f32> {
        let row = self.row();
        let mut out = Vec::with_capacity(x.len());
        out.spare_capacity_mut()
            .par_chunks_mut(row)
            .enumerate()
            .for_each_init(
                || vec![0f32; row],
                |sums, (r, out)| {
                    for pixel in sums.chunks_exact_mut(self.channels) {
                        pixel.copy_from_slice(start);
                    }
                    row_taps(sums, x, taps, *self, r);
                    out.write_copy_of_slice(sums);
                },
            );
        // SAFETY: the rows cover all `x.len()` elements, and each task wrote its whole row.
        unsafe { out.set_len(x.len()) };
        out
    }

    /// The taps of output row `r` (of all images' rows) that read inside the image, in
    /// kernel-row order: each tap's index `i * k + j`, the output columns it reaches, and the
    /// pixels of `x` those read, as one run.
    fn row_reads<'a>(
        &self,
        x: &'a [f32],
        r: usize,
    ) -> impl Iterator<Item = (usize, Range<usize>, &'a [f32])> + 'a {
        let (conv, k, c) = (*self, self.kernel, self.channels);
        (0..k)
            .filter_map(move |i| Some((i, conv.source_row(x, r, i)?)))
            .flat_map(move |(i, src)| {
                (0..k).filter_map(move |j| {
                    let (cols, from) = conv.columns(j)?;
                    let run = &src[from * c..][..cols.len() * c];
                    Some((i * k + j, cols, run))
                })
            })
    }

    /// For output column `x` of an image row, tap column `j` reads input column
    /// `x + j - k / 2`: the output columns where that is inside the image, and the first input
    /// column they read.
    fn columns(&self, j: usize) -> Option<(Range<usize>, usize)> {
        let r = self.kernel / 2;
        let first = r.saturating_sub(j);
        let end = (self.width + r).saturating_sub(j).min(self.width);
        (first < end).then(|| (first..end, first + j - r))
    }

    /// The input row tap row `i` of output row `r` (of all images' rows) reads, where it is
    /// inside the image: `x`'s elements of it.
    fn source_row<'a>(&self, x: &'a [f32], r: usize, i: usize) -> Option<&'a [f32]> {
        let (image, y, half) = (r / self.height, r % self.height, self.kernel / 2);
        let y = (y + i).checked_sub(half).filter(|&y| y < self.height)?;
        Some(&x[(image * self.height + y) * self.row()..][..self.row()])
    }
}

multiversion! {
    /// `sums` (output row `r` of all images' rows, `W` pixels of `C`) plus each tap's weights
    /// times the pixels it reads, taps in kernel-row order.
    fn row_taps(sums: &mut [f32], x: &[f32], taps: &[f32], conv: DepthwiseTokens, r: usize) {
        let c = conv.channels;
        for (tap, cols, src) in conv.row_reads(x, r) {
            let t = &taps[tap * c..][..c];
            for (o, s) in sums[cols.start * c..cols.end * c]
                .chunks_exact_mut(c)
                .zip(src.chunks_exact(c))
            {
                for ((o, s), t) in o.iter_mut().zip(s).zip(t) {
                    *o += t * s;
                }
            }
        }
    }
}

multiversion! {
    /// Output row `r`'s share of the weight gradient, added to `share` `[k * k, C]`: tap
    /// `(i, j)` of channel `c` gets the sum over the row of `grad` times the pixel it read.
    fn weight_row(share: &mut [f32], x: &[f32], grad: &[f32], conv: DepthwiseTokens, r: usize) {
        let (c, row) = (conv.channels, conv.row());
        let grad = &grad[r * row..][..row];
        for (tap, cols, src) in conv.row_reads(x, r) {
            let acc = &mut share[tap * c..][..c];
            for (g, s) in grad[cols.start * c..cols.end * c]
                .chunks_exact(c)
                .zip(src.chunks_exact(c))
            {
                for ((a, g), s) in acc.iter_mut().zip(g).zip(s) {
                    *a += g * s;
                }
            }
        }
    }
}

/// The layout the tap loops run in, so that every tap is one multiply-add over one contiguous
/// span, long enough to vectorise even on 7x7 and 14x14 planes (a loop per tap and image row,
/// as before, spent most of its time on the rows' remainders: 9-26 GF/s).
///
/// A padded plane holds the image with `k / 2` zero rows above and below and `k / 2` zero
/// columns either side (rows of `W + k - 1`), then `k - 1` zeros. The sums are kept in rows of
/// the same length: the output `(y, x)` is at `y (W + k - 1) + x`, and tap `(i, j)` of every
/// output reads the padded plane at that index plus `i (W + k - 1) + j`. The `k - 1` columns
/// past `W` in each row of sums are computed and dropped.
#[derive(Clone, Copy, Debug)]
struct Padded {
    height: usize,
    width: usize,
    kernel: usize,
}

impl Padded {
    /// The length of a padded row.
    fn stride(&self) -> usize {
        self.width + self.kernel - 1
    }

    /// Where tap `(i, j)` of output 0 reads the padded plane.
    fn tap(&self, i: usize, j: usize) -> usize {
        i * self.stride() + j
    }

    /// A zeroed padded plane; [`Padded::fill`] writes only the image, so the borders stay zero
    /// when the buffer is reused.
    fn buffer(&self) -> Vec<f32> {
        vec![0f32; (self.height + self.kernel - 1) * self.stride() + self.kernel - 1]
    }

    /// The length of the sums, `H` rows of [`Padded::stride`].
    fn outputs(&self) -> usize {
        self.height * self.stride()
    }

    /// Writes the `[H, W]` image `plane` inside the borders of `padded`.
    fn fill(&self, padded: &mut [f32], plane: &[f32]) {
        let margin = self.kernel / 2;
        for (y, row) in plane.chunks_exact(self.width).enumerate() {
            padded[self.tap(y + margin, margin)..][..self.width].copy_from_slice(row);
        }
    }

    /// Writes the first `W` sums of each row into the `[H, W]` `plane` (every element of it).
    fn extract(&self, plane: &mut [MaybeUninit<f32>], sums: &[f32]) {
        for (row, sums) in plane
            .chunks_exact_mut(self.width)
            .zip(sums.chunks(self.stride()))
        {
            row.write_copy_of_slice(&sums[..self.width]);
        }
    }
}

multiversion! {
    /// `sums[n] += sum over taps (i, j) of taps[i, j] * padded[n + pad.tap(i, j)]` (the
    /// [`Padded`] layout): each output's taps in kernel-row order, the order the definition
    /// sums them in. The sums go through the taps a block at a time, held in registers (a pass
    /// over all the sums per tap was bound by their loads and stores).
    fn correlate(sums: &mut [f32], padded: &[f32], taps: &[f32], pad: Padded) {
        let start = sums.len() - sums.len() % BLOCK;
        let mut blocks = sums.chunks_exact_mut(BLOCK);
        for (b, block) in (&mut blocks).enumerate() {
            let mut acc: [f32; BLOCK] = (&*block).try_into().expect("a full block");
            add_taps(&mut acc, &padded[b * BLOCK..], taps, pad);
            block.copy_from_slice(&acc);
        }
        add_taps(blocks.into_remainder(), &padded[start..], taps, pad);
    }
}

/// Sums [`correlate`] carries through all taps at once: four AVX-512 registers (eight AVX2).
const BLOCK: usize = 64;

/// [`correlate`] on the sums `acc`, whose output 0 reads `padded[0]` for tap `(0, 0)`.
#[inline(always)]
fn add_taps(acc: &mut [f32], padded: &[f32], taps: &[f32], pad: Padded) {
    let len = acc.len();
    for i in 0..pad.kernel {
        for j in 0..pad.kernel {
            let t = taps[i * pad.kernel + j];
            for (a, s) in acc.iter_mut().zip(&padded[pad.tap(i, j)..][..len]) {
                *a += t * s;
            }
        }
    }
}

multiversion! {
    /// One plane's share of the weight gradient, `[k, k]`: tap `(i, j)` gets
    /// `sum over (y, x) of grad[y, x] * src[y + i - k/2, x + j - k/2]`, from both planes
    /// padded ([`Padded`]). The gradient read from its padded plane from its first image
    /// element on is in the sums' layout, and the columns past `W` it yields are borders, so
    /// zero: each tap is one dot product.
    fn weight_share(src: &[f32], grad: &[f32], pad: Padded) -> Vec<f32> {
        let (k, outputs) = (pad.kernel, pad.outputs());
        let grad = &grad[pad.tap(k / 2, k / 2)..][..outputs];
        let mut share = vec![0f32; k * k];
        for i in 0..k {
            for j in 0..k {
                share[i * k + j] = crate::simd::dot(grad, &src[pad.tap(i, j)..][..outputs]);
            }
        }
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wave;

    /// The convolution written out in f64, straight from its definition.
    fn forward_f64(d: &Depthwise, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f64> {
        let (h, w, k) = (d.height, d.width, d.kernel);
        let pad = (k / 2) as isize;
        let mut out = vec![0f64; x.len()];
        for p in 0..d.planes {
            let ch = p % d.channels;
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = bias[ch] as f64;
                    for i in 0..k {
                        for j in 0..k {
                            let (sy, sx) = (
                                y as isize + i as isize - pad,
                                xx as isize + j as isize - pad,
                            );
                            if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                                acc += weight[(ch * k + i) * k + j] as f64
                                    * x[(p * h + sy as usize) * w + sx as usize] as f64;
                            }
                        }
                    }
                    out[(p * h + y) * w + xx] = acc;
                }
            }
        }
        out
    }

    /// `[images, H * W, C]` tokens as `[images * C, H, W]` planes, and back.
    fn planes(t: &DepthwiseTokens, x: &[f32], to_planes: bool) -> Vec<f32> {
        let (hw, c) = (t.height * t.width, t.channels);
        let mut out = vec![0f32; x.len()];
        for b in 0..t.images {
            for p in 0..hw {
                for ch in 0..c {
                    let (tok, plane) = ((b * hw + p) * c + ch, (b * c + ch) * hw + p);
                    match to_planes {
                        true => out[plane] = x[tok],
                        false => out[tok] = x[plane],
                    }
                }
            }
        }
        out
    }

    /// The tokens kernel against the planar one (checked against the definition below), on
    /// the same values transposed: output and every gradient. Odd sizes: 3 channels, rows
    /// narrower than the kernel, a 1x1 image, kernels 3, 5 and 7; 4 kernels shared by 3 heads
    /// (12 channels) and 16 by 2.
    #[test]
    fn tokens_match_planes() {
        for (images, height, width, channels, kernels, kernel) in [
            (2, 5, 7, 3, 3, 3),
            (3, 4, 2, 16, 16, 5),
            (1, 1, 1, 5, 5, 3),
            (2, 9, 6, 19, 19, 7),
            (2, 5, 4, 12, 4, 5),
            (1, 3, 7, 32, 16, 3),
        ] {
            let t = DepthwiseTokens {
                images,
                height,
                width,
                channels,
                kernels,
                kernel,
            };
            let d = Depthwise {
                planes: images * channels,
                channels: kernels,
                height,
                width,
                kernel,
            };
            let label = format!("{t:?}");
            let x = wave(images * height * width * channels, 0.37);
            let weight = wave(kernels * kernel * kernel, 1.3);
            let bias = wave(kernels, 0.9);
            let g = wave(x.len(), 0.71);
            let wide = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
            let out = d.forward(&planes(&t, &x, true), &weight, &bias);
            let ours = t.forward(&x, &weight, &bias);
            assert!(
                max_err(&ours, &wide(&planes(&t, &out, false))) < 1e-6,
                "{label}"
            );
            let want = d.backward(&planes(&t, &x, true), &weight, &planes(&t, &g, true));
            let got = t.backward(&x, &weight, &g);
            let input = planes(&t, &want.input, false);
            assert!(max_err(&got.input, &wide(&input)) < 1e-6, "{label}: input");
            // The weight's gradient straight from its definition in f64. Each tap sums all of
            // an image's pixels (108 at 9x6), in order here and per plane in the planar kernel:
            // 1.4e-6 and 0.8e-6 of the largest at 7x7, hence the looser bound here and
            // for the bias's.
            let (r, hw) = (kernel as isize / 2, height * width);
            let mut weight_grad = vec![0f64; weight.len()];
            for (e, w) in weight_grad.iter_mut().enumerate() {
                let (kc, i, j) = (e / (kernel * kernel), e / kernel % kernel, e % kernel);
                for (b, ch) in
                    (0..images).flat_map(|b| (kc..channels).step_by(kernels).map(move |c| (b, c)))
                {
                    for p in 0..hw {
                        let sy = (p / width) as isize + i as isize - r;
                        let sx = (p % width) as isize + j as isize - r;
                        if (0..height as isize).contains(&sy) && (0..width as isize).contains(&sx) {
                            let src = b * hw + sy as usize * width + sx as usize;
                            *w += g[(b * hw + p) * channels + ch] as f64
                                * x[src * channels + ch] as f64;
                        }
                    }
                }
            }
            assert!(max_err(&got.weight, &weight_grad) < 4e-6, "{label}: weight");
            assert!(
                max_err(&want.weight, &weight_grad) < 4e-6,
                "{label}: planar weight"
            );
            let mut bias_grad = vec![0f64; kernels];
            for (e, g) in g.iter().enumerate() {
                bias_grad[e % channels % kernels] += *g as f64;
            }
            assert!(max_err(&got.bias, &bias_grad) < 4e-6, "{label}: bias");
        }
    }

    fn max_err(a: &[f32], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()))
            / scale
    }

    /// Forward against the definition, and every gradient against the definition's
    /// derivative: `sum(out * g)` is linear in each of x, weight and bias, so its gradient with
    /// respect to one entry is the forward of a unit input in that entry, dotted with `g`.
    #[test]
    fn forward_and_gradients_match_the_definition() {
        // 6 planes of 3 channels, 5 x 7 (rows shorter than a vector), kernels 3 and 5; a 1-row
        // and a 1-column image where most taps fall outside; 7x7 on rows of 43.
        for (d, label) in [
            (
                Depthwise {
                    planes: 6,
                    channels: 3,
                    height: 5,
                    width: 7,
                    kernel: 3,
                },
                "3x3",
            ),
            (
                Depthwise {
                    planes: 6,
                    channels: 3,
                    height: 9,
                    width: 19,
                    kernel: 5,
                },
                "5x5",
            ),
            (
                Depthwise {
                    planes: 2,
                    channels: 2,
                    height: 1,
                    width: 4,
                    kernel: 5,
                },
                "1 row",
            ),
            (
                Depthwise {
                    planes: 2,
                    channels: 1,
                    height: 3,
                    width: 1,
                    kernel: 5,
                },
                "1 column",
            ),
            (
                Depthwise {
                    planes: 2,
                    channels: 2,
                    height: 4,
                    width: 43,
                    kernel: 7,
                },
                "7x7 on rows of 43",
            ),
        ] {
            let k = d.kernel;
            let x = wave(d.planes * d.plane(), 0.37);
            let weight = wave(d.channels * k * k, 1.3);
            let bias: Vec<f32> = (0..d.channels).map(|c| c as f32 * 0.1 - 0.05).collect();
            let g = wave(x.len(), 0.71);
            let out = d.forward(&x, &weight, &bias);
            assert!(
                max_err(&out, &forward_f64(&d, &x, &weight, &bias)) < 1e-6,
                "{label}"
            );

            let grads = d.backward(&x, &weight, &g);
            let dot = |out: &[f64]| out.iter().zip(&g).map(|(o, g)| o * *g as f64).sum::<f64>();
            let zero_bias = vec![0f32; d.channels];
            let input: Vec<f64> = (0..x.len())
                .map(|e| {
                    let mut unit = vec![0f32; x.len()];
                    unit[e] = 1.0;
                    dot(&forward_f64(&d, &unit, &weight, &zero_bias))
                })
                .collect();
            let weight_grad: Vec<f64> = (0..weight.len())
                .map(|e| {
                    let mut unit = vec![0f32; weight.len()];
                    unit[e] = 1.0;
                    dot(&forward_f64(&d, &x, &unit, &zero_bias))
                })
                .collect();
            let bias_grad: Vec<f64> = (0..d.channels)
                .map(|c| {
                    let mut unit = vec![0f32; d.channels];
                    unit[c] = 1.0;
                    dot(&forward_f64(&d, &vec![0f32; x.len()], &weight, &unit))
                })
                .collect();
            assert!(
                max_err(&grads.input, &input) < 1e-6,
                "{label}: input gradient"
            );
            assert!(
                max_err(&grads.weight, &weight_grad) < 1e-6,
                "{label}: weight gradient"
            );
            assert!(
                max_err(&grads.bias, &bias_grad) < 1e-6,
                "{label}: bias gradient"
            );
        }
    }
}
