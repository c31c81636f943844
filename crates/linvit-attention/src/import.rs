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

fn describe(missing: &[String], unused: &[String], mismatched: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing keys: {}", missing.join(", ")));
    }
    if !unused.is_empty() {
        parts.push(format!("unexpected keys: {}", unused.join(", ")));
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
    load_with(module, path, renames, derived, None)
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
    let targets = module
        .collect(None, None, true)
        .into_iter()
        .filter_map(|t| {
            let shape: Vec<usize> = t.shape.iter().copied().collect();
            rule(&t.name).map(|r| (t.name, (r, shape)))
        })
        .collect();
    let resizer = Resizer::new(targets);
    let result = load_with(module, path, renames, &[], Some(&resizer));
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    for (path, outcome) in resizer.log() {
        let key = to_upstream(&path, renames);
        match outcome {
            Ok(what) => done.push(format!("{key}: {what}")),
            Err(why) => refused.push(format!("{key}: {why}")),
        }
    }
    match result {
        Ok(applied) => Ok((applied, done)),
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

fn load_with<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    renames: &[Rename],
    derived: &[String],
    resizer: Option<&Resizer>,
) -> Result<ApplyResult, ImportError> {
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
        regex_check(pattern).map_err(read_err)?;
    }
    let renames = &renames[..];
    let is_pth = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pth" | "pt" | "bin")
    );
    let mut apply = |tensors: Vec<PackTensor>| {
        // PyTorch layouts first (Linear transposed, LayerNorm names), then any resizing.
        let adapter: Box<dyn ModuleAdapter> = match resizer {
            Some(r) => Box::new(PyTorchToBurnAdapter.chain(r.clone())),
            None => Box::new(PyTorchToBurnAdapter),
        };
        module.apply(tensors, None, Some(adapter), true)
    };
    let result = if is_pth {
        // The authors save `{"model": state_dict}`; timm and others save the bare state dict.
        let nested = read_pth(path, renames, Some("model")).map_err(read_err)?;
        let tensors = if nested.is_empty() {
            read_pth(path, renames, None).map_err(read_err)?
        } else {
            nested
        };
        apply(tensors)
    } else {
        let mut store = SafetensorsStore::from_file(path).map_indices_contiguous(false);
        for (from, to) in renames {
            store = store.with_key_remapping(from.as_str(), to.as_str());
        }
        let tensors = store
            .get_all_tensors()
            .map_err(|e| read_err(e.to_string()))?
            .values()
            .cloned()
            .collect();
        apply(tensors)
    };
    check(result, path, names, derived)
}

/// Reports what did not fit, under the checkpoint's own (upstream) key names.
fn check(
    result: ApplyResult,
    path: &Path,
    renames: &[Rename],
    derived: &[String],
) -> Result<ApplyResult, ImportError> {
    let upstream = |ours: &String| to_upstream(ours, renames);
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| upstream(p)).collect();
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

fn regex_check(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("bad key pattern {pattern:?}: {e}"))
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
