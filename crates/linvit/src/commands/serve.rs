//! `linvit serve`.

use std::process::ExitCode;

use crate::device::DEVICE_NAMES;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: String,
    /// The devices to host, one backend (a comma list: clients pick one with ws://HOST:PORT/N).
    #[arg(long, visible_alias = "devices", default_value = "flex", help = format!("Backend: {DEVICE_NAMES}"))]
    device: String,
}

pub fn run(a: ServeArgs) -> ExitCode {
    super::with_devices(&a.device, |devices| {
        crate::serve::serve(&a.bind, devices.to_vec())
    })
}
