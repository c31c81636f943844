//! Swin's shifted windows: where a query sits among them, how a token grid is cut into them and
//! put back, the mask that keeps wrapped regions apart, and a block's attention half over them.

use burn::tensor::{Device, Tensor, TensorData};

use crate::mlp::DropPath;
use crate::ops;
use crate::{explain, Attention, LayerNorm, MixerInput, TokenLayout};

/// Windows a call's batch is cut into (Swin's shifted windows, CSwin's stripes): how to find a
/// query of the whole grid among the recorded windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// The stage's token grid.
    pub grid: [usize; 2],
    /// One window's rows and columns.
    pub window: [usize; 2],
    /// The cyclic shift applied before cutting (`roll(x, -shift)`), 0 for none.
    pub shift: usize,
}

impl Windows {
    /// For the grid token `(row, col)`: the window it falls in (row-major over the windows of
    /// one image) and its index inside that window.
    pub fn locate(&self, row: usize, col: usize) -> (usize, usize) {
        let [h, w] = self.grid;
        let [wh, ww] = self.window;
        let r = (row + h - self.shift % h) % h;
        let c = (col + w - self.shift % w) % w;
        ((r / wh) * (w / ww) + c / ww, (r % wh) * ww + c % ww)
    }

    /// The grid token at index `i` of window `index`: the inverse of [`Windows::locate`].
    pub fn position(&self, index: usize, i: usize) -> (usize, usize) {
        let [h, w] = self.grid;
        let [wh, ww] = self.window;
        let (wr, wc) = (index / (w / ww), index % (w / ww));
        let r = wr * wh + i / ww;
        let c = wc * ww + i % ww;
        ((r + self.shift) % h, (c + self.shift) % w)
    }

    /// Windows per image.
    pub fn count(&self) -> usize {
        (self.grid[0] / self.window[0]) * (self.grid[1] / self.window[1])
    }
}

impl Attention {
    /// A Swin block's first half, `x + drop_path(attn(norm(x)))`, with the mixer on the
    /// `windows` of `x` (`[B, H*W, C]` on `windows.grid`): cyclic shift, partition, the mixer per
    /// window (softmax adds the relative position bias and, when shifted, the -100 mask; the
    /// linear families are unmasked, as upstream), reverse, shift back.
    ///
    /// In inference, where stochastic depth is the identity, the windows are not cut out:
    /// softmax's fused kernels read them in place (see
    /// [`crate::SoftmaxAttention::forward_image_windows`]), and another mixer on one unshifted
    /// window (the whole grid) runs as a block (see [`MixerInput`]).
    pub fn residual_in_windows(
        &self,
        x: Tensor<3>,
        norm: &LayerNorm,
        windows: Windows,
        drop_path: &DropPath,
    ) -> Tensor<3> {
        let ([w, _], s, grid) = (windows.window, windows.shift, windows.grid);
        let mask = match self {
            Attention::Softmax(_) if s > 0 => {
                Some(shift_mask(grid, w, s, &x.device()).cast(x.dtype()))
            }
            _ => None,
        };
        if drop_path.is_identity(&x.device()) {
            let layout = TokenLayout::grid(w, w);
            match self {
                Attention::Softmax(m) => {
                    if let Some(y) =
                        m.forward_image_windows(&x, Some(norm), grid, w, s, mask.as_ref())
                    {
                        return y;
                    }
                }
                _ if s == 0 && grid == [w, w] => {
                    return self.forward(MixerInput::Block { x, norm }, layout);
                }
                _ => {}
            }
        }
        let h = self.forward_in_windows(ops::layer_norm(norm, x.clone()), windows, mask);
        x + drop_path.forward(h)
    }

    /// The mixer on the shifted windows of `h` (`[B, H*W, C]`): roll, partition, mix,
    /// reverse, roll back.
    fn forward_in_windows(
        &self,
        h: Tensor<3>,
        windows: Windows,
        mask: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let [b, n, c] = h.dims();
        let ([w, _], s, grid) = (windows.window, windows.shift, windows.grid);
        let mut image = h.reshape([b, grid[0], grid[1], c]);
        if s > 0 {
            image = image.roll(&[-(s as i64), -(s as i64)], &[1, 2]);
        }
        let mixed = explain::in_windows(windows, || {
            self.forward_masked(partition(image, w), TokenLayout::grid(w, w), mask)
        });
        let mut image = reverse(mixed, w, grid);
        if s > 0 {
            image = image.roll(&[s as i64, s as i64], &[1, 2]);
        }
        image.reshape([b, n, c])
    }
}

/// `[B, H, W, C]` -> windows `[B * nW, w*w, C]`, windows row-major.
pub(crate) fn partition(x: Tensor<4>, w: usize) -> Tensor<3> {
    let [b, h, wd, c] = x.dims();
    if [h, wd] == [w, w] {
        return x.reshape([b, w * w, c]);
    }
    x.reshape([b, h / w, w, wd / w, w * c])
        .swap_dims(2, 3)
        .reshape([b * (h / w) * (wd / w), w * w, c])
}

/// Inverse of [`partition`].
pub(crate) fn reverse(x: Tensor<3>, w: usize, [h, wd]: [usize; 2]) -> Tensor<4> {
    let [bw, _, c] = x.dims();
    if [h, wd] == [w, w] {
        return x.reshape([bw, h, wd, c]);
    }
    let b = bw / ((h / w) * (wd / w));
    x.reshape([b, h / w, wd / w, w, w * c])
        .swap_dims(2, 3)
        .reshape([b, h, wd, c])
}

/// Swin's shifted-window mask `[nW, w*w, w*w]`: 0 within a region, -100 across regions.
pub(crate) fn shift_mask([h, wd]: [usize; 2], w: usize, s: usize, device: &Device) -> Tensor<3> {
    let region = |i: usize, n: usize| {
        if i < n - w {
            0
        } else if i < n - s {
            1
        } else {
            2
        }
    };
    let (nh, nw) = (h / w, wd / w);
    let n = w * w;
    let mut mask = Vec::with_capacity(nh * nw * n * n);
    for wy in 0..nh {
        for wx in 0..nw {
            let labels: Vec<usize> = (0..n)
                .map(|t| {
                    let (y, x) = (wy * w + t / w, wx * w + t % w);
                    region(y, h) * 3 + region(x, wd)
                })
                .collect();
            for a in &labels {
                for b in &labels {
                    mask.push(if a == b { 0.0f32 } else { -100.0 });
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(mask, [nh * nw, n, n]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shift_mask_separates_the_wrapped_regions() {
        // 4x4 grid, window 2, shift 1: the last window mixes 4 regions, the first none.
        let m = shift_mask([4, 4], 2, 1, &Device::flex());
        let v = m.into_data().try_into_vec::<f32>().unwrap();
        assert!(v[..16].iter().all(|&x| x == 0.0));
        let last = &v[3 * 16..];
        assert_eq!(last.iter().filter(|&&x| x == 0.0).count(), 4);
    }

    #[test]
    fn partition_and_reverse_are_inverse() {
        let device = Device::flex();
        let values: Vec<f32> = (0..2 * 4 * 6 * 3).map(|i| i as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [2, 4, 6, 3]), &device);
        let back = reverse(partition(x.clone(), 2), 2, [4, 6]);
        assert_eq!(back.into_data(), x.into_data());
    }
}
