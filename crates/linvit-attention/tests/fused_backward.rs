//! Every fused autodiff operation (`Path::Auto` on flex, in training) against Burn's ops
//! (`Path::Ops`): the output and every gradient of `sum(out * g)` for a random cotangent `g`,
//! on odd sizes. Each test also counts the fused nodes a forward records (`Path::fused_nodes`):
//! one per call on `Path::Auto`, none on `Path::Ops`, so the comparison is never the op path
//! against itself.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNormConfig, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};
use linvit_attention::focused::focus;
use linvit_attention::ops::{conv2d, gelu, layer_norm, linear, softmax};
use linvit_attention::Path;

fn lcg(len: usize, seed: u64) -> Vec<f32> {
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

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// A leaf tensor of `dims` on flex under autodiff, with gradients on.
fn tracked_input<const D: usize>(dims: [usize; D]) -> Tensor<D> {
    let n = dims.iter().product();
    Tensor::from_data(TensorData::new(lcg(n, 9), dims), &Device::flex().autodiff()).require_grad()
}

/// The output and the gradient of `sum(f(x) * g)` with respect to `x`, on `path`; `x` is
/// uniform in `[-scale, scale]`, `g` in `[-1, 1]`.
fn value_and_grad<const D: usize>(
    path: Path,
    dims: [usize; D],
    scale: f32,
    f: impl Fn(Tensor<D>) -> Tensor<D>,
) -> (Vec<f32>, Vec<f32>) {
    let ad = Device::flex().autodiff();
    let n = dims.iter().product();
    let x: Vec<f32> = lcg(n, 1).iter().map(|v| v * scale).collect();
    let x = Tensor::<D>::from_data(TensorData::new(x, dims), &ad).require_grad();
    let g = Tensor::<D>::from_data(TensorData::new(lcg(n, 2), dims), &ad);
    let (y, grads) = path.run(|| {
        let y = f(x.clone());
        let grads = (y.clone() * g).sum().backward();
        (y, grads)
    });
    (host(y), host(x.grad(&grads).expect("x has a gradient")))
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
        let (y_ops, dx_ops) = value_and_grad(Path::Ops, [3, 5, 1001], 7.0, f);
        let (y, dx) = value_and_grad(Path::Auto, [3, 5, 1001], 7.0, f);
        let what = if transposed { "gelu (strided)" } else { "gelu" };
        assert_fused_close(&format!("{what} output"), &y, &y_ops, 1e-6);
        assert_fused_close(&format!("{what} input gradient"), &dx, &dx_ops, 1e-6);
        assert_fused_ran(what, 1, || f(tracked_input([3, 5, 1001])));
    }
}

/// Output and the gradients of `sum(conv(x) * g)` with respect to x, the weight and the bias.
fn conv_value_and_grads(path: Path, conv: &Conv2d, dims: [usize; 4]) -> [Vec<f32>; 4] {
    let ad = Device::flex().autodiff();
    let n = dims.iter().product();
    let x = Tensor::<4>::from_data(TensorData::new(lcg(n, 3), dims), &ad).require_grad();
    let [b, c, h, w] = dims;
    let g = Tensor::<4>::from_data(TensorData::new(lcg(n, 4), [b, c, h, w]), &ad);
    let (y, grads) = path.run(|| {
        let y = conv2d(conv, x.clone());
        let grads = (y.clone() * g).sum().backward();
        (y, grads)
    });
    let bias = conv.bias.as_ref().expect("a bias");
    [
        host(y),
        host(x.grad(&grads).expect("x has a gradient")),
        host(conv.weight.grad(&grads).expect("the weight has a gradient")),
        host(bias.grad(&grads).expect("the bias has a gradient")),
    ]
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
        let ops = conv_value_and_grads(Path::Ops, &conv, dims);
        let fused = conv_value_and_grads(Path::Auto, &conv, dims);
        for (i, what) in [
            "output",
            "input gradient",
            "weight gradient",
            "bias gradient",
        ]
        .iter()
        .enumerate()
        {
            let label = format!("depthwise {kernel}x{kernel} on {dims:?}: {what}");
            assert_fused_close(&label, &fused[i], &ops[i], 1e-5);
        }
        assert_fused_ran("depthwise conv", 1, || conv2d(&conv, tracked_input(dims)));
    }
}

#[test]
fn layer_norm_node_matches_burns_layer_norm_in_value_and_every_gradient() {
    let ad = Device::flex().autodiff();
    // Widths 37 (no whole vector) and 64; 2 x 301 rows (more than one task); eps 1e-6 and
    // 1e-5, as the backbones use. Trained gamma and beta, not the initial ones and zeros.
    for (width, eps) in [(37, 1e-6), (64, 1e-5)] {
        let mut norm = LayerNormConfig::new(width).with_epsilon(eps).init(&ad);
        let values = |seed| Tensor::<1>::from_data(TensorData::new(lcg(width, seed), [width]), &ad);
        norm.gamma = Param::from_tensor(values(7).add_scalar(1.0));
        norm.beta = Some(Param::from_tensor(values(8)));
        let run = |path: Path| {
            let dims = [2, 301, width];
            let n = 2 * 301 * width;
            let x: Vec<f32> = lcg(n, 1).iter().map(|v| v * 3.0).collect();
            let x = Tensor::<3>::from_data(TensorData::new(x, dims), &ad).require_grad();
            let g = Tensor::<3>::from_data(TensorData::new(lcg(n, 2), dims), &ad);
            let (y, grads) = path.run(|| {
                let y = layer_norm(&norm, x.clone());
                let grads = (y.clone() * g).sum().backward();
                (y, grads)
            });
            let beta = norm.beta.as_ref().expect("a beta");
            [
                host(y),
                host(x.grad(&grads).expect("x has a gradient")),
                host(norm.gamma.grad(&grads).expect("gamma has a gradient")),
                host(beta.grad(&grads).expect("beta has a gradient")),
            ]
        };
        let (ops, fused) = (run(Path::Ops), run(Path::Auto));
        for (i, what) in [
            "output",
            "input gradient",
            "gamma gradient",
            "beta gradient",
        ]
        .iter()
        .enumerate()
        {
            let label = format!("layer norm, width {width}, eps {eps}: {what}");
            assert_fused_close(&label, &fused[i], &ops[i], 1e-5);
        }
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
        let (y_ops, dx_ops) = value_and_grad(Path::Ops, dims, 12.0, |x| softmax(x, 3));
        let (y, dx) = value_and_grad(Path::Auto, dims, 12.0, |x| softmax(x, 3));
        assert_fused_close(&format!("softmax {dims:?} output"), &y, &y_ops, 1e-6);
        assert_fused_close(
            &format!("softmax {dims:?} input gradient"),
            &dx,
            &dx_ops,
            1e-5,
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
        let run = |path: Path| {
            let n: usize = dims.iter().product();
            let x = Tensor::<3>::from_data(TensorData::new(lcg(n, 5), dims), &ad).require_grad();
            let g = Tensor::<3>::from_data(
                TensorData::new(lcg(n / width * out, 6), [dims[0], dims[1], out]),
                &ad,
            );
            let (y, grads) = path.run(|| {
                let y = linear(&layer, x.clone());
                let grads = (y.clone() * g).sum().backward();
                (y, grads)
            });
            let bias = layer.bias.as_ref().expect("a bias");
            [
                host(y),
                host(x.grad(&grads).expect("x has a gradient")),
                host(
                    layer
                        .weight
                        .grad(&grads)
                        .expect("the weight has a gradient"),
                ),
                host(bias.grad(&grads).expect("the bias has a gradient")),
            ]
        };
        let (ops, fused) = (run(Path::Ops), run(Path::Auto));
        for (i, what) in [
            "output",
            "input gradient",
            "weight gradient",
            "bias gradient",
        ]
        .iter()
        .enumerate()
        {
            assert_fused_close(
                &format!("linear {dims:?} -> {out}: {what}"),
                &fused[i],
                &ops[i],
                1e-5,
            );
        }
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
        let run = |path: Path| {
            // The node reads a view: the second half of a wider tensor's channels, as FLatten's
            // keys are a narrow of the `kv` projection's output.
            let x: Vec<f32> = lcg(2 * n, 11).iter().map(|v| v + 0.3).collect();
            let x = Tensor::<3>::from_data(TensorData::new(x, [2, 150, 74]), &ad).require_grad();
            let scale = Tensor::<3>::from_data(TensorData::new(lcg(37, 12), [1, 1, 37]), &ad)
                .require_grad();
            let g = Tensor::<3>::from_data(TensorData::new(lcg(n, 13), dims), &ad);
            let (y, grads) = path.run(|| {
                let y = focus(x.clone().narrow(2, 37, 37), scale.clone(), p);
                let grads = (y.clone() * g).sum().backward();
                (y, grads)
            });
            [
                host(y),
                host(x.grad(&grads).expect("x has a gradient")),
                host(scale.grad(&grads).expect("the scale has a gradient")),
            ]
        };
        let (ops, fused) = (run(Path::Ops), run(Path::Auto));
        for (i, what) in ["output", "input gradient", "scale gradient"]
            .iter()
            .enumerate()
        {
            let label = format!("focus p={p}: {what}");
            assert_fused_close(&label, &fused[i], &ops[i], 1e-5);
        }
        let scale = || tracked_input([1, 1, 37]);
        assert_fused_ran("focus", 1, || focus(tracked_input(dims), scale(), p));
    }
}
