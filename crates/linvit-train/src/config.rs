//! The run config: `[model]`, `[data]`, `[train]`, read from TOML with dotted `--set key=value`
//! overrides, resolved in one place ([`resolve`]). Plain serde with `deny_unknown_fields`, not
//! burn's `Config` (which accepts unknown keys silently). Precedence: preset < file < `--set`.
//!
//! ```toml
//! [model]
//! preset = "tiny_flatten_pvt"   # any name from `linvit models`
//! img_size = 32                  # default: data.image_size
//! in_chans = 1                   # default: data.channels, else the dataset's
//! num_classes = 10               # default: the dataset's
//!
//! [data]
//! kind = "synthetic"
//!
//! [train]
//! epochs = 10
//! batch_size = 64
//! lr = 1e-3
//! ```

use std::path::{Path, PathBuf};

use linvit_data::DataConfig;
use linvit_models::presets::{self, edit_distance};
use linvit_models::{ModelConfig, ModelError};
use serde::{Deserialize, Serialize};

/// The embedded quickstart recipe: what a run without a config file trains.
pub const QUICKSTART: &str = include_str!("../../../configs/quickstart.toml");

/// A config problem, found before any work starts; every variant names the key or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key `{key}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("--set {arg}: {message}")]
    Set { arg: String, message: String },
}

/// An error of the upstream mapping (`args.KEY: message`, `args.KEY is ...`) as one naming
/// `model.args.KEY`.
fn model_args_error(e: ModelError) -> ConfigError {
    let e = e.message;
    let named = e.strip_prefix("args.").and_then(|rest| {
        let end = rest.find([':', ' ', '['])?;
        Some((
            &rest[..end],
            rest[end..].trim_start_matches(':').trim_start(),
        ))
    });
    match named {
        Some((key, message)) => invalid(&format!("model.args.{key}"), message),
        None => invalid("model.args", e),
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// `[model]`: a preset plus overrides, or a full model config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A preset name (`tiny_flatten_pvt`, `flatten_pvt_t`, ...). Default: `tiny_flatten_pvt`.
    pub preset: Option<String>,
    /// Classifier classes. Default: the dataset's class count.
    pub num_classes: Option<usize>,
    /// Input side. Default: `data.image_size`.
    pub img_size: Option<usize>,
    /// Input channels. Default: `data.channels`, else the dataset's.
    pub in_chans: Option<usize>,
    /// Other constructor arguments of the preset's upstream class (`depths`, `agent_num`, ...).
    /// Default: none.
    pub args: toml::Table,
    /// A full model config (`family = "pvt"`, ...) instead of a preset. Default: none.
    pub config: Option<toml::Table>,
    /// Mixer letters per stage (per block for ViT), as in the papers: `LLSS`, `AAAB`, `SSSS`
    /// (`L` focused, `A` agent, `P` plain linear, `S`/`B` softmax). Default: the preset's.
    pub layout: Option<String>,
    /// The mixer for every non-softmax place (or for the letters of its kind when `layout` is
    /// set): `{ kind = "focused", focusing_factor = 4 }`. Default: the preset's.
    pub attention: Option<linvit_attention::AttentionConfig>,
    /// Start from these weights instead of a random draw (fine-tuning): a linvit run directory
    /// (its best checkpoint), a checkpoint or model folder, or the authors' `.pth` /
    /// `.safetensors` (upstream or timm names). A classifier head of another shape is left
    /// freshly initialised; other weights must fit, up to the resizing `linvit import` does.
    /// The optimizer starts fresh. Default: none.
    pub init: Option<PathBuf>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            preset: Some("tiny_flatten_pvt".into()),
            num_classes: None,
            img_size: None,
            in_chans: None,
            args: toml::Table::new(),
            config: None,
            layout: None,
            attention: None,
            init: None,
        }
    }
}

/// `[train]`: the papers' recipe knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Epochs to train. Default: 300.
    pub epochs: usize,
    /// Images per forward/backward (one micro-batch). Default: 128.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed per optimizer step. Default: 1.
    pub accum_steps: usize,
    /// Peak learning rate after warmup. Default: 1e-3 * 128 / 1024.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay. Default: 1e-5.
    pub min_lr: f64,
    /// Learning rate at the start of the linear warmup. Default: 1e-6.
    pub warmup_lr: f64,
    /// Warmup length in epochs (fractions allowed); the schedule steps per iteration. Default: 20.
    pub warmup_epochs: f64,
    /// AdamW decoupled weight decay, skipped for 1-D parameters, biases and position
    /// embeddings. Default: 0.05.
    pub weight_decay: f64,
    /// AdamW betas. Default: [0.9, 0.999].
    pub betas: [f64; 2],
    /// AdamW epsilon (PyTorch's default). Default: 1e-8.
    pub eps: f64,
    /// Label smoothing; sets `data.augment.label_smoothing`. Default: keep the data section's.
    pub label_smoothing: Option<f32>,
    /// Mixup alpha (0 = off); sets `data.augment.mixup_alpha`. Default: keep the data section's.
    pub mixup: Option<f32>,
    /// CutMix alpha (0 = off); sets `data.augment.cutmix_alpha`. Default: keep the data section's.
    pub cutmix: Option<f32>,
    /// Stochastic depth rate of the last block (the model's `drop_path_rate`). Default: the
    /// preset's.
    pub drop_path: Option<f64>,
    /// Clip gradients to this global L2 norm (as `torch.nn.utils.clip_grad_norm_`); 0 = off.
    /// Default: 5.0.
    pub clip_grad: f64,
    /// EMA decay of the weights (e.g. 0.9998); 0 = off. Default: 0.
    pub ema: f64,
    /// Seed for model init and drop path (data has `data.seed`). Default: 0.
    pub seed: u64,
    /// Validate every N epochs (and always after the last). Default: 1.
    pub eval_every: usize,
    /// Write a step row to `steps.csv` / `steps.jsonl` every N optimizer steps. Default: 50.
    pub log_every: usize,
    /// Complete checkpoints kept besides `best`. Default: 2.
    pub keep_checkpoints: usize,
    /// Also checkpoint every N optimizer steps inside an epoch (0: at epoch ends only), so a
    /// long epoch killed halfway resumes from its middle. Default: 0.
    pub checkpoint_every: u64,
    /// Use at most this many validation images per evaluation. Default: all.
    pub val_limit: Option<usize>,
    /// Skip (and count) a micro-batch whose loss, or an optimizer step whose gradient norm, is
    /// NaN or infinite, instead of stopping the run. Default: false.
    pub skip_nonfinite: bool,
    /// The dtype of the forward and backward passes: `f32`, `bf16` or `f16`. The weights, the
    /// optimizer state and the summed gradients stay f32 (master weights); `f16` adds dynamic
    /// loss scaling. Default: `f32`.
    pub precision: Precision,
    /// Layer-wise learning-rate decay (BEiT, timm's `--layer-decay`): the parameters of depth
    /// `d` of `L` blocks train at `lr * layer_decay^(L + 1 - d)`, the patch embedding (depth 0)
    /// lowest and everything after the last block (final norm, head) at `lr`. Default: none (1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
    /// Parameters that do not train, as path patterns over the authors' parameter names
    /// (`stages.0.blocks.1.attn.qkv.weight`): `*` matches anything, a pattern without `*` also
    /// matches everything under it, and a leading `!` exempts; the last matching pattern wins.
    /// `["*", "!head"]` is a linear probe. Frozen parameters get no optimizer state and stay
    /// bit-identical. The run prints its parameter groups at start. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

/// `train.precision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// Every precision with its config name (serde's lowercase spelling).
    pub const ALL: [(Precision, &'static str); 3] = [
        (Precision::F32, "f32"),
        (Precision::Bf16, "bf16"),
        (Precision::F16, "f16"),
    ];

    /// The config name: `f32`, `bf16` or `f16`.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("f32", |(_, n)| n)
    }

    /// The precision of a config name.
    pub fn from_name(name: &str) -> Result<Precision, ConfigError> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
            .ok_or_else(|| ConfigError::Invalid {
                key: "precision".into(),
                message: format!("{name:?} is not one of f32, bf16, f16"),
            })
    }

    /// The half dtype the passes run in; `None` for f32.
    pub fn half(self) -> Option<burn::tensor::FloatDType> {
        use burn::tensor::FloatDType;
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 300,
            batch_size: 128,
            accum_steps: 1,
            lr: 1e-3 * 128.0 / 1024.0,
            min_lr: 1e-5,
            warmup_lr: 1e-6,
            warmup_epochs: 20.0,
            weight_decay: 0.05,
            betas: [0.9, 0.999],
            eps: 1e-8,
            label_smoothing: None,
            mixup: None,
            cutmix: None,
            drop_path: None,
            clip_grad: 5.0,
            ema: 0.0,
            seed: 0,
            eval_every: 1,
            log_every: 50,
            keep_checkpoints: 2,
            checkpoint_every: 0,
            skip_nonfinite: false,
            val_limit: None,
            precision: Precision::F32,
            layer_decay: None,
            freeze: Vec::new(),
        }
    }
}

/// A whole run: what [`resolve`] returns and what the run directory's `config.toml` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataConfig,
    pub train: TrainConfig,
}

/// Reads `file` (or the embedded quickstart when `None`), applies `sets` (`key=value`, the value
/// parsed as TOML, a bare word taken as a string) and checks every value.
pub fn resolve(file: Option<&Path>, sets: &[String]) -> Result<RunConfig, ConfigError> {
    let mut doc = read_table(file)?;
    for arg in sets {
        apply_set(&mut doc, arg)?;
    }
    from_table(doc)
}

/// The TOML table of `file`, or of the embedded quickstart.
fn read_table(file: Option<&Path>) -> Result<toml::Table, ConfigError> {
    parse_file(file, QUICKSTART, "configs/quickstart.toml (embedded)")
}

/// The TOML table of `file`, or of `embedded` (named `embedded_name` in errors).
pub(crate) fn parse_file(
    file: Option<&Path>,
    embedded: &str,
    embedded_name: &str,
) -> Result<toml::Table, ConfigError> {
    Ok(match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            parse_table(&text).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        }
        None => parse_table(embedded).map_err(|e| ConfigError::File {
            path: embedded_name.into(),
            message: e.to_string(),
        })?,
    })
}

/// Parses a TOML text into a config (no file, no overrides); the same checks as [`resolve`].
pub fn from_toml(text: &str) -> Result<RunConfig, ConfigError> {
    let doc = parse_table(text).map_err(|e| invalid("(config)", e.to_string()))?;
    from_table(doc)
}

/// Applies `key=value` overrides to an already resolved config.
pub fn with_sets(config: &RunConfig, sets: &[String]) -> Result<RunConfig, ConfigError> {
    let mut doc = toml::Table::try_from(config).map_err(|e| invalid("(config)", e.to_string()))?;
    for arg in sets {
        apply_set(&mut doc, arg)?;
    }
    from_table(doc)
}

fn parse_table(text: &str) -> Result<toml::Table, toml::de::Error> {
    text.parse::<toml::Table>()
}

/// Applies every `key=value` of `sets` to `doc`.
pub(crate) fn apply_sets(doc: &mut toml::Table, sets: &[String]) -> Result<(), ConfigError> {
    sets.iter().try_for_each(|arg| apply_set(doc, arg))
}

fn apply_set(doc: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let set_err = |message: &str| ConfigError::Set {
        arg: arg.to_string(),
        message: message.to_string(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| set_err("expected key=value, e.g. train.lr=5e-4"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(set_err("the key must be dotted names, e.g. train.epochs"));
    }
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = doc;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            set_err(&format!(
                "`{}` is a value, not a section",
                parts[..=i].join(".")
            ))
        })?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// The names serde lists after "expected" in an unknown-field message.
fn expected_names(message: &str) -> Vec<String> {
    let Some((_, tail)) = message.split_once("expected") else {
        return Vec::new();
    };
    tail.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

fn from_table(doc: toml::Table) -> Result<RunConfig, ConfigError> {
    let config = deserialize_table(doc)?;
    config.validate()?;
    Ok(config)
}

/// The data section of `file` (or the quickstart) with `sets` applied, without the checks that
/// tie it to the model (an image size the model's grid needs): for looking at a dataset. Check
/// it with `DataConfig::validate`.
pub fn resolve_data(file: Option<&Path>, sets: &[String]) -> Result<DataConfig, ConfigError> {
    let mut doc = read_table(file)?;
    for arg in sets {
        apply_set(&mut doc, arg)?;
    }
    Ok(deserialize_table(doc)?.effective_data())
}

/// Deserialises a table into a config, naming an unknown key and the nearest valid one.
fn deserialize_table(doc: toml::Table) -> Result<RunConfig, ConfigError> {
    deserialize_as(doc)
}

/// Deserialises a table into any config, naming an unknown key and the nearest valid one.
pub(crate) fn deserialize_as<T: serde::de::DeserializeOwned>(
    doc: toml::Table,
) -> Result<T, ConfigError> {
    let config: T = serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default().to_string();
            let parent = path
                .rsplit_once('.')
                .map(|(p, _)| format!("{p}."))
                .unwrap_or_default();
            let key = format!("{parent}{name}");
            let suggestion = expected_names(&message)
                .into_iter()
                .min_by_key(|c| edit_distance(c, &name))
                .filter(|c| edit_distance(c, &name) <= c.len().max(name.len()) / 2 + 1)
                .map(|c| format!("{parent}{c}"));
            ConfigError::UnknownKey { key, suggestion }
        } else {
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .trim()
                .to_string();
            invalid(if path == "." { "(config)" } else { &path }, message)
        }
    })?;
    Ok(config)
}

impl RunConfig {
    /// Checks ranges and cross-section consistency; names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.train;
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(invalid(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("train.epochs", t.epochs)?;
        positive("train.batch_size", t.batch_size)?;
        positive("train.accum_steps", t.accum_steps)?;
        positive("train.eval_every", t.eval_every)?;
        positive("train.log_every", t.log_every)?;
        positive("train.keep_checkpoints", t.keep_checkpoints)?;
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(invalid("train.lr", format!("must be > 0, got {}", t.lr)));
        }
        for (key, v) in [
            ("train.min_lr", t.min_lr),
            ("train.warmup_lr", t.warmup_lr),
            ("train.warmup_epochs", t.warmup_epochs),
            ("train.weight_decay", t.weight_decay),
            ("train.clip_grad", t.clip_grad),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(invalid(key, format!("must be >= 0, got {v}")));
            }
        }
        if t.warmup_epochs > t.epochs as f64 {
            return Err(invalid(
                "train.warmup_epochs",
                format!(
                    "{} is longer than train.epochs = {}",
                    t.warmup_epochs, t.epochs
                ),
            ));
        }
        for (i, b) in t.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(invalid(
                    &format!("train.betas[{i}]"),
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        if let Some(d) = t.layer_decay {
            if !(d > 0.0 && d <= 1.0) {
                return Err(invalid(
                    "train.layer_decay",
                    format!("must be in (0, 1], got {d}"),
                ));
            }
        }
        if let Some(p) = t
            .freeze
            .iter()
            .find(|p| p.trim_start_matches('!').is_empty())
        {
            return Err(invalid(
                "train.freeze",
                format!("{p:?} is not a parameter path pattern"),
            ));
        }
        if !(t.eps > 0.0 && t.eps.is_finite()) {
            return Err(invalid("train.eps", format!("must be > 0, got {}", t.eps)));
        }
        if !(0.0..1.0).contains(&t.ema) {
            return Err(invalid(
                "train.ema",
                format!("must be in [0, 1) (0 = off), got {}", t.ema),
            ));
        }
        if let Some(p) = t.drop_path {
            if !(0.0..1.0).contains(&p) {
                return Err(invalid(
                    "train.drop_path",
                    format!("must be in [0, 1), got {p}"),
                ));
            }
        }
        if t.val_limit == Some(0) {
            return Err(invalid("train.val_limit", "must be at least 1"));
        }
        self.effective_data()
            .validate()
            .map_err(|e| invalid("data", e.to_string()))?;
        self.check_model()
    }

    /// The data config with the `[train]` recipe knobs (label smoothing, mixup, cutmix) applied.
    pub fn effective_data(&self) -> DataConfig {
        let mut d = self.data.clone();
        if let Some(v) = self.train.label_smoothing {
            d.augment.label_smoothing = v;
        }
        if let Some(v) = self.train.mixup {
            d.augment.mixup_alpha = v;
        }
        if let Some(v) = self.train.cutmix {
            d.augment.cutmix_alpha = v;
        }
        d
    }

    fn check_model(&self) -> Result<(), ConfigError> {
        let m = &self.model;
        match (&m.preset, &m.config) {
            (Some(_), Some(_)) => Err(invalid(
                "model.config",
                "give either model.preset or model.config, not both",
            )),
            (None, None) => Err(invalid(
                "model.preset",
                "missing: name a preset or give model.config",
            )),
            (Some(name), None) => {
                presets::preset(name).map_err(|e| invalid("model.preset", e.message))?;
                // A placeholder class count: the dataset's is only known once it is opened.
                self.model_config(m.num_classes.unwrap_or(10), self.data.channels.unwrap_or(3))
                    .map(|_| ())
            }
            (None, Some(_)) => self.model_config(10, 3).map(|_| ()),
        }
    }

    /// The model config this run builds, for a dataset with `num_classes` classes and
    /// `channels` input channels (used where `[model]` leaves them unset).
    pub fn model_config(
        &self,
        num_classes: usize,
        channels: usize,
    ) -> Result<ModelConfig, ConfigError> {
        let m = &self.model;
        let num_classes = m.num_classes.unwrap_or(num_classes);
        let img_size = m.img_size.unwrap_or(self.data.image_size);
        let in_chans = m.in_chans.unwrap_or(channels);
        if img_size != self.data.image_size {
            return Err(invalid(
                "model.img_size",
                format!(
                    "{img_size} differs from data.image_size = {}; the model sees data.image_size images",
                    self.data.image_size
                ),
            ));
        }
        let config = match (&m.preset, &m.config) {
            (Some(name), _) => {
                let preset =
                    presets::preset(name).map_err(|e| invalid("model.preset", e.message))?;
                let mut args = serde_json::to_value(&m.args)
                    .map_err(|e| invalid("model.args", e.to_string()))?;
                let obj = args
                    .as_object_mut()
                    .expect("a table serialises to an object");
                obj.insert("num_classes".into(), num_classes.into());
                obj.insert("img_size".into(), img_size.into());
                obj.insert("in_chans".into(), in_chans.into());
                if let Some(p) = self.train.drop_path {
                    obj.insert("drop_path_rate".into(), p.into());
                }
                preset.config_with(&args).map_err(model_args_error)?
            }
            (None, Some(table)) => {
                let config: ModelConfig = serde_path_to_error::deserialize(toml::Value::Table(
                    table.clone(),
                ))
                .map_err(|e| {
                    invalid(
                        &format!("model.config.{}", e.path()),
                        e.into_inner().to_string(),
                    )
                })?;
                config
            }
            (None, None) => return Err(invalid("model.preset", "missing")),
        };
        let config = config
            .with_mixers(m.layout.as_deref(), m.attention.as_ref())
            .map_err(|e| {
                let key = if m.layout.is_some() {
                    "model.layout"
                } else {
                    "model.attention"
                };
                invalid(key, e.message)
            })?;
        config.validate().map_err(|e| invalid("model", e.message))?;
        Ok(config)
    }

    /// The config as TOML text (what `config.toml` in a run directory holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a run config serialises to TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_names_come_from_serdes_message() {
        let names = expected_names("unknown field `lrr`, expected one of `epochs`, `lr`");
        assert_eq!(names, ["epochs", "lr"]);
    }

    #[test]
    fn a_set_creates_missing_sections_and_parses_toml_values() {
        let mut doc = toml::Table::new();
        apply_set(&mut doc, "train.lr=5e-4").unwrap();
        apply_set(&mut doc, "data.kind=idx").unwrap();
        apply_set(&mut doc, "data.augment.scale=[0.5, 1.0]").unwrap();
        assert_eq!(doc["train"]["lr"].as_float(), Some(5e-4));
        assert_eq!(doc["data"]["kind"].as_str(), Some("idx"));
        assert_eq!(doc["data"]["augment"]["scale"].as_array().unwrap().len(), 2);
    }
}
