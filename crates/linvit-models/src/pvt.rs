//! PVT v1 and v2 (Wang et al. 2021, 2022) with any mixer per stage, following FLatten's
//! `models/flatten_pvt{,_v2}.py` and Agent Attention's `agent_pvt.py`: four stages of patch
//! embedding + blocks, no CLS token, mean-pooled head.
//!
//! v1: non-overlapping patch embedding (`patch_size`, then 2) + LayerNorm(1e-5), a learned
//! `pos_embed` per stage, block norms of `norm_eps` (1e-6 in every factory). v2: overlapping
//! embedding (7/4/3 then 3/2/1), no position embedding, a depthwise conv in the MLP, a
//! LayerNorm(`norm_eps`) closing every stage.
//! FLatten's PVT v1 builds a final `norm` it never applies; `unused_norm` keeps it so the
//! authors' checkpoints load, and it gets no gradient, as upstream.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Distribution, Tensor};
use linvit_attention::import::Rename;
use linvit_attention::ops::{self, tokens_to_image};
use linvit_attention::resize::{Interp, Rule};
use linvit_attention::Kind;
use linvit_attention::LayerNorm;
use linvit_attention::{AttentionConfig, MixerShape, Projection, TokenLayout};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mixers::{softmax_or, swap_per_stage};
use crate::upstream::{agent, at, family_stage_kinds, layer_norm_eps, Args, Call};
use crate::{ModelConfig, ModelError};

use crate::block::{Block, BlockSpec};
use crate::layers::{
    check_lengths, conv, drop_path_rates, layer_norm, linear, mean_pool_head, pos_embed_rule,
    resize_positions, PatchEmbed,
};
use crate::model_error;

/// A PVT; names follow the upstream constructors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PvtConfig {
    /// 1 or 2.
    pub version: u8,
    pub img_size: usize,
    /// v1's first-stage patch size (4); v2 always embeds with 7x7 stride 4.
    #[serde(default = "crate::layers::defaults::patch_size")]
    pub patch_size: usize,
    #[serde(default = "crate::layers::defaults::in_chans")]
    pub in_chans: usize,
    pub num_classes: usize,
    pub embed_dims: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub mlp_ratios: Vec<f64>,
    #[serde(default = "crate::layers::defaults::qkv_bias")]
    pub qkv_bias: bool,
    pub depths: Vec<usize>,
    /// The mixer of each stage.
    pub attention: Vec<AttentionConfig>,
    /// Spatial-reduction ratio of each stage's mixer.
    pub sr_ratios: Vec<usize>,
    /// PVTv2-li: keys pooled to 7x7, ReLU in the MLP.
    #[serde(default)]
    pub linear: bool,
    #[serde(default)]
    pub drop_path_rate: f64,
    /// Epsilon of the `norm_layer` LayerNorms (the blocks', v2's stage norms, v1's final norm):
    /// upstream's class default is `nn.LayerNorm` (1e-5), every factory passes 1e-6. The patch
    /// embeddings' norms are always 1e-5.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Keep FLatten-PVT's never-applied final norm (for its checkpoints).
    #[serde(default)]
    pub unused_norm: bool,
}

/// Model folders saved before `norm_eps` existed hold the factories' 1e-6.
fn default_norm_eps() -> f64 {
    1e-6
}

#[derive(Module, Debug)]
pub struct PvtStage {
    pub patch_embed: PatchEmbed,
    /// v1 only: `[1, h*w, C]`.
    pub pos_embed: Option<Param<Tensor<3>>>,
    pub blocks: Vec<Block>,
    /// v2 only: closes the stage.
    pub norm: Option<LayerNorm>,
    #[module(skip)]
    pub grid: [usize; 2],
}

#[derive(Module, Debug)]
pub struct Pvt {
    pub stages: Vec<PvtStage>,
    /// Built, never applied (FLatten-PVT v1).
    pub norm: Option<LayerNorm>,
    pub head: Linear,
}

impl PvtConfig {
    pub fn validate(&self) -> Result<(), ModelError> {
        check_lengths(
            "depths",
            self.depths.len(),
            &[
                ("embed_dims", self.embed_dims.len()),
                ("num_heads", self.num_heads.len()),
                ("mlp_ratios", self.mlp_ratios.len()),
                ("attention", self.attention.len()),
                ("sr_ratios", self.sr_ratios.len()),
            ],
        )?;
        if self.version != 1 && self.version != 2 {
            return Err(model_error!("version must be 1 or 2, not {}", self.version));
        }
        for i in 0..self.depths.len() {
            MixerShape::new(self.embed_dims[i], self.num_heads[i], self.stage_grid(i))
                .with_projection(Projection::Reduced {
                    sr_ratio: self.sr_ratios[i],
                    pooled: self.linear,
                })
                .validate(&self.attention[i])
                .map_err(|e| model_error!("stage {}: {e}", i + 1))?;
        }
        Ok(())
    }

    /// Token grid of stage `i` at `img_size`.
    pub fn stage_grid(&self, i: usize) -> [usize; 2] {
        let first = if self.version == 1 {
            self.patch_size
        } else {
            4
        };
        let side = self.img_size / first / (1 << i);
        [side, side]
    }

    /// Multiply-accumulates of one image at `img_size`.
    pub fn macs(&self) -> u64 {
        let v2 = self.version == 2;
        let mut total = 0u64;
        for i in 0..self.depths.len() {
            let grid = self.stage_grid(i);
            let n = (grid[0] * grid[1]) as u64;
            let c = self.embed_dims[i] as u64;
            let c_in = if i == 0 {
                self.in_chans
            } else {
                self.embed_dims[i - 1]
            } as u64;
            let k = match (v2, i) {
                (true, 0) => 7,
                (true, _) => 3,
                (false, 0) => self.patch_size as u64,
                (false, _) => 2,
            };
            total += n * k * k * c_in * c;
            let hidden = (self.embed_dims[i] as f64 * self.mlp_ratios[i]) as u64;
            let shape = MixerShape::new(self.embed_dims[i], self.num_heads[i], grid)
                .with_projection(Projection::Reduced {
                    sr_ratio: self.sr_ratios[i],
                    pooled: self.linear,
                });
            let layout = TokenLayout::grid(grid[0], grid[1]);
            let mlp = 2 * n * c * hidden + if v2 { n * 9 * hidden } else { 0 };
            total += self.depths[i] as u64 * (self.attention[i].macs(&shape, layout) + mlp);
        }
        total + *self.embed_dims.last().unwrap_or(&0) as u64 * self.num_classes as u64
    }

    pub fn init(&self, device: &Device) -> Pvt {
        let rates = drop_path_rates(self.drop_path_rate, self.depths.iter().sum());
        let mut rates = rates.into_iter();
        let v2 = self.version == 2;
        let stages = (0..self.depths.len())
            .map(|i| {
                let c = self.embed_dims[i];
                let c_in = if i == 0 {
                    self.in_chans
                } else {
                    self.embed_dims[i - 1]
                };
                let grid = self.stage_grid(i);
                let proj = match (v2, i) {
                    (true, 0) => conv(c_in, c, 7, 4, 3, device),
                    (true, _) => conv(c_in, c, 3, 2, 1, device),
                    (false, 0) => conv(c_in, c, self.patch_size, self.patch_size, 0, device),
                    (false, _) => conv(c_in, c, 2, 2, 0, device),
                };
                let shape = MixerShape::new(c, self.num_heads[i], grid)
                    .with_qkv_bias(self.qkv_bias)
                    .with_projection(Projection::Reduced {
                        sr_ratio: self.sr_ratios[i],
                        pooled: self.linear,
                    });
                let blocks = (0..self.depths[i])
                    .map(|_| {
                        let spec = BlockSpec {
                            mlp_ratio: self.mlp_ratios[i],
                            eps: self.norm_eps,
                            drop_path: rates.next().unwrap_or(0.0),
                            mlp_dwconv: v2,
                            mlp_relu: v2 && self.linear,
                        };
                        Block::new(&self.attention[i], &shape, spec, device)
                    })
                    .collect();
                PvtStage {
                    patch_embed: PatchEmbed {
                        proj,
                        norm: Some(layer_norm(c, 1e-5, device)),
                    },
                    pos_embed: (!v2).then(|| {
                        Param::from_tensor(Tensor::random(
                            [1, grid[0] * grid[1], c],
                            Distribution::Normal(0.0, 0.02),
                            device,
                        ))
                    }),
                    blocks,
                    norm: v2.then(|| layer_norm(c, self.norm_eps, device)),
                    grid,
                }
            })
            .collect();
        let last = *self.embed_dims.last().unwrap_or(&0);
        Pvt {
            stages,
            norm: self
                .unused_norm
                .then(|| layer_norm(last, self.norm_eps, device)),
            head: linear(last, self.num_classes, true, device),
        }
    }
}

impl Pvt {
    /// # Shapes
    /// - images: `[B, 3, H, W]` -> logits `[B, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut image = images;
        let mut tokens = None;
        let last = self.stages.len() - 1;
        for (i, stage) in self.stages.iter().enumerate() {
            let (mut x, grid) = stage.patch_embed.forward(image.clone());
            if let Some(pos) = &stage.pos_embed {
                x = x + resize_positions(pos.val(), stage.grid, grid);
            }
            let layout = TokenLayout::grid(grid[0], grid[1]);
            for block in &stage.blocks {
                x = block.forward(x, layout);
            }
            if let Some(norm) = &stage.norm {
                x = ops::layer_norm(norm, x);
            }
            if i < last {
                image = tokens_to_image(x, grid);
            } else {
                tokens = Some(x);
            }
        }
        let x = tokens.expect("a PVT has at least one stage");
        mean_pool_head(&self.head, x)
    }
}

// The authors' constructors, checkpoint names, resolutions and mixer swaps (timm's order:
// blocks and model above; see `upstream`, `mixers`).

impl PvtConfig {
    /// FLatten-PVT (v1, v2) and Agent-PVT from resolved constructor arguments.
    pub(crate) fn from_upstream(file: &str, a: &Args) -> Result<ModelConfig, ModelError> {
        pvt_config(file, a)
    }

    /// The authors' per-stage names (`patch_embed1.`, `block1.`, ...) as our stages.
    pub(crate) fn renames(&self) -> Vec<Rename> {
        let pair = |a: String, b: String| (a, b);
        (0..self.depths.len())
            .flat_map(|i| {
                let n = i + 1;
                [
                    pair(
                        format!("patch_embed{n}."),
                        format!("stages.{i}.patch_embed."),
                    ),
                    pair(format!("pos_embed{n}"), format!("stages.{i}.pos_embed")),
                    pair(format!("block{n}."), format!("stages.{i}.blocks.")),
                    pair(format!("norm{n}."), format!("stages.{i}.norm.")),
                ]
            })
            .collect()
    }

    /// Each stage's `pos_embed` bilinear, as PVT's forward resizes it at another size; the
    /// mixers' own parameters follow their rules (`linvit_attention::resize`).
    pub(crate) fn resize_rule(path: &str) -> Option<Rule> {
        pos_embed_rule(path, Interp::Linear)
    }

    /// A stage turned softmax gets PVT's reduction `[8, 4, 2, 1]` where it divides the grid; a
    /// linear stage none.
    pub(crate) fn swap_mixers(
        &mut self,
        layout: Option<&str>,
        attention: Option<&AttentionConfig>,
    ) -> Result<(), ModelError> {
        let sides: Vec<usize> = (0..self.depths.len())
            .map(|i| self.stage_grid(i)[0])
            .collect();
        let sr_ratios = &mut self.sr_ratios;
        swap_per_stage(&mut self.attention, layout, attention, |i, new| {
            let standard = [8, 4, 2, 1].get(i).copied().unwrap_or(1);
            sr_ratios[i] = softmax_or(new, sides[i], standard, 1);
        })
    }
}

/// FLatten-PVT (v1, v2) and Agent-PVT: a mixer and a spatial reduction per stage.
fn pvt_config(file: &str, a: &Args) -> Result<ModelConfig, ModelError> {
    let depths = a.list("depths")?;
    let n = depths.len();
    let is_agent = file == "agent_pvt.py";
    let kinds = family_stage_kinds(a, is_agent, ["LLLL", "AAAA"], n)?;
    let sr = a.list("sr_ratios")?;
    let la_sr = a.digits(
        if is_agent {
            "agent_sr_ratios"
        } else {
            "la_sr_ratios"
        },
        "8421",
    )?;
    let agents = if is_agent {
        a.list("agent_num")?
    } else {
        Vec::new()
    };
    let mut attention = Vec::new();
    let mut sr_ratios = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let (mixer, ratio) = match kind {
            Kind::Focused => (a.focused()?, at(&la_sr, i, "la_sr_ratios")?),
            Kind::Agent => (
                agent(at(&agents, i, "agent_num")?),
                at(&la_sr, i, "agent_sr_ratios")?,
            ),
            _ => (AttentionConfig::Softmax, at(&sr, i, "sr_ratios")?),
        };
        attention.push(mixer);
        sr_ratios.push(ratio);
    }
    Ok(ModelConfig::Pvt(PvtConfig {
        version: if file == "flatten_pvt_v2.py" { 2 } else { 1 },
        img_size: a.usize("img_size")?,
        patch_size: a.usize_or("patch_size", 4)?,
        in_chans: a.usize_or("in_chans", 3)?,
        num_classes: a.usize("num_classes")?,
        embed_dims: a.list("embed_dims")?,
        num_heads: a.list("num_heads")?,
        mlp_ratios: a.list_f64("mlp_ratios")?,
        qkv_bias: a.bool_or("qkv_bias", false)?,
        depths,
        attention,
        sr_ratios,
        linear: a.bool_or("linear", false)?,
        drop_path_rate: a.f64_or("drop_path_rate", 0.0)?,
        norm_eps: layer_norm_eps(a.get("norm_layer").unwrap_or(&Value::Null))?,
        unused_norm: file == "flatten_pvt.py",
    }))
}

// The papers' variants as typed calls of the authors' constructors; `presets.rs` names them,
// with their papers and parameter counts.

/// Keyword arguments of the PVT classes (`flatten_pvt.py`, `flatten_pvt_v2.py`,
/// `agent_pvt.py`) that the presets set; a field left `None` keeps the factory's or the
/// class's value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PvtArgs {
    pub img_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub num_classes: Option<usize>,
    pub embed_dims: Option<Vec<usize>>,
    pub num_heads: Option<Vec<usize>>,
    pub mlp_ratios: Option<Vec<usize>>,
    pub qkv_bias: Option<bool>,
    pub depths: Option<Vec<usize>>,
    pub drop_path_rate: Option<f64>,
    /// The norm layer as the authors' source writes it (`partial(nn.LayerNorm, eps=1e-6)`).
    pub norm_layer: Option<&'static str>,
    /// FLatten's classes: a mixer letter per stage.
    pub attn_type: Option<&'static str>,
    /// FLatten's classes: the focused stages' spatial reduction, a digit per stage.
    pub la_sr_ratios: Option<&'static str>,
    /// Agent's class: the agent stages' spatial reduction, a digit per stage.
    pub agent_sr_ratios: Option<&'static str>,
    /// Agent's class: agents per stage.
    pub agent_num: Option<Vec<usize>>,
}

/// The PVT baseline: one of FLatten's factories with softmax in every stage.
fn softmax_pvt(factory: &'static str) -> Call {
    let args = PvtArgs {
        attn_type: Some("SSSS"),
        drop_path_rate: Some(0.1),
        ..PvtArgs::default()
    };
    Call::factory(factory, &args)
}

/// FLatten-PVT: focused linear attention in every stage, without spatial reduction.
fn focused_pvt(factory: &'static str, drop_path_rate: f64) -> Call {
    let args = PvtArgs {
        la_sr_ratios: Some("1111"),
        drop_path_rate: Some(drop_path_rate),
        ..PvtArgs::default()
    };
    Call::factory(factory, &args)
}

/// Agent-PVT: the factory as it is, with the training config's stochastic depth.
fn agent_pvt(factory: &'static str, drop_path_rate: f64) -> Call {
    let args = PvtArgs {
        drop_path_rate: Some(drop_path_rate),
        ..PvtArgs::default()
    };
    Call::factory(factory, &args)
}

pub fn pvt_t() -> Call {
    softmax_pvt("flatten_pvt_tiny")
}

pub fn pvt_s() -> Call {
    softmax_pvt("flatten_pvt_small")
}

pub fn pvt_v2_b0() -> Call {
    softmax_pvt("flatten_pvt_v2_b0")
}

pub fn pvt_v2_b1() -> Call {
    softmax_pvt("flatten_pvt_v2_b1")
}

pub fn pvt_v2_b2() -> Call {
    softmax_pvt("flatten_pvt_v2_b2")
}

pub fn flatten_pvt_t() -> Call {
    focused_pvt("flatten_pvt_tiny", 0.1)
}

pub fn flatten_pvt_s() -> Call {
    focused_pvt("flatten_pvt_small", 0.1)
}

pub fn flatten_pvt_m() -> Call {
    focused_pvt("flatten_pvt_medium", 0.3)
}

pub fn flatten_pvt_l() -> Call {
    focused_pvt("flatten_pvt_large", 0.3)
}

pub fn flatten_pvt_v2_b0() -> Call {
    focused_pvt("flatten_pvt_v2_b0", 0.1)
}

pub fn flatten_pvt_v2_b1() -> Call {
    focused_pvt("flatten_pvt_v2_b1", 0.1)
}

pub fn flatten_pvt_v2_b2() -> Call {
    focused_pvt("flatten_pvt_v2_b2", 0.1)
}

pub fn flatten_pvt_v2_b3() -> Call {
    focused_pvt("flatten_pvt_v2_b3", 0.3)
}

pub fn flatten_pvt_v2_b4() -> Call {
    focused_pvt("flatten_pvt_v2_b4", 0.3)
}

pub fn agent_pvt_t() -> Call {
    agent_pvt("agent_pvt_tiny", 0.1)
}

pub fn agent_pvt_s() -> Call {
    agent_pvt("agent_pvt_small", 0.1)
}

pub fn agent_pvt_m() -> Call {
    agent_pvt("agent_pvt_medium", 0.3)
}

pub fn agent_pvt_l() -> Call {
    agent_pvt("agent_pvt_large", 0.3)
}

/// The reduced PVT of the reference cases: 64² images, widths 16 to 64, 5 blocks.
fn tiny() -> PvtArgs {
    PvtArgs {
        img_size: Some(64),
        patch_size: Some(4),
        num_classes: Some(10),
        embed_dims: Some(vec![16, 32, 48, 64]),
        num_heads: Some(vec![1, 2, 3, 4]),
        mlp_ratios: Some(vec![2; 4]),
        qkv_bias: Some(true),
        depths: Some(vec![2, 1, 1, 1]),
        norm_layer: Some("partial(nn.LayerNorm, eps=1e-6)"),
        ..PvtArgs::default()
    }
}

/// With a spatial reduction of 2 in the first stage.
pub fn tiny_flatten_pvt() -> Call {
    let args = PvtArgs {
        la_sr_ratios: Some("2111"),
        ..tiny()
    };
    Call::class("flatten_pvt.py", &args)
}

pub fn tiny_flatten_pvt_v2() -> Call {
    let args = PvtArgs {
        la_sr_ratios: Some("1111"),
        ..tiny()
    };
    Call::class("flatten_pvt_v2.py", &args)
}

/// With a spatial reduction of 2 in the first stage.
pub fn tiny_agent_pvt() -> Call {
    let args = PvtArgs {
        agent_sr_ratios: Some("2111"),
        agent_num: Some(vec![4, 9, 16, 4]),
        ..tiny()
    };
    Call::class("agent_pvt.py", &args)
}
