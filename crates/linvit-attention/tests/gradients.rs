//! Gradients of every attention family and flavour against central finite differences, in
//! float64 on the flex backend, on small awkward shapes (odd grids, non-square grids, several
//! heads, spatial reduction, a CLS prefix, stripes). A fresh clone without the reference cases
//! still tests the math this way.
//!
//! Each check perturbs one tensor (the input, or one parameter) along a fixed pseudo-random
//! direction `u` and compares `(f(x + eps u) - f(x - eps u)) / 2 eps` with `<grad f, u>`, where
//! `f = sum(output * g)` for a fixed cotangent `g`.

use std::sync::OnceLock;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, FloatDType, Gradients, Tensor, TensorData};
use linvit_attention::{
    AgentConfig, Attention, AttentionConfig, FocusedConfig, LinearConfig, MixerShape, NormConfig,
    Projection, TokenLayout,
};

/// The flex device with float64 defaults; configured once for this test binary.
fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let mut device = Device::flex();
            device
                .configure(FloatDType::F64)
                .expect("flex supports float64");
            device
        })
        .clone()
}

/// Deterministic values in [-1, 1) from a seed: a small LCG, enough for test directions.
fn pseudo_random(len: usize, seed: u64) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn tensor<const D: usize>(dims: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let len = dims.iter().product();
    Tensor::from_data(TensorData::new(pseudo_random(len, seed), dims), device)
}

/// Gives every parameter (upstream zero-initialises many) pseudo-random values of a moderate
/// size, so that every term of the forward matters.
struct Randomise {
    seed: u64,
}

impl ModuleMapper for Randomise {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.seed += 1;
        let seed = self.seed;
        param.map(|t| {
            let dims = t.dims();
            let fan_in = if D >= 2 {
                dims[1..].iter().product::<usize>().max(1)
            } else {
                1
            };
            tensor(dims, seed, &t.device()).mul_scalar(1.0 / (fan_in as f64).sqrt())
        })
    }
}

/// Adds `eps * u` to the `target`-th float parameter in visit order.
struct Perturb {
    target: usize,
    index: usize,
    eps: f64,
}

fn direction<const D: usize>(dims: [usize; D], index: usize, device: &Device) -> Tensor<D> {
    tensor(dims, 1000 + index as u64, device)
}

impl ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let index = self.index;
        self.index += 1;
        if index != self.target {
            return param;
        }
        let eps = self.eps;
        param.map(|t| {
            let u = direction(t.dims(), index, &t.device());
            t + u.mul_scalar(eps)
        })
    }
}

/// `<grad, u>` for every float parameter in visit order, and its name.
struct Directional<'a> {
    grads: &'a Gradients,
    index: usize,
    path: Vec<String>,
    out: Vec<(String, f64)>,
}

impl ModuleVisitor for Directional<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let u = direction(t.dims(), self.index, &t.device().without_autodiff());
        let dot = t
            .grad(self.grads)
            .map(|g| (g * u).sum().into_scalar::<f64>())
            .unwrap_or(0.0);
        self.out.push((self.path.join("."), dot));
        self.index += 1;
    }
}

struct Case {
    name: &'static str,
    attention: AttentionConfig,
    shape: MixerShape,
    layout: TokenLayout,
    batch: usize,
}

impl Case {
    fn tokens(&self) -> usize {
        self.layout.tokens()
    }

    fn external(&self) -> bool {
        matches!(self.shape.projection, Projection::External { .. })
    }

    fn objective(&self, module: &Attention, x: Tensor<3>) -> Tensor<1> {
        let out = if self.external() {
            let c = self.shape.dim;
            let part = |i| x.clone().narrow(2, i * c, c);
            module.forward_qkv(part(0), part(1), part(2), self.layout)
        } else {
            module.forward(x, self.layout)
        };
        let g = tensor(out.dims(), 7, &out.device());
        (out * g).sum()
    }

    fn input_dims(&self) -> [usize; 3] {
        let width = if self.external() { 3 } else { 1 };
        [self.batch, self.tokens(), width * self.shape.dim]
    }
}

fn check(case: &Case) {
    let device = device().autodiff();
    assert!(
        case.shape.validate(&case.attention).is_ok(),
        "{}",
        case.name
    );
    let module = case
        .attention
        .init(&case.shape, &device)
        .map(&mut Randomise { seed: 11 })
        .set_require_grad(true);
    let x = tensor(case.input_dims(), 3, &device);
    let eps = 1e-6;
    let tol =
        |analytic: f64, numeric: f64| (analytic - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs();

    // Analytic gradients.
    let ad_x = x.clone().require_grad();
    let grads = case.objective(&module, ad_x.clone()).backward();
    let mut directional = Directional {
        grads: &grads,
        index: 0,
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut directional);
    let u = tensor(case.input_dims(), 99, &device);
    let input_dot = (ad_x.grad(&grads).expect("input gradient") * u.clone())
        .sum()
        .into_scalar::<f64>();

    // Numeric: the input.
    let f = |m: &Attention, x: Tensor<3>| case.objective(m, x).into_scalar::<f64>();
    let numeric = (f(&module, x.clone() + u.clone().mul_scalar(eps))
        - f(&module, x.clone() - u.mul_scalar(eps)))
        / (2.0 * eps);
    assert!(
        tol(input_dot, numeric),
        "{}: input gradient {input_dot} vs finite difference {numeric}",
        case.name
    );

    // Numeric: each parameter.
    assert!(!directional.out.is_empty());
    for (index, (name, analytic)) in directional.out.iter().enumerate() {
        let shifted = |eps: f64| {
            let m = module.clone().map(&mut Perturb {
                target: index,
                index: 0,
                eps,
            });
            f(&m, x.clone())
        };
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
        assert!(
            tol(*analytic, numeric),
            "{}: gradient of {name}: {analytic} vs finite difference {numeric}",
            case.name
        );
        assert!(
            numeric.abs() > 1e-9,
            "{}: {name} has no effect on the output; the check would be vacuous",
            case.name
        );
    }
}

fn focused(p: u32, k: usize) -> AttentionConfig {
    AttentionConfig::Focused(FocusedConfig {
        focusing_factor: p,
        kernel_size: k,
    })
}

fn agent(m: usize) -> AttentionConfig {
    AttentionConfig::Agent(AgentConfig {
        agent_num: m,
        dwc_kernel: 3,
    })
}

fn reduced(sr_ratio: usize) -> Projection {
    Projection::Reduced {
        sr_ratio,
        pooled: false,
    }
}

#[test]
fn focused_linear_attention_gradients_match_finite_differences() {
    let cases = [
        Case {
            name: "swin window, 2 heads, 5x5",
            attention: focused(3, 3),
            shape: MixerShape::new(8, 2, [5, 5]),
            layout: TokenLayout::grid(5, 5),
            batch: 2,
        },
        Case {
            name: "pvt sr 2, non-square 4x6, 3 heads",
            attention: focused(2, 3),
            shape: MixerShape::new(12, 3, [4, 6]).with_projection(reduced(2)),
            layout: TokenLayout::grid(4, 6),
            batch: 1,
        },
        Case {
            name: "pvt v2 pooled (linear)",
            attention: focused(3, 5),
            shape: MixerShape::new(8, 2, [9, 9]).with_projection(Projection::Reduced {
                sr_ratio: 1,
                pooled: true,
            }),
            layout: TokenLayout::grid(9, 9),
            batch: 1,
        },
        Case {
            name: "cswin global with lepe",
            attention: focused(4, 3),
            shape: MixerShape::new(8, 2, [4, 4]).with_projection(Projection::External {
                stripe: -1,
                split: 4,
            }),
            layout: TokenLayout::grid(4, 4),
            batch: 2,
        },
        Case {
            name: "deit-style with a CLS token",
            attention: focused(3, 3),
            shape: MixerShape::new(8, 2, [3, 4]).with_prefix(1),
            layout: TokenLayout::grid(3, 4).with_prefix(1),
            batch: 1,
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn agent_attention_gradients_match_finite_differences() {
    let cases = [
        Case {
            name: "deit with CLS, 9 agents on 5x5",
            attention: agent(9),
            shape: MixerShape::new(8, 2, [5, 5]).with_prefix(1),
            layout: TokenLayout::grid(5, 5).with_prefix(1),
            batch: 2,
        },
        Case {
            name: "pvt sr 2 on non-square 4x6, 4 agents",
            attention: agent(4),
            shape: MixerShape::new(8, 2, [4, 6]).with_projection(reduced(2)),
            layout: TokenLayout::grid(4, 6),
            batch: 1,
        },
        Case {
            name: "swin window 6x6, 16 agents (more agents than bias cells per row)",
            attention: agent(16),
            shape: MixerShape::new(6, 3, [6, 6]),
            layout: TokenLayout::grid(6, 6),
            batch: 1,
        },
        Case {
            name: "cswin vertical stripes 6x3",
            attention: agent(4),
            shape: MixerShape::new(8, 2, [6, 6]).with_projection(Projection::External {
                stripe: 0,
                split: 3,
            }),
            layout: TokenLayout::grid(6, 6),
            batch: 1,
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn softmax_and_linear_baselines_gradients_match_finite_differences() {
    let cases = [
        Case {
            name: "swin softmax with relative position bias",
            attention: AttentionConfig::Softmax,
            shape: MixerShape::new(8, 2, [3, 3]).with_relative_position_bias(true),
            layout: TokenLayout::grid(3, 3),
            batch: 2,
        },
        Case {
            name: "pvt softmax sr 2",
            attention: AttentionConfig::Softmax,
            shape: MixerShape::new(8, 2, [4, 4]).with_projection(reduced(2)),
            layout: TokenLayout::grid(4, 4),
            batch: 1,
        },
        Case {
            name: "cswin horizontal stripes with lepe",
            attention: AttentionConfig::Softmax,
            shape: MixerShape::new(8, 2, [4, 4]).with_projection(Projection::External {
                stripe: 1,
                split: 2,
            }),
            layout: TokenLayout::grid(4, 4),
            batch: 1,
        },
        Case {
            name: "plain linear with dwc",
            attention: AttentionConfig::Linear(LinearConfig { kernel_size: 3 }),
            shape: MixerShape::new(8, 2, [3, 5]),
            layout: TokenLayout::grid(3, 5),
            batch: 1,
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn norm_attention_gradients_match_finite_differences() {
    let norm = AttentionConfig::Norm(NormConfig::default());
    let cases = [
        Case {
            name: "norm, fused projection, CLS token, non-square 3x4",
            attention: norm.clone(),
            shape: MixerShape::new(8, 2, [3, 4]).with_prefix(1),
            layout: TokenLayout::grid(3, 4).with_prefix(1),
            batch: 2,
        },
        Case {
            name: "norm, pvt sr 2",
            attention: norm.clone(),
            shape: MixerShape::new(8, 2, [4, 4]).with_projection(reduced(2)),
            layout: TokenLayout::grid(4, 4),
            batch: 1,
        },
        Case {
            name: "norm, cswin vertical stripes (gate on the values)",
            attention: norm,
            shape: MixerShape::new(8, 2, [4, 4]).with_projection(Projection::External {
                stripe: 0,
                split: 2,
            }),
            layout: TokenLayout::grid(4, 4),
            batch: 1,
        },
    ];
    for case in &cases {
        check(case);
    }
}

/// The focusing function on tokens whose channels relu zeroes (every entry then
/// `1e-6 / softplus(scale)`), for the paper's powers up to 32: finite, and its gradients with
/// respect to the input and `scale` equal central finite differences of the function itself.
/// (Literally, `x^p` underflows there from p = 4 on in f32 and `x^p / ||x^p||` is 0/0.)
#[test]
fn the_focusing_function_has_exact_gradients_on_relu_zeroed_tokens_for_any_power() {
    use linvit_attention::focused::focus;
    let device = device().autodiff();
    let (b, n, c) = (2, 5, 7);
    // Tokens 0-2 negative in every channel (relu zeroes them), the rest mixed, no entry within
    // 1e-3 of relu's kink.
    let values: Vec<f64> = pseudo_random(b * n * c, 21)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let v = v.signum() * (v.abs() + 1e-3);
            if (i / c) % n < 3 {
                -v.abs()
            } else {
                v
            }
        })
        .collect();
    let x = Tensor::<3>::from_data(TensorData::new(values, [b, n, c]), &device);
    let scale = tensor([1, 1, c], 22, &device);
    let g = tensor([b, n, c], 23, &device);
    let (u, w) = (
        tensor([b, n, c], 24, &device),
        tensor([1, 1, c], 25, &device),
    );
    for p in [2u32, 3, 4, 8, 16, 32] {
        let f = |x: Tensor<3>, scale: Tensor<3>| (focus(x, scale, p) * g.clone()).sum();
        let (ax, ascale) = (x.clone().require_grad(), scale.clone().require_grad());
        let out = focus(ax.clone(), ascale.clone(), p);
        let out_values = out
            .clone()
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap();
        assert!(
            out_values.iter().all(|v| v.is_finite()),
            "p {p}: {out_values:?}"
        );
        let grads = (out * g.clone()).sum().backward();
        let dot = |grad: Option<Tensor<3>>, dir: &Tensor<3>| {
            (grad.expect("a gradient") * dir.clone())
                .sum()
                .into_scalar::<f64>()
        };
        let analytic = dot(ax.grad(&grads), &u) + dot(ascale.grad(&grads), &w);
        assert!(analytic.is_finite(), "p {p}: gradient {analytic}");
        let eps = 1e-7;
        let at = |e: f64| {
            f(
                x.clone() + u.clone().mul_scalar(e),
                scale.clone() + w.clone().mul_scalar(e),
            )
            .into_scalar::<f64>()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (analytic - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs(),
            "p {p}: gradient {analytic} vs finite difference {numeric}"
        );
        // The zeroed tokens alone: only `scale` moves them.
        let zeroed = |t: Tensor<3>| t.narrow(1, 0, 3);
        let (ascale, gz) = (scale.clone().require_grad(), zeroed(g.clone()));
        let grads = (focus(zeroed(x.clone()), ascale.clone(), p) * gz.clone())
            .sum()
            .backward();
        let analytic = dot(ascale.grad(&grads), &w);
        let at = |e: f64| {
            (focus(
                zeroed(x.clone()),
                scale.clone() + w.clone().mul_scalar(e),
                p,
            ) * gz.clone())
            .sum()
            .into_scalar::<f64>()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            analytic.is_finite() && (analytic - numeric).abs() <= 1e-12 + 1e-5 * numeric.abs(),
            "p {p}, zeroed tokens: d/dscale {analytic} vs finite difference {numeric}"
        );
    }
}
