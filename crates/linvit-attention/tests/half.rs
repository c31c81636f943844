//! Half precision: the linear families keep their denominators and `K^T V` products finite in
//! float16 at the token counts of real images, as the authors' fp16 fix intends (keys and values
//! scaled by `n^-0.5` before `K^T V`, the normaliser taken over the mean key). The helper that
//! would overflow without the fix is checked too, so the test cannot pass vacuously.

use burn::tensor::{Device, Distribution, FloatDType, Tensor};
use linvit_attention::focused::linear_attend;
use linvit_attention::{
    AgentConfig, AttentionConfig, FocusedConfig, LinearConfig, MixerShape, NormConfig, TokenLayout,
};

fn half_device() -> Option<Device> {
    let mut device = Device::flex();
    match device.configure(FloatDType::F16) {
        Ok(()) => Some(device),
        Err(e) => {
            eprintln!("SKIPPED: flex has no float16 here ({e:?})");
            None
        }
    }
}

fn finite(t: Tensor<3>) -> bool {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite())
}

#[test]
fn linear_mixers_stay_finite_in_float16_on_a_56x56_grid() {
    let Some(device) = half_device() else {
        return;
    };
    // Positive features of size ~5 over 3136 tokens: sum_n k_i v_j reaches ~3136 * 25 > 65504,
    // float16's largest value, unless the products are scaled first.
    let n = 56 * 56;
    let k = Tensor::<4>::random([1, 2, n, 32], Distribution::Uniform(4.0, 6.0), &device);
    let v = Tensor::<4>::random([1, 2, n, 32], Distribution::Uniform(4.0, 6.0), &device);
    let unscaled = k.clone().swap_dims(2, 3).matmul(v.clone());
    let overflowed = unscaled
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
        .iter()
        .any(|x| !x.is_finite());
    assert!(
        overflowed,
        "the unscaled K^T V fits in float16; the check below would be vacuous"
    );
    let out = linear_attend(k.clone(), k, v);
    assert!(
        finite(out.reshape([2, n, 32])),
        "linear_attend overflowed in float16"
    );

    let shape = MixerShape::new(64, 2, [56, 56]);
    let x = Tensor::<3>::random([1, n, 64], Distribution::Normal(0.0, 1.0), &device);
    for attention in [
        AttentionConfig::Focused(FocusedConfig::default()),
        AttentionConfig::Linear(LinearConfig::default()),
        AttentionConfig::Agent(AgentConfig::default()),
        AttentionConfig::Norm(NormConfig::default()),
    ] {
        let module = attention.init(&shape, &device);
        let out = module.forward(x.clone(), TokenLayout::grid(56, 56));
        assert!(finite(out), "{} overflowed in float16", attention.kind());
    }
}
