//! Every fused autodiff operation (`Path::Auto` on flex, in training) against Burn's ops
//! (`Path::Ops`): the output and every gradient of `sum(out * g)` for a random cotangent `g`,
//! on odd sizes. Each test also counts the fused nodes a forward records (`Path::fused_nodes`):
//! one per call on `Path::Auto`, none on `Path::Ops`, so the comparison is never the op path
//! against itself.

mod common;

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use common::lcg;
use linvit_attention::focused::focus;
use linvit_attention::ops::{conv2d, gelu, layer_norm, linear, narrow, softmax};
use linvit_attention::Path;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// A leaf tensor of `dims` on flex under autodiff, with gradients on.
fn tracked_input<const D: usize>(dims: [usize; D]) -> Tensor<D> {
    let n = dims.iter().product();
    Tensor::from_data(TensorData::new(lcg(n, 9), dims), &Device::flex().autodiff()).require_grad()
}

/// max |a - b| / max(|b|, 1e-12).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// `fused` within `tol` of `ops` (relative to ops' largest value).
fn assert_fused_close(what: &str, fused: &[f32], ops: &[f32], tol: f32) {
    let e = rel_err(fused, ops);
    println!("{what}: fused vs ops, relative error {e:.1e}");
    assert!(e < tol, "{what}: relative error {e:e} >= {tol:e}");
}

/// That the fused node ran as often as `expected` in `f` on `Path::Auto`, and never on
/// `Path::Ops`.
fn assert_fused_ran<R>(what: &str, expected: usize, f: impl Fn() -> R) {
    let count = |path: Path| {
        let before = Path::fused_nodes();
        path.run(&f);
        Path::fused_nodes() - before
    };
    assert_eq!(
        count(Path::Auto),
        expected,
        "{what}: fused nodes on the auto path"
    );
    assert_eq!(count(Path::Ops), 0, "{what}: fused nodes on the op path");
}

#[test]
fn gelu_node_matches_burns_gelu_in_value_and_gradient() {
    // 3 x 5 x 1001 (odd, not a multiple of any vector width), a transposed view as input
    // (the node reads a strided tensor), values across the tails where erf saturates.
    for transposed in [false, true] {
        let f = |x: Tensor<3>| {
            if transposed {
                gelu(x.swap_dims(1, 2)).swap_dims(1, 2)
            } else {
                gelu(x)
            }
        };
        let what = if transposed { "gelu (strided)" } else { "gelu" };
        let dims = [3, 5, 1001];
        compare_paths(
            what,
            &[("output", 1e-6), ("input gradient", 1e-6)],
            lcg(dims.iter().product(), 1)
                .iter()
                .map(|v| v * 7.0)
                .collect(),
            dims,
            f,
            |_| vec![],
        );
        assert_fused_ran(what, 1, || f(tracked_input([3, 5, 1001])));
    }
}

#[test]
fn narrow_node_adds_each_views_gradient_into_its_parents() {
    // Views of the last dim of a leaf and of an intermediate, overlapping (column 6), beside a
    // consumer of the whole intermediate: each view's gradient must land in its columns and add
    // to what the other consumers gave, whichever registers first. A second intermediate is
    // read through views (of the last dim, and two of the middle one that tile it), so the
    // first of them starts its gradient; through a sum with the leaf, whose backward hands both
    // terms one shared gradient (changed in place, it would change the leaf's too); and
    // flipped, whose backward gives a strided view.
    let f = |x: Tensor<3>| {
        let a = narrow(x.clone(), 2, 0, 4);
        let t = x.clone().mul_scalar(1.5);
        let b = narrow(t.clone(), 2, 2, 5);
        let c = narrow(t.clone(), 2, 6, 3);
        let u = x.clone().mul_scalar(0.5);
        let [d, e] = [(1, 3), (5, 4)].map(|(start, len)| narrow(u.clone(), 2, start, len));
        let tiled = Tensor::cat(
            vec![narrow(u.clone(), 1, 0, 3), narrow(u.clone(), 1, 3, 4)],
            1,
        );
        let flipped = u.clone().flip([1]);
        let parts = vec![
            a,
            b.clone() * b,
            c.mul_scalar(-3.0),
            t,
            d.exp(),
            e,
            tiled.clone() * tiled,
            u + x,
            flipped,
        ];
        Tensor::cat(parts, 2)
    };
    let dims = [2, 7, 9];
    compare_paths(
        "narrow",
        &[("output", 1e-6), ("input gradient", 1e-6)],
        lcg(dims.iter().product(), 3),
        dims,
        f,
        |_| vec![],
    );
    // A view of all of a dim is the tensor itself, no node.
    assert_fused_ran("narrow", 7, || f(tracked_input(dims)));
    assert_fused_ran("narrow (whole)", 0, || narrow(tracked_input(dims), 1, 0, 7));
}

/// On `path`: the output of `f(x)` for the leaf `x` (`values` shaped `dims`), then the gradients
/// of `sum(out * g)` (`g` uniform in [-1, 1]) with respect to `x` and to each of the module's
/// parameters `params` reads.
fn output_and_grads<const D: usize>(
    path: Path,
    values: Vec<f32>,
    dims: [usize; D],
    f: impl Fn(Tensor<D>) -> Tensor<D>,
    params: impl Fn(&Gradients) -> Vec<Vec<f32>>,
) -> Vec<Vec<f32>> {
    let ad = Device::flex().autodiff();
    let x = Tensor::<D>::from_data(TensorData::new(values, dims), &ad).require_grad();
    let (y, grads) = path.run(|| {
        let y = f(x.clone());
        let g = Tensor::<D>::from_data(
            TensorData::new(lcg(y.shape().num_elements(), 4), y.dims()),
            &ad,
        );
        let grads = (y.clone() * g).sum().backward();
        (y, grads)
    });
    let mut out = vec![host(y), host(x.grad(&grads).expect("x has a gradient"))];
    out.extend(params(&grads));
    out
}

/// [`output_and_grads`] on both paths, every tensor compared within its tolerance (`checks`:
/// the output, the input gradient, then the parameters', each with its tolerance).
fn compare_paths<const D: usize>(
    what: &str,
    checks: &[(&str, f32)],
    values: Vec<f32>,
    dims: [usize; D],
    f: impl Fn(Tensor<D>) -> Tensor<D>,
    params: impl Fn(&Gradients) -> Vec<Vec<f32>>,
) {
    let ops = output_and_grads(Path::Ops, values.clone(), dims, &f, &params);
    let fused = output_and_grads(Path::Auto, values, dims, &f, &params);
    assert_eq!(ops.len(), checks.len());
    for (((name, tol), fused), ops) in checks.iter().zip(&fused).zip(&ops) {
        assert_fused_close(&format!("{what}: {name}"), fused, ops, *tol);
    }
}

/// What a conv node's comparison checks, each within its tolerance: the output and the
/// gradients of the input, the weight and the bias.
const CONV_CHECKS: [(&str, f32); 4] = [
    ("output", 1e-5),
    ("input gradient", 1e-5),
    ("weight gradient", 1e-5),
    ("bias gradient", 1e-5),
];

/// A parameter's gradient, on the host.
fn grad_of<const D: usize>(p: &Param<Tensor<D>>, grads: &Gradients) -> Vec<f32> {
    host(p.grad(grads).expect("the parameter has a gradient"))
}

/// A depthwise conv of `c` channels with a `kernel x kernel` kernel and same padding.
fn depthwise(c: usize, kernel: usize, device: &Device) -> burn::nn::conv::Conv2d {
    let p = kernel / 2;
    Conv2dConfig::new([c, c], [kernel, kernel])
        .with_groups(c)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

#[test]
fn depthwise_conv_node_matches_burns_conv_in_value_and_every_gradient() {
    let ad = Device::flex().autodiff();
    // FLatten's 5x5 on an odd 7 x 9 grid, agent attention's 3x3 on 5 x 3, and the head-shared
    // form: 6 images of 3 channels (`[B * heads, d, H, W]`) against 3 kernels.
    for (kernel, dims) in [(5, [2, 4, 7, 9]), (3, [3, 5, 5, 3]), (5, [6, 3, 4, 11])] {
        let conv = depthwise(dims[1], kernel, &ad);
        let bias = conv.bias.as_ref().expect("a bias");
        compare_paths(
            &format!("depthwise {kernel}x{kernel} on {dims:?}"),
            &CONV_CHECKS,
            lcg(dims.iter().product(), 3),
            dims,
            |x| conv2d(&conv, x),
            |g| vec![grad_of(&conv.weight, g), grad_of(bias, g)],
        );
        assert_fused_ran("depthwise conv", 1, || conv2d(&conv, tracked_input(dims)));
    }
}

/// The depthwise conv between tokens (`ops::conv2d_tokens`, node `fused::depthwise_tokens`)
/// against Burn's transposes and conv: agent attention's 3x3 on an odd 5 x 3 grid of 7
/// channels, a 5x5 on 4 x 6 (CSwin's LePE on a stripe), a 3x3 on one token.
#[test]
fn depthwise_tokens_node_matches_burns_ops_in_value_and_every_gradient() {
    use linvit_attention::ops::conv2d_tokens;

    let ad = Device::flex().autodiff();
    for (kernel, [b, h, w, c]) in [(3, [2, 5, 3, 7]), (5, [3, 4, 6, 16]), (3, [2, 1, 1, 5])] {
        let conv = depthwise(c, kernel, &ad);
        let bias = conv.bias.as_ref().expect("a bias");
        let dims = [b, h * w, c];
        compare_paths(
            &format!("depthwise tokens {kernel}x{kernel} on {dims:?}, grid {h} x {w}"),
            &CONV_CHECKS,
            lcg(dims.iter().product(), 3),
            dims,
            |x| conv2d_tokens(&conv, x, [h, w]),
            |g| vec![grad_of(&conv.weight, g), grad_of(bias, g)],
        );
        let f = || conv2d_tokens(&conv, tracked_input(dims), [h, w]);
        assert_fused_ran("depthwise tokens", 1, f);
    }
}

#[test]
fn layer_norm_node_matches_burns_layer_norm_in_value_and_every_gradient() {
    let ad = Device::flex().autodiff();
    // Widths 37 (no whole vector) and 64; 2 x 301 rows (more than one task); eps 1e-6 and
    // 1e-5, as the backbones use. Trained gamma and beta, not the initial ones and zeros.
    for (width, eps) in [(37, 1e-6), (64, 1e-5)] {
        let mut norm = linvit_attention::LayerNorm::new(width, eps, &ad);
        let values = |seed| Tensor::<1>::from_data(TensorData::new(lcg(width, seed), [width]), &ad);
        norm.gamma = Param::from_tensor(values(7).add_scalar(1.0));
        norm.beta = Some(Param::from_tensor(values(8)));
        let beta = norm.beta.as_ref().expect("a beta");
        let dims = [2, 301, width];
        compare_paths(
            &format!("layer norm, width {width}, eps {eps}"),
            &[
                ("output", 1e-5),
                ("input gradient", 1e-5),
                ("gamma gradient", 1e-5),
                ("beta gradient", 1e-5),
            ],
            lcg(dims.iter().product(), 1)
                .iter()
                .map(|v| v * 3.0)
                .collect(),
            dims,
            |x| layer_norm(&norm, x),
            |g| vec![grad_of(&norm.gamma, g), grad_of(beta, g)],
        );
        assert_fused_ran("layer norm", 1, || {
            layer_norm(&norm, tracked_input([2, 301, width]))
        });
    }
}

#[test]
fn softmax_node_matches_burns_softmax_in_value_and_gradient() {
    // Swin's 49-token windows (no whole vector) and agent attention's 9 agents; scores up to
    // +-12, so the max shift matters.
    for dims in [[3, 2, 49, 49], [2, 4, 50, 9]] {
        compare_paths(
            &format!("softmax {dims:?}"),
            &[("output", 1e-6), ("input gradient", 1e-5)],
            lcg(dims.iter().product(), 1)
                .iter()
                .map(|v| v * 12.0)
                .collect(),
            dims,
            |x| softmax(x, 3),
            |_| vec![],
        );
        assert_fused_ran("softmax", 1, || softmax(tracked_input(dims), 3));
    }
}

#[test]
fn linear_node_matches_burns_linear_in_value_and_every_gradient() {
    let ad = Device::flex().autodiff();
    // 37 -> 19 on [2, 151, 37] (odd everything), 37 -> 64, and 37 -> 19 without a bias (Swin's
    // patch merging: the node with a zero bias that takes no gradient).
    for (dims, out, with_bias) in [
        ([2usize, 151, 37], 19usize, true),
        ([3, 35, 37], 64, true),
        ([2, 151, 37], 19, false),
    ] {
        let width = dims[2];
        let layer = LinearConfig::new(width, out).with_bias(with_bias).init(&ad);
        let checks = &CONV_CHECKS[..if with_bias { 4 } else { 3 }];
        compare_paths(
            &format!("linear {dims:?} -> {out}, bias {with_bias}"),
            checks,
            lcg(dims.iter().product(), 5),
            dims,
            |x| linear(&layer, x),
            |g| {
                let mut grads = vec![grad_of(&layer.weight, g)];
                grads.extend(layer.bias.iter().map(|b| grad_of(b, g)));
                grads
            },
        );
        assert_fused_ran("linear", 1, || linear(&layer, tracked_input(dims)));
    }
}

#[test]
fn focusing_function_node_matches_burns_ops_in_value_and_every_gradient() {
    let ad = Device::flex().autodiff();
    // 37 channels (no whole vector), 2 x 150 tokens, powers 1, 3 and 6; inputs around zero,
    // so relu's zero gradient is exercised; a trained scale, not the initial zeros.
    let dims = [2, 150, 37];
    let n: usize = dims.iter().product();
    for p in [1, 3, 6] {
        // The node reads a view: the second half of a wider tensor's channels, as FLatten's
        // keys are a narrow of the `kv` projection's output.
        let scale = Param::from_tensor(
            Tensor::<3>::from_data(TensorData::new(lcg(37, 12), [1, 1, 37]), &ad).require_grad(),
        );
        compare_paths(
            &format!("focus p={p}"),
            &[
                ("output", 1e-5),
                ("input gradient", 1e-5),
                ("scale gradient", 1e-5),
            ],
            lcg(2 * n, 11).iter().map(|v| v + 0.3).collect(),
            [2, 150, 74],
            |x| focus(x.narrow(2, 37, 37), scale.val(), p),
            |g| vec![grad_of(&scale, g)],
        );
        let scale = || tracked_input([1, 1, 37]);
        assert_fused_ran("focus", 1, || focus(tracked_input(dims), scale(), p));
    }
}

/// Agent attention's node (the two softmax attentions through the agents, `fused::agent`) in
/// the whole module on `Path::Auto` against `Path::Ops`: the output and the gradients of the
/// input and of every parameter (the six bias grids, the CLS biases, the projections and the
/// conv), on every flavour: Agent-DeiT (CLS token, fused `qkv`), Agent-Swin windows, Agent-PVT
/// with and without spatial reduction on an odd 9x7 grid, and Agent-CSwin stripes (`q, k, v`
/// cut from the input). The fused nodes counted are those of the whole module: the agent node
/// with the linear layers, the convs, the norm and the `q, k, v` views around it (the op path
/// would record two softmax nodes in its place), so the count tells the agent node ran.
#[test]
fn agent_attention_node_matches_burns_ops_in_value_and_every_gradient() {
    use common::{agent_cases, agent_module};

    // Fused nodes of one forward on `Path::Auto`, case by case.
    let nodes = [8, 7, 9, 7, 2];
    let ad = Device::flex().autodiff();
    for (i, ((case, agents), nodes)) in agent_cases().into_iter().zip(nodes).enumerate() {
        let attention = agent_module(&case, agents, 40 + 10 * i as u64, &ad);
        let run = MixerRun::new(
            case.name,
            &case.shape,
            case.layout,
            case.batch,
            30 + i as u64,
            nodes,
        );
        run.compare(&attention, |g| agent_parameter_grads(&attention, g));
    }
}

/// The gradients of agent attention's parameters, in a fixed order: the six bias grids, the CLS
/// biases, the projections' weights and biases, the conv's weight and bias.
fn agent_parameter_grads(attention: &linvit_attention::Attention, g: &Gradients) -> Vec<Vec<f32>> {
    let linvit_attention::Attention::Agent(m) = attention else {
        unreachable!("agent attention")
    };
    let mut out = vec![
        grad_of(&m.an_bias, g),
        grad_of(&m.na_bias, g),
        grad_of(&m.ah_bias, g),
        grad_of(&m.aw_bias, g),
        grad_of(&m.ha_bias, g),
        grad_of(&m.wa_bias, g),
    ];
    out.extend(m.ac_bias.iter().chain(&m.ca_bias).map(|p| grad_of(p, g)));
    let convs = [&m.dwc, &None, &None];
    out.extend(layer_grads([&m.qkv, &m.q, &m.kv, &m.proj], convs, g));
    out
}

/// Window softmax attention's node (`fused::window_softmax`) in the whole module on
/// `Path::Auto` against `Path::Ops`: the output and the gradients of the input and of every
/// parameter (Swin's relative position table, the projections, LePE's conv), on Swin windows
/// with the table and a shifted-window mask (3 images of 4 windows), with the table alone on
/// odd sizes, a CLS token without either, CSwin stripes, and PVT without reduction. The fused
/// nodes counted are those of the whole module (the linear layers, the conv and the `q, k, v`
/// views around the attention node; the op path would record none for the attention, or a
/// softmax node), so the count tells the node ran.
#[test]
fn window_softmax_node_matches_burns_ops_in_value_and_every_gradient() {
    use linvit_attention::{Attention, AttentionConfig, MixerShape, Projection, TokenLayout};

    struct Case {
        name: &'static str,
        shape: MixerShape,
        layout: TokenLayout,
        batch: usize,
        masks: usize,
        /// Fused nodes of one forward on `Path::Auto`.
        nodes: usize,
    }
    let cases = [
        Case {
            name: "softmax Swin: 3 images of 4 7x7 windows, table and mask, 3 heads of 12",
            shape: MixerShape::new(36, 3, [7, 7]).with_relative_position_bias(true),
            layout: TokenLayout::grid(7, 7),
            batch: 12,
            masks: 4,
            nodes: 6,
        },
        Case {
            name: "softmax Swin: 4x4 windows, table, no mask, 2 heads of 5",
            shape: MixerShape::new(10, 2, [4, 4]).with_relative_position_bias(true),
            layout: TokenLayout::grid(4, 4),
            batch: 3,
            masks: 0,
            nodes: 6,
        },
        Case {
            name: "softmax ViT: CLS + 7x7, 2 heads of 12",
            shape: MixerShape::new(24, 2, [7, 7]).with_prefix(1),
            layout: TokenLayout::grid(7, 7).with_prefix(1),
            batch: 2,
            masks: 0,
            nodes: 6,
        },
        Case {
            name: "softmax CSwin: stripes of 2 rows on 6x6, 2 heads of 10",
            shape: MixerShape::new(20, 2, [6, 6]).with_projection(Projection::External {
                stripe: 0,
                split: 2,
            }),
            layout: TokenLayout::grid(6, 6),
            batch: 2,
            masks: 0,
            nodes: 2,
        },
        Case {
            name: "softmax PVT: 9x7, no reduction, 4 heads of 5",
            shape: MixerShape::new(20, 4, [9, 7]).with_projection(Projection::Reduced {
                sr_ratio: 1,
                pooled: false,
            }),
            layout: TokenLayout::grid(9, 7),
            batch: 2,
            masks: 0,
            nodes: 6,
        },
    ];
    let ad = Device::flex().autodiff();
    for (i, case) in cases.iter().enumerate() {
        let mut attention = AttentionConfig::Softmax.init(&case.shape, &ad);
        let Attention::Softmax(m) = &mut attention else {
            unreachable!("a softmax config builds softmax attention")
        };
        if let Some(table) = &m.relative_position_bias_table {
            let dims = table.dims();
            let values = lcg(dims.iter().product(), 60 + i as u64);
            m.relative_position_bias_table = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(values, dims),
                &ad,
            )));
        }
        let n = case.layout.tokens();
        let mask = (case.masks > 0).then(|| {
            let values: Vec<f32> = lcg(case.masks * n * n, 70 + i as u64)
                .into_iter()
                .map(|v| if v > 0.3 { -100.0 } else { 0.0 })
                .collect();
            Tensor::<3>::from_data(TensorData::new(values, [case.masks, n, n]), &ad)
        });
        let run = MixerRun::new(
            case.name,
            &case.shape,
            case.layout,
            case.batch,
            80 + i as u64,
            case.nodes,
        )
        .with_mask(mask);
        run.compare(&attention, |g| softmax_parameter_grads(&attention, g));
    }
}

/// The gradients of softmax attention's parameters, in a fixed order: Swin's table, the
/// projections' weights and biases, LePE's conv.
fn softmax_parameter_grads(
    attention: &linvit_attention::Attention,
    g: &Gradients,
) -> Vec<Vec<f32>> {
    let linvit_attention::Attention::Softmax(m) = attention else {
        unreachable!("softmax attention")
    };
    let mut out: Vec<Vec<f32>> = m
        .relative_position_bias_table
        .iter()
        .map(|t| grad_of(t, g))
        .collect();
    let convs = [&m.get_v, &None, &None];
    out.extend(layer_grads([&m.qkv, &m.q, &m.kv, &m.proj], convs, g));
    out
}

/// The patch conv node (`fused::patch_conv`, stride = kernel) behind `ops::conv_to_tokens`
/// against Burn's conv: PVT's spatial reduction 2x2 on tokens seen as an image (a strided view)
/// of an odd 7x9 grid, whose last row and column the conv drops, and a 4x4 patch embedding of a
/// 3-channel image in its own layout.
#[test]
fn patch_conv_node_matches_burns_conv_in_value_and_every_gradient() {
    use linvit_attention::ops::{conv_to_tokens, tokens_to_image};

    let ad = Device::flex().autodiff();
    // (channels in, out, kernel, grid, tokens: the input is `[B, H*W, C]` tokens).
    for (c, out, k, [h, w], tokens) in [(6, 6, 2, [7, 9], true), (3, 8, 4, [8, 12], false)] {
        let conv = Conv2dConfig::new([c, out], [k, k])
            .with_stride([k, k])
            .init(&ad);
        let bias = conv.bias.as_ref().expect("a bias");
        let dims = match tokens {
            true => [2, h * w, c],
            false => [2, c, h * w],
        };
        let f = |x: Tensor<3>| {
            let image = match tokens {
                true => tokens_to_image(x, [h, w]),
                false => x.reshape([2, c, h, w]),
            };
            conv_to_tokens(&conv, image).0
        };
        compare_paths(
            &format!("patch conv {k}x{k} on {dims:?}"),
            &CONV_CHECKS,
            lcg(dims.iter().product(), 5),
            dims,
            f,
            |g| vec![grad_of(&conv.weight, g), grad_of(bias, g)],
        );
        assert_fused_ran("patch conv", 1, || f(tracked_input(dims)));
    }
}

/// Focused linear attention in the whole module on `Path::Auto` (the focusing function, the
/// normalised linear attention `fused::linear_attention`, the conv, the projections: each one
/// node) against `Path::Ops`: the output and the gradients of the input and of every parameter
/// (scale, positional encoding, projections, convs), on Swin windows, a CLS token, PVT with
/// spatial reduction on an odd grid, and CSwin's whole map. The count of fused nodes includes
/// the linear attention node (the op path would record none for it).
#[test]
fn focused_attention_nodes_match_burns_ops_in_value_and_every_gradient() {
    use linvit_attention::focused::FocusedConfig;
    use linvit_attention::{Attention, AttentionConfig, MixerShape, Projection, TokenLayout};

    struct Case {
        name: &'static str,
        shape: MixerShape,
        layout: TokenLayout,
        batch: usize,
        /// Fused nodes of one forward on `Path::Auto`.
        nodes: usize,
    }
    let cases = [
        Case {
            name: "focused Swin: 5 windows of 7x7, 2 heads of 12",
            shape: MixerShape::new(24, 2, [7, 7]),
            layout: TokenLayout::grid(7, 7),
            batch: 5,
            nodes: 9,
        },
        Case {
            name: "focused DeiT: CLS + 7x7, 3 heads of 12",
            shape: MixerShape::new(36, 3, [7, 7]).with_prefix(1),
            layout: TokenLayout::grid(7, 7).with_prefix(1),
            batch: 2,
            nodes: 10,
        },
        Case {
            name: "focused PVT: 9x7, keys reduced 2x, 2 heads of 10",
            shape: MixerShape::new(20, 2, [9, 7]).with_projection(Projection::Reduced {
                sr_ratio: 2,
                pooled: false,
            }),
            layout: TokenLayout::grid(9, 7),
            batch: 2,
            nodes: 11,
        },
        Case {
            name: "focused CSwin: whole 6x6 map, 2 heads of 10",
            shape: MixerShape::new(20, 2, [6, 6]).with_projection(Projection::External {
                stripe: -1,
                split: 6,
            }),
            layout: TokenLayout::grid(6, 6),
            batch: 2,
            nodes: 5,
        },
    ];
    let ad = Device::flex().autodiff();
    for (i, case) in cases.iter().enumerate() {
        let config = AttentionConfig::Focused(FocusedConfig {
            focusing_factor: 3,
            kernel_size: 5,
        });
        let mut attention = config.init(&case.shape, &ad);
        let Attention::Focused(m) = &mut attention else {
            unreachable!("a focused config builds focused attention")
        };
        let draw = |dims: [usize; 3], s: u64, times: f32| {
            let values = lcg(dims.iter().product(), s)
                .iter()
                .map(|v| v * times)
                .collect();
            Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), &ad))
        };
        m.positional_encoding = draw(m.positional_encoding.dims(), 90 + i as u64, 0.5);
        m.scale = draw(m.scale.dims(), 95 + i as u64, 1.0);
        let params = |g: &Gradients| {
            let Attention::Focused(m) = &attention else {
                unreachable!()
            };
            let mut out = vec![grad_of(&m.scale, g), grad_of(&m.positional_encoding, g)];
            out.extend(layer_grads(
                [&m.qkv, &m.q, &m.kv, &m.proj],
                [&m.dwc, &m.get_v, &m.sr],
                g,
            ));
            out
        };
        let run = MixerRun::new(
            case.name,
            &case.shape,
            case.layout,
            case.batch,
            20 + i as u64,
            case.nodes,
        );
        run.compare(&attention, params);
    }
}

/// One token mixer compared on both paths: `Path::Auto` against `Path::Ops`.
struct MixerRun<'a> {
    name: &'a str,
    shape: &'a linvit_attention::MixerShape,
    layout: linvit_attention::TokenLayout,
    batch: usize,
    /// Swin's shifted-window mask, where the case has one.
    mask: Option<Tensor<3>>,
    /// Seeds the input.
    seed: u64,
    /// Fused nodes of one forward on `Path::Auto`.
    nodes: usize,
}

impl<'a> MixerRun<'a> {
    /// A case without a mask, its input drawn from `seed`, expecting `nodes` fused nodes.
    fn new(
        name: &'a str,
        shape: &'a linvit_attention::MixerShape,
        layout: linvit_attention::TokenLayout,
        batch: usize,
        seed: u64,
        nodes: usize,
    ) -> Self {
        MixerRun {
            name,
            shape,
            layout,
            batch,
            mask: None,
            seed,
            nodes,
        }
    }

    fn with_mask(self, mask: Option<Tensor<3>>) -> Self {
        MixerRun { mask, ..self }
    }

    /// `attention` on seeded tokens `[batch, tokens, C]` (`[.., 3C]` cut into `q, k, v` for
    /// CSwin's external projection) on both paths: the output and the gradients of the input
    /// and of `params` each within 1e-5 (relative), and `nodes` fused nodes recorded by one
    /// forward on `Path::Auto`.
    fn compare(
        &self,
        attention: &linvit_attention::Attention,
        params: impl Fn(&Gradients) -> Vec<Vec<f32>>,
    ) {
        use linvit_attention::Projection;
        let external = matches!(self.shape.projection, Projection::External { .. });
        let c = self.shape.dim;
        let f = |x: Tensor<3>| match external {
            true => attention.forward_qkv(
                x.clone().narrow(2, 0, c),
                x.clone().narrow(2, c, c),
                x.narrow(2, 2 * c, c),
                self.layout,
            ),
            false => attention.forward_masked(x, self.layout, self.mask.clone()),
        };
        let width = if external { 3 * c } else { c };
        let dims = [self.batch, self.layout.tokens(), width];
        let values = lcg(dims.iter().product(), self.seed);
        let ops = output_and_grads(Path::Ops, values.clone(), dims, f, &params);
        let fused = output_and_grads(Path::Auto, values, dims, f, &params);
        for (j, (fused, ops)) in fused.iter().zip(&ops).enumerate() {
            let what = match j {
                0 => "output".to_string(),
                1 => "input gradient".to_string(),
                p => format!("parameter gradient {}", p - 2),
            };
            assert_fused_close(&format!("{}: {what}", self.name), fused, ops, 1e-5);
        }
        assert_fused_ran(self.name, self.nodes, || f(tracked_input(dims)));
    }
}

/// The gradients of the linear layers' weights and biases, then the convs', that a mixer has.
fn layer_grads(
    linears: [&Option<burn::nn::Linear>; 4],
    convs: [&Option<burn::nn::conv::Conv2d>; 3],
    g: &Gradients,
) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for layer in linears.into_iter().flatten() {
        out.push(grad_of(&layer.weight, g));
        out.extend(layer.bias.iter().map(|b| grad_of(b, g)));
    }
    for conv in convs.into_iter().flatten() {
        out.push(grad_of(&conv.weight, g));
        out.extend(conv.bias.iter().map(|b| grad_of(b, g)));
    }
    out
}
