//! A training step on rayon's workers (`TrainStep::step`, what training runs) against the same
//! step on the calling thread (`TrainStep::step_on_caller`), alternating step by step in one
//! process so both see the same machine drift:
//!
//! `cargo run -p linvit-train --example on_workers -- [PRESETS] [STEPS]`
//!
//! PRESETS is comma-separated (default `agent_deit_t`), STEPS the timed steps per preset
//! (default 20, half of each kind), batch 8 at 224x224 on flex. Prints each kind's median step
//! and the median of the per-pair ratios.

use burn::tensor::Device;
use linvit_models::presets;
use linvit_train::bench::{median, TrainStep};
use linvit_train::config::Precision;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let names = args.next().unwrap_or_else(|| "agent_deit_t".into());
    let steps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    println!("| preset | on workers, ms | on the caller, ms | workers / caller, median of pairs | pairs |");
    println!("| --- | --- | --- | --- | --- |");
    for name in names.split(',') {
        let config = match presets::preset(name) {
            Ok(p) => p.config(),
            Err(e) => {
                eprintln!("on_workers: {}", e.message);
                std::process::exit(2);
            }
        };
        let mut step = TrainStep::new(&config, 8, Precision::F32, &Device::flex());
        step.step();
        step.step_on_caller();
        let (mut workers, mut caller) = (Vec::new(), Vec::new());
        for i in 0..steps.max(2) {
            let t = Instant::now();
            let times = match i % 2 {
                0 => {
                    step.step();
                    &mut workers
                }
                _ => {
                    step.step_on_caller();
                    &mut caller
                }
            };
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut ratios: Vec<f64> = workers.iter().zip(&caller).map(|(w, c)| w / c).collect();
        let pairs = ratios.len();
        println!(
            "| {name} | {:.0} | {:.0} | {:.3} | {pairs} |",
            median(&mut workers),
            median(&mut caller),
            median(&mut ratios)
        );
    }
}
