//! The gate of the fused CPU kernels and the views they read: the one place that decides whether
//! a tensor may go to `linvit-kernels` in place of Burn's ops (f32, on flex, the path
//! [`crate::Path::Auto`]), and that hands the kernels its elements. Crate-private: the models
//! call `ops`, `mlp` and the mixers, which ask here.

use burn::module::Param;
use burn::tensor::{Device, Tensor};
pub(crate) use burn_dispatch::backends::flex::FlexTensor;
use burn_dispatch::backends::Flex;
use linvit_kernels::norm::RowNorm;
use linvit_kernels::Rows;

use crate::LayerNorm;

/// Whether `device` is flex (Burn's CPU backend), with or without autodiff.
pub(crate) fn is_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        burn_dispatch::DispatchDevice::Flex(_)
    )
}

/// The flex tensor behind `t` for a fused CPU kernel to read in place (`as_slice`), where such
/// a kernel may stand in for Burn's ops: `t` is f32, on flex, with autodiff off and tracked by no
/// graph (inference). Contiguous, copied only where `t` is a strided view. `None` elsewhere.
pub(crate) fn kernel_input<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    flex_view(t).map(contiguous)
}

/// `t` as it is where it is a contiguous run of its buffer (a `narrow` of a projection's output
/// may be), copied otherwise: what a kernel reads with `as_slice`.
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// Whether a fused CPU kernel may take `t` (see [`kernel_input`]), checked without copying it.
pub(crate) fn kernel_applies<const D: usize>(t: &Tensor<D>) -> bool {
    flex_view(t).is_some()
}

/// The gate of every fused kernel: the flex tensor behind `t`, as it lies (maybe a strided view),
/// where `t` is f32, on flex, with autodiff off and tracked by no graph. `None` elsewhere.
pub(crate) fn flex_view<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    if !crate::Path::fused_for(t.dtype()) || t.is_tracked() {
        return None;
    }
    // Fails on other backends and on flex under autodiff (`Autodiff<Flex>` is another backend).
    t.clone().try_into_primitive::<Flex>().ok()
}

/// Token rows `[B, N, C]` for a fused CPU kernel, under [`kernel_input`]'s conditions, read in
/// place where their rows are evenly spaced and contiguous (a `narrow` of a fused `qkv`
/// projection's output is), copied to contiguous rows otherwise. `None` where no kernel applies.
pub(crate) fn kernel_rows(t: &Tensor<3>) -> Option<KernelRows> {
    flex_view(t).map(KernelRows::new)
}

/// The flex tensor behind [`kernel_rows`] and where its rows lie (its shape gives their width
/// and count).
#[derive(Clone, Debug)]
pub(crate) struct KernelRows {
    tensor: FlexTensor,
    offset: usize,
    stride: usize,
}

impl KernelRows {
    /// The rows of `t` (`[B, N, C]`) in place where they are evenly spaced and contiguous,
    /// copied to contiguous rows otherwise.
    pub(crate) fn new(t: FlexTensor) -> Self {
        let [b, n, c] = t.layout().shape().dims::<3>();
        let strides = t.layout().strides();
        let evenly_spaced = strides[2] == 1
            && strides[1] >= c as isize
            && (b == 1 || strides[0] == n as isize * strides[1]);
        if evenly_spaced {
            let (offset, stride) = (t.layout().start_offset(), strides[1] as usize);
            KernelRows {
                tensor: t,
                offset,
                stride,
            }
        } else {
            KernelRows {
                tensor: t.to_contiguous(),
                offset: 0,
                stride: c,
            }
        }
    }

    pub(crate) fn rows(&self) -> Rows<'_> {
        let [b, n, c] = self.tensor.layout().shape().dims::<3>();
        Rows::new(
            self.tensor.storage::<f32>(),
            self.offset,
            self.stride,
            c,
            b * n,
        )
    }
}

/// `f` on what `value` holds, for a kernel's optional input: `Some(None)` where `value` is
/// `None`, `None` where `f` declines.
pub(crate) fn optional<T, U>(
    value: Option<T>,
    f: impl FnOnce(T) -> Option<U>,
) -> Option<Option<U>> {
    match value {
        Some(v) => f(v).map(Some),
        None => Some(None),
    }
}

/// A `LayerNorm`'s parameters for a fused kernel, under [`kernel_input`]'s conditions.
pub(crate) struct NormInput {
    gamma: FlexTensor,
    beta: Option<FlexTensor>,
    eps: f32,
}

impl NormInput {
    /// `None` where no kernel applies.
    pub(crate) fn new(norm: &LayerNorm) -> Option<Self> {
        Some(NormInput {
            gamma: kernel_input(&norm.gamma.val())?,
            beta: optional_kernel_input(norm.beta.as_ref())?,
            eps: norm.epsilon() as f32,
        })
    }

    pub(crate) fn row_norm(&self) -> Option<RowNorm<'_>> {
        Some(RowNorm {
            gamma: self.gamma.as_slice()?,
            beta: optional_slice(&self.beta)?,
            eps: self.eps,
        })
    }
}

/// [`kernel_input`] of an optional parameter (a bias): `Some(None)` where there is none.
pub(crate) fn optional_kernel_input<const D: usize>(
    param: Option<&Param<Tensor<D>>>,
) -> Option<Option<FlexTensor>> {
    optional(param, |p| kernel_input(&p.val()))
}

/// The elements of an optional [`kernel_input`] (a bias, a mask): `Some(None)` where there is
/// none.
pub(crate) fn optional_slice(t: &Option<FlexTensor>) -> Option<Option<&[f32]>> {
    optional(t.as_ref(), FlexTensor::as_slice)
}
