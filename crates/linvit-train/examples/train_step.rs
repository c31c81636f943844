//! Times the training step of presets (forward, loss, backward, AdamW) and nothing else, on
//! flex, in interleaved rounds of Burn's ops (`Path::Ops`) against the fused autodiff nodes
//! (`Path::Auto`), so both paths see the same machine drift:
//!
//! `cargo run -p linvit-train --example train_step -- [PRESETS] [BATCH] [ROUNDS] [SECONDS]`
//!
//! PRESETS is comma-separated (default `flatten_pvt_t`): preset names, or recipes
//! (`configs/*.toml`, timed at their own batch size); each path of each steps for SECONDS per
//! round (default 3), after one untimed step. One path alone, for a profiler:
//! `LINVIT_TRAIN_STEP_PATH=auto perf record -g target/debug/examples/train_step flatten_pvt_t`.

use burn::tensor::Device;
use linvit_attention::Path;
use linvit_models::presets;
use linvit_train::bench::{median, TrainStep};
use linvit_train::config::Precision;

fn main() {
    let mut args = std::env::args().skip(1);
    let names = args.next().unwrap_or_else(|| "flatten_pvt_t".into());
    let batch: usize = args.next().and_then(|b| b.parse().ok()).unwrap_or(8);
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(4);
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let paths: Vec<Path> = match std::env::var("LINVIT_TRAIN_STEP_PATH") {
        Ok(p) => match p.parse() {
            Ok(p) => vec![p],
            Err(e) => fail(&format!("LINVIT_TRAIN_STEP_PATH: {e}")),
        },
        Err(_) => vec![Path::Ops, Path::Auto],
    };
    println!(
        "flex, batch {batch}, isa {}, {rounds} interleaved rounds of {seconds} s per path",
        linvit_attention::isa::selected().name()
    );
    println!("| preset | ops ms | fused ms | speed-up | ops img/s | fused img/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for name in names.split(',') {
        let (config, batch) = model(name, batch);
        let label = match name.ends_with(".toml") {
            true => format!("{name} (batch {batch})"),
            false => name.to_string(),
        };
        let mut steps: Vec<TrainStep> = paths
            .iter()
            .map(|_| TrainStep::new(&config, batch, Precision::F32, &Device::flex()))
            .collect();
        let mut times = vec![Vec::new(); paths.len()];
        for _ in 0..rounds {
            for ((path, step), times) in paths.iter().zip(&mut steps).zip(&mut times) {
                path.run(|| {
                    step.step();
                    let start = std::time::Instant::now();
                    while start.elapsed().as_secs_f64() < seconds {
                        let t = std::time::Instant::now();
                        step.step();
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                });
            }
        }
        let ms: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
        let img_s = |ms: f64| batch as f64 / (ms / 1e3);
        match ms[..] {
            [ops, fused] => println!(
                "| {label} | {ops:.0} | {fused:.0} | {:.2}x | {:.2} | {:.2} |",
                ops / fused,
                img_s(ops),
                img_s(fused)
            ),
            [one] => println!(
                "| {label} | {} | {one:.0} | | | {:.2} |",
                paths[0].name(),
                img_s(one)
            ),
            _ => unreachable!("one or two paths"),
        }
    }
}

/// The model of a preset at `batch`, or of a recipe (`configs/*.toml`, 10 classes) at the
/// recipe's own batch size.
fn model(name: &str, batch: usize) -> (linvit_models::ModelConfig, usize) {
    if !name.ends_with(".toml") {
        return match presets::preset(name) {
            Ok(p) => (p.config(), batch),
            Err(e) => fail(&e.message),
        };
    }
    let run = linvit_train::resolve(Some(std::path::Path::new(name)), &[])
        .unwrap_or_else(|e| fail(&e.to_string()));
    let channels = run.data.channels.unwrap_or(3);
    match run.model_config(10, channels) {
        Ok(config) => (config, run.train.batch_size),
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}
