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
//! finished and not rerun; one with a checkpoint but no `ablate.json` is resumed. Points may
//! train side by side (`jobs`), but their throughput is not read from training: once every
//! point has trained, each point's training step is timed alone ([`crate::bench`]) and kept in
//! its `ablate.json`, beside the point's place in each experiment that used it. [`report`]
//! rebuilds the tables and plots from those records alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::bench::{interleaved_steps, median, Rounds, TrainStep};
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

/// A dotted key that cannot be set in a TOML table.
#[derive(Debug, thiserror::Error)]
enum SetKeyError {
    #[error("must be dotted names, e.g. model.attention.kind")]
    NotDotted,
    #[error("`{0}` is a value, not a section")]
    NotASection(String),
}

/// Sets a dotted key in a table; a `kind` key resets its table to `{ kind = value }`.
fn set_key(doc: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), SetKeyError> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(SetKeyError::NotDotted);
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
            .ok_or_else(|| SetKeyError::NotASection(parts[..=i].join(".")))?;
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
                    points.push(resolve_point(path, &table, variant, combo, seed)?);
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

/// One point of an experiment: `table` (the base config) with `variant`'s overrides, then the
/// axis values of `combo`, then `seed`, resolved and checked.
fn resolve_point(
    path: &Path,
    table: &toml::Table,
    variant: &VariantSpec,
    combo: &[(String, toml::Value)],
    seed: Option<u64>,
) -> Result<Point, AblateError> {
    let key_err = |key: &str, message: String| AblateError::Key {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
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
        set_key(&mut doc, k, v.clone()).map_err(|m| key_err(k, m.to_string()))?;
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
            ConfigError::UnknownKey { key, .. } if sets.iter().any(|(k, _)| k == key) => {
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
    Ok(Point {
        group,
        seed,
        sets,
        config,
        hash,
    })
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

/// Where a finished point sits in an experiment: with it, `linvit ablate --report` rebuilds an
/// experiment's tables and plots from run directories alone. A run directory that several
/// experiments share holds one entry per experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// The experiment's name (its file's stem) and file, as the run named it.
    pub experiment: String,
    pub path: PathBuf,
    /// The point's place in the experiment (from 0) and the experiment's number of points.
    pub index: usize,
    pub points: usize,
    pub group: String,
    pub seed: Option<u64>,
}

/// The quiet benchmark of a point's training step ([`crate::bench::TrainStep`]): run after
/// every point of the experiment has trained, the points interleaved
/// ([`crate::bench::interleaved_steps`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    pub batch: usize,
    /// Median step time over `steps` steps in `rounds` rounds (0 and 0 in records written
    /// before interleaving, which timed one point at a time).
    pub step_ms: f64,
    pub img_s: f64,
    #[serde(default)]
    pub steps: usize,
    #[serde(default)]
    pub rounds: usize,
}

/// What one finished point measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    pub run_dir: PathBuf,
    pub epochs: usize,
    pub final_top1: Option<f64>,
    pub best_top1: Option<f64>,
    pub params: usize,
    /// Multiply-accumulates of one image.
    pub macs: u64,
    /// Mean training images per second over the run itself (data loading, evaluation pauses
    /// excluded). It shares the machine with whatever else ran; [`PointResult::step`] does not.
    pub train_img_s: f64,
    /// Peak resident set of the process while the point trained (dataset included); `None`
    /// where the platform does not report it, or where points trained side by side (`jobs > 1`).
    pub peak_rss_bytes: Option<u64>,
    /// Training wall clock, seconds.
    pub seconds: f64,
    /// Why the point stopped early (a non-finite loss), when it did; such a point is recorded
    /// and not rerun, as training is deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepTiming>,
    #[serde(default)]
    pub memberships: Vec<Membership>,
}

/// How `run_experiment` runs its points.
#[derive(Clone, Debug)]
pub struct AblateOptions {
    pub train: TrainOptions,
    /// Points trained side by side (each on its own thread). The step benchmark always runs
    /// alone, after the training. Above 1, a point's numbers may differ from a one-at-a-time
    /// run by float rounding (the points share flex's thread pool, so reductions may split
    /// differently); 1 is deterministic.
    pub jobs: usize,
    /// Time every point's training step again, also where its record already has a timing.
    pub rebench: bool,
    /// The step benchmark's budget per point.
    pub budget: Rounds,
}

impl Default for AblateOptions {
    fn default() -> Self {
        AblateOptions {
            train: TrainOptions::default(),
            jobs: 1,
            rebench: false,
            budget: STEP_BUDGET,
        }
    }
}

/// The step benchmark of a point: at least 3 s of steps in 8 rounds, interleaved with the
/// experiment's other points.
pub const STEP_BUDGET: Rounds = Rounds {
    rounds: 8,
    seconds: 3.0,
};

fn io_err(path: &Path, e: impl ToString) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// A finished point's record, or `None` where the directory holds none.
fn read_point(dir: &Path) -> Result<Option<PointResult>, TrainError> {
    let path = dir.join(POINT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| io_err(&path, format!("not a point record: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path, e)),
    }
}

/// Trains (or resumes) one point and records it; `measure_peak` where it trains alone.
fn train_point(
    point: &Point,
    dir: &Path,
    device: &Device,
    options: &TrainOptions,
    measure_peak: bool,
) -> Result<PointResult, TrainError> {
    // Resets the peak resident set (Linux >= 4.0) so the point's own peak is measured.
    if measure_peak {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    let summary = if checkpoint::latest(dir).ok().flatten().is_some() {
        eprintln!("resuming {}", dir.display());
        crate::resume(dir, device, options)
    } else {
        if dir.exists() {
            // Started but not one epoch complete: nothing to keep.
            std::fs::remove_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        crate::train(&point.config, dir, device, options)
    };
    let result = match summary {
        Err(e @ TrainError::NonFinite { .. }) => {
            eprintln!("point `{}` diverged: {e}", point.label());
            PointResult {
                run_dir: dir.to_path_buf(),
                epochs: 0,
                final_top1: None,
                best_top1: None,
                params: 0,
                macs: 0,
                train_img_s: 0.0,
                peak_rss_bytes: None,
                seconds: 0.0,
                failed: Some(e.to_string()),
                step: None,
                memberships: Vec::new(),
            }
        }
        Err(e) => return Err(e),
        Ok(summary) => {
            let (_, config) = run_config(dir)?;
            PointResult {
                run_dir: dir.to_path_buf(),
                epochs: summary.epochs,
                final_top1: summary.final_val_top1,
                best_top1: summary.best_val_top1,
                params: config.init(&Device::flex()).num_params(),
                macs: config.macs(),
                train_img_s: summary.images_per_s,
                peak_rss_bytes: if measure_peak {
                    crate::bench::proc_status_kb("VmHWM:").map(|kb| kb * 1024)
                } else {
                    None
                },
                seconds: summary.seconds,
                failed: None,
                step: None,
                memberships: Vec::new(),
            }
        }
    };
    write_point(dir, &result)?;
    Ok(result)
}

fn write_point(dir: &Path, result: &PointResult) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(result).expect("results serialise");
    linvit_models::checkpoint::write_atomic(&dir.join(POINT_FILE), text.as_bytes()).map_err(|e| {
        TrainError::Io {
            path: e.path,
            reason: e.reason,
        }
    })
}

/// A run directory's resolved config and the model it trained, read once.
fn run_config(dir: &Path) -> Result<(RunConfig, linvit_models::ModelConfig), TrainError> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let config = from_toml(&text)?;
    let model = config.model_config(
        config.model.num_classes.unwrap_or(10),
        config.data.channels.unwrap_or(3),
    )?;
    Ok((config, model))
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

/// Trains every unfinished point (`options.jobs` at a time), then times each point's training
/// step alone where its record has no timing yet (or `options.rebench`), records the point's
/// place in this experiment, and writes `results.csv`, `results.md`,
/// `accuracy_vs_throughput.png` and `curves.png` into `out`.
pub fn run_experiment(
    experiment: &Experiment,
    runs: &Path,
    out: &Path,
    device: &Device,
    options: &AblateOptions,
) -> Result<Vec<PointResult>, AblateError> {
    let run_err = |point: &Point| {
        let point = point.label();
        move |source| AblateError::Run { point, source }
    };
    let total = experiment.points.len();
    let mut todo = Vec::new();
    for (i, point) in experiment.points.iter().enumerate() {
        if read_point(&runs.join(&point.hash))
            .map_err(run_err(point))?
            .is_none()
        {
            todo.push(i);
        } else {
            eprintln!("[{}/{total}] {}: finished", i + 1, point.label());
        }
    }
    let jobs = options.jobs.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let train_all = || -> Result<(), AblateError> {
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Some(&i) = todo.get(k) else {
                return Ok(());
            };
            let point = &experiment.points[i];
            eprintln!("[{}/{total}] {}", i + 1, point.label());
            let dir = runs.join(&point.hash);
            train_point(point, &dir, device, &options.train, jobs == 1).map_err(run_err(point))?;
        }
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs).map(|_| scope.spawn(train_all)).collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a training thread panicked"))
            .collect::<Result<Vec<()>, AblateError>>()
    })?;

    let mut results = Vec::new();
    for point in &experiment.points {
        let r = read_point(&runs.join(&point.hash))
            .map_err(run_err(point))?
            .expect("every point was trained above");
        results.push(r);
    }
    let retime = time_steps(experiment, runs, device, options, &mut results)?;
    for (i, point) in experiment.points.iter().enumerate() {
        let dir = runs.join(&point.hash);
        let r = &mut results[i];
        let mut changed = retime.contains(&i);
        let member = Membership {
            experiment: experiment.name.clone(),
            path: experiment.path.clone(),
            index: i,
            points: total,
            group: point.group.clone(),
            seed: point.seed,
        };
        // One entry per experiment file and point label; a changed file updates its entry.
        let same = |m: &Membership| {
            m.path == member.path && m.group == member.group && m.seed == member.seed
        };
        match r.memberships.iter_mut().find(|m| same(m)) {
            Some(m) if *m == member => {}
            Some(m) => {
                *m = member;
                changed = true;
            }
            None => {
                r.memberships.push(member);
                changed = true;
            }
        }
        if changed {
            write_point(&dir, r).map_err(run_err(point))?;
        }
    }
    let rows: Vec<Row> = experiment
        .points
        .iter()
        .zip(&results)
        .map(|(p, r)| Row {
            group: p.group.clone(),
            seed: p.seed,
            dir: runs.join(&p.hash),
            result: r.clone(),
        })
        .collect();
    write_results(&experiment.name, &experiment.path, &rows, out)?;
    Ok(results)
}

/// Times the training step of every finished point whose record has no timing yet (every
/// one with `options.rebench`), interleaved; returns the indices it timed. A run directory that
/// several points share is timed once.
fn time_steps(
    experiment: &Experiment,
    runs: &Path,
    device: &Device,
    options: &AblateOptions,
    results: &mut [PointResult],
) -> Result<Vec<usize>, AblateError> {
    let todo: Vec<usize> = (0..results.len())
        .filter(|&i| {
            let r = &results[i];
            r.failed.is_none() && (r.step.is_none() || options.rebench)
        })
        .collect();
    let mut dirs: Vec<&str> = Vec::new();
    for &i in &todo {
        let hash = experiment.points[i].hash.as_str();
        if !dirs.contains(&hash) {
            dirs.push(hash);
        }
    }
    if dirs.is_empty() {
        return Ok(Vec::new());
    }
    eprintln!(
        "timing the training step of {} points, interleaved ({} rounds, {} s each)",
        dirs.len(),
        options.budget.rounds,
        options.budget.seconds
    );
    // Each point's config is read once; its model is built afresh every round.
    let configs = dirs
        .iter()
        .map(|d| {
            run_config(&runs.join(d)).map_err(|source| AblateError::Run {
                point: d.to_string(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut times = interleaved_steps(dirs.len(), options.budget, |k| {
        let (run, model) = &configs[k];
        TrainStep::new(model, run.train.batch_size, run.train.precision, device)
            .with_frozen(&run.train)
            .map_err(|e| AblateError::Run {
                point: dirs[k].to_string(),
                source: e.into(),
            })
    })?;
    for &i in &todo {
        let k = dirs
            .iter()
            .position(|d| *d == experiment.points[i].hash)
            .expect("every point to time has its directory");
        let batch = configs[k].0.train.batch_size;
        let step_ms = median(&mut times[k]);
        results[i].step = Some(StepTiming {
            batch,
            step_ms,
            img_s: batch as f64 / (step_ms / 1e3),
            steps: times[k].len(),
            rounds: options.budget.rounds,
        });
    }
    Ok(todo)
}

/// Where an experiment's tables go unless `--out` says otherwise: next to its file, in a folder
/// named after it.
pub fn default_out(path: &Path, name: &str) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).join(name)
}

/// Rebuilds the tables and plots of every experiment with points among `dirs` (run directories,
/// or folders holding them) from the directories alone; trains and times nothing. Every
/// experiment met must have all its points there. `out` (one experiment only) replaces the
/// default folder. Returns each experiment's folder.
pub fn report(dirs: &[PathBuf], out: Option<&Path>) -> Result<Vec<PathBuf>, AblateError> {
    let mut runs = Vec::new();
    for dir in dirs {
        if dir.join(POINT_FILE).is_file() {
            runs.push(dir.clone());
            continue;
        }
        let entries = std::fs::read_dir(dir).map_err(|e| file_err(dir, e.to_string()))?;
        let mut inside: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(POINT_FILE).is_file())
            .collect();
        if inside.is_empty() {
            return Err(file_err(
                dir,
                format!("no {POINT_FILE}: not a finished run directory, nor a folder of them"),
            ));
        }
        inside.sort();
        runs.extend(inside);
    }
    // experiment file -> (name, number of points, rows by index)
    let mut experiments: BTreeMap<PathBuf, (String, usize, BTreeMap<usize, Row>)> = BTreeMap::new();
    for dir in &runs {
        let r = read_point(dir)
            .map_err(|e| file_err(dir, e.to_string()))?
            .expect("checked above");
        if r.memberships.is_empty() {
            return Err(file_err(
                &dir.join(POINT_FILE),
                "records no experiment (written before `ablate --report` existed); run `linvit ablate` on its experiment once to add it",
            ));
        }
        for m in &r.memberships {
            let entry = experiments
                .entry(m.path.clone())
                .or_insert_with(|| (m.experiment.clone(), m.points, BTreeMap::new()));
            entry.1 = entry.1.max(m.points);
            let row = Row {
                group: m.group.clone(),
                seed: m.seed,
                dir: dir.clone(),
                result: r.clone(),
            };
            if let Some(other) = entry.2.insert(m.index, row) {
                if other.result.run_dir != r.run_dir {
                    return Err(file_err(
                        dir,
                        format!(
                            "point {} of {} is also {}; rerun `linvit ablate` on the experiment",
                            m.index + 1,
                            m.path.display(),
                            other.result.run_dir.display()
                        ),
                    ));
                }
            }
        }
    }
    if out.is_some() && experiments.len() > 1 {
        return Err(file_err(
            &dirs[0],
            format!(
                "--out takes one experiment; these directories hold {}",
                experiments.len()
            ),
        ));
    }
    let mut written = Vec::new();
    for (path, (name, points, rows)) in experiments {
        let missing: Vec<String> = (0..points)
            .filter(|i| !rows.contains_key(i))
            .map(|i| (i + 1).to_string())
            .collect();
        if !missing.is_empty() {
            return Err(file_err(
                &path,
                format!(
                    "points {} of {points} are not among the given run directories",
                    missing.join(", ")
                ),
            ));
        }
        let folder = out.map_or_else(|| default_out(&path, &name), Path::to_path_buf);
        let rows: Vec<Row> = rows.into_values().collect();
        write_results(&name, &path, &rows, &folder)?;
        written.push(folder);
    }
    Ok(written)
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

/// A point as its experiment's tables show it.
#[derive(Clone, Debug)]
struct Row {
    /// The point's label without the seed: rows with the same group are averaged.
    group: String,
    seed: Option<u64>,
    /// Where the run directory is now (its record keeps the path it trained in).
    dir: PathBuf,
    result: PointResult,
}

/// Rows grouped over seeds, in first-seen order.
fn groups(rows: &[Row]) -> Vec<(String, Vec<&Row>)> {
    let mut out: Vec<(String, Vec<&Row>)> = Vec::new();
    for row in rows {
        match out.iter_mut().find(|(g, _)| *g == row.group) {
            Some((_, v)) => v.push(row),
            None => out.push((row.group.clone(), vec![row])),
        }
    }
    out
}

/// `results.csv`: one line per point and seed.
fn results_csv(rows: &[Row]) -> String {
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
    let mut csv = String::from(
        "group,seed,epochs,final_top1,best_top1,params,macs,step_img_s,step_ms,step_batch,train_seconds,train_img_s,peak_rss_bytes,run_dir,failed\n",
    );
    for Row {
        group,
        seed,
        result: r,
        ..
    } in rows
    {
        let step = r.step.as_ref();
        let _ = writeln!(
            csv,
            "\"{}\",{},{},{},{},{},{},{},{},{},{:.0},{:.1},{},{},\"{}\"",
            group.replace('"', "'"),
            seed.map(|s| s.to_string()).unwrap_or_default(),
            r.epochs,
            opt(r.final_top1),
            opt(r.best_top1),
            r.params,
            r.macs,
            step.map(|s| format!("{:.1}", s.img_s)).unwrap_or_default(),
            step.map(|s| format!("{:.3}", s.step_ms))
                .unwrap_or_default(),
            step.map(|s| s.batch.to_string()).unwrap_or_default(),
            r.seconds,
            r.train_img_s,
            r.peak_rss_bytes.map(|b| b.to_string()).unwrap_or_default(),
            r.run_dir.display(),
            r.failed.as_deref().unwrap_or("").replace('"', "'")
        );
    }
    csv
}

/// A group's seeds summarised: what its line of `results.md` and its point on the plot show.
struct GroupStats {
    /// Final top-1: mean and sample std, in %; how many seeds had one.
    top1: (f64, f64, usize),
    best_top1: f64,
    /// Step img/s: mean and std over the seeds' timings, and how many were timed.
    step: (f64, f64, usize),
    wall_s: f64,
    peak_mib: Option<f64>,
    params: usize,
    macs: u64,
}

impl GroupStats {
    /// The statistics of a group's seeds, or why the group diverged (a seed's failure).
    fn of<'a>(members: &[&'a Row]) -> Result<GroupStats, &'a str> {
        let rs: Vec<&PointResult> = members.iter().map(|m| &m.result).collect();
        if let Some(why) = rs.iter().find_map(|r| r.failed.as_deref()) {
            return Err(why);
        }
        let stat = |xs: Vec<f64>| {
            let n = xs.len();
            let (m, s) = if xs.is_empty() {
                (f64::NAN, 0.0)
            } else {
                mean_std(&xs)
            };
            (m, s, n)
        };
        let (m, s, n) = stat(rs.iter().filter_map(|r| r.final_top1).collect());
        let (best, _, _) = stat(rs.iter().filter_map(|r| r.best_top1).collect());
        Ok(GroupStats {
            top1: (100.0 * m, 100.0 * s, n),
            best_top1: 100.0 * best,
            step: stat(
                rs.iter()
                    .filter_map(|r| r.step.as_ref().map(|s| s.img_s))
                    .collect(),
            ),
            wall_s: mean_std(&rs.iter().map(|r| r.seconds).collect::<Vec<_>>()).0,
            peak_mib: rs
                .iter()
                .filter_map(|r| r.peak_rss_bytes)
                .max()
                .map(|b| b as f64 / (1u64 << 20) as f64),
            params: rs[0].params,
            macs: rs[0].macs,
        })
    }

    /// The group's line of `results.md`.
    fn md_row(&self, group: &str, n: usize) -> String {
        let (m, s, _) = self.top1;
        let step = match self.step {
            (_, _, 0) => "-".to_string(),
            (im, _, 1) => format!("{im:.0}"),
            (im, istd, _) => format!("{im:.0} ± {istd:.0}"),
        };
        let peak = self
            .peak_mib
            .map(|p| format!("{p:.0}"))
            .unwrap_or("-".into());
        format!(
            "| {group} | {m:.2} ± {s:.2} | {n} | {:.2} | {:.3}M | {:.2} | {step} | {:.0} | {peak} |",
            self.best_top1,
            self.params as f64 / 1e6,
            self.macs as f64 / 1e6,
            self.wall_s,
        )
    }

    /// The plot's point (step img/s, top-1) and its error bar (the spread over seeds, none for
    /// one seed); `None` where no seed was timed.
    fn point(&self) -> Option<((f64, f64), f64)> {
        let (m, s, n) = self.top1;
        let spread = if n > 1 { s } else { 0.0 };
        (self.step.2 > 0).then_some(((self.step.0, m), spread))
    }
}

/// The mean validation top-1 (%) per epoch over a group's seeds.
fn mean_curve(members: &[&Row]) -> Vec<(f64, f64)> {
    let mut by_epoch: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for m in members {
        for e in epoch_rows(&m.dir) {
            if let Some(v) = e.val_top1 {
                by_epoch.entry(e.epoch).or_default().push(v);
            }
        }
    }
    by_epoch
        .into_iter()
        .map(|(e, v)| (e as f64, 100.0 * mean_std(&v).0))
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<(), AblateError> {
    std::fs::write(path, text).map_err(|e| file_err(path, e.to_string()))
}

/// Writes the tables and plots of an experiment (`name`, from the file `path`).
fn write_results(name: &str, path: &Path, rows: &[Row], out: &Path) -> Result<(), AblateError> {
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e.to_string()))?;
    write_file(&out.join("results.csv"), &results_csv(rows))?;
    let mut md = format!(
        "# {name}\n\nFrom `{}`; {} points. Top-1 is the final validation accuracy, mean ± sample \
         std over seeds (n = number of seeds). MFLOPs are multiply-accumulates of one image. \
         Step img/s is the training step (forward, backward, AdamW update) of the point's model \
         at its batch size, timed after all points trained, the points interleaved in rounds: \
         the median step of at least 3 s, mean ± std over the seeds' timings. Train wall clock is the whole run's, seconds \
         (mean over seeds). Peak is the process's resident set while the point trained.\n\n\
         | point | top-1 (%) | n | best top-1 (%) | params | MFLOPs | step img/s | train wall clock (s) | peak MiB |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        path.display(),
        rows.len()
    );
    let mut scatter = Chart::new(
        "accuracy vs throughput",
        "training step img/s",
        "final top-1 (%)",
    )
    .markers_only();
    let mut curves = Chart::new("validation top-1", "epoch", "top-1 (%)");
    for (group, members) in groups(rows) {
        match GroupStats::of(&members) {
            Err(why) => {
                let n = members.len();
                let _ = writeln!(md, "| {group} | diverged: {why} | {n} | | | | | | |");
            }
            Ok(stats) => {
                let _ = writeln!(md, "{}", stats.md_row(&group, members.len()));
                if let Some((at, spread)) = stats.point() {
                    scatter = scatter.with_error_bars(group.clone(), vec![at], vec![spread]);
                }
                curves = curves.with_series(group, mean_curve(&members));
            }
        }
    }
    write_file(&out.join("results.md"), &md)?;
    let file = out.join("accuracy_vs_throughput.png");
    draw_charts(&file, &[scatter]).map_err(|e| file_err(&file, e.to_string()))?;
    let file = out.join("curves.png");
    draw_charts(&file, &[curves]).map_err(|e| file_err(&file, e.to_string()))?;
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
