//! The `linvit` program's library half: what the commands do, kept out of `main.rs` so the
//! tests run exactly the code the command line runs.

/// Why a command failed: one line for the user, naming the file, key or value at fault. Every
/// library error converts into it (`?`), with its own message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError { message }
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Converts the libraries' typed errors, keeping their messages.
macro_rules! from_error {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for CliError {
            fn from(e: $error) -> Self {
                e.to_string().into()
            }
        })*
    };
}
from_error!(
    linvit_models::ModelError,
    linvit_models::checkpoint::CheckpointError,
    linvit_attention::import::ImportError,
    linvit_data::DataError,
    linvit_train::TrainError,
    linvit_train::ConfigError,
    linvit_train::ablate::AblateError,
    std::io::Error,
    serde_json::Error,
    reference::CaseError,
);

/// `CliError` from `format!` arguments.
macro_rules! cli_error {
    ($($arg:tt)*) => {
        $crate::CliError::from(format!($($arg)*))
    };
}

pub mod ablate;
pub mod catalog;
pub mod commands;
pub mod device;
pub mod lm;
pub mod reference;
pub mod run;
pub mod serve;
pub mod verify;
pub mod verify_lm;
