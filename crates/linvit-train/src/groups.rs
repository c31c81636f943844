//! Parameter groups of a run: which parameters train (`train.freeze`) and at what learning-rate
//! scale (`train.layer_decay`). Users name parameters by their path without Burn's enum-variant
//! segments (`stages.0.blocks.1.attn.qkv.weight`), as the authors' state dicts do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use linvit_attention::import::without_variants;
use linvit_models::Model;

use crate::config::{ConfigError, TrainConfig};

/// How each parameter trains, keyed by its full path (enum variants included, as the optimizer
/// keys it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamGroups {
    /// Learning-rate scale per path; a path not here trains at the full rate.
    pub lr_scale: BTreeMap<String, f64>,
    /// Paths that do not train.
    pub frozen: BTreeSet<String>,
    /// What to print at the start of a run: one line per group; empty when every parameter
    /// trains at the full rate.
    pub summary: String,
}

/// Every float parameter's full path and element count, in the order the model visits them
/// (its fields' order, which is the forward order).
struct InOrder(Vec<(String, usize)>, Vec<String>);

impl ModuleVisitor for InOrder {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.1.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.1.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .push((self.1.join("."), param.val().shape().num_elements()));
    }
}

/// The block a parameter belongs to: its path up to `blocks.N`, or `None` outside blocks.
fn block_of(path: &str) -> Option<&str> {
    let at = path.find("blocks.")?;
    let digits = path[at + 7..].find(|c: char| !c.is_ascii_digit())?;
    (digits > 0).then(|| &path[..at + 7 + digits])
}

/// The depth of every parameter, in visiting order, and the number of blocks `L`: 0 before the
/// first block (patch embedding, position embedding, class token), `i + 1` in the `i`-th block
/// counted over all stages, and between blocks (downsampling, a stage's norm) the depth of the
/// block they feed; after the last block (final norm, head) `L + 1`.
fn depths(params: &[(String, usize)]) -> (Vec<usize>, usize) {
    let mut blocks: Vec<&str> = Vec::new();
    let mut out = Vec::with_capacity(params.len());
    for (path, _) in params {
        match block_of(path) {
            Some(b) => {
                if blocks.last() != Some(&b) {
                    blocks.push(b);
                }
                out.push(blocks.len());
            }
            None if blocks.is_empty() => out.push(0),
            None => out.push(blocks.len() + 1),
        }
    }
    (out, blocks.len())
}

/// Whether `pattern` (`*` wildcards; without one, the path itself or anything under it) matches.
fn matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('*') {
        return path == pattern
            || path
                .strip_prefix(pattern)
                .is_some_and(|rest| rest.starts_with('.'));
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !path.starts_with(first) || path.len() < first.len() + last.len() || !path.ends_with(last) {
        return false;
    }
    let mut rest = &path[first.len()..path.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the `freeze` patterns freeze `path`: the last pattern that matches decides.
fn frozen_by(patterns: &[String], path: &str) -> bool {
    patterns
        .iter()
        .rev()
        .find_map(|p| match p.strip_prefix('!') {
            Some(p) => matches(p, path).then_some(false),
            None => matches(p, path).then_some(true),
        })
        .unwrap_or(false)
}

fn millions(n: usize) -> String {
    format!("{:.2}M", n as f64 / 1e6)
}

/// The groups `train` asks for on `model`; a freeze pattern that matches no parameter is an
/// error naming it (a typo would otherwise train everything).
pub fn param_groups(model: &Model, train: &TrainConfig) -> Result<ParamGroups, ConfigError> {
    let mut visitor = InOrder(Vec::new(), Vec::new());
    model.visit(&mut visitor);
    let params = visitor.0;
    let short: Vec<String> = params.iter().map(|(p, _)| without_variants(p)).collect();
    for pattern in &train.freeze {
        let bare = pattern.trim_start_matches('!');
        if !short.iter().any(|p| matches(bare, p)) {
            let mut tops: Vec<&str> = short
                .iter()
                .map(|p| p.split('.').next().unwrap_or(p))
                .collect();
            tops.dedup();
            return Err(ConfigError::Invalid {
                key: "train.freeze".into(),
                message: format!(
                    "{pattern:?} matches no parameter; the model's top-level modules are {}",
                    tops.join(", ")
                ),
            });
        }
    }
    let mut groups = ParamGroups::default();
    let (depth, blocks) = depths(&params);
    let decay = train.layer_decay.filter(|d| *d < 1.0);
    // depth -> (tensors, elements, first path) of the parameters that train
    let mut by_depth: BTreeMap<usize, (usize, usize, &str)> = BTreeMap::new();
    let (mut n_frozen, mut frozen_elems, mut train_elems) = (0, 0, 0);
    for (i, (path, n)) in params.iter().enumerate() {
        if frozen_by(&train.freeze, &short[i]) {
            groups.frozen.insert(path.clone());
            n_frozen += 1;
            frozen_elems += n;
            continue;
        }
        train_elems += n;
        if let Some(d) = decay {
            let scale = d.powi((blocks + 1 - depth[i]) as i32);
            groups.lr_scale.insert(path.clone(), scale);
            let e = by_depth.entry(depth[i]).or_insert((0, 0, &short[i]));
            e.0 += 1;
            e.1 += n;
        }
    }
    if train.freeze.is_empty() && decay.is_none() {
        return Ok(groups);
    }
    let s = &mut groups.summary;
    let _ = writeln!(
        s,
        "parameters: {} tensors ({}) train, {n_frozen} ({}) frozen",
        params.len() - n_frozen,
        millions(train_elems),
        millions(frozen_elems)
    );
    if let Some(d) = decay {
        for (depth, (tensors, elems, first)) in &by_depth {
            let _ = writeln!(
                s,
                "  depth {depth:>2}: lr x {:.4} (layer_decay {d}), {tensors} tensors ({}), from {first}",
                d.powi((blocks + 1 - depth) as i32),
                millions(*elems)
            );
        }
    }
    Ok(groups)
}

struct Freeze<'a> {
    path: Vec<String>,
    frozen: &'a BTreeSet<String>,
}

impl ModuleMapper for Freeze<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.frozen.contains(&self.path.join(".")) {
            param.set_require_grad(false)
        } else {
            param
        }
    }
}

/// `model` with the frozen parameters taken out of the backward pass: they get no gradient,
/// hence no optimizer state and no update.
pub fn freeze<M: Module>(model: M, groups: &ParamGroups) -> M {
    if groups.frozen.is_empty() {
        return model;
    }
    model.map(&mut Freeze {
        path: Vec::new(),
        frozen: &groups.frozen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_paths_and_the_last_match_decides() {
        assert!(matches("head", "head.weight"));
        assert!(!matches("head", "header.weight"));
        assert!(matches("*", "blocks.0.attn.qkv.weight"));
        assert!(matches("blocks.*.attn.*", "blocks.11.attn.qkv.bias"));
        assert!(!matches("blocks.*.attn.*", "blocks.11.mlp.fc1.bias"));
        assert!(matches("*.bias", "stages.0.norm.bias"));
        let probe = ["*".to_string(), "!head".to_string()];
        assert!(frozen_by(&probe, "stages.0.blocks.0.attn.q.weight"));
        assert!(!frozen_by(&probe, "head.bias"));
        assert!(!frozen_by(&[], "head.bias"));
    }

    #[test]
    fn depth_is_the_block_a_parameter_feeds() {
        let params: Vec<(String, usize)> = [
            "patch_embed.proj.weight",
            "layers.0.blocks.0.attn.qkv.weight",
            "layers.0.blocks.1.mlp.fc1.weight",
            "layers.0.downsample.reduction.weight",
            "layers.1.blocks.0.norm1.gamma",
            "layers.1.blocks.10.norm1.gamma",
            "norm.gamma",
            "head.weight",
        ]
        .iter()
        .map(|p| (p.to_string(), 1))
        .collect();
        let (d, blocks) = depths(&params);
        assert_eq!(blocks, 4);
        assert_eq!(d, vec![0, 1, 2, 3, 3, 4, 5, 5]);
        assert_eq!(block_of("blocks.3.attn.q.weight"), Some("blocks.3"));
        assert_eq!(block_of("blocks_x.weight"), None);
    }
}
