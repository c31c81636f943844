//! CIFAR-10 and CIFAR-100 binary versions (Krizhevsky, 2009). CIFAR-10 records are
//! `<label><3072 pixels>`, CIFAR-100 records `<coarse><fine><3072 pixels>`; pixels are 32x32,
//! planar R then G then B planes, row-major.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{truncate, Dataset, InMemory};
use crate::{DataConfig, DataError, DataKind};

/// CIFAR-10 classes, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100 coarse (superclass) labels, in label order.
pub const CIFAR100_COARSE_CLASSES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// CIFAR-100 fine labels, in label order.
pub const CIFAR100_FINE_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

const PIXELS: usize = 32 * 32 * 3;

/// File names of each split.
pub fn file_names(cifar100: bool) -> (Vec<String>, Vec<String>) {
    if cifar100 {
        (vec!["train.bin".into()], vec!["test.bin".into()])
    } else {
        (
            (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            vec!["test_batch.bin".into()],
        )
    }
}

/// Reads CIFAR binary files into one in-memory split.
pub(crate) fn read_files(
    paths: &[PathBuf],
    cifar100: bool,
    coarse: bool,
) -> Result<InMemory, DataError> {
    let label_bytes = if cifar100 { 2 } else { 1 };
    let record = label_bytes + PIXELS;
    let num_classes = match (cifar100, coarse) {
        (false, _) => 10,
        (true, false) => 100,
        (true, true) => 20,
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::Missing {
                path: path.clone(),
                hint: format!(
                    " (a CIFAR-{} binary folder holds {}; get the \"binary version\" from \
                     https://www.cs.toronto.edu/~kriz/cifar.html and set data.path to the unpacked folder)",
                    if cifar100 { 100 } else { 10 },
                    {
                        let (t, v) = file_names(cifar100);
                        [t, v].concat().join(", ")
                    }
                ),
            },
            _ => DataError::io(path, e),
        })?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(DataError::corrupt(
                path,
                format!(
                    "truncated: {} bytes is not a whole number of {record}-byte CIFAR-{} records ({} whole, {} bytes left over)",
                    bytes.len(),
                    if cifar100 { 100 } else { 10 },
                    bytes.len() / record,
                    bytes.len() % record
                ),
            ));
        }
        pixels.reserve(bytes.len() / record * PIXELS);
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            let label = if cifar100 && !coarse { rec[1] } else { rec[0] } as usize;
            if label >= num_classes {
                return Err(DataError::LabelOutOfRange {
                    path: path.clone(),
                    index: i,
                    label,
                    num_classes,
                });
            }
            labels.push(label as u16);
            pixels.extend_from_slice(&rec[label_bytes..]);
        }
    }
    Ok(InMemory {
        pixels,
        labels,
        height: 32,
        width: 32,
        channels: 3,
        planar: true,
    })
}

/// The folder that holds the `.bin` files: `dir` itself or the tarball's top folder in it.
fn batches_dir(dir: &Path, cifar100: bool) -> PathBuf {
    let sub = dir.join(if cifar100 {
        "cifar-100-binary"
    } else {
        "cifar-10-batches-bin"
    });
    if sub.is_dir() {
        sub
    } else {
        dir.to_path_buf()
    }
}

pub(crate) fn open(dir: &Path, cifar100: bool, config: &DataConfig) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            hint: " (no such folder; set data.path to the unpacked CIFAR binary folder)".into(),
        });
    }
    let dir = batches_dir(dir, cifar100);
    let (train_names, val_names) = file_names(cifar100);
    let to_paths = |names: Vec<String>| names.iter().map(|n| dir.join(n)).collect::<Vec<_>>();
    let train = read_files(&to_paths(train_names), cifar100, config.coarse_labels)?;
    let val = read_files(&to_paths(val_names), cifar100, config.coarse_labels)?;
    let names: &[&str] = match (cifar100, config.coarse_labels) {
        (false, _) => &CIFAR10_CLASSES,
        (true, false) => &CIFAR100_FINE_CLASSES,
        (true, true) => &CIFAR100_COARSE_CLASSES,
    };
    if let Some(n) = config.num_classes {
        if n != names.len() {
            return Err(DataError::config(
                "num_classes",
                format!("this CIFAR variant has {} classes, not {n}", names.len()),
            ));
        }
    }
    Ok(Dataset {
        kind: if cifar100 {
            DataKind::Cifar100
        } else {
            DataKind::Cifar10
        },
        train: Arc::new(truncate(train, config.train_size)),
        val: Arc::new(truncate(val, config.val_size)),
        class_names: names.iter().map(|s| s.to_string()).collect(),
    })
}
