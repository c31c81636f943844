//! The optimizer side of the papers' recipe, written to match PyTorch number for number:
//! AdamW (`torch.optim.AdamW`, single-tensor path), the authors' no-weight-decay rule, global-norm
//! gradient clipping (`torch.nn.utils.clip_grad_norm_`), the warmup + cosine schedule stepped per
//! iteration (timm's `CosineLRScheduler`), and an EMA of the weights (timm's `ModelEmaV2`).
//!
//! Why not burn-optim's `AdamW` + `GradientClipping` + lr schedulers: its clipping is per tensor,
//! not global; its optimizer state is keyed by `ParamId`, which has to survive a save/load round
//! trip for an exact resume; and the no-decay rule needs parameter groups by path. Here every
//! state tensor is keyed by the parameter's module path and stored as exact f32 bytes
//! (safetensors), so a resumed run continues bit for bit. Gradients still come from burn-optim's
//! `GradientsParams`.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use linvit_attention::ops::{adamw, AdamUpdate};

/// Gradients of one optimizer step, flattened to 1-D and keyed by parameter path.
pub type Grads = BTreeMap<String, Tensor<1>>;

/// Whether the authors' code decays a parameter: not 1-D tensors (norms), biases, position
/// embeddings, class tokens or relative-position tables (Swin's `set_weight_decay`, timm's
/// `param_groups_weight_decay` with the models' `no_weight_decay()` names).
pub fn decays(path: &str, rank: usize) -> bool {
    const SKIP: [&str; 4] = [
        "pos_embed",
        "cls_token",
        "absolute_pos_embed",
        "relative_position_bias_table",
    ];
    rank > 1 && !path.ends_with("bias") && !SKIP.iter().any(|k| path.contains(k))
}

struct GradCollector<'a> {
    path: Vec<String>,
    grads: &'a mut GradientsParams,
    out: &'a mut Grads,
    ranks: &'a mut BTreeMap<String, usize>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let n = g.shape().num_elements();
            let key = self.path.join(".");
            self.ranks.insert(key.clone(), D);
            self.out.insert(key, g.reshape([n]));
        }
    }
}

/// The gradients of `model` in `grads`, by parameter path, with each parameter's rank.
pub fn collect_grads<M: Module>(
    model: &M,
    mut grads: GradientsParams,
) -> (Grads, BTreeMap<String, usize>) {
    let mut out = Grads::new();
    let mut ranks = BTreeMap::new();
    model.visit(&mut GradCollector {
        path: Vec::new(),
        grads: &mut grads,
        out: &mut out,
        ranks: &mut ranks,
    });
    (out, ranks)
}

/// Adds `more` into `acc` (gradient accumulation).
pub fn accumulate(acc: &mut Option<Grads>, more: Grads) {
    match acc {
        None => *acc = Some(more),
        Some(acc) => {
            for (k, g) in more {
                let sum = match acc.remove(&k) {
                    Some(a) => a + g,
                    None => g,
                };
                acc.insert(k, sum);
            }
        }
    }
}

/// Multiplies every gradient by `factor` (1 leaves them untouched).
pub fn scale(grads: Grads, factor: f64) -> Grads {
    if factor == 1.0 {
        return grads;
    }
    grads
        .into_iter()
        .map(|(k, g)| (k, g.mul_scalar(factor)))
        .collect()
}

/// Global L2 norm of all gradients, computed as PyTorch does: the norm of the per-tensor norms.
pub fn global_norm(grads: &Grads) -> f64 {
    let norms: Vec<Tensor<1>> = grads
        .values()
        .map(|g| g.clone().square().sum().sqrt())
        .collect();
    if norms.is_empty() {
        return 0.0;
    }
    Tensor::cat(norms, 0)
        .square()
        .sum()
        .sqrt()
        .into_scalar::<f32>() as f64
}

/// `clip_grad_norm_(max_norm)`: scales all gradients by `max_norm / (norm + 1e-6)` when that is
/// below 1; returns the norm before clipping.
pub fn clip_global_norm(grads: Grads, max_norm: f64) -> (Grads, f64) {
    let norm = global_norm(&grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        (scale(grads, coef), norm)
    } else {
        (grads, norm)
    }
}

/// AdamW hyper-parameters (PyTorch names and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
}

/// AdamW state: the step count and the two moments per parameter path (flattened).
#[derive(Clone, Debug, Default)]
pub struct AdamState {
    pub step: u64,
    pub exp_avg: BTreeMap<String, Tensor<1>>,
    pub exp_avg_sq: BTreeMap<String, Tensor<1>>,
}

struct AdamStep<'a> {
    path: Vec<String>,
    grads: &'a mut Grads,
    state: &'a mut AdamState,
    hp: AdamW,
    lr: f64,
    lr_scale: &'a BTreeMap<String, f64>,
}

impl ModuleMapper for AdamStep<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.join(".");
        let Some(grad) = self.grads.remove(&key) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let n = grad.dims()[0];
        let p = tensor.inner().reshape([n]);
        let [b1, b2] = self.hp.betas;
        let step = self.state.step as i32;
        // A parameter group's rate, decay included (torch uses the group's lr for both).
        let lr = self.lr * self.lr_scale.get(&key).copied().unwrap_or(1.0);
        let decayed = self.hp.weight_decay > 0.0 && decays(&key, D);
        let update = AdamUpdate {
            decay: decayed.then_some((1.0 - lr * self.hp.weight_decay) as f32),
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            sqrt_bias2: (1.0 - b2.powi(step)).sqrt() as f32,
            eps: self.hp.eps as f32,
            step_size: (lr / (1.0 - b1.powi(step))) as f32,
        };
        let moments = (self.state.exp_avg.remove(&key))
            .zip(self.state.exp_avg_sq.remove(&key))
            .map(|(m, v)| [m, v]);
        let [p, m, v] = adamw(&update, p, grad, moments);
        self.state.exp_avg.insert(key.clone(), m);
        self.state.exp_avg_sq.insert(key, v);
        let mut t = Tensor::from_inner(p.reshape(dims));
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

impl AdamW {
    /// One AdamW step of `model` with `grads` at learning rate `lr`; parameters without a
    /// gradient are left as they are.
    pub fn step<M: Module>(&self, model: M, grads: Grads, state: &mut AdamState, lr: f64) -> M {
        self.step_scaled(model, grads, state, lr, &BTreeMap::new())
    }

    /// [`AdamW::step`] with a learning-rate scale per parameter path (parameter groups; a path
    /// not in `lr_scale` trains at `lr`).
    pub fn step_scaled<M: Module>(
        &self,
        model: M,
        mut grads: Grads,
        state: &mut AdamState,
        lr: f64,
        lr_scale: &BTreeMap<String, f64>,
    ) -> M {
        state.step += 1;
        model.map(&mut AdamStep {
            path: Vec::new(),
            grads: &mut grads,
            state,
            hp: *self,
            lr,
            lr_scale,
        })
    }
}

/// The learning rate at optimizer step `step` (0-based) of `total`: linear warmup from
/// `warmup_lr` to `lr` over `warmup` steps, then cosine from `lr` to `min_lr` (timm's
/// `CosineLRScheduler` with `warmup_prefix`, `t_in_epochs = False`).
pub fn lr_at(step: u64, total: u64, warmup: u64, lr: f64, warmup_lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return warmup_lr + (lr - warmup_lr) * step as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Every float parameter of a module by path, flattened (inner backend, no autodiff).
struct ParamCollector<'a> {
    path: Vec<String>,
    out: &'a mut BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for ParamCollector<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.out.insert(self.path.join("."), t.reshape([n]));
    }
}

/// The float parameters of `model` by path, flattened to 1-D, without autodiff.
pub fn params_by_path<M: Module>(model: &M) -> BTreeMap<String, Tensor<1>> {
    let mut out = BTreeMap::new();
    model.visit(&mut ParamCollector {
        path: Vec::new(),
        out: &mut out,
    });
    out
}

struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.0), mapper)
    }
}

/// `model` with every float parameter cast to `dtype` *inside* the autodiff graph: a backward
/// pass through the copy gives the original (f32) parameters their gradients, in f32.
pub fn cast_params<M: Module>(model: M, dtype: FloatDType) -> M {
    model.map(&mut CastParams(dtype))
}

struct EmaUpdate<'a> {
    path: Vec<String>,
    source: &'a mut BTreeMap<String, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for EmaUpdate<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(src) = self.source.remove(&self.path.join(".")) else {
            return param;
        };
        let decay = self.decay;
        param.map(|e| {
            let dims = e.dims();
            let n = src.dims()[0];
            // timm ModelEmaV2: ema = ema * decay + (1 - decay) * model
            let e = e.reshape([n]).mul_scalar(decay) + src.mul_scalar(1.0 - decay);
            e.reshape(dims)
        })
    }
}

/// `ema = decay * ema + (1 - decay) * model`, parameter by parameter (matched by path).
pub fn ema_update<M: Module, E: Module>(ema: E, model: &M, decay: f64) -> E {
    let mut source = params_by_path(model);
    ema.map(&mut EmaUpdate {
        path: Vec::new(),
        source: &mut source,
        decay,
    })
}

/// Host copies of 1-D tensors, for checkpoints.
pub fn to_host(map: &BTreeMap<String, Tensor<1>>) -> BTreeMap<String, Vec<f32>> {
    map.iter()
        .map(|(k, t)| {
            let v = t
                .to_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("float tensors read back as f32");
            (k.clone(), v)
        })
        .collect()
}

/// 1-D tensors on `device` from host copies.
pub fn from_host(map: BTreeMap<String, Vec<f32>>, device: &Device) -> BTreeMap<String, Tensor<1>> {
    map.into_iter()
        .map(|(k, v)| {
            let n = v.len();
            (k, Tensor::from_data(TensorData::new(v, [n]), device))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr() {
        let lr = |s| lr_at(s, 110, 10, 1e-3, 0.0, 1e-5);
        assert_eq!(lr(0), 0.0);
        assert!((lr(5) - 5e-4).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(60) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-12);
        assert!((lr(110) - 1e-5).abs() < 1e-12);
    }

    #[test]
    fn norms_biases_and_position_embeddings_are_not_decayed() {
        assert!(decays("stages.0.blocks.0.attn.q.weight", 2));
        assert!(!decays("stages.0.blocks.0.attn.q.bias", 1));
        assert!(!decays("stages.0.norm.gamma", 1));
        assert!(!decays("stages.0.pos_embed", 3));
        assert!(!decays("cls_token", 3));
    }

    #[test]
    fn adamw_matches_pytorch_on_a_hand_computed_step() {
        // torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5), two
        // steps with grad 1 then 2 on p = 1 (computed by the formula in torch's docs).
        let device = Device::flex();
        let hp = AdamW {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.5,
        };
        let (b1, b2, lr, wd, eps) = (0.9f64, 0.999f64, 0.1f64, 0.5f64, 1e-8f64);
        let mut p = 1.0f64;
        let (mut m, mut v) = (0.0f64, 0.0f64);
        for (t, g) in [(1, 1.0f64), (2, 2.0)] {
            p *= 1.0 - lr * wd;
            m = m * b1 + (1.0 - b1) * g;
            v = v * b2 + (1.0 - b2) * g * g;
            let denom = (v.sqrt() / (1.0 - b2.powi(t)).sqrt()) + eps;
            p -= lr / (1.0 - b1.powi(t)) * m / denom;
        }
        #[derive(Module, Debug)]
        struct One {
            w: Param<Tensor<2>>,
        }
        let mut model = One {
            w: Param::from_tensor(Tensor::<2>::ones([1, 1], &device)),
        };
        let mut state = AdamState::default();
        for g in [1.0f32, 2.0] {
            let mut grads = Grads::new();
            grads.insert("w".into(), Tensor::from_floats([g], &device));
            model = hp.step(model, grads, &mut state, lr);
        }
        let got = model.w.val().into_scalar::<f32>() as f64;
        assert!((got - p).abs() < 1e-6, "{got} vs {p}");
    }

    #[test]
    fn clipping_scales_to_the_global_norm_only_when_above_it() {
        let device = Device::flex();
        let mut grads = Grads::new();
        grads.insert("a".into(), Tensor::from_floats([3.0, 0.0], &device));
        grads.insert("b".into(), Tensor::from_floats([4.0], &device));
        let (clipped, norm) = clip_global_norm(grads.clone(), 1.0);
        assert!((norm - 5.0).abs() < 1e-5);
        assert!((global_norm(&clipped) - 1.0).abs() < 1e-4);
        let (same, _) = clip_global_norm(grads, 10.0);
        assert!((global_norm(&same) - 5.0).abs() < 1e-5);
    }
}
