//! Text for the causal language model: a byte-level vocabulary (256 ids, so any file works
//! without a tokenizer to ship), an embedded procedural corpus so `linvit lm train` runs
//! anywhere, and seeded sampling of training windows.
//!
//! The procedural corpus is short stories from a small grammar: each story introduces a name,
//! a place and an object, then keeps referring back to them. A model that reads its context
//! predicts those repeats; one that does not cannot, so the loss shows whether the attention
//! carries information across tokens.

use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::rng::{below, purpose, stream};

/// Byte id 0 never occurs in UTF-8 text: it serves as the padding id.
pub const PAD: u32 = 0;
/// Size of the byte vocabulary.
pub const VOCAB: usize = 256;

/// Where the text comes from and how it is cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// A UTF-8 text file; none for the embedded procedural stories. Default: none.
    pub path: Option<PathBuf>,
    /// Bytes of procedural text to generate when there is no file. Default: 400000.
    pub procedural_bytes: usize,
    /// Tokens per training window. Default: 256.
    pub seq_len: usize,
    /// The last fraction of the text held out for validation. Default: 0.05.
    pub val_fraction: f64,
    /// Seed of the procedural text. Default: 0.
    pub seed: u64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            path: None,
            procedural_bytes: 400_000,
            seq_len: 256,
            val_fraction: 0.05,
            seed: 0,
        }
    }
}

/// Training and validation bytes.
#[derive(Clone, Debug)]
pub struct TextCorpus {
    pub train: Vec<u8>,
    pub val: Vec<u8>,
    /// Where it came from, for logs.
    pub source: String,
}

impl TextConfig {
    /// Checks the values before reading anything.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.seq_len == 0 {
            return Err(DataError::config("seq_len", "must be positive"));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(DataError::config(
                "val_fraction",
                format!("must be in (0, 1), got {}", self.val_fraction),
            ));
        }
        Ok(())
    }

    /// Reads (or generates) the text and splits it; errors name the file.
    pub fn load(&self) -> Result<TextCorpus, DataError> {
        self.validate()?;
        let (bytes, source) = match &self.path {
            Some(path) => (read_text(path)?, path.display().to_string()),
            None => (
                procedural_text(self.seed, self.procedural_bytes).into_bytes(),
                format!("procedural stories (seed {})", self.seed),
            ),
        };
        let val_len = ((bytes.len() as f64) * self.val_fraction).round() as usize;
        let train_len = bytes.len() - val_len;
        let need = self.seq_len + 1;
        if train_len < need || val_len < need {
            let what = self
                .path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "data.procedural_bytes".into());
            return Err(DataError::config(
                if self.path.is_some() {
                    "path"
                } else {
                    "procedural_bytes"
                },
                format!(
                    "{what}: {} bytes are too few for windows of {need} in both splits \
                     (validation gets {:.0}%)",
                    bytes.len(),
                    self.val_fraction * 100.0
                ),
            ));
        }
        let val = bytes[train_len..].to_vec();
        let mut train = bytes;
        train.truncate(train_len);
        Ok(TextCorpus { train, val, source })
    }
}

fn read_text(path: &Path) -> Result<Vec<u8>, DataError> {
    if !path.exists() {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            hint: String::new(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(DataError::corrupt(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        ));
    }
    if bytes.contains(&(PAD as u8)) {
        return Err(DataError::corrupt(
            path,
            "holds NUL bytes; byte 0 is the padding id",
        ));
    }
    Ok(bytes)
}

/// Token ids of a text (its bytes).
pub fn encode(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

/// Text of token ids; ids past 255 and invalid UTF-8 become U+FFFD.
pub fn decode(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids
        .iter()
        .map(|&i| u8::try_from(i).unwrap_or(0xFF))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `batch` windows of `len` tokens at seeded random offsets of `text` (step `step` of the run).
pub fn sample_windows(
    text: &[u8],
    len: usize,
    batch: usize,
    seed: u64,
    step: u64,
) -> Vec<Vec<u32>> {
    let mut rng = stream(seed, purpose::TEXT, step, 0);
    let starts = text.len() - len + 1;
    (0..batch)
        .map(|_| {
            let s = below(&mut rng, starts);
            text[s..s + len].iter().map(|&b| u32::from(b)).collect()
        })
        .collect()
}

/// Consecutive non-overlapping windows of `len` tokens from the start of `text`, at most `max`.
pub fn fixed_windows(text: &[u8], len: usize, max: usize) -> Vec<Vec<u32>> {
    text.chunks_exact(len)
        .take(max)
        .map(|w| w.iter().map(|&b| u32::from(b)).collect())
        .collect()
}

const NAMES: [&str; 12] = [
    "Mara", "Tobin", "Ilse", "Quentin", "Ada", "Rafe", "Noor", "Emil", "Juno", "Soren", "Lidia",
    "Oskar",
];
const PLACES: [&str; 10] = [
    "the harbour",
    "the mill",
    "the old library",
    "the orchard",
    "the glass house",
    "the market",
    "the lighthouse",
    "the quarry",
    "the station",
    "the north road",
];
const OBJECTS: [&str; 10] = [
    "a brass key",
    "a blue lantern",
    "a map of the coast",
    "a wooden flute",
    "a silver coin",
    "a torn letter",
    "a clock without hands",
    "a jar of honey",
    "a compass",
    "a red kite",
];
const VERBS: [&str; 8] = [
    "carried", "hid", "polished", "lost", "found", "studied", "mended", "traded",
];
const WEATHER: [&str; 6] = [
    "It rained all morning.",
    "The wind came from the sea.",
    "Snow fell without a sound.",
    "The sun was low and orange.",
    "Fog covered the roofs.",
    "The air smelled of salt.",
];

/// `bytes` bytes (rounded up to whole stories) of procedural stories from `seed`.
pub fn procedural_text(seed: u64, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 512);
    let mut story = 0u64;
    while out.len() < bytes {
        let mut rng = stream(seed, purpose::TEXT, u64::MAX, story);
        let pick =
            |rng: &mut crate::rng::DataRng, list: &[&'static str]| list[below(rng, list.len())];
        let name = pick(&mut rng, &NAMES);
        let place = pick(&mut rng, &PLACES);
        let object = pick(&mut rng, &OBJECTS);
        let bare = object.split_once(' ').map(|(_, o)| o).unwrap_or(object);
        out.push_str(&format!("{name} lived near {place} and owned {object}. "));
        for _ in 0..rng.random_range(2..6) {
            let sentence = match below(&mut rng, 5) {
                0 => format!("{name} {} the {bare}. ", pick(&mut rng, &VERBS)),
                1 => format!("{} ", pick(&mut rng, &WEATHER)),
                2 => format!("At {place}, {name} waited. "),
                3 => format!("Nobody else knew about the {bare}. "),
                _ => format!(
                    "{name} counted {} steps to {place}. ",
                    rng.random_range(2..40)
                ),
            };
            out.push_str(&sentence);
        }
        out.push_str(&format!(
            "In the end, {name} kept the {bare} at {place}.\n\n"
        ));
        story += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procedural_text_is_deterministic_and_refers_back() {
        let a = procedural_text(3, 5000);
        assert_eq!(a, procedural_text(3, 5000));
        assert_ne!(a, procedural_text(4, 5000));
        assert!(a.len() >= 5000);
        let first = a.split("\n\n").next().unwrap();
        let name = first.split(' ').next().unwrap();
        assert!(
            first.ends_with('.') && first.matches(name).count() >= 2,
            "{first}"
        );
    }

    #[test]
    fn bytes_round_trip_and_windows_stay_inside_the_text() {
        let text = "héllo wörld";
        assert_eq!(decode(&encode(text)), text);
        let corpus = procedural_text(0, 2000).into_bytes();
        let w = sample_windows(&corpus, 65, 4, 1, 7);
        assert_eq!(w.len(), 4);
        assert!(w.iter().all(|w| w.len() == 65));
        assert_eq!(w, sample_windows(&corpus, 65, 4, 1, 7));
        assert_ne!(w, sample_windows(&corpus, 65, 4, 1, 8));
    }

    #[test]
    fn a_text_too_short_for_its_windows_is_an_error_naming_the_key() {
        let config = TextConfig {
            procedural_bytes: 100,
            ..TextConfig::default()
        };
        let err = config.load().unwrap_err().to_string();
        assert!(err.contains("data.procedural_bytes"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_text_is_an_error_naming_it() {
        let path = std::env::temp_dir().join(format!("linvit-text-{}.bin", std::process::id()));
        std::fs::write(&path, [0xffu8, 0xfe, 0x00, 0x41]).unwrap();
        let config = TextConfig {
            path: Some(path.clone()),
            ..TextConfig::default()
        };
        let err = config.load().unwrap_err().to_string();
        std::fs::remove_file(&path).ok();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("UTF-8"),
            "{err}"
        );
    }
}
