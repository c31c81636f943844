//! TransNormer norm-attention (Qin et al., "TransNormerLLM", 2023), following the released
//! Hugging Face model code (`modeling_transnormer.py`, `norm.py`): SRMSNorm, LRPE, the causal
//! token mixer `NormLinearAttention`, and its non-causal use as a vision token mixer.
//!
//! The causal mixer: `qkvu_proj` (D -> 4 Hd, chunks q, k, v, u in that order), `silu` on q and
//! k, optional LRPE on q and k, causal linear attention with the layer's per-head decay (see
//! [`crate::lightning`]), SRMSNorm over the whole hidden dim (not per head), gate `u * o` with
//! no activation on u, `out_proj`. Field names are the upstream state-dict keys.
//!
//! The vision mixer (`kind = "norm"`) is the same recipe without causality or decay:
//! `o = Q (K^T V)` per head, SRMSNorm over all channels, a gate, the output projection. It has
//! no upstream; it uses the backbone's own q/k/v projections like the other families, and its
//! gate is a Linear(C, C) of the block's input tokens (of the values where the backbone projects
//! for it, as CSwin does, since the mixer never sees its input there).

use crate::LayerNorm;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::explain;
use crate::lightning::{causal_linear_attention, CausalForm, Decay};
use crate::ops::{merge_heads, split_heads};
use crate::proj::{self, MixerInput, Qkv};
use crate::{MixerShape, Projection, TokenLayout};

/// SRMSNorm's epsilon in every released configuration.
pub const SRMS_EPS: f64 = 1e-6;

/// SRMSNorm: `x * rsqrt(mean(x^2, last dim) + eps)`, eps inside the root, no weight or bias.
///
/// # Shapes
/// - x: `[..., C]` -> `[..., C]`
pub fn srms_norm<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1);
    x * mean_square.add_scalar(SRMS_EPS).sqrt().recip()
}

/// LRPE (linearised relative position encoding): `x -> [x cos(theta t), x sin(theta t)]` over
/// the feature dim, so `q'.k'` depends on `t - s` only. `theta` is learnable.
#[derive(Module, Debug)]
pub struct Lrpe {
    /// `[h, 1, d]`, initialised to `10000^(-2 i / (h d))` over all `h*d` channels, head-major.
    pub theta: Param<Tensor<3>>,
}

impl Lrpe {
    pub fn new(heads: usize, head_dim: usize, device: &Device) -> Self {
        let total = heads * head_dim;
        let theta: Vec<f32> = (0..total)
            .map(|i| 10000f64.powf(-2.0 / total as f64 * i as f64) as f32)
            .collect();
        let theta = Tensor::from_data(TensorData::new(theta, [heads, 1, head_dim]), device);
        Self {
            theta: Param::from_tensor(theta),
        }
    }

    /// Encodes tokens at absolute positions `offset .. offset + n`.
    ///
    /// # Shapes
    /// - x: `[B, h, n, d]` -> `[B, h, n, 2d]`
    pub fn forward(&self, x: Tensor<4>, offset: usize) -> Tensor<4> {
        let [_, _, n, _] = x.dims();
        let device = x.device();
        let positions = Tensor::<1, Int>::arange(offset as i64..(offset + n) as i64, &device)
            .float()
            .reshape([1, 1, n, 1]);
        let angle = self.theta.val().unsqueeze_dim::<4>(0) * positions; // [1, h, n, d]
        Tensor::cat(vec![x.clone() * angle.clone().cos(), x * angle.sin()], 3)
    }
}

/// Hyper-parameters of TransNormer's causal token mixer (upstream `NormLinearAttention`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormLinearAttentionConfig {
    /// Model width D.
    pub embed_dim: usize,
    /// Width Hd of q, k, v, u inside the mixer.
    pub hidden_dim: usize,
    pub num_heads: usize,
    /// LRPE on q and k; needs `hidden_dim == embed_dim`, as upstream builds it from `embed_dim`.
    pub use_lrpe: bool,
    /// Biases on `qkvu_proj` and `out_proj`. Default in every release: false.
    pub bias: bool,
    /// Standard deviation of the initial weights (upstream's `init_std`, 0.02).
    pub init_std: f64,
}

/// Where a sequence stands for a causal mixer: the inclusive attention state and the number of
/// tokens seen (LRPE's position offset).
#[derive(Clone, Debug)]
pub struct MixerState {
    /// `[B, h, dk, dh]`, `dk = 2 dh` with LRPE.
    pub kv: Tensor<4>,
    pub offset: usize,
}

/// TransNormer's token mixer.
#[derive(Module, Debug)]
pub struct NormLinearAttention {
    pub qkvu_proj: Linear,
    pub out_proj: Linear,
    pub lrpe: Option<Lrpe>,
    #[module(skip)]
    pub num_heads: usize,
    /// This layer's decay rates.
    #[module(skip)]
    pub decay: Decay,
}

/// Upstream's default `init_std`: every Linear and the embedding start from N(0, 0.02).
pub const INIT_STD: f64 = 0.02;

/// A Linear initialised as upstream's `_init_weights`: N(0, std) weights, zero bias.
pub fn transnormer_linear(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: f64,
    device: &Device,
) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

impl NormLinearAttentionConfig {
    pub fn init(&self, decay: Decay, device: &Device) -> NormLinearAttention {
        NormLinearAttention {
            qkvu_proj: transnormer_linear(
                self.embed_dim,
                4 * self.hidden_dim,
                self.bias,
                self.init_std,
                device,
            ),
            out_proj: transnormer_linear(
                self.hidden_dim,
                self.embed_dim,
                self.bias,
                self.init_std,
                device,
            ),
            lrpe: self
                .use_lrpe
                .then(|| Lrpe::new(self.num_heads, self.embed_dim / self.num_heads, device)),
            num_heads: self.num_heads,
            decay,
        }
    }
}

impl NormLinearAttention {
    /// Mixes a sequence that starts at position 0.
    ///
    /// # Shapes
    /// - x: `[B, n, D]` -> `[B, n, D]`
    pub fn forward(&self, x: Tensor<3>, form: CausalForm) -> Tensor<3> {
        self.forward_from(x, None, form).0
    }

    /// Mixes the next `n` tokens of a sequence from `state` (none: the start) and returns the
    /// state after them: a prefill with the blocked form, then one token at a time with the
    /// recurrent form, is how generation runs.
    ///
    /// # Shapes
    /// - x: `[B, n, D]` -> `[B, n, D]`
    pub fn forward_from(
        &self,
        x: Tensor<3>,
        state: Option<MixerState>,
        form: CausalForm,
    ) -> (Tensor<3>, MixerState) {
        let [_, n, _] = x.dims();
        let qkvu = self.qkvu_proj.forward(x);
        let hidden = qkvu.dims()[2] / 4;
        let part = |i: usize| qkvu.clone().narrow(2, i * hidden, hidden);
        let heads = self.num_heads;
        let mut q = silu(split_heads(part(0), heads));
        let mut k = silu(split_heads(part(1), heads));
        let v = split_heads(part(2), heads);
        let u = part(3);
        let (offset, kv) = match state {
            Some(s) => (s.offset, Some(s.kv)),
            None => (0, None),
        };
        if let Some(lrpe) = &self.lrpe {
            q = lrpe.forward(q, offset);
            k = lrpe.forward(k, offset);
        }
        let (out, kv) = causal_linear_attention(q, k, v, &self.decay, form, kv);
        let out = u * srms_norm(merge_heads(out));
        let state = MixerState {
            kv,
            offset: offset + n,
        };
        (self.out_proj.forward(out), state)
    }
}

/// Hyper-parameters of the non-causal norm-attention vision mixer (none yet besides the
/// backbone's placement; the struct keeps `kind = "norm"` extensible and strict).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormConfig {}

/// Norm-attention as a vision token mixer.
#[derive(Module, Debug)]
pub struct NormAttention {
    pub qkv: Option<Linear>,
    pub q: Option<Linear>,
    pub kv: Option<Linear>,
    pub sr: Option<Conv2d>,
    pub norm: Option<LayerNorm>,
    pub proj: Option<Linear>,
    /// Output gate Linear(C, C), TransNormer's `u`.
    pub gate: Linear,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub projection: Projection,
}

impl NormConfig {
    pub fn init(&self, shape: &MixerShape, device: &Device) -> NormAttention {
        let p = proj::init(shape, device);
        NormAttention {
            qkv: p.qkv,
            q: p.q,
            kv: p.kv,
            sr: p.sr,
            norm: p.norm,
            proj: p.proj,
            gate: proj::linear(shape.dim, shape.dim, shape.qkv_bias, device),
            num_heads: shape.num_heads,
            projection: shape.projection,
        }
    }
}

proj::impl_projected!(NormAttention, |_m| None);

impl NormAttention {
    /// Mixes tokens, or for a block `x + attn(norm(x))` (see [`MixerInput`]).
    ///
    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> `[B, prefix + H*W, C]`
    pub fn forward<'a>(&self, x: impl Into<MixerInput<'a>>, layout: TokenLayout) -> Tensor<3> {
        // The gate reads the normalised tokens too, so a block's norm is not fused here.
        x.into().unfused(|x| {
            let gate = self.gate.forward(x.clone());
            proj::forward(self, x, layout, |qkv, layout| {
                self.attend(qkv, layout) * gate
            })
        })
    }

    /// `q, k, v` each `[B, H*W, C]` projected by the caller (CSwin), in the projection's
    /// windows; the gate reads the values. No `proj`.
    pub fn forward_qkv(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        layout: TokenLayout,
    ) -> Tensor<3> {
        proj::forward_windows(self, [q, k, v], layout, |qkv, layout| {
            let gate = self.gate.forward(qkv.v.clone());
            self.attend(qkv, layout) * gate
        })
    }

    /// `SRMSNorm(Q (K^T V))` with silu feature maps, heads merged.
    pub(crate) fn attend(&self, qkv: Qkv, layout: TokenLayout) -> Tensor<3> {
        let heads = self.num_heads;
        let key_grid = qkv.key_grid;
        let q = silu(split_heads(qkv.q, heads));
        let k = silu(split_heads(qkv.k, heads));
        let v = split_heads(qkv.v, heads);
        let mixed = merge_heads(
            q.clone()
                .matmul(k.clone().swap_dims(2, 3).matmul(v.clone())),
        );
        explain::push(|| explain::Record {
            kind: "norm",
            layout,
            key_grid,
            windows: None,
            maps: vec![("attention", q.matmul(k.swap_dims(2, 3)))],
            values: v,
            output: mixed.clone(),
            normalised: false,
        });
        srms_norm(mixed)
    }
}
