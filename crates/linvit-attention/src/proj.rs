//! The input and output projections the families share. Each family keeps these modules as
//! its own top-level fields (`qkv`, `q`, `kv`, `sr`, `norm`, `proj`) so parameter paths equal
//! the upstream state-dict keys; this file builds them and runs them.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::ops::{adaptive_pool_matrix, image_to_tokens, resample_axis, tokens_to_image};
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
                p.norm = Some(LayerNormConfig::new(c).with_epsilon(1e-5).init(device));
            }
        }
        Projection::External { .. } => p.proj = None,
    }
    p
}

impl ProjectionRefs<'_> {
    /// Projects tokens `[B, N, C]` to queries (all tokens) and keys/values.
    pub fn project(&self, x: Tensor<3>, layout: TokenLayout) -> Qkv {
        let [_, _, c] = x.dims();
        if let Some(qkv) = self.qkv {
            let t = qkv.forward(x);
            return Qkv {
                q: t.clone().narrow(2, 0, c),
                k: t.clone().narrow(2, c, c),
                v: t.narrow(2, 2 * c, c),
                key_grid: layout.hw(),
            };
        }
        let (q, kv) = match (self.q, self.kv) {
            (Some(q), Some(kv)) => (q, kv),
            _ => panic!("this mixer has an external projection: call forward_qkv"),
        };
        let key_grid = self.projection.key_grid(layout.hw());
        let reduced = match (self.sr, self.norm) {
            (Some(sr), Some(norm)) => {
                let mut image = tokens_to_image(x.clone(), layout.hw());
                if let Projection::Reduced { pooled: true, .. } = self.projection {
                    let pool = adaptive_pool_matrix(layout.hw(), key_grid, &image.device());
                    let [b, ch, _, _] = image.dims();
                    let flat: Tensor<3> = image.reshape([b, ch, layout.grid_tokens()]);
                    image = resample_axis(flat, pool, 2).reshape([b, ch, key_grid[0], key_grid[1]]);
                }
                let tokens = norm.forward(image_to_tokens(sr.forward(image)));
                match self.projection {
                    Projection::Reduced { pooled: true, .. } => gelu(tokens),
                    _ => tokens,
                }
            }
            _ => x.clone(),
        };
        let kv = kv.forward(reduced);
        Qkv {
            q: q.forward(x),
            k: kv.clone().narrow(2, 0, c),
            v: kv.narrow(2, c, c),
            key_grid,
        }
    }
}
