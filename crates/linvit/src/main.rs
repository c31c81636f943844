//! `linvit`: vision transformers with linear attention, on Burn.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use clap::{Parser, Subcommand};
use linvit::catalog;
use linvit::device::{parse_device, remote_failure_as_error, DEVICE_NAMES};
use linvit::reference::{discover, reference_root};
use linvit::run;
use linvit::verify::{verify_case, CaseReport, Status};
use linvit_attention::import::load_upstream_resized;
use linvit_models::checkpoint::save_model;
use linvit_models::presets;

#[derive(Parser)]
#[command(
    name = "linvit",
    version,
    about = "Vision transformers with linear attention, on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Counts per split and class, image size, mean/std; --grid writes augmented samples.
    ///
    /// Example: linvit data inspect --set data.kind=idx --grid samples.png
    Inspect {
        /// A run config whose [data] to read (default: the quickstart's).
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Write a 4x8 PNG grid of augmented training samples.
        #[arg(long)]
        grid: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Causal attention over long sequences: blocked (Lightning-2), recurrent and quadratic
    /// linear attention with decay against Burn's fused causal softmax attention; forward and
    /// forward+backward time and tokens/s per length.
    ///
    /// Example: linvit bench causal --tokens 1024,4096,16384 --forms blocked,softmax --plot causal.png
    Causal {
        /// Sequence lengths, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1024,2048,4096,8192,16384"
        )]
        tokens: Vec<usize>,
        /// Forms, comma-separated: blocked, recurrent, quadratic, softmax.
        #[arg(long, value_delimiter = ',', default_value = "blocked,softmax")]
        forms: Vec<String>,
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
    },
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
    Attention(linvit::bench::AttentionArgs),
    /// Forward and training-step images/s and peak memory of presets across resolutions.
    ///
    /// Example: linvit bench model --presets flatten_pvt_t --resolutions 224 --batch 8
    Model(linvit::bench::ModelArgs),
}

#[derive(Subcommand)]
enum LmCommand {
    /// Train a TransNormer language model on bytes. Without --config it runs the LM quickstart
    /// on the embedded procedural stories (a few minutes on 2 CPU cores).
    ///
    /// Examples: linvit lm train
    ///           linvit lm train --set data.path=book.txt --set train.steps=2000
    Train {
        /// An LM config (TOML with [model], [data], [train]).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override any key: --set model.layers=6 --set train.lr=1e-3
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
        device: String,
    },
    /// Continue a prompt with a trained LM: the prompt is prefilled in blocks, then every new
    /// token costs one recurrent step on a fixed-size state (memory does not grow).
    ///
    /// Example: linvit lm generate --checkpoint runs/lm_quickstart --prompt "Mara lived near"
    Generate {
        /// A run directory of `linvit lm train`.
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "")]
        prompt: String,
        /// Tokens (bytes) to generate.
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        /// Softmax temperature; 0 always takes the most likely byte.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Sample among the k most likely bytes (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print timing and state size as JSON on stderr.
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
        device: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Train a classifier. Without --config it runs the quickstart: a tiny FLatten-PVT on the
    /// embedded procedural dataset, a few minutes on 2 CPU cores.
    ///
    /// Examples: linvit train
    ///           linvit train --config configs/fashion_mnist_flatten.toml --set train.epochs=5
    ///           linvit train --resume runs/quickstart
    Train {
        /// A run config (TOML with [model], [data], [train]).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override any key: --set train.lr=1e-3 --set model.preset=tiny_agent_pvt
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its newest complete checkpoint.
        #[arg(long, conflicts_with_all = ["config", "out"])]
        resume: Option<PathBuf>,
        /// Backend, or a comma list for data-parallel training (`--devices wgpu:0,wgpu:1`):
        /// each batch is split over the devices; the first holds the optimizer.
        #[arg(long, visible_alias = "devices", default_value = "flex", help = format!("Backend: {DEVICE_NAMES}; a comma list trains data-parallel"))]
        device: String,
    },
    /// Top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint on a dataset.
    ///
    /// Example: linvit eval --checkpoint runs/quickstart --confusion confusion.png
    Eval {
        /// A run directory (its best checkpoint) or a checkpoint folder.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Evaluate on this config's [data] instead of the run's own.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override data keys: --set data.kind=idx --set data.path=/usr/share/datasets/fashion-mnist
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Write the confusion matrix as a PNG.
        #[arg(long)]
        confusion: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
        device: String,
    },
    /// The most probable classes of images (PNG/JPEG) under a checkpoint, in batches of the
    /// run's batch size.
    ///
    /// Example: linvit predict --checkpoint runs/quickstart cat.png photos/ --csv predictions.csv
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image files, and folders (every .jpg/.jpeg/.png below them, sorted).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        #[arg(long)]
        json: bool,
        /// Also write the predictions to this CSV file: image, then class and probability for
        /// each of the top k.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
        #[arg(long, default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
        device: String,
    },
    /// Host this machine's devices for `linvit train --device ws://HOST:PORT` on another
    /// machine (Burn's remote backend over WebSocket: unencrypted, for a trusted network).
    /// Prints the address once listening; serves until stopped. Needs a build with the opt-in
    /// `remote` feature (`cargo install --path crates/linvit --features remote`), on both sides.
    ///
    /// Example: linvit serve --bind 0.0.0.0:3000 --device wgpu
    ///          linvit train --device ws://gpu-box:3000     (on the other machine)
    Serve {
        /// Address to listen on, HOST:PORT (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:3000")]
        bind: String,
        /// The devices to host, one backend (a comma list: clients pick one with ws://HOST:PORT/N).
        #[arg(long, visible_alias = "devices", default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
        device: String,
    },
    /// Causal language models from TransNormer blocks: train, generate.
    Lm {
        #[command(subcommand)]
        command: LmCommand,
    },
    /// Look at a dataset: counts, sizes, statistics, a grid of augmented samples.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Run an ablation grid: a base config plus sweep axes, each point in its own run directory
    /// (finished points are not rerun), then results.csv, results.md and PNG plots.
    ///
    /// Example: linvit ablate experiments/flatten_components.toml --dry-run
    Ablate(linvit::ablate::AblateArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// List the model presets with parameters, MACs and the papers' numbers.
    ///
    /// Example: linvit models --json
    Models {
        /// Print a JSON list of objects (name, params, flops, img_size, paper_params_m, ...).
        #[arg(long)]
        json: bool,
    },
    /// Load the authors' checkpoint (.pth or .safetensors, upstream or timm key names) into a
    /// preset and save it as a linvit model folder; every missing, unexpected or mis-shaped key
    /// is named.
    ///
    /// Example: linvit import flatten_swin_t flatten_swin_t.pth --out models/flatten_swin_t
    Import {
        /// Preset name (see `linvit models`).
        preset: String,
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Folder to write model.json and model.bpk into.
        #[arg(long)]
        out: PathBuf,
        /// Number of classes of the checkpoint's head, when not the preset's 1000.
        #[arg(long)]
        num_classes: Option<usize>,
        /// Change one of the preset's constructor arguments (as `linvit models --json` lists
        /// them), value in JSON: `--arg img_size=384 --arg window_size=12`. Position embeddings,
        /// Swin's relative position tables, FLatten's positional encodings and agent biases
        /// trained at another size are resized as the authors' fine-tuning code does.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// Check our modules against tensors produced by the authors' PyTorch code.
    ///
    /// Each PATH is a case folder (holding case.json, weights.safetensors, io.safetensors) or a
    /// folder of case folders; without one, LINVIT_REFERENCE_DIR is used. Exits non-zero if any
    /// case fails or cannot be run.
    ///
    /// Example: linvit verify ../shared/reference --device flex
    Verify {
        /// Case folders, or folders of case folders.
        paths: Vec<PathBuf>,
        /// Backend to run on.
        #[arg(long, default_value = "flex", help = format!("Backend to run on: {DEVICE_NAMES}"))]
        device: String,
        /// Print one JSON object per case instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    restore_sigpipe();
    keep_freed_memory();
    let cli = Cli::parse();
    // A bad `LINVIT_ISA` is named before any work (the kernels would otherwise ignore it).
    if let Err(e) = linvit_kernels::isa::requested() {
        return report(Err(e));
    }
    match cli.command {
        Command::Train {
            config,
            sets,
            out,
            resume,
            device,
        } => with_devices(&device, |devices| {
            let summary = run::train_command(
                config.as_deref(),
                &sets,
                out.as_deref(),
                resume.as_deref(),
                devices,
            )?;
            if !summary.skipped_files.is_empty() {
                eprintln!(
                    "skipped {} corrupt training images:",
                    summary.skipped_files.len()
                );
                for line in &summary.skipped_files {
                    eprintln!("  {line}");
                }
            }
            if !summary.skipped_steps.is_empty() {
                eprintln!(
                    "skipped {} steps with a non-finite loss or gradient:",
                    summary.skipped_steps.len()
                );
                for line in summary.skipped_steps.iter().take(20) {
                    eprintln!("  {line}");
                }
            }
            Ok(format!(
                "trained {} epochs in {:.0} s ({:.1} img/s); final val top-1 {}; best {} (epoch {}); run in {}",
                summary.epochs,
                summary.seconds,
                summary.images_per_s,
                percent(summary.final_val_top1),
                percent(summary.best_val_top1),
                summary.best_epoch.map(|e| e.to_string()).unwrap_or("-".into()),
                summary.run_dir.display()
            ))
        }),
        Command::Eval {
            checkpoint,
            config,
            sets,
            confusion,
            json,
            device,
        } => with_device(&device, |device| {
            let data = if config.is_some() || !sets.is_empty() {
                Some(run::data_config(config.as_deref(), &sets)?)
            } else {
                None
            };
            let e = run::eval_command(&checkpoint, data, confusion.as_deref(), device)?;
            if json {
                return serde_json::to_string_pretty(&e).map_err(|e| e.to_string());
            }
            let mut text = format!(
                "{} images: top-1 {:.2}%, top-5 {:.2}%, loss {:.4}\n",
                e.images,
                100.0 * e.top1,
                100.0 * e.top5,
                e.loss
            );
            for c in &e.per_class {
                text.push_str(&format!(
                    "  {:<16} {:>6.2}% of {}\n",
                    c.class,
                    100.0 * c.accuracy,
                    c.images
                ));
            }
            Ok(text.trim_end().to_string())
        }),
        Command::Serve { bind, device } => with_devices(&device, |devices| {
            linvit::serve::serve(&bind, devices.to_vec())
        }),
        Command::Predict {
            checkpoint,
            images,
            top_k,
            json,
            csv,
            device,
        } => with_device(&device, |device| {
            let predictions = run::predict_command(&checkpoint, &images, top_k, device)?;
            if let Some(path) = &csv {
                let text = linvit_train::predictions_csv(&predictions);
                linvit_models::checkpoint::write_atomic(path, text.as_bytes())
                    .map_err(|e| e.to_string())?;
            }
            if json {
                return serde_json::to_string_pretty(&predictions).map_err(|e| e.to_string());
            }
            let mut text = String::new();
            for p in &predictions {
                text.push_str(&format!("{}\n", p.image.display()));
                for (name, _, prob) in &p.top {
                    text.push_str(&format!("  {:>6.2}%  {name}\n", 100.0 * prob));
                }
            }
            Ok(text.trim_end().to_string())
        }),
        Command::Data {
            command:
                DataCommand::Inspect {
                    config,
                    sets,
                    grid,
                    json,
                },
        } => report(
            run::data_config(config.as_deref(), &sets)
                .and_then(|data| run::inspect_command(&data, grid.as_deref(), json)),
        ),
        Command::Bench {
            command:
                BenchCommand::Causal {
                    tokens,
                    forms,
                    batch,
                    heads,
                    head_dim,
                    block,
                    repeats,
                    max_gb,
                    json,
                    plot,
                    device,
                },
        } => with_device(&device, |device| {
            let bench = linvit::bench_causal::CausalBench {
                tokens,
                forms,
                batch,
                heads,
                head_dim,
                block_size: block,
                repeats,
                max_bytes: (max_gb * 1e9) as u64,
            };
            bench.validate()?;
            if !json {
                println!(
                    "{:<10} {:>7} {:>11} {:>11} {:>14} {:>14}",
                    "form", "tokens", "forward ms", "train ms", "fwd tokens/s", "train tokens/s"
                );
            }
            let rows = linvit::bench_causal::run(&bench, device, |r| {
                if json {
                    println!("{}", serde_json::to_string(r).expect("rows serialise"));
                    return;
                }
                let f = |x: Option<f64>, p: usize| {
                    x.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into())
                };
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
            });
            if let Some(path) = plot {
                let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
                for r in rows.iter().filter(|r| r.skipped.is_none()) {
                    let point = (r.tokens as f64, r.train_tokens_per_s.unwrap_or(0.0));
                    match series.iter_mut().find(|s| s.0 == r.form) {
                        Some(s) => s.1.push(point),
                        None => series.push((r.form.clone(), vec![point])),
                    }
                }
                linvit_train::plot::plot_loglog(
                    &path,
                    "causal attention: training tokens/s vs length",
                    ("tokens", "tokens/s (forward+backward)"),
                    &series,
                )
                .map_err(|e| e.to_string())?;
                eprintln!("plot written to {}", path.display());
            }
            Ok(String::new())
        }),
        Command::Bench {
            command:
                BenchCommand::Data {
                    config,
                    sets,
                    images,
                    batch,
                    json,
                },
        } => report(
            run::data_config(config.as_deref(), &sets)
                .and_then(|data| run::bench_data_command(&data, images, batch, json)),
        ),
        Command::Lm {
            command:
                LmCommand::Train {
                    config,
                    sets,
                    out,
                    device,
                },
        } => with_device(&device, |device| {
            let s = linvit::lm::train_command(config.as_deref(), &sets, out.as_deref(), device)?;
            Ok(format!(
                "trained {} steps in {:.0} s ({:.0} tokens/s); validation {:.3} -> {:.3} bits/byte; run in {}",
                s.steps,
                s.seconds,
                s.tokens_per_s,
                s.initial_val_bpb,
                s.final_val_bpb,
                s.run_dir.display()
            ))
        }),
        Command::Lm {
            command:
                LmCommand::Generate {
                    checkpoint,
                    prompt,
                    tokens,
                    temperature,
                    top_k,
                    seed,
                    stats,
                    device,
                },
        } => with_device(&device, |device| {
            let sampling = linvit_train::lm::Sampling {
                temperature,
                top_k,
                seed,
            };
            let s = linvit::lm::generate_command(&checkpoint, &prompt, tokens, sampling, device)?;
            if stats {
                eprintln!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
            }
            Ok(String::new())
        }),
        Command::Bench {
            command: BenchCommand::Attention(args),
        } => report(linvit::bench::attention_command(&args)),
        Command::Bench {
            command: BenchCommand::Model(args),
        } => report(linvit::bench::model_command(&args)),
        Command::Ablate(args) => report(linvit::ablate::ablate_command(&args)),
        Command::Models { json } => models(json),
        Command::Import {
            preset,
            checkpoint,
            out,
            num_classes,
            args,
        } => import(&preset, &checkpoint, &out, num_classes, &args),
        Command::Verify {
            paths,
            device,
            json,
        } => verify(&paths, &device, json),
    }
}

fn verify(paths: &[PathBuf], device: &str, json: bool) -> ExitCode {
    let device = match parse_device(device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let default_root;
    let paths = if paths.is_empty() {
        match reference_root() {
            Some(root) => {
                default_root = [root];
                &default_root[..]
            }
            None => {
                eprintln!(
                    "error: no case folder given and LINVIT_REFERENCE_DIR names no folder; \
                     usage: linvit verify PATH..."
                );
                return ExitCode::from(2);
            }
        }
    } else {
        paths
    };
    let mut cases = Vec::new();
    for path in paths {
        match discover(path) {
            Ok(found) => cases.extend(found),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if !json {
        println!(
            "{:<34} {:>10} {:>10}  {:<6} detail",
            "case", "output", "gradient", "result"
        );
    }
    let mut failed = 0;
    for dir in &cases {
        let report = verify_case(dir, &device);
        if !report.passed() {
            failed += 1;
        }
        if json {
            println!(
                "{}",
                serde_json::to_string(&report).expect("reports serialise")
            );
        } else {
            print_row(&report);
        }
    }
    if !json {
        println!("{} of {} cases passed", cases.len() - failed, cases.len());
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_row(r: &CaseReport) {
    let ratio = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let (result, detail) = match &r.status {
        Status::Pass => (
            "PASS",
            format!(
                "worst {} {}",
                // Decode cases compare prefill logits and recurrent states, not gradients.
                if r.kind == "decode" {
                    "state/prefill"
                } else {
                    "gradient"
                },
                r.worst_grad.as_deref().unwrap_or("-")
            ),
        ),
        Status::Fail(why) => ("FAIL", why.clone()),
        Status::Unsupported(why) => ("UNSUP", why.clone()),
        Status::Error(why) => ("ERROR", why.clone()),
    };
    println!(
        "{:<34} {:>10} {:>10}  {:<6} {}",
        r.case,
        ratio(r.output_ratio),
        ratio(r.grad_ratio),
        result,
        detail
    );
}

fn models(json: bool) -> ExitCode {
    let rows = catalog::rows();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<22} {:>9} {:>9} {:>6}  {:>9}  paper",
        "preset", "params", "MACs", "size", "published"
    );
    for r in &rows {
        println!(
            "{:<22} {:>8.2}M {:>8.2}G {:>6}  {:>9}  {}{}",
            r.name,
            r.params as f64 / 1e6,
            r.flops as f64 / 1e9,
            r.img_size.map(|s| s.to_string()).unwrap_or_default(),
            r.paper_params_m
                .map(|p| format!("{p}M"))
                .unwrap_or_else(|| "-".into()),
            r.paper,
            r.discrepancy.map(|d| format!(" ({d})")).unwrap_or_default(),
        );
    }
    ExitCode::SUCCESS
}

fn import(
    name: &str,
    checkpoint: &Path,
    out: &Path,
    num_classes: Option<usize>,
    args: &[String],
) -> ExitCode {
    let run = || -> Result<String, String> {
        let preset = presets::preset(name)?;
        let mut overrides = preset_overrides(args)?;
        if let Some(n) = num_classes {
            overrides.insert("num_classes".into(), n.into());
        }
        // The upstream mapping names a bad argument as `args.KEY`; here it came from `--arg`.
        let config =
            preset
                .config_with(&overrides.into())
                .map_err(|e| match e.strip_prefix("args.") {
                    Some(rest) => format!("--arg {rest}"),
                    None => e,
                })?;
        config.validate()?;
        let mut model = config.init(&Device::flex());
        let (applied, resized) = load_upstream_resized(
            &mut model,
            checkpoint,
            &config.renames(),
            config.resize_rule(),
        )
        .map_err(|e| e.to_string())?;
        save_model(out, &config, model).map_err(|e| e.to_string())?;
        let mut msg = String::new();
        for line in &resized {
            msg.push_str(&format!("resized {line}\n"));
        }
        msg.push_str(&format!(
            "imported {} tensors from {} into {name}; saved to {}",
            applied.applied.len(),
            checkpoint.display(),
            out.display()
        ));
        Ok(msg)
    };
    report(run())
}

/// `KEY=VALUE` constructor arguments for a preset; the value is JSON (a bare word is a string).
/// The keys are checked where the arguments resolve ([`linvit_models::upstream::resolve`]).
fn preset_overrides(args: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut out = serde_json::Map::new();
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("--arg {arg:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Rust ignores SIGPIPE, so `linvit models | head` would panic on the closed pipe; restore the
/// default so the program ends quietly like other command-line tools.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread starts; resets one signal's disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Lets glibc keep freed memory for reuse instead of handing it back to the kernel.
///
/// Why: flex allocates a fresh buffer for most ops. glibc serves large requests with fresh pages
/// (mmap above its threshold, or heap memory it trimmed after the last free), and every page of
/// a fresh buffer faults on first touch: about 1,500 faults, 4 ms, per call of focused attention
/// at 3136 tokens, half its time. With mmap off (large blocks come from the heap too; a thread's
/// arena that cannot hold one falls back to the main heap) and trimming off, freed buffers are
/// reused. Turning mmap off took FLatten-PVT-T's forward from 17.3 to 19.3 img/s in
/// back-to-back runs (its MLP activations, 51 MiB, are above the largest mmap threshold glibc
/// allows). Memory is still freed; the resident set stays at its peak instead of shrinking
/// (`linvit bench` trims before each memory probe).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any allocation-heavy work or thread; mallopt
    // only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Prints a command's result to stdout, or its one-line error to stderr with exit status 1.
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `--device` (exit status 2 on a bad name), then runs the command.
fn with_device(name: &str, command: impl FnOnce(&Device) -> Result<String, String>) -> ExitCode {
    with_parsed(parse_device(name), |device| {
        remote_failure_as_error(name, || command(&device))
    })
}

/// [`with_device`] for a comma list of devices (at least one).
fn with_devices(
    names: &str,
    command: impl FnOnce(&[Device]) -> Result<String, String>,
) -> ExitCode {
    let devices = names.split(',').map(|n| parse_device(n.trim())).collect();
    with_parsed(devices, |devices: Vec<Device>| {
        remote_failure_as_error(names, || command(&devices))
    })
}

/// Runs the command on what the device names parsed to; a bad name exits with status 2.
fn with_parsed<T>(
    parsed: Result<T, String>,
    command: impl FnOnce(T) -> Result<String, String>,
) -> ExitCode {
    match parsed {
        Ok(devices) => report(command(devices)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn percent(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2}%", 100.0 * v))
        .unwrap_or_else(|| "-".into())
}
