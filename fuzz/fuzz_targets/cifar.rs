//! CIFAR-10 / CIFAR-100 binary batches: any bytes in every batch file give a dataset or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linvit_data::source::cifar::file_names;
use linvit_data::{DataConfig, DataKind};

mod scratch;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the variant; the rest is the content of each batch file.
    let Some((&variant, body)) = data.split_first() else {
        return;
    };
    let cifar100 = variant & 1 == 1;
    let (train, test) = file_names(cifar100);
    let mut dir = None;
    for name in train.iter().chain(&test) {
        let path = scratch::write(name, body);
        dir = path.parent().map(|p| p.to_path_buf());
    }
    let config = DataConfig {
        kind: if cifar100 {
            DataKind::Cifar100
        } else {
            DataKind::Cifar10
        },
        path: dir,
        ..DataConfig::default()
    };
    let _ = linvit_data::open(&config);
});
