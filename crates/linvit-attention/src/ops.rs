//! Small tensor helpers shared by the attention families: head split/merge, token <-> image
//! layouts, and resampling written as matrices.
//!
//! Why matrices for resampling: the agent biases and FLatten's `sr_ratio > 1` branch need
//! PyTorch's exact `F.interpolate(..., align_corners=False)` and `AdaptiveAvgPool2d` semantics,
//! forward and backward, on every backend. A resampling of a fixed size is a linear map, so we
//! build its weights once on the host (mirroring PyTorch's index arithmetic) and apply them with
//! `matmul`, which every backend differentiates the same way. Built matrices are cached per
//! size and device, so only the first forward at a grid pays for them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};
use linvit_kernels::depthwise::DepthwiseTokens;
use linvit_kernels::linear::BlockInput;

use crate::kernel::{
    flex_view, is_flex, kernel_input, optional, optional_kernel_input, optional_slice, NormInput,
};
use crate::LayerNorm;

/// Which resampling a cached matrix is, its sizes, and the device it lives on.
type MatrixKey = (&'static str, [usize; 4], String, bool);

/// Resampling matrices already built, per kind, size and device: a forward at a grid seen before
/// reuses the device tensor instead of rebuilding it on the host and uploading it again.
fn matrix_cache() -> &'static Mutex<HashMap<MatrixKey, Tensor<2>>> {
    static CACHE: OnceLock<Mutex<HashMap<MatrixKey, Tensor<2>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The matrix for `key` on `device`, built by `build` the first time.
fn cached(
    kind: &'static str,
    sizes: [usize; 4],
    device: &Device,
    build: impl FnOnce() -> Tensor<2>,
) -> Tensor<2> {
    let key = (kind, sizes, format!("{device:?}"), device.is_autodiff());
    let lock = || matrix_cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = lock().get(&key) {
        return m.clone();
    }
    let m = build();
    lock().insert(key, m.clone());
    m
}

/// GELU in its erf form (PyTorch's `nn.GELU()`), with the exact derivative on every backend.
///
/// Why not `burn::tensor::activation::gelu` alone: Burn 0.22's fusion layer, which wgpu, CUDA
/// and remote devices run under, keeps the backend trait's default `gelu_backward`, and that
/// default differentiates the *tanh approximation* of GELU, not the erf form its forward
/// computes; on wgpu the gradients were off by up to 1.2e-3 (`tests/activations.rs`). Flex has
/// a fused kernel with the exact derivative, so it keeps it; elsewhere GELU is written out, in
/// the order of Burn's own forward, and autodiff differentiates `erf` exactly.
///
/// On flex in f32 ([`crate::Path::Auto`]), [`linvit_kernels::activation::gelu`] runs instead,
/// in training as one autodiff node with its own backward (`fused::gelu`): flex's GELU calls a
/// scalar `erff` on one thread, and its backward is several ops around it.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x.device()) {
        return gelu_written_out(x);
    }
    if let Some(values) = kernel_input(&x).as_ref().and_then(|t| t.as_slice::<f32>()) {
        return Tensor::from_data(
            TensorData::new(linvit_kernels::activation::gelu(values), x.dims()),
            &x.device(),
        );
    }
    crate::fused::gelu(&x).unwrap_or_else(|| burn::tensor::activation::gelu(x))
}

/// `x.narrow(dim, start, len)`, a view, and `x` itself where that is all of it; in training on
/// flex (see `fused::narrow`) one node whose backward adds into the parent's gradient in
/// place, where Burn's gives every view a zeroed full-size gradient of its own.
pub fn narrow<const D: usize>(x: Tensor<D>, dim: usize, start: usize, len: usize) -> Tensor<D> {
    if start == 0 && len == x.dims()[dim] {
        return x;
    }
    crate::fused::narrow(&x, dim, start, len).unwrap_or_else(|| x.narrow(dim, start, len))
}

/// The scalars of one AdamW step (see [`adamw`]).
pub use linvit_kernels::optim::AdamW as AdamUpdate;

/// One AdamW update of a flattened parameter (torch's single-tensor path): the new
/// `[parameter, exp_avg, exp_avg_sq]` from the parameter, its gradient and the moments (`None`
/// before the first step). On flex in f32 ([`crate::Path::Auto`]) one pass over memory
/// ([`linvit_kernels::optim`]) instead of [`adamw_written_out`]'s fourteen, with the same bits.
pub fn adamw(
    update: &AdamUpdate,
    param: Tensor<1>,
    grad: Tensor<1>,
    moments: Option<[Tensor<1>; 2]>,
) -> [Tensor<1>; 3] {
    // The kernel reads each tensor in place where all of them are f32 on flex (the gate).
    let flex: Option<Vec<_>> = [&param, &grad]
        .into_iter()
        .chain(moments.iter().flatten())
        .map(kernel_input)
        .collect();
    let slices: Option<Vec<&[f32]>> = flex
        .as_ref()
        .and_then(|f| f.iter().map(|t| t.as_slice::<f32>()).collect());
    let Some(slices) = slices else {
        return adamw_written_out(update, param, grad, moments);
    };
    let moments = (slices.len() == 4).then(|| [slices[2], slices[3]]);
    let device = param.device();
    update.update(slices[0], slices[1], moments).map(|values| {
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), &device)
    })
}

/// [`adamw`] written as tensor ops, on every backend: torch's `param.mul_(1 - lr * wd)`,
/// `exp_avg.lerp_(grad, 1 - beta1)`, `exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)`,
/// `denom = (exp_avg_sq.sqrt() / sqrt(bias2)).add_(eps)` and
/// `param.addcdiv_(exp_avg, denom, -step_size)`.
pub fn adamw_written_out(
    update: &AdamUpdate,
    param: Tensor<1>,
    grad: Tensor<1>,
    moments: Option<[Tensor<1>; 2]>,
) -> [Tensor<1>; 3] {
    let scalar = |x: f32| x as f64;
    let param = match update.decay {
        Some(decay) => param.mul_scalar(scalar(decay)),
        None => param,
    };
    let (b1, b2, c2) = (
        scalar(update.one_minus_beta1),
        scalar(update.beta2),
        scalar(update.one_minus_beta2),
    );
    let (m, v) = match moments {
        Some([m, v]) => (
            m.clone() + (grad.clone() - m).mul_scalar(b1),
            v.mul_scalar(b2) + grad.square().mul_scalar(c2),
        ),
        None => (grad.clone().mul_scalar(b1), grad.square().mul_scalar(c2)),
    };
    let denom = v
        .clone()
        .sqrt()
        .div_scalar(scalar(update.sqrt_bias2))
        .add_scalar(scalar(update.eps));
    let param = param - m.clone().div(denom).mul_scalar(scalar(update.step_size));
    [param, m, v]
}

/// `softmax(x, dim)`; over the last dim in training on flex (see `fused::softmax_last`) one
/// node that saves its output and has a one-pass backward, where Burn differentiates the five
/// ops it writes softmax with.
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    if dim + 1 != D {
        return burn::tensor::activation::softmax(x, dim);
    }
    crate::fused::softmax_last(&x).unwrap_or_else(|| burn::tensor::activation::softmax(x, dim))
}

/// `norm.forward(x)`; in training on flex (see `fused::layer_norm`) one node with a one-pass
/// backward, where Burn differentiates the ten ops LayerNorm is written with.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    let Some(beta) = &norm.beta else {
        return norm.forward(x);
    };
    crate::fused::layer_norm(&x, &norm.gamma.val(), &beta.val(), norm.epsilon())
        .unwrap_or_else(|| norm.forward(x))
}

/// `conv.forward(x)`; in training on flex (see `fused::depthwise_conv`) a depthwise conv with
/// same padding and stride 1 (FLatten's and agent attention's DWC, CSwin's LePE, PVTv2's MLP
/// conv) runs as one node with our own backward: flex differentiates it with a transposed
/// convolution, one scalar pass over the image per tap.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let (Some(_), Some(bias)) = (same_size_kernel(conv), &conv.bias) else {
        return conv.forward(x);
    };
    crate::fused::depthwise_conv(&x, &conv.weight.val(), &bias.val())
        .unwrap_or_else(|| conv.forward(x))
}

/// `image_to_tokens(conv2d(conv, tokens_to_image(x, grid)))`: a conv between tokens
/// `[B, H*W, C]` of `grid`, through [`depthwise_tokens`] where it applies.
pub fn conv2d_tokens(conv: &Conv2d, x: Tensor<3>, grid: [usize; 2]) -> Tensor<3> {
    depthwise_tokens(conv, &x, grid)
        .unwrap_or_else(|| image_to_tokens(conv2d(conv, tokens_to_image(x, grid))))
}

/// A depthwise conv with same padding and stride 1 (agent attention's DWC, CSwin's LePE,
/// PVTv2's MLP conv, FLatten's conv shared by the heads) on tokens `[B, H*W, C]` of `grid` as
/// they are, on flex in f32: channel `c` through kernel `c % kernels`
/// ([`linvit_kernels::depthwise::DepthwiseTokens`]), in training as one node
/// (`fused::depthwise_tokens`). Burn's ops transpose the tokens to an image and back around
/// the conv, and the gradient the same way, each a copy on one thread. `None` elsewhere.
pub fn depthwise_tokens(conv: &Conv2d, x: &Tensor<3>, grid: [usize; 2]) -> Option<Tensor<3>> {
    let (Some(_), Some(bias)) = (same_size_kernel(conv), &conv.bias) else {
        return None;
    };
    let (weight, bias) = (conv.weight.val(), bias.val());
    let shape = tokens_conv(x, grid, &weight)?;
    let inference = || {
        let [x_in, w_in, b_in] = [
            kernel_input(x)?,
            kernel_input(&weight)?,
            kernel_input(&bias)?,
        ];
        let y = shape.forward(x_in.as_slice()?, w_in.as_slice()?, b_in.as_slice()?);
        Some(Tensor::from_data(TensorData::new(y, x.dims()), &x.device()))
    };
    inference().or_else(|| crate::fused::depthwise_tokens(x, shape, &weight, &bias))
}

/// The shape of a depthwise conv with `weight` `[kernels, 1, k, k]` on tokens `x`
/// `[B, H * W, C]` of `grid`, `None` where the sizes do not fit together.
fn tokens_conv(
    x: &Tensor<3>,
    [height, width]: [usize; 2],
    weight: &Tensor<4>,
) -> Option<DepthwiseTokens> {
    let ([images, tokens, channels], [kernels, _, kernel, _]) = (x.dims(), weight.dims());
    let fits = kernels > 0 && channels.is_multiple_of(kernels) && tokens == height * width;
    fits.then_some(DepthwiseTokens {
        images,
        height,
        width,
        channels,
        kernels,
        kernel,
    })
}

/// The kernel size of a conv the fused kernels can run (odd, square, stride 1, same padding,
/// depthwise), `None` for any other.
pub(crate) fn same_size_kernel(conv: &Conv2d) -> Option<usize> {
    let [kh, kw] = conv.kernel_size;
    let r = kh / 2;
    let depthwise = conv.groups == conv.weight.dims()[0] && conv.weight.dims()[1] == 1;
    let same =
        matches!(conv.padding, PaddingConfig2d::Explicit(t, l, b, rr) if [t, l, b, rr] == [r; 4]);
    (kh == kw
        && kh % 2 == 1
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && depthwise
        && same)
        .then_some(kh)
}

/// Burn's `Linear` on `x` `[.., in]`; in inference on flex (see [`kernel_input`]) the fused
/// CPU kernel [`linvit_kernels::linear`] (the bias preloaded, no separate zeroing and bias
/// passes), in training on flex one autodiff node over the same kernel and its backward
/// (`fused::linear`; layers with a bias), Burn's op elsewhere.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if let Some(y) = linear_in_block(layer, &x, None, None, None) {
        return y;
    }
    if !crate::fused::applies(&x) {
        return layer.forward(x);
    }
    // A layer without a bias (Swin's patch merging) runs the same node with a zero bias that
    // takes no gradient: Burn's linear would transpose both operands into new tensors for
    // its backward, and the node's one extra pass (the bias's column sums) costs less.
    let weight = layer.weight.val();
    let bias = match &layer.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([weight.dims()[1]], &x.device()),
    };
    crate::fused::linear(&x, &weight, &bias).unwrap_or_else(|| layer.forward(x))
}

/// `layer(norm(x))`: one fused kernel call in inference on flex (see [`linear_in_block`]),
/// the two layers elsewhere.
pub fn normed_linear<const D: usize>(layer: &Linear, norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    match linear_in_block(layer, &x, None, Some(norm), None) {
        Some(y) => y,
        None => linear(layer, layer_norm(norm, x)),
    }
}

/// `residual + layer(x)`: one fused kernel call in inference on flex (see
/// [`linear_in_block`]), the layer and an add elsewhere.
pub fn linear_residual<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    residual: Tensor<D>,
) -> Tensor<D> {
    match linear_in_block(layer, &x, None, None, Some(&residual)) {
        Some(y) => y,
        None => residual + linear(layer, x),
    }
}

/// `residual + layer(norm(x))` (`norm` and `residual` each optional) as one fused CPU kernel
/// call ([`linvit_kernels::linear::linear_in_block`]: the rows normalised per block in cache,
/// the output rows starting as `residual`), in inference on flex (see [`kernel_input`]). With
/// `order`, a permutation of `x`'s rows (counted over all leading dims), the layer reads its
/// input row `i` from row `order[i]` of `x` (the gather done in cache too). `None` elsewhere:
/// the caller then runs the layers.
///
/// # Panics
/// Where `order` is not as long as `x` has rows (a caller bug).
pub fn linear_in_block<const D: usize>(
    layer: &Linear,
    x: &Tensor<D>,
    order: Option<&[usize]>,
    norm: Option<&LayerNorm>,
    residual: Option<&Tensor<D>>,
) -> Option<Tensor<D>> {
    let weight = kernel_input(&layer.weight.val())?;
    let bias = optional_kernel_input(layer.bias.as_ref())?;
    let input = kernel_input(x)?;
    let norm = optional(norm, NormInput::new)?;
    let residual = optional(residual, kernel_input)?;
    let [width, out] = weight.layout().shape().dims::<2>();
    let mut dims = x.dims();
    dims[D - 1] = out;
    if let Some(order) = order {
        let rows: usize = dims[..D - 1].iter().product();
        assert_eq!(order.len(), rows, "the row order must name every row once");
    }
    let residual = match &residual {
        Some(r) if r.layout().shape().dims::<D>() != dims => return None,
        Some(r) => Some(r.as_slice()?),
        None => None,
    };
    let input = BlockInput {
        x: input.as_slice()?,
        width,
        order,
        norm: optional(norm.as_ref(), NormInput::row_norm)?,
    };
    let y = linvit_kernels::linear::linear_in_block(
        input,
        weight.as_slice()?,
        optional_slice(&bias)?,
        residual,
    );
    Some(Tensor::from_data(TensorData::new(y, dims), &x.device()))
}

/// `image_to_tokens(conv.forward(image))` and the output grid: a conv on `[B, C, H, W]` as
/// tokens `[B, h*w, out]`. Where the conv cuts non-overlapping patches (stride equal to the
/// kernel, no padding, dilation 1, one group: patch embeddings, spatial reduction) in inference
/// on flex (see [`kernel_input`]), the patches are read in place from `image` (a token view
/// too) and multiplied by the fused linear kernel; in training on flex the same as one autodiff
/// node (`fused::patch_conv`, convs with a bias); Burn's conv elsewhere.
pub fn conv_to_tokens(conv: &Conv2d, image: Tensor<4>) -> (Tensor<3>, [usize; 2]) {
    let [kh, kw] = conv.kernel_size;
    let unpadded = matches!(
        conv.padding,
        PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
    );
    let patches = conv.stride == [kh, kw] && conv.dilation == [1, 1] && conv.groups == 1;
    let fused = || {
        let [b, c, h, w] = image.dims();
        let [rows, cols] = [h / kh, w / kw];
        if !(unpadded && patches) || rows == 0 || cols == 0 {
            return None;
        }
        let t = flex_view(&image)?;
        let strides: Vec<usize> = t
            .layout()
            .strides()
            .iter()
            .map(|&s| usize::try_from(s).ok())
            .collect::<Option<_>>()?;
        let view = linvit_kernels::patch::Image::new(
            t.storage::<f32>(),
            t.layout().start_offset(),
            [b, c, h, w],
            [strides[0], strides[1], strides[2], strides[3]],
        );
        let rows_in = linvit_kernels::patch::patches(view, [kh, kw]);
        let out = conv.weight.dims()[0];
        let weight = kernel_input(&conv.weight.val())?;
        let bias = optional_kernel_input(conv.bias.as_ref())?;
        let y = linvit_kernels::linear::linear_transposed(
            &rows_in,
            kh * kw * c,
            weight.as_slice()?,
            optional_slice(&bias)?,
        );
        let tokens = TensorData::new(y, [b, rows * cols, out]);
        Some((Tensor::from_data(tokens, &image.device()), [rows, cols]))
    };
    if let Some(result) = fused() {
        return result;
    }
    let [_, _, h, w] = image.dims();
    let trained = (unpadded && patches)
        .then_some(conv.bias.as_ref())
        .flatten()
        .and_then(|bias| crate::fused::patch_conv(&image, &conv.weight.val(), &bias.val()));
    if let Some(tokens) = trained {
        return (tokens, [h / kh, w / kw]);
    }
    let x = conv.forward(image);
    let [_, _, h, w] = x.dims();
    (image_to_tokens(x), [h, w])
}

/// `x * (erf(x / sqrt 2) + 1) / 2`, op by op (public so the tests can check it on flex).
pub fn gelu_written_out<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let cdf = x
        .clone()
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0);
    (x * cdf).div_scalar(2.0)
}

/// `[B, N, h*d]` -> `[B, h, N, d]` (channel `c` goes to head `c / d`, as upstream).
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

/// `[B, h, N, d]` -> `[B, N, h*d]`, head-major channels.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// Row-major tokens `[B, H*W, C]` -> image `[B, C, H, W]`.
pub fn tokens_to_image(x: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<4> {
    let [b, _, c] = x.dims();
    x.swap_dims(1, 2).reshape([b, c, h, w])
}

/// Image `[B, C, H, W]` -> row-major tokens `[B, H*W, C]`.
pub fn image_to_tokens(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w]).swap_dims(1, 2)
}

/// Cuts row-major tokens `[B, H*W, C]` into windows `[B*nWh*nWw, wh*ww, C]`, windows row-major
/// over the window grid and tokens row-major inside (CSwin's `img2windows`).
pub fn tokens_to_windows(x: Tensor<3>, [h, w]: [usize; 2], [wh, ww]: [usize; 2]) -> Tensor<3> {
    let [b, _, c] = x.dims();
    if [wh, ww] == [h, w] {
        return x;
    }
    x.reshape([b, h / wh, wh, w / ww, ww * c])
        .swap_dims(2, 3)
        .reshape([b * (h / wh) * (w / ww), wh * ww, c])
}

/// Inverse of [`tokens_to_windows`].
pub fn windows_to_tokens(x: Tensor<3>, [h, w]: [usize; 2], [wh, ww]: [usize; 2]) -> Tensor<3> {
    let [bw, _, c] = x.dims();
    if [wh, ww] == [h, w] {
        return x;
    }
    let b = bw / ((h / wh) * (w / ww));
    x.reshape([b, h / wh, w / ww, wh, ww * c])
        .swap_dims(2, 3)
        .reshape([b, h * w, c])
}

/// Weights `[out, in]` (row-major) of PyTorch's 1-D linear interpolation with
/// `align_corners=False` and no antialiasing, computed in f32 as PyTorch does for f32 tensors.
pub fn linear_resize_weights(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; output * input];
    let scale = input as f32 / output as f32;
    for dst in 0..output {
        let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(input - 1);
        let i1 = if i0 + 1 < input { i0 + 1 } else { i0 };
        let l1 = src - i0 as f32;
        m[dst * input + i0] += 1.0 - l1;
        m[dst * input + i1] += l1;
    }
    m
}

/// Weights `[out, in]` of PyTorch's 1-D bicubic interpolation (`align_corners=False`, no
/// antialiasing, `A = -0.75`), in f32 as PyTorch computes them for f32 tensors. Unlike the linear
/// case the source coordinate is not clamped at 0; the four taps are clamped to the border.
pub fn cubic_resize_weights(input: usize, output: usize) -> Vec<f32> {
    const A: f32 = -0.75;
    // Keys's convolution kernel on |x| <= 1 and on 1 < |x| < 2.
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let mut m = vec![0.0f32; output * input];
    let scale = input as f32 / output as f32;
    for dst in 0..output {
        let src = scale * (dst as f32 + 0.5) - 0.5;
        let floor = src.floor();
        let t = src - floor;
        let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, w) in taps.into_iter().enumerate() {
            let i = (floor as isize - 1 + k as isize).clamp(0, input as isize - 1) as usize;
            m[dst * input + i] += w;
        }
    }
    m
}

/// Weights `[out, in]` of `AdaptiveAvgPool1d`: bin `i` averages `[floor(i*in/out), ceil((i+1)*in/out))`.
pub fn adaptive_pool_weights(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; output * input];
    for i in 0..output {
        let start = i * input / output;
        let end = ((i + 1) * input).div_ceil(output);
        for j in start..end {
            m[i * input + j] = 1.0 / (end - start) as f32;
        }
    }
    m
}

/// Kronecker product of two row-major matrices `a [m1, n1]`, `b [m2, n2]` -> `[m1*m2, n1*n2]`:
/// the separable 2-D map over row-major grids.
fn kron(a: &[f32], [m1, n1]: [usize; 2], b: &[f32], [m2, n2]: [usize; 2]) -> Vec<f32> {
    let mut out = vec![0.0f32; m1 * m2 * n1 * n2];
    let cols = n1 * n2;
    for i1 in 0..m1 {
        for j1 in 0..n1 {
            let a = a[i1 * n1 + j1];
            if a == 0.0 {
                continue;
            }
            for i2 in 0..m2 {
                for j2 in 0..n2 {
                    out[(i1 * m2 + i2) * cols + j1 * n2 + j2] = a * b[i2 * n2 + j2];
                }
            }
        }
    }
    out
}

/// Bilinear resize (`align_corners=False`) of a row-major `from` grid to a `to` grid, as a
/// `[to_h*to_w, from_h*from_w]` matrix to multiply token-major data with.
pub fn bilinear_matrix(from: [usize; 2], to: [usize; 2], device: &Device) -> Tensor<2> {
    cached("bilinear", [from[0], from[1], to[0], to[1]], device, || {
        build_bilinear_matrix(from, to, device)
    })
}

fn build_bilinear_matrix(from: [usize; 2], to: [usize; 2], device: &Device) -> Tensor<2> {
    let rows = linear_resize_weights(from[0], to[0]);
    let cols = linear_resize_weights(from[1], to[1]);
    let m = kron(&rows, [to[0], from[0]], &cols, [to[1], from[1]]);
    Tensor::from_data(
        TensorData::new(m, [to[0] * to[1], from[0] * from[1]]),
        device,
    )
}

/// `AdaptiveAvgPool2d(to)` of a row-major `from` grid as a `[to_h*to_w, from_h*from_w]` matrix.
pub fn adaptive_pool_matrix(from: [usize; 2], to: [usize; 2], device: &Device) -> Tensor<2> {
    cached(
        "adaptive_pool",
        [from[0], from[1], to[0], to[1]],
        device,
        || build_adaptive_pool_matrix(from, to, device),
    )
}

fn build_adaptive_pool_matrix(from: [usize; 2], to: [usize; 2], device: &Device) -> Tensor<2> {
    let rows = adaptive_pool_weights(from[0], to[0]);
    let cols = adaptive_pool_weights(from[1], to[1]);
    let m = kron(&rows, [to[0], from[0]], &cols, [to[1], from[1]]);
    Tensor::from_data(
        TensorData::new(m, [to[0] * to[1], from[0] * from[1]]),
        device,
    )
}

/// 1-D linear resize (`align_corners=False`) of `from` samples to `to`, as a `[to, from]` matrix.
pub fn linear_matrix(from: usize, to: usize, device: &Device) -> Tensor<2> {
    cached("linear", [from, to, 0, 0], device, || {
        Tensor::from_data(
            TensorData::new(linear_resize_weights(from, to), [to, from]),
            device,
        )
    })
}

/// Applies a `[n_out, n_in]` resampling matrix along axis `dim` of length `n_in`.
pub fn resample_axis<const D: usize>(x: Tensor<D>, matrix: Tensor<2>, dim: usize) -> Tensor<D> {
    // The matrices are built (and cached) in f32; half-precision passes resample in their dtype.
    let matrix = matrix.cast(x.dtype());
    let moved = x.swap_dims(dim, D - 2);
    let dims = moved.dims();
    let [n_out, _] = matrix.dims();
    let mut out_dims = dims;
    out_dims[D - 2] = n_out;
    let lead: usize = dims[..D - 2].iter().product();
    let flat: Tensor<3> = moved.reshape([lead, dims[D - 2], dims[D - 1]]);
    let out = matrix.unsqueeze::<3>().matmul(flat);
    out.reshape(out_dims).swap_dims(dim, D - 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_resize_matches_pytorch_upsampling_by_two() {
        // torch.nn.functional.interpolate(torch.arange(3.).view(1,1,3), size=6, mode='linear')
        // -> [0.0, 0.25, 0.75, 1.25, 1.75, 2.0]
        let w = linear_resize_weights(3, 6);
        let x = [0.0f32, 1.0, 2.0];
        let y: Vec<f32> = (0..6)
            .map(|i| (0..3).map(|j| w[i * 3 + j] * x[j]).sum())
            .collect();
        let want = [0.0, 0.25, 0.75, 1.25, 1.75, 2.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn linear_resize_to_the_same_size_is_the_identity() {
        let w = linear_resize_weights(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(w[i * 5 + j], if i == j { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn shrinking_does_not_antialias() {
        // interpolate(arange(7.), size=3, mode='linear') = [0.6667, 3.0, 5.3333]
        let w = linear_resize_weights(7, 3);
        let y: Vec<f32> = (0..3)
            .map(|i| (0..7).map(|j| w[i * 7 + j] * j as f32).sum())
            .collect();
        for (a, b) in y.iter().zip([2.0 / 3.0, 3.0, 16.0 / 3.0]) {
            assert!((a - b).abs() < 1e-5, "{y:?}");
        }
    }

    #[test]
    fn adaptive_pool_bins_overlap_when_uneven() {
        // AdaptiveAvgPool1d(3) over 7 inputs: bins [0,3), [2,5), [4,7)
        let w = adaptive_pool_weights(7, 3);
        let row = |i: usize| &w[i * 7..(i + 1) * 7];
        assert_eq!(row(0), &[1. / 3., 1. / 3., 1. / 3., 0., 0., 0., 0.]);
        assert_eq!(row(1), &[0., 0., 1. / 3., 1. / 3., 1. / 3., 0., 0.]);
        assert_eq!(row(2), &[0., 0., 0., 0., 1. / 3., 1. / 3., 1. / 3.]);
    }
}
