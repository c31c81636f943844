//! `linvit bench attention`: forward and training time, latency and peak memory of each
//! attention kind alone across token counts, on any `--device`, each point in its own process
//! (see `harness`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use linvit_attention::ops::{merge_heads, split_heads};
use linvit_attention::reference::softmax_attend;
use linvit_attention::{AttentionConfig, Kind, MixerShape, TokenLayout};
use linvit_train::bench::{median, time_ms, Budget};
use linvit_train::charts::{draw_charts, Chart};
use serde::{Deserialize, Serialize};

use super::harness::{
    available_bytes, budget, child_failure, current_exe, gib, memory_method, parse_list,
    write_json, Machine, MemoryProbe,
};
use crate::CliError;

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
            let [q, k, v] = [q, k, v].map(|t| split_heads(t, heads));
            merge_heads(softmax_attend(q, k, v, scale))
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
        // The larger phase; `None` orders below any measurement.
        row.peak_bytes = row.forward_peak_bytes.max(probe.peak());
        row
    }
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
    draw_charts(path, &charts).map_err(CliError::from)
}

/// The text table of an attention report.
impl std::fmt::Display for AttentionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&attention_table(self))
    }
}

fn attention_table(report: &AttentionReport) -> String {
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
    crate::commands::render(&report, args.json)
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
}
