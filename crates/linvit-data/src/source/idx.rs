//! MNIST / Fashion-MNIST IDX files (LeCun's format: big-endian header, `0x00 0x00 type ndim`,
//! one u32 per dimension, then the data), gzip or plain, told apart by the gzip magic bytes.
//! Headers are untrusted: the declared size is checked against the file size before any
//! allocation.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::GzDecoder;

use super::{truncate, Dataset, InMemory};
use crate::{DataConfig, DataError, DataKind};

/// Fashion-MNIST's classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Deflate cannot expand data by more than about 1032:1; a larger declared size is a lie.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// No IDX file we read holds more than this (MNIST's train images are 47 MB).
const MAX_IDX_BYTES: u64 = 4 << 30;

const INSTALL_HINT: &str = "; for Fashion-MNIST run `sudo apt-get install dataset-fashion-mnist` \
     (files land in /usr/share/datasets/fashion-mnist), or set data.path to a folder holding \
     MNIST-style IDX files";

/// An IDX array of unsigned bytes.
#[derive(Debug)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn is_gzip(path: &Path) -> Result<bool, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
    Ok(got == 2 && magic == [0x1f, 0x8b])
}

fn read_exact_or(
    r: &mut dyn Read,
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<(), DataError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            DataError::corrupt(path, format!("truncated: file ends inside the {what}"))
        }
        _ => DataError::corrupt(path, format!("cannot read the {what}: {e}")),
    })
}

/// Reads an IDX file of unsigned bytes with `expected_ndim` dimensions.
pub fn read_idx(path: &Path, expected_ndim: usize) -> Result<IdxArray, DataError> {
    let file_len = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    let gz = is_gzip(path)?;
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut magic = [0u8; 4];
    read_exact_or(&mut reader, &mut magic, path, "4-byte magic number")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::corrupt(
            path,
            format!(
                "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file (expected 0000 08 0{expected_ndim})",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != 0x08 {
        return Err(DataError::corrupt(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported (only 0x08, unsigned byte)",
                magic[2]
            ),
        ));
    }
    let ndim = magic[3] as usize;
    if ndim != expected_ndim {
        return Err(DataError::corrupt(
            path,
            format!("IDX file has {ndim} dimensions, expected {expected_ndim}"),
        ));
    }
    let mut header = vec![0u8; 4 * ndim];
    read_exact_or(&mut reader, &mut header, path, "dimension header")?;
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let declared = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            DataError::corrupt(
                path,
                format!("declared dimensions {dims:?} are implausibly large"),
            )
        })?;
    let header_len = 4 + 4 * ndim as u64;
    if !gz && declared != file_len - header_len {
        let reason = if declared > file_len - header_len {
            format!(
                "truncated: dimensions {dims:?} declare {declared} bytes of data but the file holds {}",
                file_len - header_len
            )
        } else {
            format!(
                "dimensions {dims:?} declare {declared} bytes of data but the file holds {} (trailing bytes)",
                file_len - header_len
            )
        };
        return Err(DataError::corrupt(path, reason));
    }
    if gz && declared > file_len.saturating_mul(MAX_DEFLATE_RATIO) {
        return Err(DataError::corrupt(
            path,
            format!(
                "declared dimensions {dims:?} ({declared} bytes) cannot fit in a {file_len}-byte gzip file"
            ),
        ));
    }
    // The size is now bounded by the file; still grow the buffer as data arrives.
    let mut data = Vec::new();
    reader
        .take(declared + 1)
        .read_to_end(&mut data)
        .map_err(|e| DataError::corrupt(path, format!("cannot decompress: {e}")))?;
    if (data.len() as u64) < declared {
        return Err(DataError::corrupt(
            path,
            format!(
                "truncated: dimensions {dims:?} declare {declared} bytes of data but only {} follow",
                data.len()
            ),
        ));
    }
    if data.len() as u64 > declared {
        return Err(DataError::corrupt(
            path,
            format!("dimensions {dims:?} declare {declared} bytes of data but more follow"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Finds `<prefix>-<what>` with `-` or `.` before `idxN-ubyte`, optionally gzipped.
fn find_file(dir: &Path, prefix: &str, what: &str, ndim: usize) -> Result<PathBuf, DataError> {
    let names = [
        format!("{prefix}-{what}-idx{ndim}-ubyte"),
        format!("{prefix}-{what}.idx{ndim}-ubyte"),
    ];
    for name in &names {
        for ext in ["", ".gz"] {
            let p = dir.join(format!("{name}{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let hint = format!(" (looked for {}[.gz]{INSTALL_HINT})", names[0]);
    Err(DataError::Missing {
        path: dir.join(&names[0]),
        hint,
    })
}

/// Reads one split: images `[n, h, w]` and labels `[n]`, labels checked against `num_classes`.
pub(crate) fn read_split(
    dir: &Path,
    prefix: &str,
    num_classes: usize,
) -> Result<(InMemory, PathBuf), DataError> {
    let images_path = find_file(dir, prefix, "images", 3)?;
    let labels_path = find_file(dir, prefix, "labels", 1)?;
    let images = read_idx(&images_path, 3)?;
    let labels = read_idx(&labels_path, 1)?;
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::corrupt(
            &labels_path,
            format!(
                "holds {} labels but {} holds {} images",
                labels.dims[0],
                images_path.display(),
                images.dims[0]
            ),
        ));
    }
    if images.dims[1] == 0 || images.dims[2] == 0 {
        return Err(DataError::corrupt(
            &images_path,
            format!("images of size {}x{}", images.dims[1], images.dims[2]),
        ));
    }
    if let Some((index, &label)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels_path,
            index,
            label: label as usize,
            num_classes,
        });
    }
    Ok((
        InMemory {
            height: images.dims[1],
            width: images.dims[2],
            channels: 1,
            planar: false,
            pixels: images.data,
            labels: labels.data.into_iter().map(u16::from).collect(),
        },
        images_path,
    ))
}

pub(crate) fn open(dir: &Path, config: &DataConfig) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            hint: format!(" (no such folder{INSTALL_HINT})"),
        });
    }
    let num_classes = config.num_classes.unwrap_or(10);
    let (train, train_path) = read_split(dir, "train", num_classes)?;
    let (val, val_path) = read_split(dir, "t10k", num_classes)?;
    if (train.height, train.width) != (val.height, val.width) {
        return Err(DataError::corrupt(
            val_path,
            format!(
                "images are {}x{} but {} holds {}x{}",
                val.height,
                val.width,
                train_path.display(),
                train.height,
                train.width
            ),
        ));
    }
    let fashion = dir.to_string_lossy().to_lowercase().contains("fashion");
    let class_names = (0..num_classes)
        .map(|i| match (fashion, FASHION_MNIST_CLASSES.get(i)) {
            (true, Some(name)) => name.to_string(),
            _ => i.to_string(),
        })
        .collect();
    Ok(Dataset {
        kind: DataKind::Idx,
        train: Arc::new(truncate(train, config.train_size)),
        val: Arc::new(truncate(val, config.val_size)),
        class_names,
    })
}
