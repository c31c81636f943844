//! Every fast path against its literal sibling in `linvit_attention::reference`: outputs and
//! gradients (with a random cotangent) on awkward sizes (49, 50 and 63 tokens, odd head dims).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::lcg;
use linvit_attention::focused::{focus, linear_attend, powi_by_mul};
use linvit_attention::ops::{merge_heads, split_heads};
use linvit_attention::reference;
use linvit_attention::{AttentionConfig, MixerShape, Path, TokenLayout};

fn tensor<const D: usize>(dims: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(lcg(dims.iter().product(), seed), dims),
        device,
    )
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    let e = rel_err(a, b);
    assert!(e < tol, "{what}: relative error {e:e} >= {tol:e}");
}

/// Runs `f` on leaf tensors of `dims` (fresh each call) and returns the output and the gradient
/// of `sum(out * g)` for each input.
fn value_and_grads<const D: usize, const O: usize>(
    inputs: &[[usize; D]],
    seed: u64,
    f: impl Fn(Vec<Tensor<D>>) -> Tensor<O>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let ad = Device::flex().autodiff();
    let xs: Vec<Tensor<D>> = inputs
        .iter()
        .enumerate()
        .map(|(i, dims)| tensor(*dims, seed + i as u64, &ad).require_grad())
        .collect();
    let out = f(xs.clone());
    let g = tensor(out.dims(), seed + 100, &ad);
    let grads = (out.clone() * g).sum().backward();
    let grads = xs
        .iter()
        .map(|x| host(x.grad(&grads).expect("every input gets a gradient")))
        .collect();
    (host(out), grads)
}

#[test]
fn powers_by_multiplication_equal_powi() {
    let d = Device::flex();
    let x = tensor([3, 7], 1, &d).abs().add_scalar(0.1);
    for p in 1..=9u32 {
        let fast = host(powi_by_mul(x.clone(), p));
        let slow = host(x.clone().powi_scalar(p as i32));
        assert_close(&format!("p = {p}"), &fast, &slow, 1e-6);
    }
}

#[test]
fn the_focusing_function_matches_its_literal_form_with_gradients() {
    for (n, c, p) in [(49, 12, 3), (50, 8, 2), (63, 20, 4), (49, 6, 8), (50, 9, 1)] {
        let dims = [[2, n, c], [1, 1, c]];
        let fast = value_and_grads(&dims, 7, |t| focus(t[0].clone(), t[1].clone(), p));
        let slow = value_and_grads(&dims, 7, |t| {
            reference::focus(t[0].clone(), t[1].clone(), p)
        });
        let what = format!("n {n} c {c} p {p}");
        assert_close(&format!("{what} output"), &fast.0, &slow.0, 1e-6);
        assert_close(&format!("{what} d/dx"), &fast.1[0], &slow.1[0], 1e-4);
        assert_close(&format!("{what} d/dscale"), &fast.1[1], &slow.1[1], 1e-4);
    }
}

#[test]
fn focusing_gradients_stay_finite_for_tokens_relu_zeroed() {
    // Whole tokens negative: every entry becomes 1e-6 / softplus(scale), so ||x^p||^2 is ~1e-35
    // for p = 3 and its square underflows in f32; the literal form's gradients are finite there,
    // and ours must match them. From p = 4 on, ||x^p||^2 itself underflows and the literal form
    // is NaN (0/0); ours stays finite up to the paper's p = 32 (tests/gradients.rs checks its
    // gradients against finite differences).
    let ad = Device::flex().autodiff();
    for p in [2u32, 3, 4, 8, 16, 32] {
        let x = tensor([2, 49, 16], 3, &ad).abs().neg().require_grad();
        let scale = tensor([1, 1, 16], 4, &ad).abs().require_grad();
        let g = tensor([2, 49, 16], 5, &ad);
        // relu passes no gradient to x there; `scale` receives it from every token.
        let grads = (focus(x.clone(), scale.clone(), p) * g.clone())
            .sum()
            .backward();
        let fast = host(scale.grad(&grads).unwrap());
        let out = host(focus(x.clone(), scale.clone(), p));
        assert!(
            out.iter().all(|v| v.is_finite()),
            "p = {p}: non-finite output"
        );
        assert!(
            fast.iter().all(|v| v.is_finite()),
            "p = {p}: non-finite gradient {fast:?}"
        );
        if p > 3 {
            continue;
        }
        let grads = (reference::focus(x.clone(), scale.clone(), p) * g)
            .sum()
            .backward();
        let slow = host(scale.grad(&grads).unwrap());
        assert!(
            slow.iter().all(|v| v.is_finite()),
            "the literal form is finite"
        );
        assert_close(&format!("p = {p} d/dscale"), &fast, &slow, 1e-3);
    }
}

#[test]
fn linear_attention_matches_its_literal_form_with_gradients() {
    for (nq, nk, d) in [(49, 49, 4), (50, 13, 5), (63, 63, 8)] {
        let dims = [[2, 3, nq, d], [2, 3, nk, d], [2, 3, nk, d]];
        // Kernels are positive, as after relu or the focusing function.
        let positive = |t: &Tensor<4>| t.clone().abs().add_scalar(0.05);
        let fast = value_and_grads(&dims, 11, |t| {
            linear_attend(positive(&t[0]), positive(&t[1]), t[2].clone())
        });
        let slow = value_and_grads(&dims, 11, |t| {
            reference::linear_attend(positive(&t[0]), positive(&t[1]), t[2].clone())
        });
        let what = format!("N {nq} n {nk} d {d}");
        assert_close(&format!("{what} output"), &fast.0, &slow.0, 1e-5);
        for (i, name) in ["q", "k", "v"].iter().enumerate() {
            assert_close(&format!("{what} d/d{name}"), &fast.1[i], &slow.1[i], 1e-4);
        }
    }
}

#[test]
fn fused_softmax_attention_matches_the_score_matrix_form_with_gradients() {
    // 49 and 64 tokens run the fused window kernel in inference, 576 Burn's attention op.
    for (side, heads, dim) in [(7, 2, 12), (8, 3, 15), (24, 2, 8)] {
        let n = side * side;
        let d = Device::flex();
        let mixer = AttentionConfig::Softmax.init(&MixerShape::new(dim, heads, [side, side]), &d);
        let layout = TokenLayout::grid(side, side);
        let scale = ((dim / heads) as f64).powf(-0.5);
        let dims = [[2, n, dim], [2, n, dim], [2, n, dim]];
        // Inference and autodiff (the score matrix written out) both against the reference.
        let q = tensor([2, n, dim], 3, &d);
        let fused = host(mixer.mix(q.clone(), q.clone().flip([1]), q.clone().neg(), layout));
        let literal = host(merge_heads(reference::softmax_attend(
            split_heads(q.clone(), heads),
            split_heads(q.clone().flip([1]), heads),
            split_heads(q.neg(), heads),
            scale,
        )));
        assert_close("softmax inference", &fused, &literal, 1e-5);

        let ad_mixer = AttentionConfig::Softmax
            .init(&MixerShape::new(dim, heads, [side, side]), &d.autodiff());
        let fast = value_and_grads(&dims, 5, |t| {
            ad_mixer.mix(t[0].clone(), t[1].clone(), t[2].clone(), layout)
        });
        let slow = value_and_grads(&dims, 5, |t| {
            merge_heads(reference::softmax_attend(
                split_heads(t[0].clone(), heads),
                split_heads(t[1].clone(), heads),
                split_heads(t[2].clone(), heads),
                scale,
            ))
        });
        assert_close("softmax output", &fast.0, &slow.0, 1e-5);
        for (i, name) in ["q", "k", "v"].iter().enumerate() {
            assert_close(&format!("softmax d/d{name}"), &fast.1[i], &slow.1[i], 1e-4);
        }
    }
}

/// A mixer's forward on seeded tokens `dims`: `q, k, v` seeded apart for the external
/// projection (CSwin), one input otherwise, with `mask` where given.
fn forward_on(
    module: &linvit_attention::Attention,
    shape: &MixerShape,
    layout: TokenLayout,
    dims: [usize; 3],
    seed: u64,
    device: &Device,
    mask: Option<Tensor<3>>,
) -> Tensor<3> {
    match shape.projection {
        linvit_attention::Projection::External { .. } => {
            let part = |s| tensor(dims, seed + s, device);
            module.forward_qkv(part(0), part(1), part(2), layout)
        }
        _ => module.forward_masked(tensor(dims, seed, device), layout, mask),
    }
}

/// One focused-attention set-up for the fused-kernel check.
struct FusedCase {
    name: &'static str,
    shape: MixerShape,
    layout: TokenLayout,
    batch: usize,
    focusing_factor: u32,
    kernel_size: usize,
}

/// The fused CPU kernel (inference on flex) against the Burn-op path (autodiff on,
/// `Path::Ops`), with the same weights, a random positional encoding and scale, on every
/// projection flavour: windows (conv fused), a CLS prefix and spatial reduction (conv as Burn
/// ops), 49/50/63/100 tokens (whole and partial row blocks), head dims 16 to 64 and odd ones.
#[test]
fn fused_focused_attention_on_flex_matches_the_op_path() {
    use burn::module::{Module, Param};
    use linvit_attention::focused::FocusedConfig;
    use linvit_attention::{Attention, Projection};

    let reduced = |sr_ratio| Projection::Reduced {
        sr_ratio,
        pooled: false,
    };
    let cases = [
        FusedCase {
            name: "Swin windows 7x7, d=24, p=3, 5x5 conv",
            shape: MixerShape::new(48, 2, [7, 7]),
            layout: TokenLayout::grid(7, 7),
            batch: 3,
            focusing_factor: 3,
            kernel_size: 5,
        },
        FusedCase {
            name: "CLS + 7x7 (50 tokens), d=32, p=2, 3x3 conv",
            shape: MixerShape::new(64, 2, [7, 7]).with_prefix(1),
            layout: TokenLayout::grid(7, 7).with_prefix(1),
            batch: 2,
            focusing_factor: 2,
            kernel_size: 3,
        },
        FusedCase {
            name: "PVT 8x8 keys reduced 2x, d=64, p=4",
            shape: MixerShape::new(128, 2, [8, 8]).with_projection(reduced(2)),
            layout: TokenLayout::grid(8, 8),
            batch: 2,
            focusing_factor: 4,
            kernel_size: 5,
        },
        FusedCase {
            name: "9x7 grid (63 tokens), d=16, p=8, no conv",
            shape: MixerShape::new(64, 4, [9, 7]).with_projection(reduced(1)),
            layout: TokenLayout::grid(9, 7),
            batch: 2,
            focusing_factor: 8,
            kernel_size: 0,
        },
        FusedCase {
            name: "Swin windows 7x7, d=24, p=32 (the paper's largest power)",
            shape: MixerShape::new(48, 2, [7, 7]),
            layout: TokenLayout::grid(7, 7),
            batch: 2,
            focusing_factor: 32,
            kernel_size: 3,
        },
        FusedCase {
            name: "10x10 grid (100 tokens: a 64-row block, then 36 rows), d=32",
            shape: MixerShape::new(64, 2, [10, 10]),
            layout: TokenLayout::grid(10, 10),
            batch: 2,
            focusing_factor: 3,
            kernel_size: 3,
        },
        FusedCase {
            name: "CSwin whole map 6x6, d=20, p=3",
            shape: MixerShape::new(40, 2, [6, 6]).with_projection(Projection::External {
                stripe: -1,
                split: 6,
            }),
            layout: TokenLayout::grid(6, 6),
            batch: 2,
            focusing_factor: 3,
            kernel_size: 5,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let ad = Device::flex().autodiff();
        let config = AttentionConfig::Focused(FocusedConfig {
            focusing_factor: case.focusing_factor,
            kernel_size: case.kernel_size,
        });
        let mut attention = config.init(&case.shape, &ad);
        if let Attention::Focused(m) = &mut attention {
            let seed = 100 + 10 * i as u64;
            m.positional_encoding =
                Param::from_tensor(tensor(m.positional_encoding.dims(), seed, &ad).mul_scalar(0.5));
            m.scale = Param::from_tensor(tensor(m.scale.dims(), seed + 1, &ad));
        }
        let inference = attention.valid();
        let dims = [case.batch, case.layout.tokens(), case.shape.dim];
        let run = |module: &Attention, device: &Device| {
            forward_on(
                module,
                &case.shape,
                case.layout,
                dims,
                7 + i as u64,
                device,
                None,
            )
        };
        // Burn's ops throughout: under autodiff `Path::Auto` would run the training nodes, whose
        // forwards are these kernels.
        let op_path = host(Path::Ops.run(|| run(&attention, &ad)));
        let fused = host(run(&inference, &Device::flex()));
        assert!(fused.iter().all(|x| x.is_finite()), "{}", case.name);
        println!(
            "{}: fused vs op path {:.1e}",
            case.name,
            rel_err(&fused, &op_path)
        );
        assert_close(case.name, &fused, &op_path, 2e-5);
    }
}

/// The fused window-softmax kernel (inference on flex) against the Burn-op path (autodiff on,
/// `Path::Ops`),
/// same weights: Swin windows with a random relative position bias, with and without a
/// shifted-window mask (several images of several windows), a CLS prefix without bias, and
/// CSwin stripes (`q, k, v` projected outside, cut into windows, LePE added).
#[test]
fn fused_window_softmax_on_flex_matches_the_op_path() {
    use burn::module::Param;
    use common::MixerCase;
    use linvit_attention::{Attention, Projection};

    let cases = [
        (
            MixerCase {
                name: "Swin 7x7 windows, bias, 4 masks x 3 images, d=32",
                shape: MixerShape::new(96, 3, [7, 7]).with_relative_position_bias(true),
                layout: TokenLayout::grid(7, 7),
                batch: 12,
            },
            4,
        ),
        (
            MixerCase {
                name: "Swin 4x4 windows, bias, no mask, d=5",
                shape: MixerShape::new(10, 2, [4, 4]).with_relative_position_bias(true),
                layout: TokenLayout::grid(4, 4),
                batch: 3,
            },
            0,
        ),
        (
            MixerCase {
                name: "CLS + 7x7 (50 tokens), no bias, d=24",
                shape: MixerShape::new(48, 2, [7, 7]).with_prefix(1),
                layout: TokenLayout::grid(7, 7).with_prefix(1),
                batch: 2,
            },
            0,
        ),
        (
            MixerCase {
                name: "CSwin stripes of 2 rows on 6x6, d=10",
                shape: MixerShape::new(20, 2, [6, 6]).with_projection(Projection::External {
                    stripe: 0,
                    split: 2,
                }),
                layout: TokenLayout::grid(6, 6),
                batch: 2,
            },
            0,
        ),
    ];
    for (i, (case, masks)) in cases.into_iter().enumerate() {
        let ad = Device::flex().autodiff();
        let mut attention = AttentionConfig::Softmax.init(&case.shape, &ad);
        if let Attention::Softmax(m) = &mut attention {
            if let Some(table) = &m.relative_position_bias_table {
                let t = tensor(table.dims(), 300 + i as u64, &ad);
                m.relative_position_bias_table = Some(Param::from_tensor(t));
            }
        }
        let n = case.layout.tokens();
        let mask = |device: &Device| {
            (masks > 0).then(|| {
                let values = lcg(masks * n * n, 400 + i as u64)
                    .into_iter()
                    .map(|v| if v > 0.3 { -100.0 } else { 0.0 })
                    .collect::<Vec<f32>>();
                Tensor::<3>::from_data(TensorData::new(values, [masks, n, n]), device)
            })
        };
        assert_kernel_matches_ops(&case, &attention, 9 + i as u64, mask);
    }
}

/// `attention` on seeded tokens of `case` (see [`forward_on`], with the mask `mask` makes on a
/// device) on the op path (autodiff on, `Path::Ops`: under autodiff `Path::Auto` would run the
/// training nodes, whose forwards are the kernels) against the same weights on flex without
/// autodiff, where the fused kernel runs: finite, within 2e-5, and not bit-equal. The kernels
/// round differently from the op path (they scale the products, the op path their inputs; no
/// head dim in these tests is a power of 4, whose scale would be exact), so equal outputs would
/// mean the kernel did not run.
fn assert_kernel_matches_ops(
    case: &common::MixerCase,
    attention: &linvit_attention::Attention,
    seed: u64,
    mask: impl Fn(&Device) -> Option<Tensor<3>>,
) {
    use burn::module::Module;
    let dims = [case.batch, case.layout.tokens(), case.shape.dim];
    let run = |module: &linvit_attention::Attention, device: &Device| {
        let (shape, layout) = (&case.shape, case.layout);
        forward_on(module, shape, layout, dims, seed, device, mask(device))
    };
    let autodiff = Device::flex().autodiff();
    let op_path = host(Path::Ops.run(|| run(attention, &autodiff)));
    let fused = host(run(&attention.valid(), &Device::flex()));
    let name = case.name;
    assert!(fused.iter().all(|x| x.is_finite()), "{name}: not finite");
    println!("{name}: fused vs op path {:.1e}", rel_err(&fused, &op_path));
    assert_close(name, &fused, &op_path, 2e-5);
    assert!(fused != op_path, "{name}: the fused kernel did not run");
}

/// The fused agent-attention kernel (inference on flex) against the Burn-op path (autodiff on,
/// `Path::Ops`), same weights with every position bias drawn at random, on every flavour
/// (`common::agent_cases`): the conv fused where the values lie on the query grid, as Burn ops
/// on the kernel's output after spatial reduction, none in CSwin (LePE added outside).
#[test]
fn fused_agent_attention_on_flex_matches_the_op_path() {
    use common::{agent_cases, agent_module};

    for (i, (case, agents)) in agent_cases().into_iter().enumerate() {
        let ad = Device::flex().autodiff();
        let attention = agent_module(&case, agents, 500 + 10 * i as u64, &ad);
        assert_kernel_matches_ops(&case, &attention, 11 + i as u64, |_| None);
    }
}

/// Swin's windows read and written in place on whole images (`forward_image_windows`) against
/// the op path on rolled and partitioned images: an 8x12 grid of 4x4 windows, shifted by 2 with
/// one mask per window, and unshifted; alone, and as a block's first half `x + attn(norm(x))`
/// with the norm and the add fused into the projections.
#[test]
fn swin_windows_read_in_place_match_roll_and_partition() {
    use burn::module::{Module, Param};
    use linvit_attention::Attention;

    let (b, [h, w], win, c) = (2, [8, 12], 4, 16);
    let shape = MixerShape::new(c, 2, [win, win]).with_relative_position_bias(true);
    let ad = Device::flex().autodiff();
    let mut attention = AttentionConfig::Softmax.init(&shape, &ad);
    if let Attention::Softmax(m) = &mut attention {
        let table = m.relative_position_bias_table.as_ref().unwrap();
        m.relative_position_bias_table = Some(Param::from_tensor(tensor(table.dims(), 51, &ad)));
    }
    let inference = attention.valid();
    let Attention::Softmax(fused_module) = &inference else {
        unreachable!()
    };
    let mut norm = linvit_attention::LayerNorm::new(c, 1e-5, &ad);
    norm.gamma = Param::from_tensor(tensor([c], 54, &ad));
    norm.beta = Some(Param::from_tensor(tensor([c], 55, &ad)));
    let inference_norm = norm.valid();
    let (n, windows) = (win * win, (h / win) * (w / win));
    for (shift, block) in [(2, false), (0, false), (2, true), (0, true)] {
        let mask = |device: &Device| {
            (shift > 0).then(|| {
                let values = lcg(windows * n * n, 52)
                    .into_iter()
                    .map(|v| if v > 0.3 { -100.0 } else { 0.0 })
                    .collect::<Vec<f32>>();
                Tensor::<3>::from_data(TensorData::new(values, [windows, n, n]), device)
            })
        };
        // Roll by -shift, partition, attend, reverse, roll back: Swin's op path.
        let x = tensor([b, h * w, c], 53, &ad);
        let s = shift as i64;
        let input = if block {
            norm.forward(x.clone())
        } else {
            x.clone()
        };
        let image = input.reshape([b, h, w, c]).roll(&[-s, -s], &[1, 2]);
        let parts = image
            .reshape([b, h / win, win, w / win, win * c])
            .swap_dims(2, 3)
            .reshape([b * windows, n, c]);
        let out = attention.forward_masked(parts, TokenLayout::grid(win, win), mask(&ad));
        let op_path = out
            .reshape([b, h / win, w / win, win, win * c])
            .swap_dims(2, 3)
            .reshape([b, h, w, c])
            .roll(&[s, s], &[1, 2])
            .reshape([b, h * w, c]);
        let op_path = if block { x + op_path } else { op_path };
        let x = tensor([b, h * w, c], 53, &Device::flex());
        let block_norm = block.then_some(&inference_norm);
        let mask = mask(&Device::flex());
        let fused = fused_module
            .forward_image_windows(&x, block_norm, [h, w], win, shift, mask.as_ref())
            .expect("the fused path applies to f32 inference on flex");
        let (fused, op_path) = (host(fused), host(op_path));
        let name = format!("Swin 4x4 windows on 8x12, shift {shift}, block {block}");
        println!("{name}: fused vs op path {:.1e}", rel_err(&fused, &op_path));
        assert_close(&name, &fused, &op_path, 2e-5);
    }
}

/// The fused linear layer (inference on flex) equals Burn's `Linear` (autodiff on), with and
/// without a bias, on 2 x 150 rows (two full row blocks of the kernel and a partial one).
#[test]
fn fused_linear_on_flex_matches_burns_linear() {
    use burn::module::Module;
    use burn::nn::LinearConfig;
    use linvit_attention::ops::linear;

    for bias in [true, false] {
        let ad = Device::flex().autodiff();
        let layer = LinearConfig::new(37, 29).with_bias(bias).init(&ad);
        let op_path = host(layer.forward(tensor([2, 150, 37], 11, &ad)));
        let fused = host(linear(
            &layer.valid(),
            tensor([2, 150, 37], 11, &Device::flex()),
        ));
        // Bit for bit: gemm adds its finished product to the preloaded bias, as flex's bias
        // add does to the finished product.
        assert_eq!(fused, op_path, "linear, bias {bias}");
    }
}

/// The linear layer of a pre-norm block, fused (inference on flex): `layer(norm(x))` with the
/// norm inside the kernel, and `residual + layer(x)` with the rows starting as the residual,
/// against Burn's `LayerNorm`, `Linear` and add (autodiff on), on 2 x 700 rows (blocks of rows on
/// rayon's threads) and 2 x 150 (one block on gemm's threads).
#[test]
fn linear_in_a_block_on_flex_matches_burns_layers() {
    use burn::module::{Module, Param};
    use burn::nn::LinearConfig;
    use linvit_attention::ops::{linear_residual, normed_linear};

    let ad = Device::flex().autodiff();
    let layer = LinearConfig::new(37, 29).init(&ad);
    let mut norm = linvit_attention::LayerNorm::new(37, 1e-6, &ad);
    norm.gamma = Param::from_tensor(tensor([37], 61, &ad));
    norm.beta = Some(Param::from_tensor(tensor([37], 62, &ad)));
    let (layer_i, norm_i) = (layer.valid(), norm.valid());
    let flex = Device::flex();
    for rows in [700, 150] {
        let x = |device: &Device| tensor([2, rows, 37], 63, device);
        let residual = |device: &Device| tensor([2, rows, 29], 64, device);
        let cases = [
            (
                "normed",
                host(layer.forward(norm.forward(x(&ad)))),
                host(normed_linear(&layer_i, &norm_i, x(&flex))),
            ),
            (
                "residual",
                host(residual(&ad) + layer.forward(x(&ad))),
                host(linear_residual(&layer_i, x(&flex), residual(&flex))),
            ),
        ];
        for (name, op_path, fused) in cases {
            let name = format!("linear {name}, {rows} rows");
            println!("{name}: fused vs op path {:.1e}", rel_err(&fused, &op_path));
            assert_close(&name, &fused, &op_path, 1e-5);
        }
    }
}

/// A patch conv (stride = kernel) as tokens in inference on flex (patches read in place, the
/// fused linear kernel) against Burn's conv (autodiff on), from an image `[B, C, H, W]` and from
/// tokens seen as an image (a strided view), with a bias and an edge remainder the conv drops.
#[test]
fn fused_patch_conv_on_flex_matches_burns_conv() {
    use burn::module::Module;
    use burn::nn::conv::Conv2dConfig;
    use linvit_attention::ops::{conv_to_tokens, image_to_tokens, tokens_to_image};

    let ad = Device::flex().autodiff();
    let conv = Conv2dConfig::new([6, 10], [2, 3])
        .with_stride([2, 3])
        .init(&ad);
    let inference = conv.valid();
    // 9 x 14: 4 x 4 patches, a row and two columns left over.
    let image = |device: &Device| tensor([2, 6, 9, 14], 21, device);
    let tokens = |device: &Device| tokens_to_image(tensor([2, 9 * 14, 6], 22, device), [9, 14]);
    for (name, input) in [
        ("image", &image as &dyn Fn(&Device) -> Tensor<4>),
        ("tokens", &tokens),
    ] {
        let op_path = host(image_to_tokens(conv.forward(input(&ad))));
        let (fused, grid) = conv_to_tokens(&inference, input(&Device::flex()));
        assert_eq!(grid, [4, 4], "{name}");
        let fused = host(fused);
        println!(
            "patch conv from {name}: fused vs op path {:.1e}",
            rel_err(&fused, &op_path)
        );
        assert_close(name, &fused, &op_path, 1e-5);
        assert_ne!(fused, op_path, "{name}: the fused kernel did not run");
    }
}

/// The AdamW update in one pass ([`linvit_attention::ops::adamw`] and the kernel behind it)
/// against the same update written as tensor ops, bit for bit: first step (no moments) and a
/// later one, a decayed parameter and one that is not, longer than one of the kernel's chunks.
#[test]
fn adamw_in_one_pass_equals_the_written_out_update_bit_for_bit() {
    use linvit_attention::ops::{adamw, adamw_written_out, AdamUpdate};

    let device = Device::flex();
    let n = (1 << 14) + 37;
    let [p, g, m] = [1, 2, 3].map(|seed| tensor([n], seed, &device));
    let v = tensor([n], 4, &device).square().mul_scalar(1e-3);
    for decay in [None, Some(1.0 - 1e-3 * 0.05)] {
        for step in [1, 7] {
            let update = AdamUpdate {
                decay,
                one_minus_beta1: (1.0 - 0.9f64) as f32,
                beta2: 0.999,
                one_minus_beta2: (1.0 - 0.999f64) as f32,
                sqrt_bias2: (1.0 - 0.999f64.powi(step)).sqrt() as f32,
                eps: 1e-8,
                step_size: (1e-3 / (1.0 - 0.9f64.powi(step))) as f32,
            };
            let moments = (step > 1).then(|| [m.clone(), v.clone()]);
            let ops = adamw_written_out(&update, p.clone(), g.clone(), moments.clone()).map(host);
            let fused = Path::Auto
                .run(|| adamw(&update, p.clone(), g.clone(), moments.clone()))
                .map(host);
            let [hp, hg] = [&p, &g].map(|t| host(t.clone()));
            let hm = moments.clone().map(|[m, v]| [host(m), host(v)]);
            let kernel = update.update(&hp, &hg, hm.as_ref().map(|[m, v]| [&m[..], &v[..]]));
            for (what, ((ops, fused), kernel)) in ["param", "exp_avg", "exp_avg_sq"]
                .iter()
                .zip(ops.iter().zip(&fused).zip(&kernel))
            {
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let case = format!("{what}, decay {decay:?}, step {step}");
                assert_eq!(bits(kernel), bits(ops), "kernel vs ops: {case}");
                assert_eq!(bits(fused), bits(ops), "ops::adamw vs ops: {case}");
            }
            // The update moved the parameter (the comparison is not of two copies of it).
            assert_ne!(ops[0], hp);
        }
    }
}
