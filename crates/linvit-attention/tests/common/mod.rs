//! What the test files of this crate share. Each file uses some of it.
#![allow(dead_code)]

/// `len` values uniform in [-1, 1] from a 64-bit linear congruential generator seeded with
/// `seed`: the same inputs on every machine.
pub fn lcg(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Whether a Vulkan driver is installed (CI installs Mesa's lavapipe): the wgpu halves of the
/// tests run only then, and say SKIPPED otherwise.
pub fn vulkan_driver_present() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|dir| {
            std::fs::read_dir(dir)
                .map(|mut e| e.next().is_some())
                .unwrap_or(false)
        })
}
