//! Batch-level mixup / cutmix with label smoothing, as timm's `Mixup` in its default "batch"
//! mode: one λ per batch, each image mixed with the batch reversed, cutmix λ corrected to the
//! clipped box area, targets `lam * onehot_smooth(y) + (1 - lam) * onehot_smooth(y.flip())`.

use crate::rng::{below, beta, chance, DataRng};
use crate::AugmentConfig;

/// What was applied to a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixInfo {
    /// Weight of the original image (1 when the batch was not mixed).
    pub lam: f32,
    pub cutmix: bool,
}

/// Draws `(lam, use_cutmix)` as timm's `_params_per_batch`.
fn params(aug: &AugmentConfig, rng: &mut DataRng) -> (f32, bool) {
    if !chance(rng, aug.mix_prob) {
        return (1.0, false);
    }
    match (aug.mixup_alpha > 0.0, aug.cutmix_alpha > 0.0) {
        (true, true) => {
            let cut = chance(rng, aug.switch_prob);
            let alpha = if cut {
                aug.cutmix_alpha
            } else {
                aug.mixup_alpha
            };
            (beta(rng, alpha), cut)
        }
        (true, false) => (beta(rng, aug.mixup_alpha), false),
        (false, true) => (beta(rng, aug.cutmix_alpha), true),
        (false, false) => (1.0, false),
    }
}

/// timm's `rand_bbox` with `correct_lam`: `(y0, y1, x0, x1)` and the corrected λ.
pub fn cutmix_box(
    height: usize,
    width: usize,
    lam: f32,
    rng: &mut DataRng,
) -> ((usize, usize, usize, usize), f32) {
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let (cut_h, cut_w) = (
        (height as f32 * ratio) as usize,
        (width as f32 * ratio) as usize,
    );
    let cy = below(rng, height);
    let cx = below(rng, width);
    let y0 = cy.saturating_sub(cut_h / 2);
    let y1 = (cy + cut_h / 2).min(height);
    let x0 = cx.saturating_sub(cut_w / 2);
    let x1 = (cx + cut_w / 2).min(width);
    let lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f32 / (height * width) as f32;
    ((y0, y1, x0, x1), lam)
}

/// Smoothed one-hot targets mixed with the reversed batch: `[n, num_classes]`, rows sum to 1.
pub fn mix_targets(labels: &[i64], num_classes: usize, lam: f32, smoothing: f32) -> Vec<f32> {
    let off = smoothing / num_classes as f32;
    let on = 1.0 - smoothing + off;
    let n = labels.len();
    let mut out = vec![off; n * num_classes];
    for (i, row) in out.chunks_exact_mut(num_classes).enumerate() {
        let a = labels[i] as usize;
        let b = labels[n - 1 - i] as usize;
        row[a] += (on - off) * lam;
        row[b] += (on - off) * (1.0 - lam);
    }
    out
}

/// Mixes `images` (`[n, c, h, w]`, flat) in place and returns soft targets `[n, classes]`.
pub fn mix_batch(
    images: &mut [f32],
    labels: &[i64],
    shape: [usize; 4],
    num_classes: usize,
    aug: &AugmentConfig,
    rng: &mut DataRng,
) -> (Vec<f32>, MixInfo) {
    let [n, c, h, w] = shape;
    let (mut lam, cutmix) = params(aug, rng);
    if lam < 1.0 && n > 1 {
        let flipped: Vec<f32> = (0..n)
            .flat_map(|i| {
                let j = n - 1 - i;
                images[j * c * h * w..(j + 1) * c * h * w].to_vec()
            })
            .collect();
        if cutmix {
            let ((y0, y1, x0, x1), corrected) = cutmix_box(h, w, lam, rng);
            lam = corrected;
            for i in 0..n {
                for ch in 0..c {
                    for y in y0..y1 {
                        let o = ((i * c + ch) * h + y) * w;
                        images[o + x0..o + x1].copy_from_slice(&flipped[o + x0..o + x1]);
                    }
                }
            }
        } else {
            for (x, f) in images.iter_mut().zip(&flipped) {
                *x = *x * lam + f * (1.0 - lam);
            }
        }
    } else {
        lam = 1.0;
    }
    (
        mix_targets(labels, num_classes, lam, aug.label_smoothing),
        MixInfo { lam, cutmix },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn targets_are_smoothed_and_mixed_with_the_reversed_batch() {
        let t = mix_targets(&[0, 1, 2], 4, 0.75, 0.1);
        // off = 0.025, on = 0.925; row 0 mixes class 0 (0.75) with class 2 (0.25).
        let row0 = &t[0..4];
        assert!((row0[0] - (0.025 + 0.9 * 0.75)).abs() < 1e-6);
        assert!((row0[2] - (0.025 + 0.9 * 0.25)).abs() < 1e-6);
        assert!((row0[1] - 0.025).abs() < 1e-6);
        for row in t.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // The middle row is mixed with itself.
        assert!((t[4 + 1] - 0.925).abs() < 1e-6);
    }

    #[test]
    fn cutmix_lambda_equals_the_unpasted_area() {
        let aug = AugmentConfig {
            mixup_alpha: 0.0,
            cutmix_alpha: 1.0,
            label_smoothing: 0.0,
            ..AugmentConfig::default()
        };
        let shape = [2, 1, 8, 8];
        let mut images: Vec<f32> = [vec![0.0; 64], vec![1.0; 64]].concat();
        let mut rng = stream(3, 0, 0, 0);
        let (targets, info) = mix_batch(&mut images, &[0, 1], shape, 2, &aug, &mut rng);
        assert!(info.cutmix);
        let pasted = images[..64].iter().filter(|&&v| v == 1.0).count();
        assert!((info.lam - (1.0 - pasted as f32 / 64.0)).abs() < 1e-6);
        assert!((targets[0] - info.lam).abs() < 1e-6);
        assert!((targets[1] - (1.0 - info.lam)).abs() < 1e-6);
    }

    #[test]
    fn mixup_blends_each_image_with_its_mirror_in_the_batch() {
        let aug = AugmentConfig {
            mixup_alpha: 0.8,
            cutmix_alpha: 0.0,
            label_smoothing: 0.0,
            ..AugmentConfig::default()
        };
        let mut images = vec![0.0, 0.0, 1.0, 1.0];
        let mut rng = stream(4, 0, 0, 0);
        let (_, info) = mix_batch(&mut images, &[0, 1], [2, 1, 1, 2], 2, &aug, &mut rng);
        assert!(!info.cutmix);
        assert!((images[0] - (1.0 - info.lam)).abs() < 1e-6);
        assert!((images[2] - info.lam).abs() < 1e-6);
    }
}
