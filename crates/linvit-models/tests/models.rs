//! Every backbone's `tiny_*` twin: output shape, finite logits, a gradient for every parameter
//! that upstream trains; saving and reloading gives the same logits; a checkpoint that does not
//! fit fails with the key named.

use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::ModuleSnapshot;
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use linvit_attention::import::{load_upstream, load_upstream_resized, to_ours};
use linvit_attention::resize::{resize, Interp, Rule};
use linvit_models::checkpoint::{load_model, save_model};
use linvit_models::presets::{preset, PRESETS};

fn images(b: usize, size: usize, device: &Device) -> Tensor<4> {
    let n = b * 3 * size * size;
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [b, 3, size, size]), device)
}

fn img_size(name: &str) -> usize {
    preset(name).unwrap().resolved_arguments()["img_size"]
        .as_u64()
        .unwrap() as usize
}

/// Names of float parameters that received no gradient.
struct Ungraded<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    missing: Vec<String>,
    seen: usize,
}

impl ModuleVisitor for Ungraded<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.seen += 1;
        if param.val().grad(self.grads).is_none() {
            self.missing.push(self.path.join("."));
        }
    }
}

#[test]
fn every_tiny_model_trains_every_parameter_and_gives_finite_logits() {
    let device = Device::flex().autodiff();
    for p in PRESETS.iter().filter(|p| p.name.starts_with("tiny_")) {
        let config = p.config();
        let model = config.init(&device);
        let logits = model.forward(images(2, img_size(p.name), &device));
        assert_eq!(logits.dims(), [2, 10], "{}", p.name);
        let values = logits.clone().into_data().try_into_vec::<f32>().unwrap();
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{}: {values:?}",
            p.name
        );
        let grads = logits.square().sum().backward();
        let mut visitor = Ungraded {
            grads: &grads,
            path: Vec::new(),
            missing: Vec::new(),
            seen: 0,
        };
        model.visit(&mut visitor);
        // FLatten-PVT v1 builds a final norm it never applies, as upstream does.
        let expected: Vec<String> = if p.name == "tiny_flatten_pvt" {
            vec!["Pvt.norm.gamma".into(), "Pvt.norm.beta".into()]
        } else {
            Vec::new()
        };
        assert_eq!(visitor.missing, expected, "{}", p.name);
        assert!(visitor.seen > 10, "{}", p.name);
    }
}

#[test]
fn norm_attention_runs_in_every_backbone_and_trains_every_parameter() {
    let device = Device::flex().autodiff();
    for name in [
        "tiny_vit",
        "tiny_flatten_pvt",
        "tiny_swin",
        "tiny_flatten_cswin",
    ] {
        let config = preset(name).unwrap().config();
        // ViT: every block; the stage backbones: norm in every stage but the last (softmax).
        let (layout, config) = ["N", "NS", "NNS", "NNNS"]
            .iter()
            .find_map(|l| {
                config
                    .clone()
                    .with_mixers(Some(l), None)
                    .ok()
                    .map(|c| (*l, c))
            })
            .unwrap_or_else(|| panic!("{name}: no layout fits"));
        let model = config.init(&device);
        let logits = model.forward(images(2, img_size(name), &device));
        assert_eq!(logits.dims(), [2, 10], "{name}");
        let grads = logits.square().sum().backward();
        let mut visitor = Ungraded {
            grads: &grads,
            path: Vec::new(),
            missing: Vec::new(),
            seen: 0,
        };
        model.visit(&mut visitor);
        let missing: Vec<&String> = visitor
            .missing
            .iter()
            .filter(|p| !p.starts_with("Pvt.norm."))
            .collect();
        assert!(missing.is_empty(), "{name} {layout}: {missing:?}");
        let gates = format!("{model:?}").matches("NormAttention").count();
        assert!(gates >= 1, "{name} {layout}: no norm mixer was built");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("linvit-models-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_saved_model_reloads_with_identical_logits() {
    let device = Device::flex();
    for name in ["tiny_agent_deit", "tiny_flatten_swin", "tiny_flatten_cswin"] {
        let config = preset(name).unwrap().config();
        let model = config.init(&device);
        let x = images(2, img_size(name), &device);
        let before = model.forward(x.clone()).into_data();
        let dir = scratch(name);
        save_model(&dir, &config, model).unwrap();
        let (loaded_config, loaded) = load_model(&dir, &device).unwrap();
        assert_eq!(loaded_config, config);
        assert_eq!(loaded.forward(x).into_data(), before, "{name}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn loading_a_missing_model_names_the_file() {
    let dir = scratch("empty");
    let err = load_model(&dir, &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("model.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Rewrites a safetensors file with one tensor dropped and one renamed.
fn tamper(src: &std::path::Path, dst: &std::path::Path, drop: &str, rename: (&str, &str)) {
    let bytes = std::fs::read(src).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = file
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != drop)
        .map(|(k, v)| {
            (
                if k == rename.0 {
                    rename.1.to_string()
                } else {
                    k
                },
                v,
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(tensors, None, dst).unwrap();
}

/// The folder holding `reference/`, or None after saying which test skips.
fn reference_root(test: &str) -> Option<PathBuf> {
    let root = std::env::var_os("LINVIT_REFERENCE_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")))
        .filter(|p| p.join("reference").is_dir());
    if root.is_none() {
        eprintln!("SKIPPED: reference cases not found for the {test} test");
    }
    root
}

#[test]
fn an_upstream_checkpoint_with_a_missing_or_unknown_key_fails_naming_both() {
    let Some(root) = reference_root("checkpoint-mismatch") else {
        return;
    };
    let src = root.join("reference/timm_vit_reduced_model/weights.safetensors");
    let dir = scratch("tampered");
    let dst = dir.join("weights.safetensors");
    tamper(
        &src,
        &dst,
        "blocks.1.mlp.fc2.bias",
        ("norm.weight", "norm.scale"),
    );
    let config = preset("tiny_vit").unwrap().config();
    let mut model = config.init(&Device::flex());
    let err = load_upstream(&mut model, &dst, &config.renames())
        .unwrap_err()
        .to_string();
    assert!(err.contains("weights.safetensors"), "{err}");
    assert!(err.contains("blocks.1.mlp.fc2.bias"), "{err}");
    assert!(err.contains("norm.scale"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// One parameter of a model by its path: shape and host values.
fn param(model: &linvit_models::Model, path: &str) -> (Vec<usize>, Vec<f32>) {
    let tensor = model
        .collect(None, None, true)
        .into_iter()
        .find(|t| t.name == path)
        .unwrap_or_else(|| panic!("no parameter {path}"));
    let values = burn::store::bridge::to_data(&tensor)
        .unwrap()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    (tensor.shape.to_vec(), values)
}

/// A reference case's weights loaded into its preset as built (`native`) and into the preset with
/// `args` changed, resizing what the new resolution needs; with the resize log.
fn load_twice(
    root: &std::path::Path,
    name: &str,
    case: &str,
    args: serde_json::Value,
) -> (linvit_models::Model, linvit_models::Model, Vec<String>) {
    let device = Device::flex();
    let weights = root
        .join("reference")
        .join(case)
        .join("weights.safetensors");
    let p = preset(name).unwrap();
    let small = p.config();
    let mut native = small.init(&device);
    load_upstream(&mut native, &weights, &small.renames()).unwrap();
    let big = p.config_with(&args).unwrap();
    let mut resized = big.init(&device);
    let (_, log) =
        load_upstream_resized(&mut resized, &weights, &big.renames(), big.resize_rule()).unwrap();
    (native, resized, log)
}

#[test]
fn pyramid_checkpoints_load_at_another_resolution_as_their_forward_resizes() {
    // PVT resizes position embeddings bilinearly in its forward, FLatten its positional
    // encodings and agent attention its biases: loading 64-pixel weights into a model built for
    // 128 must give the logits of the 64-pixel model run on 128-pixel images.
    let Some(root) = reference_root("load-time resize") else {
        return;
    };
    let device = Device::flex();
    for (name, case) in [
        ("tiny_flatten_pvt", "flatten_pvt_reduced_model"),
        ("tiny_agent_pvt", "agent_pvt_reduced_model"),
    ] {
        let (native, resized, log) =
            load_twice(&root, name, case, serde_json::json!({ "img_size": 128 }));
        assert!(
            log.iter()
                .any(|l| l.starts_with("pos_embed1: 16x16 -> 32x32")),
            "{name}: {log:?}"
        );
        let x = images(2, 128, &device);
        let diff = max_abs_diff(native.forward(x.clone()), resized.forward(x));
        assert!(diff < 1e-5, "{name}: logits differ by {diff}");
    }
}

#[test]
fn vit_and_swin_checkpoints_resize_bicubically_at_load() {
    // DeiT's fine-tuning resizes pos_embed bicubically (CLS kept); Swin's loader resizes the
    // relative position tables bicubically when the window changes.
    let Some(root) = reference_root("bicubic load-time resize") else {
        return;
    };
    let device = Device::flex();
    for (name, case, args, path, rule) in [
        (
            "tiny_vit",
            "timm_vit_reduced_model",
            serde_json::json!({ "img_size": 64 }),
            "pos_embed",
            Rule::SquareTokens(Interp::Cubic),
        ),
        (
            "tiny_swin",
            "timm_swin_reduced_model",
            serde_json::json!({ "window_size": 8 }),
            "layers.1.blocks.1.attn.relative_position_bias_table",
            Rule::OffsetTable,
        ),
    ] {
        let big = preset(name).unwrap().config_with(&args).unwrap();
        let (native, model, log) = load_twice(&root, name, case, args);
        assert!(log.iter().any(|l| l.contains("bicubic")), "{name}: {log:?}");

        let ours = to_ours(path, &big.renames());
        let (from_shape, before) = param(&native, &ours);
        let (to_shape, after) = param(&model, &ours);
        assert_ne!(from_shape, to_shape, "{name}: {path} was not resized");
        let want = resize(TensorData::new(before.clone(), from_shape), rule, &to_shape)
            .unwrap()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(after, want, "{name}: {path}");
        if name == "tiny_vit" {
            let c = before.len() / 17;
            assert_eq!(&after[..c], &before[..c], "the CLS position is kept");
        }
        let size = img_size(name).max(64);
        let logits = model.forward(images(1, size, &device));
        let values: Vec<f32> = logits.into_data().try_into_vec().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{name}: {values:?}");
    }
}

/// Inference on flex runs fused kernels (focused attention, the MLP, GELU) where training runs
/// Burn's ops; every tiny model gives the same logits both ways (autodiff on: the op path;
/// `valid()`: the kernels).
#[test]
fn every_tiny_model_infers_on_flex_with_the_training_paths_logits() {
    let ad = Device::flex().autodiff();
    for p in PRESETS.iter().filter(|p| p.name.starts_with("tiny_")) {
        let model = p.config().init(&ad);
        let size = img_size(p.name);
        let ops = model.forward(images(2, size, &ad)).inner();
        let fused = model.valid().forward(images(2, size, &Device::flex()));
        let scale = ops.clone().abs().max().into_scalar::<f32>().max(1e-6);
        let diff = max_abs_diff(fused, ops) / scale;
        println!("{}: fused vs op path {diff:.1e}", p.name);
        assert!(diff < 1e-5, "{}: relative difference {diff:e}", p.name);
    }
}
