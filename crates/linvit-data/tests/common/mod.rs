//! Small dataset files written by the tests themselves.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

/// A fresh, empty folder under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("linvit-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// IDX bytes: magic `00 00 08 ndim`, big-endian dims, data.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Image `i` of a tiny IDX set: every pixel `(i * 7 + p) % 256`; label `i % 10`.
pub fn idx_image(i: usize, h: usize, w: usize) -> Vec<u8> {
    (0..h * w).map(|p| ((i * 7 + p) % 256) as u8).collect()
}

/// Writes `{prefix}-images-idx3-ubyte` and labels for `n` images of `h x w`, gzipped or not.
pub fn write_idx_split(dir: &Path, prefix: &str, n: usize, h: usize, w: usize, gz: bool) {
    let pixels: Vec<u8> = (0..n).flat_map(|i| idx_image(i, h, w)).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images = idx_bytes(&[n as u32, h as u32, w as u32], &pixels);
    let labels = idx_bytes(&[n as u32], &labels);
    let ext = if gz { ".gz" } else { "" };
    let (images, labels) = if gz {
        (gzip(&images), gzip(&labels))
    } else {
        (images, labels)
    };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
}

pub fn write_idx_dataset(dir: &Path, gz: bool) {
    write_idx_split(dir, "train", 50, 6, 5, gz);
    write_idx_split(dir, "t10k", 20, 6, 5, gz);
}

/// One CIFAR record: labels then planes R, G, B where R = i, G = pixel index % 256, B = 200.
pub fn cifar_record(i: usize, labels: &[u8]) -> Vec<u8> {
    let mut rec = labels.to_vec();
    rec.extend(std::iter::repeat_n((i % 256) as u8, 1024));
    rec.extend((0..1024).map(|p| (p % 256) as u8));
    rec.extend(std::iter::repeat_n(200u8, 1024));
    rec
}

/// CIFAR-10 folder: 5 train batches of `per_batch` records and a test batch of 7.
pub fn write_cifar10(dir: &Path, per_batch: usize) {
    for b in 1..=5 {
        let bytes: Vec<u8> = (0..per_batch)
            .flat_map(|i| cifar_record(b * 100 + i, &[((b + i) % 10) as u8]))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    let bytes: Vec<u8> = (0..7)
        .flat_map(|i| cifar_record(i, &[(i % 10) as u8]))
        .collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}

/// CIFAR-100 folder: train of 12 records, test of 5; coarse = i % 20, fine = (i * 9) % 100.
pub fn write_cifar100(dir: &Path) {
    let rec = |i: usize| cifar_record(i, &[(i % 20) as u8, ((i * 9) % 100) as u8]);
    std::fs::write(
        dir.join("train.bin"),
        (0..12).flat_map(rec).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        dir.join("test.bin"),
        (0..5).flat_map(rec).collect::<Vec<_>>(),
    )
    .unwrap();
}

/// An RGB test picture with a colour gradient.
pub fn picture(w: u32, h: u32, tint: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, tint])
    })
}

/// `root/{train,val}/{cat,dog}/` with PNGs and JPEGs of assorted sizes: train 3 + 2, val 1 + 1.
pub fn write_image_folder(root: &Path) {
    for (split, per_class) in [("train", [3usize, 2]), ("val", [1, 1])] {
        for (c, class) in ["cat", "dog"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class[c] {
                let img = picture(40 + 8 * i as u32, 30 + 4 * c as u32, (c * 100) as u8);
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                img.save(dir.join(format!("{i}.{ext}"))).unwrap();
            }
            std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        }
    }
}
