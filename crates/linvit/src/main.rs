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
    keep_freed_memory();
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
