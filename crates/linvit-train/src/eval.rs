//! Evaluation (top-1, top-5, per-class accuracy, confusion matrix) and prediction (top-k
//! classes with probabilities) from a saved checkpoint, on any device.
//!
//! A checkpoint is a folder with `model.json` + `model.bpk`, `classes.json` and the run's
//! `config.toml` (its `[data]` section gives the preprocessing); a run directory stands for its
//! `best/` (or, before any validation, its newest checkpoint).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use linvit_data::source::folder::decode_file;
use linvit_data::{
    load_batch, DataConfig, DataError, Dataset, Image, Loader, LoaderOptions, Source, Split,
};
use linvit_models::checkpoint::load_model;
use linvit_models::Model;
use serde::Serialize;

use crate::workers::on_workers;
use crate::{RunConfig, TrainError};

/// Accuracy of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub images: u64,
    pub correct: u64,
    pub accuracy: f64,
}

/// Result of evaluating a model on a validation split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub images: usize,
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub class_names: Vec<String>,
}

impl Evaluation {
    /// Writes the confusion matrix as a PNG heat map.
    pub fn write_confusion_png(&self, path: &Path) -> Result<(), TrainError> {
        crate::plot::plot_confusion(&self.confusion, &self.class_names, path)
    }
}

/// The summary `linvit eval` prints: the totals, then each class's accuracy.
impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images: top-1 {:.2}%, top-5 {:.2}%, loss {:.4}",
            self.images,
            100.0 * self.top1,
            100.0 * self.top5,
            self.loss
        )?;
        for c in &self.per_class {
            write!(
                f,
                "\n  {:<16} {:>6.2}% of {}",
                c.class,
                100.0 * c.accuracy,
                c.images
            )?;
        }
        Ok(())
    }
}

/// One image's top-k classes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    /// `(class name, class index, probability)`, most probable first.
    pub top: Vec<(String, usize, f32)>,
}

/// A CSV field, quoted where it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Predictions as CSV: `image,class_1,prob_1,...,class_k,prob_k`, one row per image.
pub fn predictions_csv(predictions: &[Prediction]) -> String {
    let k = predictions.iter().map(|p| p.top.len()).max().unwrap_or(0);
    let mut out = String::from("image");
    for i in 1..=k {
        out.push_str(&format!(",class_{i},prob_{i}"));
    }
    out.push('\n');
    for p in predictions {
        out.push_str(&csv_field(&p.image.display().to_string()));
        for (name, _, prob) in &p.top {
            out.push_str(&format!(",{},{prob:.6}", csv_field(name)));
        }
        out.push('\n');
    }
    out
}

/// Evaluates `model` (inference device) on the val split of `dataset`.
pub(crate) fn evaluate_model(
    model: &Model,
    dataset: &Dataset,
    data: &DataConfig,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<Evaluation, TrainError> {
    let device = model_device(model);
    let k = dataset.num_classes();
    let mut opts = LoaderOptions::for_split(Split::Val, batch_size, 0);
    opts.limit = limit;
    let loader = Loader::new(dataset, data, Split::Val, &opts)?;
    let mut confusion = vec![vec![0u64; k]; k];
    let (mut n, mut top5, mut loss_sum) = (0usize, 0usize, 0.0f64);
    for batch in loader {
        let batch = batch?;
        if batch.is_empty() {
            continue;
        }
        let labels = batch.labels.clone();
        let tb = linvit_data::to_tensors(batch, &device);
        let logits = on_workers(|| model.forward(tb.images));
        let logp = burn::tensor::activation::log_softmax(logits, 1);
        let host: Vec<f32> = logp
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        for (row, &label) in host.chunks_exact(k).zip(&labels) {
            let label = label as usize;
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            confusion[label][order[0]] += 1;
            if order.iter().take(5).any(|&c| c == label) {
                top5 += 1;
            }
            loss_sum -= row[label] as f64;
            n += 1;
        }
    }
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let per_class = (0..k)
        .map(|i| {
            let images: u64 = confusion[i].iter().sum();
            ClassAccuracy {
                class: dataset.class_names[i].clone(),
                images,
                correct: confusion[i][i],
                accuracy: if images == 0 {
                    0.0
                } else {
                    confusion[i][i] as f64 / images as f64
                },
            }
        })
        .collect();
    let d = n.max(1) as f64;
    Ok(Evaluation {
        images: n,
        loss: loss_sum / d,
        top1: correct as f64 / d,
        top5: top5 as f64 / d,
        per_class,
        confusion,
        class_names: dataset.class_names.clone(),
    })
}

fn model_device(model: &Model) -> Device {
    use burn::module::Module;
    model
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(Device::flex)
}

/// The checkpoint folder `path` stands for: itself when it holds `model.json`, else a run
/// directory's `best/`, else its newest complete checkpoint.
pub fn checkpoint_dir(path: &Path) -> Result<PathBuf, TrainError> {
    if path.join("model.json").is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join("best").join("model.json").is_file() {
        return Ok(path.join("best"));
    }
    if let Some(dir) = crate::checkpoint::latest(path)? {
        return Ok(dir);
    }
    Err(TrainError::NoCheckpoint {
        path: path.to_path_buf(),
    })
}

pub(crate) struct Loaded {
    pub model: Model,
    pub config: RunConfig,
    pub classes: Vec<String>,
}

pub(crate) fn load(checkpoint: &Path, device: &Device) -> Result<Loaded, TrainError> {
    let dir = checkpoint_dir(checkpoint)?;
    let (_, model) =
        load_model(&dir, &device.clone().inner()).map_err(|e| TrainError::Checkpoint {
            path: e.path,
            reason: e.reason,
        })?;
    let cfg_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::Checkpoint {
        path: cfg_path.clone(),
        reason: e.to_string(),
    })?;
    let config = crate::config::from_toml(&text)?;
    let cls_path = dir.join("classes.json");
    let classes: Vec<String> = std::fs::read_to_string(&cls_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|reason| TrainError::Checkpoint {
            path: cls_path,
            reason,
        })?;
    Ok(Loaded {
        model,
        config,
        classes,
    })
}

/// Evaluates a checkpoint on the val split of `data` (default: the run's own `[data]`).
pub fn evaluate(
    checkpoint: &Path,
    data: Option<&DataConfig>,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let loaded = load(checkpoint, device)?;
    let mut data = data
        .cloned()
        .unwrap_or_else(|| loaded.config.effective_data());
    if data.channels.is_none() {
        data.channels = loaded.config.data.channels;
    }
    let dataset = linvit_data::open(&data)?;
    let expected = loaded.classes.len();
    if dataset.num_classes() != expected {
        return Err(TrainError::Config(crate::ConfigError::Invalid {
            key: "data".into(),
            message: format!(
                "the dataset has {} classes but the checkpoint's model has {expected}",
                dataset.num_classes()
            ),
        }));
    }
    evaluate_model(
        &loaded.model,
        &dataset,
        &data,
        loaded.config.train.batch_size,
        None,
    )
}

/// Image files handed to the data pipeline as a split.
struct Files {
    paths: Vec<PathBuf>,
    channels: usize,
}

impl Source for Files {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn label(&self, _index: usize) -> Result<usize, DataError> {
        Ok(0)
    }
    fn get(&self, index: usize) -> Result<(Image, usize), DataError> {
        let path = self.paths.get(index).ok_or(DataError::Index {
            index,
            len: self.paths.len(),
        })?;
        Ok((decode_file(path)?, 0))
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn fixed_size(&self) -> Option<(usize, usize)> {
        None
    }
    fn path_of(&self, index: usize) -> Option<PathBuf> {
        self.paths.get(index).cloned()
    }
}

/// Image files as a dataset whose validation split is preprocessed as the run's validation
/// images are (its `[data]`), with that `[data]`.
pub(crate) fn files_dataset(loaded: &Loaded, paths: &[PathBuf]) -> (Dataset, DataConfig) {
    let data = loaded.config.effective_data();
    let files: Arc<dyn Source> = Arc::new(Files {
        paths: paths.to_vec(),
        channels: data.channels.unwrap_or(3),
    });
    let dataset = Dataset {
        kind: data.kind,
        train: files.clone(),
        val: files,
        class_names: loaded.classes.clone(),
    };
    (dataset, data)
}

/// The `top_k` most probable classes of each image (PNG or JPEG), preprocessed as the run's
/// validation images.
pub fn predict(
    checkpoint: &Path,
    images: &[PathBuf],
    top_k: usize,
    device: &Device,
) -> Result<Vec<Prediction>, TrainError> {
    let images = linvit_data::source::folder::image_files(images)?;
    let loaded = load(checkpoint, device)?;
    let (dataset, data) = files_dataset(&loaded, &images);
    let k = loaded.classes.len();
    let top_k = top_k.clamp(1, k);
    let inner = device.clone().inner();
    let mut out = Vec::with_capacity(images.len());
    let chunk = loaded.config.train.batch_size.max(1);
    let indices: Vec<usize> = (0..images.len()).collect();
    for (b, idx) in indices.chunks(chunk).enumerate() {
        let batch = load_batch(&dataset, &data, Split::Val, 0, b, idx)?;
        let n = batch.len();
        let tb = linvit_data::to_tensors(batch, &inner);
        let probs: Tensor<2> = softmax(on_workers(|| loaded.model.forward(tb.images)), 1);
        let host: Vec<f32> = probs
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        for (row, &i) in host.chunks_exact(k).zip(idx).take(n) {
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            out.push(Prediction {
                image: images[i].clone(),
                top: order
                    .into_iter()
                    .take(top_k)
                    .map(|c| (loaded.classes[c].clone(), c, row[c]))
                    .collect(),
            });
        }
    }
    Ok(out)
}
