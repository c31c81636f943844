//! Training on another machine's device through Burn's remote backend, with the real binary on
//! loopback: `linvit serve` hosts a flex device, `linvit train --device ws://...` trains on it and
//! must end with the local flex run's weights; a server that dies mid-run stops the training with
//! a one-line error naming the device, and the last checkpoint survives and resumes locally.
#![cfg(feature = "remote")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use common::{linvit, scratch};
use linvit_models::checkpoint::load_model;
use linvit_train::checkpoint::{latest, weights};

/// A few steps of the quickstart model: 4 batches an epoch, a checkpoint every 2 batches.
const ARGS: [&str; 14] = [
    "--set",
    "data.train_size=64",
    "--set",
    "data.val_size=16",
    "--set",
    "train.batch_size=16",
    "--set",
    "train.warmup_epochs=0",
    "--set",
    "train.log_every=1",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "train.epochs=2",
];

/// A `linvit serve` process on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    device: String,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_linvit"))
            .args(["serve", "--bind", "127.0.0.1:0", "--device", "flex"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // The server logs sessions to stdout: keep draining it, or it blocks (or dies of
        // SIGPIPE) once nobody reads.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let address = line
            .trim()
            .strip_prefix("serving 1 device(s) on ")
            .unwrap_or_else(|| panic!("unexpected first line from linvit serve: {line:?}"));
        let device = address.to_string();
        Server { child, device }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn train(device: &str, run: &Path) -> (i32, String, String) {
    let mut args = vec!["train", "--device", device, "--out", run.to_str().unwrap()];
    args.extend(ARGS);
    linvit(&args)
}

fn final_weights(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let dir = latest(run).unwrap().expect("a complete checkpoint");
    weights(&load_model(&dir, &Device::flex()).unwrap().1)
}

/// `[loss, gradient norm]` of every row of `steps.csv` (step, epoch, loss, lr, grad_norm, ...).
fn step_rows(run: &Path) -> Vec<[f64; 2]> {
    std::fs::read_to_string(run.join("steps.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            [f[2], f[4]]
        })
        .collect()
}

#[test]
fn training_through_a_loopback_server_ends_with_the_local_weights() {
    let dir = scratch("remote");
    let server = Server::start();
    let (remote, local) = (dir.join("remote"), dir.join("local"));
    let (code, out, err) = train(&server.device, &remote);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = train("flex", &local);
    assert_eq!(code, 0, "{out}{err}");

    let (rows_r, rows_l) = (step_rows(&remote), step_rows(&local));
    assert_eq!((rows_r.len(), rows_l.len()), (8, 8));
    // Largest relative difference of [loss, gradient norm] over a range of steps.
    let differ = |steps: std::ops::Range<usize>| {
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        steps.fold([0f64; 2], |m, i| {
            let (r, l) = (rows_r[i], rows_l[i]);
            [m[0].max(rel(r[0], l[0])), m[1].max(rel(r[1], l[1]))]
        })
    };
    let (first, all) = (differ(0..2), differ(0..8));
    let e = |[l, g]: [f64; 2]| format!("{l:.1e}, {g:.1e}");
    let (a, b) = (final_weights(&remote), final_weights(&local));
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .flat_map(|(k, x)| x.iter().zip(&b[k]).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max);
    println!(
        "remote vs local flex, relative differences of [loss, gradient norm]: first two steps \
         {}, all 8 steps {}; largest weight difference {worst:.1e}",
        e(first),
        e(all)
    );
    // The server runs flex, but the client's fusion layer writes some fused flex kernels (layer
    // norm, ...) out op by op, so the runs agree up to float rounding: within 1e-6 over the first
    // steps, and then as far as 8 steps of AdamW at lr 3e-3 through ReLU kinks let rounding grow.
    assert!(first[0] < 1e-6 && first[1] < 1e-6, "first steps {first:?}");
    assert!(all[0] < 1e-3, "step losses differ by {all:?}");
    assert!(worst < 1e-2, "weights differ by {worst}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_server_that_dies_mid_run_stops_training_with_an_error_and_the_checkpoint_survives() {
    let dir = scratch("remote-drop");
    let run = dir.join("run");
    let server = Server::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_linvit"))
        .args(["train", "--device", &server.device, "--out"])
        .arg(&run)
        .args(ARGS)
        .args(["--set", "train.epochs=6"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    // The manifest, not `latest` (which clears the temporary folder of a write in progress).
    while !run.join("checkpoints/latest.json").is_file() {
        assert!(Instant::now() < deadline, "no checkpoint within 300 s");
        if child.try_wait().unwrap().is_some() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("training ended before its first checkpoint: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("training did not stop within 120 s of the server's death");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    println!(
        "after the server died: exit {status}; stderr: {}",
        err.trim()
    );
    assert_eq!(status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("ws://127.0.0.1:"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );

    // The newest checkpoint loads, and the run finishes from it on the local device.
    final_weights(&run);
    let (code, out, err) = linvit(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "flex",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unreachable_servers_and_bad_addresses_are_one_line_errors() {
    // Nothing listens on port 1 of loopback: the connect fails before any work (exit 2).
    let (code, _, err) = linvit(&["train", "--device", "ws://127.0.0.1:1", "--out", "unused"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: device \"ws://127.0.0.1:1\": the server cannot be reached"),
        "{err}"
    );
    let (code, _, err) = linvit(&["eval", "--checkpoint", "unused", "--device", "ws://gpu-box"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected ws://HOST:PORT[/N]"), "{err}");
    let (code, _, err) = linvit(&["serve", "--bind", "127.0.0.1:99999"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: cannot listen on 127.0.0.1:99999"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
