//! The papers' named variants. Each preset is written as the keyword arguments the authors'
//! factory passes to their model class (ImageNet-1K, 224x224), and goes through the same
//! [`upstream::model_config`] mapping that the reference cases verify; `params_m` is the
//! parameter count the paper reports, checked by the tests.

use serde_json::Value;

use crate::upstream;
use crate::ModelConfig;

/// A named model variant.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// snake_case, the same in code, TOML and on the command line.
    pub name: &'static str,
    /// Where the numbers come from.
    pub paper: &'static str,
    /// The upstream model class (file name, or timm class).
    pub upstream: &'static str,
    /// The constructor keyword arguments, as JSON.
    pub args: &'static str,
    /// Parameters in millions as the paper reports them.
    pub params_m: Option<f64>,
    /// The paper gives the count to the nearest million only.
    pub rounded_to_1m: bool,
    /// Why the published count differs from the released code's, where it does.
    pub discrepancy: Option<&'static str>,
}

impl Preset {
    /// The constructor arguments of the authors' model class, parsed.
    pub fn arguments(&self) -> Value {
        serde_json::from_str(self.args).expect("preset arguments are valid JSON")
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

    /// The preset with other constructor arguments changed (e.g. `num_classes`, `img_size`).
    pub fn config_with(&self, overrides: &Value) -> Result<ModelConfig, String> {
        let mut args = self.arguments();
        if let (Some(base), Some(extra)) = (args.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        upstream::model_config(self.upstream, &args)
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
        args: r#"{"img_size":224,"patch_size":16,"num_classes":1000,"embed_dim":192,"depth":12,"num_heads":3,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.1}"#,
        params_m: Some(5.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "deit_s",
        paper: "DeiT (Touvron et al. 2021), Table 1",
        upstream: VIT,
        args: r#"{"img_size":224,"patch_size":16,"num_classes":1000,"embed_dim":384,"depth":12,"num_heads":6,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.1}"#,
        params_m: Some(22.1),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "deit_b",
        paper: "DeiT (Touvron et al. 2021), Table 1",
        upstream: VIT,
        args: r#"{"img_size":224,"patch_size":16,"num_classes":1000,"embed_dim":768,"depth":12,"num_heads":12,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.1}"#,
        params_m: Some(86.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "swin_t",
        paper: "Swin (Liu et al. 2021), Table 1",
        upstream: SWIN,
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":96,"depths":[2,2,6,2],"num_heads":[3,6,12,24],"window_size":7,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.2}"#,
        params_m: Some(28.3),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "swin_s",
        paper: "Swin (Liu et al. 2021), Table 1",
        upstream: SWIN,
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":96,"depths":[2,2,18,2],"num_heads":[3,6,12,24],"window_size":7,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.3}"#,
        params_m: Some(49.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "swin_b",
        paper: "Swin (Liu et al. 2021), Table 1",
        upstream: SWIN,
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":128,"depths":[2,2,18,2],"num_heads":[4,8,16,32],"window_size":7,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.5}"#,
        params_m: Some(87.8),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_t",
        paper: "PVT (Wang et al. 2021), Table 2 (mean-pooled head instead of a stage-4 CLS token)",
        upstream: "flatten_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[2,2,2,2],"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(13.2),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_s",
        paper: "PVT (Wang et al. 2021), Table 2 (mean-pooled head instead of a stage-4 CLS token)",
        upstream: "flatten_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,6,3],"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(24.5),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_v2_b0",
        paper: "PVTv2 released code as counted by timm (the PVTv2 README lists 3.4M)",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[32,64,160,256],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[2,2,2,2],"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(3.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_v2_b1",
        paper: "PVTv2 released code as counted by timm (the PVTv2 README lists 13.1M)",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[2,2,2,2],"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(14.0),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "pvt_v2_b2",
        paper: "PVTv2 (Wang et al. 2022), Table 1",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,6,3],"attn_type":"SSSS","drop_path_rate":0.1}"#,
        params_m: Some(25.4),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "cswin_t",
        paper: "CSWin (Dong et al. 2022), Table 1",
        upstream: "flatten_cswin.py",
        args: r#"{"img_size":224,"num_classes":1000,"embed_dim":64,"depth":[1,2,21,1],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.2,"la_split_size":"56-28-14-7","attn_type":"SSSS"}"#,
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
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[2,2,2,2],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.1}"#,
        params_m: Some(12.2),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_s",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6",
        upstream: "flatten_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,6,3],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.1}"#,
        params_m: Some(21.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_m",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,18,3],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_l",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,8,27,3],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b0",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[32,64,160,256],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[2,2,2,2],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.1}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b1",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[2,2,2,2],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.1}"#,
        params_m: Some(12.9),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b2",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,6,3],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.1}"#,
        params_m: Some(22.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b3",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,18,3],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_pvt_v2_b4",
        paper: "FLatten (Han et al., ICCV 2023) (no published count)",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,8,27,3],"attn_type":"LLLL","la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"drop_path_rate":0.3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "flatten_swin_t",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_swin.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":96,"depths":[2,2,6,2],"num_heads":[3,6,12,24],"window_size":56,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.2,"attn_type":"LLSS","focusing_factor":3,"kernel_size":5}"#,
        params_m: Some(29.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_swin_s",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_swin.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":96,"depths":[2,2,18,2],"num_heads":[3,6,12,24],"window_size":56,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.3,"attn_type":"LLSS","focusing_factor":3,"kernel_size":5}"#,
        params_m: Some(51.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_swin_b",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_swin.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":128,"depths":[2,2,18,2],"num_heads":[4,8,16,32],"window_size":56,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.5,"attn_type":"LLSS","focusing_factor":3,"kernel_size":5}"#,
        params_m: Some(89.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_cswin_t",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_cswin.py",
        args: r#"{"img_size":224,"num_classes":1000,"embed_dim":64,"depth":[2,4,18,1],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.2,"la_split_size":"56-28-14-7","attn_type":"LLSS","focusing_factor":3,"kernel_size":5}"#,
        params_m: Some(21.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_cswin_s",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_cswin.py",
        args: r#"{"img_size":224,"num_classes":1000,"embed_dim":64,"depth":[2,4,32,2],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.4,"la_split_size":"56-28-14-7","attn_type":"LLSS","focusing_factor":3,"kernel_size":5}"#,
        params_m: Some(35.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "flatten_cswin_b",
        paper: "FLatten (Han et al., ICCV 2023), Fig. 6 (rounded to 1M)",
        upstream: "flatten_cswin.py",
        args: r#"{"img_size":224,"num_classes":1000,"embed_dim":96,"depth":[3,6,29,2],"split_size":[1,2,7,7],"num_heads":[4,8,16,32],"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.5,"la_split_size":"56-28-14-7","attn_type":"LLSS","focusing_factor":3,"kernel_size":5}"#,
        params_m: Some(75.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_deit_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_deit.py",
        args: r#"{"img_size":224,"patch_size":16,"num_classes":1000,"embed_dim":192,"depth":12,"num_heads":3,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.0,"agent_num":[49,49,49,49]}"#,
        params_m: Some(6.0),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_deit_s",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_deit.py",
        args: r#"{"img_size":224,"patch_size":16,"num_classes":1000,"embed_dim":384,"depth":12,"num_heads":6,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.1,"agent_num":[49,49,49,49]}"#,
        params_m: Some(22.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_deit_b",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_deit.py",
        args: r#"{"img_size":224,"patch_size":16,"num_classes":1000,"embed_dim":768,"depth":12,"num_heads":12,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.3,"agent_num":[81,81,81,81],"agent_layer":4}"#,
        params_m: Some(87.2),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[2,2,2,2],"attn_type":"AAAA","agent_sr_ratios":"1111","agent_num":[9,16,49,49],"drop_path_rate":0.1}"#,
        params_m: Some(11.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_s",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,6,3],"attn_type":"AAAA","agent_sr_ratios":"1111","agent_num":[9,16,49,49],"drop_path_rate":0.1}"#,
        params_m: Some(20.6),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_m",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,4,18,3],"attn_type":"AAAA","agent_sr_ratios":"1111","agent_num":[9,16,49,49],"drop_path_rate":0.3}"#,
        params_m: Some(35.9),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_pvt_l",
        paper: "Agent Attention (Han et al., ECCV 2024), README table",
        upstream: "agent_pvt.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"sr_ratios":[8,4,2,1],"depths":[3,8,27,3],"attn_type":"AAAA","agent_sr_ratios":"1111","agent_num":[9,16,49,49],"drop_path_rate":0.3}"#,
        params_m: Some(48.7),
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "agent_swin_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_swin.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":96,"depths":[2,2,6,2],"num_heads":[3,6,12,24],"window_size":56,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.2,"attn_type":"AAAB","agent_num":[9,16,49,49]}"#,
        params_m: Some(29.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_swin_s",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_swin.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":96,"depths":[2,2,18,2],"num_heads":[3,6,12,24],"window_size":56,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.3,"attn_type":"AABB","agent_num":[9,16,49,49]}"#,
        params_m: Some(50.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_swin_b",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_swin.py",
        args: r#"{"img_size":224,"patch_size":4,"num_classes":1000,"embed_dim":128,"depths":[2,2,18,2],"num_heads":[4,8,16,32],"window_size":56,"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.5,"attn_type":"AAMB2","agent_num":[9,16,49,49]}"#,
        params_m: Some(88.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_cswin_t",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_cswin.py",
        args: r#"{"img_size":224,"num_classes":1000,"embed_dim":64,"depth":[2,4,18,1],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.2,"la_split_size":"56-28-14-7","attn_type":"AABB","agent_num":[9,16,49,49]}"#,
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
        args: r#"{"img_size":224,"num_classes":1000,"embed_dim":64,"depth":[3,6,29,2],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.4,"la_split_size":"56-28-14-7","attn_type":"AABB","agent_num":[9,16,49,49]}"#,
        params_m: Some(33.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "agent_cswin_b",
        paper: "Agent Attention (Han et al., ECCV 2024), README table (rounded to 1M)",
        upstream: "agent_cswin.py",
        args: r#"{"img_size":224,"num_classes":1000,"embed_dim":96,"depth":[3,6,29,2],"split_size":[1,2,7,7],"num_heads":[4,8,16,32],"mlp_ratio":4,"qkv_bias":true,"drop_path_rate":0.5,"la_split_size":"56-28-14-7","attn_type":"AABB","agent_num":[9,16,49,49]}"#,
        params_m: Some(73.0),
        rounded_to_1m: true,
        discrepancy: None,
    },
    Preset {
        name: "tiny_vit",
        paper: "the reduced timm_vit model of the reference cases",
        upstream: VIT,
        args: r#"{"img_size":32,"patch_size":8,"in_chans":3,"num_classes":10,"embed_dim":64,"depth":2,"num_heads":2,"mlp_ratio":4.0,"qkv_bias":true}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_deit",
        paper: "the reduced agent_deit model of the reference cases",
        upstream: "agent_deit.py",
        args: r#"{"img_size":64,"patch_size":8,"in_chans":3,"num_classes":10,"embed_dim":64,"depth":4,"num_heads":2,"mlp_ratio":2.0,"qkv_bias":true,"drop_path_rate":0.0,"agent_num":[4,9,16,16],"agent_layer":3}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_pvt",
        paper: "the reduced flatten_pvt model of the reference cases",
        upstream: "flatten_pvt.py",
        args: r#"{"img_size":64,"patch_size":4,"in_chans":3,"num_classes":10,"embed_dims":[16,32,48,64],"num_heads":[1,2,3,4],"mlp_ratios":[2,2,2,2],"qkv_bias":true,"depths":[2,1,1,1],"sr_ratios":[8,4,2,1],"la_sr_ratios":"2111","focusing_factor":3,"kernel_size":5,"attn_type":"LLLL","drop_path_rate":0.0}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_pvt_v2",
        paper: "the reduced flatten_pvt_v2 model of the reference cases",
        upstream: "flatten_pvt_v2.py",
        args: r#"{"img_size":64,"patch_size":4,"in_chans":3,"num_classes":10,"embed_dims":[16,32,48,64],"num_heads":[1,2,3,4],"mlp_ratios":[2,2,2,2],"qkv_bias":true,"depths":[2,1,1,1],"sr_ratios":[8,4,2,1],"la_sr_ratios":"1111","focusing_factor":3,"kernel_size":5,"attn_type":"LLLL","drop_path_rate":0.0}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_pvt",
        paper: "the reduced agent_pvt model of the reference cases",
        upstream: "agent_pvt.py",
        args: r#"{"img_size":64,"patch_size":4,"in_chans":3,"num_classes":10,"embed_dims":[16,32,48,64],"num_heads":[1,2,3,4],"mlp_ratios":[2,2,2,2],"qkv_bias":true,"depths":[2,1,1,1],"sr_ratios":[8,4,2,1],"agent_sr_ratios":"2111","agent_num":[4,9,16,4],"attn_type":"AAAA","drop_path_rate":0.0}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_swin",
        paper: "the reduced timm_swin model of the reference cases",
        upstream: SWIN,
        args: r#"{"img_size":64,"patch_size":4,"in_chans":3,"num_classes":10,"embed_dim":32,"depths":[2,2],"num_heads":[2,4],"window_size":4,"mlp_ratio":2.0,"qkv_bias":true}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_swin",
        paper: "the reduced flatten_swin model of the reference cases",
        upstream: "flatten_swin.py",
        args: r#"{"img_size":112,"patch_size":2,"in_chans":3,"num_classes":10,"embed_dim":16,"depths":[2,2,2,2],"num_heads":[1,2,4,8],"window_size":14,"mlp_ratio":2.0,"qkv_bias":true,"drop_path_rate":0.0,"focusing_factor":3,"kernel_size":5,"attn_type":"LLSS"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_swin",
        paper: "the reduced agent_swin model of the reference cases",
        upstream: "agent_swin.py",
        args: r#"{"img_size":112,"patch_size":2,"in_chans":3,"num_classes":10,"embed_dim":16,"depths":[2,2,2,2],"num_heads":[1,2,4,8],"window_size":14,"mlp_ratio":2.0,"qkv_bias":true,"drop_path_rate":0.0,"agent_num":[9,16,49,49],"attn_type":"AAAB"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_flatten_cswin",
        paper: "the reduced flatten_cswin model of the reference cases",
        upstream: "flatten_cswin.py",
        args: r#"{"img_size":64,"patch_size":4,"in_chans":3,"num_classes":10,"embed_dim":16,"depth":[1,2,2,1],"split_size":[1,2,2,2],"la_split_size":"16-8-4-2","num_heads":[2,2,4,4],"mlp_ratio":2.0,"qkv_bias":true,"drop_path_rate":0.0,"focusing_factor":3,"kernel_size":5,"attn_type":"LLSS"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
    Preset {
        name: "tiny_agent_cswin",
        paper: "the reduced agent_cswin model of the reference cases",
        upstream: "agent_cswin.py",
        args: r#"{"img_size":64,"patch_size":4,"in_chans":3,"num_classes":10,"embed_dim":16,"depth":[1,2,2,1],"split_size":[1,2,2,2],"la_split_size":"16-4-4-2","num_heads":[2,2,4,4],"mlp_ratio":2.0,"qkv_bias":true,"drop_path_rate":0.0,"agent_num":[4,4,9,9],"attn_type":"AABB"}"#,
        params_m: None,
        rounded_to_1m: false,
        discrepancy: None,
    },
];

/// A preset by name; the error names the nearest valid one.
pub fn preset(name: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let nearest = PRESETS
            .iter()
            .min_by_key(|p| edit_distance(p.name, name))
            .map(|p| p.name)
            .unwrap_or("");
        format!("unknown preset {name:?}; did you mean {nearest:?}? (`linvit models` lists them)")
    })
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
