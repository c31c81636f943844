//! Seeded, portable randomness: one ChaCha8 stream per (seed, purpose, split/epoch, index), so
//! results never depend on thread count or on the order work is done in.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) type DataRng = ChaCha8Rng;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Purposes keep the streams of different consumers apart.
pub(crate) mod purpose {
    pub const SYNTHETIC: u64 = 1;
    pub const SHUFFLE: u64 = 2;
    pub const AUGMENT: u64 = 3;
    pub const MIX: u64 = 4;
    pub const TEXT: u64 = 5;
}

/// An independent stream for `(seed, purpose, a, b)`.
pub(crate) fn stream(seed: u64, purpose: u64, a: u64, b: u64) -> DataRng {
    let mut h = splitmix(seed);
    for v in [purpose, a, b] {
        h = splitmix(h ^ v);
    }
    ChaCha8Rng::seed_from_u64(h)
}

/// Uniform in `[lo, hi)`.
pub(crate) fn uniform(rng: &mut DataRng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Uniform integer in `[0, n)`; `n` must be > 0.
pub(crate) fn below(rng: &mut DataRng, n: usize) -> usize {
    rng.random_range(0..n)
}

/// True with probability `p`.
pub(crate) fn chance(rng: &mut DataRng, p: f32) -> bool {
    p > 0.0 && rng.random::<f32>() < p
}

/// Standard normal (Box-Muller).
pub(crate) fn normal(rng: &mut DataRng) -> f32 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Gamma(shape, 1) by Marsaglia and Tsang, with the boost for shape < 1.
fn gamma(rng: &mut DataRng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.random::<f64>();
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng) as f64;
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Beta(alpha, alpha), as numpy's `np.random.beta(alpha, alpha)` in timm's Mixup.
pub(crate) fn beta(rng: &mut DataRng, alpha: f32) -> f32 {
    let a = gamma(rng, alpha as f64);
    let b = gamma(rng, alpha as f64);
    if a + b == 0.0 {
        0.5
    } else {
        (a / (a + b)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_repeat_for_the_same_key_and_differ_across_keys() {
        let a: Vec<u32> = (0..4).map(|_| stream(7, 1, 2, 3).random()).collect();
        let b: Vec<u32> = (0..4).map(|_| stream(7, 1, 2, 3).random()).collect();
        assert_eq!(a, b);
        let x: u64 = stream(7, 1, 2, 3).random();
        let y: u64 = stream(7, 1, 2, 4).random();
        assert_ne!(x, y);
    }

    #[test]
    fn beta_samples_have_the_right_mean_and_variance() {
        let mut rng = stream(1, 0, 0, 0);
        let n = 20_000;
        let xs: Vec<f32> = (0..n).map(|_| beta(&mut rng, 0.8)).collect();
        let mean = xs.iter().sum::<f32>() / n as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n as f32;
        // Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.0962 for a = 0.8.
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!((var - 0.0962).abs() < 0.005, "var {var}");
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
    }
}
