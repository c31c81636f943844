//! ViT / DeiT (Dosovitskiy et al. 2021; Touvron et al. 2021) in timm's layout, with any mixer
//! per block: softmax as timm's `VisionTransformer`, agent attention as Agent-DeiT
//! (`agent_transformer/models/agent_deit.py`), focused linear attention DeiT-style.
//!
//! Tokens: CLS first, then the patch grid row-major; learned `pos_embed` over all of them.
//! Classification reads the CLS token after the final norm. LayerNorm eps 1e-6 as timm.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Distribution, Tensor};
use linvit_attention::resize::{Interp, Rule};
use linvit_attention::LayerNorm;
use linvit_attention::{ops, AttentionConfig, MixerShape, TokenLayout};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mixers::swap_per_stage;
use crate::upstream::{agent, Args, Call};
use crate::{model_error, ModelConfig, ModelError};

use crate::block::{Block, BlockSpec};
use crate::layers::{
    conv, drop_path_rates, layer_norm, linear, pos_embed_rule, resize_positions, PatchEmbed,
};

/// A ViT/DeiT; field names follow timm's constructor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    pub img_size: usize,
    pub patch_size: usize,
    #[serde(default = "crate::layers::defaults::in_chans")]
    pub in_chans: usize,
    pub num_classes: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    #[serde(default = "crate::layers::defaults::mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "crate::layers::defaults::qkv_bias")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub drop_path_rate: f64,
    /// One mixer per block; the depth is its length.
    pub blocks: Vec<AttentionConfig>,
}

#[derive(Module, Debug)]
pub struct VisionTransformer {
    pub patch_embed: PatchEmbed,
    /// `[1, 1, C]`
    pub cls_token: Param<Tensor<3>>,
    /// `[1, 1 + h*w, C]`
    pub pos_embed: Param<Tensor<3>>,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    pub head: Linear,
    #[module(skip)]
    pub grid: [usize; 2],
}

impl VitConfig {
    pub fn grid(&self) -> [usize; 2] {
        let side = self.img_size / self.patch_size;
        [side, side]
    }

    /// Multiply-accumulates of one image at `img_size`.
    pub fn macs(&self) -> u64 {
        let grid = self.grid();
        let n = (grid[0] * grid[1]) as u64;
        let c = self.embed_dim as u64;
        let hidden = (self.embed_dim as f64 * self.mlp_ratio) as u64;
        let shape = MixerShape::new(self.embed_dim, self.num_heads, grid)
            .with_prefix(1)
            .with_qkv_bias(self.qkv_bias);
        let layout = TokenLayout::grid(grid[0], grid[1]).with_prefix(1);
        let patch = n * (self.patch_size * self.patch_size * self.in_chans) as u64 * c;
        let blocks: u64 = self
            .blocks
            .iter()
            .map(|a| a.macs(&shape, layout) + 2 * (n + 1) * c * hidden)
            .sum();
        patch + blocks + c * self.num_classes as u64
    }

    pub fn init(&self, device: &Device) -> VisionTransformer {
        let c = self.embed_dim;
        let grid = self.grid();
        let shape = MixerShape::new(c, self.num_heads, grid)
            .with_prefix(1)
            .with_qkv_bias(self.qkv_bias);
        let rates = drop_path_rates(self.drop_path_rate, self.blocks.len());
        let trunc = |dims: [usize; 3]| {
            Param::from_tensor(Tensor::random(
                dims,
                Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        VisionTransformer {
            patch_embed: PatchEmbed {
                proj: conv(
                    self.in_chans,
                    c,
                    self.patch_size,
                    self.patch_size,
                    0,
                    device,
                ),
                norm: None,
            },
            cls_token: trunc([1, 1, c]),
            pos_embed: trunc([1, 1 + grid[0] * grid[1], c]),
            blocks: self
                .blocks
                .iter()
                .zip(rates)
                .map(|(attention, drop_path)| {
                    let spec = BlockSpec {
                        mlp_ratio: self.mlp_ratio,
                        eps: 1e-6,
                        drop_path,
                        mlp_dwconv: false,
                        mlp_relu: false,
                    };
                    Block::new(attention, &shape, spec, device)
                })
                .collect(),
            norm: layer_norm(c, 1e-6, device),
            head: linear(c, self.num_classes, true, device),
            grid,
        }
    }
}

impl VisionTransformer {
    /// # Shapes
    /// - images: `[B, 3, H, W]` -> logits `[B, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let (patches, grid) = self.patch_embed.forward(images);
        let [b, _, c] = patches.dims();
        let cls = self.cls_token.val().expand([b, 1, c]);
        let pos = self.pos_embed.val();
        let [_, n, _] = pos.dims();
        let pos = Tensor::cat(
            vec![
                pos.clone().narrow(1, 0, 1),
                resize_positions(pos.narrow(1, 1, n - 1), self.grid, grid),
            ],
            1,
        );
        let mut x = Tensor::cat(vec![cls, patches], 1) + pos;
        let layout = TokenLayout::grid(grid[0], grid[1]).with_prefix(1);
        for block in &self.blocks {
            x = block.forward(x, layout);
        }
        let x = ops::layer_norm(&self.norm, x);
        ops::linear(&self.head, x.narrow(1, 0, 1).squeeze_dim::<2>(1))
    }
}

// The authors' constructors, checkpoint names, resolutions and mixer swaps (timm's order:
// blocks and model above; see `upstream`, `mixers`).

impl VitConfig {
    /// timm's `VisionTransformer` (softmax in every block) and Agent-DeiT (`agent_deit.py`),
    /// from resolved constructor arguments.
    pub(crate) fn from_upstream(file: &str, a: &Args) -> Result<ModelConfig, ModelError> {
        if file == "agent_deit.py" {
            return agent_deit_config(a);
        }
        let blocks = vec![AttentionConfig::Softmax; a.usize("depth")?];
        vit(a, blocks)
    }

    /// DeiT's fine-tuning resizes `pos_embed` bicubically over the patch grid, CLS kept; the
    /// mixers' own parameters follow their rules (`linvit_attention::resize`).
    pub(crate) fn resize_rule(path: &str) -> Option<Rule> {
        pos_embed_rule(path, Interp::Cubic)
    }

    /// One layout letter for every block, or one per block.
    pub(crate) fn swap_mixers(
        &mut self,
        layout: Option<&str>,
        attention: Option<&AttentionConfig>,
    ) -> Result<(), ModelError> {
        let layout = layout.map(|l| match l.chars().count() {
            1 => l.repeat(self.blocks.len()),
            _ => l.to_string(),
        });
        swap_per_stage(&mut self.blocks, layout.as_deref(), attention, |_, _| {})
    }
}

/// Agent-DeiT: agent attention in the first `agent_layer` blocks, softmax after.
fn agent_deit_config(a: &Args) -> Result<ModelConfig, ModelError> {
    let depth = a.usize("depth")?;
    let agents = a.list("agent_num")?;
    // Upstream: `agent_layer if agent_layer > 0 else depth` (its default is -1).
    let agent_layer = a
        .get("agent_layer")
        .and_then(Value::as_i64)
        .ok_or("args.agent_layer is not an integer")?;
    let agent_layer = usize::try_from(agent_layer)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(depth);
    // Upstream: agent_num[{0:0,1:1,2:2,3:2,4:2,5:3}[i//2]].
    let pick = [0, 1, 2, 2, 2, 3];
    let blocks = (0..depth)
        .map(|i| {
            if i >= agent_layer {
                return Ok(AttentionConfig::Softmax);
            }
            let slot = pick.get(i / 2).copied().unwrap_or(3);
            agents
                .get(slot)
                .map(|&m| agent(m))
                .ok_or_else(|| model_error!("args.agent_num has no entry {slot}"))
        })
        .collect::<Result<_, ModelError>>()?;
    vit(a, blocks)
}

fn vit(a: &Args, blocks: Vec<AttentionConfig>) -> Result<ModelConfig, ModelError> {
    Ok(ModelConfig::Vit(VitConfig {
        img_size: a.usize("img_size")?,
        patch_size: a.usize("patch_size")?,
        in_chans: a.usize_or("in_chans", 3)?,
        num_classes: a.usize("num_classes")?,
        embed_dim: a.usize("embed_dim")?,
        num_heads: a.usize("num_heads")?,
        mlp_ratio: a.f64_or("mlp_ratio", 4.0)?,
        qkv_bias: a.bool_or("qkv_bias", true)?,
        drop_path_rate: a.f64_or("drop_path_rate", 0.0)?,
        blocks,
    }))
}

// The papers' variants as typed calls of the authors' constructors; `presets.rs` names them,
// with their papers and parameter counts.

/// Keyword arguments of timm's `VisionTransformer` and Agent-DeiT (`agent_deit.py`) that the
/// presets set; a field left `None` keeps the factory's or the class's value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VitArgs {
    pub img_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub num_classes: Option<usize>,
    pub embed_dim: Option<usize>,
    pub depth: Option<usize>,
    pub num_heads: Option<usize>,
    pub mlp_ratio: Option<f64>,
    pub drop_path_rate: Option<f64>,
    /// Agent-DeiT only.
    pub agent_num: Option<Vec<usize>>,
    /// Agent-DeiT only: agent attention in this many blocks (`-1`: all).
    pub agent_layer: Option<i64>,
}

const TIMM_VIT: &str = "timm.models.vision_transformer.VisionTransformer";

/// DeiT's recipe on timm's class: stochastic depth 0.1 on any width.
fn deit(embed_dim: Option<usize>, num_heads: Option<usize>) -> Call {
    let args = VitArgs {
        embed_dim,
        num_heads,
        drop_path_rate: Some(0.1),
        ..VitArgs::default()
    };
    Call::class(TIMM_VIT, &args)
}

pub fn deit_t() -> Call {
    deit(Some(192), Some(3))
}

pub fn deit_s() -> Call {
    deit(Some(384), Some(6))
}

pub fn deit_b() -> Call {
    deit(None, None)
}

/// Agent-DeiT's factory with its training config's stochastic depth.
fn agent_deit(factory: &'static str, drop_path_rate: Option<f64>) -> Call {
    let args = VitArgs {
        drop_path_rate,
        ..VitArgs::default()
    };
    Call::factory(factory, &args)
}

pub fn agent_deit_t() -> Call {
    agent_deit("agent_deit_tiny", None)
}

pub fn agent_deit_s() -> Call {
    agent_deit("agent_deit_small", Some(0.1))
}

/// The base model's config also widens every stage's agents to 81.
pub fn agent_deit_b() -> Call {
    let args = VitArgs {
        drop_path_rate: Some(0.3),
        agent_num: Some(vec![81; 4]),
        ..VitArgs::default()
    };
    Call::factory("agent_deit_base", &args)
}

/// The reduced model of the reference cases: 32² images, 2 blocks of width 64, 10 classes.
pub fn tiny_vit() -> Call {
    let args = VitArgs {
        img_size: Some(32),
        patch_size: Some(8),
        num_classes: Some(10),
        embed_dim: Some(64),
        depth: Some(2),
        num_heads: Some(2),
        ..VitArgs::default()
    };
    Call::class(TIMM_VIT, &args)
}

/// The reduced Agent-DeiT of the reference cases: agents in 3 of 4 blocks.
pub fn tiny_agent_deit() -> Call {
    let args = VitArgs {
        img_size: Some(64),
        patch_size: Some(8),
        num_classes: Some(10),
        embed_dim: Some(64),
        depth: Some(4),
        num_heads: Some(2),
        mlp_ratio: Some(2.0),
        agent_num: Some(vec![4, 9, 16, 16]),
        agent_layer: Some(3),
        ..VitArgs::default()
    };
    Call::class("agent_deit.py", &args)
}
