//! The `linvit` program's library half: what the commands do, kept out of `main.rs` so the
//! tests run exactly the code the command line runs.

pub mod ablate;
pub mod bench;
pub mod bench_causal;
pub mod catalog;
pub mod commands;
pub mod device;
pub mod lm;
pub mod reference;
pub mod run;
pub mod serve;
pub mod verify;
pub mod verify_lm;
