//! Batching: a background thread prepares batches (decode + augment in parallel on a private
//! rayon pool) and hands them over a bounded channel, `prefetch` batches ahead. Order and
//! contents depend only on (seed, epoch, split): every image has its own RNG stream and rayon's
//! ordered `collect` puts results back in index order, whatever the thread count.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::Serialize;

use crate::mixup::{mix_batch, MixInfo};
use crate::rng::{below, purpose, stream};
use crate::source::{Dataset, Source, Split};
use crate::transform::Transform;
use crate::{AugmentConfig, DataConfig, DataError};

/// One batch as flat buffers, ready for `tensor::to_tensors`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[n, c, h, w]`, normalised.
    pub images: Vec<f32>,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    /// Hard labels, `[n]` (the unmixed ones when mixing).
    pub labels: Vec<i64>,
    /// Soft targets `[n, num_classes]` when mixup, cutmix or label smoothing is on (train only).
    pub targets: Option<Vec<f32>>,
    pub num_classes: usize,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
    /// Mixing applied to this batch, if any.
    pub mix: Option<MixInfo>,
    /// Files skipped in this batch (`skip_corrupt = true`); the batch is that much shorter.
    pub skipped: Vec<Skipped>,
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether the batch holds no images (every file in it was skipped).
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// A file left out because it could not be decoded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    pub index: usize,
    pub path: Option<PathBuf>,
    pub reason: String,
}

/// How to walk a split.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Shuffle with the (seed, epoch) permutation. Default: true for train, false for val.
    pub shuffle: bool,
    /// Drop a last, partial batch. Default: true for train, false for val.
    pub drop_last: bool,
    /// Epoch number; changes the shuffle and the augmentation.
    pub epoch: u64,
    /// Use at most this many images of the split.
    pub limit: Option<usize>,
}

impl LoaderOptions {
    /// Defaults for a split: train shuffles and drops the last partial batch, val does neither.
    pub fn for_split(split: Split, batch_size: usize, epoch: u64) -> Self {
        LoaderOptions {
            batch_size,
            shuffle: split == Split::Train,
            drop_last: split == Split::Train,
            epoch,
            limit: None,
        }
    }
}

/// Everything one batch needs, shared with the worker thread.
struct Plan {
    source: Arc<dyn Source>,
    transform: Transform,
    mix: Option<AugmentConfig>,
    num_classes: usize,
    seed: u64,
    epoch: u64,
    skip_corrupt: bool,
    pool: rayon::ThreadPool,
}

/// The order a split is read in for `(seed, epoch)`.
pub fn epoch_order(len: usize, seed: u64, split: Split, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = stream(seed, purpose::SHUFFLE, split.id(), epoch);
        for i in (1..len).rev() {
            order.swap(i, below(&mut rng, i + 1));
        }
    }
    order
}

fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, DataError> {
    let mut b = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("linvit-data-{i}"));
    if let Some(n) = threads {
        b = b.num_threads(n);
    }
    b.build()
        .map_err(|e| DataError::config("num_workers", format!("cannot start threads: {e}")))
}

impl Plan {
    fn new(
        dataset: &Dataset,
        config: &DataConfig,
        split: Split,
        epoch: u64,
    ) -> Result<Self, DataError> {
        let transform = Transform::new(config, dataset.source_channels(), split);
        let mix = (split == Split::Train && config.augment.soft_targets())
            .then(|| config.augment.clone());
        Ok(Plan {
            source: dataset.split(split).clone(),
            transform,
            mix,
            num_classes: dataset.num_classes(),
            seed: config.seed,
            epoch,
            skip_corrupt: config.skip_corrupt,
            pool: thread_pool(config.num_workers)?,
        })
    }

    fn batch(&self, batch_index: usize, indices: &[usize]) -> Result<Batch, DataError> {
        let per = self.transform.output_len();
        let items: Vec<Result<(Vec<f32>, usize), DataError>> = self.pool.install(|| {
            indices
                .par_iter()
                .map(|&index| {
                    let (img, label) = self.source.get(index)?;
                    let mut rng = stream(self.seed, purpose::AUGMENT, self.epoch, index as u64);
                    let mut out = vec![0f32; per];
                    self.transform.apply(&img, &mut rng, &mut out);
                    Ok((out, label))
                })
                .collect()
        });
        let mut images = Vec::with_capacity(per * indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        let mut kept = Vec::with_capacity(indices.len());
        let mut skipped = Vec::new();
        for (item, &index) in items.into_iter().zip(indices) {
            match item {
                Ok((pixels, label)) => {
                    if label >= self.num_classes {
                        return Err(DataError::LabelOutOfRange {
                            path: self.source.path_of(index).unwrap_or_default(),
                            index,
                            label,
                            num_classes: self.num_classes,
                        });
                    }
                    images.extend_from_slice(&pixels);
                    labels.push(label as i64);
                    kept.push(index);
                }
                Err(DataError::Corrupt { path, reason }) if self.skip_corrupt => {
                    skipped.push(Skipped {
                        index,
                        path: Some(path),
                        reason,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let s = self.transform.size;
        let shape = [labels.len(), self.transform.channels, s, s];
        let (targets, mix) = match &self.mix {
            Some(aug) => {
                let mut rng = stream(self.seed, purpose::MIX, self.epoch, batch_index as u64);
                let (t, info) =
                    mix_batch(&mut images, &labels, shape, self.num_classes, aug, &mut rng);
                (Some(t), Some(info))
            }
            None => (None, None),
        };
        Ok(Batch {
            images,
            shape,
            labels,
            targets,
            num_classes: self.num_classes,
            indices: kept,
            mix,
            skipped,
        })
    }
}

/// Prepares one batch of the given dataset indices on the calling thread's pool (no
/// prefetching): what the loader does for each batch, for tools that pick images themselves.
pub fn load_batch(
    dataset: &Dataset,
    config: &DataConfig,
    split: Split,
    epoch: u64,
    batch_index: usize,
    indices: &[usize],
) -> Result<Batch, DataError> {
    Plan::new(dataset, config, split, epoch)?.batch(batch_index, indices)
}

/// An iterator over one epoch of batches, prepared in the background.
pub struct Loader {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    handle: Option<JoinHandle<()>>,
    num_batches: usize,
    skipped: Arc<Mutex<Vec<Skipped>>>,
}

impl Loader {
    /// Starts preparing `split` for `opts.epoch`. Errors from files arrive as `Err` items.
    pub fn new(
        dataset: &Dataset,
        config: &DataConfig,
        split: Split,
        opts: &LoaderOptions,
    ) -> Result<Self, DataError> {
        if opts.batch_size == 0 {
            return Err(DataError::config("batch_size", "must be at least 1"));
        }
        let plan = Plan::new(dataset, config, split, opts.epoch)?;
        let mut order = epoch_order(
            plan.source.len(),
            config.seed,
            split,
            opts.epoch,
            opts.shuffle,
        );
        if let Some(limit) = opts.limit {
            order.truncate(limit);
        }
        let chunks: Vec<Vec<usize>> = order
            .chunks(opts.batch_size)
            .filter(|c| !opts.drop_last || c.len() == opts.batch_size)
            .map(|c| c.to_vec())
            .collect();
        let num_batches = chunks.len();
        let (tx, rx) = sync_channel(config.prefetch);
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let log = skipped.clone();
        let handle = std::thread::Builder::new()
            .name("linvit-data-prefetch".into())
            .spawn(move || {
                for (i, chunk) in chunks.iter().enumerate() {
                    let result = plan.batch(i, chunk);
                    let failed = result.is_err();
                    if let Ok(b) = &result {
                        if let Ok(mut log) = log.lock() {
                            log.extend(b.skipped.iter().cloned());
                        }
                    }
                    if tx.send(result).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| DataError::config("num_workers", format!("cannot start thread: {e}")))?;
        Ok(Loader {
            rx: Some(rx),
            handle: Some(handle),
            num_batches,
            skipped,
        })
    }

    /// Batches in this epoch (before any file errors).
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    /// Files skipped so far (`skip_corrupt = true`).
    pub fn skipped(&self) -> Vec<Skipped> {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked worker's `send` fail so it exits.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
