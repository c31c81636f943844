//! Config-driven ablations: a base run config plus sweep axes, run point by point, summarised
//! as `results.csv`, `results.md` and PNG plots.
//!
//! An experiment file is a run config (`[model]`, `[data]`, `[train]`, optionally on top of a
//! `base` file) with an `[ablation]` table:
//!
//! ```toml
//! [ablation]
//! base = "../configs/fashion_mnist_flatten.toml"  # relative to this file; optional
//! seeds = [0, 1]                                   # sets train.seed; default: the config's
//! # Named variants, each a set of overrides; every variant is crossed with the axes.
//! variants = [
//!   { name = "vanilla linear", set = { "model.attention" = { kind = "linear" } } },
//!   { name = "focused", set = { "model.attention" = { kind = "focused" } } },
//! ]
//!
//! [ablation.axes]   # every combination of these values
//! "model.attention.focusing_factor" = [2, 3, 4, 8]
//!
//! [data]
//! train_size = 10000
//! ```
//!
//! Keys are the dotted keys of `--set`. Setting a `kind` (e.g. `model.attention.kind`) replaces
//! its whole table with `{ kind = ... }` first, so the family's defaults apply and the previous
//! family's fields do not linger; `kind` axes are applied before the others.
//!
//! Each point trains in its own run directory `RUNS/<hash of the resolved config>`, so a point
//! that several experiments share runs once. A point whose directory holds `ablate.json` is
//! finished and not rerun; one with a checkpoint but no `ablate.json` is resumed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::charts::{draw_charts, Chart};
use crate::config::{from_toml, ConfigError};
use crate::metrics::EpochRow;
use crate::{checkpoint, RunConfig, TrainError, TrainOptions};

/// Why an experiment could not be read or run; names the file, key or point.
#[derive(Debug, thiserror::Error)]
pub enum AblateError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: ablation key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: point `{point}`: {source}")]
    Point {
        path: PathBuf,
        point: String,
        source: ConfigError,
    },
    #[error("point `{point}`: {source}")]
    Run { point: String, source: TrainError },
}

/// `[ablation]` of an experiment file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AblationSection {
    base: Option<PathBuf>,
    seeds: Vec<u64>,
    variants: Vec<VariantSpec>,
    axes: toml::Table,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantSpec {
    name: String,
    #[serde(default)]
    set: toml::Table,
}

/// One point of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// `variant, key=value, ...` without the seed: what seeds are averaged over.
    pub group: String,
    pub seed: Option<u64>,
    /// Overrides in the order they apply.
    pub sets: Vec<(String, toml::Value)>,
    pub config: RunConfig,
    /// Hex hash of the resolved config: the run directory's name.
    pub hash: String,
}

impl Point {
    /// The group and the seed.
    pub fn label(&self) -> String {
        match self.seed {
            Some(s) => format!("{} seed={s}", self.group),
            None => self.group.clone(),
        }
    }
}

/// An experiment read from its file: every point resolved and checked.
#[derive(Clone, Debug)]
pub struct Experiment {
    pub name: String,
    pub path: PathBuf,
    pub axes: Vec<String>,
    pub points: Vec<Point>,
}

fn file_err(path: &Path, message: impl Into<String>) -> AblateError {
    AblateError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_table(path: &Path) -> Result<toml::Table, AblateError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    text.parse::<toml::Table>()
        .map_err(|e| file_err(path, e.to_string()))
}

/// `over` merged into `base`, tables recursively.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets a dotted key in a table; a `kind` key resets its table to `{ kind = value }`.
fn set_key(doc: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("must be dotted names, e.g. model.attention.kind".into());
    }
    let mut table = doc;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let last_parent = i + 2 == parts.len();
        if last_parent && parts[parts.len() - 1] == "kind" {
            table.insert(part.to_string(), toml::Value::Table(toml::Table::new()));
        }
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is a value, not a section", parts[..=i].join(".")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// A value as it reads in a label: strings bare, the rest as TOML.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// FNV-1a, 64 bits: a stable name for a resolved config.
fn fnv1a(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Experiment {
    /// Reads an experiment file, with `sets` (`key=value`, TOML values) applied to its base
    /// config, and resolves every point; the first bad key or value is the error.
    pub fn load(path: &Path, sets: &[String]) -> Result<Experiment, AblateError> {
        let mut doc = read_table(path)?;
        let section = match doc.remove("ablation") {
            Some(v) => AblationSection::deserialize(v)
                .map_err(|e| file_err(path, format!("[ablation]: {}", e.to_string().trim())))?,
            None => {
                return Err(file_err(
                    path,
                    "no [ablation] table; see `linvit ablate --help`",
                ))
            }
        };
        let mut table = match &section.base {
            Some(base) => {
                let base = path.parent().unwrap_or(Path::new(".")).join(base);
                read_table(&base)?
            }
            None => toml::Table::new(),
        };
        merge(&mut table, doc);
        for arg in sets {
            let (key, raw) = arg
                .split_once('=')
                .ok_or_else(|| file_err(path, format!("--set {arg}: expected key=value")))?;
            let value = parse_value(raw.trim());
            set_key(&mut table, key.trim(), value)
                .map_err(|m| file_err(path, format!("--set {arg}: {m}")))?;
        }

        let key_err = |key: &str, message: String| AblateError::Key {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        // `kind` axes first, so a family's own keys apply to the right family.
        let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
        for (key, values) in &section.axes {
            let values = match values {
                toml::Value::Array(a) if !a.is_empty() => a.clone(),
                _ => return Err(key_err(key, "an axis is a non-empty list of values".into())),
            };
            axes.push((key.clone(), values));
        }
        axes.sort_by_key(|(k, _)| !k.ends_with(".kind"));
        let variants = if section.variants.is_empty() {
            vec![VariantSpec {
                name: String::new(),
                set: toml::Table::new(),
            }]
        } else {
            section.variants.clone()
        };

        let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
        for (key, values) in &axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((key.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let seeds: Vec<Option<u64>> = if section.seeds.is_empty() {
            vec![None]
        } else {
            section.seeds.iter().copied().map(Some).collect()
        };

        let mut points = Vec::new();
        for variant in &variants {
            for combo in &combos {
                for &seed in &seeds {
                    let mut sets: Vec<(String, toml::Value)> = variant
                        .set
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    sets.sort_by_key(|(k, _)| !k.ends_with(".kind"));
                    sets.extend(combo.iter().cloned());
                    if let Some(s) = seed {
                        sets.push(("train.seed".into(), toml::Value::Integer(s as i64)));
                    }
                    let mut doc = table.clone();
                    for (k, v) in &sets {
                        set_key(&mut doc, k, v.clone()).map_err(|m| key_err(k, m))?;
                    }
                    let mut group: Vec<String> = Vec::new();
                    if !variant.name.is_empty() {
                        group.push(variant.name.clone());
                    }
                    for (k, v) in combo {
                        let short = k.rsplit('.').next().unwrap_or(k);
                        group.push(format!("{short}={}", show(v)));
                    }
                    let group = if group.is_empty() {
                        "base".to_string()
                    } else {
                        group.join(", ")
                    };
                    let text = toml::to_string(&doc).map_err(|e| file_err(path, e.to_string()))?;
                    let config = from_toml(&text).map_err(|source| {
                        // An unknown key inside an axis or variant names the axis key itself.
                        match &source {
                            ConfigError::UnknownKey { key, .. }
                                if sets.iter().any(|(k, _)| k == key) =>
                            {
                                key_err(key, source.to_string())
                            }
                            _ => AblateError::Point {
                                path: path.to_path_buf(),
                                point: group.clone(),
                                source,
                            },
                        }
                    })?;
                    let hash = fnv1a(&config.to_toml());
                    points.push(Point {
                        group,
                        seed,
                        sets,
                        config,
                        hash,
                    });
                }
            }
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ablation".into());
        Ok(Experiment {
            name,
            path: path.to_path_buf(),
            axes: axes.into_iter().map(|(k, _)| k).collect(),
            points,
        })
    }

    /// The `--dry-run` listing: one line per point with its run directory and overrides.
    pub fn listing(&self, runs: &Path) -> String {
        let mut s = format!("{}: {} points\n", self.name, self.points.len());
        for (i, p) in self.points.iter().enumerate() {
            let dir = runs.join(&p.hash);
            let state = if dir.join(POINT_FILE).exists() {
                "finished"
            } else if dir.exists() {
                "started"
            } else {
                "to run"
            };
            let sets: Vec<String> = p.sets.iter().map(|(k, v)| format!("{k}={}", v)).collect();
            let _ = writeln!(
                s,
                "{:>3}  {:<44} {:<9} {}  {}",
                i + 1,
                p.label(),
                state,
                dir.display(),
                sets.join(" ")
            );
        }
        s.trim_end().to_string()
    }
}

/// `key=value` as `--set` reads it: a TOML value, else a bare string.
fn parse_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Written into a point's run directory when it is finished.
pub const POINT_FILE: &str = "ablate.json";

/// What one finished point measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    pub group: String,
    pub seed: Option<u64>,
    pub run_dir: PathBuf,
    pub epochs: usize,
    pub final_top1: Option<f64>,
    pub best_top1: Option<f64>,
    pub params: usize,
    /// Multiply-accumulates of one image.
    pub macs: u64,
    /// Mean training images per second (forward, backward, update).
    pub train_img_s: f64,
    /// Peak resident set of the process while the point trained (dataset included); `None`
    /// where the platform does not report it.
    pub peak_rss_bytes: Option<u64>,
    pub seconds: f64,
    /// Why the point stopped early (a non-finite loss), when it did; such a point is recorded
    /// and not rerun, as training is deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs (or resumes) one point unless it is finished; returns its result.
fn run_point(
    point: &Point,
    runs: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<PointResult, TrainError> {
    let dir = runs.join(&point.hash);
    let done = dir.join(POINT_FILE);
    if let Ok(text) = std::fs::read_to_string(&done) {
        if let Ok(mut r) = serde_json::from_str::<PointResult>(&text) {
            r.group = point.group.clone();
            r.seed = point.seed;
            return Ok(r);
        }
    }
    // Resets the peak resident set (Linux >= 4.0) so the point's own peak is measured.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let summary = if checkpoint::latest(&dir).ok().flatten().is_some() {
        eprintln!("resuming {}", dir.display());
        crate::resume(&dir, device, options)?
    } else {
        if dir.exists() {
            // Started but not one epoch complete: nothing to keep.
            std::fs::remove_dir_all(&dir).map_err(|e| TrainError::Io {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        }
        match crate::train(&point.config, &dir, device, options) {
            Err(e @ TrainError::NonFinite { .. }) => {
                let result = PointResult {
                    group: point.group.clone(),
                    seed: point.seed,
                    run_dir: dir.clone(),
                    epochs: 0,
                    final_top1: None,
                    best_top1: None,
                    params: 0,
                    macs: 0,
                    train_img_s: 0.0,
                    peak_rss_bytes: None,
                    seconds: 0.0,
                    failed: Some(e.to_string()),
                };
                eprintln!("point `{}` diverged: {e}", point.label());
                write_point(&done, &result)?;
                return Ok(result);
            }
            other => other?,
        }
    };
    let peak_rss_bytes = proc_status_kb("VmHWM:").map(|kb| kb * 1024);
    let (params, macs) = model_size(&dir)?;
    let result = PointResult {
        group: point.group.clone(),
        seed: point.seed,
        run_dir: dir.clone(),
        epochs: summary.epochs,
        final_top1: summary.final_val_top1,
        best_top1: summary.best_val_top1,
        params,
        macs,
        train_img_s: summary.images_per_s,
        peak_rss_bytes,
        seconds: summary.seconds,
        failed: None,
    };
    write_point(&done, &result)?;
    Ok(result)
}

fn write_point(path: &Path, result: &PointResult) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(result).expect("results serialise");
    linvit_models::checkpoint::write_atomic(path, text.as_bytes()).map_err(|e| TrainError::Io {
        path: e.path,
        reason: e.reason,
    })
}

/// Parameters and MACs of the model a run directory trained (from its resolved config).
fn model_size(dir: &Path) -> Result<(usize, u64), TrainError> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Io {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let config = from_toml(&text)?;
    let model = config.model_config(
        config.model.num_classes.unwrap_or(10),
        config.data.channels.unwrap_or(3),
    )?;
    let params = model.init(&Device::flex()).num_params();
    Ok((params, model.macs()))
}

/// Epoch rows of a run directory (`metrics.jsonl`).
fn epoch_rows(dir: &Path) -> Vec<EpochRow> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs every point in order (finished ones are read back, not rerun), then writes
/// `results.csv`, `results.md`, `accuracy_vs_throughput.png` and `curves.png` into `out`.
pub fn run_experiment(
    experiment: &Experiment,
    runs: &Path,
    out: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<Vec<PointResult>, AblateError> {
    let mut results = Vec::new();
    for (i, point) in experiment.points.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, experiment.points.len(), point.label());
        let r = run_point(point, runs, device, options).map_err(|source| AblateError::Run {
            point: point.label(),
            source,
        })?;
        results.push(r);
    }
    write_results(experiment, &results, out)?;
    Ok(results)
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Results grouped over seeds, in first-seen order.
fn groups(results: &[PointResult]) -> Vec<(String, Vec<&PointResult>)> {
    let mut out: Vec<(String, Vec<&PointResult>)> = Vec::new();
    for r in results {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, v)) => v.push(r),
            None => out.push((r.group.clone(), vec![r])),
        }
    }
    out
}

/// Writes the tables and plots of an experiment's results.
pub fn write_results(
    experiment: &Experiment,
    results: &[PointResult],
    out: &Path,
) -> Result<(), AblateError> {
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e.to_string()))?;
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
    let mut csv = String::from(
        "group,seed,epochs,final_top1,best_top1,params,macs,train_img_s,peak_rss_bytes,seconds,run_dir,failed\n",
    );
    for r in results {
        let _ = writeln!(
            csv,
            "\"{}\",{},{},{},{},{},{},{:.1},{},{:.0},{},\"{}\"",
            r.group.replace('"', "'"),
            r.seed.map(|s| s.to_string()).unwrap_or_default(),
            r.epochs,
            opt(r.final_top1),
            opt(r.best_top1),
            r.params,
            r.macs,
            r.train_img_s,
            r.peak_rss_bytes.map(|b| b.to_string()).unwrap_or_default(),
            r.seconds,
            r.run_dir.display(),
            r.failed.as_deref().unwrap_or("").replace('"', "'")
        );
    }
    let path = out.join("results.csv");
    std::fs::write(&path, csv).map_err(|e| file_err(&path, e.to_string()))?;

    let mut md = format!(
        "# {}\n\nFrom `{}`; {} points. Top-1 is the final validation accuracy, mean ± sample std over \
         seeds (n = number of seeds). MFLOPs are multiply-accumulates of one image; img/s is \
         training throughput (forward, backward, update); peak is the process's resident set \
         while the point trained.\n\n\
         | point | top-1 (%) | n | best top-1 (%) | params | MFLOPs | train img/s | peak MiB |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        experiment.name,
        experiment.path.display(),
        results.len()
    );
    let mut scatter =
        Chart::new("accuracy vs throughput", "train img/s", "final top-1 (%)").markers_only();
    let mut curves = Chart::new("validation top-1", "epoch", "top-1 (%)");
    for (group, rs) in groups(results) {
        if let Some(why) = rs.iter().find_map(|r| r.failed.as_deref()) {
            let _ = writeln!(md, "| {group} | diverged: {why} | {} | | | | | |", rs.len());
            continue;
        }
        let finals: Vec<f64> = rs.iter().filter_map(|r| r.final_top1).collect();
        let bests: Vec<f64> = rs.iter().filter_map(|r| r.best_top1).collect();
        let ips: Vec<f64> = rs.iter().map(|r| r.train_img_s).collect();
        let (m, s) = if finals.is_empty() {
            (f64::NAN, 0.0)
        } else {
            mean_std(&finals)
        };
        let (bm, _) = if bests.is_empty() {
            (f64::NAN, 0.0)
        } else {
            mean_std(&bests)
        };
        let (im, _) = mean_std(&ips);
        let peak = rs
            .iter()
            .filter_map(|r| r.peak_rss_bytes)
            .max()
            .map(|b| format!("{:.0}", b as f64 / (1u64 << 20) as f64))
            .unwrap_or("-".into());
        let _ = writeln!(
            md,
            "| {group} | {:.2} ± {:.2} | {} | {:.2} | {:.3}M | {:.2} | {:.0} | {peak} |",
            100.0 * m,
            100.0 * s,
            rs.len(),
            100.0 * bm,
            rs[0].params as f64 / 1e6,
            rs[0].macs as f64 / 1e6,
            im
        );
        // The spread over seeds as an error bar (none for one seed).
        let spread = if finals.len() > 1 { 100.0 * s } else { 0.0 };
        scatter = scatter.with_error_bars(group.clone(), vec![(im, 100.0 * m)], vec![spread]);
        // Mean validation curve over seeds.
        let mut by_epoch: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for r in &rs {
            for e in epoch_rows(&r.run_dir) {
                if let Some(v) = e.val_top1 {
                    by_epoch.entry(e.epoch).or_default().push(v);
                }
            }
        }
        let pts = by_epoch
            .into_iter()
            .map(|(e, v)| (e as f64, 100.0 * mean_std(&v).0))
            .collect();
        curves = curves.with_series(group, pts);
    }
    let path = out.join("results.md");
    std::fs::write(&path, md).map_err(|e| file_err(&path, e.to_string()))?;
    let path = out.join("accuracy_vs_throughput.png");
    draw_charts(&path, &[scatter]).map_err(|e| file_err(&path, e.to_string()))?;
    let path = out.join("curves.png");
    draw_charts(&path, &[curves]).map_err(|e| file_err(&path, e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_key_resets_its_table() {
        let mut doc: toml::Table = "[model.attention]\nkind = \"focused\"\nfocusing_factor = 4\n"
            .parse()
            .unwrap();
        set_key(&mut doc, "model.attention.kind", "linear".into()).unwrap();
        let attention = doc["model"]["attention"].as_table().unwrap();
        assert_eq!(attention.len(), 1);
        assert_eq!(attention["kind"].as_str(), Some("linear"));
    }

    #[test]
    fn merged_tables_keep_the_base_keys_they_do_not_override() {
        let mut base: toml::Table = "[train]\nepochs = 20\nlr = 0.002\n".parse().unwrap();
        merge(&mut base, "[train]\nepochs = 3\n".parse().unwrap());
        assert_eq!(base["train"]["epochs"].as_integer(), Some(3));
        assert_eq!(base["train"]["lr"].as_float(), Some(0.002));
    }

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[0.9, 0.92]);
        assert!((m - 0.91).abs() < 1e-12);
        assert!((s - 0.0141421356).abs() < 1e-6);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }
}
