//! FLatten's focusing function on token rows, forward and backward, for training on flex.
//!
//! Per row of `C` channels, with `s = softplus(scale)` per channel and a constant `t`:
//! `a = (relu(x) + 1e-6) / s`, `y = a / max(a)`, `w = y^p`, `out = t w ||a|| / ||w||`, which is
//! `t a^p / ||a^p|| ||a||` (the power is taken of `a / max(a)` so that it cannot underflow; the
//! maximum does not change the value, so it is held constant for the gradient, exactly as
//! `linvit_attention::focused::focus` does).
//!
//! Why: written with Burn's ops this is fifteen passes over `[B, N, C]` forward and as many
//! backward, each saving its own intermediate; here one pass each way, saving only the input.
//! The forward is the inference kernel's row function (`focused::focus_row`, which takes the
//! maximum only where the norms would underflow: the same number).

use rayon::prelude::*;

use crate::focused::{focus_row, power, powi};
use crate::simd::{dot, multiversion};

/// The focusing function's constants; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Focus<'a> {
    /// `1 / softplus(scale)` per channel, `[C]`.
    pub inv_scale: &'a [f32],
    /// The power `p >= 1`.
    pub power: u32,
    /// The constant factor `t`.
    pub times: f32,
}

/// The gradients [`Focus::backward`] computes.
#[derive(Clone, Debug, PartialEq)]
pub struct FocusGrads {
    /// `[rows, C]`.
    pub input: Vec<f32>,
    /// The gradient with respect to `softplus(scale)` per channel, `[C]` (summed over rows in
    /// a fixed order, so the same bits on any number of threads).
    pub softplus_scale: Vec<f32>,
}

impl Focus<'_> {
    fn width(&self) -> usize {
        self.inv_scale.len()
    }

    /// The focused rows of `x` `[rows, C]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let c = self.width();
        assert!(c > 0 && x.len().is_multiple_of(c) && self.power >= 1);
        let mut out = crate::zeros(x.len());
        out.par_chunks_mut(crate::rows_per_task(c) * c)
            .zip(x.par_chunks(crate::rows_per_task(c) * c))
            .for_each(|(out, x)| {
                for (o, x) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    focus_row(o, x, self.inv_scale, None, self.power, self.times);
                }
            });
        out
    }

    /// The gradients of `sum(forward(x) * grad)`.
    pub fn backward(&self, x: &[f32], grad: &[f32]) -> FocusGrads {
        let c = self.width();
        assert!(c > 0 && x.len().is_multiple_of(c) && grad.len() == x.len());
        let mut input = crate::zeros(x.len());
        let partials: Vec<Vec<f32>> = input
            .par_chunks_mut(crate::rows_per_task(c) * c)
            .zip(
                x.par_chunks(crate::rows_per_task(c) * c)
                    .zip(grad.par_chunks(crate::rows_per_task(c) * c)),
            )
            .map(|(dx, (x, g))| {
                let mut ds = vec![0f32; c];
                let mut w = vec![0f32; c];
                let rows = dx
                    .chunks_exact_mut(c)
                    .zip(x.chunks_exact(c).zip(g.chunks_exact(c)));
                for (dx, (x, g)) in rows {
                    focus_row_backward(
                        dx,
                        &mut w,
                        &mut ds,
                        x,
                        g,
                        self.inv_scale,
                        self.power,
                        self.times,
                    );
                }
                ds
            })
            .collect();
        FocusGrads {
            input,
            softplus_scale: crate::sum_in_order(partials.iter().map(Vec::as_slice), c),
        }
    }
}

multiversion! {
    /// One row of [`Focus::backward`]. With `f = ||a|| / ||w||` and `G = t sum(g w)`:
    /// `dw = t f g - G ||a|| w / ||w||^3`, `da = dw p y^(p-1) / max(a) + G a / (||w|| ||a||)`,
    /// `dx = da / s` where `x > 0` (0 elsewhere), and `d softplus(scale) = -da a / s` summed
    /// into `ds`. `w` is scratch of the row's width. The powers of the common exponents are
    /// written out so the loops vectorise (`powi` recurses, so it is a call per element), with
    /// the same rounding.
    #[allow(clippy::too_many_arguments)]
    fn focus_row_backward(
        dx: &mut [f32],
        w: &mut [f32],
        ds: &mut [f32],
        x: &[f32],
        g: &[f32],
        inv_scale: &[f32],
        p: u32,
        times: f32,
    ) {
        let row = RowBackward { dx, w, ds, x, g, inv_scale, p, times };
        match p {
            1 => row.run(power::<1>, |_| 1.0),
            2 => row.run(power::<2>, power::<1>),
            3 => row.run(power::<3>, power::<2>),
            4 => row.run(power::<4>, power::<3>),
            _ => row.run(|v| powi(v, p), |v| powi(v, p - 1)),
        }
    }
}

/// [`focus_row_backward`]'s arguments.
struct RowBackward<'a> {
    dx: &'a mut [f32],
    w: &'a mut [f32],
    ds: &'a mut [f32],
    x: &'a [f32],
    g: &'a [f32],
    inv_scale: &'a [f32],
    p: u32,
    times: f32,
}

impl RowBackward<'_> {
    /// The row's backward with `pow_p(v) = v^p` and `pow_p1(v) = v^(p-1)`; inlined into each
    /// instruction set's copy of [`focus_row_backward`].
    #[inline(always)]
    fn run(self, pow_p: impl Fn(f32) -> f32, pow_p1: impl Fn(f32) -> f32) {
        let RowBackward {
            dx,
            w,
            ds,
            x,
            g,
            inv_scale,
            p,
            times,
        } = self;
        // dx holds a first.
        for ((a, &x), &s) in dx.iter_mut().zip(x).zip(inv_scale) {
            *a = (x.max(0.0) + 1e-6) * s;
        }
        let n1 = dot(dx, dx).sqrt();
        let inv_max = 1.0 / crate::simd::max(dx);
        for (w, &a) in w.iter_mut().zip(dx.iter()) {
            *w = pow_p(a * inv_max);
        }
        let n2 = dot(w, w).sqrt();
        let f = n1 / n2;
        let big_g = times * dot(g, w);
        let c_w = big_g * n1 / (n2 * n2 * n2);
        let c_a = big_g / (n2 * n1);
        let pm = p as f32 * inv_max;
        for (((((d, &w), &g), &x), &s), ds) in dx
            .iter_mut()
            .zip(w.iter())
            .zip(g)
            .zip(x)
            .zip(inv_scale)
            .zip(ds.iter_mut())
        {
            let a = *d;
            let y = a * inv_max;
            let dw = times * f * g - c_w * w;
            let da = dw * pm * pow_p1(y) + c_a * a;
            *ds -= da * a * s;
            *d = if x > 0.0 { da * s } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wave;

    /// The focusing function in f64, straight from its definition (no maximum).
    fn focus_f64(x: &[f32], softplus: &[f64], p: u32, times: f64) -> Vec<f64> {
        let c = softplus.len();
        x.chunks(c)
            .flat_map(|row| {
                let a: Vec<f64> = row
                    .iter()
                    .zip(softplus)
                    .map(|(&x, s)| ((x as f64).max(0.0) + 1e-6) / s)
                    .collect();
                let n1 = a.iter().map(|v| v * v).sum::<f64>().sqrt();
                let ap: Vec<f64> = a.iter().map(|v| v.powi(p as i32)).collect();
                let n2 = ap.iter().map(|v| v * v).sum::<f64>().sqrt();
                ap.into_iter().map(move |v| times * v / n2 * n1)
            })
            .collect()
    }

    /// Forward against the definition, backward against central differences of
    /// `sum(focus(x) * g)` in f64 for the input and for `softplus(scale)`; p = 1, 3 and 6, a
    /// row of 37 channels with some negative inputs (relu's zero gradient), 300 rows (several
    /// tasks).
    #[test]
    fn forward_and_backward_match_the_definition() {
        let c = 37;
        let rows = 300;
        let x: Vec<f32> = wave(rows * c, 0.41).iter().map(|v| v + 0.4).collect();
        let g = wave(rows * c, 0.23);
        let softplus: Vec<f64> = (0..c).map(|i| 0.5 + i as f64 * 0.03).collect();
        let inv: Vec<f32> = softplus.iter().map(|s| (1.0 / s) as f32).collect();
        for p in [1, 3, 6] {
            let focus = Focus {
                inv_scale: &inv,
                power: p,
                times: 0.7,
            };
            let out = focus.forward(&x);
            let exact = focus_f64(&x, &softplus, p, 0.7);
            for (a, b) in out.iter().zip(&exact) {
                assert!(
                    (*a as f64 - b).abs() < 1e-5 * b.abs().max(1e-2),
                    "p={p}: {a} vs {b}"
                );
            }
            let grads = focus.backward(&x, &g);
            let objective = |x: &[f32], s: &[f64]| -> f64 {
                focus_f64(x, s, p, 0.7)
                    .iter()
                    .zip(&g)
                    .map(|(o, g)| o * *g as f64)
                    .sum()
            };
            let h = 1e-3;
            for e in (0..x.len()).step_by(41) {
                if x[e].abs() < 2e-3 {
                    continue; // relu's kink
                }
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[e] += h;
                xm[e] -= h;
                let d = (objective(&xp, &softplus) - objective(&xm, &softplus)) / (2.0 * h as f64);
                let got = grads.input[e] as f64;
                assert!(
                    (got - d).abs() < 2e-3 * d.abs().max(1e-1),
                    "p={p}: dx[{e}] {got} vs {d}"
                );
            }
            for ch in 0..c {
                let hs = 1e-5;
                let (mut sp, mut sm) = (softplus.clone(), softplus.clone());
                sp[ch] += hs;
                sm[ch] -= hs;
                let d = (objective(&x, &sp) - objective(&x, &sm)) / (2.0 * hs);
                let got = grads.softplus_scale[ch] as f64;
                assert!(
                    (got - d).abs() < 2e-3 * d.abs().max(1e-1),
                    "p={p}: ds[{ch}] {got} vs {d}"
                );
            }
        }
    }
}
