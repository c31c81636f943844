//! FLatten focused linear attention (Han et al., ICCV 2023), the part between the projections:
//! the focusing function on queries and keys, the normalised linear product per head, and the
//! head-shared depthwise conv on the values. The mathematics and the order of operations follow
//! `linvit_attention::focused` (which follows upstream's `models/flatten_*.py`); see SPEC.md.
//!
//! Three passes, each split over rayon's threads: (1) the focusing function on every key row;
//! (2) per batch and head, `kv = k'^T v / sqrt(n)` (`d x d`) and `mean(k)` as two products on
//! gemm (the multiply flex runs on); (3) per block of 64 query rows, while it is in cache: the
//! focusing function, `q kv / (q . mean(k) + 1e-6)` per head and the depthwise conv read from
//! the neighbouring value rows. Nothing `N x N`, and each `[B, N, C]` tensor is read or written
//! about once.

use rayon::prelude::*;

use crate::matmul::{product, Operand};
use crate::rows::Rows;
use crate::simd::{dot, multiversion, LANES};

/// The head-shared depthwise conv on the values (`nn.Conv2d(d, d, k, padding=k//2, groups=d)`
/// applied to every head's `[d, H, W]` image), fused only where the values lie on the query grid.
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
            k.rows() == v.rows()
                && k.rows().is_multiple_of(batch)
                && self.key_offset.len() == n_k * c
        );
        let taps = self.dwc.map(|dwc| dwc.spread(c));
        if let Some(dwc) = &self.dwc {
            assert!(dwc.grid[0] * dwc.grid[1] == n_q && n_q == n_k);
        }

        let key_scale = (n_k as f32).powf(-0.5);
        let mut k_focused = vec![0f32; k.rows() * c];
        k_focused
            .par_chunks_mut(c)
            .enumerate()
            .for_each(|(row, out)| {
                let offset = &self.key_offset[(row % n_k) * c..][..c];
                focus_row(
                    out,
                    k.row(row),
                    &inv_sp,
                    Some(offset),
                    self.power,
                    key_scale,
                );
            });

        // Per (batch, head): `kv = s k_h^T v_h` (`d x d`, row-major) and `mean = s k_h^T 1`.
        let ones = vec![1f32; n_k];
        let sums: Vec<(Vec<f32>, Vec<f32>)> = (0..batch * heads)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / heads, bh % heads);
                let k = &k_focused[b * n_k * c + h * d..];
                let (mut kv, mut mean) = (vec![0f32; d * d], vec![0f32; d]);
                product(
                    &mut kv,
                    [d, 1],
                    Operand(k, [1, c]),
                    v.operand(b * n_k, h * d),
                    [d, d, n_k],
                    false,
                    key_scale,
                );
                product(
                    &mut mean,
                    [1, 1],
                    Operand(k, [1, c]),
                    Operand(&ones, [1, 1]),
                    [d, 1, n_k],
                    false,
                    key_scale,
                );
                (kv, mean)
            })
            .collect();

        // Blocks of query rows, each finished while it is in cache: focusing function, the
        // product per head, the division, the conv.
        let mut out = vec![0f32; q.rows() * c];
        out.par_chunks_mut(n_q * c)
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
                        for (h, (kv, mean)) in sums.iter().enumerate() {
                            let (q, out) = (&focused[h * d..], &mut out[h * d..]);
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
                            dwc.add_to_tokens(out, image, v.stride(), taps, block * QUERY_BLOCK);
                        }
                    });
            });
        out
    }
}

/// Query rows per task of the last pass: `[64, C]` blocks stay in L1/L2 while they are worked.
const QUERY_BLOCK: usize = 64;

multiversion! {
    /// FLatten's kernel on one `c`-channel row: `(relu(x + offset) + 1e-6) / softplus(scale)`
    /// (times `1 / softplus(scale)`, given as `inv_sp`: a division per element cost a fifth of
    /// the kernel), then `x^p * ||x|| / ||x^p|| * times`, written to `x` from `input`.
    fn focus_row(
        x: &mut [f32],
        input: &[f32],
        inv_sp: &[f32],
        off: Option<&[f32]>,
        p: u32,
        times: f32,
    ) {
        match off {
            Some(off) => {
                for (((v, &i), &o), &s) in x.iter_mut().zip(input).zip(off).zip(inv_sp) {
                    *v = ((i + o).max(0.0) + 1e-6) * s;
                }
            }
            None => {
                for ((v, &i), &s) in x.iter_mut().zip(input).zip(inv_sp) {
                    *v = (i.max(0.0) + 1e-6) * s;
                }
            }
        }
        let norm2 = dot(x, x);
        power_in_place(x, p);
        let factor = norm2.sqrt() / dot(x, x).sqrt() * times;
        x.iter_mut().for_each(|v| *v *= factor);
    }
}

/// `x^p` by squaring and multiplying, rounded as `linvit_attention::focused::powi_by_mul`.
#[inline(always)]
fn power_in_place(x: &mut [f32], p: u32) {
    match p {
        1 => {}
        2 => x.iter_mut().for_each(|v| *v *= *v),
        3 => x.iter_mut().for_each(|v| *v = *v * *v * *v),
        4 => x.iter_mut().for_each(|v| {
            let s = *v * *v;
            *v = s * s
        }),
        _ => x.iter_mut().for_each(|v| *v = powi(*v, p)),
    }
}

fn powi(x: f32, p: u32) -> f32 {
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
    fn spread(&self, c: usize) -> Spread {
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
    fn add_to_tokens(
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
struct Spread {
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
        let mut offsets = Vec::with_capacity(k * k);
        for (i, acc) in out.chunks_exact_mut(c).enumerate() {
            let (y, x) = ((first + i) / w, (first + i) % w);
            // (source row, tap row) of the taps that land inside the grid, in tap order.
            offsets.clear();
            for dy in r.saturating_sub(y)..k.min(h + r - y) {
                for dx in r.saturating_sub(x)..k.min(w + r - x) {
                    let source = ((y + dy - r) * w + x + dx - r) * stride;
                    offsets.push((source, (dy * k + dx) * c));
                }
            }
            // Channels in groups whose sums stay in registers across the taps: 64 wide (four
            // independent add chains), then 16, then one at a time.
            let mut ch = 0;
            while ch + 64 <= c {
                conv_channels::<64>(acc, ch, bias, image, taps, &offsets);
                ch += 64;
            }
            while ch + LANES <= c {
                conv_channels::<LANES>(acc, ch, bias, image, taps, &offsets);
                ch += LANES;
            }
            for ch in ch..c {
                conv_channels::<1>(acc, ch, bias, image, taps, &offsets);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_round_as_repeated_squaring() {
        for &x in &[0.3f32, 1.7, 2.5e-3] {
            for p in 1..=9 {
                let mut v = [x];
                power_in_place(&mut v, p);
                assert_eq!(v[0], powi(x, p), "x={x} p={p}");
            }
            assert_eq!(powi(x, 3), (x * x) * x);
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
