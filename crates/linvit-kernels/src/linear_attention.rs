//! Normalised linear attention per head, for training: `out = (q kv) / (q . mean + 1e-6)` with
//! `kv = s k^T v` and `mean = s k^T 1`, `s = 1 / sqrt(n)`, on keys already divided by `sqrt(n)`
//! (`linvit_attention::focused::linear_attend_prescaled`, the op path, says why), with its
//! backward.
//!
//! Why: op by op under autodiff, this splits heads apart (copies of `q, k, v`), writes `kv` and
//! the key sums, concatenates them, multiplies, cuts the product apart and divides, and each op
//! keeps its inputs for a backward of its own. Here each image is done head by head on views of
//! the merged-head rows, keeping only `[kv | mean]` (`d x (d + 1)` per head) and each query's
//! `1 / den`.

use rayon::prelude::*;

use crate::matmul::{product, Operand};
use crate::rows::Rows;

/// What [`forward_keeping`] keeps: per image and head `[kv | mean]` (`[B, heads, d, d + 1]`)
/// and `1 / den` per query (`[B, heads, N]`), with the output it returned.
#[derive(Clone, Debug, Default)]
pub struct LinearSaved {
    kv: Vec<f32>,
    inv_den: Vec<f32>,
}

/// The gradients [`backward`] computes: `[B * N, C]`, `[B * n, C]`, `[B * n, C]`.
#[derive(Clone, Debug)]
pub struct LinearGrads {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Head dim, queries and keys per image, after checking the sizes.
fn sizes(batch: usize, heads: usize, q: &Rows, k: &Rows, v: &Rows) -> [usize; 3] {
    let c = q.width();
    assert!(heads > 0 && c.is_multiple_of(heads) && batch > 0);
    assert!(k.width() == c && v.width() == c && k.rows() == v.rows());
    assert!(q.rows().is_multiple_of(batch) && k.rows().is_multiple_of(batch));
    let n_k = k.rows() / batch;
    assert!(n_k > 0);
    [c / heads, q.rows() / batch, n_k]
}

/// Queries `[B * N, C]`, prescaled keys and values `[B * n, C]` -> `[B * N, C]` (heads merged),
/// the rows read in place, each image on its own thread; keeps what [`backward`] needs.
///
/// # Panics
/// On sizes that disagree (a caller bug).
pub fn forward_keeping(
    batch: usize,
    heads: usize,
    q: Rows,
    k: Rows,
    v: Rows,
) -> (Vec<f32>, LinearSaved) {
    let [d, n_q, n_k] = sizes(batch, heads, &q, &k, &v);
    let c = q.width();
    let s = (n_k as f32).powf(-0.5);
    let mut out = crate::zeros(q.rows() * c);
    let mut kv = crate::zeros(batch * heads * d * (d + 1));
    let mut inv_den = vec![0f32; batch * heads * n_q];
    out.par_chunks_mut(n_q * c)
        .zip(kv.par_chunks_mut(heads * d * (d + 1)))
        .zip(inv_den.par_chunks_mut(heads * n_q))
        .enumerate()
        .for_each(|(b, ((out, kv), inv_den))| {
            let mut aug = vec![0f32; n_q * (d + 1)];
            for h in 0..heads {
                let kv = &mut kv[h * d * (d + 1)..][..d * (d + 1)];
                let keys_t = k.operand_transposed(b * n_k, h * d);
                let values = v.operand(b * n_k, h * d);
                product(kv, [d + 1, 1], keys_t, values, [d, d, n_k], false, s);
                for j in 0..n_k {
                    let key = &k.row(b * n_k + j)[h * d..][..d];
                    for (i, &x) in key.iter().enumerate() {
                        kv[i * (d + 1) + d] += x;
                    }
                }
                (0..d).for_each(|i| kv[i * (d + 1) + d] *= s);
                // [num | den - 1e-6] = q [kv | mean].
                let queries = q.operand(b * n_q, h * d);
                let kv_op = Operand(kv, [d + 1, 1]);
                product(
                    &mut aug,
                    [d + 1, 1],
                    queries,
                    kv_op,
                    [n_q, d + 1, d],
                    false,
                    1.0,
                );
                let inv_den = &mut inv_den[h * n_q..][..n_q];
                for (t, (row, z)) in aug.chunks_exact(d + 1).zip(inv_den).enumerate() {
                    *z = 1.0 / (row[d] + 1e-6);
                    let out = &mut out[t * c + h * d..][..d];
                    out.iter_mut().zip(row).for_each(|(o, &x)| *o = x * *z);
                }
            }
        });
    (out, LinearSaved { kv, inv_den })
}

/// The gradients of `sum(forward_keeping(..) * grad)` for the queries, keys and values, from the
/// inputs, the output `out` and `saved`, each image on its own thread.
///
/// # Panics
/// On sizes that disagree with the forward's (a caller bug).
pub fn backward(
    batch: usize,
    heads: usize,
    [q, k, v]: [Rows; 3],
    out: &[f32],
    saved: &LinearSaved,
    grad: &[f32],
) -> LinearGrads {
    let [d, n_q, n_k] = sizes(batch, heads, &q, &k, &v);
    let c = q.width();
    assert!(out.len() == q.rows() * c && grad.len() == out.len());
    assert!(saved.kv.len() == batch * heads * d * (d + 1));
    let s = (n_k as f32).powf(-0.5);
    let [mut dq, mut dk, mut dv] = [q.rows(), k.rows(), k.rows()].map(|r| crate::zeros(r * c));
    dq.par_chunks_mut(n_q * c)
        .zip(dk.par_chunks_mut(n_k * c))
        .zip(dv.par_chunks_mut(n_k * c))
        .enumerate()
        .for_each(|(b, ((dq, dk), dv))| {
            // [d num | d den] per query, and [d kv | d mean] per head, augmented as the forward's.
            let mut d_aug = vec![0f32; n_q * (d + 1)];
            let mut d_kv = vec![0f32; d * (d + 1)];
            for h in 0..heads {
                let kv = &saved.kv[(b * heads + h) * d * (d + 1)..][..d * (d + 1)];
                let inv_den = &saved.inv_den[(b * heads + h) * n_q..][..n_q];
                // out = num / den: d num = g / den, d den = -(g . out) / den.
                for (t, (row, &z)) in d_aug.chunks_exact_mut(d + 1).zip(inv_den).enumerate() {
                    let g = &grad[(b * n_q + t) * c + h * d..][..d];
                    let o = &out[(b * n_q + t) * c + h * d..][..d];
                    let dot: f32 = g.iter().zip(o).map(|(g, o)| g * o).sum();
                    row[..d].iter_mut().zip(g).for_each(|(r, &g)| *r = g * z);
                    row[d] = -dot * z;
                }
                let d_aug_op = Operand(&d_aug, [d + 1, 1]);
                // [num | den] = q [kv | mean]: d q = d_aug [kv | mean]^T, d [kv | mean] = q^T d_aug.
                let kv_t = Operand(kv, [1, d + 1]);
                product(
                    &mut dq[h * d..],
                    [c, 1],
                    d_aug_op,
                    kv_t,
                    [n_q, d, d + 1],
                    false,
                    1.0,
                );
                let queries_t = q.operand_transposed(b * n_q, h * d);
                product(
                    &mut d_kv,
                    [d + 1, 1],
                    queries_t,
                    d_aug_op,
                    [d, d + 1, n_q],
                    false,
                    1.0,
                );
                // kv = s k^T v, mean = s k^T 1: d k = s (v d_kv^T + 1 d_mean^T), d v = s k d_kv.
                let d_kv_t = Operand(&d_kv, [1, d + 1]);
                let values = v.operand(b * n_k, h * d);
                product(
                    &mut dk[h * d..],
                    [c, 1],
                    values,
                    d_kv_t,
                    [n_k, d, d],
                    false,
                    s,
                );
                for row in dk.chunks_exact_mut(c) {
                    let row = &mut row[h * d..][..d];
                    for (i, x) in row.iter_mut().enumerate() {
                        *x += s * d_kv[i * (d + 1) + d];
                    }
                }
                let keys = k.operand(b * n_k, h * d);
                let d_kv_op = Operand(&d_kv, [d + 1, 1]);
                product(
                    &mut dv[h * d..],
                    [c, 1],
                    keys,
                    d_kv_op,
                    [n_k, d, d],
                    false,
                    s,
                );
            }
        });
    LinearGrads {
        q: dq,
        k: dk,
        v: dv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wave;

    /// The forward written out in f64 for one image and head.
    fn naive(q: &[f32], k: &[f32], v: &[f32], c: usize, heads: usize, batch: usize) -> Vec<f64> {
        let d = c / heads;
        let (n_q, n_k) = (q.len() / (batch * c), k.len() / (batch * c));
        let s = (n_k as f64).powf(-0.5);
        let mut out = vec![0f64; q.len()];
        for b in 0..batch {
            for h in 0..heads {
                let at = |x: &[f32], r: usize, i: usize| x[r * c + h * d + i] as f64;
                for t in 0..n_q {
                    let qt = |i| at(q, b * n_q + t, i);
                    let den: f64 = (0..d)
                        .map(|i| qt(i) * s * (0..n_k).map(|j| at(k, b * n_k + j, i)).sum::<f64>())
                        .sum::<f64>()
                        + 1e-6;
                    for e in 0..d {
                        let num: f64 = (0..d)
                            .map(|i| {
                                qt(i)
                                    * s
                                    * (0..n_k)
                                        .map(|j| at(k, b * n_k + j, i) * at(v, b * n_k + j, e))
                                        .sum::<f64>()
                            })
                            .sum();
                        out[(b * n_q + t) * c + h * d + e] = num / den;
                    }
                }
            }
        }
        out
    }

    /// Two images of 11 queries and 7 keys, 2 heads of 3 channels; the forward against the
    /// written-out form, and the backward against central differences of the f64 form along a
    /// random direction.
    #[test]
    fn matches_the_attention_written_out_and_its_directional_derivative() {
        let (batch, n_q, n_k, heads, c) = (2, 11, 7, 2, 6);
        let positive =
            |len, step| -> Vec<f32> { wave(len, step).iter().map(|x| x.abs() + 0.1).collect() };
        let (q, k) = (
            positive(batch * n_q * c, 0.37),
            positive(batch * n_k * c, 0.53),
        );
        let v = wave(batch * n_k * c, 0.71);
        fn rows(x: &[f32]) -> Rows<'_> {
            Rows::dense(x, 6) // c
        }
        let (got, saved) = forward_keeping(batch, heads, rows(&q), rows(&k), rows(&v));
        let want = naive(&q, &k, &v, c, heads, batch);
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f64, |w, (&g, x)| w.max((g as f64 - x).abs()));
        assert!(worst < 1e-6, "forward: worst error {worst:e}");

        let g = wave(got.len(), 0.29);
        let grads = backward(
            batch,
            heads,
            [rows(&q), rows(&k), rows(&v)],
            &got,
            &saved,
            &g,
        );
        // <grads, u> against (L(x + e u) - L(x - e u)) / 2e, L = sum(out * g), in f64.
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let out = naive(q, k, v, c, heads, batch);
            out.iter().zip(&g).map(|(o, &g)| o * g as f64).sum()
        };
        let (uq, uk, uv) = (wave(q.len(), 1.3), wave(k.len(), 1.7), wave(v.len(), 2.3));
        let eps = 1e-3f32;
        let shift = |x: &[f32], u: &[f32], sign: f32| -> Vec<f32> {
            x.iter().zip(u).map(|(x, u)| x + sign * eps * u).collect()
        };
        let numeric = (loss(
            &shift(&q, &uq, 1.0),
            &shift(&k, &uk, 1.0),
            &shift(&v, &uv, 1.0),
        ) - loss(
            &shift(&q, &uq, -1.0),
            &shift(&k, &uk, -1.0),
            &shift(&v, &uv, -1.0),
        )) / (2.0 * eps as f64);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a * b) as f64).sum::<f64>();
        let analytic = dot(&grads.q, &uq) + dot(&grads.k, &uk) + dot(&grads.v, &uv);
        let err = (numeric - analytic).abs() / numeric.abs().max(1.0);
        assert!(
            err < 1e-3,
            "backward: {analytic} vs {numeric} (relative {err:e})"
        );
    }
}
