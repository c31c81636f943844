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
use linvit_attention::ops::{conv2d, gelu, layer_norm, linear, softmax};
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

/// A parameter's gradient, on the host.
fn grad_of<const D: usize>(p: &Param<Tensor<D>>, grads: &Gradients) -> Vec<f32> {
    host(p.grad(grads).expect("the parameter has a gradient"))
}

#[test]
fn depthwise_conv_node_matches_burns_conv_in_value_and_every_gradient() {
    let ad = Device::flex().autodiff();
    // FLatten's 5x5 on an odd 7 x 9 grid, agent attention's 3x3 on 5 x 3, and the head-shared
    // form: 6 images of 3 channels (`[B * heads, d, H, W]`) against 3 kernels.
    for (kernel, dims) in [(5, [2, 4, 7, 9]), (3, [3, 5, 5, 3]), (5, [6, 3, 4, 11])] {
        let c = dims[1];
        let p = kernel / 2;
        let conv = Conv2dConfig::new([c, c], [kernel, kernel])
            .with_groups(c)
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .init(&ad);
        let bias = conv.bias.as_ref().expect("a bias");
        compare_paths(
            &format!("depthwise {kernel}x{kernel} on {dims:?}"),
            &[
                ("output", 1e-5),
                ("input gradient", 1e-5),
                ("weight gradient", 1e-5),
                ("bias gradient", 1e-5),
            ],
            lcg(dims.iter().product(), 3),
            dims,
            |x| conv2d(&conv, x),
            |g| vec![grad_of(&conv.weight, g), grad_of(bias, g)],
        );
        assert_fused_ran("depthwise conv", 1, || conv2d(&conv, tracked_input(dims)));
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
    // 37 -> 19 on [2, 151, 37] (odd everything), and 37 -> 64.
    for (dims, out) in [([2usize, 151, 37], 19usize), ([3, 35, 37], 64)] {
        let width = dims[2];
        let layer = LinearConfig::new(width, out).init(&ad);
        let bias = layer.bias.as_ref().expect("a bias");
        compare_paths(
            &format!("linear {dims:?} -> {out}"),
            &[
                ("output", 1e-5),
                ("input gradient", 1e-5),
                ("weight gradient", 1e-5),
                ("bias gradient", 1e-5),
            ],
            lcg(dims.iter().product(), 5),
            dims,
            |x| linear(&layer, x),
            |g| vec![grad_of(&layer.weight, g), grad_of(bias, g)],
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
