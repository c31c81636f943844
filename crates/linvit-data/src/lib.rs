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
//!
//! ```
//! use linvit_data::{open, to_tensors, DataConfig, Loader, LoaderOptions, Split};
//!
//! // `[data]` of a run file; every key is optional (this is the procedural default).
//! let config = DataConfig { train_size: Some(64), val_size: Some(16), ..DataConfig::default() };
//! let dataset = open(&config)?;
//! let device = burn::tensor::Device::flex();
//! for epoch in 0..2 {
//!     let opts = LoaderOptions::for_split(Split::Train, 32, epoch);
//!     for batch in Loader::new(&dataset, &config, Split::Train, &opts)? {
//!         let batch = to_tensors(batch?, &device);
//!         assert_eq!(batch.images.dims(), [32, 3, 32, 32]);
//!         // Mixup/cutmix/label smoothing are on by default: train on the soft targets.
//!         assert_eq!(batch.targets.map(|t| t.dims()), Some([32, 10]));
//!     }
//! }
//! # Ok::<(), linvit_data::DataError>(())
//! ```

mod config;
mod error;
pub mod inspect;
pub mod loader;
pub mod mixup;
mod rng;
pub mod source;
pub mod tensor;
pub mod text;
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
