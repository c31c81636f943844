//! Swin Transformer (Liu et al. 2021) with any mixer per stage, in the authors' layout
//! (Microsoft's code as forked by FLatten `flatten_swin.py` and Agent `agent_swin.py`) or
//! timm's (`layout = "timm"`: patch merging opens the next stage, head named `head.fc`; the
//! name map handles it, the computation is the same).
//!
//! Per block: pre-norm, cyclic shift by `window / 2` on odd blocks, window partition, the
//! mixer on each window, reverse. Softmax windows add the relative position bias and, when
//! shifted, the -100 mask; linear and agent windows are shifted but unmasked, as upstream. A
//! window not smaller than the stage's grid shrinks to the grid and is not shifted.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use linvit_attention::import::Rename;
use linvit_attention::windows::Windows;
use linvit_attention::Kind;
use linvit_attention::{ops, Attention, AttentionConfig, LayerNorm, MixerShape, TokenLayout};
use serde::{Deserialize, Serialize};

use crate::mixers::{kinds, pick, softmax_or};
use crate::upstream::{agent, at, upstream_layout, Args, Call};
use crate::{ModelConfig, ModelError};

use crate::layers::{
    check_lengths, conv, drop_path_rates, layer_norm, linear, mean_pool_head, DropPath, Mlp,
    PatchEmbed,
};
use crate::model_error;

/// A Swin; names follow the upstream constructors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwinConfig {
    pub img_size: usize,
    #[serde(default = "crate::layers::defaults::patch_size")]
    pub patch_size: usize,
    #[serde(default = "crate::layers::defaults::in_chans")]
    pub in_chans: usize,
    pub num_classes: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    #[serde(default = "crate::layers::defaults::mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "crate::layers::defaults::qkv_bias")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub drop_path_rate: f64,
    /// The mixer of each block, stage by stage (`attention[i].len() == depths[i]`).
    pub attention: Vec<Vec<AttentionConfig>>,
    /// The window of each block before it is clamped to the grid (a linear block's window is
    /// usually the whole stage), stage by stage.
    pub windows: Vec<Vec<usize>>,
    /// Checkpoint naming: `microsoft` (the authors' forks) or `timm`.
    #[serde(default)]
    pub naming: SwinNaming,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwinNaming {
    #[default]
    Microsoft,
    Timm,
}

#[derive(Module, Debug)]
pub struct SwinBlock {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: DropPath,
    #[module(skip)]
    pub window: usize,
    #[module(skip)]
    pub shift: usize,
}

/// `concat(x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]) -> norm -> reduction`.
#[derive(Module, Debug)]
pub struct PatchMerging {
    pub norm: LayerNorm,
    pub reduction: Linear,
}

#[derive(Module, Debug)]
pub struct SwinStage {
    pub blocks: Vec<SwinBlock>,
    /// Closes every stage but the last.
    pub downsample: Option<PatchMerging>,
}

#[derive(Module, Debug)]
pub struct Swin {
    pub patch_embed: PatchEmbed,
    pub layers: Vec<SwinStage>,
    pub norm: LayerNorm,
    pub head: Linear,
    #[module(skip)]
    pub naming: SwinNaming,
}

impl SwinConfig {
    pub fn validate(&self) -> Result<(), ModelError> {
        let n = self.depths.len();
        check_lengths(
            "depths",
            n,
            &[
                ("num_heads", self.num_heads.len()),
                ("attention", self.attention.len()),
                ("windows", self.windows.len()),
            ],
        )?;
        for i in 0..n {
            if self.attention[i].len() != self.depths[i] || self.windows[i].len() != self.depths[i]
            {
                return Err(model_error!(
                    "stage {}: attention and windows need one entry per block ({})",
                    i + 1,
                    self.depths[i]
                ));
            }
            let side = self.stage_side(i);
            for j in 0..self.depths[i] {
                let (window, _) = self.window_and_shift(i, j);
                if window == 0 || !side.is_multiple_of(window) {
                    return Err(model_error!(
                        "stage {} grid {side}x{side} is not divisible by its window {window}",
                        i + 1
                    ));
                }
                let c = self.embed_dim << i;
                MixerShape::new(c, self.num_heads[i], [window, window])
                    .validate(&self.attention[i][j])
                    .map_err(|e| model_error!("stage {} block {j}: {e}", i + 1))?;
            }
        }
        Ok(())
    }

    fn stage_side(&self, i: usize) -> usize {
        self.img_size / self.patch_size / (1 << i)
    }

    /// The window and shift of block `j` of stage `i`.
    fn window_and_shift(&self, i: usize, j: usize) -> (usize, usize) {
        let side = self.stage_side(i);
        let w = self.windows[i][j];
        if side <= w {
            (side, 0)
        } else {
            (w, if j % 2 == 1 { w / 2 } else { 0 })
        }
    }

    /// Multiply-accumulates of one image at `img_size`.
    pub fn macs(&self) -> u64 {
        let side0 = self.stage_side(0) as u64;
        let mut total = side0
            * side0
            * (self.patch_size * self.patch_size * self.in_chans * self.embed_dim) as u64;
        let last = self.depths.len() - 1;
        for i in 0..self.depths.len() {
            let side = self.stage_side(i);
            let n = (side * side) as u64;
            let c = (self.embed_dim << i) as u64;
            let hidden = (c as f64 * self.mlp_ratio) as u64;
            for j in 0..self.depths[i] {
                let (w, _) = self.window_and_shift(i, j);
                let windows = ((side / w) * (side / w)) as u64;
                let shape = MixerShape::new(self.embed_dim << i, self.num_heads[i], [w, w]);
                total += windows * self.attention[i][j].macs(&shape, TokenLayout::grid(w, w));
                total += 2 * n * c * hidden;
            }
            if i < last {
                total += n / 4 * 4 * c * 2 * c;
            }
        }
        total + (self.embed_dim << last) as u64 * self.num_classes as u64
    }

    pub fn init(&self, device: &Device) -> Swin {
        let mut rates = drop_path_rates(self.drop_path_rate, self.depths.iter().sum()).into_iter();
        let last = self.depths.len() - 1;
        let layers = (0..self.depths.len())
            .map(|i| {
                let c = self.embed_dim << i;
                let blocks = (0..self.depths[i])
                    .map(|j| {
                        let softmax = self.attention[i][j] == AttentionConfig::Softmax;
                        let (window, shift) = self.window_and_shift(i, j);
                        let shape = MixerShape::new(c, self.num_heads[i], [window, window])
                            .with_qkv_bias(self.qkv_bias)
                            .with_relative_position_bias(softmax);
                        SwinBlock {
                            norm1: layer_norm(c, 1e-5, device),
                            attn: self.attention[i][j].init(&shape, device),
                            norm2: layer_norm(c, 1e-5, device),
                            mlp: Mlp::new(
                                c,
                                (c as f64 * self.mlp_ratio) as usize,
                                false,
                                false,
                                device,
                            ),
                            drop_path: DropPath::new(rates.next().unwrap_or(0.0)),
                            window,
                            shift,
                        }
                    })
                    .collect();
                SwinStage {
                    blocks,
                    downsample: (i < last).then(|| PatchMerging {
                        norm: layer_norm(4 * c, 1e-5, device),
                        reduction: linear(4 * c, 2 * c, false, device),
                    }),
                }
            })
            .collect();
        let features = self.embed_dim << last;
        Swin {
            patch_embed: PatchEmbed {
                proj: conv(
                    self.in_chans,
                    self.embed_dim,
                    self.patch_size,
                    self.patch_size,
                    0,
                    device,
                ),
                norm: Some(layer_norm(self.embed_dim, 1e-5, device)),
            },
            layers,
            norm: layer_norm(features, 1e-5, device),
            head: linear(features, self.num_classes, true, device),
            naming: self.naming,
        }
    }
}

impl SwinBlock {
    /// # Shapes
    /// - x: `[B, H*W, C]` -> same
    pub fn forward(&self, x: Tensor<3>, grid: [usize; 2]) -> Tensor<3> {
        let windows = Windows {
            grid,
            window: [self.window; 2],
            shift: self.shift,
        };
        let x = (self.attn).residual_in_windows(x, &self.norm1, windows, &self.drop_path);
        self.mlp.residual(x, &self.norm2, grid, &self.drop_path)
    }
}

impl PatchMerging {
    /// `[B, H*W, C]` on `grid` -> `[B, H*W/4, 2C]`.
    pub fn forward(&self, x: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<3> {
        let [b, _, c] = x.dims();
        let x: Tensor<6> = x.reshape([b, h / 2, 2, w / 2, 2, c]);
        let x = x.permute([0, 1, 3, 4, 2, 5]).reshape([b, h * w / 4, 4 * c]);
        ops::normed_linear(&self.reduction, &self.norm, x)
    }
}

impl Swin {
    /// # Shapes
    /// - images: `[B, 3, H, W]` -> logits `[B, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let (mut x, mut grid) = self.patch_embed.forward(images);
        for stage in &self.layers {
            for block in &stage.blocks {
                x = block.forward(x, grid);
            }
            if let Some(merge) = &stage.downsample {
                x = merge.forward(x, grid);
                grid = [grid[0] / 2, grid[1] / 2];
            }
        }
        let x = ops::layer_norm(&self.norm, x);
        mean_pool_head(&self.head, x)
    }
}

/// A window of `window` tokens at `size`² images, when it is a fraction of the image (timm's
/// `img_size / 32`, FLatten's whole-stage `img_size / 4`): `(window, the window at
/// resolution²)`. `None` for a fixed window or a resolution it does not divide.
pub(crate) fn window_at(window: usize, size: usize, resolution: usize) -> Option<(usize, usize)> {
    [32, 4]
        .into_iter()
        .find(|&ratio| {
            window * ratio == size && resolution.is_multiple_of(ratio) && resolution != size
        })
        .map(|ratio| (window, resolution / ratio))
}

// The authors' constructors, checkpoint names and mixer swaps (timm's order: blocks and model
// above; see `upstream`, `mixers`). Resizing needs no rule of Swin's own: its resolution-bound
// parameter is the softmax mixer's relative position table (`linvit_attention::resize`).

impl SwinConfig {
    /// timm's `SwinTransformer` (softmax windows) and FLatten-/Agent-Swin from resolved
    /// constructor arguments.
    pub(crate) fn from_upstream(file: &str, a: &Args) -> Result<ModelConfig, ModelError> {
        if !file.ends_with("SwinTransformer") {
            return linear_swin_config(file, a);
        }
        let depths = a.list("depths")?;
        let window = a.usize("window_size")?;
        let attention = depths
            .iter()
            .map(|&d| vec![AttentionConfig::Softmax; d])
            .collect();
        let windows = depths.iter().map(|&d| vec![window; d]).collect();
        swin(a, depths, attention, windows, SwinNaming::Timm)
    }

    /// timm's names: patch merging opens the next stage, the head is `head.fc`.
    pub(crate) fn renames(&self) -> Vec<Rename> {
        let pair = |a: String, b: String| (a, b);
        match self.naming {
            SwinNaming::Microsoft => Vec::new(),
            SwinNaming::Timm => (1..self.depths.len())
                .map(|i| {
                    pair(
                        format!("layers.{i}.downsample."),
                        format!("layers.{}.downsample.", i - 1),
                    )
                })
                .chain([pair("head.fc.".into(), "head.".into())])
                .collect(),
        }
    }

    /// A block turned softmax gets window 7 where it divides the stage's grid; a linear block
    /// sees its whole grid.
    pub(crate) fn swap_mixers(
        &mut self,
        layout: Option<&str>,
        attention: Option<&AttentionConfig>,
    ) -> Result<(), ModelError> {
        let c = self;
        let current: Vec<Kind> = c
            .attention
            .iter()
            .map(|s| s.first().map_or(Kind::Softmax, AttentionConfig::kind))
            .collect();
        let kinds = kinds(layout, &current, attention)?;
        for (i, kind) in kinds.into_iter().enumerate() {
            let side = c.stage_side(i);
            for j in 0..c.attention[i].len() {
                let new = pick(kind, attention, &c.attention[i][j]);
                if new.kind() != c.attention[i][j].kind() {
                    c.windows[i][j] = softmax_or(&new, side, 7, side);
                }
                c.attention[i][j] = new;
            }
        }
        Ok(())
    }
}

/// FLatten-Swin and Agent-Swin: a mixer and a window per block.
fn linear_swin_config(file: &str, a: &Args) -> Result<ModelConfig, ModelError> {
    let depths = a.list("depths")?;
    let window = a.usize("window_size")?;
    let is_agent = file == "agent_swin.py";
    let (default, family) = if is_agent {
        ("AAAB", Kind::Agent)
    } else {
        ("LLSS", Kind::Focused)
    };
    let layout = upstream_layout(a.str_or("attn_type", default)?, &depths, family)?;
    let agents = if is_agent {
        a.list("agent_num")?
    } else {
        Vec::new()
    };
    let (mut attention, mut windows) = (Vec::new(), Vec::new());
    for i in 0..depths.len() {
        let (mut mixers, mut sizes) = (Vec::new(), Vec::new());
        for kind in layout.stage(i) {
            let (mixer, w) = match kind {
                Kind::Focused => (a.focused()?, window),
                Kind::Agent => (agent(at(&agents, i, "agent_num")?), window),
                // FLatten's softmax blocks use window 7 (12 above 56); Agent's max(7, w/8).
                _ if is_agent => (AttentionConfig::Softmax, (window / 8).max(7)),
                _ => (AttentionConfig::Softmax, if window <= 56 { 7 } else { 12 }),
            };
            mixers.push(mixer);
            sizes.push(w);
        }
        attention.push(mixers);
        windows.push(sizes);
    }
    swin(a, depths, attention, windows, SwinNaming::Microsoft)
}

fn swin(
    a: &Args,
    depths: Vec<usize>,
    attention: Vec<Vec<AttentionConfig>>,
    windows: Vec<Vec<usize>>,
    naming: SwinNaming,
) -> Result<ModelConfig, ModelError> {
    Ok(ModelConfig::Swin(SwinConfig {
        img_size: a.usize("img_size")?,
        patch_size: a.usize_or("patch_size", 4)?,
        in_chans: a.usize_or("in_chans", 3)?,
        num_classes: a.usize("num_classes")?,
        embed_dim: a.usize("embed_dim")?,
        depths,
        num_heads: a.list("num_heads")?,
        mlp_ratio: a.f64_or("mlp_ratio", 4.0)?,
        qkv_bias: a.bool_or("qkv_bias", true)?,
        drop_path_rate: a.f64_or("drop_path_rate", 0.0)?,
        attention,
        windows,
        naming,
    }))
}

// The papers' variants as typed calls of the authors' constructors; `presets.rs` names them,
// with their papers and parameter counts.

/// Keyword arguments of the Swin classes (timm's `SwinTransformer`, `flatten_swin.py`,
/// `agent_swin.py`) that the presets set; a field left `None` keeps the class's value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SwinArgs {
    pub img_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub num_classes: Option<usize>,
    pub embed_dim: Option<usize>,
    pub depths: Option<Vec<usize>>,
    pub num_heads: Option<Vec<usize>>,
    pub window_size: Option<usize>,
    pub mlp_ratio: Option<f64>,
    pub drop_path_rate: Option<f64>,
    /// The authors' classes only: a mixer letter per stage.
    pub attn_type: Option<&'static str>,
}

const TIMM_SWIN: &str = "timm.models.swin_transformer.SwinTransformer";

/// Swin-T as Swin's config gives it (the class defaults, stochastic depth 0.2).
fn tiny() -> SwinArgs {
    SwinArgs {
        drop_path_rate: Some(0.2),
        ..SwinArgs::default()
    }
}

/// Swin-S: Swin-T with 18 blocks in stage 3.
fn small() -> SwinArgs {
    SwinArgs {
        depths: Some(vec![2, 2, 18, 2]),
        drop_path_rate: Some(0.3),
        ..SwinArgs::default()
    }
}

/// Swin-B: Swin-S at width 128.
fn base() -> SwinArgs {
    SwinArgs {
        embed_dim: Some(128),
        num_heads: Some(vec![4, 8, 16, 32]),
        drop_path_rate: Some(0.5),
        ..small()
    }
}

/// FLatten's and Agent's Swin: a mixer per stage (`layout`) in 56² windows, which at 224²
/// cover every stage whole.
fn windowed(file: &'static str, layout: &'static str, size: SwinArgs) -> Call {
    let args = SwinArgs {
        window_size: Some(56),
        attn_type: Some(layout),
        ..size
    };
    Call::class(file, &args)
}

pub fn swin_t() -> Call {
    Call::class(TIMM_SWIN, &tiny())
}

pub fn swin_s() -> Call {
    Call::class(TIMM_SWIN, &small())
}

pub fn swin_b() -> Call {
    Call::class(TIMM_SWIN, &base())
}

pub fn flatten_swin_t() -> Call {
    windowed("flatten_swin.py", "LLSS", tiny())
}

pub fn flatten_swin_s() -> Call {
    windowed("flatten_swin.py", "LLSS", small())
}

pub fn flatten_swin_b() -> Call {
    windowed("flatten_swin.py", "LLSS", base())
}

pub fn agent_swin_t() -> Call {
    windowed("agent_swin.py", "AAAB", tiny())
}

pub fn agent_swin_s() -> Call {
    windowed("agent_swin.py", "AABB", small())
}

/// Agent-Swin-B mixes within stage 3: agents in its first 2 blocks, softmax after (`M2`).
pub fn agent_swin_b() -> Call {
    windowed("agent_swin.py", "AAMB2", base())
}

/// The reduced timm Swin of the reference cases: two stages on 64² images.
pub fn tiny_swin() -> Call {
    let args = SwinArgs {
        img_size: Some(64),
        num_classes: Some(10),
        embed_dim: Some(32),
        depths: Some(vec![2, 2]),
        num_heads: Some(vec![2, 4]),
        window_size: Some(4),
        mlp_ratio: Some(2.0),
        drop_path_rate: Some(0.0),
        ..SwinArgs::default()
    };
    Call::class(TIMM_SWIN, &args)
}

/// The reduced authors' Swin of the reference cases: four stages on 112² images, width 16.
fn tiny_windowed(file: &'static str, layout: &'static str) -> Call {
    let args = SwinArgs {
        img_size: Some(112),
        patch_size: Some(2),
        num_classes: Some(10),
        embed_dim: Some(16),
        depths: Some(vec![2; 4]),
        num_heads: Some(vec![1, 2, 4, 8]),
        window_size: Some(14),
        mlp_ratio: Some(2.0),
        drop_path_rate: Some(0.0),
        attn_type: Some(layout),
    };
    Call::class(file, &args)
}

pub fn tiny_flatten_swin() -> Call {
    tiny_windowed("flatten_swin.py", "LLSS")
}

pub fn tiny_agent_swin() -> Call {
    tiny_windowed("agent_swin.py", "AAAB")
}
