//! IDX files (MNIST / Fashion-MNIST), plain or gzip: any bytes give an array or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linvit_data::source::idx::read_idx;

mod scratch;

fuzz_target!(|data: &[u8]| {
    let path = scratch::write("input.idx", data);
    // Images are 3-D, labels 1-D; a header declaring either must never over-allocate or panic.
    for ndim in [1, 3] {
        if let Ok(array) = read_idx(&path, ndim) {
            assert_eq!(array.dims.len(), ndim);
            assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
        }
    }
});
