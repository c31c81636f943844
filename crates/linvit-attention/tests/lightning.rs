//! The three computations of causal linear attention with decay (quadratic, blocked
//! Lightning-2, recurrent) agree on outputs and on the gradients of `sum(o * g)` with respect
//! to q, k and v, across lengths 1..4096 including ragged ones, block sizes 16..256, with and
//! without decay, and when a sequence is cut into pieces that hand the state on. On flex
//! always; on wgpu too where a Vulkan driver is installed (CI installs Mesa's lavapipe).

mod common;

use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use linvit_attention::lightning::{alibi_slopes, causal_linear_attention, CausalForm, Decay};

fn devices() -> Vec<(&'static str, Device)> {
    let mut out = vec![("flex", Device::flex())];
    if common::vulkan_driver_present() {
        out.push(("wgpu", Device::wgpu(DeviceKind::DefaultDevice)));
    } else {
        eprintln!("SKIPPED: the wgpu half, no Vulkan driver (apt-get install mesa-vulkan-drivers)");
    }
    out
}

/// Deterministic values in [-1, 1) from a seed.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(dims: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(values(dims.iter().product(), seed), dims),
        device,
    )
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Worst `|a - b| / (1e-5 max|b| + 1e-4 |b|)`: float32 rounding of sums taken in another
/// order stays far below 1; a wrong decay power or a missing token does not.
fn ratio(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    let max = expected.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let abs = (1e-5 * max).max(1e-7);
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &b)| {
            let r = (a as f64 - b as f64).abs() / (abs + 1e-4 * (b as f64).abs());
            if r.is_nan() {
                f64::INFINITY
            } else {
                r
            }
        })
        .fold(0.0, f64::max)
}

/// Output and the gradients of `sum(o * g)` for q, k, v.
fn run(
    form: CausalForm,
    [q, k, v, g]: [&Tensor<4>; 4],
    decay: &Decay,
    device: &Device,
) -> [Vec<f32>; 4] {
    let ad = device.clone().autodiff();
    let [q, k, v] = [q, k, v].map(|t| Tensor::from_data(t.to_data(), &ad).require_grad());
    let g = Tensor::from_data(g.to_data(), &ad);
    let (out, _) = causal_linear_attention(q.clone(), k.clone(), v.clone(), decay, form, None);
    let grads = (out.clone() * g).sum().backward();
    let grad = |t: &Tensor<4>| host(t.grad(&grads).expect("a gradient"));
    [host(out), grad(&q), grad(&k), grad(&v)]
}

struct Shape {
    heads: usize,
    n: usize,
    d: usize,
    e: usize,
}

/// Checks blocked (each block size) and recurrent against quadratic, with and without decay.
fn forms_agree(shape: Shape, blocks: &[usize], recurrent: bool, device: &Device, name: &str) {
    let Shape { heads, n, d, e } = shape;
    let seed = (n * 31 + heads) as u64;
    let q = tensor([1, heads, n, d], seed, device);
    let k = tensor([1, heads, n, d], seed + 1, device);
    let v = tensor([1, heads, n, e], seed + 2, device);
    let g = tensor([1, heads, n, e], seed + 3, device);
    for decay in [Decay::none(), Decay::slopes(alibi_slopes(heads))] {
        let inputs = [&q, &k, &v, &g];
        let reference = run(CausalForm::Quadratic, inputs, &decay, device);
        let mut forms: Vec<CausalForm> = blocks
            .iter()
            .map(|&block_size| CausalForm::Blocked { block_size })
            .collect();
        if recurrent {
            forms.push(CausalForm::Recurrent);
        }
        for form in forms {
            let got = run(form, inputs, &decay, device);
            for (i, what) in ["output", "dq", "dk", "dv"].iter().enumerate() {
                let r = ratio(&got[i], &reference[i]);
                assert!(
                    r <= 1.0,
                    "{name}: {form:?} {what} differs from the quadratic form by {r:.3}x the \
                     tolerance (n {n}, heads {heads}, decay {})",
                    decay.slopes.is_some()
                );
            }
        }
    }
}

/// Lavapipe runs every small kernel through a software Vulkan driver, so the wgpu half takes
/// the awkward lengths and the long blocked case but not the long token-by-token recurrences.
fn on_wgpu(name: &str) -> bool {
    name == "wgpu"
}

#[test]
fn blocked_and_recurrent_forms_match_the_quadratic_form_on_short_and_ragged_lengths() {
    for (name, device) in devices() {
        let (lengths, blocks): (&[usize], &[usize]) = if on_wgpu(name) {
            (&[1, 17, 65, 200], &[16, 64])
        } else {
            (
                &[1, 2, 15, 16, 17, 49, 50, 63, 64, 65, 200, 257],
                &[16, 32, 64, 100, 256],
            )
        };
        for &n in lengths {
            let shape = Shape {
                heads: 3,
                n,
                d: 8,
                e: 12,
            };
            forms_agree(shape, blocks, true, &device, name);
        }
    }
}

#[test]
fn blocked_and_recurrent_forms_match_the_quadratic_form_at_4096_tokens() {
    for (name, device) in devices() {
        let wgpu = on_wgpu(name);
        let (lengths, blocks): (&[usize], &[usize]) = if wgpu {
            (&[4096], &[256])
        } else {
            (&[1000, 4096], &[16, 64, 256])
        };
        for &n in lengths {
            let shape = Shape {
                heads: 2,
                n,
                d: 8,
                e: 8,
            };
            forms_agree(shape, blocks, !wgpu, &device, name);
        }
    }
}

#[test]
fn a_sequence_cut_into_pieces_continues_exactly_through_the_state() {
    // Prefill blocked, a few recurrent tokens, a quadratic piece, more blocked: the outputs
    // equal one quadratic pass over the whole sequence.
    for (name, device) in devices() {
        let (heads, n, d, e) = (4, 300, 16, 8);
        let q = tensor([2, heads, n, d], 1, &device);
        let k = tensor([2, heads, n, d], 2, &device);
        let v = tensor([2, heads, n, e], 3, &device);
        let decay = Decay::slopes(alibi_slopes(heads));
        let (whole, whole_state) = causal_linear_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            &decay,
            CausalForm::Quadratic,
            None,
        );
        let pieces = [
            (0, 130, CausalForm::Blocked { block_size: 64 }),
            (130, 5, CausalForm::Recurrent),
            (135, 40, CausalForm::Quadratic),
            (175, 125, CausalForm::Blocked { block_size: 32 }),
        ];
        let mut state = None;
        let mut outputs = Vec::new();
        for (start, len, form) in pieces {
            let part = |t: &Tensor<4>| t.clone().narrow(2, start, len);
            let (out, next) =
                causal_linear_attention(part(&q), part(&k), part(&v), &decay, form, state);
            outputs.push(out);
            state = Some(next);
        }
        let r = ratio(&host(Tensor::cat(outputs, 2)), &host(whole));
        assert!(r <= 1.0, "{name}: pieced outputs off by {r:.3}x");
        let r = ratio(&host(state.unwrap()), &host(whole_state));
        assert!(r <= 1.0, "{name}: final state off by {r:.3}x");
    }
}

#[test]
fn strong_decay_over_long_sequences_stays_finite_and_forgets() {
    // slope 4 per step: lambda^600 is far below f32's smallest number. A form that folded the
    // decay into q and k as lambda^t, lambda^-s would overflow here.
    let device = Device::flex();
    let (n, d) = (600, 4);
    let q = tensor([1, 1, n, d], 7, &device);
    let k = tensor([1, 1, n, d], 8, &device);
    let v = tensor([1, 1, n, d], 9, &device);
    let decay = Decay::slopes(vec![4.0]);
    let (out, _) = causal_linear_attention(
        q.clone(),
        k.clone(),
        v.clone(),
        &decay,
        CausalForm::Blocked { block_size: 128 },
        None,
    );
    let out = host(out);
    assert!(out.iter().all(|x| x.is_finite()));
    // With lambda = e^-4 the output is, to float precision, the current token's own term
    // plus e^-4 times the previous one.
    let (q, k, v) = (host(q), host(k), host(v));
    let t = n - 1;
    let dot = |a: usize, b: usize| (0..d).map(|i| q[a * d + i] * k[b * d + i]).sum::<f32>();
    let lambda = (-4.0f32).exp();
    for j in 0..d {
        let expected: f32 = (0..=t)
            .rev()
            .take(8)
            .map(|s| lambda.powi((t - s) as i32) * dot(t, s) * v[s * d + j])
            .sum();
        assert!(
            (out[t * d + j] - expected).abs() < 1e-5,
            "{} vs {expected}",
            out[t * d + j]
        );
    }
}
