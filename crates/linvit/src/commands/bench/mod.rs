//! `linvit bench causal|data|attention|model`: the arguments and the dispatch; each benchmark
//! is a file here, and `harness` holds what they share.

pub mod attention;
pub mod causal;
pub mod harness;
pub mod model;

use crate::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;

use crate::device::DEVICE_NAMES;
use causal::{CausalBench, CausalRow};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Causal attention over long sequences: blocked (Lightning-2), recurrent and quadratic
    /// linear attention with decay against Burn's fused causal softmax attention; forward and
    /// forward+backward time and tokens/s per length.
    ///
    /// Example: linvit bench causal --tokens 1024,4096,16384 --forms blocked,softmax --plot causal.png
    Causal(CausalArgs),
    /// Decoded + augmented images per second of a dataset's training split.
    ///
    /// Example: linvit bench data --set data.kind=idx --images 20000
    Data {
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long, default_value_t = 10_000)]
        images: usize,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Forward and forward+backward time and peak memory of each attention kind alone, across
    /// token counts.
    ///
    /// Example: linvit bench attention --kinds softmax,focused --tokens 196,784,3136 --plot t.png
    Attention(attention::AttentionArgs),
    /// Forward and training-step images/s and peak memory of presets across resolutions.
    ///
    /// Example: linvit bench model --presets flatten_pvt_t --resolutions 224 --batch 8
    Model(model::ModelArgs),
}

#[derive(clap::Args)]
pub struct CausalArgs {
    /// Sequence lengths, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1024,2048,4096,8192,16384"
    )]
    tokens: Vec<usize>,
    /// Forms, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "blocked,softmax"
    )]
    forms: Vec<causal::Form>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 8)]
    heads: usize,
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Block size of the blocked form.
    #[arg(long, default_value_t = 256)]
    block: usize,
    /// Timed runs per point (median reported), after one warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip points whose largest intermediate exceeds this many GB.
    #[arg(long, default_value_t = 4.0)]
    max_gb: f64,
    /// One JSON object per point instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a log-log PNG of training tokens/s against length.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
    device: String,
}

pub fn run(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Causal(args) => super::with_device(&args.device, |d| causal(&args, d)),
        BenchCommand::Data {
            config,
            sets,
            images,
            batch,
            json,
        } => super::report(
            crate::run::data_config(config.as_deref(), &sets)
                .and_then(|data| crate::run::bench_data_command(&data, images, batch, json)),
        ),
        BenchCommand::Attention(args) => super::report(attention::attention_command(&args)),
        BenchCommand::Model(args) => super::report(model::model_command(&args)),
    }
}

fn causal(a: &CausalArgs, device: &Device) -> Result<String, CliError> {
    let bench = CausalBench {
        tokens: a.tokens.clone(),
        forms: a.forms.clone(),
        batch: a.batch,
        heads: a.heads,
        head_dim: a.head_dim,
        block_size: a.block,
        repeats: a.repeats,
        max_bytes: (a.max_gb * 1e9) as u64,
    };
    bench.validate()?;
    if !a.json {
        println!(
            "{:<10} {:>7} {:>11} {:>11} {:>14} {:>14}",
            "form", "tokens", "forward ms", "train ms", "fwd tokens/s", "train tokens/s"
        );
    }
    let rows = causal::run(&bench, device, |r| print_causal_row(r, a.json));
    if let Some(path) = &a.plot {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in rows.iter().filter(|r| r.skipped.is_none()) {
            let point = (r.tokens as f64, r.train_tokens_per_s.unwrap_or(0.0));
            match series.iter_mut().find(|s| s.0 == r.form.name()) {
                Some(s) => s.1.push(point),
                None => series.push((r.form.name().to_string(), vec![point])),
            }
        }
        linvit_train::plot::plot_loglog(
            path,
            "causal attention: training tokens/s vs length",
            ("tokens", "tokens/s (forward+backward)"),
            &series,
        )?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(String::new())
}

fn print_causal_row(r: &CausalRow, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("rows serialise"));
        return;
    }
    let f = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<10} {:>7} {:>11} {:>11} {:>14} {:>14} {}",
        r.form,
        r.tokens,
        f(r.forward_ms, 1),
        f(r.train_ms, 1),
        f(r.forward_tokens_per_s, 0),
        f(r.train_tokens_per_s, 0),
        r.skipped.as_deref().unwrap_or("")
    );
}
