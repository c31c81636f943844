//! The papers' named variants. Each preset is written as the authors build it: their model
//! factory where they have one (`flatten_pvt_tiny`, `agent_deit_small`, ...), plus the keyword
//! arguments their training config adds on top (`la_sr_ratios`, `drop_path_rate`, ...), with the
//! upstream class's own defaults for everything else ([`upstream::CLASSES`],
//! [`upstream::FACTORIES`]: one table, shared with `linvit verify`). It goes through the same
//! [`upstream::model_config`] mapping that the reference cases verify; `params_m` is the
//! parameter count the paper reports, checked by the tests.

use serde_json::Value;

use crate::upstream;
use crate::ModelConfig;
use crate::{model_error, ModelError};

/// A named model variant.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// snake_case, the same in code, TOML and on the command line.
    pub name: &'static str,
    /// Where the numbers come from.
    pub paper: &'static str,
    /// The upstream model class (file name, or timm class).
    pub upstream: &'static str,
    /// The authors' factory function this preset starts from, where they have one.
    pub factory: Option<&'static str>,
    /// Keyword arguments on top of the factory's (as JSON); without a factory, every argument
    /// that differs from the class defaults.
    pub args: &'static str,
    /// Parameters in millions as the paper reports them.
    pub params_m: Option<f64>,
    /// The paper gives the count to the nearest million only.
    pub rounded_to_1m: bool,
    /// Why the published count differs from the released code's, where it does.
    pub discrepancy: Option<&'static str>,
}

impl Preset {
    /// The keyword arguments the authors' call passes: the factory's, then this preset's. The
    /// class defaults fill in the rest ([`Preset::resolved_arguments`]).
    pub fn arguments(&self) -> Value {
        let own: Value = serde_json::from_str(self.args).expect("preset arguments are valid JSON");
        match self.factory {
            Some(name) => {
                let factory = upstream::factory(name).expect("a preset's factory is in the table");
                upstream::overlay(factory.kwargs(), &own)
            }
            None => own,
        }
    }

    /// Every keyword argument of the upstream constructor, defaults included.
    pub fn resolved_arguments(&self) -> Value {
        upstream::resolve(self.upstream, &self.arguments()).expect("presets resolve")
    }

    pub fn config(&self) -> ModelConfig {
        upstream::model_config(self.upstream, &self.arguments())
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
        upstream::model_config(
            self.upstream,
            &upstream::overlay(self.arguments(), overrides),
        )
    }
}

const VIT: &str = "timm.models.vision_transformer.VisionTransformer";
const SWIN: &str = "timm.models.swin_transformer.SwinTransformer";

/// Every preset: baselines, FLatten, Agent, then `tiny_*` twins for tests and quick runs.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "deit_t",
        paper: "DeiT (Touvron et al. 2021), Table 1",
        upstream: VIT,
        factory: None,
        args: r#"{"embed_dim":192,"num_heads":3,"drop_path_rate":0.1}"#,
        params_m: Some(5.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "deit_s",
        paper: "DeiT (Touvron et al. 2021), Table 1",
        upstream: VIT,
        factory: None,
        args: r#"{"embed_dim":384,"num_heads":6,"drop_path_rate":0.1}"#,
        params_m: Some(22.1),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "deit_b",
        paper: "DeiT (Touvron et al. 2021), Table 1",
        upstream: VIT,
        factory: None,
        args: r#"{"drop_path_rate":0.1}"#,
        params_m: Some(86.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "swin_t",
        paper: "Swin (Liu et al. 2021), Table 1",
        upstream: SWIN,
        factory: None,
        args: r#"{"drop_path_rate":0.2}"#,
        params_m: Some(28.3),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "swin_s",
        paper: "Swin (Liu et al. 2021), Table 1",
        upstream: SWIN,
        factory: None,
        args: r#"{"depths":[2,2,18,2],"drop_path_rate":0.3}"#,
        params_m: Some(49.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "swin_b",
        paper: "Swin (Liu et al. 2021), Table 1",
        upstream: SWIN,
        factory: None,
        args: r#"{"embed_dim":128,"depths":[2,2,18,2],"num_heads":[4,8,16,32],"drop_path_rate":0.5}"#,
        params_m: Some(87.8),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_t",
        paper: "PVT (Wang et al. 2021), Table 2 (mean-pooled head instead of a stage-4 CLS token)",
        upstream: "flatten_pvt.py",
        factory: Some("flatten_pvt_tiny"),
        args: r#"{"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(13.2),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_s",
        paper: "PVT (Wang et al. 2021), Table 2 (mean-pooled head instead of a stage-4 CLS token)",
        upstream: "flatten_pvt.py",
        factory: Some("flatten_pvt_small"),
        args: r#"{"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(24.5),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_v2_b0",
        paper: "PVTv2 released code as counted by timm (the PVTv2 README lists 3.4M)",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b0"),
        args: r#"{"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(3.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_v2_b1",
        paper: "PVTv2 released code as counted by timm (the PVTv2 README lists 13.1M)",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b1"),
        args: r#"{"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(14.0),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_v2_b2",
        paper: "PVTv2 (Wang et al. 2022), Table 1",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b2"),
        args: r#"{"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(25.4),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "cswin_t",
        paper: "CSWin (Dong et al. 2022), Table 1",
        upstream: "flatten_cswin.py",
        factory: None,
        args: r#"{"embed_dim":64,"depth":[1,2,21,1],"drop_path_rate":0.2,"la_split_size":"56-28-14-7","attn_type":"SSSS"}"#,
        params_m: Some(23.0),
        rounded_to_1m: false,
        discrepancy: Some(
            "the CSWin paper reports 23M; building the released CSWin_64_12211_tiny_224 config gives 22.3M",
        ),
    },
    Preset {
        name: "flatten_pvt_t",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6",
        upstream: "flatten_pvt.py",
        factory: Some("flatten_pvt_tiny"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.1}"#,
        params_m: Some(12.2),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_s",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6",
        upstream: "flatten_pvt.py",
        factory: Some("flatten_pvt_small"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.1}"#,
        params_m: Some(21.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_m",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt.py",
        factory: Some("flatten_pvt_medium"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_l",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt.py",
        factory: Some("flatten_pvt_large"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b0",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b0"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.1}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b1",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b1"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.1}"#,
        params_m: Some(12.9),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b2",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b2"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.1}"#,
        params_m: Some(22.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b3",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b3"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b4",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt_v2.py",
        factory: Some("flatten_pvt_v2_b4"),
        args: r#"{"la_sr_ratios":"1111","drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_swin_t",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_swin.py",
        factory: None,
        args: r#"{"window_size":56,"drop_path_rate":0.2,"attn_type":"LLSS"}"#,
        params_m: Some(29.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_swin_s",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_swin.py",
        factory: None,
        args: r#"{"depths":[2,2,18,2],"window_size":56,"drop_path_rate":0.3,"attn_type":"LLSS"}"#,
        params_m: Some(51.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_swin_b",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_swin.py",
        factory: None,
        args: r#"{"embed_dim":128,"depths":[2,2,18,2],"num_heads":[4,8,16,32],"window_size":56,"drop_path_rate":0.5,"attn_type":"LLSS"}"#,
        params_m: Some(89.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_cswin_t",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_cswin.py",
        factory: Some("FLatten_CSWin_64_24181_tiny_224"),
        args: r#"{"drop_path_rate":0.2,"la_split_size":"56-28-14-7","attn_type":"LLSS"}"#,
        params_m: Some(21.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_cswin_s",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_cswin.py",
        factory: Some("FLatten_CSWin_64_24322_small_224"),
        args: r#"{"drop_path_rate":0.4,"la_split_size":"56-28-14-7","attn_type":"LLSS"}"#,
        params_m: Some(35.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_cswin_b",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_cswin.py",
        factory: Some("FLatten_CSWin_96_36292_base_224"),
        args: r#"{"drop_path_rate":0.5,"la_split_size":"56-28-14-7","attn_type":"LLSS"}"#,
        params_m: Some(75.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_deit_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_deit.py",
        factory: Some("agent_deit_tiny"),
        args: r#"{}"#,
        params_m: Some(6.0),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_deit_s",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_deit.py",
        factory: Some("agent_deit_small"),
        args: r#"{"drop_path_rate":0.1}"#,
        params_m: Some(22.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_deit_b",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_deit.py",
        factory: Some("agent_deit_base"),
        args: r#"{"drop_path_rate":0.3,"agent_num":[81,81,81,81]}"#,
        params_m: Some(87.2),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        factory: Some("agent_pvt_tiny"),
        args: r#"{"drop_path_rate":0.1}"#,
        params_m: Some(11.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_s",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        factory: Some("agent_pvt_small"),
        args: r#"{"drop_path_rate":0.1}"#,
        params_m: Some(20.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_m",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        factory: Some("agent_pvt_medium"),
        args: r#"{"drop_path_rate":0.3}"#,
        params_m: Some(35.9),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_l",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        factory: Some("agent_pvt_large"),
        args: r#"{"drop_path_rate":0.3}"#,
        params_m: Some(48.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_swin_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_swin.py",
        factory: None,
        args: r#"{"window_size":56,"drop_path_rate":0.2,"attn_type":"AAAB"}"#,
        params_m: Some(29.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_swin_s",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_swin.py",
        factory: None,
        args: r#"{"depths":[2,2,18,2],"window_size":56,"drop_path_rate":0.3,"attn_type":"AABB"}"#,
        params_m: Some(50.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_swin_b",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_swin.py",
        factory: None,
        args: r#"{"embed_dim":128,"depths":[2,2,18,2],"num_heads":[4,8,16,32],"window_size":56,"drop_path_rate":0.5,"attn_type":"AAMB2"}"#,
        params_m: Some(88.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_cswin_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_cswin.py",
        factory: Some("Agent_CSWin_64_24181_tiny_224"),
        args: r#"{"drop_path_rate":0.2,"la_split_size":"56-28-14-7","attn_type":"AABB","agent_num":[9,16,49,49]}"#,
        params_m: Some(21.0),
        rounded_to_1m: true,
        discrepancy: Some(
            "the Agent README reports 21M; building the released Agent_CSWin_64_24181_tiny_224 config gives 20.5M",
        ),
    },
    Preset {
        name: "agent_cswin_s",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_cswin.py",
        factory: Some("Agent_CSWin_64_36292_small_224"),
        args: r#"{"drop_path_rate":0.4,"la_split_size":"56-28-14-7","attn_type":"AABB","agent_num":[9,16,49,49]}"#,
        params_m: Some(33.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_cswin_b",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_cswin.py",
        factory: Some("Agent_CSWin_96_36292_base_224"),
        args: r#"{"drop_path_rate":0.5,"la_split_size":"56-28-14-7","attn_type":"AABB","agent_num":[9,16,49,49]}"#,
        params_m: Some(73.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "tiny_vit",
        paper: "the reduced timm_vit model of the reference cases",
        upstream: VIT,
        factory: None,
        args: r#"{"img_size":32,"patch_size":8,"num_classes":10,"embed_dim":64,"depth":2,"num_heads":2}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_deit",
        paper: "the reduced agent_deit model of the reference cases",
        upstream: "agent_deit.py",
        factory: None,
        args: r#"{"img_size":64,"patch_size":8,"num_classes":10,"embed_dim":64,"depth":4,"num_heads":2,"mlp_ratio":2.0,"agent_num":[4,9,16,16],"agent_layer":3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_pvt",
        paper: "the reduced flatten_pvt model of the reference cases",
        upstream: "flatten_pvt.py",
        factory: None,
        args: r#"{"img_size":64,"patch_size":4,"num_classes":10,"embed_dims":[16,32,48,64],"num_heads":[1,2,3,4],"mlp_ratios":[2,2,2,2],"qkv_bias":true,"depths":[2,1,1,1],"la_sr_ratios":"2111","norm_layer":"partial(nn.LayerNorm, eps=1e-6)"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_pvt_v2",
        paper: "the reduced flatten_pvt_v2 model of the reference cases",
        upstream: "flatten_pvt_v2.py",
        factory: None,
        args: r#"{"img_size":64,"patch_size":4,"num_classes":10,"embed_dims":[16,32,48,64],"num_heads":[1,2,3,4],"mlp_ratios":[2,2,2,2],"qkv_bias":true,"depths":[2,1,1,1],"la_sr_ratios":"1111","norm_layer":"partial(nn.LayerNorm, eps=1e-6)"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_pvt",
        paper: "the reduced agent_pvt model of the reference cases",
        upstream: "agent_pvt.py",
        factory: None,
        args: r#"{"img_size":64,"patch_size":4,"num_classes":10,"embed_dims":[16,32,48,64],"num_heads":[1,2,3,4],"mlp_ratios":[2,2,2,2],"qkv_bias":true,"depths":[2,1,1,1],"agent_sr_ratios":"2111","agent_num":[4,9,16,4],"norm_layer":"partial(nn.LayerNorm, eps=1e-6)"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_swin",
        paper: "the reduced timm_swin model of the reference cases",
        upstream: SWIN,
        factory: None,
        args: r#"{"img_size":64,"num_classes":10,"embed_dim":32,"depths":[2,2],"num_heads":[2,4],"window_size":4,"mlp_ratio":2.0,"drop_path_rate":0.0}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_swin",
        paper: "the reduced flatten_swin model of the reference cases",
        upstream: "flatten_swin.py",
        factory: None,
        args: r#"{"img_size":112,"patch_size":2,"num_classes":10,"embed_dim":16,"depths":[2,2,2,2],"num_heads":[1,2,4,8],"window_size":14,"mlp_ratio":2.0,"drop_path_rate":0.0,"attn_type":"LLSS"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_swin",
        paper: "the reduced agent_swin model of the reference cases",
        upstream: "agent_swin.py",
        factory: None,
        args: r#"{"img_size":112,"patch_size":2,"num_classes":10,"embed_dim":16,"depths":[2,2,2,2],"num_heads":[1,2,4,8],"window_size":14,"mlp_ratio":2.0,"drop_path_rate":0.0,"attn_type":"AAAB"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_cswin",
        paper: "the reduced flatten_cswin model of the reference cases",
        upstream: "flatten_cswin.py",
        factory: None,
        args: r#"{"img_size":64,"patch_size":4,"num_classes":10,"embed_dim":16,"depth":[1,2,2,1],"split_size":[1,2,2,2],"la_split_size":"16-8-4-2","num_heads":[2,2,4,4],"mlp_ratio":2.0,"attn_type":"LLSS"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_cswin",
        paper: "the reduced agent_cswin model of the reference cases",
        upstream: "agent_cswin.py",
        factory: None,
        args: r#"{"img_size":64,"patch_size":4,"num_classes":10,"embed_dim":16,"depth":[1,2,2,1],"split_size":[1,2,2,2],"la_split_size":"16-4-4-2","num_heads":[2,2,4,4],"mlp_ratio":2.0,"agent_num":[4,4,9,9],"attn_type":"AABB"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
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
