//! Pieces the backbones share: the MLP (timm's, with PVTv2's depthwise conv), stochastic depth,
//! conv patch embeddings, and the layout strings that pick a mixer per stage.

use burn::module::Flag;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use linvit_attention::ops::{
    self, gelu, kernel_input, optional_kernel_input, optional_slice, NormInput,
};

use linvit_attention::ops::{image_to_tokens, tokens_to_image};

pub fn layer_norm(dim: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(dim).with_epsilon(eps).init(device)
}

pub fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

/// `nn.Conv2d(c_in, c_out, kernel, stride, padding)` with bias.
pub fn conv(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

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
            fc1: linear(dim, hidden, true, device),
            dwconv: dwconv.then(|| DwConv {
                dwconv: Conv2dConfig::new([hidden, hidden], [3, 3])
                    .with_groups(hidden)
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            }),
            fc2: linear(hidden, dim, true, device),
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
            x = image_to_tokens(ops::conv2d(&dw.dwconv, tokens_to_image(x, grid)));
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
        let norm = ops::optional(norm, NormInput::new)?;
        let mlp = linvit_kernels::mlp::Mlp {
            norm: ops::optional(norm.as_ref(), NormInput::row_norm)?,
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
    pub fn is_identity(&self, device: &Device) -> bool {
        self.prob == 0.0 || !self.training.is_enabled() || !device.is_autodiff()
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

/// Linearly increasing drop-path rates over `total` blocks, as `torch.linspace(0, rate, total)`.
pub fn drop_path_rates(rate: f64, total: usize) -> Vec<f64> {
    if total <= 1 {
        return vec![0.0; total];
    }
    (0..total)
        .map(|i| rate * i as f64 / (total - 1) as f64)
        .collect()
}

/// A conv patch embedding with an optional LayerNorm on the tokens.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
    pub norm: Option<LayerNorm>,
}

impl PatchEmbed {
    /// `[B, C, H, W]` -> tokens `[B, h*w, D]` and the grid `[h, w]`.
    pub fn forward(&self, images: Tensor<4>) -> (Tensor<3>, [usize; 2]) {
        let (tokens, [h, w]) = ops::conv_to_tokens(&self.proj, images);
        let tokens = match &self.norm {
            Some(norm) => ops::layer_norm(norm, tokens),
            None => tokens,
        };
        (tokens, [h, w])
    }
}

/// The mixer letter of stage `stage` in a layout string such as `LLSS` or `AAAB`.
/// `L` focused linear, `A` agent, `P` plain linear, `S`/`B` the backbone's softmax.
pub fn stage_letter(layout: &str, stage: usize) -> Result<char, String> {
    layout
        .chars()
        .nth(stage)
        .ok_or_else(|| format!("layout {layout:?} has no letter for stage {}", stage + 1))
        .and_then(|c| match c {
            'L' | 'A' | 'P' | 'S' | 'B' => Ok(c),
            other => Err(format!(
                "layout {layout:?}: unknown mixer {other:?} (expected L, A, P, S or B)"
            )),
        })
}

/// The classifier of the pyramid backbones: mean over tokens `[B, N, C]`, then `head`.
pub fn mean_pool_head(head: &Linear, x: Tensor<3>) -> Tensor<2> {
    ops::linear(head, x.mean_dim(1).squeeze_dim::<2>(1))
}

/// Resizes a learned position embedding `[1, h*w, C]` bilinearly (`align_corners=False`) to a
/// new grid, as the authors' fine-tuning code does; the identity at the same size.
pub fn resize_positions(pos: Tensor<3>, from: [usize; 2], to: [usize; 2]) -> Tensor<3> {
    if from == to {
        return pos;
    }
    let m = linvit_attention::ops::bilinear_matrix(from, to, &pos.device());
    linvit_attention::ops::resample_axis(pos, m, 1)
}

/// Serde defaults shared by the backbone configs (the upstream constructors' defaults).
pub(crate) mod defaults {
    pub fn in_chans() -> usize {
        3
    }
    pub fn patch_size() -> usize {
        4
    }
    pub fn mlp_ratio() -> f64 {
        4.0
    }
    pub fn qkv_bias() -> bool {
        true
    }
}

/// Checks that every per-stage list has one entry per stage; the error names the list.
pub(crate) fn check_lengths(
    counted: &str,
    n: usize,
    lists: &[(&str, usize)],
) -> Result<(), String> {
    match lists.iter().find(|(_, len)| *len != n) {
        Some((name, len)) => Err(format!("{name} has {len} entries, {counted} has {n}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_path_rates_rise_linearly_like_torch_linspace() {
        assert_eq!(drop_path_rates(0.1, 3), vec![0.0, 0.05, 0.1]);
        assert_eq!(drop_path_rates(0.1, 1), vec![0.0]);
    }

    #[test]
    fn layout_letters_are_checked() {
        assert_eq!(stage_letter("LLSS", 2), Ok('S'));
        assert!(stage_letter("LLXS", 2)
            .unwrap_err()
            .contains("unknown mixer 'X'"));
        assert!(stage_letter("LL", 3).unwrap_err().contains("stage 4"));
    }
}
