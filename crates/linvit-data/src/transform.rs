//! Per-image transforms, all driven by a caller-provided seeded RNG.
//!
//! Train: random resized crop (torchvision's `RandomResizedCrop.get_params`), horizontal flip,
//! RandAugment (timm's `rand-m9-mstd0.5-inc1` op set and magnitudes), normalisation, random
//! erasing (timm's `RandomErasing`, mode "pixel"). Eval: resize the shorter side to
//! `floor(S / crop_pct)` (`int(256 / 224 * S)` at the default 0.875) and centre-crop `S`.
//!
//! Deviation: resize and crop are one resampling of the crop box (bilinear, box-averaged when
//! shrinking by more than 2x) instead of PIL's separate resize then crop; results match up to
//! interpolation rounding.

use crate::rng::{below, chance, normal, uniform, DataRng};
use crate::source::{Image, Split};
use crate::{AugmentConfig, DataConfig};

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Everything needed to turn a decoded image into a normalised CHW f32 tensor.
#[derive(Clone, Debug)]
pub struct Transform {
    /// Output side.
    pub size: usize,
    /// Output channels.
    pub channels: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Training augmentation; `None` gives the eval transform.
    pub augment: Option<AugmentConfig>,
    pub crop_pct: f32,
}

impl Transform {
    /// The transform for `split`: augmented for train when `augment.enabled`, eval otherwise.
    pub fn new(config: &DataConfig, source_channels: usize, split: Split) -> Self {
        let channels = config.channels.unwrap_or(source_channels);
        let default = |imagenet: [f32; 3]| -> Vec<f32> {
            if channels == 3 {
                imagenet.to_vec()
            } else {
                vec![0.5]
            }
        };
        let expand = |v: &Vec<f32>| -> Vec<f32> {
            if v.len() == channels {
                v.clone()
            } else {
                vec![v[0]; channels]
            }
        };
        Transform {
            size: config.image_size,
            channels,
            mean: config
                .mean
                .as_ref()
                .map(expand)
                .unwrap_or_else(|| default(IMAGENET_MEAN)),
            std: config
                .std
                .as_ref()
                .map(expand)
                .unwrap_or_else(|| default(IMAGENET_STD)),
            augment: (split == Split::Train && config.augment.enabled)
                .then(|| config.augment.clone()),
            crop_pct: config.eval_crop_pct,
        }
    }

    /// Values per output image (`channels * size * size`).
    pub fn output_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// The geometric and colour part: crop, resize, flip, channel conversion, RandAugment.
    pub fn augment_u8(&self, img: &Image, rng: &mut DataRng) -> Image {
        let s = self.size;
        let out = match &self.augment {
            Some(aug) => {
                let (x, y, w, h) = random_resized_crop(img.width, img.height, aug, rng);
                let flip = chance(rng, aug.hflip);
                let mut out = resample(img, [x as f32, y as f32, w as f32, h as f32], s, flip)
                    .with_channels(self.channels);
                randaugment(&mut out, aug, rng);
                out
            }
            None => {
                let region = centre_crop(img.width, img.height, s, self.crop_pct);
                resample(img, region, s, false).with_channels(self.channels)
            }
        };
        debug_assert_eq!(out.data.len(), self.output_len());
        out
    }

    /// The whole transform: writes `channels * size * size` normalised values, CHW, to `out`.
    pub fn apply(&self, img: &Image, rng: &mut DataRng, out: &mut [f32]) {
        let u8img = self.augment_u8(img, rng);
        self.normalise(&u8img, out);
        if let Some(aug) = &self.augment {
            if chance(rng, aug.erase_prob) {
                random_erase(out, self.channels, self.size, rng);
            }
        }
    }

    /// HWC u8 to CHW `(x / 255 - mean) / std`.
    pub fn normalise(&self, img: &Image, out: &mut [f32]) {
        let c = self.channels;
        let plane = img.width * img.height;
        for ch in 0..c {
            let scale = 1.0 / (255.0 * self.std[ch]);
            let shift = self.mean[ch] / self.std[ch];
            let dst = &mut out[ch * plane..(ch + 1) * plane];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = img.data[i * c + ch] as f32 * scale - shift;
            }
        }
    }
}

/// torchvision `RandomResizedCrop.get_params`: `(x, y, w, h)` in source pixels.
pub fn random_resized_crop(
    width: usize,
    height: usize,
    aug: &AugmentConfig,
    rng: &mut DataRng,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f32;
    let (lr0, lr1) = (aug.ratio[0].ln(), aug.ratio[1].ln());
    for _ in 0..10 {
        let target = area * uniform(rng, aug.scale[0], aug.scale[1]);
        let ratio = uniform(rng, lr0, lr1).exp();
        let w = (target * ratio).sqrt().round() as usize;
        let h = (target / ratio).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let y = below(rng, height - h + 1);
            let x = below(rng, width - w + 1);
            return (x, y, w, h);
        }
    }
    // Fallback: the whole image, cropped to the ratio range.
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < aug.ratio[0] {
        (
            width,
            ((width as f32 / aug.ratio[0]).round() as usize).max(1),
        )
    } else if in_ratio > aug.ratio[1] {
        (
            ((height as f32 * aug.ratio[1]).round() as usize).max(1),
            height,
        )
    } else {
        (width, height)
    };
    (
        (width - w.min(width)) / 2,
        (height - h.min(height)) / 2,
        w.min(width),
        h.min(height),
    )
}

/// The eval crop box `[x, y, w, h]`: shorter side resized to `floor(size / crop_pct)`, then a
/// centred `size x size` crop, expressed in source pixels.
pub fn centre_crop(width: usize, height: usize, size: usize, crop_pct: f32) -> [f32; 4] {
    let resized = (size as f32 / crop_pct).floor().max(size as f32);
    let scale = resized / width.min(height) as f32;
    let side = size as f32 / scale;
    [
        (width as f32 - side) / 2.0,
        (height as f32 - side) / 2.0,
        side,
        side,
    ]
}

/// Resamples the box `[x, y, w, h]` of `img` to `size x size` (bilinear, half-pixel centres,
/// box-averaged taps when shrinking), mirrored horizontally when `flip`.
pub fn resample(img: &Image, region: [f32; 4], size: usize, flip: bool) -> Image {
    let c = img.channels;
    let [x0, y0, w, h] = region;
    let (sx, sy) = (w / size as f32, h / size as f32);
    let (tx, ty) = (
        sx.ceil().clamp(1.0, 8.0) as usize,
        sy.ceil().clamp(1.0, 8.0) as usize,
    );
    let (iw, ih) = (img.width as f32, img.height as f32);
    let mut out = Image::new(size, size, c);
    let mut acc = [0f32; 3];
    // Per-axis source positions, precomputed: (index0, index1, weight1) per tap.
    let axis = |n: usize, start: f32, step: f32, taps: usize, limit: f32| {
        let mut v = Vec::with_capacity(n * taps);
        for o in 0..n {
            for t in 0..taps {
                let p = start + (o as f32 + (t as f32 + 0.5) / taps as f32) * step - 0.5;
                let p = p.clamp(0.0, limit - 1.0);
                let i0 = p.floor() as usize;
                let i1 = (i0 + 1).min(limit as usize - 1);
                v.push((i0, i1, p - i0 as f32));
            }
        }
        v
    };
    let xs = axis(size, x0, sx, tx, iw);
    let ys = axis(size, y0, sy, ty, ih);
    let norm = 1.0 / (tx * ty) as f32;
    let row = img.width * c;
    for oy in 0..size {
        for ox in 0..size {
            acc[..c].fill(0.0);
            let src_x = if flip { size - 1 - ox } else { ox };
            for &(y0i, y1i, wy) in &ys[oy * ty..(oy + 1) * ty] {
                for &(x0i, x1i, wx) in &xs[src_x * tx..(src_x + 1) * tx] {
                    for (k, a) in acc[..c].iter_mut().enumerate() {
                        let p00 = img.data[y0i * row + x0i * c + k] as f32;
                        let p01 = img.data[y0i * row + x1i * c + k] as f32;
                        let p10 = img.data[y1i * row + x0i * c + k] as f32;
                        let p11 = img.data[y1i * row + x1i * c + k] as f32;
                        let top = p00 + (p01 - p00) * wx;
                        let bottom = p10 + (p11 - p10) * wx;
                        *a += top + (bottom - top) * wy;
                    }
                }
            }
            let o = (oy * size + ox) * c;
            for (d, a) in out.data[o..o + c].iter_mut().zip(&acc) {
                *d = (a * norm).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// timm `RandomErasing` (one box, mode "pixel"): area (0.02, 1/3), log-ratio (0.3, 1/0.3),
/// filled with standard-normal noise, on a normalised CHW image.
pub fn random_erase(out: &mut [f32], channels: usize, size: usize, rng: &mut DataRng) {
    let area = (size * size) as f32;
    let (lr0, lr1) = (0.3f32.ln(), (1.0f32 / 0.3).ln());
    for _ in 0..10 {
        let target = area * uniform(rng, 0.02, 1.0 / 3.0);
        let ratio = uniform(rng, lr0, lr1).exp();
        let h = (target * ratio).sqrt().round() as usize;
        let w = (target / ratio).sqrt().round() as usize;
        if w < size && h < size && w > 0 && h > 0 {
            let top = below(rng, size - h + 1);
            let left = below(rng, size - w + 1);
            for ch in 0..channels {
                for y in top..top + h {
                    for x in left..left + w {
                        out[ch * size * size + y * size + x] = normal(rng);
                    }
                }
            }
            return;
        }
    }
}

/// RandAugment ops (timm's `_RAND_INCREASING_TRANSFORMS` set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
}

pub const OPS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
];

fn randaugment(img: &mut Image, aug: &AugmentConfig, rng: &mut DataRng) {
    for _ in 0..aug.randaugment_ops {
        let op = OPS[below(rng, OPS.len())];
        if !chance(rng, aug.randaugment_prob) {
            continue;
        }
        let mut m = aug.randaugment_magnitude;
        if aug.randaugment_magnitude_std > 0.0 {
            m += aug.randaugment_magnitude_std * normal(rng);
        }
        let m = m.clamp(0.0, 10.0) / 10.0;
        let sign = if chance(rng, 0.5) { -1.0 } else { 1.0 };
        apply_op(img, op, m, sign);
    }
}

/// Applies `op` at magnitude `m` in [0, 1] (timm's level / 10) with direction `sign`.
pub fn apply_op(img: &mut Image, op: Op, m: f32, sign: f32) {
    let (w, h) = (img.width as f32, img.height as f32);
    match op {
        Op::AutoContrast => autocontrast(img),
        Op::Equalize => equalize(img),
        Op::Invert => img.data.iter_mut().for_each(|v| *v = 255 - *v),
        Op::Posterize => {
            let bits = 4 - (m * 4.0) as u32;
            let mask = !(((1u32 << (8 - bits)) - 1) as u8);
            img.data.iter_mut().for_each(|v| *v &= mask);
        }
        Op::Solarize => {
            let t = (256.0 - m * 256.0) as u32;
            img.data
                .iter_mut()
                .for_each(|v| *v = if (*v as u32) >= t { 255 - *v } else { *v });
        }
        Op::SolarizeAdd => {
            let add = (m * 110.0) as u32;
            img.data.iter_mut().for_each(|v| {
                if *v < 128 {
                    *v = (*v as u32 + add).min(255) as u8;
                }
            });
        }
        Op::Color => {
            let f = 1.0 + sign * 0.9 * m;
            if img.channels == 3 {
                for p in img.data.chunks_exact_mut(3) {
                    let g = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                    for v in p {
                        *v = (g + f * (*v as f32 - g)).round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
        Op::Contrast => {
            let f = 1.0 + sign * 0.9 * m;
            let mean = if img.channels == 3 {
                img.data
                    .chunks_exact(3)
                    .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
                    .sum::<f32>()
            } else {
                img.data.iter().map(|&v| v as f32).sum::<f32>()
            } / (img.width * img.height) as f32;
            let mean = mean.round();
            img.data
                .iter_mut()
                .for_each(|v| *v = (mean + f * (*v as f32 - mean)).round().clamp(0.0, 255.0) as u8);
        }
        Op::Brightness => {
            let f = 1.0 + sign * 0.9 * m;
            img.data
                .iter_mut()
                .for_each(|v| *v = (*v as f32 * f).round().clamp(0.0, 255.0) as u8);
        }
        Op::Sharpness => sharpness(img, 1.0 + sign * 0.9 * m),
        Op::Rotate => {
            let a = (sign * 30.0 * m).to_radians();
            let (c, s) = (a.cos(), a.sin());
            let (cx, cy) = (w / 2.0, h / 2.0);
            affine(
                img,
                [c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy],
            );
        }
        Op::ShearX => affine(img, [1.0, sign * 0.3 * m, 0.0, 0.0, 1.0, 0.0]),
        Op::ShearY => affine(img, [1.0, 0.0, 0.0, sign * 0.3 * m, 1.0, 0.0]),
        Op::TranslateX => affine(img, [1.0, 0.0, sign * 0.45 * m * w, 0.0, 1.0, 0.0]),
        Op::TranslateY => affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, sign * 0.45 * m * h]),
    }
}

/// PIL-style inverse affine `src = (a x + b y + c, d x + e y + f)` at pixel centres, bilinear,
/// filled with timm's mean colour outside.
fn affine(img: &mut Image, [a, b, c0, d, e, f]: [f32; 6]) {
    let ch = img.channels;
    let fill: [f32; 3] = if ch == 3 {
        [124.0, 116.0, 104.0]
    } else {
        [128.0; 3]
    };
    let (w, h) = (img.width, img.height);
    let src = img.data.clone();
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
            let sx = a * xf + b * yf + c0 - 0.5;
            let sy = d * xf + e * yf + f - 0.5;
            let o = (y * w + x) * ch;
            if sx < -0.5 || sy < -0.5 || sx > w as f32 - 0.5 || sy > h as f32 - 0.5 {
                for (d, v) in img.data[o..o + ch].iter_mut().zip(fill) {
                    *d = v as u8;
                }
                continue;
            }
            let (sx, sy) = (sx.clamp(0.0, (w - 1) as f32), sy.clamp(0.0, (h - 1) as f32));
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (wx, wy) = (sx - x0 as f32, sy - y0 as f32);
            for k in 0..ch {
                let p = |yy: usize, xx: usize| src[(yy * w + xx) * ch + k] as f32;
                let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * wx;
                let bottom = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * wx;
                img.data[o + k] = (top + (bottom - top) * wy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

fn autocontrast(img: &mut Image) {
    let c = img.channels;
    for k in 0..c {
        let (mut lo, mut hi) = (255u8, 0u8);
        for p in img.data.chunks_exact(c) {
            lo = lo.min(p[k]);
            hi = hi.max(p[k]);
        }
        if hi > lo {
            let scale = 255.0 / (hi - lo) as f32;
            for p in img.data.chunks_exact_mut(c) {
                p[k] = ((p[k] - lo) as f32 * scale).round().min(255.0) as u8;
            }
        }
    }
}

/// PIL's `ImageOps.equalize`, per channel.
fn equalize(img: &mut Image) {
    let c = img.channels;
    for k in 0..c {
        let mut hist = [0usize; 256];
        for p in img.data.chunks_exact(c) {
            hist[p[k] as usize] += 1;
        }
        let last = hist.iter().rposition(|&n| n > 0).map_or(0, |i| hist[i]);
        let step = (hist.iter().sum::<usize>() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for (i, l) in lut.iter_mut().enumerate() {
            *l = (n / step).min(255) as u8;
            n += hist[i];
        }
        for p in img.data.chunks_exact_mut(c) {
            p[k] = lut[p[k] as usize];
        }
    }
}

/// PIL's `ImageEnhance.Sharpness`: blend with the 3x3 smooth filter (centre 5, others 1),
/// border pixels kept.
fn sharpness(img: &mut Image, factor: f32) {
    let (w, h, c) = (img.width, img.height, img.channels);
    if w < 3 || h < 3 {
        return;
    }
    let src = img.data.clone();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for k in 0..c {
                let mut sum = 0.0;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let wgt = if dx == 1 && dy == 1 { 5.0 } else { 1.0 };
                        sum += wgt * src[((y + dy - 1) * w + x + dx - 1) * c + k] as f32;
                    }
                }
                let blurred = (sum / 13.0).round();
                let o = (y * w + x) * c + k;
                let v = blurred + factor * (src[o] as f32 - blurred);
                img.data[o] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    fn ramp(w: usize, h: usize, c: usize) -> Image {
        let mut img = Image::new(w, h, c);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = ((i / c) % w * 255 / w.max(2).saturating_sub(1).max(1)) as u8;
        }
        img
    }

    #[test]
    fn random_resized_crops_stay_inside_the_image_and_repeat_for_a_seed() {
        let aug = AugmentConfig::default();
        for seed in 0..200 {
            let (x, y, w, h) = random_resized_crop(50, 30, &aug, &mut stream(seed, 0, 0, 0));
            assert!(w > 0 && h > 0 && x + w <= 50 && y + h <= 30);
            let area = (w * h) as f32 / 1500.0;
            let ratio = w as f32 / h as f32;
            assert!((0.06..=1.0).contains(&area), "area {area}");
            assert!((0.6..=1.6).contains(&ratio), "ratio {ratio}");
            assert_eq!(
                (x, y, w, h),
                random_resized_crop(50, 30, &aug, &mut stream(seed, 0, 0, 0))
            );
        }
    }

    #[test]
    fn eval_crop_resizes_to_256_over_224_then_crops() {
        // 500x375 to 224: shorter side to 256 (scale 0.6827), centre 224 = 328.125 source px.
        let [x, y, w, h] = centre_crop(500, 375, 224, 0.875);
        assert!((w - 328.125).abs() < 1e-3 && (h - 328.125).abs() < 1e-3);
        assert!((x - (500.0 - 328.125) / 2.0).abs() < 1e-3);
        assert!((y - (375.0 - 328.125) / 2.0).abs() < 1e-3);
        // crop_pct 1: the whole shorter side.
        assert_eq!(centre_crop(32, 32, 32, 1.0), [0.0, 0.0, 32.0, 32.0]);
    }

    #[test]
    fn resampling_the_whole_image_at_its_size_is_exact_and_flip_mirrors() {
        let img = ramp(7, 5, 3);
        let same = resample(&img, [0.0, 0.0, 7.0, 5.0], 7, false);
        // Non-square output of a square call: compare the 5 rows that exist.
        let src = resample(&img, [0.0, 0.0, 7.0, 7.0], 7, false);
        assert_eq!(same.data.len(), 7 * 7 * 3);
        assert_eq!(&src.data[..7 * 3], &img.data[..7 * 3]);
        let flipped = resample(&img, [0.0, 0.0, 7.0, 7.0], 7, true);
        for x in 0..7 {
            assert_eq!(flipped.data[x * 3], src.data[(6 - x) * 3]);
        }
    }

    #[test]
    fn shrinking_averages_instead_of_skipping_pixels() {
        // A 1-pixel checkerboard shrunk 4x must come out mid-gray, not black or white.
        let mut img = Image::new(16, 16, 1);
        for y in 0..16 {
            for x in 0..16 {
                img.data[y * 16 + x] = if (x + y) % 2 == 0 { 255 } else { 0 };
            }
        }
        let small = resample(&img, [0.0, 0.0, 16.0, 16.0], 4, false);
        assert!(
            small.data.iter().all(|&v| (120..=135).contains(&v)),
            "{:?}",
            small.data
        );
    }

    #[test]
    fn enhance_ops_at_magnitude_zero_are_identities_and_every_op_keeps_the_size() {
        let img = ramp(9, 9, 3);
        for op in [
            Op::Color,
            Op::Contrast,
            Op::Brightness,
            Op::Sharpness,
            Op::Rotate,
            Op::ShearX,
            Op::TranslateY,
            Op::SolarizeAdd,
        ] {
            let mut x = img.clone();
            apply_op(&mut x, op, 0.0, 1.0);
            assert_eq!(x, img, "{op:?}");
        }
        for op in OPS {
            for channels in [1, 3] {
                let mut x = ramp(9, 6, channels);
                apply_op(&mut x, op, 0.9, -1.0);
                assert_eq!(x.data.len(), 9 * 6 * channels, "{op:?}");
            }
        }
    }

    #[test]
    fn invert_solarize_and_posterize_match_pil() {
        let mut img = Image {
            width: 4,
            height: 1,
            channels: 1,
            data: vec![0, 100, 200, 255],
        };
        apply_op(&mut img, Op::Invert, 0.5, 1.0);
        assert_eq!(img.data, vec![255, 155, 55, 0]);
        // Solarize at m = 0.5: threshold 128.
        let mut img = Image {
            width: 4,
            height: 1,
            channels: 1,
            data: vec![0, 100, 200, 255],
        };
        apply_op(&mut img, Op::Solarize, 0.5, 1.0);
        assert_eq!(img.data, vec![0, 100, 55, 0]);
        // Posterize at m = 0.5: 2 bits kept.
        let mut img = Image {
            width: 4,
            height: 1,
            channels: 1,
            data: vec![0, 100, 200, 255],
        };
        apply_op(&mut img, Op::Posterize, 0.5, 1.0);
        assert_eq!(img.data, vec![0, 64, 192, 192]);
    }

    #[test]
    fn equalize_spreads_a_narrow_histogram() {
        let mut img = Image {
            width: 4,
            height: 1,
            channels: 1,
            data: vec![10, 11, 12, 13],
        };
        apply_op(&mut img, Op::Equalize, 0.0, 1.0);
        // PIL: step = (4 - 1) // 255 = 0, so the image is unchanged.
        assert_eq!(img.data, vec![10, 11, 12, 13]);
        let mut img = Image::new(32, 32, 1);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = 100 + (i % 4) as u8;
        }
        apply_op(&mut img, Op::Equalize, 0.0, 1.0);
        assert_eq!(img.data.iter().min(), Some(&0));
        assert!(*img.data.iter().max().unwrap() >= 190);
    }

    #[test]
    fn random_erasing_overwrites_one_box() {
        let mut out = vec![100.0f32; 3 * 20 * 20];
        random_erase(&mut out, 3, 20, &mut stream(9, 0, 0, 0));
        let erased = out.iter().filter(|&&v| v != 100.0).count();
        // Area in [0.02, 1/3] of 400 pixels, 3 channels.
        assert!((3 * 8..=3 * 140).contains(&erased), "{erased}");
    }
}
