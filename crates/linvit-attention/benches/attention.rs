//! Criterion micro-benchmarks of the attention kernels alone (`Attention::mix`: no projections)
//! on flex, so a regression in a fast path shows up: `cargo bench -p linvit-attention`.
//! Shapes follow `linvit bench attention`: batch 2, 4 heads of 32 channels.

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linvit_attention::kinds::KINDS;
use linvit_attention::{AttentionConfig, MixerShape, TokenLayout};

const BATCH: usize = 2;
const HEADS: usize = 4;
const HEAD_DIM: usize = 32;

fn kinds() -> Vec<(&'static str, AttentionConfig)> {
    KINDS
        .iter()
        .map(|(name, config)| (*name, config()))
        .collect()
}

fn forward(c: &mut Criterion) {
    let device = Device::flex();
    let dim = HEADS * HEAD_DIM;
    let mut group = c.benchmark_group("attention_forward");
    group.sample_size(10);
    for side in [14usize, 28, 56] {
        let n = side * side;
        let layout = TokenLayout::grid(side, side);
        let qkv: Vec<Tensor<3>> = (0..3)
            .map(|_| Tensor::random([BATCH, n, dim], Distribution::Normal(0.0, 1.0), &device))
            .collect();
        group.throughput(Throughput::Elements((BATCH * n) as u64));
        for (name, config) in kinds() {
            // Softmax at 3136 tokens takes about a second per call: left to `linvit bench`.
            if name == "softmax" && n > 784 {
                continue;
            }
            let mixer = config.init(&MixerShape::new(dim, HEADS, [side, side]), &device);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    let out = mixer.mix(qkv[0].clone(), qkv[1].clone(), qkv[2].clone(), layout);
                    device.sync().expect("the device runs");
                    out
                })
            });
        }
    }
    group.finish();
}

fn forward_backward(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let dim = HEADS * HEAD_DIM;
    let mut group = c.benchmark_group("attention_forward_backward");
    group.sample_size(10);
    let side = 28;
    let n = side * side;
    let layout = TokenLayout::grid(side, side);
    let qkv: Vec<Tensor<3>> = (0..3)
        .map(|_| {
            Tensor::random([BATCH, n, dim], Distribution::Normal(0.0, 1.0), &device).require_grad()
        })
        .collect();
    for (name, config) in kinds() {
        let mixer = config.init(&MixerShape::new(dim, HEADS, [side, side]), &device);
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| {
                let out = mixer.mix(qkv[0].clone(), qkv[1].clone(), qkv[2].clone(), layout);
                out.sum().backward()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward, forward_backward);
criterion_main!(benches);
