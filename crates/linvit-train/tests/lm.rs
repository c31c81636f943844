//! The language model's run directory: checkpoints at every validation, and a resumed run that
//! ends where an uninterrupted one does.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use linvit_train::lm::{load_lm, resolve_lm, resume_lm, train_lm, LmRunConfig};

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

    // Interrupted after step 4: its config and the step-4 checkpoint are all that is left
    // (no manifest, so the newest complete folder is taken).
    let cut = root.path().join("cut");
    std::fs::create_dir_all(cut.join("checkpoints")).unwrap();
    std::fs::copy(whole.join("config.toml"), cut.join("config.toml")).unwrap();
    let step4 = "step-00000004";
    copy_dir(
        &checkpoints.join(step4),
        &cut.join("checkpoints").join(step4),
    );
    let state = std::fs::read_to_string(cut.join("checkpoints").join(step4).join("state.json"));
    let state: serde_json::Value = serde_json::from_str(&state.unwrap()).unwrap();
    assert_eq!(state["step"], 4);
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
