//! The user-facing dataset config (`[data]` in a run's TOML). Plain serde, not burn's `Config`:
//! unknown keys are errors and omitted keys take the defaults documented on each field.
//!
//! ```toml
//! [data]
//! kind = "idx"                 # synthetic | idx | cifar10 | cifar100 | image-folder
//! path = "/usr/share/datasets/fashion-mnist"
//! image_size = 28
//! channels = 3                 # repeat grayscale for an RGB model
//! mean = [0.2860]
//! std = [0.3530]
//! seed = 0
//!
//! [data.augment]
//! scale = [0.35, 1.0]
//! randaugment_ops = 2
//! mixup_alpha = 0.8
//! cutmix_alpha = 1.0
//! label_smoothing = 0.1
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Which source the images come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Procedural images generated from a seed; needs no files.
    #[default]
    Synthetic,
    /// MNIST / Fashion-MNIST IDX files, gzip or plain.
    Idx,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// CIFAR-100 binary files.
    Cifar100,
    /// ImageNet layout: `train/<class>/*.jpg`, `val/<class>/*`.
    ImageFolder,
}

impl DataKind {
    /// The name used in configs (`synthetic`, `idx`, `cifar10`, `cifar100`, `image-folder`).
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Synthetic => "synthetic",
            DataKind::Idx => "idx",
            DataKind::Cifar10 => "cifar10",
            DataKind::Cifar100 => "cifar100",
            DataKind::ImageFolder => "image-folder",
        }
    }
}

/// Where the Debian package `dataset-fashion-mnist` installs its files.
pub const DEFAULT_IDX_PATH: &str = "/usr/share/datasets/fashion-mnist";

/// The dataset: source, split sizes, output image size, normalisation and augmentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Source kind. Default: `synthetic`.
    pub kind: DataKind,
    /// Folder with the files. Default: `/usr/share/datasets/fashion-mnist` for `idx`; required
    /// for `cifar10`, `cifar100` and `image-folder`; unused for `synthetic`.
    pub path: Option<PathBuf>,
    /// Side of the square images handed to the model. Default: 32.
    pub image_size: usize,
    /// Channels handed to the model (1 or 3); grayscale is repeated to RGB, RGB is turned to
    /// luminance. Default: the source's channels.
    pub channels: Option<usize>,
    /// Number of classes. Default: 10 for `synthetic` (at most 28); the source's count otherwise,
    /// where giving it checks every label against it.
    pub num_classes: Option<usize>,
    /// Training images: generated count for `synthetic` (default 20000), the first N otherwise
    /// (default all).
    pub train_size: Option<usize>,
    /// Validation images: generated count for `synthetic` (default 2000), the first N otherwise.
    pub val_size: Option<usize>,
    /// Seed for generation, shuffling and augmentation. Default: 0.
    pub seed: u64,
    /// `image-folder` only: skip undecodable files, count and report them. Default: false.
    pub skip_corrupt: bool,
    /// `cifar100` only: use the 20 coarse labels instead of the 100 fine ones. Default: false.
    pub coarse_labels: bool,
    /// Per-channel mean used for normalisation (one value applies to every channel).
    /// Default: ImageNet's for 3 channels, 0.5 for 1.
    pub mean: Option<Vec<f32>>,
    /// Per-channel std used for normalisation (one value applies to every channel).
    /// Default: ImageNet's for 3 channels, 0.5 for 1.
    pub std: Option<Vec<f32>>,
    /// Eval resize: shorter side to `image_size / eval_crop_pct`, then a centre crop of
    /// `image_size` (0.875 = 224/256 as the papers). Default: 0.875.
    pub eval_crop_pct: f32,
    /// Decode/augment threads. Default: all cores (rayon's count).
    pub num_workers: Option<usize>,
    /// Batches prepared ahead in the background. Default: 2.
    pub prefetch: usize,
    /// Training augmentation.
    pub augment: AugmentConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: DataKind::Synthetic,
            path: None,
            image_size: 32,
            channels: None,
            num_classes: None,
            train_size: None,
            val_size: None,
            seed: 0,
            skip_corrupt: false,
            coarse_labels: false,
            mean: None,
            std: None,
            eval_crop_pct: 0.875,
            num_workers: None,
            prefetch: 2,
            augment: AugmentConfig::default(),
        }
    }
}

/// Training-time augmentation (`[data.augment]`), following timm's names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Apply any training augmentation at all; false gives the eval transform. Default: true.
    pub enabled: bool,
    /// Random resized crop area range, as a fraction of the image. Default: [0.08, 1.0].
    pub scale: [f32; 2],
    /// Random resized crop aspect-ratio range. Default: [3/4, 4/3].
    pub ratio: [f32; 2],
    /// Probability of a horizontal flip. Default: 0.5.
    pub hflip: f32,
    /// RandAugment ops per image; 0 turns RandAugment off. Default: 2.
    pub randaugment_ops: usize,
    /// RandAugment magnitude, 0..=10. Default: 9.
    pub randaugment_magnitude: f32,
    /// Std of the per-op magnitude noise (timm `mstd`). Default: 0.5.
    pub randaugment_magnitude_std: f32,
    /// Probability that each chosen RandAugment op is applied. Default: 0.5.
    pub randaugment_prob: f32,
    /// Random erasing probability (after normalisation, per-pixel normal noise). Default: 0.25.
    pub erase_prob: f32,
    /// Mixup Beta(alpha, alpha); 0 turns mixup off. Default: 0.8.
    pub mixup_alpha: f32,
    /// CutMix Beta(alpha, alpha); 0 turns cutmix off. Default: 1.0.
    pub cutmix_alpha: f32,
    /// Probability of mixing a batch at all. Default: 1.0.
    pub mix_prob: f32,
    /// Probability of cutmix instead of mixup when both are on. Default: 0.5.
    pub switch_prob: f32,
    /// Label smoothing of the soft targets. Default: 0.1.
    pub label_smoothing: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            enabled: true,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: 0.5,
            randaugment_ops: 2,
            randaugment_magnitude: 9.0,
            randaugment_magnitude_std: 0.5,
            randaugment_prob: 0.5,
            erase_prob: 0.25,
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            mix_prob: 1.0,
            switch_prob: 0.5,
            label_smoothing: 0.1,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all: the eval transform on both splits, hard labels.
    pub fn none() -> Self {
        AugmentConfig {
            enabled: false,
            hflip: 0.0,
            randaugment_ops: 0,
            erase_prob: 0.0,
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            label_smoothing: 0.0,
            ..AugmentConfig::default()
        }
    }

    /// Whether batches carry soft targets (mixup, cutmix or label smoothing is on).
    pub fn soft_targets(&self) -> bool {
        self.enabled
            && (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0 || self.label_smoothing > 0.0)
    }
}

fn probability(key: &str, p: f32) -> Result<(), DataError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(DataError::config(
            key,
            format!("must be in [0, 1], got {p}"),
        ))
    }
}

impl DataConfig {
    /// The folder to read, with the per-kind default; `None` for `synthetic`.
    pub fn resolved_path(&self) -> Result<Option<PathBuf>, DataError> {
        match (self.kind, &self.path) {
            (DataKind::Synthetic, _) => Ok(None),
            (DataKind::Idx, None) => Ok(Some(Path::new(DEFAULT_IDX_PATH).to_path_buf())),
            (_, Some(p)) => Ok(Some(p.clone())),
            (kind, None) => Err(DataError::config(
                "path",
                format!("kind = \"{}\" needs a folder: set data.path", kind.name()),
            )),
        }
    }

    /// Checks every value and names the first bad key.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.kind == DataKind::Synthetic && self.path.is_some() {
            return Err(DataError::config(
                "path",
                "kind = \"synthetic\" reads no files; remove data.path or set data.kind",
            ));
        }
        self.resolved_path()?;
        if !(4..=4096).contains(&self.image_size) {
            return Err(DataError::config(
                "image_size",
                format!("must be in 4..=4096, got {}", self.image_size),
            ));
        }
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                return Err(DataError::config(
                    "channels",
                    format!("must be 1 or 3, got {c}"),
                ));
            }
        }
        if let Some(n) = self.num_classes {
            let max = if self.kind == DataKind::Synthetic {
                crate::source::synthetic::MAX_CLASSES
            } else {
                100_000
            };
            if n < 2 || n > max {
                return Err(DataError::config(
                    "num_classes",
                    format!(
                        "must be in 2..={max} for kind = \"{}\", got {n}",
                        self.kind.name()
                    ),
                ));
            }
        }
        if self.kind != DataKind::ImageFolder && self.skip_corrupt {
            return Err(DataError::config(
                "skip_corrupt",
                "only applies to kind = \"image-folder\"; other sources are read whole and must be intact",
            ));
        }
        if self.kind != DataKind::Cifar100 && self.coarse_labels {
            return Err(DataError::config(
                "coarse_labels",
                "only applies to kind = \"cifar100\"",
            ));
        }
        if self.kind == DataKind::Synthetic {
            for (key, v) in [("train_size", self.train_size), ("val_size", self.val_size)] {
                if v == Some(0) {
                    return Err(DataError::config(key, "must be at least 1"));
                }
            }
        }
        for (key, v) in [("mean", &self.mean), ("std", &self.std)] {
            if let Some(v) = v {
                if let Some(c) = self.channels {
                    if v.len() != c && v.len() != 1 {
                        return Err(DataError::config(
                            key,
                            format!("has {} values but channels = {c}", v.len()),
                        ));
                    }
                }
                if v.len() != 1 && v.len() != 3 {
                    return Err(DataError::config(
                        key,
                        format!("needs 1 or 3 values, got {}", v.len()),
                    ));
                }
                if key == "std" && v.iter().any(|s| s.is_nan() || *s <= 0.0) {
                    return Err(DataError::config(key, "every value must be > 0"));
                }
            }
        }
        if !(self.eval_crop_pct > 0.0 && self.eval_crop_pct <= 1.0) {
            return Err(DataError::config(
                "eval_crop_pct",
                format!("must be in (0, 1], got {}", self.eval_crop_pct),
            ));
        }
        if self.num_workers == Some(0) {
            return Err(DataError::config("num_workers", "must be at least 1"));
        }
        if self.prefetch == 0 {
            return Err(DataError::config("prefetch", "must be at least 1"));
        }
        self.augment.validate()
    }
}

impl AugmentConfig {
    fn validate(&self) -> Result<(), DataError> {
        let [s0, s1] = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(DataError::config(
                "augment.scale",
                format!("needs 0 < min <= max <= 1, got [{s0}, {s1}]"),
            ));
        }
        let [r0, r1] = self.ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(DataError::config(
                "augment.ratio",
                format!("needs 0 < min <= max, got [{r0}, {r1}]"),
            ));
        }
        probability("augment.hflip", self.hflip)?;
        probability("augment.randaugment_prob", self.randaugment_prob)?;
        probability("augment.erase_prob", self.erase_prob)?;
        probability("augment.mix_prob", self.mix_prob)?;
        probability("augment.switch_prob", self.switch_prob)?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(DataError::config(
                "augment.label_smoothing",
                format!("must be in [0, 1), got {}", self.label_smoothing),
            ));
        }
        if !(0.0..=10.0).contains(&self.randaugment_magnitude) {
            return Err(DataError::config(
                "augment.randaugment_magnitude",
                format!("must be in [0, 10], got {}", self.randaugment_magnitude),
            ));
        }
        if self.randaugment_ops > 16 {
            return Err(DataError::config(
                "augment.randaugment_ops",
                format!("must be at most 16, got {}", self.randaugment_ops),
            ));
        }
        for (key, v) in [
            (
                "augment.randaugment_magnitude_std",
                self.randaugment_magnitude_std,
            ),
            ("augment.mixup_alpha", self.mixup_alpha),
            ("augment.cutmix_alpha", self.cutmix_alpha),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(DataError::config(key, format!("must be >= 0, got {v}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DataConfig, serde_json::Error> {
        serde_json::from_str::<DataConfig>(json)
    }

    #[test]
    fn kinds_parse_by_their_config_names() {
        for (name, kind) in [
            ("synthetic", DataKind::Synthetic),
            ("idx", DataKind::Idx),
            ("cifar10", DataKind::Cifar10),
            ("cifar100", DataKind::Cifar100),
            ("image-folder", DataKind::ImageFolder),
        ] {
            let c = parse(&format!(r#"{{"kind": "{name}", "path": "/x"}}"#)).unwrap();
            assert_eq!(c.kind, kind);
            assert_eq!(kind.name(), name);
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = parse(r#"{"kind": "idx", "img_size": 28}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `img_size`"), "{e}");
        let e = parse(r#"{"augment": {"mixup": 0.2}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `mixup`"), "{e}");
    }

    #[test]
    fn defaults_fill_missing_keys() {
        let c = parse(r#"{"kind": "idx"}"#).unwrap();
        assert_eq!(c.image_size, 32);
        assert_eq!(c.augment.scale, [0.08, 1.0]);
        assert_eq!(
            c.resolved_path().unwrap().unwrap(),
            PathBuf::from(DEFAULT_IDX_PATH)
        );
        c.validate().unwrap();
        DataConfig::default().validate().unwrap();
    }

    fn key_of(c: &DataConfig) -> String {
        match c.validate() {
            Err(DataError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn validation_errors_name_the_key() {
        let base = DataConfig::default();
        let cases: Vec<(DataConfig, &str)> = vec![
            (
                DataConfig {
                    image_size: 2,
                    ..base.clone()
                },
                "image_size",
            ),
            (
                DataConfig {
                    channels: Some(2),
                    ..base.clone()
                },
                "channels",
            ),
            (
                DataConfig {
                    num_classes: Some(29),
                    ..base.clone()
                },
                "num_classes",
            ),
            (
                DataConfig {
                    skip_corrupt: true,
                    ..base.clone()
                },
                "skip_corrupt",
            ),
            (
                DataConfig {
                    coarse_labels: true,
                    ..base.clone()
                },
                "coarse_labels",
            ),
            (
                DataConfig {
                    train_size: Some(0),
                    ..base.clone()
                },
                "train_size",
            ),
            (
                DataConfig {
                    std: Some(vec![0.0; 3]),
                    ..base.clone()
                },
                "std",
            ),
            (
                DataConfig {
                    mean: Some(vec![0.5; 2]),
                    ..base.clone()
                },
                "mean",
            ),
            (
                DataConfig {
                    eval_crop_pct: 1.5,
                    ..base.clone()
                },
                "eval_crop_pct",
            ),
            (
                DataConfig {
                    prefetch: 0,
                    ..base.clone()
                },
                "prefetch",
            ),
            (
                DataConfig {
                    kind: DataKind::Cifar10,
                    ..base.clone()
                },
                "path",
            ),
            (
                DataConfig {
                    path: Some("/x".into()),
                    ..base.clone()
                },
                "path",
            ),
        ];
        for (c, key) in cases {
            assert_eq!(key_of(&c), key);
        }
        let msg = DataConfig {
            image_size: 2,
            ..base
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(msg.starts_with("data.image_size:"), "{msg}");
    }

    #[test]
    fn augmentation_errors_name_the_key() {
        let base = DataConfig::default();
        let aug = |a: AugmentConfig| DataConfig {
            augment: a,
            ..base.clone()
        };
        let d = AugmentConfig::default();
        assert_eq!(
            key_of(&aug(AugmentConfig {
                scale: [0.5, 0.1],
                ..d.clone()
            })),
            "augment.scale"
        );
        assert_eq!(
            key_of(&aug(AugmentConfig {
                hflip: 1.5,
                ..d.clone()
            })),
            "augment.hflip"
        );
        assert_eq!(
            key_of(&aug(AugmentConfig {
                label_smoothing: 1.0,
                ..d.clone()
            })),
            "augment.label_smoothing"
        );
        assert_eq!(
            key_of(&aug(AugmentConfig {
                mixup_alpha: -1.0,
                ..d.clone()
            })),
            "augment.mixup_alpha"
        );
        assert_eq!(
            key_of(&aug(AugmentConfig {
                randaugment_magnitude: 11.0,
                ..d
            })),
            "augment.randaugment_magnitude"
        );
    }
}
