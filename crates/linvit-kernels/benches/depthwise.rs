//! Criterion bench of the depthwise convolution's forward and backward (`Depthwise`), on the
//! shapes the T presets' training steps run at 224² and batch 8:
//!
//! `cargo test -p linvit-kernels --bench depthwise -- --bench [FILTER]` measures in the build
//! the tests use (see `crates/linvit-attention/benches/attention.rs` for how criterion keeps
//! and compares runs); a plain `cargo test` runs each case once, unmeasured.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linvit_kernels::depthwise::Depthwise;

/// (label, planes, channels, side, kernel): FLatten's head-shared 5x5 conv on PVT-T's and
/// Swin-T's stage 1 and PVT-T's stage 4, and agent attention's 3x3 conv on PVT-T's stage 1,
/// DeiT-T and Swin-T's stage 3.
const CASES: [(&str, usize, usize, usize, usize); 6] = [
    ("flatten_pvt_s1", 512, 64, 56, 5),
    ("flatten_swin_s1", 768, 32, 56, 5),
    ("flatten_pvt_s4", 4096, 64, 7, 5),
    ("agent_pvt_s1", 512, 64, 56, 3),
    ("agent_deit", 1536, 192, 14, 3),
    ("agent_swin_s3", 3072, 384, 14, 3),
];

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13);
            (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn depthwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("depthwise");
    for (label, planes, channels, side, kernel) in CASES {
        let d = Depthwise {
            planes,
            channels,
            height: side,
            width: side,
            kernel,
        };
        let x = values(planes * side * side, 1);
        let weight = values(channels * kernel * kernel, 2);
        let bias = values(channels, 3);
        let grad = values(x.len(), 4);
        group.throughput(Throughput::Elements(x.len() as u64));
        group.bench_function(BenchmarkId::new("forward", label), |b| {
            b.iter(|| d.forward(&x, &weight, &bias))
        });
        group.bench_function(BenchmarkId::new("backward", label), |b| {
            b.iter(|| d.backward(&x, &weight, &grad))
        });
    }
    group.finish();
}

criterion_group!(benches, depthwise);
criterion_main!(benches);
