//! `linvit_attention::explain` on whole models: every attention call of every family records its
//! implied matrix, and that matrix times the values is the module's own output, on whole grids,
//! on Swin's shifted windows and on CSwin's stripes.

use burn::tensor::{Device, Distribution, Tensor};
use linvit_attention::explain::{record, Record};
use linvit_models::presets;

/// Records one forward of `config`'s model on two random images.
fn records(config: &linvit_models::ModelConfig) -> Vec<Record> {
    let device = Device::flex();
    let model = config.init(&device);
    let [channels, side] = config.input();
    let images = Tensor::<4>::random(
        [2, channels, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let (logits, records) = record(|| model.forward(images));
    assert_eq!(logits.dims()[0], 2);
    records
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The largest |a - b| relative to the largest |b|.
fn relative_difference(a: Tensor<3>, b: Tensor<3>) -> f32 {
    let a: Vec<f32> = a.into_data().convert::<f32>().try_into_vec().unwrap();
    let b: Vec<f32> = b.into_data().convert::<f32>().try_into_vec().unwrap();
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Checks one call: shapes, rows that are distributions, and map x values == output.
fn check(name: &str, r: &Record, images: usize) {
    let [batch, heads, rows, cols] = r.attention().dims();
    let [_, vh, keys, _] = r.values.dims();
    assert_eq!((vh, keys), (heads, cols), "{name}: {}", r.kind);
    assert_eq!(rows, r.output.dims()[1], "{name}: {}", r.kind);
    match r.windows {
        Some(w) => assert_eq!(batch, images * w.count(), "{name}: {:?}", w),
        None => assert_eq!(batch, images, "{name}: {}", r.kind),
    }
    if r.normalised {
        // Softmax rows sum to 1; the linear forms' to `S / (S + 1e-6)` with `S` the row's
        // score sum: under 1, far under where the scores are tiny (the `1e-6` that keeps the
        // denominator away from 0 takes that mass, in the module too).
        let short = if matches!(r.kind, "focused" | "linear") {
            1.0
        } else {
            1e-4
        };
        let values = host(r.attention().clone());
        for row in values.chunks(cols) {
            let sum: f32 = row.iter().sum();
            assert!(
                sum <= 1.0 + 1e-4 && sum > 1.0 - short,
                "{name}: {} row sums to {sum}",
                r.kind
            );
            assert!(row.iter().all(|v| *v >= -1e-6), "{name}: {}", r.kind);
        }
    }
    let diff = relative_difference(r.attention_times_values(), r.output.clone());
    assert!(diff < 1e-4, "{name}: {} map x V is off by {diff}", r.kind);
}

#[test]
fn every_family_records_a_matrix_that_reproduces_its_output() {
    let mut seen = std::collections::BTreeSet::new();
    let mut windowed = 0;
    for name in [
        "tiny_vit",
        "tiny_agent_deit",
        "tiny_flatten_pvt",
        "tiny_agent_pvt",
        "tiny_swin",
        "tiny_flatten_swin",
        "tiny_agent_swin",
        "tiny_flatten_cswin",
        "tiny_agent_cswin",
    ] {
        let config = presets::preset(name)
            .unwrap()
            .config_with(&serde_json::json!({}))
            .unwrap();
        let calls = records(&config);
        assert!(!calls.is_empty(), "{name} recorded nothing");
        for r in &calls {
            check(name, r, 2);
            seen.insert(r.kind);
            windowed += r.windows.is_some() as usize;
        }
        if name == "tiny_agent_deit" {
            let agent = calls.iter().find(|r| r.kind == "agent").unwrap();
            let names: Vec<&str> = agent.maps.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, ["attention", "query_to_agent", "agent_to_key"]);
        }
    }
    // Plain linear and norm attention through a layout.
    let config = presets::preset("tiny_flatten_pvt")
        .unwrap()
        .config_with(&serde_json::json!({}))
        .unwrap()
        .with_mixers(Some("PPNN"), None)
        .unwrap();
    for r in &records(&config) {
        check("tiny_flatten_pvt PPNN", r, 2);
        seen.insert(r.kind);
    }
    let seen: Vec<&str> = seen.into_iter().collect();
    assert_eq!(seen, ["agent", "focused", "linear", "norm", "softmax"]);
    assert!(windowed > 0, "Swin and CSwin record their windows");
}

#[test]
fn nothing_is_recorded_outside_record_and_outputs_do_not_change() {
    let config = presets::preset("tiny_flatten_swin")
        .unwrap()
        .config_with(&serde_json::json!({}))
        .unwrap();
    let device = Device::flex();
    let model = config.init(&device);
    let [channels, side] = config.input();
    let images = Tensor::<4>::random(
        [1, channels, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    // Recording takes the op path instead of the fused kernels: the same logits up to rounding.
    let plain = model.forward(images.clone());
    let (recorded, calls) = record(|| model.forward(images));
    assert!(!calls.is_empty());
    let diff = relative_difference(plain.unsqueeze::<3>(), recorded.unsqueeze::<3>());
    assert!(diff < 1e-4, "{diff}");
    assert!(!linvit_attention::explain::recording());
}
