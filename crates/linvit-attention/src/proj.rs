//! The input and output projections the families share. Each family keeps these modules as
//! its own top-level fields (`qkv`, `q`, `kv`, `sr`, `norm`, `proj`) so parameter paths equal
//! the upstream state-dict keys; this file builds them and runs them.

use crate::ops::{self, gelu};
use crate::LayerNorm;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::ops::{
    adaptive_pool_matrix, resample_axis, tokens_to_image, tokens_to_windows, windows_to_tokens,
};
use crate::{MixerShape, Projection, TokenLayout};

/// The projection modules of one mixer, before they are moved into its fields.
pub(crate) struct Projections {
    pub qkv: Option<Linear>,
    pub q: Option<Linear>,
    pub kv: Option<Linear>,
    pub sr: Option<Conv2d>,
    pub norm: Option<LayerNorm>,
    pub proj: Option<Linear>,
}

/// Borrowed view of a mixer's projection fields.
pub(crate) struct ProjectionRefs<'a> {
    pub qkv: &'a Option<Linear>,
    pub q: &'a Option<Linear>,
    pub kv: &'a Option<Linear>,
    pub sr: &'a Option<Conv2d>,
    pub norm: &'a Option<LayerNorm>,
    pub projection: Projection,
}

/// A mixer with the shared projection fields (`qkv`, `q`, `kv`, `sr`, `norm`, `proj`, and
/// `get_v` for LePE); `impl_projected!` implements it from those fields.
pub(crate) trait Projected {
    fn projection_refs(&self) -> ProjectionRefs<'_>;
    fn output_proj(&self) -> Option<&Linear>;
    fn lepe(&self) -> Option<&Conv2d>;
}

/// Implements [`Projected`] for a mixer struct whose fields carry the upstream names.
macro_rules! impl_projected {
    ($mixer:ty) => {
        $crate::proj::impl_projected!($mixer, |m| m.get_v.as_ref());
    };
    ($mixer:ty, |$m:ident| $lepe:expr) => {
        impl $crate::proj::Projected for $mixer {
            fn projection_refs(&self) -> $crate::proj::ProjectionRefs<'_> {
                $crate::proj::ProjectionRefs {
                    qkv: &self.qkv,
                    q: &self.q,
                    kv: &self.kv,
                    sr: &self.sr,
                    norm: &self.norm,
                    projection: self.projection,
                }
            }
            fn output_proj(&self) -> Option<&burn::nn::Linear> {
                self.proj.as_ref()
            }
            fn lepe(&self) -> Option<&burn::nn::conv::Conv2d> {
                let $m = self;
                $lepe
            }
        }
    };
}
pub(crate) use impl_projected;

/// What a mixer's forward is given: tokens to mix, or a pre-norm block's stream `x` with the
/// norm in front of the mixer. For a block the forward returns the block's first half, `x +
/// mixer(norm(x))`: in inference on flex the norm runs inside the input projection's kernel and
/// the output projection's rows start as `x`, so neither the normalised tokens nor the residual
/// add is a pass of its own (one write of `[B, N, C]` each saved). Stochastic depth is the
/// caller's: it passes a block only where that is the identity.
pub enum MixerInput<'a> {
    Tokens(Tensor<3>),
    Block { x: Tensor<3>, norm: &'a LayerNorm },
}

impl From<Tensor<3>> for MixerInput<'_> {
    fn from(x: Tensor<3>) -> Self {
        MixerInput::Tokens(x)
    }
}

impl<'a> MixerInput<'a> {
    /// The tokens and, for a block, its norm.
    pub(crate) fn parts(self) -> (Tensor<3>, Option<&'a LayerNorm>) {
        match self {
            MixerInput::Tokens(x) => (x, None),
            MixerInput::Block { x, norm } => (x, Some(norm)),
        }
    }

    /// `mix` on the tokens, or for a block `x + mix(norm(x))` with the layers run one by one:
    /// for mixers that need the normalised tokens themselves.
    pub(crate) fn unfused(self, mix: impl FnOnce(Tensor<3>) -> Tensor<3>) -> Tensor<3> {
        match self {
            MixerInput::Tokens(x) => mix(x),
            MixerInput::Block { x, norm } => x.clone() + mix(ops::layer_norm(norm, x)),
        }
    }
}

/// Tokens in, projections, `attend`, output projection: the forward of every mixer whose
/// projections are its own (for a block, plus the block's input, see [`MixerInput`]).
pub(crate) fn forward<'a, M: Projected>(
    mixer: &M,
    input: impl Into<MixerInput<'a>>,
    layout: TokenLayout,
    attend: impl FnOnce(Qkv, TokenLayout) -> Tensor<3>,
) -> Tensor<3> {
    let (x, norm) = input.into().parts();
    let out = attend(mixer.projection_refs().project(&x, norm, layout), layout);
    let residual = norm.map(|_| x);
    match (mixer.output_proj(), residual) {
        (Some(proj), Some(x)) => ops::linear_residual(proj, out, x),
        (Some(proj), None) => ops::linear(proj, out),
        (None, Some(x)) => x + out,
        (None, None) => out,
    }
}

/// The external-projection forward (CSwin): `q, k, v` `[B, H*W, C]` are cut into the
/// projection's windows, `attend` runs per window, LePE (`get_v` on each window's values, zero
/// padding at window borders) is added, and the windows are put back.
pub(crate) fn forward_windows<M: Projected>(
    mixer: &M,
    [q, k, v]: [Tensor<3>; 3],
    layout: TokenLayout,
    attend: impl FnOnce(Qkv, TokenLayout) -> Tensor<3>,
) -> Tensor<3> {
    let grid = layout.hw();
    let window = mixer.projection_refs().projection.window(grid);
    let [q, k, v] = [q, k, v].map(|t| tokens_to_windows(t, grid, window));
    let lepe = mixer
        .lepe()
        .map(|get_v| ops::conv2d_tokens(get_v, v.clone(), window));
    let qkv = Qkv {
        q,
        k,
        v,
        key_grid: window,
    };
    let windows = crate::explain::Windows {
        grid,
        window,
        shift: 0,
    };
    let mut out = crate::explain::in_windows(windows, || {
        attend(qkv, TokenLayout::grid(window[0], window[1]))
    });
    if let Some(lepe) = lepe {
        out = out + lepe;
    }
    windows_to_tokens(out, grid, window)
}

/// Queries, keys and values of one call, with the grids they live on.
pub(crate) struct Qkv {
    pub q: Tensor<3>,
    pub k: Tensor<3>,
    pub v: Tensor<3>,
    /// Grid of the keys/values (smaller than the query grid after spatial reduction).
    pub key_grid: [usize; 2],
}

pub(crate) fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

/// Depthwise `k x k` conv with `same` zero padding, as `nn.Conv2d(c, c, k, padding=k//2, groups=c)`.
pub(crate) fn depthwise(channels: usize, kernel: usize, device: &Device) -> Conv2d {
    let p = kernel / 2;
    Conv2dConfig::new([channels, channels], [kernel, kernel])
        .with_groups(channels)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

pub(crate) fn init(shape: &MixerShape, device: &Device) -> Projections {
    let c = shape.dim;
    let bias = shape.qkv_bias;
    let mut p = Projections {
        qkv: None,
        q: None,
        kv: None,
        sr: None,
        norm: None,
        proj: Some(linear(c, c, true, device)),
    };
    match shape.projection {
        Projection::Fused => p.qkv = Some(linear(c, 3 * c, bias, device)),
        Projection::Reduced { sr_ratio, pooled } => {
            p.q = Some(linear(c, c, bias, device));
            p.kv = Some(linear(c, 2 * c, bias, device));
            let kernel = if pooled { 1 } else { sr_ratio };
            if pooled || sr_ratio > 1 {
                p.sr = Some(
                    Conv2dConfig::new([c, c], [kernel, kernel])
                        .with_stride([kernel, kernel])
                        .init(device),
                );
                p.norm = Some(LayerNorm::new(c, 1e-5, device));
            }
        }
        Projection::External { .. } => p.proj = None,
    }
    p
}

impl ProjectionRefs<'_> {
    /// Projects tokens `[B, N, C]` (`block_norm(x)` where a block's norm is given) to queries
    /// (all tokens) and keys/values.
    pub fn project(
        &self,
        x: &Tensor<3>,
        block_norm: Option<&LayerNorm>,
        layout: TokenLayout,
    ) -> Qkv {
        let [_, _, c] = x.dims();
        if let Some(qkv) = self.qkv {
            let t = match block_norm {
                Some(norm) => ops::normed_linear(qkv, norm, x.clone()),
                None => ops::linear(qkv, x.clone()),
            };
            return Qkv {
                q: ops::narrow(t.clone(), 2, 0, c),
                k: ops::narrow(t.clone(), 2, c, c),
                v: ops::narrow(t, 2, 2 * c, c),
                key_grid: layout.hw(),
            };
        }
        let (q, kv) = match (self.q, self.kv) {
            (Some(q), Some(kv)) => (q, kv),
            _ => panic!("this mixer has an external projection: call forward_qkv"),
        };
        let key_grid = self.projection.key_grid(layout.hw());
        // Queries and the spatial reduction both read the normalised tokens: written out once.
        let x = match block_norm {
            Some(norm) => ops::layer_norm(norm, x.clone()),
            None => x.clone(),
        };
        let reduced = match (self.sr, self.norm) {
            (Some(sr), Some(norm)) => {
                let mut image = tokens_to_image(x.clone(), layout.hw());
                if let Projection::Reduced { pooled: true, .. } = self.projection {
                    let pool = adaptive_pool_matrix(layout.hw(), key_grid, &image.device());
                    let [b, ch, _, _] = image.dims();
                    let flat: Tensor<3> = image.reshape([b, ch, layout.grid_tokens()]);
                    image = resample_axis(flat, pool, 2).reshape([b, ch, key_grid[0], key_grid[1]]);
                }
                let tokens = ops::layer_norm(norm, ops::conv_to_tokens(sr, image).0);
                match self.projection {
                    Projection::Reduced { pooled: true, .. } => gelu(tokens),
                    _ => tokens,
                }
            }
            _ => x.clone(),
        };
        let kv = ops::linear(kv, reduced);
        Qkv {
            q: ops::linear(q, x),
            k: ops::narrow(kv.clone(), 2, 0, c),
            v: ops::narrow(kv, 2, c, c),
            key_grid,
        }
    }
}
