//! Where a step's arithmetic runs: on rayon's worker threads.

/// Runs `f` on one of rayon's worker threads and returns what it returns.
///
/// Why: flex's ops, gemm and linvit's kernels split their loops with rayon. From a thread
/// outside rayon's pool, such as `main`, each loop is sent to the pool while the calling thread
/// sleeps until the loop ends: a wake-up and two context switches per op, thousands of them per
/// training step, and a third thread on a machine of two cores. From a worker, a loop is split
/// between it and the other workers by work stealing, and the serial code between loops runs
/// on a worker as well: 3-5.5% off the five T presets' training steps on 2 cores
/// (`experiments/bench/on_workers.md`).
///
/// `f` must not wait for a lock (such as `train::RNG_LOCK`) that its caller could not take
/// itself first: a worker waiting inside one parallel loop runs other jobs on top of its stack,
/// another caller's `on_workers` among them, and if that job waits for a lock whose holder needs
/// the loop underneath it to finish, neither goes on (two training steps side by side did). So
/// callers take such locks before they call this, and hold them until it returns.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
