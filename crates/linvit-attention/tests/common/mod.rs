//! What the test files of this crate share. Each file uses some of it.
#![allow(dead_code)]

/// `len` values uniform in [-1, 1] from a 64-bit linear congruential generator seeded with
/// `seed`: the same inputs on every machine.
pub fn lcg(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Whether a Vulkan driver is installed (CI installs Mesa's lavapipe): the wgpu halves of the
/// tests run only then, and say SKIPPED otherwise.
pub fn vulkan_driver_present() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|dir| {
            std::fs::read_dir(dir)
                .map(|mut e| e.next().is_some())
                .unwrap_or(false)
        })
}

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use linvit_attention::agent::{AgentAttention, AgentConfig};
use linvit_attention::{Attention, AttentionConfig, MixerShape, Projection, TokenLayout};

/// One token-mixer set-up of the tests that run a mixer on several flavours.
pub struct MixerCase {
    pub name: &'static str,
    pub shape: MixerShape,
    pub layout: TokenLayout,
    pub batch: usize,
}

/// Agent attention's flavours, each with its number of agents: Agent-DeiT (fused `qkv`, a CLS
/// token with its `ac`/`ca` biases), Agent-Swin windows, Agent-PVT with spatial reduction and
/// without (a 9x7 grid whose pooling bins overlap), Agent-CSwin stripes. No head dim is a power
/// of 4, whose score scale would be exact.
pub fn agent_cases() -> Vec<(MixerCase, usize)> {
    let reduced = |sr_ratio| Projection::Reduced {
        sr_ratio,
        pooled: false,
    };
    let case = |name, shape, layout, batch| MixerCase {
        name,
        shape,
        layout,
        batch,
    };
    vec![
        (
            case(
                "agent DeiT: CLS + 7x7, 3 heads of 12, 16 agents",
                MixerShape::new(36, 3, [7, 7]).with_prefix(1),
                TokenLayout::grid(7, 7).with_prefix(1),
                2,
            ),
            16,
        ),
        (
            case(
                "agent Swin: 5 windows of 7x7, 2 heads of 12, 9 agents",
                MixerShape::new(24, 2, [7, 7]),
                TokenLayout::grid(7, 7),
                5,
            ),
            9,
        ),
        (
            case(
                "agent PVT: 8x8, keys reduced 2x, 2 heads of 10, 16 agents",
                MixerShape::new(20, 2, [8, 8]).with_projection(reduced(2)),
                TokenLayout::grid(8, 8),
                2,
            ),
            16,
        ),
        (
            case(
                "agent PVT: 9x7, no reduction, 4 heads of 5, 49 agents",
                MixerShape::new(20, 4, [9, 7]).with_projection(reduced(1)),
                TokenLayout::grid(9, 7),
                2,
            ),
            49,
        ),
        (
            case(
                "agent CSwin: stripes of 2 rows on 6x6, 2 heads of 10, 4 agents",
                MixerShape::new(20, 2, [6, 6]).with_projection(Projection::External {
                    stripe: 0,
                    split: 2,
                }),
                TokenLayout::grid(6, 6),
                2,
            ),
            4,
        ),
    ]
}

/// Agent attention of `agents` agents (3x3 conv) for `case` on `device`, every position bias
/// drawn anew from `seed` (see [`randomise_agent_biases`]).
pub fn agent_module(case: &MixerCase, agents: usize, seed: u64, device: &Device) -> Attention {
    let config = AttentionConfig::Agent(AgentConfig {
        agent_num: agents,
        dwc_kernel: 3,
    });
    let mut attention = config.init(&case.shape, device);
    let Attention::Agent(m) = &mut attention else {
        unreachable!("an agent config builds agent attention")
    };
    randomise_agent_biases(m, seed, device);
    attention
}

/// Draws every position bias of `m` anew, uniform in [-0.5, 0.5] from `seed`: far from their
/// initial 0.02 scale, so the softmaxes are not uniform.
pub fn randomise_agent_biases(m: &mut AgentAttention, seed: u64, device: &Device) {
    fn draw<const D: usize>(dims: [usize; D], seed: u64, device: &Device) -> Param<Tensor<D>> {
        let values = lcg(dims.iter().product(), seed)
            .iter()
            .map(|v| v * 0.5)
            .collect();
        Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), device))
    }
    m.an_bias = draw(m.an_bias.dims(), seed, device);
    m.na_bias = draw(m.na_bias.dims(), seed + 1, device);
    m.ah_bias = draw(m.ah_bias.dims(), seed + 2, device);
    m.aw_bias = draw(m.aw_bias.dims(), seed + 3, device);
    m.ha_bias = draw(m.ha_bias.dims(), seed + 4, device);
    m.wa_bias = draw(m.wa_bias.dims(), seed + 5, device);
    m.ac_bias = m.ac_bias.as_ref().map(|p| draw(p.dims(), seed + 6, device));
    m.ca_bias = m.ca_bias.as_ref().map(|p| draw(p.dims(), seed + 7, device));
}
