//! linvit-data: everything between files on disk and a batch on the device.
//!
//! - [`DataConfig`]: the `[data]` section of a run (plain serde, unknown keys rejected).
//! - [`open`]: a config's train and val splits as [`Source`]s — the procedural `synthetic`
//!   dataset, MNIST/Fashion-MNIST `idx`, `cifar10` / `cifar100` binaries, or an ImageNet-layout
//!   `image-folder`.
//! - [`Transform`]: seeded train augmentation (random resized crop, flip, RandAugment, random
//!   erasing) or the eval resize + centre crop, then normalisation; [`mixup`] for batch mixing.
//! - [`Loader`]: batches prepared by a rayon pool in a background thread, deterministic for a
//!   (seed, epoch); [`to_tensors`] puts one on a Burn device.
//! - [`inspect()`], [`write_sample_grid`], [`throughput`]: what the CLI's `data inspect` and
//!   `bench data` print.

mod config;
mod error;
pub mod inspect;
pub mod loader;
pub mod mixup;
mod rng;
pub mod source;
pub mod tensor;
pub mod transform;

pub use config::{AugmentConfig, DataConfig, DataKind, DEFAULT_IDX_PATH};
pub use error::DataError;
pub use inspect::{
    inspect, inspect_dataset, throughput, throughput_dataset, write_sample_grid, Inspection,
    SplitSummary, Throughput,
};
pub use loader::{epoch_order, load_batch, Batch, Loader, LoaderOptions, Skipped};
pub use source::{open, Dataset, Image, Source, Split};
pub use tensor::{to_tensors, TensorBatch};
pub use transform::Transform;
