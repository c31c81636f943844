//! Weights whose shape depends on the input resolution, resized while a checkpoint loads, the way
//! the authors' fine-tuning code does it: a model trained at 224 loads into one built for 384 (or
//! for another Swin window).
//!
//! The rules for the mixers' parameters, per name ([`rule_by_name`]; the backbones add theirs,
//! such as a ViT's `pos_embed`, bicubic with the CLS token kept, as DeiT's fine-tuning does):
//! - FLatten's `positional_encoding` `[1, s*s, C]`: bilinear over the key grid, as this crate's
//!   forward does at another grid.
//! - Swin's `relative_position_bias_table` `[(2w-1)^2, heads]`: bicubic over the offset grid
//!   (Swin's `load_pretrained`).
//! - Agent attention's `ah/aw/ha/wa` biases: 1-D linear along their spatial axis.
//!
//! Grids are square for every parameter above except FLatten/agent biases in CSwin stripes,
//! whose token count alone does not say the stripe's shape; those fail with a message naming the
//! key instead of guessing.
//!
//! The resizing runs on the host, inside burn-store's adapter chain, on the tensor as read from
//! the file, before it is applied to the module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{bridge, ModuleAdapter, ModuleContext};
use burn::tensor::{DType, Shape, TensorData};

use crate::ops::{cubic_resize_weights, linear_resize_weights};

/// Interpolation of a resized grid, both with PyTorch's `align_corners=False`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    Linear,
    Cubic,
}

impl Interp {
    fn weights(self, input: usize, output: usize) -> Vec<f32> {
        match self {
            Interp::Linear => linear_resize_weights(input, output),
            Interp::Cubic => cubic_resize_weights(input, output),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Interp::Linear => "bilinear",
            Interp::Cubic => "bicubic",
        }
    }
}

/// How one resolution-dependent parameter is resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Tokens `[1, prefix + s*s, C]` on a square grid; the prefix tokens (CLS) are kept.
    SquareTokens(Interp),
    /// Swin's relative position table `[(2w-1)^2, heads]`, a square grid of offsets, bicubic.
    OffsetTable,
    /// One axis alone, 1-D linear (agent attention's per-row and per-column biases).
    Axis(usize),
}

/// The rule for a mixer's parameter, by the last segment of its path. The backbones' own
/// parameters (a ViT's or PVT's `pos_embed`) are theirs to rule on (`linvit-models`).
pub fn rule_by_name(path: &str) -> Option<Rule> {
    match path.rsplit('.').next().unwrap_or(path) {
        "positional_encoding" => Some(Rule::SquareTokens(Interp::Linear)),
        "relative_position_bias_table" => Some(Rule::OffsetTable),
        "ah_bias" => Some(Rule::Axis(3)),
        "aw_bias" => Some(Rule::Axis(4)),
        "ha_bias" => Some(Rule::Axis(2)),
        "wa_bias" => Some(Rule::Axis(3)),
        _ => None,
    }
}

/// A resize worked out from the two shapes: the tensor seen as `[outer, h, w, inner]` after
/// `prefix` leading rows that are copied as they are.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    prefix: usize,
    outer: usize,
    inner: usize,
    from: [usize; 2],
    to: [usize; 2],
    interp: Interp,
}

fn square_side(n: usize) -> Option<usize> {
    let s = (n as f64).sqrt().round() as usize;
    (s * s == n).then_some(s)
}

/// A parameter whose checkpoint shape cannot be resized to the module's under its rule.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("cannot resize {from:?} to {to:?}: {reason}")]
pub struct ResizeError {
    pub from: Vec<usize>,
    pub to: Vec<usize>,
    pub reason: String,
}

fn plan(rule: Rule, from: &[usize], to: &[usize]) -> Result<Plan, ResizeError> {
    let error = |reason: String| ResizeError {
        from: from.to_vec(),
        to: to.to_vec(),
        reason,
    };
    let mismatch = || error(format!("the shapes do not fit {rule:?}"));
    if from.len() != to.len() {
        return Err(mismatch());
    }
    // Every axis but the resized one must agree.
    let same_except = |axis: usize| (0..from.len()).all(|i| i == axis || from[i] == to[i]);
    match rule {
        Rule::SquareTokens(interp) => {
            if from.len() != 3 || from[0] != 1 || !same_except(1) {
                return Err(mismatch());
            }
            // The fewest prefix tokens (CLS, distillation) that leave a square grid on both sides.
            let (prefix, s, t) = (0..from[1].min(to[1]).min(3))
                .find_map(|p| Some((p, square_side(from[1] - p)?, square_side(to[1] - p)?)))
                .ok_or_else(|| {
                    error("the tokens are not a square grid (plus CLS tokens) on both sides".into())
                })?;
            Ok(Plan {
                prefix,
                outer: 1,
                inner: from[2],
                from: [s, s],
                to: [t, t],
                interp,
            })
        }
        Rule::OffsetTable => {
            let sides = (square_side(from[0]), square_side(to[0]));
            match sides {
                (Some(s), Some(t)) if from.len() == 2 && same_except(0) => Ok(Plan {
                    prefix: 0,
                    outer: 1,
                    inner: from[1],
                    from: [s, s],
                    to: [t, t],
                    interp: Interp::Cubic,
                }),
                _ => Err(mismatch()),
            }
        }
        Rule::Axis(axis) => {
            if axis >= from.len() || !same_except(axis) {
                return Err(mismatch());
            }
            Ok(Plan {
                prefix: 0,
                outer: from[..axis].iter().product(),
                inner: from[axis + 1..].iter().product(),
                from: [from[axis], 1],
                to: [to[axis], 1],
                interp: Interp::Linear,
            })
        }
    }
}

impl Plan {
    fn describe(&self) -> String {
        if self.from[1] == 1 {
            format!("{} -> {} (linear)", self.from[0], self.to[0])
        } else {
            format!(
                "{}x{} -> {}x{} ({})",
                self.from[0],
                self.from[1],
                self.to[0],
                self.to[1],
                self.interp.name()
            )
        }
    }

    /// `data` (any float dtype) resized to `to`, in f32.
    fn resized(&self, data: TensorData, to: &[usize]) -> TensorData {
        let values: Vec<f32> = data.convert::<f32>().try_into_vec().unwrap_or_default();
        TensorData::new(self.apply(&values), to.to_vec())
    }

    /// The resized values of `x`, laid out `[prefix rows | outer, h, w, inner]`.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let ([h, w], [th, tw]) = (self.from, self.to);
        let (outer, inner) = (self.outer, self.inner);
        let wy = self.interp.weights(h, th);
        let wx = self.interp.weights(w, tw);
        let head = self.prefix * inner;
        let grid = &x[head..];
        // Rows first, then columns; both are sparse (at most four taps), so zeros are skipped.
        let mut rows = vec![0.0f32; outer * th * w * inner];
        for o in 0..outer {
            for ty in 0..th {
                for y in 0..h {
                    let k = wy[ty * h + y];
                    if k == 0.0 {
                        continue;
                    }
                    let src = &grid[(o * h + y) * w * inner..][..w * inner];
                    let dst = &mut rows[(o * th + ty) * w * inner..][..w * inner];
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += k * s);
                }
            }
        }
        let mut out = x[..head].to_vec();
        out.resize(head + outer * th * tw * inner, 0.0);
        let body = &mut out[head..];
        for r in 0..outer * th {
            for tx in 0..tw {
                for xx in 0..w {
                    let k = wx[tx * w + xx];
                    if k == 0.0 {
                        continue;
                    }
                    let src = &rows[(r * w + xx) * inner..][..inner];
                    let dst = &mut body[(r * tw + tx) * inner..][..inner];
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += k * s);
                }
            }
        }
        out
    }
}

/// Resizes `data` (any float dtype; the result is f32) from its shape to `to` under `rule`.
pub fn resize(data: TensorData, rule: Rule, to: &[usize]) -> Result<TensorData, ResizeError> {
    let from = data.shape().to_vec();
    Ok(plan(rule, &from, to)?.resized(data, to))
}

/// What the resizing adapter did, per parameter path: a description, or why it could not.
pub type ResizeLog = Arc<Mutex<Vec<(String, Result<String, ResizeError>)>>>;

/// A burn-store adapter that resizes the parameters named in its plan when the checkpoint's
/// shape differs from the module's; every other tensor passes through untouched.
#[derive(Clone)]
pub struct Resizer {
    targets: Arc<HashMap<String, (Rule, Vec<usize>)>>,
    log: ResizeLog,
}

impl Resizer {
    /// `targets`: our parameter path -> its rule and the module's shape for it.
    pub fn new(targets: HashMap<String, (Rule, Vec<usize>)>) -> Self {
        Self {
            targets: Arc::new(targets),
            log: Arc::default(),
        }
    }

    /// What was resized (or refused) so far, sorted by path.
    pub fn log(&self) -> Vec<(String, Result<String, ResizeError>)> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        log.sort_by(|a, b| a.0.cmp(&b.0));
        log
    }
}

impl ModuleAdapter for Resizer {
    fn adapt(&self, tensor: PackTensor, _ctx: ModuleContext<'_>) -> PackTensor {
        let Some((rule, target)) = self.targets.get(&tensor.name) else {
            return tensor;
        };
        let from: Vec<usize> = tensor.shape.iter().copied().collect();
        if from == *target {
            return tensor;
        }
        let record = |r: Result<String, ResizeError>| {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.push((tensor.name.clone(), r));
        };
        match plan(*rule, &from, target) {
            Ok(plan) => {
                record(Ok(plan.describe()));
                let (name, shape) = (tensor.name.clone(), Shape::from(target.clone()));
                let to = target.clone();
                bridge::map_data(tensor, name, DType::F32, shape, move |data| {
                    plan.resized(data, &to)
                })
            }
            Err(reason) => {
                // Left as it is: the applier then reports the shape mismatch, with this reason.
                record(Err(reason));
                tensor
            }
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(values: &[f32], shape: Vec<usize>) -> TensorData {
        TensorData::new(values.to_vec(), shape)
    }

    #[test]
    fn bicubic_grid_matches_pytorch() {
        // F.interpolate(torch.tensor([[1., 2.], [3., 4.]])[None, None], size=(4, 4),
        //               mode='bicubic', align_corners=False)
        let want = [
            [0.68359375, 1.015625, 1.5625, 1.89453125],
            [1.34765625, 1.6796875, 2.2265625, 2.55859375],
            [2.44140625, 2.7734375, 3.3203125, 3.65234375],
            [3.10546875, 3.4375, 3.984375, 4.31640625],
        ];
        // As a position embedding [1, 4, 1] -> [1, 16, 1].
        let out = resize(
            grid(&[1.0, 2.0, 3.0, 4.0], vec![1, 4, 1]),
            Rule::SquareTokens(Interp::Cubic),
            &[1, 16, 1],
        )
        .unwrap();
        let got: Vec<f32> = out.try_into_vec().unwrap();
        for (g, w) in got.iter().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn cls_token_is_kept_and_channels_resize_independently() {
        // [1, 1 + 2*2, 2]: CLS row (9, -9), then channel 0 = 1..4 and channel 1 = 10 * that.
        let x = [9.0, -9.0, 1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0];
        let out = resize(
            grid(&x, vec![1, 5, 2]),
            Rule::SquareTokens(Interp::Linear),
            &[1, 17, 2],
        )
        .unwrap();
        let got: Vec<f32> = out.try_into_vec().unwrap();
        assert_eq!(&got[..2], &[9.0, -9.0]);
        // Bilinear 2x2 -> 4x4 of [[1,2],[3,4]]: corners stay, the first row is 1, 1.25, 1.75, 2.
        let ch0: Vec<f32> = got[2..].iter().step_by(2).copied().collect();
        let ch1: Vec<f32> = got[3..].iter().step_by(2).copied().collect();
        assert_eq!(&ch0[..4], &[1.0, 1.25, 1.75, 2.0]);
        assert_eq!(ch0[15], 4.0);
        for (a, b) in ch0.iter().zip(&ch1) {
            assert!((10.0 * a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn agent_biases_resize_along_their_axis_only() {
        // ah_bias [1, h=1, m=2, H=2, 1] -> H = 4.
        let x = [0.0, 1.0, 10.0, 20.0];
        let out = resize(
            grid(&x, vec![1, 1, 2, 2, 1]),
            Rule::Axis(3),
            &[1, 1, 2, 4, 1],
        )
        .unwrap();
        let got: Vec<f32> = out.try_into_vec().unwrap();
        assert_eq!(got, vec![0.0, 0.25, 0.75, 1.0, 10.0, 12.5, 17.5, 20.0]);
    }

    #[test]
    fn same_size_is_the_identity_and_bad_shapes_are_refused() {
        let x: Vec<f32> = (0..9 * 3).map(|i| i as f32).collect();
        let out = resize(grid(&x, vec![9, 3]), Rule::OffsetTable, &[9, 3]).unwrap();
        assert_eq!(out.try_into_vec::<f32>().unwrap(), x);
        assert!(resize(grid(&x, vec![9, 3]), Rule::OffsetTable, &[25, 4]).is_err());
        let stripe = vec![0.0f32; 56 * 2];
        let err = resize(
            grid(&stripe, vec![1, 56, 2]),
            Rule::SquareTokens(Interp::Linear),
            &[1, 96, 2],
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a square grid"), "{err}");
    }
}
