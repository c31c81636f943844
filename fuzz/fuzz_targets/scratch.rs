// Shared by the targets: the parsers under test read files, so each input is written to a
// scratch file first (one per process, reused across iterations).

use std::path::PathBuf;

/// `name` inside this process's scratch folder, holding `bytes`.
pub fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("linvit-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}
