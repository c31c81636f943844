//! Behaviour of the modules beyond the reference shapes: configuration, validation, other
//! resolutions, Swin's shift mask.

use burn::tensor::{Device, Tensor, TensorData};
use linvit_attention::{
    AgentConfig, Attention, AttentionConfig, FocusedConfig, MixerShape, Projection, TokenLayout,
};

fn input(dims: [usize; 3]) -> Tensor<3> {
    let len: usize = dims.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, dims), &Device::flex())
}

fn finite_values(t: Tensor<3>) -> Vec<f32> {
    let v = t.into_data().try_into_vec::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "non-finite output");
    v
}

#[test]
fn attention_configs_read_from_kind_tagged_json_with_defaults() {
    let focused: AttentionConfig =
        serde_json::from_str(r#"{"kind": "focused", "focusing_factor": 4}"#).unwrap();
    assert_eq!(
        focused,
        AttentionConfig::Focused(FocusedConfig {
            focusing_factor: 4,
            kernel_size: 5
        })
    );
    let agent: AttentionConfig = serde_json::from_str(r#"{"kind": "agent"}"#).unwrap();
    assert_eq!(agent, AttentionConfig::Agent(AgentConfig::default()));
    let softmax: AttentionConfig = serde_json::from_str(r#"{"kind": "softmax"}"#).unwrap();
    assert_eq!(softmax.kind().name(), "softmax");
}

#[test]
fn unknown_attention_keys_and_kinds_are_rejected_by_name() {
    let err = serde_json::from_str::<AttentionConfig>(r#"{"kind": "agent", "agent_nm": 9}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("agent_nm"), "{err}");
    let err = serde_json::from_str::<AttentionConfig>(r#"{"kind": "flash"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("flash"), "{err}");
}

#[test]
fn shapes_upstream_rejects_fail_validation_with_the_reason() {
    let focused = AttentionConfig::Focused(FocusedConfig::default());
    let reason = |shape: MixerShape, attention: &AttentionConfig| {
        shape.validate(attention).unwrap_err().to_string()
    };
    assert!(reason(MixerShape::new(10, 3, [4, 4]), &focused).contains("not divisible by num_heads"));
    assert!(reason(MixerShape::new(8, 0, [4, 4]), &focused).contains("must be positive"));
    let agent = AttentionConfig::Agent(AgentConfig {
        agent_num: 10,
        dwc_kernel: 3,
    });
    assert!(reason(MixerShape::new(8, 2, [4, 4]), &agent)
        .contains("agent_num 10 is not a perfect square"));
    let sr3 = MixerShape::new(8, 2, [4, 4]).with_projection(Projection::Reduced {
        sr_ratio: 3,
        pooled: false,
    });
    assert!(reason(sr3, &focused).contains("not divisible by sr_ratio 3"));
    let stripes = MixerShape::new(8, 2, [6, 6]).with_projection(Projection::External {
        stripe: 0,
        split: 3,
    });
    assert!(reason(stripes, &focused).contains("whole map"));
    let bad_split = MixerShape::new(8, 2, [6, 6]).with_projection(Projection::External {
        stripe: 0,
        split: 4,
    });
    assert!(reason(bad_split, &AttentionConfig::Softmax).contains("not divisible by window 6x4"));
    assert!(MixerShape::new(8, 2, [4, 6])
        .validate(&AttentionConfig::Agent(AgentConfig::default()))
        .is_ok());
}

fn run_at(attention: AttentionConfig, shape: MixerShape, layout: TokenLayout) -> Vec<f32> {
    let device = Device::flex();
    let module = attention.init(&shape, &device);
    let out = module.forward(input([2, layout.tokens(), shape.dim]), layout);
    assert_eq!(out.dims(), [2, layout.tokens(), shape.dim]);
    finite_values(out)
}

#[test]
fn modules_run_on_grids_other_than_the_one_they_were_built_for() {
    let reduced = Projection::Reduced {
        sr_ratio: 2,
        pooled: false,
    };
    run_at(
        AttentionConfig::Focused(FocusedConfig::default()),
        MixerShape::new(16, 2, [8, 8]).with_projection(reduced),
        TokenLayout::grid(6, 10),
    );
    run_at(
        AttentionConfig::Agent(AgentConfig::default()),
        MixerShape::new(16, 2, [7, 7]).with_prefix(1),
        TokenLayout::grid(5, 9).with_prefix(1),
    );
    run_at(
        AttentionConfig::Agent(AgentConfig {
            agent_num: 4,
            dwc_kernel: 3,
        }),
        MixerShape::new(16, 4, [8, 8]).with_projection(reduced),
        TokenLayout::grid(12, 4),
    );
}

#[test]
fn the_swin_mask_confines_each_query_to_the_keys_it_allows() {
    // A mask that lets every token see only itself makes softmax attention the identity on v:
    // the output is proj(v).
    let device = Device::flex();
    let shape = MixerShape::new(8, 2, [2, 2]).with_relative_position_bias(true);
    let module = AttentionConfig::Softmax.init(&shape, &device);
    let Attention::Softmax(softmax) = &module else {
        unreachable!()
    };
    let x = input([4, 4, 8]); // 2 images x 2 windows of 2x2
    let eye: Vec<f32> = (0..2 * 16)
        .map(|i| if (i % 16) / 4 == i % 4 { 0.0 } else { -1e9 })
        .collect();
    let mask = Tensor::from_data(TensorData::new(eye, [2, 4, 4]), &device);
    let out = module.forward_masked(x.clone(), TokenLayout::grid(2, 2), Some(mask));
    let qkv = softmax.qkv.as_ref().unwrap().forward(x);
    let v = qkv.narrow(2, 16, 8);
    let expected = softmax.proj.as_ref().unwrap().forward(v);
    let (a, b) = (finite_values(out), finite_values(expected));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}
