//! `linvit`: vision transformers with linear attention, on Burn. This file parses the command
//! line and sets up the process; each command lives in `linvit::commands`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "linvit",
    version,
    about = "Vision transformers with linear attention, on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: linvit::commands::Command,
}

fn main() -> ExitCode {
    restore_sigpipe();
    linvit::commands::bench::harness::keep_freed_memory();
    let cli = Cli::parse();
    // A bad `LINVIT_ISA` is named before any work (the kernels would otherwise ignore it).
    if let Err(e) = linvit_attention::isa::requested() {
        return linvit::commands::report(Err(e.into()));
    }
    linvit::commands::run(cli.command)
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
