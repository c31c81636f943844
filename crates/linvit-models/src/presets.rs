//! The papers' named variants: one table of name, paper, builder and published parameter count.
//! Each builder is a typed call of the authors' constructor, written in its family's file
//! ([`crate::vit`], [`crate::swin`], [`crate::pvt`], [`crate::cswin`]): their model factory
//! where they have one (`flatten_pvt_tiny`, `agent_deit_small`, ...) plus the keyword arguments
//! their training config adds on top (`la_sr_ratios`, `drop_path_rate`, ...), the upstream
//! class's own defaults for everything else ([`upstream::CLASSES`], [`upstream::FACTORIES`]).
//! It goes through the same [`upstream::model_config`] mapping that the reference cases
//! verify; the tests check every count the paper publishes.

use serde_json::Value;

use crate::upstream::{self, Call};
use crate::ModelConfig;
use crate::{cswin, pvt, swin, vit};
use crate::{model_error, ModelError};

/// A named model variant.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// snake_case, the same in code, TOML and on the command line.
    pub name: &'static str,
    /// Where the numbers come from.
    pub paper: &'static str,
    /// The authors' call that builds it.
    pub build: fn() -> Call,
    /// Parameters in millions as the paper reports them.
    pub params_m: Option<f64>,
    /// The paper gives the count to the nearest million only.
    pub rounded_to_1m: bool,
    /// Why the published count differs from the released code's, where it does.
    pub discrepancy: Option<&'static str>,
}

impl Preset {
    /// A preset whose paper publishes `params_m` million parameters.
    const fn published(
        name: &'static str,
        paper: &'static str,
        build: fn() -> Call,
        params_m: f64,
    ) -> Self {
        Self {
            name,
            paper,
            build,
            params_m: Some(params_m),
            rounded_to_1m: false,
            discrepancy: None,
        }
    }

    /// A preset whose paper publishes no parameter count.
    const fn unpublished(name: &'static str, paper: &'static str, build: fn() -> Call) -> Self {
        Self {
            name,
            paper,
            build,
            params_m: None,
            rounded_to_1m: false,
            discrepancy: None,
        }
    }

    /// The paper's count is to the nearest million.
    const fn rounded(self) -> Self {
        Self {
            rounded_to_1m: true,
            ..self
        }
    }

    /// The paper's count differs from the released code's, for this reason.
    const fn differs(self, why: &'static str) -> Self {
        Self {
            discrepancy: Some(why),
            ..self
        }
    }

    /// The authors' call: their class's file, their factory, the keyword arguments on top.
    pub fn call(&self) -> Call {
        (self.build)()
    }

    /// The upstream model class (its file, or timm's class path).
    pub fn upstream(&self) -> &'static str {
        self.call().file
    }

    /// The authors' factory function this preset starts from, where they have one.
    pub fn factory(&self) -> Option<&'static str> {
        self.call().factory.map(|f| f.name)
    }

    /// The keyword arguments the authors' call passes: the factory's, then this preset's. The
    /// class defaults fill in the rest ([`Preset::resolved_arguments`]).
    pub fn arguments(&self) -> Value {
        self.call().arguments()
    }

    /// Every keyword argument of the upstream constructor, defaults included.
    pub fn resolved_arguments(&self) -> Value {
        let call = self.call();
        upstream::resolve(call.file, &call.arguments()).expect("presets resolve")
    }

    pub fn config(&self) -> ModelConfig {
        self.config_with(&Value::Null)
            .expect("presets map to valid configs")
    }

    /// Whether `params` (a count) matches the published number: within 0.1M, or within the
    /// rounding when the paper gives whole millions.
    pub fn matches_published(&self, params: usize) -> Option<bool> {
        let ours = params as f64 / 1e6;
        self.params_m.map(|published| {
            if self.rounded_to_1m {
                (ours - published).abs() <= 0.5
            } else {
                (ours - published).abs() <= 0.1
            }
        })
    }

    /// The constructor arguments that build this preset for `resolution`² images, and what
    /// besides `img_size` changed: a Swin window sized as a fraction of the image (timm's
    /// `window_size = img_size / 32`, FLatten's whole-stage windows `img_size / 4`) follows it.
    pub fn arguments_at(&self, resolution: usize) -> (Value, Option<String>) {
        let args = self.resolved_arguments();
        let mut out = serde_json::json!({ "img_size": resolution });
        let size = args.get("img_size").and_then(Value::as_u64).unwrap_or(224) as usize;
        let window = args.get("window_size").and_then(Value::as_u64);
        match window.and_then(|w| crate::swin::window_at(w as usize, size, resolution)) {
            Some((w, new)) => {
                out["window_size"] = new.into();
                (out, Some(format!("window_size {w} -> {new}")))
            }
            None => (out, None),
        }
    }

    /// The preset with other constructor arguments changed (e.g. `num_classes`, `img_size`).
    /// A key the upstream class does not take is an error naming the nearest one it does.
    pub fn config_with(&self, overrides: &Value) -> Result<ModelConfig, ModelError> {
        let call = self.call();
        upstream::model_config(call.file, &upstream::overlay(call.arguments(), overrides))
    }
}

const DEIT: &str = "DeiT (Touvron et al. 2021), Table 1";
const SWIN: &str = "Swin (Liu et al. 2021), Table 1";
const PVT: &str =
    "PVT (Wang et al. 2021), Table 2 (mean-pooled head instead of a stage-4 CLS token)";
const FLATTEN: &str = "FLatten (Han et al., ICCV 2023), Fig. 6";
const FLATTEN_1M: &str = "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)";
const FLATTEN_NONE: &str = "FLatten (Han et al., ICCV 2023) (no published count)";
const AGENT: &str = "Agent Attention (Han et al., ECCV 2024), README table";
const AGENT_1M: &str = "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)";

/// Every preset: baselines, FLatten, Agent, then `tiny_*` twins for tests and quick runs.
pub const PRESETS: &[Preset] = &[
    Preset::published("deit_t", DEIT, vit::deit_t, 5.7),
    Preset::published("deit_s", DEIT, vit::deit_s, 22.1),
    Preset::published("deit_b", DEIT, vit::deit_b, 86.6),
    Preset::published("swin_t", SWIN, swin::swin_t, 28.3),
    Preset::published("swin_s", SWIN, swin::swin_s, 49.6),
    Preset::published("swin_b", SWIN, swin::swin_b, 87.8),
    Preset::published("pvt_t", PVT, pvt::pvt_t, 13.2),
    Preset::published("pvt_s", PVT, pvt::pvt_s, 24.5),
    Preset::published(
        "pvt_v2_b0",
        "PVTv2 released code as counted by timm (the PVTv2 README lists 3.4M)",
        pvt::pvt_v2_b0,
        3.7,
    ),
    Preset::published(
        "pvt_v2_b1",
        "PVTv2 released code as counted by timm (the PVTv2 README lists 13.1M)",
        pvt::pvt_v2_b1,
        14.0,
    ),
    Preset::published(
        "pvt_v2_b2",
        "PVTv2 (Wang et al. 2022), Table 1",
        pvt::pvt_v2_b2,
        25.4,
    ),
    Preset::published(
        "cswin_t",
        "CSWin (Dong et al. 2022), Table 1",
        cswin::cswin_t,
        23.0,
    )
    .differs(
        "the CSWin paper reports 23M; building the released CSWin_64_12211_tiny_224 config gives 22.3M",
    ),
    Preset::published("flatten_pvt_t", FLATTEN, pvt::flatten_pvt_t, 12.2),
    Preset::published("flatten_pvt_s", FLATTEN, pvt::flatten_pvt_s, 21.7),
    Preset::unpublished("flatten_pvt_m", FLATTEN_NONE, pvt::flatten_pvt_m),
    Preset::unpublished("flatten_pvt_l", FLATTEN_NONE, pvt::flatten_pvt_l),
    Preset::unpublished("flatten_pvt_v2_b0", FLATTEN_NONE, pvt::flatten_pvt_v2_b0),
    Preset::published("flatten_pvt_v2_b1", FLATTEN, pvt::flatten_pvt_v2_b1, 12.9),
    Preset::published("flatten_pvt_v2_b2", FLATTEN, pvt::flatten_pvt_v2_b2, 22.6),
    Preset::unpublished("flatten_pvt_v2_b3", FLATTEN_NONE, pvt::flatten_pvt_v2_b3),
    Preset::unpublished("flatten_pvt_v2_b4", FLATTEN_NONE, pvt::flatten_pvt_v2_b4),
    Preset::published("flatten_swin_t", FLATTEN_1M, swin::flatten_swin_t, 29.0).rounded(),
    Preset::published("flatten_swin_s", FLATTEN_1M, swin::flatten_swin_s, 51.0).rounded(),
    Preset::published("flatten_swin_b", FLATTEN_1M, swin::flatten_swin_b, 89.0).rounded(),
    Preset::published("flatten_cswin_t", FLATTEN_1M, cswin::flatten_cswin_t, 21.0).rounded(),
    Preset::published("flatten_cswin_s", FLATTEN_1M, cswin::flatten_cswin_s, 35.0).rounded(),
    Preset::published("flatten_cswin_b", FLATTEN_1M, cswin::flatten_cswin_b, 75.0).rounded(),
    Preset::published("agent_deit_t", AGENT, vit::agent_deit_t, 6.0),
    Preset::published("agent_deit_s", AGENT, vit::agent_deit_s, 22.7),
    Preset::published("agent_deit_b", AGENT, vit::agent_deit_b, 87.2),
    Preset::published("agent_pvt_t", AGENT, pvt::agent_pvt_t, 11.6),
    Preset::published("agent_pvt_s", AGENT, pvt::agent_pvt_s, 20.6),
    Preset::published("agent_pvt_m", AGENT, pvt::agent_pvt_m, 35.9),
    Preset::published("agent_pvt_l", AGENT, pvt::agent_pvt_l, 48.7),
    Preset::published("agent_swin_t", AGENT_1M, swin::agent_swin_t, 29.0).rounded(),
    Preset::published("agent_swin_s", AGENT_1M, swin::agent_swin_s, 50.0).rounded(),
    Preset::published("agent_swin_b", AGENT_1M, swin::agent_swin_b, 88.0).rounded(),
    Preset::published("agent_cswin_t", AGENT_1M, cswin::agent_cswin_t, 21.0)
        .rounded()
        .differs(
            "the Agent README reports 21M; building the released Agent_CSWin_64_24181_tiny_224 config gives 20.5M",
        ),
    Preset::published("agent_cswin_s", AGENT_1M, cswin::agent_cswin_s, 33.0).rounded(),
    Preset::published("agent_cswin_b", AGENT_1M, cswin::agent_cswin_b, 73.0).rounded(),
    Preset::unpublished(
        "tiny_vit",
        "the reduced timm_vit model of the reference cases",
        vit::tiny_vit,
    ),
    Preset::unpublished(
        "tiny_agent_deit",
        "the reduced agent_deit model of the reference cases",
        vit::tiny_agent_deit,
    ),
    Preset::unpublished(
        "tiny_flatten_pvt",
        "the reduced flatten_pvt model of the reference cases",
        pvt::tiny_flatten_pvt,
    ),
    Preset::unpublished(
        "tiny_flatten_pvt_v2",
        "the reduced flatten_pvt_v2 model of the reference cases",
        pvt::tiny_flatten_pvt_v2,
    ),
    Preset::unpublished(
        "tiny_agent_pvt",
        "the reduced agent_pvt model of the reference cases",
        pvt::tiny_agent_pvt,
    ),
    Preset::unpublished(
        "tiny_swin",
        "the reduced timm_swin model of the reference cases",
        swin::tiny_swin,
    ),
    Preset::unpublished(
        "tiny_flatten_swin",
        "the reduced flatten_swin model of the reference cases",
        swin::tiny_flatten_swin,
    ),
    Preset::unpublished(
        "tiny_agent_swin",
        "the reduced agent_swin model of the reference cases",
        swin::tiny_agent_swin,
    ),
    Preset::unpublished(
        "tiny_flatten_cswin",
        "the reduced flatten_cswin model of the reference cases",
        cswin::tiny_flatten_cswin,
    ),
    Preset::unpublished(
        "tiny_agent_cswin",
        "the reduced agent_cswin model of the reference cases",
        cswin::tiny_agent_cswin,
    ),
];

/// A preset by name; the error names the nearest valid one.
pub fn preset(name: &str) -> Result<&'static Preset, ModelError> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let nearest = nearest(PRESETS.iter().map(|p| p.name), name);
        model_error!(
            "unknown preset {name:?}; did you mean {nearest:?}? (`linvit models` lists them)"
        )
    })
}

/// The name among `names` closest to `name` (fewest edits), for "did you mean" suggestions.
pub fn nearest<'a>(names: impl Iterator<Item = &'a str>, name: &str) -> &'a str {
    names
        .min_by_key(|candidate| edit_distance(candidate, name))
        .unwrap_or("")
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
