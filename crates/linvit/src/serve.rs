//! `linvit serve`: this machine's devices, hosted for training from another machine.
//!
//! Burn's remote server over its WebSocket transport: the client (`--device ws://HOST:PORT`)
//! keeps the model, the autodiff graph and the optimizer, and sends every tensor operation here.
//! WebSocket is unencrypted and unauthenticated, so it is for a trusted network; bind to
//! `127.0.0.1` and tunnel (e.g. `ssh -L`) otherwise.

use crate::CliError;
use burn::tensor::Device;

/// What a build without the `remote` feature says when asked for `serve` or a `ws://` device.
#[cfg_attr(feature = "remote", allow(dead_code))]
pub const NO_REMOTE: &str = "this build has no remote backend (the opt-in `remote` feature); \
     rebuild with `cargo install --path crates/linvit --features remote`";

/// Listens on `bind` (`HOST:PORT`; port 0 picks a free one) and serves `devices` until the process
/// is stopped. The line `serving N device(s) on ws://ADDRESS` is printed once the socket is bound,
/// so a script can wait for it and read the address.
#[cfg(feature = "remote")]
pub fn serve(bind: &str, devices: Vec<Device>) -> Result<String, CliError> {
    use burn::server::{RemoteServer, WebSocketTransport};
    use std::io::Write;

    let cannot = |e: std::io::Error| format!("cannot listen on {bind}: {e}");
    let listener = std::net::TcpListener::bind(bind).map_err(cannot)?;
    let address = listener.local_addr().map_err(cannot)?;
    println!("serving {} device(s) on ws://{address}", devices.len());
    std::io::stdout().flush()?;
    RemoteServer::new(devices)
        .serve(WebSocketTransport::from_listener(listener))
        .map_err(|e| cli_error!("server on {address}: {e}"))?;
    Ok(String::new())
}

#[cfg(not(feature = "remote"))]
pub fn serve(_bind: &str, _devices: Vec<Device>) -> Result<String, CliError> {
    Err(NO_REMOTE.into())
}
