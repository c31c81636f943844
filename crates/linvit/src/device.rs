//! `--device` names to Burn devices: one binary, the backend chosen at run time.

use burn::tensor::Device;

/// The devices this build can run on, for help texts and errors.
pub const DEVICE_NAMES: &str = "flex, wgpu[:cpu|:N], vulkan[:N], cuda[:N]";

/// Parses `flex`, `wgpu`, `wgpu:cpu`, `wgpu:N` (N-th discrete GPU), `vulkan[:N]`, `cuda[:N]`.
pub fn parse_device(name: &str) -> Result<Device, String> {
    let (backend, index) = match name.split_once(':') {
        Some((b, i)) => (b, Some(i)),
        None => (name, None),
    };
    let number = |i: &str| {
        i.parse::<usize>()
            .map_err(|_| format!("device {name:?}: {i:?} is not a device index"))
    };
    match backend {
        "flex" | "cpu" if index.is_none() => Ok(Device::flex()),
        "wgpu" => Ok(Device::wgpu(wgpu_kind(index, &number)?)),
        "vulkan" => vulkan(wgpu_kind(index, &number)?, name),
        "cuda" => cuda(index.map(number).transpose()?.unwrap_or(0), name),
        _ => Err(format!(
            "unknown device {name:?}; expected one of {DEVICE_NAMES}"
        )),
    }
}

fn wgpu_kind(
    index: Option<&str>,
    number: &dyn Fn(&str) -> Result<usize, String>,
) -> Result<burn::tensor::DeviceKind, String> {
    use burn::tensor::DeviceKind;
    Ok(match index {
        None => DeviceKind::DefaultDevice,
        Some("cpu") => DeviceKind::Cpu,
        Some(i) => DeviceKind::DiscreteGpu(number(i)?),
    })
}

#[cfg(feature = "vulkan")]
fn vulkan(kind: burn::tensor::DeviceKind, _name: &str) -> Result<Device, String> {
    Ok(Device::vulkan(kind))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(_kind: burn::tensor::DeviceKind, name: &str) -> Result<Device, String> {
    Err(format!(
        "device {name:?}: this build has no pinned Vulkan backend; use `wgpu` (which picks Vulkan \
         when the machine has it) or rebuild with `cargo build --features vulkan`"
    ))
}

#[cfg(feature = "cuda")]
fn cuda(index: usize, _name: &str) -> Result<Device, String> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize, name: &str) -> Result<Device, String> {
    Err(format!(
        "device {name:?}: this build has no CUDA backend; rebuild with `cargo build --features cuda`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_devices_are_named_in_the_error() {
        let err = parse_device("tpu").unwrap_err();
        assert!(err.contains("\"tpu\"") && err.contains("flex"), "{err}");
        let err = parse_device("wgpu:x").unwrap_err();
        assert!(err.contains("\"x\" is not a device index"), "{err}");
    }

    #[test]
    fn flex_is_always_available() {
        assert_eq!(parse_device("flex").unwrap(), Device::flex());
    }
}
