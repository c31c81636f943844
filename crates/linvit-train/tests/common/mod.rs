//! What the end-to-end training tests share: taking turns on the RNG, quiet runs, configs.

#![allow(dead_code)]

use linvit_train::{resolve, Progress, RunConfig, TrainOptions};

/// Flex draws from one process-wide RNG. A run is deterministic when no other thread draws from
/// it meanwhile, as in one `linvit train` process; the tests in a binary run in parallel
/// threads, so each holds this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The quickstart with the `base` settings, then `sets`, applied.
pub fn config_with(base: &[&str], sets: &[&str]) -> RunConfig {
    let all: Vec<String> = base.iter().chain(sets).map(|s| s.to_string()).collect();
    resolve(None, &all).expect("test config resolves")
}

pub fn quiet() -> TrainOptions {
    TrainOptions {
        progress: Progress::Quiet,
        ..TrainOptions::default()
    }
}
