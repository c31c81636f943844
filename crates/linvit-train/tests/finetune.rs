//! Fine-tuning: `model.init` loads a checkpoint except a head of another shape, `train.freeze`
//! keeps parameters bit-identical and out of the optimizer, `train.layer_decay` scales each
//! depth's learning rate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use linvit_models::checkpoint::load_model;
use linvit_train::checkpoint::weights;
use linvit_train::groups::param_groups;
use linvit_train::{train, RunConfig};

mod common;
use common::{config_with, quiet, serial};

fn config(sets: &[&str]) -> RunConfig {
    config_with(
        &[
            "model.preset=tiny_vit",
            "data.image_size=32",
            "data.train_size=256",
            "data.val_size=64",
            "data.num_classes=2",
            "data.augment.randaugment_ops=0",
            "data.augment.erase_prob=0.0",
            "data.num_workers=1",
            "train.batch_size=32",
            "train.epochs=1",
            "train.lr=3e-3",
            "train.warmup_epochs=0",
            "train.mixup=0.0",
            "train.cutmix=0.0",
        ],
        sets,
    )
}

/// The pretrained run every test starts from: two classes.
fn source() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let run = dir.join("source");
        train(&config(&[]), &run, &Device::flex(), &quiet()).expect("the source run trains");
        run
    })
}

fn model_weights(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let (_, model) = load_model(dir, &Device::flex()).unwrap();
    weights(&model)
}

/// Parameter paths in a checkpoint's optimizer state (`exp_avg/<path>`).
fn optimizer_paths(checkpoint: &Path) -> Vec<String> {
    let bytes = std::fs::read(checkpoint.join("optimizer.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|k| k.strip_prefix("exp_avg/").map(str::to_string))
        .collect()
}

#[test]
fn a_linear_probe_loads_every_weight_replaces_the_head_and_trains_only_it() {
    let _serial = serial();
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("probe");
    let init = format!("model.init={}", source.display());
    let probe = config(&[
        "data.num_classes=3",
        &init,
        r#"train.freeze=["*", "!head"]"#,
    ]);
    train(&probe, &run, &Device::flex(), &quiet()).unwrap();

    let before = model_weights(&source.join("best"));
    let after = model_weights(&run.join("checkpoints/epoch-0001"));
    assert_eq!(before.len(), after.len());
    for (path, w) in &after {
        if path.contains("head") {
            // Three classes now: 64 x 3 weights and 3 biases, where the source had 2.
            let expected = if path.ends_with("bias") { 3 } else { 64 * 3 };
            assert_eq!(w.len(), expected, "{path}");
            continue;
        }
        // Loaded from the source and frozen: bit for bit.
        assert_eq!(w, &before[path], "{path} changed");
    }
    let mut trained = optimizer_paths(&run.join("checkpoints/epoch-0001"));
    trained.sort();
    assert_eq!(trained, vec!["Vit.head.bias", "Vit.head.weight"]);
    // The run records where its weights came from.
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let recorded = linvit_train::config::from_toml(&text).unwrap();
    assert_eq!(
        recorded.model.init.as_deref(),
        Some(std::path::absolute(source).unwrap().as_path())
    );
}

#[test]
fn fine_tuning_without_freezing_moves_the_loaded_weights() {
    let _serial = serial();
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let init = format!("model.init={}", source.display());
    // A tiny learning rate: the weights stay within rounding of the source's, which a model
    // drawn from the seed is far from.
    let still = dir.path().join("still");
    train(
        &config(&[
            "data.num_classes=3",
            &init,
            "train.lr=1e-12",
            "train.min_lr=0",
        ]),
        &still,
        &Device::flex(),
        &quiet(),
    )
    .unwrap();
    let moved = dir.path().join("moved");
    train(
        &config(&["data.num_classes=3", &init]),
        &moved,
        &Device::flex(),
        &quiet(),
    )
    .unwrap();
    let before = model_weights(&source.join("best"));
    let diff = |run: &Path| {
        let after = model_weights(&run.join("checkpoints/epoch-0001"));
        after
            .iter()
            .filter(|(p, _)| !p.contains("head"))
            .flat_map(|(p, w)| w.iter().zip(&before[p]).map(|(a, b)| (a - b).abs()))
            .fold(0.0f32, f32::max)
    };
    assert!(diff(&still) < 1e-6, "{}", diff(&still));
    assert!(diff(&moved) > 1e-3, "{}", diff(&moved));
    let metrics = std::fs::read_to_string(moved.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(row["train_loss"].as_f64().unwrap().is_finite(), "{row}");
}

#[test]
fn a_checkpoint_that_does_not_fit_is_one_line_naming_the_keys() {
    let _serial = serial();
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let init = format!("model.init={}", source.display());
    let run = dir.path().join("misfit");
    let err = train(
        &config(&[&init, "model.args.depth=1"]),
        &run,
        &Device::flex(),
        &quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`model.init`"), "{err}");
    assert!(err.contains("unexpected keys: blocks.1."), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert!(!run.exists(), "a failed start writes nothing");

    let err = train(
        &config(&["model.init=/no/such/run"]),
        &run,
        &Device::flex(),
        &quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`model.init`") && err.contains("/no/such/run"),
        "{err}"
    );
}

#[test]
fn layer_decay_scales_each_depth_and_a_freeze_typo_is_an_error() {
    let config = config(&["train.layer_decay=0.5", r#"train.freeze=["blocks.0"]"#]);
    let model = config.model_config(2, 3).unwrap().init(&Device::flex());
    let groups = param_groups(&model, &config.train).unwrap();
    // tiny_vit: two blocks, so depths 0 (embeddings) .. 3 (final norm, head).
    let scale = |path: &str| groups.lr_scale.get(path).copied();
    assert_eq!(scale("Vit.patch_embed.proj.weight"), Some(0.125));
    assert_eq!(scale("Vit.pos_embed"), Some(0.125));
    assert_eq!(scale("Vit.cls_token"), Some(0.125));
    assert_eq!(scale("Vit.blocks.1.attn.Softmax.qkv.weight"), Some(0.5));
    assert_eq!(scale("Vit.norm.gamma"), Some(1.0));
    assert_eq!(scale("Vit.head.weight"), Some(1.0));
    // Frozen parameters are in no group.
    assert!(groups.frozen.contains("Vit.blocks.0.norm1.gamma"));
    assert_eq!(scale("Vit.blocks.0.norm1.gamma"), None);
    assert!(groups
        .lr_scale
        .keys()
        .all(|p| !p.starts_with("Vit.blocks.0.")));
    assert!(
        groups.summary.contains("depth  2: lr x 0.5000"),
        "{}",
        groups.summary
    );

    let mut typo = config.train.clone();
    typo.freeze = vec!["haed".into()];
    let err = param_groups(&model, &typo).unwrap_err().to_string();
    assert!(
        err.contains("train.freeze") && err.contains("haed"),
        "{err}"
    );
    assert!(
        err.contains("head"),
        "lists the real top-level modules: {err}"
    );
}
