//! What the test files of this crate share.

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
