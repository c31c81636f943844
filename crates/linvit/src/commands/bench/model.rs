//! `linvit bench model`: forward and training-step images/s and peak memory of presets across
//! resolutions, each point in its own process (see `harness`).

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use linvit_models::presets;
use linvit_train::bench::{time_ms, Budget, TrainStep};
use linvit_train::charts::{draw_charts, Chart};
use linvit_train::config::Precision;
use linvit_train::optim::cast_params;
use linvit_train::workers::on_workers;
use serde::{Deserialize, Serialize};

use super::harness::{
    budget, child_failure, current_exe, memory_method, parse_list, write_json, Machine, MemoryProbe,
};
use crate::CliError;

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
        let (args, adjusted) = preset.arguments_at(resolution);
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
                let out = on_workers(|| model.forward(x.clone()));
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
        // The larger phase; `None` orders below any measurement.
        row.peak_bytes = row.forward_peak_bytes.max(probe.peak());
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

impl std::fmt::Display for ModelReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&model_table(self))
    }
}

fn model_table(report: &ModelReport) -> String {
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
    draw_charts(path, &[forward, train]).map_err(CliError::from)
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
    crate::commands::render(&report, args.json)
}
