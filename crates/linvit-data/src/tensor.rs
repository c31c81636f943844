//! The one place this crate touches Burn: a finished `Batch` becomes device tensors.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::Batch;

/// A batch on a device.
#[derive(Clone, Debug)]
pub struct TensorBatch {
    /// `[n, c, h, w]`.
    pub images: Tensor<4>,
    /// `[n]`, class indices.
    pub labels: Tensor<1, Int>,
    /// `[n, num_classes]` soft targets when the batch has them.
    pub targets: Option<Tensor<2>>,
}

/// Moves `batch`'s buffers into tensors on `device` (no copy of the host vectors is kept).
pub fn to_tensors(batch: Batch, device: &Device) -> TensorBatch {
    let n = batch.shape[0];
    let k = batch.num_classes;
    TensorBatch {
        images: Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device),
        labels: Tensor::<1, Int>::from_data(TensorData::new(batch.labels, [n]), device),
        targets: batch
            .targets
            .map(|t| Tensor::<2>::from_data(TensorData::new(t, [n, k]), device)),
    }
}
