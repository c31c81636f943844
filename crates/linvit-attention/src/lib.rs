//! Token mixers for vision transformers whose attention is linear in the number of tokens,
//! beside the softmax baselines they are measured against.
//!
//! Every family is a Burn module with the same forward: tokens `[B, N, C]` plus a
//! [`TokenLayout`] (grid `H x W`, number of prefix tokens such as CLS) to tokens `[B, N, C]`.
//! What differs between backbones is how tokens reach the mixer ([`Projection`]); that is part
//! of the [`MixerShape`] a backbone passes to [`AttentionConfig::init`]. Module field names equal
//! the upstream PyTorch state-dict keys, so importing the authors' weights is close to identity.
//!
//! The mathematics and the upstream quirks each family reproduces are in `shared/SPEC.md`.

pub mod agent;
pub mod explain;
pub mod focused;
mod fused;
pub mod import;
mod kernel;
pub mod kinds;
pub mod layer_norm;
pub mod lightning;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod ops;
pub mod path;
mod proj;
pub mod reference;
pub mod resize;
pub mod softmax;
pub mod windows;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use agent::{AgentAttention, AgentConfig};
pub use focused::{FocusedConfig, FocusedLinearAttention};
pub use kinds::{Kind, Layout, LayoutError};
pub use layer_norm::LayerNorm;
pub use linear::{LinearAttention, LinearConfig};
/// The instruction set the CPU kernels run (chosen at start-up, forced by `LINVIT_ISA`).
pub use linvit_kernels::isa;
pub use mlp::{DropPath, DwConv, Mlp};
pub use norm::{NormAttention, NormConfig};
pub use path::Path;
pub use proj::MixerInput;
pub use softmax::SoftmaxAttention;

/// Where the tokens of one forward call sit on the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLayout {
    /// Grid height in tokens.
    pub height: usize,
    /// Grid width in tokens.
    pub width: usize,
    /// Tokens before the grid (1 for a CLS token, 0 otherwise).
    pub prefix: usize,
}

impl TokenLayout {
    /// A grid of `height x width` tokens with no prefix tokens.
    pub fn grid(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            prefix: 0,
        }
    }

    /// The same grid with `prefix` leading tokens (a CLS token is `with_prefix(1)`).
    pub fn with_prefix(self, prefix: usize) -> Self {
        Self { prefix, ..self }
    }

    /// Number of grid tokens.
    pub fn grid_tokens(&self) -> usize {
        self.height * self.width
    }

    /// Total number of tokens, prefix included.
    pub fn tokens(&self) -> usize {
        self.prefix + self.grid_tokens()
    }

    /// `[height, width]`.
    pub fn hw(&self) -> [usize; 2] {
        [self.height, self.width]
    }
}

/// How a backbone feeds tokens to its mixer; decides which projections the module owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Projection {
    /// One `qkv` Linear(C, 3C) in, one `proj` Linear(C, C) out (ViT/DeiT, Swin).
    Fused,
    /// `q` Linear(C, C) on the tokens; `kv` Linear(C, 2C) on tokens reduced by a strided `sr`
    /// conv + `norm` when `sr_ratio > 1`, or (`pooled`, PVTv2's `linear` option) on tokens
    /// average-pooled to 7x7 then `sr` 1x1 conv + `norm` + GELU; `proj` out (PVT, PVTv2).
    Reduced { sr_ratio: usize, pooled: bool },
    /// The caller projects and sends `q, k, v`; no `proj` inside (CSwin, whose block owns `qkv`
    /// and `proj`). Attention runs in windows: `stripe = -1` the whole grid, `0` vertical stripes
    /// `H x split`, `1` horizontal stripes `split x W`.
    External { stripe: i8, split: usize },
}

impl Projection {
    /// Key/value grid for a query grid, with the reduction this projection applies.
    pub fn key_grid(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        match *self {
            Projection::Reduced { pooled: true, .. } => [7, 7],
            Projection::Reduced { sr_ratio, .. } => [h / sr_ratio, w / sr_ratio],
            _ => [h, w],
        }
    }

    /// Window `[wh, ww]` the attention runs in for a grid.
    pub fn window(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        match *self {
            Projection::External { stripe: 0, split } => [h, split],
            Projection::External { stripe: 1, split } => [split, w],
            _ => [h, w],
        }
    }
}

/// Everything about a mixer's placement that fixes its parameter shapes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixerShape {
    /// Channels C. Must be divisible by `num_heads`.
    pub dim: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Bias on the q/k/v projections. Default: true.
    pub qkv_bias: bool,
    /// Token grid the module is built for (a window for Swin); sizes position encodings and biases.
    pub grid: [usize; 2],
    /// Prefix tokens (1 with a CLS token).
    pub prefix: usize,
    /// How tokens reach the mixer.
    pub projection: Projection,
    /// Swin's relative position bias table (softmax only).
    pub relative_position_bias: bool,
}

impl MixerShape {
    /// A fused-projection mixer over a `grid` with no prefix, as in Swin windows.
    pub fn new(dim: usize, num_heads: usize, grid: [usize; 2]) -> Self {
        Self {
            dim,
            num_heads,
            qkv_bias: true,
            grid,
            prefix: 0,
            projection: Projection::Fused,
            relative_position_bias: false,
        }
    }

    pub fn with_projection(self, projection: Projection) -> Self {
        Self { projection, ..self }
    }

    pub fn with_prefix(self, prefix: usize) -> Self {
        Self { prefix, ..self }
    }

    pub fn with_qkv_bias(self, qkv_bias: bool) -> Self {
        Self { qkv_bias, ..self }
    }

    pub fn with_relative_position_bias(self, on: bool) -> Self {
        Self {
            relative_position_bias: on,
            ..self
        }
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.num_heads
    }

    /// Checks what upstream would reject or crash on, so a bad config fails before `init`.
    pub fn validate(&self, attention: &AttentionConfig) -> Result<(), ConfigError> {
        let bad = |reason: String| Err(ConfigError { reason });
        if self.num_heads == 0 || self.dim == 0 {
            return bad(format!(
                "dim ({}) and num_heads ({}) must be positive",
                self.dim, self.num_heads
            ));
        }
        if !self.dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "dim {} is not divisible by num_heads {}",
                self.dim, self.num_heads
            ));
        }
        let [h, w] = self.grid;
        if h == 0 || w == 0 {
            return bad(format!("token grid {h}x{w} is empty"));
        }
        match self.projection {
            Projection::Reduced {
                sr_ratio,
                pooled: false,
            } if sr_ratio == 0 || h % sr_ratio != 0 || w % sr_ratio != 0 => {
                return bad(format!(
                    "grid {h}x{w} is not divisible by sr_ratio {sr_ratio}"
                ));
            }
            Projection::External { stripe, split } => {
                let [wh, ww] = self.projection.window(self.grid);
                if !(-1..=1).contains(&stripe) {
                    return bad(format!("stripe must be -1, 0 or 1, not {stripe}"));
                }
                if split == 0 || h % wh != 0 || w % ww != 0 {
                    return bad(format!("grid {h}x{w} is not divisible by window {wh}x{ww}"));
                }
            }
            _ => {}
        }
        match attention {
            AttentionConfig::Agent(agent) => {
                let p = (agent.agent_num as f64).sqrt().round() as usize;
                if agent.agent_num == 0 || p * p != agent.agent_num {
                    return bad(format!(
                        "agent_num {} is not a perfect square",
                        agent.agent_num
                    ));
                }
                if agent.dwc_kernel % 2 == 0 {
                    return bad(format!("dwc_kernel {} must be odd", agent.dwc_kernel));
                }
            }
            AttentionConfig::Focused(focused) => {
                if focused.focusing_factor == 0 {
                    return bad("focusing_factor must be at least 1".into());
                }
                if focused.kernel_size % 2 == 0 && focused.kernel_size != 0 {
                    return bad(format!(
                        "kernel_size {} must be odd or 0",
                        focused.kernel_size
                    ));
                }
                if matches!(self.projection, Projection::External { stripe, .. } if stripe != -1) {
                    return bad(
                        "focused linear attention in CSwin runs on the whole map (stripe -1), as upstream"
                            .into(),
                    );
                }
            }
            AttentionConfig::Linear(linear) => {
                if linear.kernel_size % 2 == 0 && linear.kernel_size != 0 {
                    return bad(format!(
                        "kernel_size {} must be odd or 0",
                        linear.kernel_size
                    ));
                }
            }
            AttentionConfig::Softmax | AttentionConfig::Norm(_) => {}
        }
        Ok(())
    }
}

/// A name (`--path`, an attention kind) that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}; expected one of {expected}")]
pub struct UnknownName {
    /// What the name names: "path", "attention kind".
    pub what: &'static str,
    pub name: String,
    /// The known names, comma-separated.
    pub expected: String,
}

/// A mixer configuration that upstream would reject.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct ConfigError {
    pub reason: String,
}

/// Which token mixer, with its family's hyper-parameters. Serialised with a `kind` tag:
/// `{ kind = "focused", focusing_factor = 3, kernel_size = 5 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttentionConfig {
    /// Softmax attention in the backbone's own flavour.
    Softmax,
    /// Plain linear attention with a ReLU kernel (the ablation baseline).
    Linear(LinearConfig),
    /// FLatten focused linear attention.
    Focused(FocusedConfig),
    /// Agent attention.
    Agent(AgentConfig),
    /// TransNormer norm-attention, non-causal: `SRMSNorm(Q (K^T V))`, gated.
    Norm(NormConfig),
}

impl AttentionConfig {
    /// The family (its name as written in configs is `kind().name()`).
    pub fn kind(&self) -> Kind {
        match self {
            AttentionConfig::Softmax => Kind::Softmax,
            AttentionConfig::Linear(_) => Kind::Linear,
            AttentionConfig::Focused(_) => Kind::Focused,
            AttentionConfig::Agent(_) => Kind::Agent,
            AttentionConfig::Norm(_) => Kind::Norm,
        }
    }

    /// Builds the module for a placement; call [`MixerShape::validate`] first on user input.
    pub fn init(&self, shape: &MixerShape, device: &Device) -> Attention {
        match self {
            AttentionConfig::Softmax => Attention::Softmax(SoftmaxAttention::new(shape, device)),
            AttentionConfig::Linear(c) => Attention::Linear(c.init(shape, device)),
            AttentionConfig::Focused(c) => Attention::Focused(c.init(shape, device)),
            AttentionConfig::Agent(c) => Attention::Agent(c.init(shape, device)),
            AttentionConfig::Norm(c) => Attention::Norm(c.init(shape, device)),
        }
    }
}

/// One token mixer of any family.
// Built once per block and never moved in a hot loop, so the size spread costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Attention {
    Softmax(SoftmaxAttention),
    Linear(LinearAttention),
    Focused(FocusedLinearAttention),
    Agent(AgentAttention),
    Norm(NormAttention),
}

impl Attention {
    /// Mixes tokens `[B, N, C]` laid out as `layout` (fused/reduced projections), or for a
    /// pre-norm block returns `x + attn(norm(x))` (see [`MixerInput`]).
    ///
    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> `[B, prefix + H*W, C]`
    pub fn forward<'a>(&self, x: impl Into<MixerInput<'a>>, layout: TokenLayout) -> Tensor<3> {
        self.forward_masked(x, layout, None)
    }

    /// A pre-norm block's first half, `x + drop_path(attn(norm(x)))`. Where stochastic depth is
    /// the identity the norm and the add go into the mixer's projections (see [`MixerInput`]);
    /// the choice is made here, once, for every backbone.
    ///
    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> same
    pub fn residual(
        &self,
        x: Tensor<3>,
        norm: &LayerNorm,
        layout: TokenLayout,
        drop_path: &DropPath,
    ) -> Tensor<3> {
        if drop_path.is_identity(&x.device()) {
            return self.forward(MixerInput::Block { x, norm }, layout);
        }
        let h = self.forward(ops::layer_norm(norm, x.clone()), layout);
        x + drop_path.forward(h)
    }

    /// As [`Attention::forward`], with Swin's shifted-window mask `[nW, N, N]` (windows are the
    /// inner batch index). Only softmax uses it; the linear families ignore it, as upstream.
    pub fn forward_masked<'a>(
        &self,
        x: impl Into<MixerInput<'a>>,
        layout: TokenLayout,
        mask: Option<Tensor<3>>,
    ) -> Tensor<3> {
        match self {
            Attention::Softmax(m) => m.forward(x, layout, mask),
            Attention::Linear(m) => m.forward(x, layout),
            Attention::Focused(m) => m.forward(x, layout),
            Attention::Agent(m) => m.forward(x, layout),
            Attention::Norm(m) => m.forward(x, layout),
        }
    }

    /// Mixes already-projected `q, k, v` (each `[B, H*W, C]`) for the external projection.
    pub fn forward_qkv(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        layout: TokenLayout,
    ) -> Tensor<3> {
        match self {
            Attention::Softmax(m) => m.forward_qkv(q, k, v, layout),
            Attention::Linear(m) => m.forward_qkv(q, k, v, layout),
            Attention::Focused(m) => m.forward_qkv(q, k, v, layout),
            Attention::Agent(m) => m.forward_qkv(q, k, v, layout),
            Attention::Norm(m) => m.forward_qkv(q, k, v, layout),
        }
    }
}

impl Attention {
    /// The token mixing alone, between the projections: `q, k, v` each `[B, prefix + H*W, C]`
    /// on the same grid (no spatial reduction, no LePE, no `proj`). What `linvit bench
    /// attention` times.
    pub fn mix(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, layout: TokenLayout) -> Tensor<3> {
        let qkv = proj::Qkv {
            q,
            k,
            v,
            key_grid: layout.hw(),
        };
        match self {
            Attention::Softmax(m) => m.attend(qkv, layout, None),
            Attention::Linear(m) => m.attend(qkv, layout),
            Attention::Focused(m) => m.attend(qkv, layout),
            Attention::Agent(m) => m.attend(qkv, layout),
            // The gate is a projection of the input, outside the mixing proper.
            Attention::Norm(m) => m.attend(qkv, layout),
        }
    }
}

impl AttentionConfig {
    /// Multiply-accumulates of one call on `batch = 1` with tokens laid out as `layout` (for
    /// window attention: one window), counting projections, attention products and depthwise
    /// convs, as FLOP counters for these papers do (norms and activations are left out).
    pub fn macs(&self, shape: &MixerShape, layout: TokenLayout) -> u64 {
        let c = shape.dim as u64;
        let d = shape.head_dim() as u64;
        let n_q = layout.tokens() as u64;
        let grid = layout.grid_tokens() as u64;
        let [kh, kw] = shape.projection.key_grid(layout.hw());
        let n_k = match shape.projection {
            Projection::Reduced { .. } => (kh * kw) as u64,
            _ => n_q,
        };
        let projections = match shape.projection {
            Projection::Fused => n_q * c * 3 * c + n_q * c * c,
            Projection::Reduced { sr_ratio, pooled } => {
                let reduce = if pooled || sr_ratio > 1 {
                    n_k * c
                        * c
                        * if pooled {
                            1
                        } else {
                            (sr_ratio * sr_ratio) as u64
                        }
                } else {
                    0
                };
                n_q * c * c + reduce + n_k * 2 * c * c + n_q * c * c
            }
            Projection::External { .. } => 0,
        };
        let lepe = match shape.projection {
            Projection::External { .. }
                if *self != AttentionConfig::Linear(LinearConfig::default())
                    && !matches!(self, AttentionConfig::Norm(_)) =>
            {
                grid * 9 * c
            }
            _ => 0,
        };
        let mixing = match self {
            AttentionConfig::Softmax => {
                let window = shape.projection.window(layout.hw());
                let per_window = (window[0] * window[1]) as u64;
                // Stripes: each query sees only its window's keys.
                let keys = if matches!(shape.projection, Projection::External { .. }) {
                    per_window
                } else {
                    n_k
                };
                2 * n_q * keys * c
            }
            AttentionConfig::Linear(l) => {
                2 * n_q.max(n_k) * c * d + grid * (l.kernel_size * l.kernel_size) as u64 * c
            }
            AttentionConfig::Focused(f) => {
                2 * n_q.max(n_k) * c * d + grid * (f.kernel_size * f.kernel_size) as u64 * c
            }
            AttentionConfig::Agent(a) => {
                let m = a.agent_num as u64;
                2 * m * n_k * c
                    + 2 * n_q * m * c
                    + grid * c
                    + grid * (a.dwc_kernel * a.dwc_kernel) as u64 * c
            }
            AttentionConfig::Norm(_) => 2 * n_q.max(n_k) * c * d + n_q * c * c,
        };
        projections + lepe + mixing
    }
}
