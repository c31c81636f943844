//! `--device` names to Burn devices: one binary, the backend chosen at run time.

use crate::CliError;
use burn::tensor::Device;

/// The devices this build can run on, for help texts and errors.
pub const DEVICE_NAMES: &str = "flex, wgpu[:cpu|:N], vulkan[:N], cuda[:N], ws://HOST:PORT[/N]";

/// Parses `flex`, `wgpu`, `wgpu:cpu`, `wgpu:N` (N-th discrete GPU), `vulkan[:N]`, `cuda[:N]`,
/// and `ws://HOST:PORT[/N]`: device N (default 0) of a `linvit serve` server, connected here.
pub fn parse_device(name: &str) -> Result<Device, CliError> {
    if let Some(address) = name.strip_prefix(REMOTE_SCHEME) {
        return remote(address, name);
    }
    let (backend, index) = match name.split_once(':') {
        Some((b, i)) => (b, Some(i)),
        None => (name, None),
    };
    let number = |i: &str| device_index(name, i);
    match backend {
        "flex" | "cpu" if index.is_none() => Ok(Device::flex()),
        "wgpu" => Ok(Device::wgpu(wgpu_kind(index, &number)?)),
        "vulkan" => vulkan(wgpu_kind(index, &number)?, name),
        "cuda" => cuda(index.map(number).transpose()?.unwrap_or(0), name),
        _ => Err(cli_error!(
            "unknown device {name:?}; expected one of {DEVICE_NAMES}"
        )),
    }
}

fn wgpu_kind(
    index: Option<&str>,
    number: &dyn Fn(&str) -> Result<usize, CliError>,
) -> Result<burn::tensor::DeviceKind, CliError> {
    use burn::tensor::DeviceKind;
    Ok(match index {
        None => DeviceKind::DefaultDevice,
        Some("cpu") => DeviceKind::Cpu,
        Some(i) => DeviceKind::DiscreteGpu(number(i)?),
    })
}

#[cfg(feature = "vulkan")]
fn vulkan(kind: burn::tensor::DeviceKind, _name: &str) -> Result<Device, CliError> {
    Ok(Device::vulkan(kind))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(_kind: burn::tensor::DeviceKind, name: &str) -> Result<Device, CliError> {
    Err(cli_error!(
        "device {name:?}: this build has no pinned Vulkan backend; use `wgpu` (which picks Vulkan \
         when the machine has it) or rebuild with `cargo build --features vulkan`"
    ))
}

#[cfg(feature = "cuda")]
fn cuda(index: usize, _name: &str) -> Result<Device, CliError> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize, name: &str) -> Result<Device, CliError> {
    Err(cli_error!(
        "device {name:?}: this build has no CUDA backend; rebuild with `cargo build --features cuda`"
    ))
}

/// The `N` of a device name `backend:N` (or `ws://HOST:PORT/N`).
fn device_index(name: &str, i: &str) -> Result<usize, CliError> {
    i.parse()
        .map_err(|_| cli_error!("device {name:?}: {i:?} is not a device index"))
}

/// How a remote device's name starts.
const REMOTE_SCHEME: &str = "ws://";

/// Connects device `N` of the server at `HOST:PORT[/N]`; connecting fails here, not on first use.
#[cfg(feature = "remote")]
fn remote(address: &str, name: &str) -> Result<Device, CliError> {
    use burn::remote::RemoteHost;
    let (host, index) = match address.split_once('/') {
        Some((host, i)) => (host, device_index(name, i)?),
        None => (address, 0),
    };
    if host.is_empty() || !host.contains(':') {
        return Err(cli_error!("device {name:?}: expected ws://HOST:PORT[/N]"));
    }
    Device::remote_options(&RemoteHost::websocket(&format!("{REMOTE_SCHEME}{host}")))
        .device_index(index)
        .init()
        .map_err(|e| cli_error!("device {name:?}: {e}"))
}

#[cfg(not(feature = "remote"))]
fn remote(_address: &str, name: &str) -> Result<Device, CliError> {
    Err(cli_error!("device {name:?}: {}", crate::serve::NO_REMOTE))
}

/// Runs `command` on the devices named in `names`; where one of them is remote, a panic inside
/// it becomes the command's one-line error naming the devices.
///
/// Burn's remote client has no error path for a server that goes away mid-run (the tensor API's
/// sends and reads panic), and a lost connection is not a bug of ours to print a backtrace for.
/// Checkpoints are written atomically, so the newest complete one survives the stop.
pub fn remote_failure_as_error<T>(
    names: &str,
    command: impl FnOnce() -> Result<T, CliError>,
) -> Result<T, CliError> {
    if !names.contains(REMOTE_SCHEME) {
        return command();
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(command));
    std::panic::set_hook(hook);
    result.unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no reason given");
        // Burn's message ends with the root cause ("Failed to read tensor: RecvError").
        let cause = reason.lines().rev().map(str::trim).find(|l| !l.is_empty());
        Err(cli_error!(
            "lost the remote device {names:?}: {}; the checkpoints written before are intact",
            cause.unwrap_or("no reason given")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_devices_are_named_in_the_error() {
        let err = parse_device("tpu").unwrap_err().message;
        assert!(err.contains("\"tpu\"") && err.contains("flex"), "{err}");
        let err = parse_device("wgpu:x").unwrap_err().message;
        assert!(err.contains("\"x\" is not a device index"), "{err}");
    }

    #[test]
    fn flex_is_always_available() {
        assert_eq!(parse_device("flex").unwrap(), Device::flex());
    }
}
