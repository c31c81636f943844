//! The transformer block's second half: timm's MLP (with PVTv2's depthwise conv and ReLU), and
//! stochastic depth, which both halves of a block apply to their branch.
//!
//! The MLP lives beside the mixers because its inference fast path (one fused kernel for norm,
//! `fc1`, GELU, `fc2` and the residual add) goes through the same gate as theirs
//! ([`crate::kernel`]); the backbones only call [`Mlp::residual`].

use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::kernel::{kernel_input, optional, optional_kernel_input, optional_slice, NormInput};
use crate::ops::{self, gelu};
use crate::LayerNorm;

/// PVTv2's `DWConv` wrapper; the field name gives upstream's `mlp.dwconv.dwconv` keys.
#[derive(Module, Debug)]
pub struct DwConv {
    pub dwconv: Conv2d,
}

/// `fc1 -> [depthwise 3x3 conv] -> GELU (erf) -> fc2`; timm's Mlp, or PVTv2's with `dwconv`
/// (and a ReLU after `fc1` in PVTv2's `linear` variant).
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub dwconv: Option<DwConv>,
    pub fc2: Linear,
    #[module(skip)]
    pub relu: bool,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, dwconv: bool, relu: bool, device: &Device) -> Self {
        Mlp {
            fc1: LinearConfig::new(dim, hidden).init(device),
            dwconv: dwconv.then(|| DwConv {
                dwconv: Conv2dConfig::new([hidden, hidden], [3, 3])
                    .with_groups(hidden)
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            }),
            fc2: LinearConfig::new(hidden, dim).init(device),
            relu,
        }
    }

    /// # Shapes
    /// - x: `[B, H*W, C]` (the grid is used by the depthwise conv only) -> `[B, H*W, C]`
    pub fn forward(&self, x: Tensor<3>, grid: [usize; 2]) -> Tensor<3> {
        if let Some(y) = self.forward_fused(&x, None, false) {
            return y;
        }
        let mut x = ops::linear(&self.fc1, x);
        if self.relu {
            x = relu(x);
        }
        if let Some(dw) = &self.dwconv {
            x = ops::conv2d_tokens(&dw.dwconv, x, grid);
        }
        ops::linear(&self.fc2, gelu(x))
    }

    /// A block's second half, `x + drop_path(mlp(norm(x)))`. In inference, where the fused
    /// kernel applies, it is one kernel call: each block of rows is normalised in cache and the
    /// output rows start as `x`, so neither the normalised tensor nor the residual add is a pass
    /// of its own.
    pub fn residual(
        &self,
        x: Tensor<3>,
        norm: &LayerNorm,
        grid: [usize; 2],
        drop_path: &DropPath,
    ) -> Tensor<3> {
        if drop_path.is_identity(&x.device()) {
            if let Some(y) = self.forward_fused(&x, Some(norm), true) {
                return y;
            }
        }
        let h = self.forward(ops::layer_norm(norm, x.clone()), grid);
        x + drop_path.forward(h)
    }
}

impl Mlp {
    /// The fused CPU kernel ([`linvit_kernels::mlp`]) where it applies: no depthwise conv, f32
    /// tensors on flex that no autodiff graph tracks (inference). Same mathematics as the layers
    /// above, which training and every other backend run (`tests/models.rs` holds them
    /// together); `None` where it does not apply. `norm` runs in front of `fc1`; with
    /// `residual`, `x` is added to the output.
    fn forward_fused(
        &self,
        x: &Tensor<3>,
        norm: Option<&LayerNorm>,
        residual: bool,
    ) -> Option<Tensor<3>> {
        if self.dwconv.is_some() {
            return None;
        }
        let weight = |l: &Linear| kernel_input(&l.weight.val());
        let bias = |l: &Linear| optional_kernel_input(l.bias.as_ref());
        let (w1, b1, w2, b2) = (
            weight(&self.fc1)?,
            bias(&self.fc1)?,
            weight(&self.fc2)?,
            bias(&self.fc2)?,
        );
        let x_in = kernel_input(x)?;
        let norm = optional(norm, NormInput::new)?;
        let mlp = linvit_kernels::mlp::Mlp {
            norm: optional(norm.as_ref(), NormInput::row_norm)?,
            fc1_weight: w1.as_slice()?,
            fc1_bias: optional_slice(&b1)?,
            fc2_weight: w2.as_slice()?,
            fc2_bias: optional_slice(&b2)?,
            relu: self.relu,
        };
        let [b, n, c] = x.dims();
        let input = x_in.as_slice()?;
        let out = mlp.forward(input, c, residual.then_some(input));
        let width = out.len() / (b * n);
        Some(Tensor::from_data(
            TensorData::new(out, [b, n, width]),
            &x.device(),
        ))
    }
}

/// Stochastic depth: in training, drops a sample's whole residual branch with probability
/// `prob` and rescales the kept ones; the identity in eval mode or without autodiff.
#[derive(Module, Debug)]
pub struct DropPath {
    #[module(skip)]
    pub prob: f64,
    pub training: Param<Flag>,
}

impl DropPath {
    pub fn new(prob: f64) -> Self {
        DropPath {
            prob,
            training: Param::from_bool(true),
        }
    }

    /// Whether `forward` passes its input through on `device`: no drop probability, eval mode,
    /// or no autodiff.
    pub(crate) fn is_identity(&self, device: &Device) -> bool {
        self.prob == 0.0 || !self.training.is_enabled() || !device.is_autodiff()
    }

    /// `x + drop_path(layer(h))`; one fused pass where stochastic depth is the identity (see
    /// [`ops::linear_residual`]).
    pub fn linear_residual(&self, layer: &Linear, h: Tensor<3>, x: Tensor<3>) -> Tensor<3> {
        if self.is_identity(&x.device()) {
            return ops::linear_residual(layer, h, x);
        }
        x + self.forward(ops::linear(layer, h))
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if self.is_identity(&x.device()) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let [b, _, _] = x.dims();
        let mask = Tensor::<3>::random([b, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * mask.div_scalar(keep)
    }
}
