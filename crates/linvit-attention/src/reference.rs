//! Literal, obviously correct forms of the fast paths, written as the papers and upstream code
//! write them, for tests that compare fast against naive (outputs and gradients).

use burn::tensor::activation::{relu, softmax, softplus};
use burn::tensor::Tensor;

/// FLatten's kernel as upstream writes it: `x = (relu(x) + 1e-6) / softplus(scale)`, then
/// `x^p / ||x^p|| * ||x||` (norms over the full channel dim), the power with `powi`.
pub fn focus(x: Tensor<3>, scale: Tensor<3>, p: u32) -> Tensor<3> {
    let x = relu(x).add_scalar(1e-6) / softplus(scale, 1.0);
    let norm = x.clone().square().sum_dim(2).sqrt();
    let xp = x.powi_scalar(p as i32);
    let xp_norm = xp.clone().square().sum_dim(2).sqrt();
    xp / xp_norm * norm
}

/// Normalised linear attention as upstream writes it: `z = 1 / (q . mean(k) + 1e-6)`,
/// `kv = (k^T / sqrt(n)) (v / sqrt(n))`, `out = (q kv) z`.
///
/// # Shapes
/// - q `[B, h, N, d]`, k and v `[B, h, n, d]` -> `[B, h, N, d]`
pub fn linear_attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let n = k.dims()[2] as f64;
    let k_mean = k.clone().mean_dim(2); // [b, h, 1, d]
    let z = q
        .clone()
        .matmul(k_mean.swap_dims(2, 3))
        .add_scalar(1e-6)
        .recip(); // [b, h, N, 1]
    let s = n.powf(-0.5);
    let kv = k.swap_dims(2, 3).mul_scalar(s).matmul(v.mul_scalar(s)); // [b, h, d, d]
    q.matmul(kv) * z
}

/// `softmax(q k^T * scale) v` with the full score matrix.
///
/// # Shapes
/// - q `[B, h, N, d]`, k and v `[B, h, n, d]` -> `[B, h, N, d]`
pub fn softmax_attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> Tensor<4> {
    softmax(q.mul_scalar(scale).matmul(k.swap_dims(2, 3)), 3).matmul(v)
}
