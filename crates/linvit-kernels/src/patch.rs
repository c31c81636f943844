//! Non-overlapping patches of an image as token rows: a conv whose stride equals its kernel
//! (ViT's, PVT's and Swin's patch embeddings, PVT's spatial reduction) is these rows times the
//! conv's weights, which [`crate::linear`] multiplies.
//!
//! Why: flex runs such a conv as a direct loop on one thread; the four patch embeddings of a
//! FLatten-PVT-T forward took 39 of its ~260 ms at batch 8 for ~0.8 GMAC.

use rayon::prelude::*;

/// A 4-d image `[B, C, H, W]` read in place: element `(b, c, y, x)` at
/// `offset + b * s0 + c * s1 + y * s2 + x * s3` (channels-last tokens seen as an image have
/// `s1 = 1`).
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    data: &'a [f32],
    offset: usize,
    dims: [usize; 4],
    strides: [usize; 4],
}

impl<'a> Image<'a> {
    /// # Panics
    /// Where the last element lies past `data` (a caller bug).
    pub fn new(data: &'a [f32], offset: usize, dims: [usize; 4], strides: [usize; 4]) -> Self {
        assert!(dims.iter().all(|&d| d > 0));
        let last: usize = dims.iter().zip(strides).map(|(d, s)| (d - 1) * s).sum();
        assert!(offset + last < data.len());
        Image {
            data,
            offset,
            dims,
            strides,
        }
    }
}

/// The `kh x kw` patches of `image` at stride `[kh, kw]` (a remainder at the right or bottom
/// edge is dropped, as an unpadded conv drops it) as rows `[B * (H / kh) * (W / kw), C * kh *
/// kw]`: patches row-major, each row ordered `(c, i, j)` as the conv's weight `[out, C, kh,
/// kw]` is, so the conv is these rows times the weight seen as `[out, C * kh * kw]`, transposed.
///
/// # Panics
/// Where the image is smaller than one patch (a caller bug).
pub fn patches(image: Image, [kh, kw]: [usize; 2]) -> Vec<f32> {
    let [b, c, h, w] = image.dims;
    let [sb, sc, sy, sx] = image.strides;
    let (rows, cols) = (h / kh, w / kw);
    assert!(rows > 0 && cols > 0);
    let width = kh * kw * c;
    let mut out = vec![0f32; b * rows * cols * width];
    out.par_chunks_mut(cols * width)
        .enumerate()
        .for_each(|(band, out)| {
            let (bi, py) = (band / rows, band % rows);
            for (px, row) in out.chunks_exact_mut(width).enumerate() {
                let corner = image.offset + bi * sb + py * kh * sy + px * kw * sx;
                for (ch, row) in row.chunks_exact_mut(kh * kw).enumerate() {
                    for (i, row) in row.chunks_exact_mut(kw).enumerate() {
                        for (j, v) in row.iter_mut().enumerate() {
                            *v = image.data[corner + ch * sc + i * sy + j * sx];
                        }
                    }
                }
            }
        });
    out
}

/// The inverse of [`patches`] for a gradient: `rows` `[B * (H / kh) * (W / kw), C * kh * kw]`
/// scattered back to a new image `[B, C, H, W]` (row-major), zero where [`patches`] dropped a
/// remainder. The patches do not overlap, so each pixel takes at most one value.
///
/// # Panics
/// Where `rows` does not hold the patches of such an image (a caller bug).
pub fn unpatch(rows: &[f32], [b, c, h, w]: [usize; 4], [kh, kw]: [usize; 2]) -> Vec<f32> {
    let (prow, pcol) = (h / kh, w / kw);
    let width = kh * kw * c;
    assert!(prow > 0 && pcol > 0 && rows.len() == b * prow * pcol * width);
    let mut image = vec![0f32; b * c * h * w];
    image
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, image)| {
            let (bi, ch) = (plane / c, plane % c);
            for py in 0..prow {
                for px in 0..pcol {
                    let row = &rows[((bi * prow + py) * pcol + px) * width + ch * kh * kw..];
                    for i in 0..kh {
                        let y = py * kh + i;
                        let dst = &mut image[y * w + px * kw..][..kw];
                        dst.copy_from_slice(&row[i * kw..][..kw]);
                    }
                }
            }
        });
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_hold_each_pixel_once_in_c_i_j_order_from_either_layout() {
        // [1, 2, 4, 6] image, value = 1000 c + 10 y + x; 2x3 patches -> 2 x 2 patches of 12.
        let (c, h, w) = (2, 4, 6);
        let value = |ch: usize, y: usize, x: usize| (1000 * ch + 10 * y + x) as f32;
        let nchw: Vec<f32> = (0..c * h * w)
            .map(|i| value(i / (h * w), i / w % h, i % w))
            .collect();
        let nhwc: Vec<f32> = (0..h * w * c)
            .map(|i| value(i % c, i / (w * c), i / c % w))
            .collect();
        let from_nchw = patches(
            Image::new(&nchw, 0, [1, c, h, w], [c * h * w, h * w, w, 1]),
            [2, 3],
        );
        let from_nhwc = patches(
            Image::new(&nhwc, 0, [1, c, h, w], [h * w * c, 1, w * c, c]),
            [2, 3],
        );
        assert_eq!(from_nchw, from_nhwc);
        // Patch (1, 1), element (c=1, i=1, j=2): pixel (y=3, x=5) of channel 1.
        let row = &from_nchw[3 * 12..4 * 12];
        assert_eq!(row[6 + 3 + 2], value(1, 3, 5));
        assert_eq!(row[0], value(0, 2, 3));
        // Scattered back: every pixel of the two whole patch rows and columns, the remainder
        // (none here; a 5x7 image drops its last row and column) zero.
        assert_eq!(unpatch(&from_nchw, [1, c, h, w], [2, 3]), nchw);
        let (h, w) = (5, 7);
        let big: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
        let rows = patches(
            Image::new(&big, 0, [1, c, h, w], [c * h * w, h * w, w, 1]),
            [2, 3],
        );
        let back = unpatch(&rows, [1, c, h, w], [2, 3]);
        for (i, (&b, &x)) in back.iter().zip(&big).enumerate() {
            let (y, xx) = (i / w % h, i % w);
            let want = if y < 4 && xx < 6 { x } else { 0.0 };
            assert_eq!(b, want, "pixel {i}");
        }
    }
}
