//! Every file source on small files written here, and every kind of bad input.

mod common;

use std::path::Path;

use common::*;
use linvit_data::{open, DataConfig, DataError, DataKind, Split};

fn config(kind: DataKind, path: &Path) -> DataConfig {
    DataConfig {
        kind,
        path: Some(path.to_path_buf()),
        ..DataConfig::default()
    }
}

fn expect_corrupt(result: Result<impl std::fmt::Debug, DataError>, file: &str, words: &str) {
    match result {
        Err(e @ DataError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(file), "{msg} should name {file}");
            assert!(msg.contains(words), "{msg} should say {words}");
        }
        other => panic!("expected a Corrupt error naming {file}, got {other:?}"),
    }
}

#[test]
fn idx_reads_plain_and_gzip_files_alike() {
    for gz in [false, true] {
        let dir = scratch(&format!("idx-{gz}"));
        write_idx_dataset(&dir, gz);
        let ds = open(&config(DataKind::Idx, &dir)).unwrap();
        assert_eq!(ds.train.len(), 50);
        assert_eq!(ds.val.len(), 20);
        assert_eq!(ds.num_classes(), 10);
        assert_eq!(ds.class_names[3], "3");
        assert_eq!(ds.train.fixed_size(), Some((6, 5)));
        let (img, label) = ds.train.get(13).unwrap();
        assert_eq!(label, 3);
        assert_eq!((img.height, img.width, img.channels), (6, 5, 1));
        assert_eq!(img.data, idx_image(13, 6, 5));
        let (img, label) = ds.val.get(19).unwrap();
        assert_eq!((label, img.data[0]), (9, 19 * 7));
    }
}

#[test]
fn idx_split_sizes_keep_the_first_images() {
    let dir = scratch("idx-sizes");
    write_idx_dataset(&dir, false);
    let cfg = DataConfig {
        train_size: Some(12),
        val_size: Some(5),
        ..config(DataKind::Idx, &dir)
    };
    let ds = open(&cfg).unwrap();
    assert_eq!((ds.train.len(), ds.val.len()), (12, 5));
    assert!(ds.train.get(12).is_err());
}

#[test]
fn idx_missing_files_say_how_to_install_fashion_mnist() {
    let dir = scratch("idx-missing");
    let err = open(&config(DataKind::Idx, &dir)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Missing { .. }));
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    assert!(
        msg.contains("apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
    let err = open(&config(DataKind::Idx, &dir.join("nope"))).unwrap_err();
    assert!(err
        .to_string()
        .contains("apt-get install dataset-fashion-mnist"));
}

#[test]
fn idx_truncated_files_are_named_errors() {
    for gz in [false, true] {
        let dir = scratch(&format!("idx-trunc-{gz}"));
        write_idx_dataset(&dir, false);
        let name = "train-images-idx3-ubyte";
        let full = std::fs::read(dir.join(name)).unwrap();
        let cut = &full[..full.len() - 7];
        if gz {
            std::fs::remove_file(dir.join(name)).unwrap();
            std::fs::write(dir.join(format!("{name}.gz")), gzip(cut)).unwrap();
        } else {
            std::fs::write(dir.join(name), cut).unwrap();
        }
        expect_corrupt(open(&config(DataKind::Idx, &dir)), name, "truncated");
        // A file cut inside its header.
        std::fs::write(dir.join(name), &full[..9]).unwrap();
        let _ = std::fs::remove_file(dir.join(format!("{name}.gz")));
        expect_corrupt(open(&config(DataKind::Idx, &dir)), name, "truncated");
    }
}

#[test]
fn idx_wrong_magic_is_a_named_error() {
    let dir = scratch("idx-magic");
    write_idx_dataset(&dir, false);
    let path = dir.join("t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] = 0x12;
    std::fs::write(&path, &bytes).unwrap();
    expect_corrupt(
        open(&config(DataKind::Idx, &dir)),
        "t10k-labels",
        "wrong magic",
    );
    // Right magic bytes but images where labels belong: wrong number of dimensions.
    let images = std::fs::read(dir.join("t10k-images-idx3-ubyte")).unwrap();
    std::fs::write(&path, images).unwrap();
    expect_corrupt(
        open(&config(DataKind::Idx, &dir)),
        "t10k-labels",
        "3 dimensions",
    );
}

#[test]
fn idx_huge_declared_dimensions_are_rejected_before_allocating() {
    for gz in [false, true] {
        let dir = scratch(&format!("idx-huge-{gz}"));
        write_idx_dataset(&dir, gz);
        // 4e9 images of 60000 x 60000: overflows any sane size.
        let bytes = idx_bytes(&[4_000_000_000, 60_000, 60_000], &[1, 2, 3]);
        let bytes = if gz { gzip(&bytes) } else { bytes };
        let ext = if gz { ".gz" } else { "" };
        std::fs::write(dir.join(format!("train-images-idx3-ubyte{ext}")), bytes).unwrap();
        expect_corrupt(
            open(&config(DataKind::Idx, &dir)),
            "train-images",
            "implausibly large",
        );
        // Large but representable: 1 GiB declared in a tiny file.
        let bytes = idx_bytes(&[1 << 14, 256, 256], &[0; 64]);
        let bytes = if gz { gzip(&bytes) } else { bytes };
        std::fs::write(dir.join(format!("train-images-idx3-ubyte{ext}")), bytes).unwrap();
        let words = if gz { "cannot fit" } else { "truncated" };
        expect_corrupt(open(&config(DataKind::Idx, &dir)), "train-images", words);
    }
}

#[test]
fn idx_label_out_of_range_names_file_and_record() {
    let dir = scratch("idx-label");
    write_idx_dataset(&dir, false);
    let labels: Vec<u8> = (0..50).map(|i| if i == 17 { 10 } else { 1 }).collect();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[50], &labels),
    )
    .unwrap();
    let err = open(&config(DataKind::Idx, &dir)).unwrap_err();
    match &err {
        DataError::LabelOutOfRange {
            path,
            index,
            label,
            num_classes,
        } => {
            assert!(path.ends_with("train-labels-idx1-ubyte"));
            assert_eq!((*index, *label, *num_classes), (17, 10, 10));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("record 17 has label 10"));
}

#[test]
fn idx_label_and_image_counts_must_agree() {
    let dir = scratch("idx-count");
    write_idx_dataset(&dir, false);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[3], &[0, 1, 2]),
    )
    .unwrap();
    expect_corrupt(
        open(&config(DataKind::Idx, &dir)),
        "train-labels",
        "holds 3 labels",
    );
}

#[test]
fn cifar10_reads_planar_records_as_hwc() {
    let dir = scratch("cifar10");
    write_cifar10(&dir, 4);
    let ds = open(&config(DataKind::Cifar10, &dir)).unwrap();
    assert_eq!((ds.train.len(), ds.val.len()), (20, 7));
    assert_eq!(ds.class_names[0], "airplane");
    assert_eq!(ds.class_names[9], "truck");
    // Train image 5 is record 1 of batch 2: R = 201, label (2 + 1) % 10.
    let (img, label) = ds.train.get(5).unwrap();
    assert_eq!(label, 3);
    assert_eq!((img.height, img.width, img.channels), (32, 32, 3));
    let p = 33 * 3;
    assert_eq!(&img.data[p..p + 3], &[201, 33, 200]);
}

#[test]
fn cifar10_accepts_the_tarball_folder_inside_path() {
    let root = scratch("cifar10-nested");
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    write_cifar10(&dir, 2);
    let ds = open(&config(DataKind::Cifar10, &root)).unwrap();
    assert_eq!(ds.train.len(), 10);
}

#[test]
fn cifar100_reads_fine_or_coarse_labels() {
    let dir = scratch("cifar100");
    write_cifar100(&dir);
    let ds = open(&config(DataKind::Cifar100, &dir)).unwrap();
    assert_eq!(
        (ds.train.len(), ds.val.len(), ds.num_classes()),
        (12, 5, 100)
    );
    assert_eq!(ds.train.label(11).unwrap(), 99);
    assert_eq!(ds.class_names[99], "worm");
    let (img, _) = ds.train.get(11).unwrap();
    assert_eq!(&img.data[..3], &[11, 0, 200]);
    let cfg = DataConfig {
        coarse_labels: true,
        ..config(DataKind::Cifar100, &dir)
    };
    let ds = open(&cfg).unwrap();
    assert_eq!(ds.num_classes(), 20);
    assert_eq!(ds.train.label(11).unwrap(), 11);
    assert_eq!(ds.class_names[19], "vehicles_2");
}

#[test]
fn cifar_truncated_or_missing_batches_are_named_errors() {
    let dir = scratch("cifar-trunc");
    write_cifar10(&dir, 3);
    let path = dir.join("data_batch_4.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    expect_corrupt(
        open(&config(DataKind::Cifar10, &dir)),
        "data_batch_4.bin",
        "truncated",
    );
    std::fs::write(&path, []).unwrap();
    expect_corrupt(
        open(&config(DataKind::Cifar10, &dir)),
        "data_batch_4.bin",
        "truncated",
    );
    std::fs::remove_file(&path).unwrap();
    let err = open(&config(DataKind::Cifar10, &dir)).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }));
    assert!(err.to_string().contains("data_batch_4.bin"));
}

#[test]
fn cifar_label_out_of_range_is_a_named_error() {
    let dir = scratch("cifar-label");
    write_cifar10(&dir, 3);
    let path = dir.join("test_batch.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * 3073] = 12;
    std::fs::write(&path, bytes).unwrap();
    let err = open(&config(DataKind::Cifar10, &dir)).unwrap_err();
    assert!(
        matches!(&err, DataError::LabelOutOfRange { index: 2, label: 12, num_classes: 10, path } if path.ends_with("test_batch.bin")),
        "{err:?}"
    );
}

#[test]
fn image_folder_reads_png_and_jpeg_with_sorted_classes() {
    let root = scratch("folder");
    write_image_folder(&root);
    let ds = open(&config(DataKind::ImageFolder, &root)).unwrap();
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    assert_eq!((ds.train.len(), ds.val.len()), (5, 2));
    let labels: Vec<usize> = (0..5).map(|i| ds.train.label(i).unwrap()).collect();
    assert_eq!(labels, vec![0, 0, 0, 1, 1]);
    // 0.png is lossless: exact pixels.
    let (png, _) = ds.train.get(0).unwrap();
    assert_eq!((png.width, png.height, png.channels), (40, 30, 3));
    let expected = picture(40, 30, 0);
    assert_eq!(png.data, expected.into_raw());
    // 1.jpg is lossy: close pixels.
    let (jpg, _) = ds.train.get(1).unwrap();
    assert_eq!((jpg.width, jpg.height), (48, 30));
    let expected = picture(48, 30, 0).into_raw();
    let err = jpg
        .data
        .iter()
        .zip(&expected)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / expected.len() as f64;
    assert!(err < 4.0, "mean JPEG error {err}");
    assert!(ds.train.path_of(1).unwrap().ends_with("cat/1.jpg"));
}

#[test]
fn image_folder_empty_class_is_a_named_error() {
    let root = scratch("folder-empty");
    write_image_folder(&root);
    std::fs::create_dir_all(root.join("train/emu")).unwrap();
    std::fs::write(root.join("train/emu/readme.txt"), "no images").unwrap();
    let err = open(&config(DataKind::ImageFolder, &root)).unwrap_err();
    assert!(matches!(&err, DataError::EmptyClass { path } if path.ends_with("train/emu")));
    assert!(err.to_string().contains("emu"));
}

#[test]
fn image_folder_val_class_unknown_to_train_is_a_named_error() {
    let root = scratch("folder-unknown");
    write_image_folder(&root);
    let dir = root.join("val/fox");
    std::fs::create_dir_all(&dir).unwrap();
    picture(8, 8, 0).save(dir.join("a.png")).unwrap();
    expect_corrupt(
        open(&config(DataKind::ImageFolder, &root)),
        "val/fox",
        "not one of the 2 classes",
    );
}

#[test]
fn image_folder_corrupt_jpeg_is_a_named_error_when_decoded() {
    let root = scratch("folder-corrupt");
    write_image_folder(&root);
    let path = root.join("train/dog/1.jpg");
    let bytes = std::fs::read(&path).unwrap();
    // Keep the JPEG header, cut the entropy-coded data short and garble it.
    let mut bad = bytes[..bytes.len() / 3].to_vec();
    bad.extend(std::iter::repeat_n(0xffu8, 10));
    std::fs::write(&path, bad).unwrap();
    std::fs::write(root.join("train/cat/2.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let ds = open(&config(DataKind::ImageFolder, &root)).unwrap();
    expect_corrupt(ds.train.get(4), "dog/1.jpg", "cannot decode");
    expect_corrupt(ds.train.get(2), "cat/2.png", "");
    assert!(ds.train.get(0).is_ok());
}

#[test]
fn image_folder_without_train_or_val_is_a_missing_error() {
    let root = scratch("folder-missing");
    let err = open(&config(DataKind::ImageFolder, &root)).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    write_image_folder(&root);
    std::fs::remove_dir_all(root.join("val")).unwrap();
    let err = open(&config(DataKind::ImageFolder, &root)).unwrap_err();
    assert!(err.to_string().contains("val"), "{err}");
}

#[test]
fn grayscale_sources_can_be_fed_as_rgb_and_back() {
    let dir = scratch("idx-rgb");
    write_idx_dataset(&dir, true);
    let ds = open(&config(DataKind::Idx, &dir)).unwrap();
    let (img, _) = ds.train.get(2).unwrap();
    let rgb = img.clone().with_channels(3);
    assert_eq!(rgb.data.len(), 3 * img.data.len());
    assert_eq!(&rgb.data[3..6], &[img.data[1]; 3]);
    assert_eq!(rgb.with_channels(1), img);
}

#[test]
fn split_helper_reads_the_named_split() {
    let dir = scratch("idx-split");
    write_idx_dataset(&dir, false);
    let ds = open(&config(DataKind::Idx, &dir)).unwrap();
    assert_eq!(ds.split(Split::Val).len(), 20);
    assert_eq!(ds.split(Split::Train).len(), 50);
}

#[test]
fn every_truncation_and_header_corruption_of_an_idx_file_is_an_error_not_a_panic() {
    use linvit_data::source::idx::read_idx;
    let dir = scratch("idx-fuzz");
    let good = idx_bytes(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let path = dir.join("x");
    for gz in [false, true] {
        for len in 0..good.len() {
            let bytes = if gz {
                gzip(&good[..len])
            } else {
                good[..len].to_vec()
            };
            std::fs::write(&path, bytes).unwrap();
            assert!(read_idx(&path, 3).is_err(), "length {len} gz {gz}");
        }
    }
    // Every value of every header byte: either the exact array back or an error.
    for pos in 0..16 {
        for v in 0..=255u8 {
            let mut bytes = good.clone();
            bytes[pos] = v;
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(a) = read_idx(&path, 3) {
                assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
                assert_eq!(a.data.len(), 60);
            }
        }
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(read_idx(&path, 3).unwrap().dims, vec![3, 4, 5]);
}

#[test]
fn every_truncation_of_a_cifar_batch_is_an_error_not_a_panic() {
    let dir = scratch("cifar-fuzz");
    write_cifar10(&dir, 1);
    let path = dir.join("data_batch_3.bin");
    let good = std::fs::read(&path).unwrap();
    for len in (0..good.len()).step_by(97) {
        std::fs::write(&path, &good[..len]).unwrap();
        expect_corrupt(
            open(&config(DataKind::Cifar10, &dir)),
            "data_batch_3.bin",
            "truncated",
        );
    }
}

#[test]
fn an_image_declaring_huge_dimensions_is_a_named_error_not_an_allocation() {
    let root = scratch("folder-bomb");
    write_image_folder(&root);
    // A valid PNG whose IHDR (with a fixed CRC) now claims 60000 x 60000 pixels.
    let mut png = Vec::new();
    picture(2, 2, 0)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // IHDR chunk: length at 8, type at 12, width at 16, height at 20, CRC at 29.
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    std::fs::write(root.join("train/cat/0.png"), png).unwrap();
    let ds = open(&config(DataKind::ImageFolder, &root)).unwrap();
    expect_corrupt(ds.train.get(0), "cat/0.png", "cannot decode image");
}
