//! The crate's one error type. Every variant that comes from a file names the file.

use std::path::PathBuf;

/// Errors from configs, files on disk and decoding.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A config value is invalid; `key` is the dotted key under `[data]`.
    #[error("data.{key}: {message}")]
    Config { key: String, message: String },
    /// A required file or folder does not exist.
    #[error("{path}: not found{hint}")]
    Missing { path: PathBuf, hint: String },
    /// A file exists but cannot be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file's contents are malformed: wrong magic, truncated, bad header, undecodable image.
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A label in a file is not below the number of classes.
    #[error("{path}: record {index} has label {label}, but there are only {num_classes} classes")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: usize,
        num_classes: usize,
    },
    /// A class folder of an image-folder dataset holds no image files.
    #[error("{path}: class folder holds no .jpg/.jpeg/.png files")]
    EmptyClass { path: PathBuf },
    /// An index past the end of a split.
    #[error("index {index} out of range for a split of {len} images")]
    Index { index: usize, len: usize },
    /// Writing an output file (a sample grid) failed.
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
}

impl DataError {
    pub(crate) fn config(key: &str, message: impl Into<String>) -> Self {
        DataError::Config {
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
