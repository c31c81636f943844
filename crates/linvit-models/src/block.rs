//! The pre-norm transformer block of ViT/DeiT and PVT: `x + attn(norm1(x))`, then
//! `x + mlp(norm2(x))`, with stochastic depth on both branches.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use linvit_attention::{Attention, AttentionConfig, LayerNorm, MixerShape, TokenLayout};

use crate::layers::{layer_norm, DropPath, Mlp};

#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: DropPath,
}

/// What a block needs besides its mixer's placement.
#[derive(Clone, Copy, Debug)]
pub struct BlockSpec {
    pub mlp_ratio: f64,
    pub eps: f64,
    pub drop_path: f64,
    /// PVTv2's depthwise conv inside the MLP.
    pub mlp_dwconv: bool,
    /// PVTv2 `linear`: ReLU after `fc1`.
    pub mlp_relu: bool,
}

impl Block {
    pub fn new(
        attention: &AttentionConfig,
        shape: &MixerShape,
        spec: BlockSpec,
        device: &Device,
    ) -> Self {
        let dim = shape.dim;
        Block {
            norm1: layer_norm(dim, spec.eps, device),
            attn: attention.init(shape, device),
            norm2: layer_norm(dim, spec.eps, device),
            mlp: Mlp::new(
                dim,
                (dim as f64 * spec.mlp_ratio) as usize,
                spec.mlp_dwconv,
                spec.mlp_relu,
                device,
            ),
            drop_path: DropPath::new(spec.drop_path),
        }
    }

    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> same
    pub fn forward(&self, x: Tensor<3>, layout: TokenLayout) -> Tensor<3> {
        let x = (self.attn).residual(x, &self.norm1, layout, &self.drop_path);
        // Only PVTv2's MLP uses the grid (its depthwise conv), and PVT has no prefix tokens.
        self.mlp
            .residual(x, &self.norm2, layout.hw(), &self.drop_path)
    }
}
