//! The authors' constructor arguments (as recorded in the reference cases' `case.json`, or in
//! their model factories) turned into our configs: which upstream class maps to which family,
//! and the per-stage mixer rules each repository hard-codes.

use linvit_attention::{AgentConfig, AttentionConfig, FocusedConfig};
use serde_json::Value;

use crate::{CswinConfig, ModelConfig, PvtConfig, SwinConfig, SwinNaming, VitConfig};

/// The upstream model classes we build, by source file (or timm class).
pub fn supports(file: &str) -> bool {
    matches!(
        file,
        "agent_deit.py"
            | "flatten_pvt.py"
            | "flatten_pvt_v2.py"
            | "agent_pvt.py"
            | "flatten_swin.py"
            | "agent_swin.py"
            | "flatten_cswin.py"
            | "agent_cswin.py"
    ) || file.ends_with("VisionTransformer")
        || file.ends_with("SwinTransformer")
}

struct Args<'a>(&'a Value);

impl Args<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn usize(&self, key: &str) -> Result<usize, String> {
        self.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("args.{key} is missing or not a non-negative integer"))
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize, String> {
        self.get(key).map_or(Ok(default), |_| self.usize(key))
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_f64()
                .ok_or_else(|| format!("args.{key} is not a number"))
        })
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_bool()
                .ok_or_else(|| format!("args.{key} is not a boolean"))
        })
    }
    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_str()
                .ok_or_else(|| format!("args.{key} is not a string"))
        })
    }
    fn list(&self, key: &str) -> Result<Vec<usize>, String> {
        let bad = || format!("args.{key} is missing or not a list of integers");
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
    fn list_f64(&self, key: &str) -> Result<Vec<f64>, String> {
        let bad = || format!("args.{key} is missing or not a list of numbers");
        self.get(key)
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|v| v.as_f64().ok_or_else(bad))
            .collect()
    }
    /// A string of digits such as `"2111"` (one per stage).
    fn digits(&self, key: &str, default: &str) -> Result<Vec<usize>, String> {
        self.str_or(key, default)?
            .chars()
            .map(|c| {
                c.to_digit(10)
                    .map(|d| d as usize)
                    .ok_or_else(|| format!("args.{key}: {c:?} is not a digit"))
            })
            .collect()
    }
    fn focused(&self) -> Result<AttentionConfig, String> {
        Ok(AttentionConfig::Focused(FocusedConfig {
            focusing_factor: self.usize_or("focusing_factor", 3)? as u32,
            kernel_size: self.usize_or("kernel_size", 5)?,
        }))
    }
}

/// Entry `i` of a per-stage list, or an error naming the list.
fn at(list: &[usize], i: usize, key: &str) -> Result<usize, String> {
    list.get(i)
        .copied()
        .ok_or_else(|| format!("args.{key} has no entry for stage {}", i + 1))
}

fn agent(agent_num: usize) -> AttentionConfig {
    AttentionConfig::Agent(AgentConfig {
        agent_num,
        dwc_kernel: 3,
    })
}

/// The mixer letter of each stage in an upstream `attn_type`.
fn letters(attn_type: &str, stages: usize) -> Result<Vec<char>, String> {
    let letters: Vec<char> = attn_type.chars().collect();
    if letters.len() != stages || letters.iter().any(|c| !"LASB".contains(*c)) {
        return Err(format!(
            "attn_type {attn_type:?}: expected one of L, A, S, B per stage ({stages} stages)"
        ));
    }
    Ok(letters)
}

/// The mixer letter of every block in a Swin `attn_type`, where a stage letter `M` means "the
/// first k blocks linear/agent, the rest softmax" with k written after the stage letters
/// (`AAMB2`: stage 3's first 2 blocks agent), as the authors' Swin code reads it.
fn block_letters(
    attn_type: &str,
    depths: &[usize],
    linear: char,
) -> Result<Vec<Vec<char>>, String> {
    let n = depths.len();
    let chars: Vec<char> = attn_type.chars().collect();
    if chars.len() < n {
        return Err(format!(
            "attn_type {attn_type:?} has fewer letters than {n} stages"
        ));
    }
    let mixed: String = chars[n..].iter().collect();
    let first = if mixed.is_empty() {
        None
    } else {
        Some(
            mixed
                .parse::<usize>()
                .map_err(|_| format!("attn_type {attn_type:?}: {mixed:?} is not a block count"))?,
        )
    };
    let softmax = if linear == 'A' { 'B' } else { 'S' };
    (0..n)
        .map(|i| match (chars[i], first) {
            ('M', Some(k)) => Ok((0..depths[i])
                .map(|j| if j < k { linear } else { softmax })
                .collect()),
            ('M', None) => Err(format!(
                "attn_type {attn_type:?}: M needs a block count after the stages"
            )),
            (c, _) if "LASB".contains(c) => Ok(vec![c; depths[i]]),
            (c, _) => Err(format!("attn_type {attn_type:?}: unknown letter {c:?}")),
        })
        .collect()
}

/// Our config for an upstream model class (`file` as in `case.json`'s `upstream`) and its
/// constructor arguments.
pub fn model_config(file: &str, args: &Value) -> Result<ModelConfig, String> {
    let a = Args(args);
    match file {
        "agent_deit.py" => {
            let depth = a.usize("depth")?;
            let agents = a.list("agent_num")?;
            let agent_layer = a.usize_or("agent_layer", depth)?;
            // Upstream: agent_num[{0:0,1:1,2:2,3:2,4:2,5:3}[i//2]].
            let pick = [0, 1, 2, 2, 2, 3];
            let blocks = (0..depth)
                .map(|i| {
                    if i >= agent_layer {
                        return Ok(AttentionConfig::Softmax);
                    }
                    let slot = pick.get(i / 2).copied().unwrap_or(3);
                    agents
                        .get(slot)
                        .map(|&m| agent(m))
                        .ok_or_else(|| format!("args.agent_num has no entry {slot}"))
                })
                .collect::<Result<_, String>>()?;
            vit(&a, blocks)
        }
        f if f.ends_with("VisionTransformer") => {
            let blocks = vec![AttentionConfig::Softmax; a.usize("depth")?];
            vit(&a, blocks)
        }
        "flatten_pvt.py" | "flatten_pvt_v2.py" | "agent_pvt.py" => {
            let depths = a.list("depths")?;
            let n = depths.len();
            let is_agent = file == "agent_pvt.py";
            let kinds = letters(
                a.str_or("attn_type", if is_agent { "AAAA" } else { "LLLL" })?,
                n,
            )?;
            let sr = a.list("sr_ratios")?;
            let la_sr = a.digits(
                if is_agent {
                    "agent_sr_ratios"
                } else {
                    "la_sr_ratios"
                },
                "8421",
            )?;
            let agents = if is_agent {
                a.list("agent_num")?
            } else {
                Vec::new()
            };
            let mut attention = Vec::new();
            let mut sr_ratios = Vec::new();
            for (i, kind) in kinds.iter().enumerate() {
                let (mixer, ratio) = match kind {
                    'L' => (a.focused()?, at(&la_sr, i, "la_sr_ratios")?),
                    'A' => (
                        agent(at(&agents, i, "agent_num")?),
                        at(&la_sr, i, "agent_sr_ratios")?,
                    ),
                    _ => (AttentionConfig::Softmax, at(&sr, i, "sr_ratios")?),
                };
                attention.push(mixer);
                sr_ratios.push(ratio);
            }
            Ok(ModelConfig::Pvt(PvtConfig {
                version: if file == "flatten_pvt_v2.py" { 2 } else { 1 },
                img_size: a.usize("img_size")?,
                patch_size: a.usize_or("patch_size", 4)?,
                in_chans: a.usize_or("in_chans", 3)?,
                num_classes: a.usize("num_classes")?,
                embed_dims: a.list("embed_dims")?,
                num_heads: a.list("num_heads")?,
                mlp_ratios: a.list_f64("mlp_ratios")?,
                qkv_bias: a.bool_or("qkv_bias", false)?,
                depths,
                attention,
                sr_ratios,
                linear: a.bool_or("linear", false)?,
                drop_path_rate: a.f64_or("drop_path_rate", 0.0)?,
                unused_norm: file == "flatten_pvt.py",
            }))
        }
        "flatten_swin.py" | "agent_swin.py" => {
            let depths = a.list("depths")?;
            let window = a.usize("window_size")?;
            let is_agent = file == "agent_swin.py";
            let (default, linear) = if is_agent {
                ("AAAB", 'A')
            } else {
                ("LLSS", 'L')
            };
            let kinds = block_letters(a.str_or("attn_type", default)?, &depths, linear)?;
            let agents = if is_agent {
                a.list("agent_num")?
            } else {
                Vec::new()
            };
            let (mut attention, mut windows) = (Vec::new(), Vec::new());
            for (i, stage) in kinds.iter().enumerate() {
                let (mut mixers, mut sizes) = (Vec::new(), Vec::new());
                for kind in stage {
                    let (mixer, w) = match kind {
                        'L' => (a.focused()?, window),
                        'A' => (agent(at(&agents, i, "agent_num")?), window),
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
            swin(&a, depths, attention, windows, SwinNaming::Microsoft)
        }
        f if f.ends_with("SwinTransformer") => {
            let depths = a.list("depths")?;
            let window = a.usize("window_size")?;
            let attention = depths
                .iter()
                .map(|&d| vec![AttentionConfig::Softmax; d])
                .collect();
            let windows = depths.iter().map(|&d| vec![window; d]).collect();
            swin(&a, depths, attention, windows, SwinNaming::Timm)
        }
        "flatten_cswin.py" | "agent_cswin.py" => {
            let depth = a.list("depth")?;
            let n = depth.len();
            let is_agent = file == "agent_cswin.py";
            let kinds = letters(
                a.str_or("attn_type", if is_agent { "AABB" } else { "LLSS" })?,
                n,
            )?;
            let split = a.list("split_size")?;
            let la_split: Vec<usize> = a
                .str_or("la_split_size", "1-2-7-7")?
                .split('-')
                .map(|s| {
                    s.parse()
                        .map_err(|_| format!("args.la_split_size: {s:?} is not a number"))
                })
                .collect::<Result<_, String>>()?;
            let agents = if is_agent {
                a.list("agent_num")?
            } else {
                Vec::new()
            };
            let (mut attention, mut splits) = (Vec::new(), Vec::new());
            for (i, kind) in kinds.iter().enumerate() {
                let (mixer, s) = match kind {
                    'L' => (a.focused()?, at(&la_split, i, "la_split_size")?),
                    'A' => (
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
        other => Err(format!("no builder for upstream model {other:?}")),
    }
}

fn vit(a: &Args, blocks: Vec<AttentionConfig>) -> Result<ModelConfig, String> {
    Ok(ModelConfig::Vit(VitConfig {
        img_size: a.usize("img_size")?,
        patch_size: a.usize("patch_size")?,
        in_chans: a.usize_or("in_chans", 3)?,
        num_classes: a.usize("num_classes")?,
        embed_dim: a.usize("embed_dim")?,
        num_heads: a.usize("num_heads")?,
        mlp_ratio: a.f64_or("mlp_ratio", 4.0)?,
        qkv_bias: a.bool_or("qkv_bias", true)?,
        drop_path_rate: a.f64_or("drop_path_rate", 0.0)?,
        blocks,
    }))
}

fn swin(
    a: &Args,
    depths: Vec<usize>,
    attention: Vec<Vec<AttentionConfig>>,
    windows: Vec<Vec<usize>>,
    naming: SwinNaming,
) -> Result<ModelConfig, String> {
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
