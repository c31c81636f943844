//! CSWin Transformer (Dong et al. 2022) with any mixer per stage, following FLatten's
//! `flatten_cswin.py` and Agent Attention's `agent_cswin.py`.
//!
//! Conv stem (7x7 stride 4) + LayerNorm; each block projects `qkv` itself and splits the
//! channels into two branches, vertical stripes (`H x split`) and horizontal (`split x W`), each
//! with half the heads; in the last stage, or when the split covers the whole grid, one branch
//! runs on the whole map. Mixers get `q, k, v` and add LePE. Stages end with a strided 3x3 conv
//! merge + LayerNorm. All LayerNorms eps 1e-5; mean-pooled head.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use linvit_attention::import::Rename;
use linvit_attention::ops::{self, image_to_tokens, tokens_to_image};
use linvit_attention::Kind;
use linvit_attention::LayerNorm;
use linvit_attention::{Attention, AttentionConfig, MixerShape, Projection, TokenLayout};
use serde::{Deserialize, Serialize};

use crate::mixers::{softmax_or, swap_per_stage};
use crate::upstream::{agent, at, family_stage_kinds, Args, Call};
use crate::{model_error, ModelConfig, ModelError};

use crate::layers::{
    check_lengths, conv, drop_path_rates, layer_norm, linear, mean_pool_head, DropPath, Mlp,
};

/// A CSwin; names follow the upstream constructor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CswinConfig {
    pub img_size: usize,
    #[serde(default = "crate::layers::defaults::in_chans")]
    pub in_chans: usize,
    pub num_classes: usize,
    pub embed_dim: usize,
    pub depth: Vec<usize>,
    pub num_heads: Vec<usize>,
    #[serde(default = "crate::layers::defaults::mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "crate::layers::defaults::qkv_bias")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub drop_path_rate: f64,
    /// The mixer of each stage.
    pub attention: Vec<AttentionConfig>,
    /// Stripe width of each stage (the whole grid makes one global branch).
    pub splits: Vec<usize>,
}

/// The conv stem; fields map to upstream's `nn.Sequential` entries `0` and `2`.
#[derive(Module, Debug)]
pub struct ConvEmbed {
    pub conv: Conv2d,
    pub norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct CswinBlock {
    pub qkv: Linear,
    pub norm1: LayerNorm,
    pub attns: Vec<Attention>,
    pub proj: Linear,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: DropPath,
}

/// `Merge_Block`: 3x3 stride-2 conv to twice the channels, then LayerNorm.
#[derive(Module, Debug)]
pub struct MergeBlock {
    pub conv: Conv2d,
    pub norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct CswinStage {
    pub blocks: Vec<CswinBlock>,
    pub merge: Option<MergeBlock>,
}

#[derive(Module, Debug)]
pub struct Cswin {
    pub stage1_conv_embed: ConvEmbed,
    pub stages: Vec<CswinStage>,
    pub norm: LayerNorm,
    pub head: Linear,
}

impl CswinConfig {
    pub fn validate(&self) -> Result<(), ModelError> {
        let n = self.depth.len();
        check_lengths(
            "depth",
            n,
            &[
                ("num_heads", self.num_heads.len()),
                ("attention", self.attention.len()),
                ("splits", self.splits.len()),
            ],
        )?;
        for i in 0..n {
            let (c, heads, side) = (self.embed_dim << i, self.num_heads[i], self.stage_side(i));
            for shape in self.branch_shapes(i, c, heads, side) {
                shape
                    .validate(&self.attention[i])
                    .map_err(|e| model_error!("stage {}: {e}", i + 1))?;
            }
        }
        Ok(())
    }

    fn stage_side(&self, i: usize) -> usize {
        self.img_size / 4 / (1 << i)
    }

    /// One global branch, or two stripe branches on half the channels and heads.
    fn branch_shapes(&self, i: usize, c: usize, heads: usize, side: usize) -> Vec<MixerShape> {
        let split = self.splits[i];
        let last = i + 1 == self.depth.len();
        let base = |dim, heads, stripe| {
            MixerShape::new(dim, heads, [side, side])
                .with_qkv_bias(self.qkv_bias)
                .with_projection(Projection::External { stripe, split })
        };
        if last || split >= side {
            vec![base(c, heads, -1)]
        } else {
            vec![base(c / 2, heads / 2, 0), base(c / 2, heads / 2, 1)]
        }
    }

    /// Multiply-accumulates of one image at `img_size`.
    pub fn macs(&self) -> u64 {
        let side0 = self.stage_side(0) as u64;
        let mut total = side0 * side0 * 49 * (self.in_chans * self.embed_dim) as u64;
        let n_stages = self.depth.len();
        for i in 0..n_stages {
            let side = self.stage_side(i);
            let n = (side * side) as u64;
            let c = (self.embed_dim << i) as u64;
            let hidden = (c as f64 * self.mlp_ratio) as u64;
            let layout = TokenLayout::grid(side, side);
            let mixers: u64 = self
                .branch_shapes(i, self.embed_dim << i, self.num_heads[i], side)
                .iter()
                .map(|shape| self.attention[i].macs(shape, layout))
                .sum();
            total +=
                self.depth[i] as u64 * (n * c * 3 * c + mixers + n * c * c + 2 * n * c * hidden);
            if i + 1 < n_stages {
                total += n / 4 * 9 * c * 2 * c;
            }
        }
        total + (self.embed_dim << (n_stages - 1)) as u64 * self.num_classes as u64
    }

    pub fn init(&self, device: &Device) -> Cswin {
        let mut rates = drop_path_rates(self.drop_path_rate, self.depth.iter().sum()).into_iter();
        let n = self.depth.len();
        let stages = (0..n)
            .map(|i| {
                let (c, side) = (self.embed_dim << i, self.stage_side(i));
                let blocks = (0..self.depth[i])
                    .map(|_| CswinBlock {
                        qkv: linear(c, 3 * c, self.qkv_bias, device),
                        norm1: layer_norm(c, 1e-5, device),
                        attns: self
                            .branch_shapes(i, c, self.num_heads[i], side)
                            .iter()
                            .map(|shape| self.attention[i].init(shape, device))
                            .collect(),
                        proj: linear(c, c, true, device),
                        norm2: layer_norm(c, 1e-5, device),
                        mlp: Mlp::new(
                            c,
                            (c as f64 * self.mlp_ratio) as usize,
                            false,
                            false,
                            device,
                        ),
                        drop_path: DropPath::new(rates.next().unwrap_or(0.0)),
                    })
                    .collect();
                CswinStage {
                    blocks,
                    merge: (i + 1 < n).then(|| MergeBlock {
                        conv: conv(c, 2 * c, 3, 2, 1, device),
                        norm: layer_norm(2 * c, 1e-5, device),
                    }),
                }
            })
            .collect();
        let features = self.embed_dim << (n - 1);
        Cswin {
            stage1_conv_embed: ConvEmbed {
                conv: conv(self.in_chans, self.embed_dim, 7, 4, 2, device),
                norm: layer_norm(self.embed_dim, 1e-5, device),
            },
            stages,
            norm: layer_norm(features, 1e-5, device),
            head: linear(features, self.num_classes, true, device),
        }
    }
}

impl CswinBlock {
    /// # Shapes
    /// - x: `[B, H*W, C]` -> same
    pub fn forward(&self, x: Tensor<3>, grid: [usize; 2]) -> Tensor<3> {
        let [_, _, c] = x.dims();
        let qkv = ops::normed_linear(&self.qkv, &self.norm1, x.clone());
        let layout = TokenLayout::grid(grid[0], grid[1]);
        let width = c / self.attns.len();
        let branches = self
            .attns
            .iter()
            .enumerate()
            .map(|(i, attn)| {
                let part = |which: usize| qkv.clone().narrow(2, which * c + i * width, width);
                attn.forward_qkv(part(0), part(1), part(2), layout)
            })
            .collect();
        let mixed = Tensor::cat(branches, 2);
        let x = self.drop_path.linear_residual(&self.proj, mixed, x);
        self.mlp.residual(x, &self.norm2, grid, &self.drop_path)
    }
}

impl Cswin {
    /// # Shapes
    /// - images: `[B, 3, H, W]` -> logits `[B, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let stem = self.stage1_conv_embed.conv.forward(images);
        let [_, _, h, w] = stem.dims();
        let mut grid = [h, w];
        let mut x = ops::layer_norm(&self.stage1_conv_embed.norm, image_to_tokens(stem));
        for stage in &self.stages {
            for block in &stage.blocks {
                x = block.forward(x, grid);
            }
            if let Some(merge) = &stage.merge {
                let image = merge.conv.forward(tokens_to_image(x, grid));
                let [_, _, h, w] = image.dims();
                grid = [h, w];
                x = ops::layer_norm(&merge.norm, image_to_tokens(image));
            }
        }
        let x = ops::layer_norm(&self.norm, x);
        mean_pool_head(&self.head, x)
    }
}

// The authors' constructors, checkpoint names and mixer swaps (timm's order: blocks and model
// above; see `upstream`, `mixers`). Resizing follows the mixers' own rules.

impl CswinConfig {
    /// FLatten-CSwin and Agent-CSwin from resolved constructor arguments.
    pub(crate) fn from_upstream(file: &str, a: &Args) -> Result<ModelConfig, ModelError> {
        cswin_config(file, a)
    }

    /// The authors' `stage1_conv_embed.0/2`, `stageN.` and `mergeN.` as our stages.
    pub(crate) fn renames(&self) -> Vec<Rename> {
        let pair = |a: String, b: String| (a, b);
        [
            pair(
                "stage1_conv_embed.0.".into(),
                "stage1_conv_embed.conv.".into(),
            ),
            pair(
                "stage1_conv_embed.2.".into(),
                "stage1_conv_embed.norm.".into(),
            ),
        ]
        .into_iter()
        .chain((0..self.depth.len()).flat_map(|i| {
            let n = i + 1;
            [
                pair(format!("stage{n}."), format!("stages.{i}.blocks.")),
                pair(format!("merge{n}."), format!("stages.{i}.merge.")),
            ]
        }))
        .collect()
    }

    /// A stage turned softmax gets CSwin's stripes `[1, 2, 7, 7]` where they divide the grid; a
    /// linear stage sees its whole grid.
    pub(crate) fn swap_mixers(
        &mut self,
        layout: Option<&str>,
        attention: Option<&AttentionConfig>,
    ) -> Result<(), ModelError> {
        let sides: Vec<usize> = (0..self.depth.len()).map(|i| self.stage_side(i)).collect();
        let splits = &mut self.splits;
        swap_per_stage(&mut self.attention, layout, attention, |i, new| {
            let standard = [1, 2, 7, 7].get(i).copied().unwrap_or(sides[i]);
            splits[i] = softmax_or(new, sides[i], standard, sides[i]);
        })
    }
}

/// FLatten-CSwin and Agent-CSwin: a mixer and a stripe width per stage.
fn cswin_config(file: &str, a: &Args) -> Result<ModelConfig, ModelError> {
    let depth = a.list("depth")?;
    let n = depth.len();
    let is_agent = file == "agent_cswin.py";
    let kinds = family_stage_kinds(a, is_agent, ["LLSS", "AABB"], n)?;
    let split = a.list("split_size")?;
    let la_split: Vec<usize> = a
        .str_or("la_split_size", "1-2-7-7")?
        .split('-')
        .map(|s| {
            s.parse()
                .map_err(|_| model_error!("args.la_split_size: {s:?} is not a number"))
        })
        .collect::<Result<_, ModelError>>()?;
    let agents = if is_agent {
        a.list("agent_num")?
    } else {
        Vec::new()
    };
    let (mut attention, mut splits) = (Vec::new(), Vec::new());
    for (i, kind) in kinds.iter().enumerate() {
        let (mixer, s) = match kind {
            Kind::Focused => (a.focused()?, at(&la_split, i, "la_split_size")?),
            Kind::Agent => (
                agent(at(&agents, i, "agent_num")?),
                at(&la_split, i, "la_split_size")?,
            ),
            _ => (AttentionConfig::Softmax, at(&split, i, "split_size")?),
        };
        attention.push(mixer);
        splits.push(s);
    }
    Ok(ModelConfig::Cswin(CswinConfig {
        img_size: a.usize("img_size")?,
        in_chans: a.usize_or("in_chans", 3)?,
        num_classes: a.usize("num_classes")?,
        embed_dim: a.usize("embed_dim")?,
        depth,
        num_heads: a.list("num_heads")?,
        mlp_ratio: a.f64_or("mlp_ratio", 4.0)?,
        qkv_bias: a.bool_or("qkv_bias", true)?,
        drop_path_rate: a.f64_or("drop_path_rate", 0.0)?,
        attention,
        splits,
    }))
}

// The papers' variants as typed calls of the authors' constructors; `presets.rs` names them,
// with their papers and parameter counts.

/// Keyword arguments of the CSWin classes (`flatten_cswin.py`, `agent_cswin.py`) that the
/// presets set; a field left `None` keeps the factory's or the class's value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CswinArgs {
    pub img_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub num_classes: Option<usize>,
    pub embed_dim: Option<usize>,
    pub depth: Option<Vec<usize>>,
    /// The softmax stages' stripe widths.
    pub split_size: Option<Vec<usize>>,
    /// The linear stages' stripe widths, dash-separated (`"56-28-14-7"`: whole stages at 224²).
    pub la_split_size: Option<&'static str>,
    pub num_heads: Option<Vec<usize>>,
    pub mlp_ratio: Option<f64>,
    pub drop_path_rate: Option<f64>,
    /// A mixer letter per stage.
    pub attn_type: Option<&'static str>,
    /// Agent's class: agents per stage.
    pub agent_num: Option<Vec<usize>>,
}

/// The linear stages of FLatten's and Agent's CSWin each see their whole stage at 224².
const WHOLE_STAGES: &str = "56-28-14-7";

/// The CSWin-T baseline: the released `CSWin_64_12211_tiny_224` config, on FLatten's class
/// with softmax in every stage.
pub fn cswin_t() -> Call {
    let args = CswinArgs {
        embed_dim: Some(64),
        depth: Some(vec![1, 2, 21, 1]),
        drop_path_rate: Some(0.2),
        la_split_size: Some(WHOLE_STAGES),
        attn_type: Some("SSSS"),
        ..CswinArgs::default()
    };
    Call::class("flatten_cswin.py", &args)
}

/// FLatten-CSWin: focused linear attention in the first two stages.
fn focused_cswin(factory: &'static str, drop_path_rate: f64) -> Call {
    let args = CswinArgs {
        drop_path_rate: Some(drop_path_rate),
        la_split_size: Some(WHOLE_STAGES),
        attn_type: Some("LLSS"),
        ..CswinArgs::default()
    };
    Call::factory(factory, &args)
}

/// Agent-CSWin: agent attention in the first two stages.
fn agent_cswin(factory: &'static str, drop_path_rate: f64) -> Call {
    let args = CswinArgs {
        drop_path_rate: Some(drop_path_rate),
        la_split_size: Some(WHOLE_STAGES),
        attn_type: Some("AABB"),
        agent_num: Some(vec![9, 16, 49, 49]),
        ..CswinArgs::default()
    };
    Call::factory(factory, &args)
}

pub fn flatten_cswin_t() -> Call {
    focused_cswin("FLatten_CSWin_64_24181_tiny_224", 0.2)
}

pub fn flatten_cswin_s() -> Call {
    focused_cswin("FLatten_CSWin_64_24322_small_224", 0.4)
}

pub fn flatten_cswin_b() -> Call {
    focused_cswin("FLatten_CSWin_96_36292_base_224", 0.5)
}

pub fn agent_cswin_t() -> Call {
    agent_cswin("Agent_CSWin_64_24181_tiny_224", 0.2)
}

pub fn agent_cswin_s() -> Call {
    agent_cswin("Agent_CSWin_64_36292_small_224", 0.4)
}

pub fn agent_cswin_b() -> Call {
    agent_cswin("Agent_CSWin_96_36292_base_224", 0.5)
}

/// The reduced CSWin of the reference cases: 64² images, width 16, 6 blocks.
fn tiny() -> CswinArgs {
    CswinArgs {
        img_size: Some(64),
        patch_size: Some(4),
        num_classes: Some(10),
        embed_dim: Some(16),
        depth: Some(vec![1, 2, 2, 1]),
        split_size: Some(vec![1, 2, 2, 2]),
        num_heads: Some(vec![2, 2, 4, 4]),
        mlp_ratio: Some(2.0),
        ..CswinArgs::default()
    }
}

pub fn tiny_flatten_cswin() -> Call {
    let args = CswinArgs {
        la_split_size: Some("16-8-4-2"),
        attn_type: Some("LLSS"),
        ..tiny()
    };
    Call::class("flatten_cswin.py", &args)
}

/// Stage 2's agent stripes are 4 wide, not its whole 8-wide grid.
pub fn tiny_agent_cswin() -> Call {
    let args = CswinArgs {
        la_split_size: Some("16-4-4-2"),
        attn_type: Some("AABB"),
        agent_num: Some(vec![4, 4, 9, 9]),
        ..tiny()
    };
    Call::class("agent_cswin.py", &args)
}
