//! What both benchmarks share: the machine and allocator they ran on (recorded in every JSON
//! report), the peak-memory probe, child processes per point, and the report files.
//!
//! Each point runs in its own child process (the same binary with `--in-process` and one
//! point), so its peak memory is measured alone and an allocation failure becomes an `oom` row
//! instead of ending the benchmark. Memory is what the device can report honestly:
//! - flex (host memory): the child's peak resident set above its resident set just before the
//!   timed calls (`/proc/self/clear_refs` resets the peak between phases; inputs excluded);
//! - pooled devices (wgpu, cuda): bytes the device's memory pools reserve after the phase, above
//!   what they held before it.
//!
//! The `memory` field of a report says which was used.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use linvit_train::bench::{proc_status_kb, Budget};
use serde::{Deserialize, Serialize};

use crate::CliError;

/// The machine a benchmark ran on, recorded in its JSON: numbers from another CPU or
/// instruction set are not comparable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU model (`/proc/cpuinfo`), else the architecture.
    pub cpu: String,
    pub cores: usize,
    /// The instruction set linvit's CPU kernels ran: the widest this CPU has, or what
    /// `LINVIT_ISA` narrowed it to (`portable`, `avx2`, `avx512`). Burn's own ops choose theirs.
    pub isa: String,
    /// How the allocator was set ([`keep_freed_memory`]); empty in reports from before it was
    /// recorded.
    #[serde(default)]
    pub allocator: String,
}

impl Machine {
    pub fn this() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, name)| name.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            isa: linvit_attention::isa::selected().name().to_string(),
            allocator: allocator().to_string(),
        }
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
/// ([`MemoryProbe`] trims before each phase). Every benchmark report records it
/// ([`Machine::allocator`]).
///
/// One arena: a step runs on rayon's workers (`linvit_train::workers`), and glibc gives each
/// thread that allocates its own arena, each keeping what was freed in it, so buffers freed by
/// one worker were not reused by the other: peak training memory rose 7-14% over the five T
/// presets (flatten_pvt_t 816 -> 913 MiB; one arena: 816, as before the workers ran the step).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any allocation-heavy work or thread; mallopt
    // only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        FREED_MEMORY_KEPT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether [`keep_freed_memory`] ran in this process (a report must not claim a setting that a
/// library caller never applied).
static FREED_MEMORY_KEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The allocator setting as reports record it.
fn allocator() -> &'static str {
    if FREED_MEMORY_KEPT.load(std::sync::atomic::Ordering::Relaxed) {
        "glibc, freed memory kept (M_MMAP_MAX=0, M_TRIM_THRESHOLD=INT_MAX), one arena (M_ARENA_MAX=1)"
    } else {
        "the platform's default"
    }
}

/// Peak-memory probe for one phase.
pub(crate) struct MemoryProbe {
    device: Device,
    base: u64,
}

/// `MemAvailable` of the machine, bytes.
pub(crate) fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// How [`MemoryProbe`] measures on `device`.
pub fn memory_method(device: &Device) -> &'static str {
    if device.memory_pool_usage().is_some() {
        "device memory pools: bytes reserved after the phase above those reserved before it"
    } else if proc_status_kb("VmHWM:").is_some() {
        "peak resident set of the point's process above its resident set before the phase (inputs excluded)"
    } else {
        "not measured on this platform"
    }
}

impl MemoryProbe {
    pub(crate) fn start(device: &Device) -> Self {
        let _ = device.sync();
        let base = match device.memory_pool_usage() {
            Some(u) => u.bytes_reserved,
            None => {
                // Freed memory the allocator keeps (see [`keep_freed_memory`]) goes
                // back first, so reuse of it does not hide this phase's allocations.
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                // SAFETY: malloc_trim only returns free heap memory to the kernel.
                unsafe {
                    libc::malloc_trim(0);
                }
                // Resets VmHWM to the current resident set (Linux >= 4.0).
                let _ = std::fs::write("/proc/self/clear_refs", "5");
                proc_status_kb("VmRSS:").unwrap_or(0) * 1024
            }
        };
        MemoryProbe {
            device: device.clone(),
            base,
        }
    }

    pub(crate) fn peak(&self) -> Option<u64> {
        let _ = self.device.sync();
        let now = match self.device.memory_pool_usage() {
            Some(u) => u.bytes_reserved,
            None => proc_status_kb("VmHWM:")? * 1024,
        };
        Some(now.saturating_sub(self.base))
    }
}

pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// How a child process ended, as a row note; `true` when it looks like running out of memory.
pub(crate) fn child_failure(status: &std::process::ExitStatus, stderr: &str) -> (bool, String) {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) {
            return (
                true,
                "the point's process was killed (SIGKILL, the kernel's out-of-memory killer)"
                    .into(),
            );
        }
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string();
    let lower = stderr.to_lowercase();
    let oom = [
        "memory allocation",
        "out of memory",
        "outofmemory",
        "allocation failed",
        "failed to allocate",
        "capacity overflow",
    ]
    .iter()
    .any(|w| lower.contains(w));
    (
        oom,
        format!("the point's process failed ({status}): {last}"),
    )
}

/// Writes the report as JSON (pretty) to `path`.
pub fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<(), CliError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| cli_error!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").map_err(|e| cli_error!("{}: {e}", path.display()))
}

/// This program's path, for running points in child processes.
pub fn current_exe() -> Option<PathBuf> {
    std::env::current_exe().ok()
}

pub(crate) fn parse_list<T: std::str::FromStr>(flag: &str, raw: &str) -> Result<Vec<T>, CliError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| cli_error!("{flag}: {s:?} is not a valid value"))
        })
        .collect()
}

pub(crate) fn budget(seconds: f64, min_reps: usize) -> Result<Budget, CliError> {
    if !(seconds >= 0.0 && seconds.is_finite()) || min_reps == 0 {
        return Err("--seconds must be >= 0 and --min-reps at least 1".into());
    }
    Ok(Budget {
        min_reps,
        seconds,
        max_reps: 50.max(min_reps),
    })
}
