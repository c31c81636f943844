//! Crash safety of training runs, with the real binary: SIGKILL at random moments (startup,
//! mid-epoch, mid-checkpoint-write), resume after each kill, and the final weights must equal
//! an uninterrupted run's bit for bit on flex, with every complete checkpoint readable after
//! every kill. And a write that fails mid-checkpoint (a file-size limit standing in for a full
//! disk) must stop the run with an error naming the file while the previous checkpoint stays
//! the newest and loads.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Whether a checkpoint is being written (its temporary folder holds the weights already).
fn writing(run: &Path) -> bool {
    std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().starts_with(".tmp-")
                && e.path().join("model.bpk").is_file()
        })
}

/// Deterministic delays from a seed (xorshift), in milliseconds within `[lo, hi)`.
struct Delays(u64);

impl Delays {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

#[test]
fn training_killed_at_random_moments_resumes_to_the_uninterrupted_weights() {
    let dir = scratch("kill");
    let clean = dir.join("clean");
    let start = Instant::now();
    let out = command(&clean, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean_time = start.elapsed();

    let run = dir.join("killed");
    let mut delays = Delays(0x5eed_1234_abcd_0001);
    let (mut kills, mut attempts, mut mid_write, mut mid_epoch) = (0usize, 0usize, 0usize, 0usize);
    let span = clean_time.as_millis().max(400) as u64;
    loop {
        attempts += 1;
        assert!(attempts < 200, "no progress after {attempts} attempts");
        let started = run.join("config.toml").exists();
        if started {
            mid_epoch += usize::from(resumes_mid_epoch(&run));
        }
        // Every third attempt holds its checkpoint writes open and is killed inside one.
        let in_write = attempts % 3 == 0 && kills < 20;
        let mut cmd = command(&run, started);
        if in_write {
            cmd.env("LINVIT_FAULT_CHECKPOINT_PAUSE_MS", "400");
        }
        let mut child = cmd.spawn().unwrap();
        if kills >= 20 {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        if in_write {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !writing(&run) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            // Anywhere from startup to the end of a whole run, so kills land in every phase.
            std::thread::sleep(Duration::from_millis(delays.next(20, span)));
        }
        match child.try_wait().unwrap() {
            Some(status) => {
                // It finished before the kill: fine, but keep killing fresh attempts.
                assert!(status.success(), "a run failed on its own: {status}");
                if kills < 20 {
                    std::fs::remove_dir_all(&run).unwrap();
                }
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                mid_write += usize::from(writing(&run));
                all_checkpoints_load(&run);
            }
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
