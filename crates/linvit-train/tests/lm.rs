//! The language model's run directory: checkpoints at every validation, and a resumed run that
//! ends where an uninterrupted one does.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use linvit_train::lm::{load_lm, resolve_lm, resume_lm, train_lm, LmRunConfig};
use linvit_train::TrainError;

/// A 2-layer, width-32 TransNormer on 30 kB of stories: 12 steps, a checkpoint every 4.
fn tiny() -> LmRunConfig {
    let sets: Vec<String> = [
        "model.layers=2",
        "model.embed_dim=32",
        "model.hidden_dim=32",
        "model.glu_dim=64",
        "model.lrpe=[true, false]",
        "model.init_std=0.02",
        "data.seq_len=32",
        "data.procedural_bytes=30000",
        "train.steps=12",
        "train.batch_size=4",
        "train.warmup_steps=3",
        "train.log_every=2",
        "train.eval_every=4",
        "train.eval_windows=4",
        "train.keep_checkpoints=5",
    ]
    .map(String::from)
    .into();
    resolve_lm(None, &sets).expect("the test config resolves")
}

/// The logits of a saved model on fixed bytes, as bits: equal only for equal weights.
fn logits(run: &Path) -> Vec<u32> {
    let device = Device::flex();
    let (_, model) = load_lm(run, &device).unwrap();
    let bytes: Vec<i64> = b"Mara lived near the sea"
        .iter()
        .map(|&b| b as i64)
        .collect();
    let n = bytes.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(bytes, [1, n]), &device);
    let out = model.forward(ids).into_data().convert::<f32>();
    out.as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// `metrics.csv` without its timing column.
fn metrics(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    text.lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A copy of run `whole` as if interrupted after step 4: its config and the step-4 checkpoint
/// are all that is left (no manifest, so the newest complete folder is taken).
fn interrupted_after_step_4(whole: &Path, cut: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(cut.join("checkpoints")).unwrap();
    std::fs::copy(whole.join("config.toml"), cut.join("config.toml")).unwrap();
    let step4 = "checkpoints/step-00000004";
    copy_dir(&whole.join(step4), &cut.join(step4));
    let state = std::fs::read_to_string(cut.join(step4).join("state.json"));
    let state: serde_json::Value = serde_json::from_str(&state.unwrap()).unwrap();
    assert_eq!(state["step"], 4);
    let accum = std::fs::read_to_string(whole.join("config.toml")).unwrap();
    let accum: LmRunConfig = toml::from_str(&accum).unwrap();
    assert_eq!(state["micro_step"], 4 * accum.train.accum_steps as u64);
    cut.to_path_buf()
}

#[test]
fn a_resumed_lm_run_ends_with_the_same_weights_and_metrics_as_an_uninterrupted_one() {
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    let summary = train_lm(&tiny(), &whole, &Device::flex(), &mut std::io::sink()).unwrap();
    assert_eq!(summary.steps, 12);
    let checkpoints = whole.join("checkpoints");
    for step in [4, 8, 12] {
        let dir = checkpoints.join(format!("step-{step:08}"));
        for file in [
            "model.json",
            "model.bpk",
            "optimizer.safetensors",
            "state.json",
        ] {
            assert!(dir.join(file).is_file(), "{} lacks {file}", dir.display());
        }
    }

    // Every parameter trains (lazily initialised weights once tracked no gradient).
    let params = |step: u64| {
        let dir = checkpoints.join(format!("step-{step:08}"));
        let (_, model) = load_lm(&dir, &Device::flex()).unwrap();
        linvit_train::optim::params_by_path(&model)
    };
    let (at4, at8) = (params(4), params(8));
    assert!(at4.len() >= 10, "{:?}", at4.keys());
    for (path, before) in &at4 {
        let change = (at8[path].clone() - before.clone())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(change > 0.0, "{path} did not change between steps 4 and 8");
    }

    let cut = interrupted_after_step_4(&whole, &root.path().join("cut"));
    let resumed = resume_lm(&cut, &Device::flex(), &mut std::io::sink()).unwrap();

    // Interrupted before its first checkpoint: it starts over from the seed.
    let early = root.path().join("early");
    std::fs::create_dir_all(&early).unwrap();
    std::fs::copy(whole.join("config.toml"), early.join("config.toml")).unwrap();
    resume_lm(&early, &Device::flex(), &mut std::io::sink()).unwrap();

    let expected = logits(&whole);
    assert_eq!(logits(&cut), expected, "resumed at step 4");
    assert_eq!(
        logits(&early),
        expected,
        "resumed before the first checkpoint"
    );
    assert_eq!(metrics(&cut), metrics(&whole));
    assert_eq!(metrics(&early), metrics(&whole));
    assert_eq!(
        metrics(&cut).len(),
        1 + 6,
        "a header and a row every 2 steps"
    );
    assert_eq!(resumed.final_val_bpb, summary.final_val_bpb);
    assert_eq!(resumed.initial_val_bpb, summary.initial_val_bpb);
}

#[test]
fn a_run_directory_without_a_config_cannot_be_resumed() {
    let root = tempfile::tempdir().unwrap();
    let err = resume_lm(root.path(), &Device::flex(), &mut std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("config.toml"), "{err}");
}

#[test]
fn accumulated_micro_batches_all_train_and_an_accumulated_run_resumes_exactly() {
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny();
    config.train.accum_steps = 2;
    let whole = root.path().join("whole");
    let summary = train_lm(&config, &whole, &Device::flex(), &mut std::io::sink()).unwrap();
    assert_eq!(summary.steps, 12);
    let cut = interrupted_after_step_4(&whole, &root.path().join("cut"));
    resume_lm(&cut, &Device::flex(), &mut std::io::sink()).unwrap();
    assert_eq!(logits(&cut), logits(&whole));
    assert_eq!(metrics(&cut), metrics(&whole));

    // The second micro-batch of each step counts: without it the weights differ.
    let plain = root.path().join("plain");
    train_lm(&tiny(), &plain, &Device::flex(), &mut std::io::sink()).unwrap();
    assert_ne!(logits(&plain), logits(&whole));
}

#[test]
fn a_non_finite_lm_step_stops_the_run_naming_it_or_is_skipped_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny();
    // The first step at this rate throws the weights so far that the next pass overflows (its
    // loss or its gradients).
    config.train.lr = 1e30;
    config.train.warmup_steps = 0;
    config.train.clip_grad = 0.0;
    let stopped = root.path().join("stopped");
    let err = train_lm(&config, &stopped, &Device::flex(), &mut std::io::sink()).unwrap_err();
    match &err {
        TrainError::NonFinite { step, .. } => assert_eq!(*step, 2, "{err}"),
        other => panic!("expected a non-finite loss, got {other}"),
    }
    assert!(err.to_string().contains("train.skip_nonfinite"), "{err}");

    config.train.skip_nonfinite = true;
    let skipped = root.path().join("skipped");
    let summary = train_lm(&config, &skipped, &Device::flex(), &mut std::io::sink()).unwrap();
    let skips = &summary.skipped_steps;
    assert_eq!(
        skips.len(),
        11,
        "every micro-batch after the first: {skips:?}"
    );
    assert!(
        summary.skipped_steps[0].starts_with("step 2 (epoch 1): "),
        "{:?}",
        summary.skipped_steps
    );
    // The last checkpoint holds the one step that was taken, finite.
    let (_, model) = load_lm(&skipped, &Device::flex()).unwrap();
    for (path, p) in linvit_train::optim::params_by_path(&model) {
        let finite = p.is_finite().all().into_scalar::<bool>();
        assert!(finite, "{path} is not finite");
    }
}
