//! Depthwise 2-D convolution with same padding and stride 1 (`nn.Conv2d(c, c, k, padding=k//2,
//! groups=c)`) on `[planes, H, W]` images, forward and backward, for training on flex.
//!
//! Why: flex runs a depthwise conv through its general convolution, and differentiates it with
//! a transposed convolution for the input and a grouped weight-gradient convolution; both walk
//! the image once per tap in scalar loops (together a tenth of a FLatten-PVT-T training step).
//! Here each tap is one contiguous multiply-add along an image row, which vectorises, and the
//! planes are spread over all cores.
//!
//! Plane `p` uses channel `p % channels`' kernel: `[B, C, H, W]` is `B * C` planes of `C`
//! channels, and FLatten's head-shared conv on `[B * heads, d, H, W]` is `B * heads * d` planes
//! of `d` channels.

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

    /// The convolution of `x` `[planes, H, W]` with `weight` `[channels, k, k]` plus `bias`
    /// `[channels]`.
    pub fn forward(&self, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        self.check(x, weight);
        assert_eq!(bias.len(), self.channels, "depthwise conv: bias size");
        let (plane, taps) = (self.plane(), self.kernel * self.kernel);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(p, (out, x))| {
                let ch = p % self.channels;
                out.fill(bias[ch]);
                correlate(out, x, &weight[ch * taps..][..taps], self.dims());
            });
        out
    }

    /// The gradients of `sum(forward(x) * grad)` with respect to the input, the weight and
    /// the bias.
    pub fn backward(&self, x: &[f32], weight: &[f32], grad: &[f32]) -> DepthwiseGrads {
        self.check(x, weight);
        assert_eq!(grad.len(), x.len(), "depthwise conv: gradient size");
        let (plane, k) = (self.plane(), self.kernel);
        let taps = k * k;
        // The input's gradient is the correlation of the output's gradient with the kernel
        // turned by 180 degrees; each plane also yields its share of the weight's and the
        // bias's gradients, summed per channel below in plane order (deterministic).
        let flipped: Vec<f32> = weight
            .chunks(taps)
            .flat_map(|w| w.iter().rev().copied())
            .collect();
        let mut input = vec![0f32; x.len()];
        let shares: Vec<(Vec<f32>, f32)> = input
            .par_chunks_mut(plane)
            .zip(x.par_chunks(plane).zip(grad.par_chunks(plane)))
            .enumerate()
            .map(|(p, (input, (x, grad)))| {
                let ch = p % self.channels;
                correlate(input, grad, &flipped[ch * taps..][..taps], self.dims());
                (weight_share(x, grad, self.dims()), crate::simd::sum(grad))
            })
            .collect();
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

    fn dims(&self) -> [usize; 3] {
        [self.height, self.width, self.kernel]
    }
}

/// The rows `[start, end)` of output positions along one axis of length `len` that tap offset
/// `offset` (source index = output index + offset) keeps inside the image.
#[inline(always)]
fn valid(len: usize, offset: isize) -> (usize, usize) {
    let start = (-offset).max(0) as usize;
    let end = (len as isize - offset).clamp(0, len as isize) as usize;
    (start.min(end), end)
}

/// For every tap `(i, j)` of a `k x k` kernel on an `h x w` plane with same padding, and every
/// output row `y` it reaches: `f(tap, out, src)` with `tap = i k + j`, `out` the range of that
/// row's outputs (flat indices) the tap reaches, and `src` the start of the inputs they read
/// (flat, contiguous along the row). Taps in kernel-row order, then output rows, then columns.
#[inline(always)]
fn tap_rows([h, w, k]: [usize; 3], mut f: impl FnMut(usize, std::ops::Range<usize>, usize)) {
    let pad = (k / 2) as isize;
    for i in 0..k {
        let (y0, y1) = valid(h, i as isize - pad);
        for y in y0..y1 {
            let sy = (y as isize + i as isize - pad) as usize;
            for j in 0..k {
                let offset = j as isize - pad;
                let (x0, x1) = valid(w, offset);
                if x0 < x1 {
                    let src = sy * w + (x0 as isize + offset) as usize;
                    f(i * k + j, y * w + x0..y * w + x1, src);
                }
            }
        }
    }
}

multiversion! {
    /// `out[y, x] += sum over taps (i, j) of taps[i, j] * src[y + i - k/2, x + j - k/2]`, taps
    /// outside the image left out (zero padding); each tap one multiply-add along a row.
    fn correlate(out: &mut [f32], src: &[f32], taps: &[f32], dims: [usize; 3]) {
        tap_rows(dims, |tap, outs, from| {
            let t = taps[tap];
            for (o, s) in out[outs].iter_mut().zip(&src[from..]) {
                *o += t * s;
            }
        });
    }
}

multiversion! {
    /// One plane's share of the weight gradient, `[k, k]`: tap `(i, j)` gets
    /// `sum over (y, x) of grad[y, x] * src[y + i - k/2, x + j - k/2]`. Each tap's products
    /// are added into a row of partial sums (a multiply-add per row, vectorised), summed at
    /// the end.
    fn weight_share(src: &[f32], grad: &[f32], dims: [usize; 3]) -> Vec<f32> {
        let w = dims[1];
        let mut partial = vec![0f32; dims[2] * dims[2] * w];
        tap_rows(dims, |tap, outs, from| {
            let x0 = outs.start % w;
            let acc = &mut partial[tap * w + x0..][..outs.len()];
            for ((a, g), s) in acc.iter_mut().zip(&grad[outs]).zip(&src[from..]) {
                *a += g * s;
            }
        });
        partial.chunks(w).map(crate::simd::sum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wave;

    /// The convolution written out in f64, straight from its definition.
    fn forward_f64(d: &Depthwise, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f64> {
        let [h, w, k] = d.dims();
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
