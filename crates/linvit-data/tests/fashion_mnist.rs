//! Fashion-MNIST from the Debian package `dataset-fashion-mnist`, when it is installed.

use std::path::Path;

use linvit_data::{open, throughput, AugmentConfig, DataConfig, DataKind, Split, DEFAULT_IDX_PATH};

fn installed() -> bool {
    let ok = Path::new(DEFAULT_IDX_PATH)
        .join("train-images-idx3-ubyte.gz")
        .is_file();
    if !ok {
        println!(
            "SKIPPED: Fashion-MNIST not installed at {DEFAULT_IDX_PATH} (apt-get install dataset-fashion-mnist)"
        );
    }
    ok
}

#[test]
fn debian_fashion_mnist_has_60000_train_and_10000_test_images_in_10_classes() {
    if !installed() {
        return;
    }
    let cfg = DataConfig {
        kind: DataKind::Idx,
        ..DataConfig::default()
    };
    let ds = open(&cfg).unwrap();
    assert_eq!((ds.train.len(), ds.val.len()), (60_000, 10_000));
    assert_eq!(ds.num_classes(), 10);
    assert_eq!(ds.class_names[0], "T-shirt/top");
    assert_eq!(ds.class_names[9], "Ankle boot");
    assert_eq!(ds.train.fixed_size(), Some((28, 28)));
    assert_eq!(ds.train.channels(), 1);
    for (src, per_class) in [(&ds.train, 6000), (&ds.val, 1000)] {
        let mut counts = [0usize; 10];
        for i in 0..src.len() {
            counts[src.label(i).unwrap()] += 1;
        }
        assert_eq!(counts, [per_class; 10]);
    }
    // Upstream: the first training image is an ankle boot, the first test image too.
    assert_eq!(ds.train.label(0).unwrap(), 9);
    assert_eq!(ds.val.label(0).unwrap(), 9);
}

#[test]
fn debian_fashion_mnist_decodes_and_augments_fast_enough() {
    if !installed() {
        return;
    }
    let cfg = DataConfig {
        kind: DataKind::Idx,
        image_size: 28,
        channels: Some(3),
        augment: AugmentConfig {
            scale: [0.35, 1.0],
            ..AugmentConfig::default()
        },
        mean: Some(vec![0.2860]),
        std: Some(vec![0.3530]),
        ..DataConfig::default()
    };
    let t = throughput(&cfg, Split::Train, 4096, 128).unwrap();
    println!("{t}");
    assert_eq!(t.images, 4096);
    let t = throughput(&cfg, Split::Val, 4096, 128).unwrap();
    println!("{t}");
    assert_eq!(t.images, 4096);
}
