//! Backbones that take any linvit mixer per stage (or per block), matching the authors' models
//! number for number: DeiT/ViT, PVT v1/v2, Swin (authors' and timm's layout) and CSwin.
//!
//! A [`ModelConfig`] (serde, tagged by `family`) builds a [`Model`]; [`ModelConfig::renames`]
//! is the explicit map between the authors' state-dict keys and our parameter paths, and
//! [`upstream`] turns the authors' constructor arguments into a config.

pub mod block;
pub mod checkpoint;
pub mod cswin;
pub mod layers;
pub mod mixers;
pub mod presets;
pub mod pvt;
pub mod swin;
pub mod transnormer;
pub mod upstream;
pub mod vit;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use linvit_attention::import::Rename;
use linvit_attention::resize::{rule_by_name, Rule};
use serde::{Deserialize, Serialize};

pub use cswin::{Cswin, CswinConfig};
pub use pvt::{Pvt, PvtConfig};
pub use swin::{Swin, SwinConfig, SwinNaming};
pub use vit::{VisionTransformer, VitConfig};

/// Whether a parameter path (without enum variants) is the classifier head's: every backbone
/// names it `head`, as the authors' and timm's models do. Fine-tuning replaces it.
pub fn is_head(path: &str) -> bool {
    path == "head" || path.starts_with("head.")
}

/// Any backbone's configuration: `{ family = "swin", ... }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ModelConfig {
    Vit(VitConfig),
    Pvt(PvtConfig),
    Swin(SwinConfig),
    Cswin(CswinConfig),
}

/// Why a model config, a preset name or an upstream constructor call cannot be built. The
/// message names the key (`args.depths`, `embed_dims`), or the unknown name and the nearest
/// known one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub message: String,
}

impl From<String> for ModelError {
    fn from(message: String) -> Self {
        ModelError { message }
    }
}

impl From<&str> for ModelError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// `ModelError` from `format!` arguments.
macro_rules! model_error {
    ($($arg:tt)*) => {
        $crate::ModelError::from(format!($($arg)*))
    };
}
pub(crate) use model_error;

/// Any backbone.
// Built once; the size spread between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model {
    Vit(VisionTransformer),
    Pvt(Pvt),
    Swin(Swin),
    Cswin(Cswin),
}

impl ModelConfig {
    /// Checks the config before any tensor is built; the error names the problem.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            ModelConfig::Vit(c) => {
                if c.img_size % c.patch_size != 0 {
                    return Err(model_error!(
                        "img_size {} is not divisible by patch_size {}",
                        c.img_size,
                        c.patch_size
                    ));
                }
                let shape = linvit_attention::MixerShape::new(c.embed_dim, c.num_heads, c.grid())
                    .with_prefix(1);
                for (i, attention) in c.blocks.iter().enumerate() {
                    shape
                        .validate(attention)
                        .map_err(|e| model_error!("block {i}: {e}"))?;
                }
                Ok(())
            }
            ModelConfig::Pvt(c) => c.validate(),
            ModelConfig::Swin(c) => c.validate(),
            ModelConfig::Cswin(c) => c.validate(),
        }
    }

    /// Multiply-accumulates (the "FLOPs" of these papers' tables) of one image at the config's
    /// resolution.
    pub fn macs(&self) -> u64 {
        match self {
            ModelConfig::Vit(c) => c.macs(),
            ModelConfig::Pvt(c) => c.macs(),
            ModelConfig::Swin(c) => c.macs(),
            ModelConfig::Cswin(c) => c.macs(),
        }
    }

    /// The input a model of this config takes: `[channels, side]` of a square image.
    pub fn input(&self) -> [usize; 2] {
        match self {
            ModelConfig::Vit(c) => [c.in_chans, c.img_size],
            ModelConfig::Pvt(c) => [c.in_chans, c.img_size],
            ModelConfig::Swin(c) => [c.in_chans, c.img_size],
            ModelConfig::Cswin(c) => [c.in_chans, c.img_size],
        }
    }

    /// The number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        match self {
            ModelConfig::Vit(c) => c.num_classes,
            ModelConfig::Pvt(c) => c.num_classes,
            ModelConfig::Swin(c) => c.num_classes,
            ModelConfig::Cswin(c) => c.num_classes,
        }
    }

    pub fn init(&self, device: &Device) -> Model {
        match self {
            ModelConfig::Vit(c) => Model::Vit(c.init(device)),
            ModelConfig::Pvt(c) => Model::Pvt(c.init(device)),
            ModelConfig::Swin(c) => Model::Swin(c.init(device)),
            ModelConfig::Cswin(c) => Model::Cswin(c.init(device)),
        }
    }

    /// How a checkpoint's resolution-dependent parameters are resized to this config's shapes
    /// while loading (see `linvit_attention::resize`); each family knows its own.
    pub fn resize_rule(&self) -> fn(&str) -> Option<Rule> {
        match self {
            ModelConfig::Vit(_) => VitConfig::resize_rule,
            ModelConfig::Pvt(_) => PvtConfig::resize_rule,
            ModelConfig::Swin(_) | ModelConfig::Cswin(_) => rule_by_name,
        }
    }

    /// Key renames from the authors' checkpoints to our parameter paths, in order.
    pub fn renames(&self) -> Vec<Rename> {
        match self {
            ModelConfig::Vit(_) => Vec::new(),
            ModelConfig::Pvt(c) => c.renames(),
            ModelConfig::Swin(c) => c.renames(),
            ModelConfig::Cswin(c) => c.renames(),
        }
    }
}

impl Model {
    /// # Shapes
    /// - images: `[B, C, H, W]` -> logits `[B, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Model::Vit(m) => m.forward(images),
            Model::Pvt(m) => m.forward(images),
            Model::Swin(m) => m.forward(images),
            Model::Cswin(m) => m.forward(images),
        }
    }
}
