//! Loading the authors' PyTorch weights (safetensors or `.pth`) into our modules through
//! burn-store, with an explicit name map and a report of every key that does not fit.
//!
//! Our field names equal the upstream keys, so the map for the attention modules is empty; the
//! backbones add their own renames. PyTorch layouts are converted by burn-store's
//! `PyTorchToBurnAdapter` (Linear weights transposed, LayerNorm `weight/bias` -> `gamma/beta`).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ApplyError, ApplyResult, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};

use crate::resize::{Resizer, Rule};

/// Buffers upstream keeps in its state dicts that we rebuild from the config instead.
pub const DERIVED_BUFFERS: [&str; 3] = [
    "relative_position_index",
    "attn_mask",
    "num_batches_tracked",
];

/// A rename of a key prefix: `(upstream, ours)`, e.g. `("block1.", "stages.0.blocks.")`.
/// Rules apply in order, each to the result of the previous ones.
pub type Rename = (String, String);

/// Our parameter path for an upstream key.
pub fn to_ours(key: &str, renames: &[Rename]) -> String {
    let mut key = key.to_string();
    for (upstream, ours) in renames {
        if let Some(rest) = key.strip_prefix(upstream.as_str()) {
            key = format!("{ours}{rest}");
        }
    }
    key
}

/// The upstream key for one of our parameter paths (the inverse of [`to_ours`]).
pub fn to_upstream(path: &str, renames: &[Rename]) -> String {
    let mut path = path.to_string();
    for (upstream, ours) in renames.iter().rev() {
        if let Some(rest) = path.strip_prefix(ours.as_str()) {
            path = format!("{upstream}{rest}");
        }
    }
    path
}

fn regex_rules(renames: &[Rename]) -> Vec<(String, String)> {
    renames
        .iter()
        .map(|(upstream, ours)| {
            (
                format!("^{}", regex::escape(upstream)),
                ours.replace('$', "$$"),
            )
        })
        .collect()
}

/// Why an upstream checkpoint did not load.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read checkpoint: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {}", describe(.missing, .unused, .mismatched))]
    Mismatch {
        path: PathBuf,
        /// Parameters of the module the checkpoint lacks (as upstream would name them).
        missing: Vec<String>,
        /// Checkpoint keys no parameter takes (upstream names).
        unused: Vec<String>,
        /// Keys present on both sides with another shape or dtype.
        mismatched: Vec<String>,
    },
}

/// At most this many keys of each kind are named; the rest are counted.
const NAMED_KEYS: usize = 12;

fn some_of(keys: &[String]) -> String {
    let mut text = keys[..keys.len().min(NAMED_KEYS)].join(", ");
    if keys.len() > NAMED_KEYS {
        text.push_str(&format!(" and {} more", keys.len() - NAMED_KEYS));
    }
    text
}

fn describe(missing: &[String], unused: &[String], mismatched: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing keys: {}", some_of(missing)));
    }
    if !unused.is_empty() {
        parts.push(format!("unexpected keys: {}", some_of(unused)));
    }
    if !mismatched.is_empty() {
        parts.push(mismatched.join("; "));
    }
    parts.join("; ")
}

/// Loads an upstream checkpoint into `module`, failing on any missing, unused or mis-shaped key.
/// `.pth` files are read as PyTorch pickles (`{"model": state_dict}` or a bare state dict);
/// anything else as safetensors.
pub fn load_upstream<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    renames: &[Rename],
) -> Result<ApplyResult, ImportError> {
    load_upstream_except(module, path, renames, &[])
}

/// As [`load_upstream`], allowing the checkpoint keys in `derived` to go unused: tensors the
/// module rebuilds or shares instead of loading (a tied `lm_head.weight`).
pub fn load_upstream_except<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    renames: &[Rename],
    derived: &[String],
) -> Result<ApplyResult, ImportError> {
    load_with(module, path, renames, derived, None, &|_| false).map(|(applied, _)| applied)
}

/// As [`load_upstream`], resizing the resolution-dependent parameters (those `rule` names, see
/// [`crate::resize`]) whose checkpoint shape differs from the module's: weights trained at one
/// resolution load into a model built for another. Returns what was resized, per upstream key.
pub fn load_upstream_resized<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    renames: &[Rename],
    rule: impl Fn(&str) -> Option<Rule>,
) -> Result<(ApplyResult, Vec<String>), ImportError> {
    let loaded = load_checkpoint(module, path, renames, rule, |_| false)?;
    Ok((loaded.applied, loaded.resized))
}

/// What [`load_checkpoint`] did besides loading, per key (the checkpoint's names).
#[derive(Debug)]
pub struct Loaded {
    pub applied: ApplyResult,
    /// Resized tensors, with what was done.
    pub resized: Vec<String>,
    /// Checkpoint tensors left out for another shape, with both shapes; the module keeps its
    /// own (freshly initialised) values there.
    pub fresh: Vec<String>,
}

/// Loads a checkpoint into `module` for fine-tuning: the authors' `.pth`/`.safetensors`
/// (upstream or timm names, through `renames`; PyTorch layouts converted) or a linvit burnpack
/// (`.bpk`, our own names). As [`load_upstream_resized`], resolution-dependent parameters are
/// resized; beyond it, checkpoint tensors whose shape differs from the module's and whose path
/// `fresh` accepts (a classifier head trained for another class count) are left out, as the
/// authors' `--finetune` deletes them. Any other missing, unused or mis-shaped key is an error.
pub fn load_checkpoint<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    renames: &[Rename],
    rule: impl Fn(&str) -> Option<Rule>,
    fresh: impl Fn(&str) -> bool,
) -> Result<Loaded, ImportError> {
    let targets = module
        .collect(None, None, true)
        .into_iter()
        .filter_map(|t| {
            let shape: Vec<usize> = t.shape.iter().copied().collect();
            rule(&t.name).map(|r| (t.name, (r, shape)))
        })
        .collect();
    let resizer = Resizer::new(targets);
    let result = load_with(module, path, renames, &[], Some(&resizer), &fresh);
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    for (path, outcome) in resizer.log() {
        let key = to_upstream(&path, renames);
        match outcome {
            Ok(what) => done.push(format!("{key}: {what}")),
            Err(why) => refused.push(format!("{key}: {why}")),
        }
    }
    match result {
        Ok((applied, fresh)) => Ok(Loaded {
            applied,
            resized: done,
            fresh,
        }),
        // A refused resize surfaces as a shape mismatch; say why it was refused.
        Err(ImportError::Mismatch {
            path,
            missing,
            unused,
            mut mismatched,
        }) => {
            mismatched.extend(refused);
            Err(ImportError::Mismatch {
                path,
                missing,
                unused,
                mismatched,
            })
        }
        Err(e) => Err(e),
    }
}

/// Our parameter path without Burn's enum-variant segments (`Pvt.stages.0.attn.Agent.dwc` ->
/// `stages.0.attn.dwc`): what a burnpack of an enum module stores, as the upstream-style path
/// the rest of loading uses. Variant names are the only path segments that start with a capital
/// letter; field names are snake_case.
pub fn without_variants(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.starts_with(|c: char| c.is_ascii_uppercase()))
        .collect::<Vec<_>>()
        .join(".")
}

/// Splits off the tensors `fresh` accepts whose shape is not the module's (either orientation:
/// PyTorch's Linear weights are transposed on the way in); returns what was left out, as our
/// path and a line saying why.
fn leave_out_fresh<M: Module + ModuleSnapshot>(
    module: &M,
    tensors: &mut Vec<PackTensor>,
    fresh: &dyn Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let shapes: std::collections::BTreeMap<String, Vec<usize>> = module
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name, t.shape.iter().copied().collect()))
        .collect();
    let mut left_out = Vec::new();
    tensors.retain(|t| {
        let theirs: Vec<usize> = t.shape.iter().copied().collect();
        let Some(ours) = shapes.get(&t.name).filter(|_| fresh(&t.name)) else {
            return true;
        };
        let mut reversed = theirs.clone();
        reversed.reverse();
        if *ours == theirs || *ours == reversed {
            return true;
        }
        left_out.push((t.name.clone(), format!("{theirs:?} -> {ours:?}")));
        false
    });
    left_out
}

fn load_with<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    renames: &[Rename],
    derived: &[String],
    resizer: Option<&Resizer>,
    fresh: &dyn Fn(&str) -> bool,
) -> Result<(ApplyResult, Vec<String>), ImportError> {
    let read_err = |reason: String| ImportError::Read {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(read_err("no such file".into()));
    }
    let names = renames;
    let renames = regex_rules(renames);
    for (pattern, _) in &renames {
        // burn-store panics on a bad pattern; ours are escaped, but fail cleanly all the same.
        regex_check(pattern).map_err(|e| read_err(format!("bad key pattern {pattern:?}: {e}")))?;
    }
    let renames = &renames[..];
    let extension = path.extension().and_then(|e| e.to_str());
    let burnpack = extension == Some("bpk");
    let mut tensors = match extension {
        // The authors save `{"model": state_dict}`; timm and others save the bare state dict.
        Some("pth" | "pt" | "bin") => {
            let nested = read_pth(path, renames, Some("model")).map_err(read_err)?;
            if nested.is_empty() {
                read_pth(path, renames, None).map_err(read_err)?
            } else {
                nested
            }
        }
        // Ours: already our names and layouts, with the enum variants in the paths.
        Some("bpk") => burn::store::BurnpackStore::from_file(path)
            .get_all_tensors()
            .map_err(|e| read_err(e.to_string()))?
            .values()
            .cloned()
            .map(|mut t| {
                t.name = without_variants(&t.name);
                t
            })
            .collect(),
        _ => {
            let mut store = SafetensorsStore::from_file(path).map_indices_contiguous(false);
            for (from, to) in renames {
                store = store.with_key_remapping(from.as_str(), to.as_str());
            }
            store
                .get_all_tensors()
                .map_err(|e| read_err(e.to_string()))?
                .values()
                .cloned()
                .collect()
        }
    };
    let left_out = leave_out_fresh(module, &mut tensors, fresh);
    // PyTorch layouts first (Linear transposed, LayerNorm names), then any resizing.
    let adapter: Option<Box<dyn ModuleAdapter>> = match (burnpack, resizer) {
        (false, Some(r)) => Some(Box::new(PyTorchToBurnAdapter.chain(r.clone()))),
        (false, None) => Some(Box::new(PyTorchToBurnAdapter)),
        (true, Some(r)) => Some(Box::new(r.clone())),
        (true, None) => None,
    };
    let result = module.apply(tensors, None, adapter, true);
    let fresh_keys: Vec<String> = left_out.iter().map(|(k, _)| k.clone()).collect();
    let described = left_out
        .into_iter()
        .map(|(k, why)| format!("{}: {why}", to_upstream(&k, names)))
        .collect();
    check(result, path, names, derived, &fresh_keys).map(|r| (r, described))
}

/// Reports what did not fit, under the checkpoint's own (upstream) key names.
fn check(
    result: ApplyResult,
    path: &Path,
    renames: &[Rename],
    derived: &[String],
    left_out: &[String],
) -> Result<ApplyResult, ImportError> {
    let upstream = |ours: &String| to_upstream(ours, renames);
    let missing: Vec<String> = result
        .missing
        .iter()
        .filter(|(p, _)| !left_out.contains(p))
        .map(|(p, _)| upstream(p))
        .collect();
    let unused: Vec<String> = result
        .unused
        .iter()
        .filter(|k| !DERIVED_BUFFERS.iter().any(|b| k.ends_with(b)))
        .map(upstream)
        .filter(|k| !derived.contains(k))
        .collect();
    let mismatched: Vec<String> = result.errors.iter().map(ApplyError::to_string).collect();
    if missing.is_empty() && unused.is_empty() && mismatched.is_empty() {
        Ok(result)
    } else {
        Err(ImportError::Mismatch {
            path: path.to_path_buf(),
            missing,
            unused,
            mismatched,
        })
    }
}

fn regex_check(pattern: &str) -> Result<(), regex::Error> {
    regex::Regex::new(pattern).map(|_| ())
}

/// The tensors of a PyTorch pickle, under `top_level_key` when given (empty when the file has
/// no such key), keys renamed.
fn read_pth(
    path: &Path,
    renames: &[(String, String)],
    top_level_key: Option<&str>,
) -> Result<Vec<PackTensor>, String> {
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    if let Some(key) = top_level_key {
        store = store.with_top_level_key(key);
    }
    for (from, to) in renames {
        store = store.with_key_remapping(from.as_str(), to.as_str());
    }
    match store.get_all_tensors() {
        Ok(tensors) => Ok(tensors.values().cloned().collect()),
        // A file without the key is read again as a bare state dict.
        Err(_) if top_level_key.is_some() => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_apply_in_order_and_invert() {
        let renames: Vec<Rename> = vec![
            ("layers.1.downsample.".into(), "layers.0.downsample.".into()),
            ("layers.2.downsample.".into(), "layers.1.downsample.".into()),
            ("head.fc.".into(), "head.".into()),
        ];
        for (up, ours) in [
            (
                "layers.2.downsample.norm.weight",
                "layers.1.downsample.norm.weight",
            ),
            (
                "layers.1.downsample.reduction.weight",
                "layers.0.downsample.reduction.weight",
            ),
            ("head.fc.bias", "head.bias"),
            (
                "layers.0.blocks.1.attn.qkv.weight",
                "layers.0.blocks.1.attn.qkv.weight",
            ),
        ] {
            assert_eq!(to_ours(up, &renames), ours);
            assert_eq!(to_upstream(ours, &renames), up);
        }
    }
}
