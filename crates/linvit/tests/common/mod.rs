//! What the command-line tests share: running the binary and a scratch folder.

use std::path::PathBuf;
use std::process::Command;

/// Runs `linvit ARGS...`: exit code, stdout, stderr.
pub fn linvit(args: &[&str]) -> (i32, String, String) {
    linvit_env(args, &[])
}

/// [`linvit`] with environment variables set.
pub fn linvit_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_linvit"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh folder under the system temp dir, unique to this test process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("linvit-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
