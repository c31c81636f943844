//! Criterion benches of every attention kind's token mixing on flex, so a change that slows a
//! kernel shows up as a regression against the last `cargo bench` on the same machine.
//!
//! `cargo test --workspace --bench attention -- --bench [FILTER]` measures in the build the tests
//! use (the dev profile, kernel crates at opt-level 3, as `linvit bench`); `cargo bench` works too
//! but first builds the release profile. Criterion keeps the last run under `target/criterion`
//! and reports the change against it. The shapes are `linvit bench attention`'s: batch 2, 4 heads
//! of 32 channels, square token grids; projections excluded. A plain `cargo test` runs each bench
//! once, unmeasured, so they keep working. `linvit bench` remains the tool for tables, memory
//! and other devices.

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linvit_attention::Kind;
use linvit_attention::{MixerShape, TokenLayout};

const BATCH: usize = 2;
const HEADS: usize = 4;
const HEAD_DIM: usize = 32;

fn inputs(tokens: usize, device: &Device) -> [Tensor<3>; 3] {
    [0, 1, 2].map(|_| {
        Tensor::random(
            [BATCH, tokens, HEADS * HEAD_DIM],
            Distribution::Normal(0.0, 1.0),
            device,
        )
    })
}

/// A square grid of `tokens` (196, 784 and 3136 are 14², 28² and 56²: ViT-B/16, PVT's stage 2
/// and stage 1 at 224²).
fn grid(tokens: usize) -> TokenLayout {
    let side = (tokens as f64).sqrt() as usize;
    TokenLayout::grid(side, side)
}

fn shape(tokens: usize) -> MixerShape {
    let side = grid(tokens).height;
    MixerShape::new(HEADS * HEAD_DIM, HEADS, [side, side])
}

fn forward(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("forward");
    group.sample_size(10);
    for tokens in [196, 784, 3136] {
        group.throughput(Throughput::Elements((BATCH * tokens) as u64));
        for kind in Kind::ALL {
            let mixer = kind.default_config().init(&shape(tokens), &device);
            let [q, k, v] = inputs(tokens, &device);
            group.bench_function(BenchmarkId::new(kind.name(), tokens), |b| {
                b.iter(|| {
                    let out = mixer.mix(q.clone(), k.clone(), v.clone(), grid(tokens));
                    device.sync().unwrap();
                    out
                })
            });
        }
    }
    group.finish();
}

/// Forward and backward of `sum(out * g)`: the gradients of q, k, v and the mixer's parameters.
/// Softmax at 3136 tokens takes seconds here, so this stops at 784.
fn forward_backward(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let mut group = c.benchmark_group("forward_backward");
    group.sample_size(10);
    for tokens in [196, 784] {
        group.throughput(Throughput::Elements((BATCH * tokens) as u64));
        for kind in Kind::ALL {
            let mixer = kind.default_config().init(&shape(tokens), &device);
            let [q, k, v] = inputs(tokens, &device).map(|t| t.require_grad());
            let g = inputs(tokens, &device)[0].clone();
            group.bench_function(BenchmarkId::new(kind.name(), tokens), |b| {
                b.iter(|| {
                    let out = mixer.mix(q.clone(), k.clone(), v.clone(), grid(tokens));
                    let grads = (out * g.clone()).sum().backward();
                    device.sync().unwrap();
                    grads
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward, forward_backward);
criterion_main!(benches);
