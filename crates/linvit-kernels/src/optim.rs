//! One AdamW update of a flattened parameter in one pass over memory: the parameter, its
//! gradient and both moments read once, the new parameter and moments written once.
//!
//! Why: written with tensor ops (torch's single-tensor path, which `linvit-attention`'s
//! `ops::adamw_written_out` keeps as the reference), an update is fourteen element-wise passes,
//! each into a new buffer; on flex that was 3-4% of a T preset's training step. The
//! arithmetic here is the same f32 operations in the same order, element by element, so the
//! two agree bit for bit (the tests in `linvit-attention` hold them to it).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::CHUNK;

/// The scalars of one AdamW step, as f32 the way the written-out ops apply them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    /// `1 - lr * weight_decay` for a decayed parameter, `None` for one that is not.
    pub decay: Option<f32>,
    /// `1 - beta1`.
    pub one_minus_beta1: f32,
    pub beta2: f32,
    /// `1 - beta2`.
    pub one_minus_beta2: f32,
    /// `sqrt(1 - beta2^step)`.
    pub sqrt_bias2: f32,
    pub eps: f32,
    /// `lr / (1 - beta1^step)`.
    pub step_size: f32,
}

impl AdamW {
    /// The new `[parameter, exp_avg, exp_avg_sq]` from `param`, `grad` and the moments
    /// (`None` before the first step, as if they were zero).
    ///
    /// # Panics
    /// Where the lengths differ (a caller bug).
    pub fn update(
        &self,
        param: &[f32],
        grad: &[f32],
        moments: Option<[&[f32]; 2]>,
    ) -> [Vec<f32>; 3] {
        let n = param.len();
        assert!(grad.len() == n && moments.is_none_or(|[m, v]| m.len() == n && v.len() == n));
        let mut out = [(); 3].map(|_| Vec::with_capacity(n));
        let [p_out, m_out, v_out] = out.each_mut().map(|o| o.spare_capacity_mut());
        p_out
            .par_chunks_mut(CHUNK)
            .zip(m_out.par_chunks_mut(CHUNK))
            .zip(v_out.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(i, ((p_out, m_out), v_out))| {
                let range = i * CHUNK..i * CHUNK + p_out.len();
                let inputs = [&param[range.clone()], &grad[range.clone()]];
                let moments = moments.map(|[m, v]| [&m[range.clone()], &v[range.clone()]]);
                self.update_chunk([p_out, m_out, v_out], inputs, moments);
            });
        for o in &mut out {
            // SAFETY: the chunks cover all `n` elements of each spare capacity, and
            // `update_chunk` writes every element of its chunks.
            unsafe { o.set_len(n) };
        }
        out
    }

    fn update_chunk(
        &self,
        outputs: [&mut [MaybeUninit<f32>]; 3],
        inputs: [&[f32]; 2],
        moments: Option<[&[f32]; 2]>,
    ) {
        // torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
        let (b1, b2, c2) = (self.one_minus_beta1, self.beta2, self.one_minus_beta2);
        match moments {
            Some([m, v]) => {
                let n = inputs[0].len();
                assert!(m.len() == n && v.len() == n);
                self.write(outputs, inputs, |i, g| {
                    (m[i] + (g - m[i]) * b1, v[i] * b2 + (g * g) * c2)
                })
            }
            None => self.write(outputs, inputs, |_, g| (g * b1, (g * g) * c2)),
        }
    }

    /// Each element's new moments (`moments(i, grad[i])`), then its parameter: torch's
    /// `param.mul_(1 - lr * wd)`, `denom = (exp_avg_sq.sqrt() / sqrt(bias2)).add_(eps)`,
    /// `param.addcdiv_(exp_avg, denom, -step_size)`.
    #[inline(always)]
    fn write(
        &self,
        [p_out, m_out, v_out]: [&mut [MaybeUninit<f32>]; 3],
        [param, grad]: [&[f32]; 2],
        moments: impl Fn(usize, f32) -> (f32, f32),
    ) {
        let n = param.len();
        assert!(grad.len() == n && p_out.len() == n && m_out.len() == n && v_out.len() == n);
        // A parameter that is not decayed is multiplied by nothing, not by 1.
        let decayed = |p: f32| self.decay.map_or(p, |d| p * d);
        let (sqrt_bias2, eps, step_size) = (self.sqrt_bias2, self.eps, self.step_size);
        for i in 0..n {
            let (m, v) = moments(i, grad[i]);
            m_out[i].write(m);
            v_out[i].write(v);
            p_out[i].write(decayed(param[i]) - (m / (v.sqrt() / sqrt_bias2 + eps)) * step_size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch's update for one element, in f64: the kernel must be its f32 rounding.
    fn reference(hp: &AdamW, p: f64, g: f64, m: f64, v: f64) -> [f64; 3] {
        let m = m + (g - m) * hp.one_minus_beta1 as f64;
        let v = v * hp.beta2 as f64 + g * g * hp.one_minus_beta2 as f64;
        let p = p * hp.decay.unwrap_or(1.0) as f64;
        let denom = v.sqrt() / hp.sqrt_bias2 as f64 + hp.eps as f64;
        [p - m / denom * hp.step_size as f64, m, v]
    }

    #[test]
    fn an_update_is_torchs_adamw_element_by_element() {
        // Longer than one chunk, not a multiple of it; both with and without decay, first
        // step (no moments) and a later one.
        let n = CHUNK + 37;
        let wave = |step: f32| crate::testing::wave(n, step);
        let (p, g, m, v) = (wave(0.37), wave(0.11), wave(0.05), wave(0.013));
        let v: Vec<f32> = v.iter().map(|x| x * x).collect();
        for decay in [None, Some(1.0 - 1e-3 * 0.05)] {
            for first in [true, false] {
                let step = if first { 1 } else { 7 };
                let hp = AdamW {
                    decay,
                    one_minus_beta1: 0.1,
                    beta2: 0.999,
                    one_minus_beta2: 1.0 - 0.999,
                    sqrt_bias2: (1.0 - 0.999f64.powi(step)).sqrt() as f32,
                    eps: 1e-8,
                    step_size: (1e-3 / (1.0 - 0.9f64.powi(step))) as f32,
                };
                let moments = (!first).then_some([&m[..], &v[..]]);
                let [p2, m2, v2] = hp.update(&p, &g, moments);
                for i in (0..n).step_by(97).chain([n - 1]) {
                    let (m0, v0) = if first {
                        (0.0, 0.0)
                    } else {
                        (m[i] as f64, v[i] as f64)
                    };
                    let want = reference(&hp, p[i] as f64, g[i] as f64, m0, v0);
                    for (got, want) in [p2[i], m2[i], v2[i]].into_iter().zip(want) {
                        let tol = 1e-6 * want.abs().max(1e-3);
                        assert!((got as f64 - want).abs() <= tol, "{i}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
