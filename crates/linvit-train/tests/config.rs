//! Config resolution: precedence, and errors that name the key before any work starts.

use std::path::Path;

use burn::tensor::Device;
use linvit_train::{resolve, train, ConfigError, Progress, TrainError, TrainOptions};

fn sets(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

#[test]
fn without_a_file_the_embedded_quickstart_is_resolved() {
    let c = resolve(None, &[]).unwrap();
    assert_eq!(c.model.preset.as_deref(), Some("tiny_flatten_pvt"));
    assert_eq!(c.data.kind, linvit_data::DataKind::Synthetic);
    assert!(c.train.epochs >= 1);
}

#[test]
fn a_set_overrides_the_file_which_overrides_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(
        &file,
        "[model]\npreset = \"tiny_vit\"\n[train]\nepochs = 7\nwarmup_epochs = 1\nlr = 0.01\n",
    )
    .unwrap();
    let c = resolve(
        Some(&file),
        &sets(&["train.lr=5e-4", "data.kind=synthetic"]),
    )
    .unwrap();
    assert_eq!(c.train.epochs, 7);
    assert_eq!(c.train.lr, 5e-4);
    // Untouched keys keep the defaults.
    assert_eq!(c.train.weight_decay, 0.05);
    assert_eq!(c.train.eps, 1e-8);
}

#[test]
fn every_committed_recipe_resolves() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // Language-model recipes (`lm_*`) have their own schema.
            let is_lm = path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("lm_"));
            if is_lm {
                linvit_train::lm::resolve_lm(Some(&path), &[])
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            } else {
                resolve(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} recipes");
}

#[test]
fn an_unknown_key_is_named_with_the_nearest_valid_key() {
    let err = resolve(None, &sets(&["train.lrr=0.1"])).unwrap_err();
    match &err {
        ConfigError::UnknownKey { key, suggestion } => {
            assert_eq!(key, "train.lrr");
            assert_eq!(suggestion.as_deref(), Some("train.lr"));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("did you mean `train.lr`"), "{err}");

    let err = resolve(None, &sets(&["data.augment.mixup_alhpa=0.2"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("did you mean `data.augment.mixup_alpha`"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[trian]\nepochs = 3\n").unwrap();
    let err = resolve(Some(&file), &[]).unwrap_err();
    assert!(err.to_string().contains("`trian`"), "{err}");
    assert!(err.to_string().contains("`train`"), "{err}");
}

#[test]
fn a_wrong_type_names_the_key() {
    let err = resolve(None, &sets(&["train.epochs=\"three\""])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("train.epochs"), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn out_of_range_values_fail_before_any_work() {
    for (set, key) in [
        ("train.lr=-0.1", "train.lr"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.ema=1.5", "train.ema"),
        ("model.preset=tiny_flaten_pvt", "model.preset"),
    ] {
        let err = resolve(None, &sets(&[set])).unwrap_err();
        assert!(err.to_string().contains(key), "{set}: {err}");
    }
    let err = resolve(None, &sets(&["model.preset=tiny_flaten_pvt"])).unwrap_err();
    assert!(err.to_string().contains("tiny_flatten_pvt"), "{err}");
}

#[test]
fn a_missing_dataset_names_the_folder_and_nothing_is_written() {
    let c = resolve(
        None,
        &sets(&["data.kind=idx", "data.path=/nonexistent/fashion-mnist"]),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let opts = TrainOptions {
        progress: Progress::Quiet,
        ..TrainOptions::default()
    };
    let err = train(&c, &run, &Device::flex(), &opts).unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/fashion-mnist"),
        "{err}"
    );
    assert!(!run.exists());
}
