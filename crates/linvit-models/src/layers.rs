//! Pieces the backbones share: conv patch embeddings, the pooled head, position-embedding
//! resizing. (Layout strings are read by `linvit_attention::Layout`.) The MLP and stochastic depth
//! are `linvit_attention`'s (`mlp.rs`), beside the fast path they share with the mixers.

use crate::model_error;
use crate::ModelError;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use linvit_attention::resize::{rule_by_name, Interp, Rule};
use linvit_attention::{ops, LayerNorm};

pub use linvit_attention::{DropPath, DwConv, Mlp};

pub fn layer_norm(dim: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNorm::new(dim, eps, device)
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

/// The resize rule of a backbone with a learned `pos_embed` (resized with `interp`, prefix
/// tokens kept); its mixers' parameters follow theirs (`linvit_attention::resize`).
pub(crate) fn pos_embed_rule(path: &str, interp: Interp) -> Option<Rule> {
    match path.rsplit('.').next() {
        Some("pos_embed") => Some(Rule::SquareTokens(interp)),
        _ => rule_by_name(path),
    }
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
) -> Result<(), ModelError> {
    match lists.iter().find(|(_, len)| *len != n) {
        Some((name, len)) => Err(model_error!("{name} has {len} entries, {counted} has {n}")),
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
}
