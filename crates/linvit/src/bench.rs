//! `linvit bench attention` and `linvit bench model`: forward and training throughput, latency
//! and peak memory, per attention kind across token counts and per preset across resolutions,
//! on any `--device`.
//!
//! Each point runs in its own child process (the same binary with `--in-process` and one
//! point), so its peak memory is measured alone and an allocation failure becomes an `oom` row
//! instead of ending the benchmark. Memory is what the device can report honestly:
//! - flex (host memory): the child's peak resident set above its resident set just before the
//!   timed calls (`/proc/self/clear_refs` resets the peak between phases; inputs excluded);
//! - pooled devices (wgpu, cuda): bytes the device's memory pools reserve after the phase, above
//!   what they held before it.
//!
//! The `memory` field of the report says which was used.

use crate::CliError;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Tensor};
use linvit_attention::ops::{merge_heads, split_heads};
use linvit_attention::Kind;
use linvit_attention::{AttentionConfig, MixerShape, TokenLayout};
use linvit_models::presets;
use linvit_train::bench::{median, proc_status_kb, time_ms, Budget, TrainStep};
use linvit_train::charts::{draw_charts, Chart};
use linvit_train::config::Precision;
use linvit_train::optim::cast_params;
use serde::{Deserialize, Serialize};

/// Softmax written out as `softmax(q k^T * s) v` with the full score matrix: the textbook path
/// the fused one is compared with. Bench-only kind.
pub const SOFTMAX_NAIVE: &str = "softmax_naive";

/// The config of a bench kind name; the error lists the known ones.
pub fn kind_config(name: &str) -> Result<Option<AttentionConfig>, CliError> {
    if name == SOFTMAX_NAIVE {
        return Ok(None);
    }
    let kind: Kind = name
        .parse()
        .map_err(|e| cli_error!("--kinds: {e}, {SOFTMAX_NAIVE}"))?;
    Ok(Some(kind.default_config()))
}

/// The machine a benchmark ran on, recorded in its JSON: numbers from another CPU or
/// instruction set are not comparable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU model (`/proc/cpuinfo`), else the architecture.
    pub cpu: String,
    pub cores: usize,
    /// The instruction set linvit's CPU kernels ran: the widest this CPU has, or what
    /// `LINVIT_ISA` narrowed it to (`portable`, `avx2`, `avx512`). Burn's own ops choose theirs.
    pub isa: String,
}

impl Machine {
    pub fn this() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, name)| name.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            isa: linvit_attention::isa::selected().name().to_string(),
        }
    }
}

/// Peak-memory probe for one phase.
struct MemoryProbe {
    device: Device,
    base: u64,
}

/// `MemAvailable` of the machine, bytes.
fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// How [`MemoryProbe`] measures on `device`.
pub fn memory_method(device: &Device) -> &'static str {
    if device.memory_pool_usage().is_some() {
        "device memory pools: bytes reserved after the phase above those reserved before it"
    } else if proc_status_kb("VmHWM:").is_some() {
        "peak resident set of the point's process above its resident set before the phase (inputs excluded)"
    } else {
        "not measured on this platform"
    }
}

impl MemoryProbe {
    fn start(device: &Device) -> Self {
        let _ = device.sync();
        let base = match device.memory_pool_usage() {
            Some(u) => u.bytes_reserved,
            None => {
                // Freed memory the allocator keeps (see `keep_freed_memory` in main.rs) goes
                // back first, so reuse of it does not hide this phase's allocations.
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                // SAFETY: malloc_trim only returns free heap memory to the kernel.
                unsafe {
                    libc::malloc_trim(0);
                }
                // Resets VmHWM to the current resident set (Linux >= 4.0).
                let _ = std::fs::write("/proc/self/clear_refs", "5");
                proc_status_kb("VmRSS:").unwrap_or(0) * 1024
            }
        };
        MemoryProbe {
            device: device.clone(),
            base,
        }
    }

    fn peak(&self) -> Option<u64> {
        let _ = self.device.sync();
        let now = match self.device.memory_pool_usage() {
            Some(u) => u.bytes_reserved,
            None => proc_status_kb("VmHWM:")? * 1024,
        };
        Some(now.saturating_sub(self.base))
    }
}

/// One attention point: a kind at a token count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttentionRow {
    pub kind: String,
    /// Tokens per image (a square grid).
    pub tokens: usize,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Multiply-accumulates of one call of the mixing (whole batch, projections excluded).
    pub macs: u64,
    /// Median latency of one inference call (no autodiff).
    pub forward_ms: Option<f64>,
    /// Median time of `backward()` after an autodiff forward (gradients of q, k, v and the
    /// mixer's own parameters).
    pub backward_ms: Option<f64>,
    /// Median autodiff forward + backward.
    pub train_ms: Option<f64>,
    /// Tokens (batch included) per second of the inference call.
    pub forward_tokens_per_s: Option<f64>,
    /// Peak memory of the inference calls.
    pub forward_peak_bytes: Option<u64>,
    /// Peak memory of forward + backward (the larger of the two phases).
    pub peak_bytes: Option<u64>,
    /// The point did not fit in memory: its quadratic buffers would take more than half of the
    /// available memory (estimated before running, so a shared machine is never pushed into
    /// swapping or the OOM killer), or an allocation failed, or the kernel killed the process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom: bool,
    /// Why a phase was not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `linvit bench attention` as resolved from the command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttentionBench {
    pub kinds: Vec<String>,
    pub tokens: Vec<usize>,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Also time forward + backward.
    pub backward: bool,
    pub budget: Budget,
}

/// What `linvit bench attention --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttentionReport {
    pub device: String,
    #[serde(flatten, default)]
    pub machine: Machine,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub memory: String,
    pub rows: Vec<AttentionRow>,
}

/// Side of the square grid of `tokens`.
fn grid_side(tokens: usize) -> Result<usize, CliError> {
    let s = (tokens as f64).sqrt().round() as usize;
    if s == 0 || s * s != tokens {
        return Err(cli_error!(
            "--tokens: {tokens} is not a square number of tokens (196 = 14x14, 784, 3136, 12544, ...)"
        ));
    }
    Ok(s)
}

impl AttentionBench {
    /// Checks the arguments before any work; the error names the flag.
    pub fn validate(&self) -> Result<(), CliError> {
        if self.kinds.is_empty() || self.tokens.is_empty() {
            return Err("--kinds and --tokens need at least one value each".into());
        }
        for k in &self.kinds {
            kind_config(k)?;
        }
        for &t in &self.tokens {
            grid_side(t)?;
        }
        if self.batch == 0 || self.heads == 0 || self.head_dim == 0 {
            return Err("--batch, --heads and --head-dim must be at least 1".into());
        }
        Ok(())
    }

    fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Mixing MACs of one call, batch included.
    fn macs(&self, kind: &str, tokens: usize) -> u64 {
        let side = grid_side(tokens).unwrap_or(1);
        let c = self.dim() as u64;
        let n = tokens as u64;
        let layout = TokenLayout::grid(side, side);
        let per_image = match kind_config(kind).ok().flatten() {
            Some(config) => {
                let shape = MixerShape::new(self.dim(), self.heads, [side, side]);
                // `macs` counts the fused qkv and proj projections too; the bench leaves them out.
                config.macs(&shape, layout) - 4 * n * c * c
            }
            None => 2 * n * n * c,
        };
        per_image * self.batch as u64
    }

    /// Bytes of the biggest quadratic buffers a phase keeps alive at once, when it has any:
    /// `[B, h, N, N]` scores, times the copies the path holds (naive forward: scores and
    /// probabilities; autodiff: those and their gradients).
    fn quadratic_bytes(&self, kind: &str, tokens: usize, train: bool, device: &Device) -> u64 {
        let scores = (self.batch * self.heads * tokens * tokens * 4) as u64;
        let fused_forward = *device == Device::flex();
        match (kind, train) {
            ("softmax", false) if fused_forward => 0,
            ("softmax", false) | (SOFTMAX_NAIVE, false) => 2 * scores,
            ("softmax", true) | (SOFTMAX_NAIVE, true) => 4 * scores,
            _ => 0,
        }
    }

    /// Runs one point in this process.
    pub fn run_point(&self, kind: &str, tokens: usize, device: &Device) -> AttentionRow {
        let side = grid_side(tokens).expect("validated");
        let layout = TokenLayout::grid(side, side);
        let mut row = AttentionRow {
            kind: kind.into(),
            tokens,
            batch: self.batch,
            heads: self.heads,
            head_dim: self.head_dim,
            macs: self.macs(kind, tokens),
            ..Default::default()
        };
        let available = available_bytes().unwrap_or(u64::MAX);
        let c = self.dim();
        let config = kind_config(kind).expect("validated");
        let shape = MixerShape::new(c, self.heads, [side, side]);
        let heads = self.heads;
        let input = |device: &Device| {
            [0, 1, 2].map(|_| {
                Tensor::<3>::random(
                    [self.batch, tokens, c],
                    Distribution::Normal(0.0, 1.0),
                    device,
                )
            })
        };
        let naive = |q: Tensor<3>, k: Tensor<3>, v: Tensor<3>| {
            let scale = (self.head_dim as f64).powf(-0.5);
            let scores = split_heads(q, heads)
                .mul_scalar(scale)
                .matmul(split_heads(k, heads).swap_dims(2, 3));
            merge_heads(softmax(scores, 3).matmul(split_heads(v, heads)))
        };

        let need = self.quadratic_bytes(kind, tokens, false, device);
        if need > available / 2 {
            row.oom = true;
            row.note = Some(format!(
                "forward not run: its score buffers need an estimated {}, more than half of the {} available",
                gib(need),
                gib(available)
            ));
            return row;
        }
        {
            let mixer = config.as_ref().map(|c| c.init(&shape, device));
            let [q, k, v] = input(device);
            let probe = MemoryProbe::start(device);
            let ms = time_ms(self.budget, || {
                let out = match &mixer {
                    Some(m) => m.mix(q.clone(), k.clone(), v.clone(), layout),
                    None => naive(q.clone(), k.clone(), v.clone()),
                };
                let _ = device.sync();
                drop(out);
            });
            row.forward_ms = Some(ms);
            row.forward_tokens_per_s = Some((self.batch * tokens) as f64 / (ms / 1e3));
            row.forward_peak_bytes = probe.peak();
            row.peak_bytes = row.forward_peak_bytes;
        }
        if !self.backward {
            return row;
        }
        let need = self.quadratic_bytes(kind, tokens, true, device);
        if need > available / 2 {
            row.oom = true;
            row.note = Some(format!(
                "forward + backward not run: its score buffers and their gradients need an estimated {}, more than half of the {} available",
                gib(need),
                gib(available)
            ));
            return row;
        }
        let ad = device.clone().autodiff();
        let mixer = config.as_ref().map(|c| c.init(&shape, &ad));
        let [q, k, v] = input(&ad).map(|t| t.require_grad());
        let cotangent =
            Tensor::<3>::random([self.batch, tokens, c], Distribution::Normal(0.0, 1.0), &ad);
        let probe = MemoryProbe::start(device);
        let (mut forward, mut backward) = (Vec::new(), Vec::new());
        let train_ms = time_ms(self.budget, || {
            let t = Instant::now();
            let out = match &mixer {
                Some(m) => m.mix(q.clone(), k.clone(), v.clone(), layout),
                None => naive(q.clone(), k.clone(), v.clone()),
            };
            let loss = (out * cotangent.clone()).sum();
            let _ = ad.sync();
            let mid = Instant::now();
            let grads = loss.backward();
            let _ = ad.sync();
            drop(grads);
            forward.push(mid.duration_since(t).as_secs_f64() * 1e3);
            backward.push(mid.elapsed().as_secs_f64() * 1e3);
        });
        row.train_ms = Some(train_ms);
        row.backward_ms = Some(median(&mut backward[1..].to_vec()));
        row.peak_bytes = match (row.forward_peak_bytes, probe.peak()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        row
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// How a child process ended, as a row note; `true` when it looks like running out of memory.
fn child_failure(status: &std::process::ExitStatus, stderr: &str) -> (bool, String) {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) {
            return (
                true,
                "the point's process was killed (SIGKILL, the kernel's out-of-memory killer)"
                    .into(),
            );
        }
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string();
    let lower = stderr.to_lowercase();
    let oom = [
        "memory allocation",
        "out of memory",
        "outofmemory",
        "allocation failed",
        "failed to allocate",
        "capacity overflow",
    ]
    .iter()
    .any(|w| lower.contains(w));
    (
        oom,
        format!("the point's process failed ({status}): {last}"),
    )
}

/// Runs the whole attention benchmark: each point in a child process of `exe` when given, else
/// in this process. Progress goes to stderr.
pub fn run_attention(
    bench: &AttentionBench,
    device_name: &str,
    device: &Device,
    exe: Option<&Path>,
) -> AttentionReport {
    let mut rows = Vec::new();
    for &tokens in &bench.tokens {
        for kind in &bench.kinds {
            eprintln!("bench attention: {kind} at {tokens} tokens");
            let row = match exe {
                None => bench.run_point(kind, tokens, device),
                Some(exe) => attention_child(bench, kind, tokens, device_name, exe),
            };
            eprintln!("  {}", row_summary(&row));
            rows.push(row);
        }
    }
    AttentionReport {
        device: device_name.into(),
        machine: Machine::this(),
        batch: bench.batch,
        heads: bench.heads,
        head_dim: bench.head_dim,
        memory: memory_method(device).into(),
        rows,
    }
}

fn row_summary(r: &AttentionRow) -> String {
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.3} ms")).unwrap_or("-".into());
    format!(
        "forward {} backward {} peak {}{}",
        ms(r.forward_ms),
        ms(r.backward_ms),
        r.peak_bytes
            .map(|b| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64))
            .unwrap_or("-".into()),
        if r.oom { " (out of memory)" } else { "" }
    )
}

fn attention_child(
    bench: &AttentionBench,
    kind: &str,
    tokens: usize,
    device_name: &str,
    exe: &Path,
) -> AttentionRow {
    let mut args: Vec<String> = [
        "bench",
        "attention",
        "--in-process",
        "--json",
        "--kinds",
        kind,
        "--device",
        device_name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--tokens".into(),
        tokens.to_string(),
        "--batch".into(),
        bench.batch.to_string(),
        "--heads".into(),
        bench.heads.to_string(),
        "--head-dim".into(),
        bench.head_dim.to_string(),
        "--seconds".into(),
        bench.budget.seconds.to_string(),
        "--min-reps".into(),
        bench.budget.min_reps.to_string(),
    ]);
    if !bench.backward {
        args.push("--no-backward".into());
    }
    let failed = |oom: bool, note: String| AttentionRow {
        kind: kind.into(),
        tokens,
        batch: bench.batch,
        heads: bench.heads,
        head_dim: bench.head_dim,
        macs: bench.macs(kind, tokens),
        oom,
        note: Some(note),
        ..Default::default()
    };
    match Command::new(exe).args(&args).output() {
        Err(e) => failed(false, format!("cannot start {}: {e}", exe.display())),
        Ok(out) if out.status.success() => {
            match serde_json::from_slice::<AttentionReport>(&out.stdout) {
                Ok(mut r) if r.rows.len() == 1 => r.rows.remove(0),
                _ => failed(false, "the point's process printed no report".into()),
            }
        }
        Ok(out) => {
            let (oom, note) = child_failure(&out.status, &String::from_utf8_lossy(&out.stderr));
            failed(oom, note)
        }
    }
}

/// Writes the report as JSON (pretty) to `path`.
pub fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<(), CliError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| cli_error!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::from(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| cli_error!("{}: {e}", path.display()))
}

/// `time vs tokens` (log-log) per kind: forward, and forward + backward when measured.
pub fn plot_attention(report: &AttentionReport, path: &Path) -> Result<(), CliError> {
    let mut kinds: Vec<&str> = Vec::new();
    for r in &report.rows {
        if !kinds.contains(&r.kind.as_str()) {
            kinds.push(&r.kind);
        }
    }
    let title = |what: &str| {
        format!(
            "{what}, B{} h{} d{} on {}",
            report.batch, report.heads, report.head_dim, report.device
        )
    };
    let mut forward = Chart::new(&title("forward"), "tokens", "ms").log_log();
    let mut train = Chart::new(&title("forward + backward"), "tokens", "ms").log_log();
    for kind in kinds {
        let pts = |f: fn(&AttentionRow) -> Option<f64>| -> Vec<(f64, f64)> {
            report
                .rows
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| f(r).map(|v| (r.tokens as f64, v)))
                .collect()
        };
        forward = forward.with_series(kind, pts(|r| r.forward_ms));
        let t = pts(|r| r.train_ms);
        if !t.is_empty() {
            train = train.with_series(kind, t);
        }
    }
    let charts = if train.series.is_empty() {
        vec![forward]
    } else {
        vec![forward, train]
    };
    draw_charts(path, &charts).map_err(|e| CliError::from(e.to_string()))
}

/// The text table of an attention report.
pub fn attention_table(report: &AttentionReport) -> String {
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or("-".into());
    let mut s = format!(
        "device {}, batch {}, heads {}, head dim {}\n{:<14} {:>7} {:>12} {:>12} {:>12} {:>11}  note\n",
        report.device,
        report.batch,
        report.heads,
        report.head_dim,
        "kind",
        "tokens",
        "forward ms",
        "backward ms",
        "train ms",
        "peak MiB"
    );
    for r in &report.rows {
        s.push_str(&format!(
            "{:<14} {:>7} {:>12} {:>12} {:>12} {:>11}  {}\n",
            r.kind,
            r.tokens,
            opt(r.forward_ms),
            opt(r.backward_ms),
            opt(r.train_ms),
            r.peak_bytes
                .map(|b| format!("{:.1}", b as f64 / (1u64 << 20) as f64))
                .unwrap_or("-".into()),
            match (r.oom, &r.note) {
                (true, Some(n)) => format!("out of memory: {n}"),
                (true, None) => "out of memory".into(),
                (false, Some(n)) => n.clone(),
                (false, None) => String::new(),
            }
        ));
    }
    s.trim_end().to_string()
}

/// One model point: a preset at a resolution.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    pub preset: String,
    pub resolution: usize,
    pub batch: usize,
    pub params: usize,
    /// Multiply-accumulates of one image.
    pub macs: u64,
    /// Arguments changed from the preset so it builds at this resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjusted: Option<String>,
    /// Median latency of an inference batch.
    pub forward_ms: Option<f64>,
    pub forward_img_s: Option<f64>,
    /// Median time of a training step: autodiff forward, cross entropy, backward, AdamW update.
    pub train_step_ms: Option<f64>,
    pub train_img_s: Option<f64>,
    pub forward_peak_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `linvit bench model` as resolved from the command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelBench {
    pub presets: Vec<String>,
    pub resolutions: Vec<usize>,
    pub batch: usize,
    pub train: bool,
    pub budget: Budget,
    /// Forward and backward dtype; training keeps f32 master weights (as `train.precision`).
    pub precision: Precision,
}

/// What `linvit bench model --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelReport {
    pub device: String,
    #[serde(flatten, default)]
    pub machine: Machine,
    pub batch: usize,
    #[serde(default)]
    pub precision: Precision,
    pub memory: String,
    /// `auto` (fused kernels and fused autodiff nodes on flex) or `ops` (Burn's ops only).
    #[serde(default)]
    pub path: linvit_attention::Path,
    pub rows: Vec<ModelRow>,
}

/// The preset's arguments at `resolution`: `img_size`, and a Swin window scaled with it where the
/// preset ties the window to the input (window = side/32 for softmax Swin, side/4 for the global
/// linear stages of FLatten/Agent-Swin), as the papers' 384 variants do.
fn resolution_args(
    preset: &presets::Preset,
    resolution: usize,
) -> (serde_json::Value, Option<String>) {
    let args = preset.resolved_arguments();
    let size = args.get("img_size").and_then(|v| v.as_u64()).unwrap_or(224) as usize;
    let mut out = serde_json::json!({ "img_size": resolution });
    let mut adjusted = None;
    if let Some(w) = args.get("window_size").and_then(|v| v.as_u64()) {
        let w = w as usize;
        for ratio in [32, 4] {
            if w * ratio == size && resolution % ratio == 0 && resolution != size {
                out["window_size"] = (resolution / ratio).into();
                adjusted = Some(format!("window_size {w} -> {}", resolution / ratio));
                break;
            }
        }
    }
    (out, adjusted)
}

impl ModelBench {
    pub fn validate(&self) -> Result<(), CliError> {
        if self.presets.is_empty() || self.resolutions.is_empty() {
            return Err("--presets and --resolutions need at least one value each".into());
        }
        for p in &self.presets {
            presets::preset(p).map_err(|e| cli_error!("--presets: {e}"))?;
        }
        if self.batch == 0 || self.resolutions.contains(&0) {
            return Err("--batch and --resolutions must be at least 1".into());
        }
        Ok(())
    }

    /// Runs one point in this process.
    pub fn run_point(&self, name: &str, resolution: usize, device: &Device) -> ModelRow {
        let mut row = ModelRow {
            preset: name.into(),
            resolution,
            batch: self.batch,
            ..Default::default()
        };
        let preset = presets::preset(name).expect("validated");
        let (args, adjusted) = resolution_args(preset, resolution);
        row.adjusted = adjusted;
        let config = match preset
            .config_with(&args)
            .and_then(|c| c.validate().map(|_| c))
        {
            Ok(c) => c,
            Err(e) => {
                row.note = Some(format!("does not build at {resolution}: {e}"));
                return row;
            }
        };
        row.macs = config.macs();
        let b = self.batch;
        let images = |device: &Device| {
            Tensor::<4>::random(
                [b, 3, resolution, resolution],
                Distribution::Normal(0.0, 1.0),
                device,
            )
        };
        let half = self.precision.half();
        {
            let model = config.init(device);
            row.params = model.num_params();
            let (model, x) = match half {
                None => (model, images(device)),
                Some(h) => (cast_params(model, h), images(device).cast(h)),
            };
            let probe = MemoryProbe::start(device);
            let ms = time_ms(self.budget, || {
                let out = model.forward(x.clone());
                let _ = device.sync();
                drop(out);
            });
            row.forward_ms = Some(ms);
            row.forward_img_s = Some(b as f64 / (ms / 1e3));
            row.forward_peak_bytes = probe.peak();
            row.peak_bytes = row.forward_peak_bytes;
        }
        if !self.train {
            return row;
        }
        let mut step = TrainStep::new(&config, b, self.precision, device);
        let probe = MemoryProbe::start(device);
        let (ms, img_s) = step.time(self.budget);
        row.train_step_ms = Some(ms);
        row.train_img_s = Some(img_s);
        row.peak_bytes = match (row.forward_peak_bytes, probe.peak()) {
            (Some(a), Some(p)) => Some(a.max(p)),
            (a, p) => a.or(p),
        };
        row
    }
}

fn model_child(
    bench: &ModelBench,
    preset: &str,
    resolution: usize,
    device_name: &str,
    exe: &Path,
) -> ModelRow {
    let mut args: Vec<String> = [
        "bench",
        "model",
        "--in-process",
        "--json",
        "--presets",
        preset,
        "--device",
        device_name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--resolutions".into(),
        resolution.to_string(),
        "--batch".into(),
        bench.batch.to_string(),
        "--seconds".into(),
        bench.budget.seconds.to_string(),
        "--min-reps".into(),
        bench.budget.min_reps.to_string(),
    ]);
    if !bench.train {
        args.push("--no-train".into());
    }
    args.extend(["--precision".into(), bench.precision.name().into()]);
    args.extend([
        "--path".into(),
        linvit_attention::Path::current().name().into(),
    ]);
    let failed = |oom: bool, note: String| ModelRow {
        preset: preset.into(),
        resolution,
        batch: bench.batch,
        oom,
        note: Some(note),
        ..Default::default()
    };
    match Command::new(exe).args(&args).output() {
        Err(e) => failed(false, format!("cannot start {}: {e}", exe.display())),
        Ok(out) if out.status.success() => {
            match serde_json::from_slice::<ModelReport>(&out.stdout) {
                Ok(mut r) if r.rows.len() == 1 => r.rows.remove(0),
                _ => failed(false, "the point's process printed no report".into()),
            }
        }
        Ok(out) => {
            let (oom, note) = child_failure(&out.status, &String::from_utf8_lossy(&out.stderr));
            failed(oom, note)
        }
    }
}

/// Runs the whole model benchmark (child processes of `exe` when given).
pub fn run_model(
    bench: &ModelBench,
    device_name: &str,
    device: &Device,
    exe: Option<&Path>,
) -> ModelReport {
    let mut rows = Vec::new();
    for preset in &bench.presets {
        for &resolution in &bench.resolutions {
            eprintln!("bench model: {preset} at {resolution}x{resolution}");
            let row = match exe {
                None => bench.run_point(preset, resolution, device),
                Some(exe) => model_child(bench, preset, resolution, device_name, exe),
            };
            eprintln!(
                "  forward {} img/s, train step {} img/s{}",
                row.forward_img_s
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or("-".into()),
                row.train_img_s
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or("-".into()),
                row.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            rows.push(row);
        }
    }
    ModelReport {
        device: device_name.into(),
        machine: Machine::this(),
        batch: bench.batch,
        precision: bench.precision,
        memory: memory_method(device).into(),
        path: linvit_attention::Path::current(),
        rows,
    }
}

pub fn model_table(report: &ModelReport) -> String {
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or("-".into());
    let mut s = format!(
        "device {}, batch {}, path {}\n{:<18} {:>5} {:>8} {:>8} {:>11} {:>12} {:>10}  note\n",
        report.device,
        report.batch,
        report.path.name(),
        "preset",
        "res",
        "GMACs",
        "fwd img/s",
        "train img/s",
        "fwd ms/batch",
        "peak MiB"
    );
    for r in &report.rows {
        s.push_str(&format!(
            "{:<18} {:>5} {:>8.2} {:>8} {:>11} {:>12} {:>10}  {}\n",
            r.preset,
            r.resolution,
            r.macs as f64 / 1e9,
            opt(r.forward_img_s),
            opt(r.train_img_s),
            opt(r.forward_ms),
            r.peak_bytes
                .map(|b| format!("{:.0}", b as f64 / (1u64 << 20) as f64))
                .unwrap_or("-".into()),
            [r.adjusted.clone(), r.note.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    s.trim_end().to_string()
}

/// Images per second vs resolution per preset (forward and training step), log-log.
pub fn plot_model(report: &ModelReport, path: &Path) -> Result<(), CliError> {
    let mut names: Vec<&str> = Vec::new();
    for r in &report.rows {
        if !names.contains(&r.preset.as_str()) {
            names.push(&r.preset);
        }
    }
    let mut forward = Chart::new(
        &format!("forward, batch {} on {}", report.batch, report.device),
        "resolution",
        "img/s",
    )
    .log_log();
    let mut train = Chart::new(
        &format!("training step, batch {}", report.batch),
        "resolution",
        "img/s",
    )
    .log_log();
    for name in names {
        let pts = |f: fn(&ModelRow) -> Option<f64>| -> Vec<(f64, f64)> {
            report
                .rows
                .iter()
                .filter(|r| r.preset == name)
                .filter_map(|r| f(r).map(|v| (r.resolution as f64, v)))
                .collect()
        };
        forward = forward.with_series(name, pts(|r| r.forward_img_s));
        train = train.with_series(name, pts(|r| r.train_img_s));
    }
    draw_charts(path, &[forward, train]).map_err(|e| CliError::from(e.to_string()))
}

/// This program's path, for running points in child processes.
pub fn current_exe() -> Option<PathBuf> {
    std::env::current_exe().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bench_kind_maps_to_its_config() {
        for kind in Kind::ALL {
            let config = kind_config(kind.name()).unwrap().unwrap();
            assert_eq!(config.kind(), kind);
        }
        assert_eq!(kind_config(SOFTMAX_NAIVE).unwrap(), None);
        let err = kind_config("softmx").unwrap_err().message;
        assert!(
            err.contains("\"softmx\"") && err.contains("focused"),
            "{err}"
        );
    }

    #[test]
    fn token_counts_must_be_square_grids() {
        assert_eq!(grid_side(3136).unwrap(), 56);
        assert!(grid_side(200).unwrap_err().message.contains("200"));
    }

    #[test]
    fn mixing_macs_leave_the_projections_out() {
        let bench = AttentionBench {
            kinds: vec!["softmax".into()],
            tokens: vec![196],
            batch: 2,
            heads: 4,
            head_dim: 32,
            backward: false,
            budget: Budget::default(),
        };
        let n = 196u64;
        assert_eq!(bench.macs("softmax", 196), 2 * 2 * n * n * 128);
        assert_eq!(bench.macs(SOFTMAX_NAIVE, 196), 2 * 2 * n * n * 128);
        // q kv and k^T v products plus the 5x5 depthwise conv.
        assert_eq!(
            bench.macs("focused", 196),
            2 * (2 * n * 128 * 32 + n * 25 * 128)
        );
    }

    #[test]
    fn swin_windows_follow_the_resolution() {
        let swin = presets::preset("swin_t").unwrap();
        let (args, adjusted) = resolution_args(swin, 384);
        assert_eq!(args["window_size"], 12);
        assert!(adjusted.unwrap().contains("7 -> 12"));
        let flatten = presets::preset("flatten_swin_t").unwrap();
        let (args, _) = resolution_args(flatten, 384);
        assert_eq!(args["window_size"], 96);
        let (args, adjusted) = resolution_args(flatten, 224);
        assert!(args.get("window_size").is_none() && adjusted.is_none());
    }
}

fn parse_list<T: std::str::FromStr>(flag: &str, raw: &str) -> Result<Vec<T>, CliError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| cli_error!("{flag}: {s:?} is not a valid value"))
        })
        .collect()
}

/// `linvit bench attention` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct AttentionArgs {
    /// Comma-separated kinds: softmax, linear, focused, agent (defaults of each family), and
    /// softmax_naive (scores materialised, for comparison with the fused softmax).
    #[arg(long, default_value = "softmax,linear,focused,agent")]
    pub kinds: String,
    /// Comma-separated token counts (square grids).
    #[arg(long, default_value = "196,784,3136")]
    pub tokens: String,
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 32)]
    pub head_dim: usize,
    #[arg(long, default_value = "flex", help = format!("Backend: {}", crate::device::DEVICE_NAMES))]
    pub device: String,
    /// Time the inference call only.
    #[arg(long)]
    pub no_backward: bool,
    /// Seconds of timed calls per phase and point (at least --min-reps calls).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 3)]
    pub min_reps: usize,
    /// Run every point in this process instead of one child process per point (peak memory is
    /// then less precise, and an allocation failure may end the run).
    #[arg(long)]
    pub in_process: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a log-log PNG of time vs tokens per kind.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

fn budget(seconds: f64, min_reps: usize) -> Result<Budget, CliError> {
    if !(seconds >= 0.0 && seconds.is_finite()) || min_reps == 0 {
        return Err("--seconds must be >= 0 and --min-reps at least 1".into());
    }
    Ok(Budget {
        min_reps,
        seconds,
        max_reps: 50.max(min_reps),
    })
}

/// Runs `linvit bench attention`; returns what to print.
pub fn attention_command(args: &AttentionArgs) -> Result<String, CliError> {
    let device = crate::device::parse_device(&args.device)?;
    let bench = AttentionBench {
        kinds: parse_list("--kinds", &args.kinds)?,
        tokens: parse_list("--tokens", &args.tokens)?,
        batch: args.batch,
        heads: args.heads,
        head_dim: args.head_dim,
        backward: !args.no_backward,
        budget: budget(args.seconds, args.min_reps)?,
    };
    bench.validate()?;
    let exe = if args.in_process { None } else { current_exe() };
    let report = run_attention(&bench, &args.device, &device, exe.as_deref());
    if let Some(path) = &args.out {
        write_json(&report, path)?;
    }
    if let Some(path) = &args.plot {
        plot_attention(&report, path)?;
    }
    if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| CliError::from(e.to_string()))
    } else {
        Ok(attention_table(&report))
    }
}

/// `linvit bench model` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Comma-separated preset names (see `linvit models`).
    #[arg(long, default_value = "flatten_pvt_t,flatten_swin_t")]
    pub presets: String,
    /// Comma-separated input sides.
    #[arg(long, default_value = "224,384,512")]
    pub resolutions: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value = "flex", help = format!("Backend: {}", crate::device::DEVICE_NAMES))]
    pub device: String,
    /// Time inference only (no training step).
    #[arg(long)]
    pub no_train: bool,
    /// Forward/backward dtype: f32, bf16 or f16 (weights cast for inference; f32 master
    /// weights for the training step).
    #[arg(long, default_value = "f32", value_parser = Precision::from_name)]
    pub precision: Precision,
    /// Seconds of timed calls per phase and point (at least --min-reps calls).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 2)]
    pub min_reps: usize,
    /// Run every point in this process instead of one child process per point.
    #[arg(long)]
    pub in_process: bool,
    /// On flex, `auto` runs the fused kernels and, in the training step, the fused autodiff
    /// nodes; `ops` runs Burn's ops only (the comparison the fused path is measured against).
    #[arg(long, default_value = "auto", value_parser = str::parse::<linvit_attention::Path>)]
    pub path: linvit_attention::Path,
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a PNG of images/s vs resolution per preset.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Runs `linvit bench model`; returns what to print.
pub fn model_command(args: &ModelArgs) -> Result<String, CliError> {
    let device = crate::device::parse_device(&args.device)?;
    let bench = ModelBench {
        presets: parse_list("--presets", &args.presets)?,
        resolutions: parse_list("--resolutions", &args.resolutions)?,
        batch: args.batch,
        train: !args.no_train,
        budget: budget(args.seconds, args.min_reps)?,
        precision: args.precision,
    };
    bench.validate()?;
    let exe = if args.in_process { None } else { current_exe() };
    let report = args
        .path
        .run(|| run_model(&bench, &args.device, &device, exe.as_deref()));
    if let Some(path) = &args.out {
        write_json(&report, path)?;
    }
    if let Some(path) = &args.plot {
        plot_model(&report, path)?;
    }
    if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| CliError::from(e.to_string()))
    } else {
        Ok(model_table(&report))
    }
}
