//! Plain linear attention with a ReLU kernel: `phi(x) = relu(x) + 1e-6`, normalised as FLatten
//! normalises it. The "vanilla linear attention" row of FLatten's ablation; add a depthwise conv
//! on v with `kernel_size > 0` to get its "+ DWC" row without the focusing function.

use crate::LayerNorm;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::explain;
use crate::focused::{add_head_shared_dwc, linear_attend};
use crate::ops::{merge_heads, split_heads};
use crate::proj::{self, MixerInput, Qkv};
use crate::{MixerShape, Projection, TokenLayout};

/// Hyper-parameters of plain linear attention.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearConfig {
    /// Kernel of a depthwise conv on v shared by the heads, 0 for none. Default: 0.
    pub kernel_size: usize,
}

/// Plain linear attention.
#[derive(Module, Debug)]
pub struct LinearAttention {
    pub qkv: Option<Linear>,
    pub q: Option<Linear>,
    pub kv: Option<Linear>,
    pub sr: Option<Conv2d>,
    pub norm: Option<LayerNorm>,
    pub proj: Option<Linear>,
    pub dwc: Option<Conv2d>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub projection: Projection,
}

impl LinearConfig {
    pub fn init(&self, shape: &MixerShape, device: &Device) -> LinearAttention {
        let p = proj::init(shape, device);
        LinearAttention {
            qkv: p.qkv,
            q: p.q,
            kv: p.kv,
            sr: p.sr,
            norm: p.norm,
            proj: p.proj,
            dwc: (self.kernel_size > 0)
                .then(|| proj::depthwise(shape.head_dim(), self.kernel_size, device)),
            num_heads: shape.num_heads,
            projection: shape.projection,
        }
    }
}

// Plain linear attention has no LePE.
proj::impl_projected!(LinearAttention, |_m| None);

impl LinearAttention {
    /// Mixes tokens, or for a block `x + attn(norm(x))` (see [`MixerInput`]).
    ///
    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> `[B, prefix + H*W, C]`
    pub fn forward<'a>(&self, x: impl Into<MixerInput<'a>>, layout: TokenLayout) -> Tensor<3> {
        proj::forward(self, x, layout, |qkv, layout| self.attend(qkv, layout))
    }

    /// `q, k, v` each `[B, H*W, C]` projected by the caller (CSwin), in the projection's
    /// windows; no `proj`.
    pub fn forward_qkv(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        layout: TokenLayout,
    ) -> Tensor<3> {
        proj::forward_windows(self, [q, k, v], layout, |qkv, layout| {
            self.attend(qkv, layout)
        })
    }

    pub(crate) fn attend(&self, qkv: Qkv, layout: TokenLayout) -> Tensor<3> {
        let Qkv { q, k, v, key_grid } = qkv;
        let heads = self.num_heads;
        let phi = |x: Tensor<3>| split_heads(relu(x).add_scalar(1e-6), heads);
        let v = split_heads(v, heads);
        let (q, k) = (phi(q), phi(k));
        let out = merge_heads(linear_attend(q.clone(), k.clone(), v.clone()));
        explain::push(|| {
            // `linear_attend` divides the keys by sqrt(n) before the prescaled form.
            let n = k.dims()[2] as f64;
            explain::Record {
                kind: "linear",
                layout,
                key_grid,
                windows: None,
                maps: vec![(
                    "attention",
                    explain::implied_linear(q, k.mul_scalar(n.powf(-0.5))),
                )],
                values: v.clone(),
                output: out.clone(),
                normalised: true,
            }
        });
        match &self.dwc {
            Some(dwc) => add_head_shared_dwc(dwc, out, v, key_grid, layout),
            None => out,
        }
    }
}
