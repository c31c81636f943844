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
///
/// Evenly spaced f32 rows (a `narrow` of the last dim, such as agent attention's values cut
/// from the `kv` projection) are copied on all cores. Why not flex's `to_contiguous` for them:
/// it copies on the calling thread while the other cores wait.
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        return t;
    }
    match evenly_spaced_rows(&t) {
        Some((offset, stride, rows)) => {
            let shape = t.layout().shape().clone();
            let width = shape[shape.num_dims() - 1];
            let values = Rows::new(t.storage::<f32>(), offset, stride, width, rows).to_dense();
            FlexTensor::from_data(burn::tensor::TensorData::new(values, shape))
        }
        None => t.to_contiguous(),
    }
}

/// `(offset, stride, count)` of the last-dim rows of an f32 view whose rows are contiguous and
/// evenly spaced in its buffer (`count` rows, `stride` apart, from `offset`); `None` otherwise.
/// Dims of size 1 are passed over, whatever their stride.
fn evenly_spaced_rows(t: &FlexTensor) -> Option<(usize, usize, usize)> {
    let layout = t.layout();
    let (dims, strides) = (layout.shape(), layout.strides());
    let last = dims.num_dims().checked_sub(1)?;
    let width = dims[last];
    if t.dtype() != burn::tensor::DType::F32 || strides[last] != 1 {
        return None;
    }
    // From the innermost leading dim out: the first one that moves sets the rows' stride, and
    // each one after must step over all the rows inside it.
    let (mut stride, mut inside) = (None, 1);
    for i in (0..last).rev().filter(|&i| dims[i] > 1) {
        match stride {
            None => stride = Some(strides[i]),
            Some(s) if strides[i] != inside as isize * s => return None,
            Some(_) => {}
        }
        inside *= dims[i];
    }
    let stride = stride.unwrap_or(width as isize);
    let rows = (0..last).map(|i| dims[i]).product();
    (stride >= width as isize).then(|| (layout.start_offset(), stride as usize, rows))
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
        match evenly_spaced_rows(&t) {
            Some((offset, stride, _)) => KernelRows {
                tensor: t,
                offset,
                stride,
            },
            None => {
                let c = t.layout().shape()[2];
                KernelRows {
                    tensor: t.to_contiguous(),
                    offset: 0,
                    stride: c,
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Views copied to contiguous hold Burn's values: rows cut from wider rows (3 and 4 dims,
    /// one beside a dim of size 1; copied on all cores) and views whose rows are not evenly
    /// spaced or not contiguous (copied by flex).
    #[test]
    fn views_made_contiguous_hold_burns_values() {
        let device = Device::flex();
        let values = |n: usize| (0..n).map(|i| i as f32 * 0.5 - 7.0).collect::<Vec<_>>();
        let x3 =
            Tensor::<3>::from_data(TensorData::new(values(2 * 3000 * 9), [2, 3000, 9]), &device);
        let x4 = Tensor::<4>::from_data(
            TensorData::new(values(2 * 3 * 5 * 8), [2, 3, 5, 8]),
            &device,
        );
        check(x3.clone().narrow(2, 3, 5), true);
        check(x3.clone().narrow(1, 10, 200), false);
        check(x3.clone().narrow(1, 5, 1), true);
        check(x3.swap_dims(1, 2), false);
        check(x4.clone().narrow(3, 6, 2), true);
        check(x4.narrow(2, 1, 3), false);
    }

    fn check<const D: usize>(view: Tensor<D>, rows: bool) {
        let t = view.clone().try_into_primitive::<Flex>().expect("on flex");
        let dims = view.dims();
        assert!(!t.is_contiguous(), "{dims:?}");
        assert_eq!(evenly_spaced_rows(&t).is_some(), rows, "{dims:?}");
        let got = contiguous(t);
        let want = view.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(
            got.as_slice::<f32>().expect("contiguous"),
            want.as_slice(),
            "{dims:?}"
        );
    }
}
