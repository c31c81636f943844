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
