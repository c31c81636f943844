//! The authors' constructor arguments (as recorded in the reference cases' `case.json`, in
//! their model factories, or in a run config's `model.args`) turned into our configs: each
//! upstream class with its keyword defaults, the authors' factory functions, which class maps to
//! which family, and the per-stage mixer rules each repository hard-codes.
//!
//! An upstream call may be written in any of the forms the authors' code accepts: every keyword
//! spelled out, only those that differ from the class defaults, or a factory name plus overrides
//! (`create_model(name, **kwargs)`); numbers as strings where upstream `int()`s them
//! (`agent_num`); upstream's sentinels (`agent_layer <= 0`: every block). A keyword the class does
//! not take is an error naming the nearest one it does. (Some upstream classes also take and
//! ignore `**kwargs`; we do not, so a typo cannot pass silently.)

use linvit_attention::{AgentConfig, AttentionConfig, FocusedConfig, Kind, Layout};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model_error;
use crate::presets::nearest;
use crate::ModelError;
use crate::{CswinConfig, ModelConfig, PvtConfig, SwinConfig, VitConfig};

/// An upstream model class and its `__init__` keyword defaults.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamClass {
    /// The source file in the authors' repository (or timm's class path): how cases and presets
    /// name it.
    pub file: &'static str,
    pub class: &'static str,
    /// Every keyword argument with its default, as JSON (Python tuples as lists, callables as
    /// their source text).
    pub defaults: &'static str,
}

impl UpstreamClass {
    pub fn defaults(&self) -> Value {
        serde_json::from_str(self.defaults).expect("class defaults are valid JSON")
    }
}

/// The upstream classes we build, with their defaults as their `__init__` writes them
/// (FLatten-Transformer @ abdb115, Agent-Attention @ 207ce3e, timm 1.0.31).
pub const CLASSES: &[UpstreamClass] = &[
    UpstreamClass {
        file: "flatten_pvt.py",
        class: "PyramidVisionTransformer",
        defaults: r#"{"img_size":224,"patch_size":16,"in_chans":3,"num_classes":1000,"embed_dims":[64,128,256,512],"num_heads":[1,2,4,8],"mlp_ratios":[4,4,4,4],"qkv_bias":false,"qk_scale":null,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.0,"norm_layer":"nn.LayerNorm","depths":[3,4,6,3],"sr_ratios":[8,4,2,1],"la_sr_ratios":"8421","num_stages":4,"focusing_factor":3,"kernel_size":5,"attn_type":"LLLL"}"#,
    },
    UpstreamClass {
        file: "flatten_pvt_v2.py",
        class: "PyramidVisionTransformerV2",
        defaults: r#"{"img_size":224,"patch_size":16,"in_chans":3,"num_classes":1000,"embed_dims":[64,128,256,512],"num_heads":[1,2,4,8],"mlp_ratios":[4,4,4,4],"qkv_bias":false,"qk_scale":null,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.0,"norm_layer":"nn.LayerNorm","depths":[3,4,6,3],"sr_ratios":[8,4,2,1],"la_sr_ratios":"8421","num_stages":4,"linear":false,"focusing_factor":3,"kernel_size":5,"attn_type":"LLLL"}"#,
    },
    UpstreamClass {
        file: "flatten_swin.py",
        class: "FLattenSwinTransformer",
        defaults: r#"{"img_size":224,"patch_size":4,"in_chans":3,"num_classes":1000,"embed_dim":96,"depths":[2,2,6,2],"num_heads":[3,6,12,24],"window_size":7,"mlp_ratio":4.0,"qkv_bias":true,"qk_scale":null,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.1,"norm_layer":"nn.LayerNorm","ape":false,"patch_norm":true,"use_checkpoint":false,"focusing_factor":3,"kernel_size":5,"attn_type":"LLLL"}"#,
    },
    UpstreamClass {
        file: "flatten_cswin.py",
        class: "CSWinTransformer",
        defaults: r#"{"img_size":224,"patch_size":16,"in_chans":3,"num_classes":1000,"embed_dim":96,"depth":[2,2,6,2],"split_size":[1,2,7,7],"la_split_size":"1-2-7-7","num_heads":[2,4,8,16],"mlp_ratio":4.0,"qkv_bias":true,"qk_scale":null,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.0,"hybrid_backbone":null,"norm_layer":"nn.LayerNorm","use_chk":false,"focusing_factor":3,"kernel_size":5,"attn_type":"LLLL"}"#,
    },
    UpstreamClass {
        file: "agent_deit.py",
        class: "VisionTransformer",
        defaults: r#"{"img_size":224,"patch_size":16,"in_chans":3,"num_classes":1000,"embed_dim":768,"depth":12,"num_heads":12,"mlp_ratio":4.0,"qkv_bias":true,"representation_size":null,"distilled":false,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.0,"embed_layer":"PatchEmbed","norm_layer":null,"act_layer":null,"weight_init":"","agent_num":[49,49,49,49],"agent_layer":-1}"#,
    },
    UpstreamClass {
        file: "agent_pvt.py",
        class: "PyramidVisionTransformer",
        defaults: r#"{"img_size":224,"patch_size":16,"in_chans":3,"num_classes":1000,"embed_dims":[64,128,256,512],"num_heads":[1,2,4,8],"mlp_ratios":[4,4,4,4],"qkv_bias":false,"qk_scale":null,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.0,"norm_layer":"nn.LayerNorm","depths":[3,4,6,3],"sr_ratios":[8,4,2,1],"agent_sr_ratios":"1111","num_stages":4,"agent_num":[9,16,49,49],"attn_type":"AAAA"}"#,
    },
    UpstreamClass {
        file: "agent_swin.py",
        class: "AgentSwinTransformer",
        defaults: r#"{"img_size":224,"patch_size":4,"in_chans":3,"num_classes":1000,"embed_dim":96,"depths":[2,2,6,2],"num_heads":[3,6,12,24],"window_size":7,"mlp_ratio":4.0,"qkv_bias":true,"qk_scale":null,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.1,"norm_layer":"nn.LayerNorm","ape":false,"patch_norm":true,"use_checkpoint":false,"agent_num":[9,16,49,49],"attn_type":"BBBB"}"#,
    },
    UpstreamClass {
        file: "agent_cswin.py",
        class: "CSWinTransformer",
        defaults: r#"{"img_size":224,"patch_size":16,"in_chans":3,"num_classes":1000,"embed_dim":96,"depth":[2,2,6,2],"split_size":[1,2,7,7],"la_split_size":"1-2-7-7","num_heads":[2,4,8,16],"mlp_ratio":4.0,"qkv_bias":true,"qk_scale":null,"drop_rate":0.0,"attn_drop_rate":0.0,"drop_path_rate":0.0,"hybrid_backbone":null,"norm_layer":"nn.LayerNorm","use_chk":false,"agent_num":49,"attn_type":"AAAA"}"#,
    },
    UpstreamClass {
        file: "timm.models.vision_transformer.VisionTransformer",
        class: "VisionTransformer",
        defaults: r#"{"img_size":224,"patch_size":16,"in_chans":3,"num_classes":1000,"embed_dim":768,"depth":12,"num_heads":12,"mlp_ratio":4.0,"qkv_bias":true,"drop_path_rate":0.0}"#,
    },
    UpstreamClass {
        file: "timm.models.swin_transformer.SwinTransformer",
        class: "SwinTransformer",
        defaults: r#"{"img_size":224,"patch_size":4,"in_chans":3,"num_classes":1000,"embed_dim":96,"depths":[2,2,6,2],"num_heads":[3,6,12,24],"window_size":7,"mlp_ratio":4.0,"qkv_bias":true,"drop_path_rate":0.1}"#,
    },
];

/// One of the authors' model factory functions: the keyword arguments it passes to its class.
#[derive(Clone, Copy, Debug)]
pub struct Factory {
    pub name: &'static str,
    /// The file of the class it builds.
    pub file: &'static str,
    /// As JSON; every factory also forwards the caller's `**kwargs`, which win.
    pub kwargs: &'static str,
}

impl Factory {
    pub fn kwargs(&self) -> Value {
        serde_json::from_str(self.kwargs).expect("factory arguments are valid JSON")
    }
}

/// The authors' factories (the Swin models have none: their `build.py` calls the class with a
/// config's values, which the Swin presets spell out).
pub const FACTORIES: &[Factory] = &[
    Factory {
        name: "flatten_pvt_tiny",
        file: "flatten_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[2,2,2,2],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_small",
        file: "flatten_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,4,6,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_medium",
        file: "flatten_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,4,18,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_large",
        file: "flatten_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,8,27,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_v2_b0",
        file: "flatten_pvt_v2.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[32,64,160,256],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[2,2,2,2],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_v2_b1",
        file: "flatten_pvt_v2.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[2,2,2,2],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_v2_b2",
        file: "flatten_pvt_v2.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,4,6,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_v2_b3",
        file: "flatten_pvt_v2.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,4,18,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_v2_b4",
        file: "flatten_pvt_v2.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,8,27,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "flatten_pvt_v2_b5",
        file: "flatten_pvt_v2.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[4,4,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,6,40,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "FLatten_CSWin_64_24181_tiny_224",
        file: "flatten_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":64,"depth":[2,4,18,1],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4.0}"#,
    },
    Factory {
        name: "FLatten_CSWin_64_24322_small_224",
        file: "flatten_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":64,"depth":[2,4,32,2],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4.0}"#,
    },
    Factory {
        name: "FLatten_CSWin_96_36292_base_224",
        file: "flatten_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":96,"depth":[3,6,29,2],"split_size":[1,2,7,7],"num_heads":[4,8,16,32],"mlp_ratio":4.0}"#,
    },
    Factory {
        name: "FLatten_CSWin_96_36292_base_384",
        file: "flatten_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":96,"depth":[3,6,29,2],"split_size":[1,2,12,12],"num_heads":[4,8,16,32],"mlp_ratio":4.0}"#,
    },
    Factory {
        name: "agent_deit_tiny",
        file: "agent_deit.py",
        kwargs: r#"{"patch_size":16,"embed_dim":192,"depth":12,"num_heads":3}"#,
    },
    Factory {
        name: "agent_deit_small",
        file: "agent_deit.py",
        kwargs: r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6}"#,
    },
    Factory {
        name: "agent_deit_base",
        file: "agent_deit.py",
        kwargs: r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"agent_layer":4}"#,
    },
    Factory {
        name: "agent_pvt_tiny",
        file: "agent_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[2,2,2,2],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "agent_pvt_small",
        file: "agent_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,4,6,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "agent_pvt_medium",
        file: "agent_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,4,18,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "agent_pvt_large",
        file: "agent_pvt.py",
        kwargs: r#"{"patch_size":4,"embed_dims":[64,128,320,512],"num_heads":[1,2,5,8],"mlp_ratios":[8,8,4,4],"qkv_bias":true,"norm_layer":"partial(nn.LayerNorm, eps=1e-6)","depths":[3,8,27,3],"sr_ratios":[8,4,2,1]}"#,
    },
    Factory {
        name: "Agent_CSWin_64_24181_tiny_224",
        file: "agent_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":64,"depth":[2,4,18,1],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4.0}"#,
    },
    Factory {
        name: "Agent_CSWin_64_36292_small_224",
        file: "agent_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":64,"depth":[3,6,29,2],"split_size":[1,2,7,7],"num_heads":[2,4,8,16],"mlp_ratio":4.0}"#,
    },
    Factory {
        name: "Agent_CSWin_96_36292_base_224",
        file: "agent_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":96,"depth":[3,6,29,2],"split_size":[1,2,7,7],"num_heads":[4,8,16,32],"mlp_ratio":4.0}"#,
    },
    Factory {
        name: "Agent_CSWin_96_36292_base_384",
        file: "agent_cswin.py",
        kwargs: r#"{"patch_size":4,"embed_dim":96,"depth":[3,6,29,2],"split_size":[1,2,12,12],"num_heads":[4,8,16,32],"mlp_ratio":4.0}"#,
    },
];

/// The class that `file` (as in `case.json`'s `upstream.file`, or a timm class path) defines.
pub fn class(file: &str) -> Result<&'static UpstreamClass, ModelError> {
    let timm = if file.ends_with("VisionTransformer") {
        Some("timm.models.vision_transformer.VisionTransformer")
    } else if file.ends_with("SwinTransformer") {
        Some("timm.models.swin_transformer.SwinTransformer")
    } else {
        None
    };
    let file = timm.unwrap_or(file);
    CLASSES
        .iter()
        .find(|c| c.file == file)
        .ok_or_else(|| model_error!("no builder for upstream model {file:?}"))
}

/// One of the authors' factories by name; the error names the nearest.
pub fn factory(name: &str) -> Result<&'static Factory, ModelError> {
    FACTORIES.iter().find(|f| f.name == name).ok_or_else(|| {
        let nearest = nearest(FACTORIES.iter().map(|f| f.name), name);
        model_error!("unknown upstream factory {name:?}; did you mean {nearest:?}?")
    })
}

/// A call to one of the authors' model constructors: their class (by its file), through one
/// of their factories where it starts from one, with keyword arguments on top. Presets are
/// written as calls, each family's with its own typed arguments ([`crate::vit::VitArgs`],
/// [`crate::swin::SwinArgs`], ...), so a misspelled keyword does not compile; the call then
/// goes through [`model_config`] like any case or config file.
#[derive(Clone, Debug)]
pub struct Call {
    pub file: &'static str,
    pub factory: Option<&'static Factory>,
    /// The arguments beyond the factory's (without a factory, beyond the class defaults).
    pub kwargs: Value,
}

impl Call {
    /// `file`'s class with `args`; a field left `None` keeps the class default.
    pub fn class(file: &'static str, args: &impl Serialize) -> Self {
        Self {
            file,
            factory: None,
            kwargs: kwargs(args),
        }
    }

    /// The authors' factory `name` (which fixes the class) with `args` on top of its own.
    pub fn factory(name: &'static str, args: &impl Serialize) -> Self {
        let factory = factory(name).expect("a preset's factory is in the table");
        Self {
            file: factory.file,
            factory: Some(factory),
            kwargs: kwargs(args),
        }
    }

    /// Every keyword argument the call passes to the class: the factory's, then its own. The
    /// class defaults fill in the rest ([`resolve`]).
    pub fn arguments(&self) -> Value {
        match self.factory {
            Some(factory) => overlay(factory.kwargs(), &self.kwargs),
            None => self.kwargs.clone(),
        }
    }
}

/// A family's argument struct as keyword arguments: a JSON object of its set (`Some`) fields.
fn kwargs(args: &impl Serialize) -> Value {
    let mut value = serde_json::to_value(args).expect("argument structs serialize");
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

/// `base` with the keys of `over` replaced or added (both JSON objects).
pub fn overlay(base: Value, over: &Value) -> Value {
    let mut merged: Map<String, Value> = match base {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if let Some(extra) = over.as_object() {
        for (k, v) in extra {
            merged.insert(k.clone(), v.clone());
        }
    }
    Value::Object(merged)
}

/// Every keyword argument the class's `__init__` ends up with: its defaults with `args` on top.
/// A key the class does not take is an error naming it and the nearest one it does; so is one
/// of the [`DEFAULT_ONLY`] arguments away from its default.
pub fn resolve(file: &str, args: &Value) -> Result<Value, ModelError> {
    let class = class(file)?;
    let defaults = class.defaults();
    let known = defaults.as_object().expect("class defaults are an object");
    let given = match args {
        Value::Object(map) => map,
        Value::Null => &Map::new(),
        _ => return Err("args must be a table of keyword arguments".into()),
    };
    for key in given.keys() {
        if !known.contains_key(key) {
            return Err(model_error!(
                "args.{key}: {} ({}) takes no argument {key:?}; did you mean {:?}?",
                class.class,
                class.file,
                nearest(known.keys().map(String::as_str), key)
            ));
        }
    }
    let resolved = overlay(defaults.clone(), args);
    check_default_only(file, &resolved, &defaults)?;
    Ok(resolved)
}

/// Arguments of the upstream classes that change nothing linvit builds differently only at
/// their default: dropout we do not train with, options we do not implement. Any other value
/// is an error rather than a silently different model.
const DEFAULT_ONLY: &[&str] = &[
    "qk_scale",
    "drop_rate",
    "attn_drop_rate",
    "num_stages",
    "ape",
    "patch_norm",
    "hybrid_backbone",
    "representation_size",
    "distilled",
    "embed_layer",
    "act_layer",
    "weight_init",
];

/// Whether two JSON values are the same argument (numbers compared as numbers: `0` and `0.0`).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}

/// Checks the [`DEFAULT_ONLY`] arguments and `norm_layer` (beside the PVT families, which
/// read it) against the class defaults.
fn check_default_only(file: &str, resolved: &Value, defaults: &Value) -> Result<(), ModelError> {
    let pvt = file.contains("pvt");
    for key in DEFAULT_ONLY
        .iter()
        .copied()
        .chain((!pvt).then_some("norm_layer"))
    {
        if let (Some(given), Some(default)) = (resolved.get(key), defaults.get(key)) {
            if !same(given, default) {
                return Err(model_error!(
                    "args.{key} = {given}: linvit builds this class only with the default, {default}"
                ));
            }
        }
    }
    Ok(())
}

/// The LayerNorm epsilon of a PVT `norm_layer`: `nn.LayerNorm` (1e-5) or a partial of it with
/// `eps=...`, written as the factories' source (`partial(nn.LayerNorm, eps=1e-6)`) or as the
/// reference cases record it (`functools.partial(torch.nn.LayerNorm, eps=1e-06)`).
pub(crate) fn layer_norm_eps(norm_layer: &Value) -> Result<f64, ModelError> {
    let bad = || {
        model_error!(
            "args.norm_layer = {norm_layer}: expected nn.LayerNorm or partial(nn.LayerNorm, eps=...)"
        )
    };
    let text: String = norm_layer
        .as_str()
        .ok_or_else(bad)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let text = text
        .trim_start_matches("functools.")
        .replace("torch.nn.", "nn.");
    if text == "nn.LayerNorm" {
        return Ok(1e-5);
    }
    text.strip_prefix("partial(nn.LayerNorm,eps=")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|eps| eps.parse::<f64>().ok())
        .filter(|eps| *eps > 0.0)
        .ok_or_else(bad)
}

/// Resolved constructor arguments, read by key; errors name `args.KEY`.
pub(crate) struct Args<'a>(pub(crate) &'a Value);

impl Args<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    pub(crate) fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| model_error!("args.{key} is missing or not a non-negative integer"))
    }
    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize, ModelError> {
        self.get(key).map_or(Ok(default), |_| self.usize(key))
    }
    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_f64()
                .ok_or_else(|| model_error!("args.{key} is not a number"))
        })
    }
    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_bool()
                .ok_or_else(|| model_error!("args.{key} is not a boolean"))
        })
    }
    pub(crate) fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str, ModelError> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_str()
                .ok_or_else(|| model_error!("args.{key} is not a string"))
        })
    }
    pub(crate) fn list(&self, key: &str) -> Result<Vec<usize>, ModelError> {
        let bad = || model_error!("args.{key} is missing or not a list of integers");
        self.get(key)
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|v| {
                // The authors' configs pass agent counts as strings ("9-16-49-49".split('-')).
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .map(|x| x as usize)
                    .ok_or_else(bad)
            })
            .collect()
    }
    pub(crate) fn list_f64(&self, key: &str) -> Result<Vec<f64>, ModelError> {
        let bad = || model_error!("args.{key} is missing or not a list of numbers");
        self.get(key)
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|v| v.as_f64().ok_or_else(bad))
            .collect()
    }
    /// A string of digits such as `"2111"` (one per stage).
    pub(crate) fn digits(&self, key: &str, default: &str) -> Result<Vec<usize>, ModelError> {
        self.str_or(key, default)?
            .chars()
            .map(|c| {
                c.to_digit(10)
                    .map(|d| d as usize)
                    .ok_or_else(|| model_error!("args.{key}: {c:?} is not a digit"))
            })
            .collect()
    }
    pub(crate) fn focused(&self) -> Result<AttentionConfig, ModelError> {
        Ok(AttentionConfig::Focused(FocusedConfig {
            focusing_factor: self.usize_or("focusing_factor", 3)? as u32,
            kernel_size: self.usize_or("kernel_size", 5)?,
        }))
    }
}

/// Entry `i` of a per-stage list, or an error naming the list.
pub(crate) fn at(list: &[usize], i: usize, key: &str) -> Result<usize, ModelError> {
    list.get(i)
        .copied()
        .ok_or_else(|| model_error!("args.{key} has no entry for stage {}", i + 1))
}

pub(crate) fn agent(agent_num: usize) -> AttentionConfig {
    AttentionConfig::Agent(AgentConfig {
        agent_num,
        dwc_kernel: 3,
    })
}

/// The kinds of an upstream `attn_type` (see [`Layout::parse`]; `M` mixes `family` into a
/// Swin stage's first blocks). The authors' code reads L, A, S and B (and M in Swin) only.
pub(crate) fn upstream_layout(
    attn_type: &str,
    depths: &[usize],
    family: Kind,
) -> Result<Layout, ModelError> {
    let layout = Layout::parse(attn_type, depths, family)
        .map_err(|e| model_error!("args.attn_type: {e}"))?;
    let known = [Kind::Focused, Kind::Agent, Kind::Softmax];
    let unknown = layout.kinds().find(|k| !known.contains(k));
    match unknown {
        Some(k) => Err(model_error!(
            "args.attn_type {attn_type:?}: the authors' code has no {k} letter {:?} (it reads L, A, S, B)",
            k.letter()
        )),
        None => Ok(layout),
    }
}

/// The kind of each stage of a PVT or CSwin `attn_type`, one letter per stage.
pub(crate) fn stage_kinds(
    attn_type: &str,
    stages: usize,
    family: Kind,
) -> Result<Vec<Kind>, ModelError> {
    upstream_layout(attn_type, &vec![1; stages], family)?
        .stage_kinds()
        .ok_or_else(|| model_error!("args.attn_type {attn_type:?}: only the Swin code reads M"))
}

/// The kind of each stage of a FLatten or Agent PVT/CSwin file: `attn_type`, by default
/// `defaults[0]` for FLatten's file and `defaults[1]` for Agent's.
pub(crate) fn family_stage_kinds(
    a: &Args,
    is_agent: bool,
    [flatten, agent]: [&str; 2],
    stages: usize,
) -> Result<Vec<Kind>, ModelError> {
    let (default, family) = if is_agent {
        (agent, Kind::Agent)
    } else {
        (flatten, Kind::Focused)
    };
    stage_kinds(a.str_or("attn_type", default)?, stages, family)
}

/// Our config for an upstream model class (`file` as in `case.json`'s `upstream`) and its
/// constructor arguments.
pub fn model_config(file: &str, args: &Value) -> Result<ModelConfig, ModelError> {
    let resolved = resolve(file, args)?;
    let a = Args(&resolved);
    match file {
        f if f == "agent_deit.py" || f.ends_with("VisionTransformer") => {
            VitConfig::from_upstream(file, &a)
        }
        "flatten_pvt.py" | "flatten_pvt_v2.py" | "agent_pvt.py" => {
            PvtConfig::from_upstream(file, &a)
        }
        f if f.ends_with("SwinTransformer") || f == "flatten_swin.py" || f == "agent_swin.py" => {
            SwinConfig::from_upstream(file, &a)
        }
        "flatten_cswin.py" | "agent_cswin.py" => CswinConfig::from_upstream(file, &a),
        other => Err(model_error!("no builder for upstream model {other:?}")),
    }
}
