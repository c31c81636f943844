//! Image sources. Each one hands out `(Image, label)` by index for a split; `open` builds the
//! train and val sources a config names.

pub mod cifar;
pub mod folder;
pub mod idx;
pub mod synthetic;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::{DataConfig, DataError, DataKind};

/// A decoded image: `height * width * channels` bytes, row-major HWC, channels 1 or 3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Image {
    /// A black image.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Image {
            width,
            height,
            channels,
            data: vec![0; width * height * channels],
        }
    }

    /// The same pixels with `channels` channels: gray repeated to RGB, or RGB to luminance
    /// (ITU-R 601-2, as PIL's `convert("L")`).
    pub fn with_channels(self, channels: usize) -> Image {
        if channels == self.channels {
            return self;
        }
        let n = self.width * self.height;
        let data = if channels == 3 {
            self.data.iter().flat_map(|&v| [v, v, v]).collect()
        } else {
            (0..n)
                .map(|i| {
                    let p = &self.data[i * 3..i * 3 + 3];
                    let l =
                        (p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000;
                    l as u8
                })
                .collect()
        };
        Image {
            data,
            channels,
            ..self
        }
    }
}

/// Which split of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    pub(crate) fn id(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Val => 1,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One split of a dataset: random access to images and labels. Implementations are cheap to
/// share across threads; `get` may decode a file (image-folder) or render (synthetic).
pub trait Source: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether the split is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Label of image `index` without decoding it.
    fn label(&self, index: usize) -> Result<usize, DataError>;
    /// Image `index` and its label.
    fn get(&self, index: usize) -> Result<(Image, usize), DataError>;
    /// Channels of the images as stored (1 or 3).
    fn channels(&self) -> usize;
    /// Size `(height, width)` when every image has the same one.
    fn fixed_size(&self) -> Option<(usize, usize)>;
    /// The file behind image `index`, for sources with one file per image.
    fn path_of(&self, _index: usize) -> Option<PathBuf> {
        None
    }
}

/// Train and val splits of one dataset, with class names.
#[derive(Clone)]
pub struct Dataset {
    pub kind: DataKind,
    pub train: Arc<dyn Source>,
    pub val: Arc<dyn Source>,
    pub class_names: Vec<String>,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("kind", &self.kind)
            .field("train", &self.train.len())
            .field("val", &self.val.len())
            .field("classes", &self.class_names.len())
            .finish()
    }
}

impl Dataset {
    /// The split's source.
    pub fn split(&self, split: Split) -> &Arc<dyn Source> {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Channels as stored (1 or 3).
    pub fn source_channels(&self) -> usize {
        self.train.channels()
    }
}

/// Validates `config` and opens its train and val splits. File sources read (IDX, CIFAR) or
/// list (image-folder) everything here, so bad files fail now rather than mid-epoch.
pub fn open(config: &DataConfig) -> Result<Dataset, DataError> {
    config.validate()?;
    let path = config.resolved_path()?;
    let path = path.as_deref();
    let dataset = match (config.kind, path) {
        (DataKind::Synthetic, _) => synthetic::open(config)?,
        (DataKind::Idx, Some(p)) => idx::open(p, config)?,
        (DataKind::Cifar10, Some(p)) => cifar::open(p, false, config)?,
        (DataKind::Cifar100, Some(p)) => cifar::open(p, true, config)?,
        (DataKind::ImageFolder, Some(p)) => folder::open(p, config)?,
        (_, None) => return Err(DataError::config("path", "needs a folder")),
    };
    if dataset.train.is_empty() {
        return Err(DataError::config("train_size", "the train split is empty"));
    }
    Ok(dataset)
}

/// Images held in memory as fixed-size records (IDX, CIFAR): `count` records of `height *
/// width * channels` bytes, planar (CHW, CIFAR) or interleaved (HWC).
pub(crate) struct InMemory {
    pub pixels: Vec<u8>,
    pub labels: Vec<u16>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub planar: bool,
}

impl Source for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, index: usize) -> Result<usize, DataError> {
        self.labels
            .get(index)
            .map(|&l| l as usize)
            .ok_or(DataError::Index {
                index,
                len: self.labels.len(),
            })
    }

    fn get(&self, index: usize) -> Result<(Image, usize), DataError> {
        let label = self.label(index)?;
        let (h, w, c) = (self.height, self.width, self.channels);
        let n = h * w * c;
        let rec = &self.pixels[index * n..(index + 1) * n];
        let data = if self.planar && c > 1 {
            let plane = h * w;
            let mut out = vec![0u8; n];
            for (i, px) in out.chunks_exact_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = rec[ch * plane + i];
                }
            }
            out
        } else {
            rec.to_vec()
        };
        Ok((
            Image {
                width: w,
                height: h,
                channels: c,
                data,
            },
            label,
        ))
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn fixed_size(&self) -> Option<(usize, usize)> {
        Some((self.height, self.width))
    }
}

/// Keeps the first `limit` records.
pub(crate) fn truncate(mut m: InMemory, limit: Option<usize>) -> InMemory {
    if let Some(limit) = limit {
        if limit < m.labels.len() {
            m.labels.truncate(limit);
            m.pixels.truncate(limit * m.height * m.width * m.channels);
        }
    }
    m
}
