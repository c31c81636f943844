//! Runs a recipe (default: the embedded quickstart) on flex and prints what it reached:
//! `cargo run -p linvit-train --example quickstart -- [CONFIG] [--out DIR] [key=value ...]`.

use std::path::PathBuf;

use burn::tensor::Device;
use linvit_train::{resolve, train, TrainOptions};

fn main() {
    let mut file: Option<PathBuf> = None;
    let mut out = PathBuf::from("runs/quickstart");
    let mut sets = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--out" {
            out = args.next().map(PathBuf::from).unwrap_or(out);
        } else if a.contains('=') {
            sets.push(a);
        } else {
            file = Some(PathBuf::from(a));
        }
    }
    let config = match resolve(file.as_deref(), &sets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    match train(&config, &out, &Device::flex(), &TrainOptions::default()) {
        Ok(s) => println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("the summary serialises")
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
