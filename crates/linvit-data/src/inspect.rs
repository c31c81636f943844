//! What `linvit data inspect` and `linvit bench data` print: counts, sizes, pixel statistics,
//! a PNG grid of augmented samples, and decode+augment throughput.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::loader::{load_batch, Loader, LoaderOptions, Skipped};
use crate::source::{open, Dataset, Split};
use crate::transform::Transform;
use crate::{DataConfig, DataError};

/// Counts and pixel statistics of one split.
#[derive(Clone, Debug, Serialize)]
pub struct SplitSummary {
    pub split: Split,
    pub count: usize,
    /// Images per class, in class order.
    pub per_class: Vec<usize>,
    /// Channels as stored.
    pub channels: usize,
    /// Smallest and largest `[height, width]` among the images measured.
    pub min_size: [usize; 2],
    pub max_size: [usize; 2],
    /// Per-channel mean and std of the stored pixels, scaled to [0, 1].
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// How many images the size and pixel statistics come from.
    pub measured: usize,
    /// Files that could not be decoded (`skip_corrupt = true`).
    pub skipped: Vec<Skipped>,
}

/// The summary of a dataset.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub kind: String,
    pub path: Option<PathBuf>,
    pub class_names: Vec<String>,
    /// Side of the images handed to the model.
    pub image_size: usize,
    /// Channels handed to the model.
    pub channels: usize,
    pub splits: Vec<SplitSummary>,
}

fn summarise(
    dataset: &Dataset,
    config: &DataConfig,
    split: Split,
    max_images: usize,
) -> Result<SplitSummary, DataError> {
    let source = dataset.split(split);
    let n = source.len();
    let mut per_class = vec![0usize; dataset.num_classes()];
    for i in 0..n {
        let l = source.label(i)?;
        match per_class.get_mut(l) {
            Some(c) => *c += 1,
            None => {
                return Err(DataError::LabelOutOfRange {
                    path: source.path_of(i).unwrap_or_default(),
                    index: i,
                    label: l,
                    num_classes: per_class.len(),
                })
            }
        }
    }
    let m = n.min(max_images);
    let picks: Vec<usize> = (0..m).map(|i| i * n / m.max(1)).collect();
    let c = source.channels();
    // Per image: sums, sums of squares, pixel count, size; or the file it failed on.
    type Acc = (Vec<f64>, Vec<f64>, usize, [usize; 2]);
    let results: Vec<Result<Acc, DataError>> = picks
        .par_iter()
        .map(|&i| {
            let (img, _) = source.get(i)?;
            let (mut s, mut s2) = (vec![0f64; c], vec![0f64; c]);
            for px in img.data.chunks_exact(c) {
                for k in 0..c {
                    let v = px[k] as f64 / 255.0;
                    s[k] += v;
                    s2[k] += v * v;
                }
            }
            Ok((s, s2, img.width * img.height, [img.height, img.width]))
        })
        .collect();
    let (mut sum, mut sum2, mut pixels) = (vec![0f64; c], vec![0f64; c], 0usize);
    let (mut min_size, mut max_size) = ([usize::MAX; 2], [0usize; 2]);
    let mut skipped = Vec::new();
    let mut measured = 0;
    for (r, &i) in results.into_iter().zip(&picks) {
        match r {
            Ok((s, s2, p, size)) => {
                for k in 0..c {
                    sum[k] += s[k];
                    sum2[k] += s2[k];
                }
                pixels += p;
                measured += 1;
                for d in 0..2 {
                    min_size[d] = min_size[d].min(size[d]);
                    max_size[d] = max_size[d].max(size[d]);
                }
            }
            Err(DataError::Corrupt { path, reason }) if config.skip_corrupt => {
                skipped.push(Skipped {
                    index: i,
                    path: Some(path),
                    reason,
                })
            }
            Err(e) => return Err(e),
        }
    }
    let p = pixels.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / p).collect();
    let std = sum2
        .iter()
        .zip(&mean)
        .map(|(s2, m)| (s2 / p - m * m).max(0.0).sqrt())
        .collect();
    if measured == 0 {
        min_size = [0, 0];
    }
    Ok(SplitSummary {
        split,
        count: n,
        per_class,
        channels: c,
        min_size,
        max_size,
        mean,
        std,
        measured,
        skipped,
    })
}

/// Opens `config`'s dataset and summarises both splits; pixel statistics and sizes come from
/// at most `max_images` evenly spaced images per split (`None`: all).
pub fn inspect(config: &DataConfig, max_images: Option<usize>) -> Result<Inspection, DataError> {
    let dataset = open(config)?;
    inspect_dataset(&dataset, config, max_images)
}

/// `inspect` for an already opened dataset.
pub fn inspect_dataset(
    dataset: &Dataset,
    config: &DataConfig,
    max_images: Option<usize>,
) -> Result<Inspection, DataError> {
    let max = max_images.unwrap_or(usize::MAX);
    Ok(Inspection {
        kind: dataset.kind.name().to_string(),
        path: config.resolved_path()?,
        class_names: dataset.class_names.clone(),
        image_size: config.image_size,
        channels: config.channels.unwrap_or(dataset.source_channels()),
        splits: vec![
            summarise(dataset, config, Split::Train, max)?,
            summarise(dataset, config, Split::Val, max)?,
        ],
    })
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dataset: {}", self.kind)?;
        if let Some(p) = &self.path {
            write!(f, " ({})", p.display())?;
        }
        writeln!(
            f,
            "\nclasses: {}\nmodel input: {} x {} x {}",
            self.class_names.len(),
            self.channels,
            self.image_size,
            self.image_size
        )?;
        for s in &self.splits {
            writeln!(
                f,
                "{}: {} images, {} channel(s)",
                s.split, s.count, s.channels
            )?;
            if s.min_size == s.max_size {
                writeln!(f, "  image size: {} x {}", s.min_size[0], s.min_size[1])?;
            } else {
                writeln!(
                    f,
                    "  image size: {} x {} to {} x {}",
                    s.min_size[0], s.min_size[1], s.max_size[0], s.max_size[1]
                )?;
            }
            let fmt3 = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                f,
                "  pixel mean [{}], std [{}] over {} images",
                fmt3(&s.mean),
                fmt3(&s.std),
                s.measured
            )?;
            for (name, count) in self.class_names.iter().zip(&s.per_class) {
                writeln!(f, "  {count:>8}  {name}")?;
            }
            if !s.skipped.is_empty() {
                writeln!(f, "  skipped {} corrupt file(s):", s.skipped.len())?;
                for k in &s.skipped {
                    let p = k.path.as_deref().unwrap_or(Path::new("?"));
                    writeln!(f, "    {}: {}", p.display(), k.reason)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes a `rows x cols` PNG grid of `split`'s images after the full transform (crop, flip,
/// RandAugment, erasing and, for train, mixup/cutmix), undoing the normalisation for display.
/// Returns the labels shown, row by row.
pub fn write_sample_grid(
    config: &DataConfig,
    split: Split,
    rows: usize,
    cols: usize,
    path: &Path,
) -> Result<Vec<usize>, DataError> {
    let dataset = open(config)?;
    let n = dataset.split(split).len();
    let count = (rows * cols).min(n);
    if count == 0 {
        return Err(DataError::config("grid", "nothing to draw"));
    }
    let indices: Vec<usize> = (0..count).map(|i| i * n / count).collect();
    let batch = load_batch(&dataset, config, split, 0, 0, &indices)?;
    let t = Transform::new(config, dataset.source_channels(), split);
    let [b, c, s, _] = batch.shape;
    let zoom = (64 / s).max(1);
    let tile = s * zoom;
    let gap = 2;
    let (w, h) = (cols * (tile + gap) + gap, rows * (tile + gap) + gap);
    let mut canvas = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    for i in 0..b {
        let (r, col) = (i / cols, i % cols);
        let (ox, oy) = (gap + col * (tile + gap), gap + r * (tile + gap));
        let img = &batch.images[i * c * s * s..(i + 1) * c * s * s];
        for y in 0..tile {
            for x in 0..tile {
                let (sy, sx) = (y / zoom, x / zoom);
                let px: [u8; 3] = std::array::from_fn(|k| {
                    let ch = k.min(c - 1);
                    let v = img[ch * s * s + sy * s + sx] * t.std[ch] + t.mean[ch];
                    (v * 255.0).round().clamp(0.0, 255.0) as u8
                });
                canvas.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
        }
    }
    canvas.save(path).map_err(|e| DataError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(batch.labels.iter().map(|&l| l as usize).collect())
}

/// Decode + augment speed of the loader.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub kind: String,
    pub split: Split,
    pub images: usize,
    pub batches: usize,
    pub batch_size: usize,
    pub threads: usize,
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Files skipped as corrupt along the way.
    pub skipped: usize,
}

impl fmt::Display for Throughput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} images in {:.2} s = {:.0} images/s ({} threads, batch {})",
            self.kind,
            self.split,
            self.images,
            self.seconds,
            self.images_per_sec,
            self.threads,
            self.batch_size
        )
    }
}

/// Runs the loader over up to `images` images of `split` (opening the files is not timed)
/// and measures decoded + augmented images per second, mixup included.
pub fn throughput(
    config: &DataConfig,
    split: Split,
    images: usize,
    batch_size: usize,
) -> Result<Throughput, DataError> {
    let dataset = open(config)?;
    throughput_dataset(&dataset, config, split, images, batch_size)
}

/// `throughput` for an already opened dataset.
pub fn throughput_dataset(
    dataset: &Dataset,
    config: &DataConfig,
    split: Split,
    images: usize,
    batch_size: usize,
) -> Result<Throughput, DataError> {
    let mut opts = LoaderOptions::for_split(split, batch_size, 0);
    opts.drop_last = false;
    opts.limit = Some(images);
    let start = Instant::now();
    let loader = Loader::new(dataset, config, split, &opts)?;
    let (mut count, mut batches) = (0, 0);
    for batch in loader {
        let batch = batch?;
        count += batch.len();
        batches += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Throughput {
        kind: dataset.kind.name().to_string(),
        split,
        images: count,
        batches,
        batch_size,
        threads: config
            .num_workers
            .unwrap_or_else(rayon::current_num_threads),
        seconds,
        images_per_sec: count as f64 / seconds.max(1e-9),
        skipped: images.min(dataset.split(split).len()) - count,
    })
}
