//! Batches: shapes, determinism across thread counts, soft targets, skipping corrupt files,
//! tensors, inspect and throughput.

mod common;

use common::*;
use linvit_data::{
    inspect, load_batch, open, throughput, to_tensors, write_sample_grid, AugmentConfig,
    DataConfig, DataError, DataKind, Loader, LoaderOptions, Split,
};

fn synthetic(workers: usize) -> DataConfig {
    DataConfig {
        train_size: Some(70),
        val_size: Some(9),
        image_size: 16,
        num_workers: Some(workers),
        seed: 5,
        ..DataConfig::default()
    }
}

fn epoch(cfg: &DataConfig, split: Split, epoch: u64, batch: usize) -> Vec<linvit_data::Batch> {
    let ds = open(cfg).unwrap();
    let opts = LoaderOptions::for_split(split, batch, epoch);
    Loader::new(&ds, cfg, split, &opts)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

#[test]
fn train_batches_have_nchw_images_and_soft_targets() {
    let cfg = synthetic(2);
    let batches = epoch(&cfg, Split::Train, 0, 16);
    // 70 images, drop_last: 4 full batches.
    assert_eq!(batches.len(), 4);
    for b in &batches {
        assert_eq!(b.shape, [16, 3, 16, 16]);
        assert_eq!(b.images.len(), 16 * 3 * 16 * 16);
        assert_eq!(b.labels.len(), 16);
        let t = b.targets.as_ref().unwrap();
        assert_eq!(t.len(), 16 * 10);
        for row in t.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            assert!(row.iter().all(|&v| v >= 0.01 - 1e-6));
        }
        assert!(b.images.iter().all(|v| v.is_finite()));
    }
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 64);
}

#[test]
fn val_batches_are_in_order_unmixed_and_keep_the_last_partial_batch() {
    let cfg = synthetic(2);
    let batches = epoch(&cfg, Split::Val, 0, 4);
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![4, 4, 1]
    );
    assert_eq!(batches[2].indices, vec![8]);
    assert!(batches
        .iter()
        .all(|b| b.targets.is_none() && b.mix.is_none()));
    assert_eq!(batches[0].labels, vec![0, 1, 2, 3]);
}

#[test]
fn batches_are_identical_for_any_thread_count_and_change_with_the_epoch() {
    let one = epoch(&synthetic(1), Split::Train, 3, 8);
    let two = epoch(&synthetic(2), Split::Train, 3, 8);
    let four = epoch(&synthetic(4), Split::Train, 3, 8);
    assert_eq!(one.len(), two.len());
    for ((a, b), c) in one.iter().zip(&two).zip(&four) {
        assert_eq!(a.indices, b.indices);
        assert_eq!(a.images, b.images);
        assert_eq!(a.targets, b.targets);
        assert_eq!(a.images, c.images);
    }
    let next = epoch(&synthetic(2), Split::Train, 4, 8);
    assert_ne!(one[0].indices, next[0].indices);
}

#[test]
fn eval_transform_is_the_same_every_epoch() {
    let a = epoch(&synthetic(2), Split::Val, 0, 9);
    let b = epoch(&synthetic(2), Split::Val, 7, 9);
    assert_eq!(a[0].images, b[0].images);
}

#[test]
fn no_augmentation_gives_normalised_centre_crops_and_hard_labels() {
    let dir = scratch("loader-idx");
    write_idx_dataset(&dir, true);
    let cfg = DataConfig {
        kind: DataKind::Idx,
        path: Some(dir),
        image_size: 5,
        eval_crop_pct: 1.0,
        channels: Some(3),
        mean: Some(vec![0.0]),
        std: Some(vec![1.0]),
        augment: AugmentConfig::none(),
        ..DataConfig::default()
    };
    let ds = open(&cfg).unwrap();
    let b = load_batch(&ds, &cfg, Split::Train, 0, 0, &[13]).unwrap();
    assert_eq!(b.shape, [1, 3, 5, 5]);
    assert!(b.targets.is_none());
    // 6x5 image, shorter side 5 = output: the centre 5x5 crop starts half a row down, so each
    // output pixel is the mean of two source rows; all three channels repeat the gray value.
    let img = idx_image(13, 6, 5);
    let expect = |y: usize, x: usize| {
        ((img[y * 5 + x] as f32 + img[(y + 1) * 5 + x] as f32) / 2.0).round() / 255.0
    };
    for c in 0..3 {
        for y in 0..5 {
            for x in 0..5 {
                let got = b.images[c * 25 + y * 5 + x];
                // Pixels wrap at 256 in the test image; skip the seam.
                if (img[y * 5 + x] as i32 - img[(y + 1) * 5 + x] as i32).abs() < 100 {
                    assert!((got - expect(y, x)).abs() < 1e-6, "c{c} y{y} x{x}: {got}");
                }
            }
        }
    }
}

#[test]
fn skip_corrupt_drops_counts_and_reports_bad_files() {
    let root = scratch("loader-skip");
    write_image_folder(&root);
    std::fs::write(root.join("train/dog/0.png"), b"garbage").unwrap();
    let mut cfg = DataConfig {
        kind: DataKind::ImageFolder,
        path: Some(root.clone()),
        image_size: 8,
        skip_corrupt: true,
        num_workers: Some(2),
        ..DataConfig::default()
    };
    let ds = open(&cfg).unwrap();
    let opts = LoaderOptions {
        shuffle: false,
        drop_last: false,
        ..LoaderOptions::for_split(Split::Train, 5, 0)
    };
    let mut loader = Loader::new(&ds, &cfg, Split::Train, &opts).unwrap();
    let batch = loader.next().unwrap().unwrap();
    assert!(loader.next().is_none());
    assert_eq!(batch.len(), 4);
    assert_eq!(batch.indices, vec![0, 1, 2, 4]);
    assert_eq!(batch.skipped.len(), 1);
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].path.as_ref().unwrap().ends_with("dog/0.png"));
    let summary = inspect(&cfg, None).unwrap();
    assert_eq!(summary.splits[0].skipped.len(), 1);
    assert_eq!(summary.splits[0].measured, 4);
    assert!(summary.to_string().contains("skipped 1 corrupt file(s)"));

    // Without skip_corrupt the same file stops the epoch with an error naming it.
    cfg.skip_corrupt = false;
    let results: Vec<_> = Loader::new(&ds, &cfg, Split::Train, &opts)
        .unwrap()
        .collect();
    assert_eq!(results.len(), 1);
    match &results[0] {
        Err(e @ DataError::Corrupt { .. }) => assert!(e.to_string().contains("dog/0.png")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dropped_loader_stops_its_worker() {
    let cfg = DataConfig {
        train_size: Some(10_000),
        ..synthetic(2)
    };
    let ds = open(&cfg).unwrap();
    let mut loader = Loader::new(
        &ds,
        &cfg,
        Split::Train,
        &LoaderOptions::for_split(Split::Train, 8, 0),
    )
    .unwrap();
    assert_eq!(loader.num_batches(), 1250);
    assert!(loader.next().unwrap().is_ok());
    drop(loader);
}

#[test]
fn batches_become_burn_tensors_of_the_same_shape_and_values() {
    let cfg = synthetic(2);
    let b = epoch(&cfg, Split::Train, 0, 8).remove(0);
    let device = burn::tensor::Device::flex();
    let (images, labels) = (b.images.clone(), b.labels.clone());
    let t = to_tensors(b, &device);
    assert_eq!(t.images.dims(), [8, 3, 16, 16]);
    assert_eq!(t.labels.dims(), [8]);
    assert_eq!(t.targets.as_ref().unwrap().dims(), [8, 10]);
    let back: Vec<f32> = t.images.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(back, images);
    let back: Vec<i64> = t
        .labels
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap();
    assert_eq!(back, labels);
}

#[test]
fn inspect_counts_classes_and_measures_pixels() {
    let dir = scratch("inspect-cifar");
    write_cifar10(&dir, 4);
    let cfg = DataConfig {
        kind: DataKind::Cifar10,
        path: Some(dir),
        ..DataConfig::default()
    };
    let s = inspect(&cfg, None).unwrap();
    assert_eq!(s.class_names.len(), 10);
    let train = &s.splits[0];
    assert_eq!(train.count, 20);
    assert_eq!(train.per_class.iter().sum::<usize>(), 20);
    assert_eq!(train.per_class[2], 2);
    assert_eq!((train.min_size, train.max_size), ([32, 32], [32, 32]));
    // Blue plane is 200 everywhere: mean 200/255, std 0.
    assert!((train.mean[2] - 200.0 / 255.0).abs() < 1e-9);
    assert!(train.std[2].abs() < 1e-6);
    let text = s.to_string();
    assert!(text.contains("train: 20 images"), "{text}");
    assert!(text.contains("airplane"));
}

#[test]
fn the_sample_grid_is_a_png_of_the_requested_layout() {
    let cfg = synthetic(2);
    let path = scratch("grid").join("grid.png");
    let labels = write_sample_grid(&cfg, Split::Train, 2, 3, &path).unwrap();
    assert_eq!(labels.len(), 6);
    let img = image::open(&path).unwrap();
    // 16px tiles zoomed 4x to 64, 2px gaps.
    assert_eq!((img.width(), img.height()), (3 * 66 + 2, 2 * 66 + 2));
}

#[test]
fn throughput_counts_every_image() {
    let cfg = synthetic(2);
    let t = throughput(&cfg, Split::Train, 50, 16).unwrap();
    assert_eq!((t.images, t.batches, t.skipped), (50, 4, 0));
    assert!(t.images_per_sec > 0.0);
    println!("{t}");
}

#[test]
fn the_synthetic_set_exports_as_an_image_folder_that_reads_back() {
    use linvit_data::source::synthetic::{export_image_folder, ExportFormat};
    let root = scratch("export");
    let n = export_image_folder(&root, 3, 4, 24, 12, 4, ExportFormat::Png).unwrap();
    assert_eq!(n, 16);
    let cfg = DataConfig {
        kind: DataKind::ImageFolder,
        path: Some(root.clone()),
        ..DataConfig::default()
    };
    let ds = open(&cfg).unwrap();
    assert_eq!((ds.train.len(), ds.val.len(), ds.num_classes()), (12, 4, 4));
    // PNG is lossless: the file equals the render; folder order is by class then name.
    let (img, label) = ds.train.get(0).unwrap();
    assert_eq!(label, 0);
    let direct = linvit_data::source::synthetic::render(3, Split::Train, 0, 24, 4);
    assert_eq!(img, direct);
    let root = scratch("export-jpeg");
    export_image_folder(&root, 3, 2, 40, 2, 2, ExportFormat::Jpeg).unwrap();
    assert!(root.join("train/solid-disk/000000.jpg").is_file());
}
