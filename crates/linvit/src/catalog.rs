//! `linvit models`: every preset with its parameter count, MACs and the paper's numbers.

use burn::module::Module;
use burn::tensor::Device;
use linvit_models::presets::{Preset, PRESETS};
use serde::Serialize;

/// One row of `linvit models`.
#[derive(Debug, Clone, Serialize)]
pub struct PresetRow {
    pub name: &'static str,
    /// Parameters of the model as built.
    pub params: usize,
    /// Multiply-accumulates of one image at `img_size` ("FLOPs" in the papers' tables).
    pub flops: u64,
    pub img_size: Option<u64>,
    /// What the paper reports, in millions.
    pub paper_params_m: Option<f64>,
    pub paper: &'static str,
    /// Why the paper's count differs from the released code's, where it does.
    pub discrepancy: Option<&'static str>,
    /// The authors' model the preset follows: their file, or timm's class.
    pub upstream: &'static str,
    /// The authors' factory function it starts from, where they have one.
    pub factory: Option<&'static str>,
    /// The keyword arguments passed to the authors' model class (the factory's and the
    /// training config's); the class defaults fill in the rest.
    pub args: serde_json::Value,
}

pub fn row(preset: &Preset) -> PresetRow {
    let config = preset.config();
    let args = preset.arguments();
    let resolved = preset.resolved_arguments();
    PresetRow {
        name: preset.name,
        params: config.init(&Device::flex()).num_params(),
        flops: config.macs(),
        img_size: resolved.get("img_size").and_then(|v| v.as_u64()),
        paper_params_m: preset.params_m,
        paper: preset.paper,
        discrepancy: preset.discrepancy,
        upstream: preset.upstream(),
        factory: preset.factory(),
        args,
    }
}

pub fn rows() -> Vec<PresetRow> {
    PRESETS.iter().map(row).collect()
}
