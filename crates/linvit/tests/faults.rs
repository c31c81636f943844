//! Crash safety of training runs, with the real binary: SIGKILL at random moments (startup,
//! mid-epoch, mid-checkpoint-write), resume after each kill, and the final weights must equal
//! an uninterrupted run's bit for bit on flex, with every complete checkpoint readable after
//! every kill. And a write that fails mid-checkpoint (a file-size limit standing in for a full
//! disk) must stop the run with an error naming the file while the previous checkpoint stays
//! the newest and loads.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use burn::tensor::Device;
use linvit_models::checkpoint::load_model;
use linvit_train::checkpoint::{latest, weights};

const ARGS: [&str; 14] = [
    "--set",
    "data.train_size=128",
    "--set",
    "data.val_size=32",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.epochs=6",
    "--set",
    "train.log_every=1",
    "--set",
    "train.warmup_epochs=0",
    // 4 batches an epoch: a checkpoint after batch 2 and at the end, so kills resume mid-epoch.
    "--set",
    "train.checkpoint_every=2",
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("linvit-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn command(run: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_linvit"));
    c.arg("train");
    if resume {
        c.args(["--resume", run.to_str().unwrap()]);
    } else {
        c.args(ARGS).args(["--out", run.to_str().unwrap()]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Every complete checkpoint folder of a run loads; returns how many there are.
fn all_checkpoints_load(run: &Path) -> usize {
    let root = run.join("checkpoints");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("epoch-") && e.path().join("state.json").is_file() {
            load_model(&e.path(), &Device::flex())
                .unwrap_or_else(|err| panic!("{name} is unreadable after a kill: {err}"));
            n += 1;
        }
    }
    n
}

/// The weights of a run's newest complete checkpoint.
fn final_weights(run: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let dir = newest(run);
    let (_, model) = load_model(&dir, &Device::flex()).unwrap();
    weights(&model)
}

fn newest(run: &Path) -> PathBuf {
    latest(run).unwrap().expect("a complete checkpoint")
}

/// Whether the newest complete checkpoint was taken inside an epoch.
fn resumes_mid_epoch(run: &Path) -> bool {
    latest(run)
        .unwrap()
        .is_some_and(|dir| dir.to_string_lossy().contains("-batch-"))
}

/// The checkpoint writes under way or cut short: temporary folders that hold the weights
/// already, with the time their weights were written (a killed write leaves its folder behind,
/// so a new write is one not in an earlier snapshot).
fn writes(run: &Path) -> BTreeSet<(PathBuf, SystemTime)> {
    std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .filter_map(|e| {
            let weights = e.path().join("model.bpk");
            let written = weights.metadata().and_then(|m| m.modified()).ok()?;
            Some((weights, written))
        })
        .collect()
}

/// The checkpoint the manifest names, read without touching anything (unlike
/// `checkpoint::latest`, which clears unfinished writes and so must not run beside a live run).
fn committed(run: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run.join("checkpoints/latest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(manifest["checkpoint"].as_str()?.to_string())
}

/// Training steps written so far (rows of `steps.csv`; the run logs every step).
fn steps_written(run: &Path) -> usize {
    std::fs::read_to_string(run.join("steps.csv"))
        .map(|text| text.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

/// Deterministic choices from a seed (xorshift), within `[lo, hi)`.
struct Choices(u64);

impl Choices {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// Where an attempt is killed. Every moment is read from the run's own progress markers (steps
/// written, checkpoint folders renamed into place), never from a clock, so the coverage counts
/// hold however loaded the machine is.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// As soon as the process exists: during startup or while resuming.
    Startup,
    /// Once this many more training steps are written.
    Steps(usize),
    /// Inside a checkpoint write: the weights are in the temporary folder, the rest is not.
    InWrite,
    /// Right after a new mid-epoch checkpoint is committed, so the next attempt resumes inside
    /// an epoch (the run is held there by `LINVIT_FAULT_COMMIT_PAUSE_MS`).
    AfterMidEpochCheckpoint,
}

/// Waits (polling the run directory) until `moment` is reached or the child exits; true if the
/// moment was reached with the child still running.
fn wait_for(moment: KillAt, run: &Path, child: &mut std::process::Child) -> bool {
    let steps0 = steps_written(run);
    let committed0 = committed(run);
    let writes0 = writes(run);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reached = match moment {
            KillAt::Startup => true,
            KillAt::Steps(k) => steps_written(run) >= steps0 + k,
            KillAt::InWrite => !writes(run).is_subset(&writes0),
            KillAt::AfterMidEpochCheckpoint => committed(run)
                .is_some_and(|name| Some(&name) != committed0.as_ref() && name.contains("-batch-")),
        };
        if reached {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "the run made no progress towards {moment:?} in 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn training_killed_at_random_moments_resumes_to_the_uninterrupted_weights() {
    let dir = scratch("kill");
    let clean = dir.join("clean");
    let out = command(&clean, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = dir.join("killed");
    let mut choices = Choices(0x5eed_1234_abcd_0001);
    let (mut kills, mut attempts, mut mid_write, mut mid_epoch) = (0usize, 0usize, 0usize, 0usize);
    loop {
        attempts += 1;
        assert!(attempts < 200, "no progress after {attempts} attempts");
        let started = run.join("config.toml").exists();
        if started {
            mid_epoch += usize::from(resumes_mid_epoch(&run));
        }
        let mut cmd = command(&run, started);
        if kills >= 20 {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        // Every third attempt is killed inside a checkpoint write, every third right after a
        // mid-epoch checkpoint; the rest at a seeded number of steps (0: during startup).
        let moment = match attempts % 3 {
            0 => KillAt::InWrite,
            1 => KillAt::AfterMidEpochCheckpoint,
            _ => match choices.next(0, 10) as usize {
                0 => KillAt::Startup,
                k => KillAt::Steps(k),
            },
        };
        // The pauses only hold the run at the chosen point until the kill arrives; a run that
        // is not killed there goes on after them.
        match moment {
            KillAt::InWrite => {
                cmd.env("LINVIT_FAULT_CHECKPOINT_PAUSE_MS", "3000");
            }
            KillAt::AfterMidEpochCheckpoint => {
                cmd.env("LINVIT_FAULT_COMMIT_PAUSE_MS", "3000");
            }
            _ => {}
        }
        // Its messages go to a file: a pipe nobody reads could fill and stall the run.
        let log = dir.join("attempt.log");
        cmd.stderr(File::create(&log).unwrap());
        let writes_before = writes(&run);
        let mut child = cmd.spawn().unwrap();
        if wait_for(moment, &run, &mut child) {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            mid_write += usize::from(!writes(&run).is_subset(&writes_before));
            all_checkpoints_load(&run);
        } else {
            // It finished before the kill: fine, but start over so the kills go on.
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "a run failed on its own ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::fs::remove_dir_all(&run).unwrap();
        }
    }
    let checkpoints = all_checkpoints_load(&run);
    let (a, b) = (final_weights(&clean), final_weights(&run));
    assert_eq!(a.len(), b.len());
    let equal = a == b;
    println!(
        "kill/resume: {kills} SIGKILLs over {attempts} attempts ({mid_write} during a \
         checkpoint write, {mid_epoch} resumes from a mid-epoch checkpoint), {checkpoints} \
         checkpoints kept; final weights of {} tensors equal to the uninterrupted run: {equal}",
        a.len()
    );
    assert!(equal, "weights differ after kill and resume");
    assert!(
        mid_write >= 5,
        "only {mid_write} kills landed inside a checkpoint write"
    );
    assert!(
        mid_epoch >= 3,
        "only {mid_epoch} resumes started from a mid-epoch checkpoint"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_write_failure_mid_checkpoint_names_the_file_and_keeps_the_previous_checkpoint() {
    let dir = scratch("full");
    let run = dir.join("run");
    let mut first = command(&run, false);
    first.args(["--set", "train.epochs=1"]);
    let out = first.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = newest(&run);
    let weights_before = final_weights(&run);

    // Extend the run by an epoch with files capped at 4 KiB: the new checkpoint's weights
    // cannot be written, as on a full disk.
    let mut more = Command::new(env!("CARGO_BIN_EXE_linvit"));
    more.args([
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "train.epochs=2",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        more.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = more.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the capped run succeeded: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(&run.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    println!("a failed checkpoint write is reported as: {last}");
    let after = newest(&run);
    assert_eq!(before, after, "the newest checkpoint changed");
    assert_eq!(final_weights(&run), weights_before);
    all_checkpoints_load(&run);
    std::fs::remove_dir_all(&dir).ok();
}
