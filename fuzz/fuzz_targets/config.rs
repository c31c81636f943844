//! The run config: a TOML file plus `--set key=value` overrides. Any text gives a config or a
//! one-line error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linvit_train::config::resolve;

mod scratch;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The file, then one override per line after the first NUL.
    let (file, sets) = text.split_once('\0').unwrap_or((text, ""));
    let sets: Vec<String> = sets.lines().map(str::to_string).collect();
    let path = scratch::write("config.toml", file.as_bytes());
    if let Ok(config) = resolve(Some(&path), &sets) {
        // A config that resolves must also give a model config or an error naming a key.
        let _ = config.model_config(10, 3);
        let _ = config.to_toml();
    }
    let _ = resolve(None, &sets);
});
