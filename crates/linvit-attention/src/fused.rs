//! Fused CPU kernels as autodiff operations on flex: where a forward is tracked by a gradient
//! graph (training), one graph node runs our forward kernel and, in the backward pass, our
//! backward kernel, instead of the several Burn ops (and their saved intermediates) the same
//! computation takes written out.
//!
//! The gate ([`tracked`]) is the training twin of `kernel::kernel_input`: f32, on flex under
//! autodiff, [`Path::Auto`]. Everywhere else (other backends, half precision, `Path::Ops`) the
//! callers run Burn's ops, which stay the reference the tests compare these nodes with.

use std::marker::PhantomData;

use burn::tensor::{BackendPrimitive, Float, Shape, Tensor};
use burn_dispatch::backends::autodiff::checkpoint::base::Checkpointer;
use burn_dispatch::backends::autodiff::checkpoint::strategy::NoCheckpointing;
use burn_dispatch::backends::autodiff::grads::Gradients;
use burn_dispatch::backends::autodiff::ops::{unary, Backward, NodeGuard, Ops, OpsKind};
use burn_dispatch::backends::autodiff::NodeId;
use burn_dispatch::backends::flex::FlexTensor;
use burn_dispatch::backends::{Autodiff, Flex};
use linvit_kernels::depthwise::{Depthwise, DepthwiseGrads, DepthwiseTokens};
use linvit_kernels::focus::Focus;
use linvit_kernels::norm::{layer_norm_backward, RowNorm};
use linvit_kernels::rows::{add_columns, widen_columns};

use crate::kernel::{contiguous, KernelRows};
use crate::path::Path;

/// A float tensor on flex under autodiff, as the nodes take it.
type Tracked = <Float as BackendPrimitive<Autodiff<Flex>>>::Primitive;

/// `x` as a flex tensor under autodiff, where a fused autodiff operation may stand in for
/// Burn's ops: f32 on [`Path::Auto`] (`Path::fused_for`), on flex with autodiff on. `None`
/// otherwise.
fn tracked<const D: usize>(x: &Tensor<D>) -> Option<Tracked> {
    if !Path::fused_for(x.dtype()) {
        return None;
    }
    x.clone().try_into_primitive::<Autodiff<Flex>>().ok()
}

/// Whether the nodes here may take `x` (see [`tracked`]): checked before a caller prepares
/// their other inputs.
pub(crate) fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    tracked(x).is_some()
}

/// The values of `t` as [`values`] reads them (see [`contiguous`]).
fn laid_out(t: &Tracked) -> FlexTensor {
    contiguous(t.primitive().clone())
}

/// Registers `values` of `shape` as the gradient of the parent `node`, where that parent takes
/// one (`None`: it needs no gradient).
fn give(grads: &mut Gradients, node: Option<NodeId>, values: Vec<f32>, shape: Shape) {
    if let Some(id) = node {
        grads.register::<Flex>(id, flex(values, shape));
    }
}

/// `out` as the output of one `node` over `parents`, keeping `state` for its backward where a
/// gradient is needed (dropped otherwise), counted as one fused node (see
/// [`Path::fused_nodes`]).
fn record<B, const N: usize, const D: usize>(
    node: B,
    parents: [NodeGuard; N],
    state: B::State,
    out: FlexTensor,
) -> Option<Tensor<D>>
where
    B: Backward<Flex, N>,
{
    let out = match node
        .prepare::<NoCheckpointing>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Path::count_fused_node();
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// The f32 values of a tensor from [`contiguous`] (`kernel.rs`), in row-major order: only its own elements,
/// not the rest of a buffer it shares.
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused nodes read tensors laid out by `contiguous`")
}

/// A new flex tensor of `shape` holding `values`.
fn flex(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(burn::tensor::TensorData::new(values, shape))
}

/// GELU (erf form) as one node: [`linvit_kernels::activation::gelu`] forward, and
/// [`linvit_kernels::activation::gelu_backward`] from the saved input (the one tensor PyTorch
/// saves too). `None` where the gate is closed.
pub(crate) fn gelu<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
    #[derive(Debug)]
    struct Gelu;

    impl Backward<Flex, 1> for Gelu {
        type State = FlexTensor;

        fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let input = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                let grad = contiguous(grad);
                let values =
                    linvit_kernels::activation::gelu_backward(values(&input), values(&grad));
                flex(values, input.layout().shape().clone())
            });
        }
    }

    let xt = tracked(x)?;
    let input = laid_out(&xt);
    let out = flex(
        linvit_kernels::activation::gelu(values(&input)),
        input.layout().shape().clone(),
    );
    record(Gelu, [xt.node()], input, out)
}

/// `x.narrow(dim, start, len)` (a view, as Burn's) as one node whose backward adds its
/// gradient into the parent's in place. Burn's slice backward writes each gradient into a new
/// zeroed tensor of the parent's full size, and the parent then sums them: for `q, k, v` cut
/// from one `qkv` projection, three full-size buffers, each zeroed twice (flex's `zeros`
/// zero-fills and then copies to align), and two full-size adds, where one buffer written once
/// suffices. Seen from `dim` on, the view is a block of columns of the parent's rows (`[outer,
/// dims[dim] * inner]`), which is how the backward writes it. `None` where the gate is closed.
pub(crate) fn narrow<const D: usize>(
    x: &Tensor<D>,
    dim: usize,
    start: usize,
    len: usize,
) -> Option<Tensor<D>> {
    #[derive(Debug)]
    struct Narrow;

    impl Backward<Flex, 1> for Narrow {
        /// The parent (its gradient is looked up by it), and the view's first column and the
        /// parent's row width, seen from the narrowed dim on.
        type State = (Tracked, usize, usize);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (parent, start, width) = ops.state;
            let [Some(node)] = ops.parents else {
                return;
            };
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let shape = parent.primitive().layout().shape().clone();
            let rows = shape.num_elements() / width;
            let total = match grads.remove::<Flex>(&parent) {
                Some(sum) => {
                    let mut sum = owned(sum);
                    let out = sum.try_storage_mut::<f32>().expect("`owned` is unique");
                    add_columns(&mut out[..rows * width], width, start, values(&grad));
                    sum
                }
                None => flex(widen_columns(width, start, values(&grad), rows), shape),
            };
            grads.register::<Flex>(node.id, total);
        }
    }

    let dims = x.dims();
    if dim >= D || start + len > dims[dim] || len == 0 {
        return None;
    }
    let inner: usize = dims[dim + 1..].iter().product();
    let xt = tracked(x)?;
    let view = xt.primitive().narrow(dim, start, len);
    let state = (xt.clone(), start * inner, dims[dim] * inner);
    record(Narrow, [xt.node()], state, view)
}

/// `t` contiguous from offset 0 and the sole owner of its buffer, so that it may be changed in
/// place: as it is where it already is (a gradient usually is), copied otherwise.
fn owned(t: FlexTensor) -> FlexTensor {
    let mut t = contiguous(t);
    let from_zero = t.layout().contiguous_offsets() == Some((0, t.layout().num_elements()));
    if !from_zero || !t.is_unique() {
        t = flex(values(&t).to_vec(), t.layout().shape().clone());
    }
    t
}

/// A depthwise convolution with same padding and stride 1 as one node:
/// [`linvit_kernels::depthwise`] forward and backward, from the saved input and weight (what
/// PyTorch saves). `x` is `[planes, channels, H, W]` viewed as `planes * channels` images
/// (`channels` = the weight's `[C, 1, k, k]` first dim; FLatten's head-shared conv passes
/// `[B * heads, d, H, W]`), `bias` is `[C]`; the caller (`ops::conv2d`) has checked that the
/// conv is such a convolution (`ops::same_size_kernel`). `None` where the gate is closed for
/// any of them or `x` has another channel count.
pub(crate) fn depthwise_conv(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: &Tensor<1>,
) -> Option<Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let [channels, _, k, _] = weight.dims();
    if channels != c {
        return None;
    }
    let shape = Depthwise {
        planes: n * c,
        channels: c,
        height: h,
        width: w,
        kernel: k,
    };
    let (xt, wt, bt) = (tracked(x)?, tracked(weight)?, tracked(bias)?);
    let input = laid_out(&xt);
    let kernel = laid_out(&wt);
    let bias = laid_out(&bt);
    let out = shape.forward(values(&input), values(&kernel), values(&bias));
    let out = flex(out, [n, c, h, w].into());
    let parents = [xt.node(), wt.node(), bt.node()];
    record(
        DepthwiseNode(PhantomData),
        parents,
        (input, kernel, shape),
        out,
    )
}

/// The shape of a depthwise conv in either layout ([`Depthwise`], [`DepthwiseTokens`]), which
/// computes its gradients from the saved input and weight.
trait DepthwiseShape: Clone + Send + std::fmt::Debug + 'static {
    fn gradients(&self, x: &[f32], weight: &[f32], grad: &[f32]) -> DepthwiseGrads;
}

impl DepthwiseShape for Depthwise {
    fn gradients(&self, x: &[f32], weight: &[f32], grad: &[f32]) -> DepthwiseGrads {
        self.backward(x, weight, grad)
    }
}

impl DepthwiseShape for DepthwiseTokens {
    fn gradients(&self, x: &[f32], weight: &[f32], grad: &[f32]) -> DepthwiseGrads {
        self.backward(x, weight, grad)
    }
}

/// The backward of a depthwise conv node over its input, weight and bias; the state is the
/// saved input and weight and the conv's shape.
#[derive(Debug)]
struct DepthwiseNode<S>(PhantomData<S>);

impl<S: DepthwiseShape> Backward<Flex, 3> for DepthwiseNode<S> {
    type State = (FlexTensor, FlexTensor, S);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, shape) = ops.state;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let g = shape.gradients(values(&x), values(&weight), values(&grad));
        let [x_node, weight_node, bias_node] = ops.parents.map(|p| p.map(|n| n.id));
        give(grads, x_node, g.input, x.layout().shape().clone());
        give(
            grads,
            weight_node,
            g.weight,
            weight.layout().shape().clone(),
        );
        let kernels = g.bias.len();
        give(grads, bias_node, g.bias, [kernels].into());
    }
}

/// A depthwise convolution with same padding and stride 1 between token tensors as one node:
/// `x` `[B, H * W, C]` through [`DepthwiseTokens`] `conv` forward and backward, from the saved
/// input and weight, where Burn's ops transpose the tokens to an image and back around the
/// conv, and the gradient the same way. `weight` `[kernels, 1, k, k]`, `bias` `[kernels]`,
/// channel `c` of `x` through kernel `c % kernels`; the caller (`ops::depthwise_tokens`) has
/// checked that the conv is such a convolution and that `conv` is its shape on `x`. `None`
/// where the gate is closed for any of them.
pub(crate) fn depthwise_tokens(
    x: &Tensor<3>,
    conv: DepthwiseTokens,
    weight: &Tensor<4>,
    bias: &Tensor<1>,
) -> Option<Tensor<3>> {
    let (xt, wt, bt) = (tracked(x)?, tracked(weight)?, tracked(bias)?);
    let input = laid_out(&xt);
    let kernel = laid_out(&wt);
    let out = conv.forward(values(&input), values(&kernel), values(&laid_out(&bt)));
    let out = flex(out, x.dims().into());
    let parents = [xt.node(), wt.node(), bt.node()];
    record(
        DepthwiseNode(PhantomData),
        parents,
        (input, kernel, conv),
        out,
    )
}

/// LayerNorm over the last dim as one node: [`RowNorm::forward_keeping_stats`], saving each row's mean
/// and `1 / std` with the input (what PyTorch saves), and [`layer_norm_backward`]. `None`
/// where the gate is closed for any of them.
pub(crate) fn layer_norm<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    eps: f64,
) -> Option<Tensor<D>> {
    /// The input and the gamma the forward saw, and each row's statistics.
    #[derive(Clone, Debug)]
    struct Saved {
        x: FlexTensor,
        gamma: FlexTensor,
        mean: Vec<f32>,
        rstd: Vec<f32>,
    }

    #[derive(Debug)]
    struct LayerNorm;

    impl Backward<Flex, 3> for LayerNorm {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let gamma = values(&s.gamma);
            let g = layer_norm_backward(gamma, values(&s.x), &s.mean, &s.rstd, values(&grad));
            let [x_node, gamma_node, beta_node] = ops.parents.map(|p| p.map(|n| n.id));
            let width = Shape::from([gamma.len()]);
            give(grads, x_node, g.input, s.x.layout().shape().clone());
            give(grads, gamma_node, g.gamma, width.clone());
            give(grads, beta_node, g.beta, width);
        }
    }

    let (xt, gt, bt) = (tracked(x)?, tracked(gamma)?, tracked(beta)?);
    let input = laid_out(&xt);
    let gamma_values = laid_out(&gt);
    let beta_values = laid_out(&bt);
    let norm = RowNorm {
        gamma: values(&gamma_values),
        beta: Some(values(&beta_values)),
        eps: eps as f32,
    };
    let f = norm.forward_keeping_stats(values(&input));
    let out = flex(f.out, input.layout().shape().clone());
    let saved = Saved {
        x: input,
        gamma: gamma_values,
        mean: f.mean,
        rstd: f.rstd,
    };
    record(LayerNorm, [xt.node(), gt.node(), bt.node()], saved, out)
}

/// Softmax over the last dim as one node: [`linvit_kernels::activation::softmax`] forward and
/// `softmax_backward` from the saved output (what PyTorch saves). `None` where the gate is
/// closed.
pub(crate) fn softmax_last<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
    #[derive(Debug)]
    struct Softmax;

    impl Backward<Flex, 1> for Softmax {
        type State = FlexTensor;

        fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let y = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                let grad = contiguous(grad);
                let shape = y.layout().shape().clone();
                let width = shape[shape.num_dims() - 1];
                let values =
                    linvit_kernels::activation::softmax_backward(values(&y), values(&grad), width);
                flex(values, shape)
            });
        }
    }

    let width = x.dims()[D - 1];
    if width == 0 {
        return None;
    }
    let xt = tracked(x)?;
    let input = laid_out(&xt);
    let shape = input.layout().shape().clone();
    let y = flex(
        linvit_kernels::activation::softmax(values(&input), width),
        shape,
    );
    record(Softmax, [xt.node()], y.clone(), y)
}

/// A linear layer `x w + b` (`w` `[in, out]`, Burn's layout) over the last dim as one node:
/// [`linvit_kernels::linear::linear`] forward (each block of rows starts as the bias) and
/// [`linvit_kernels::linear::linear_backward`] from the saved input and weight (what PyTorch
/// saves). `None` where the gate is closed for any of them.
pub(crate) fn linear<const D: usize>(
    x: &Tensor<D>,
    weight: &Tensor<2>,
    bias: &Tensor<1>,
) -> Option<Tensor<D>> {
    #[derive(Debug)]
    struct Linear;

    impl Backward<Flex, 3> for Linear {
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, weight) = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let [width, out] = weight.layout().shape().dims::<2>();
            let [x_node, weight_node, bias_node] = ops.parents.map(|p| p.map(|n| n.id));
            let g = linvit_kernels::linear::linear_backward(
                values(&x),
                width,
                values(&weight),
                linvit_kernels::linear::WeightLayout::InOut,
                values(&grad),
                [x_node.is_some(), weight_node.is_some()],
            );
            if let Some(input) = g.input {
                give(grads, x_node, input, x.layout().shape().clone());
            }
            if let Some(weight) = g.weight {
                give(grads, weight_node, weight, [width, out].into());
            }
            give(grads, bias_node, g.bias, [out].into());
        }
    }

    let [width, out] = weight.dims();
    if x.dims()[D - 1] != width || bias.dims() != [out] || width == 0 {
        return None;
    }
    let (xt, wt, bt) = (tracked(x)?, tracked(weight)?, tracked(bias)?);
    let input = laid_out(&xt);
    let kernel = laid_out(&wt);
    let bias = laid_out(&bt);
    let out_values =
        linvit_kernels::linear::linear(values(&input), width, values(&kernel), Some(values(&bias)));
    let mut dims = x.dims();
    dims[D - 1] = out;
    let y = flex(out_values, dims.into());
    record(
        Linear,
        [xt.node(), wt.node(), bt.node()],
        (input, kernel),
        y,
    )
}

/// FLatten's focusing function times `times` (see `focused::focus`) as one node:
/// [`linvit_kernels::focus::Focus`] forward and backward from the saved input and scale. `x`
/// is `[B, N, C]`, `scale` the module's `[1, 1, C]`. `None` where the gate is closed.
pub(crate) fn focus(x: &Tensor<3>, scale: &Tensor<3>, p: u32, times: f64) -> Option<Tensor<3>> {
    /// The input and each channel's `softplus(scale)` and its derivative `sigmoid(scale)`.
    #[derive(Clone, Debug)]
    struct Saved {
        x: FlexTensor,
        inv_softplus: Vec<f32>,
        sigmoid: Vec<f32>,
        power: u32,
        times: f32,
    }

    impl Saved {
        fn focus(&self) -> Focus<'_> {
            Focus {
                inv_scale: &self.inv_softplus,
                power: self.power,
                times: self.times,
            }
        }
    }

    #[derive(Debug)]
    struct FocusNode;

    impl Backward<Flex, 2> for FocusNode {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let g = s.focus().backward(values(&s.x), values(&grad));
            let [x_node, scale_node] = ops.parents.map(|p| p.map(|n| n.id));
            give(grads, x_node, g.input, s.x.layout().shape().clone());
            // d softplus(z) / dz = sigmoid(z).
            let d: Vec<f32> = g
                .softplus_scale
                .iter()
                .zip(&s.sigmoid)
                .map(|(d, s)| d * s)
                .collect();
            let c = d.len();
            give(grads, scale_node, d, [1, 1, c].into());
        }
    }

    let c = x.dims()[2];
    if scale.dims() != [1, 1, c] || c == 0 || p == 0 {
        return None;
    }
    let (xt, st) = (tracked(x)?, tracked(scale)?);
    let input = laid_out(&xt);
    let scale_values = laid_out(&st);
    // softplus in f64 (ln(1 + e^z), as ln_1p(exp) for small e^z), then one rounding.
    let softplus = |z: f64| if z > 20.0 { z } else { z.exp().ln_1p() };
    let (inv_softplus, sigmoid): (Vec<f32>, Vec<f32>) = values(&scale_values)
        .iter()
        .map(|&z| {
            let z = z as f64;
            (
                (1.0 / softplus(z)) as f32,
                (1.0 / (1.0 + (-z).exp())) as f32,
            )
        })
        .unzip();
    let saved = Saved {
        x: input,
        inv_softplus,
        sigmoid,
        power: p,
        times: times as f32,
    };
    let y = flex(saved.focus().forward(values(&saved.x)), x.dims().into());
    record(FocusNode, [xt.node(), st.node()], saved, y)
}

/// `q, k, v` as the attention nodes take them: each tracked (see [`tracked`]) and its rows as
/// the kernels read them, in place. `None` where the gate is closed for any of them.
fn tracked_rows(qkv: [&Tensor<3>; 3]) -> Option<([Tracked; 3], [KernelRows; 3])> {
    let [q, k, v] = qkv.map(tracked);
    let tracked = [q?, k?, v?];
    let rows = tracked
        .each_ref()
        .map(|t| KernelRows::new(t.primitive().clone()));
    Some((tracked, rows))
}

/// Registers an attention node's gradients of `q, k, v` (`values`, laid out as `rows`, `batch`
/// images each) with the parents `ids` that take one.
fn give_qkv(
    grads: &mut Gradients,
    ids: [Option<NodeId>; 3],
    values: [Vec<f32>; 3],
    rows: &[KernelRows; 3],
    batch: usize,
) {
    for ((id, values), rows) in ids.into_iter().zip(values).zip(rows) {
        let r = rows.rows();
        give(
            grads,
            id,
            values,
            [batch, r.rows() / batch, r.width()].into(),
        );
    }
}

/// What agent attention's node needs besides its tensors: heads, the score scale, the prefix
/// tokens, and the pooling matrix `[m, N]` (a constant of the grid).
#[derive(Clone, Debug)]
pub(crate) struct AgentCore {
    pub heads: usize,
    pub scale: f32,
    pub prefix: usize,
    pub pool: Tensor<2>,
}

/// Agent attention without its conv (`AgentAttention::attend`'s two softmax attentions through
/// the pooled agents, heads merged) as one node: [`linvit_kernels::agent::AgentAttention`]'s
/// `forward_keeping` and `backward`, from the inputs (read in place, as views of the `qkv`
/// projection's output) and the agents and both softmaxes it keeps. The biases are parents too:
/// their gradients flow on, through Burn's ops, to the module's bias grids. `q` `[B, n_q, C]`,
/// `k` and `v` `[B, n_k, C]`, `agent_bias` `[1, heads, m, n_k]`, `query_bias` `[1, heads, n_q,
/// m]`. `None` where the gate is closed or the sizes disagree.
pub(crate) fn agent(
    core: &AgentCore,
    [q, k, v]: [&Tensor<3>; 3],
    [agent_bias, query_bias]: [&Tensor<4>; 2],
) -> Option<Tensor<3>> {
    use linvit_kernels::agent::{AgentAttention, AgentSaved};

    /// The inputs as the kernel reads them, and what the forward kept.
    #[derive(Clone, Debug)]
    struct Saved {
        heads: usize,
        scale: f32,
        prefix: usize,
        pool: FlexTensor,
        batch: usize,
        rows: [KernelRows; 3],
        kept: AgentSaved,
        bias_shapes: [Shape; 2],
    }

    #[derive(Debug)]
    struct AgentNode;

    impl Backward<Flex, 5> for AgentNode {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let kernel = AgentAttention {
                heads: s.heads,
                scale: s.scale,
                prefix: s.prefix,
                pool: values(&s.pool),
                agent_bias: &[],
                query_bias: &[],
                dwc: None,
            };
            let [q, k, v] = s.rows.each_ref().map(KernelRows::rows);
            let g = kernel.backward(s.batch, [q, k, v], &s.kept, values(&grad));
            let [q_node, k_node, v_node, ab_node, qb_node] = ops.parents.map(|p| p.map(|n| n.id));
            let ids = [q_node, k_node, v_node];
            give_qkv(grads, ids, [g.q, g.k, g.v], &s.rows, s.batch);
            let [ab_shape, qb_shape] = s.bias_shapes;
            give(grads, ab_node, g.agent_bias, ab_shape);
            give(grads, qb_node, g.query_bias, qb_shape);
        }
    }

    let ([b, n_q, c], [_, n_k, _]) = (q.dims(), k.dims());
    let (heads, m) = (core.heads, core.pool.dims()[0]);
    let fits = k.dims() == v.dims()
        && k.dims()[0] == b
        && agent_bias.dims() == [1, heads, m, n_k]
        && query_bias.dims() == [1, heads, n_q, m]
        && core.pool.dims() == [m, n_q.saturating_sub(core.prefix)]
        && m > 0
        && c.is_multiple_of(heads);
    if !fits || n_q <= core.prefix || n_k == 0 {
        return None;
    }
    let ([qt, kt, vt], rows) = tracked_rows([q, k, v])?;
    let (at, bt, pool) = (
        tracked(agent_bias)?,
        tracked(query_bias)?,
        tracked(&core.pool)?,
    );
    let (ab, qb, pool) = (laid_out(&at), laid_out(&bt), laid_out(&pool));
    let kernel = AgentAttention {
        heads,
        scale: core.scale,
        prefix: core.prefix,
        pool: values(&pool),
        agent_bias: values(&ab),
        query_bias: values(&qb),
        dwc: None,
    };
    let [q_rows, k_rows, v_rows] = rows.each_ref().map(KernelRows::rows);
    let (out, kept) = kernel.forward_keeping(b, q_rows, k_rows, v_rows);
    let saved = Saved {
        heads,
        scale: core.scale,
        prefix: core.prefix,
        pool: pool.clone(),
        batch: b,
        rows,
        kept,
        bias_shapes: [ab.layout().shape().clone(), qb.layout().shape().clone()],
    };
    let parents = [qt.node(), kt.node(), vt.node(), at.node(), bt.node()];
    record(AgentNode, parents, saved, flex(out, [b, n_q, c].into()))
}

/// Softmax attention within windows (`SoftmaxAttention::attend`: `softmax(scale q k^T + bias +
/// mask) v` per window and head, heads merged) as one node: [`linvit_kernels::window`]'s
/// `forward_keeping` and `backward`, from the inputs (read in place, as views of the `qkv`
/// projection's output) and each head's softmax. `q, k, v` are `[windows, tokens, C]`; the
/// bias, where given, is `[1, heads, tokens, tokens]` and a parent (its gradient flows on,
/// through Burn's ops, to Swin's table); the mask `[masks, tokens, tokens]` is a constant.
/// `None` where the gate is closed or the sizes disagree.
pub(crate) fn window_softmax(
    heads: usize,
    scale: f32,
    [q, k, v]: [&Tensor<3>; 3],
    bias: Option<&Tensor<4>>,
    mask: Option<&Tensor<3>>,
) -> Option<Tensor<3>> {
    use linvit_kernels::window::WindowAttention;

    /// The inputs as the kernel reads them, and the softmaxes the forward kept.
    #[derive(Clone, Debug)]
    struct Saved {
        heads: usize,
        scale: f32,
        tokens: usize,
        rows: [KernelRows; 3],
        bias: Option<FlexTensor>,
        mask: Option<FlexTensor>,
        probs: Vec<f32>,
    }

    impl Saved {
        fn kernel(&self) -> WindowAttention<'_> {
            WindowAttention {
                heads: self.heads,
                scale: self.scale,
                bias: self.bias.as_ref().map(values),
                mask: self.mask.as_ref().map(values),
            }
        }
    }

    /// `N` parents: `q, k, v`, and the bias where there is one.
    #[derive(Debug)]
    struct WindowNode<const N: usize>;

    impl<const N: usize> Backward<Flex, N> for WindowNode<N> {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let [q, k, v] = s.rows.each_ref().map(KernelRows::rows);
            let g = s
                .kernel()
                .backward(s.tokens, [q, k, v], &s.probs, values(&grad));
            let ids = ops.parents.map(|p| p.map(|n| n.id));
            let windows = q.rows() / s.tokens;
            give_qkv(
                grads,
                [ids[0], ids[1], ids[2]],
                [g.q, g.k, g.v],
                &s.rows,
                windows,
            );
            if let (Some(values), Some(bias)) = (g.bias, &s.bias) {
                let shape = bias.layout().shape().clone();
                give(grads, ids.get(3).copied().flatten(), values, shape);
            }
        }
    }

    let [windows, n, c] = q.dims();
    let fits = k.dims() == q.dims()
        && v.dims() == q.dims()
        && n > 0
        && heads > 0
        && c.is_multiple_of(heads)
        && bias.is_none_or(|b| b.dims() == [1, heads, n, n])
        && mask.is_none_or(|m| {
            let [masks, mn, mm] = m.dims();
            masks > 0 && mn == n && mm == n && windows.is_multiple_of(masks)
        });
    if !fits {
        return None;
    }
    let ([qt, kt, vt], rows) = tracked_rows([q, k, v])?;
    let bias = crate::kernel::optional(bias, tracked)?;
    let mask = crate::kernel::optional(mask, tracked)?;
    let mut saved = Saved {
        heads,
        scale,
        tokens: n,
        rows,
        bias: bias.as_ref().map(laid_out),
        mask: mask.as_ref().map(laid_out),
        probs: Vec::new(),
    };
    let [q_rows, k_rows, v_rows] = saved.rows.each_ref().map(KernelRows::rows);
    let (out, probs) = saved.kernel().forward_keeping(n, q_rows, k_rows, v_rows);
    saved.probs = probs;
    let out = flex(out, [windows, n, c].into());
    let [q_node, k_node, v_node] = [&qt, &kt, &vt].map(|t| t.node());
    match bias {
        Some(bt) => record(WindowNode, [q_node, k_node, v_node, bt.node()], saved, out),
        None => record(WindowNode, [q_node, k_node, v_node], saved, out),
    }
}

/// A conv that cuts non-overlapping patches (stride = kernel `[kh, kw]`, no padding, one group:
/// patch embeddings, PVT's spatial reduction) with a bias, as one node whose output is tokens
/// `[B, (H / kh) * (W / kw), out]`: the patches gathered as rows ([`linvit_kernels::patch`],
/// read in place from `image`, which may be a view of tokens) times the weight, and in the
/// backward the linear layer's gradients with the input's scattered back to the image. Saves
/// the patch rows (as many values as the image) and the weight. `None` where the gate is
/// closed or the sizes disagree.
pub(crate) fn patch_conv(
    image: &Tensor<4>,
    weight: &Tensor<4>,
    bias: &Tensor<1>,
) -> Option<Tensor<3>> {
    use linvit_kernels::patch::{patches, unpatch, Image};

    #[derive(Clone, Debug)]
    struct Saved {
        patches: Vec<f32>,
        weight: FlexTensor,
        dims: [usize; 4],
    }

    #[derive(Debug)]
    struct PatchConv;

    impl Backward<Flex, 3> for PatchConv {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let w_shape = s.weight.layout().shape().clone();
            let [_, c, kh, kw] = w_shape.dims::<4>();
            let [x_node, w_node, b_node] = ops.parents.map(|p| p.map(|n| n.id));
            let g = linvit_kernels::linear::linear_backward(
                &s.patches,
                c * kh * kw,
                values(&s.weight),
                linvit_kernels::linear::WeightLayout::OutIn,
                values(&grad),
                [x_node.is_some(), w_node.is_some()],
            );
            if let Some(rows) = g.input {
                give(
                    grads,
                    x_node,
                    unpatch(&rows, s.dims, [kh, kw]),
                    s.dims.into(),
                );
            }
            if let Some(weight) = g.weight {
                give(grads, w_node, weight, w_shape.clone());
            }
            give(grads, b_node, g.bias, [w_shape[0]].into());
        }
    }

    let ([b, c, h, w], [out, wc, kh, kw]) = (image.dims(), weight.dims());
    if wc != c || bias.dims() != [out] || h < kh || w < kw || kh == 0 || kw == 0 {
        return None;
    }
    let (xt, wt, bt) = (tracked(image)?, tracked(weight)?, tracked(bias)?);
    let input = xt.primitive();
    let strides: Vec<usize> = input
        .layout()
        .strides()
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect::<Option<_>>()?;
    let view = Image::new(
        input.storage::<f32>(),
        input.layout().start_offset(),
        [b, c, h, w],
        [strides[0], strides[1], strides[2], strides[3]],
    );
    let rows = patches(view, [kh, kw]);
    let (kernel, bias_values) = (laid_out(&wt), laid_out(&bt));
    let y = linvit_kernels::linear::linear_transposed(
        &rows,
        c * kh * kw,
        values(&kernel),
        Some(values(&bias_values)),
    );
    let tokens = flex(y, [b, (h / kh) * (w / kw), out].into());
    let saved = Saved {
        patches: rows,
        weight: kernel,
        dims: [b, c, h, w],
    };
    record(PatchConv, [xt.node(), wt.node(), bt.node()], saved, tokens)
}

/// Normalised linear attention (`focused::linear_attend_prescaled` on `q, k, v` `[B, N, C]`
/// split into `heads`, merged again) as one node: [`linvit_kernels::linear_attention`]'s
/// forward and backward on the merged-head rows read in place, keeping each head's `[kv |
/// mean]`, each query's `1 / den` and the output. `None` where the gate is closed or the sizes
/// disagree.
pub(crate) fn linear_attention(heads: usize, [q, k, v]: [&Tensor<3>; 3]) -> Option<Tensor<3>> {
    use linvit_kernels::linear_attention::{backward, forward_keeping, LinearSaved};

    #[derive(Clone, Debug)]
    struct Saved {
        heads: usize,
        batch: usize,
        rows: [KernelRows; 3],
        out: FlexTensor,
        kept: LinearSaved,
    }

    #[derive(Debug)]
    struct LinearAttention;

    impl Backward<Flex, 3> for LinearAttention {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let [q, k, v] = s.rows.each_ref().map(KernelRows::rows);
            let g = backward(
                s.batch,
                s.heads,
                [q, k, v],
                values(&s.out),
                &s.kept,
                values(&grad),
            );
            let ids = ops.parents.map(|p| p.map(|n| n.id));
            give_qkv(grads, ids, [g.q, g.k, g.v], &s.rows, s.batch);
        }
    }

    let ([b, n_q, c], [bk, n_k, ck]) = (q.dims(), k.dims());
    let fits = v.dims() == k.dims() && bk == b && ck == c && n_k > 0 && n_q > 0;
    if !fits || heads == 0 || !c.is_multiple_of(heads) {
        return None;
    }
    let ([qt, kt, vt], rows) = tracked_rows([q, k, v])?;
    let [q_rows, k_rows, v_rows] = rows.each_ref().map(KernelRows::rows);
    let (out, kept) = forward_keeping(b, heads, q_rows, k_rows, v_rows);
    let out = flex(out, [b, n_q, c].into());
    let saved = Saved {
        heads,
        batch: b,
        rows,
        out: out.clone(),
        kept,
    };
    let parents = [qt.node(), kt.node(), vt.node()];
    record(LinearAttention, parents, saved, out)
}
