//! ImageFolder (ImageNet layout): `train/<class>/*.{jpg,jpeg,png}` and `val/<class>/*`. Class
//! names are the sorted folder names under `train/`; files are decoded on demand with `image`.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Dataset, Image, Source};
use crate::{DataConfig, DataError, DataKind};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// One split of an image folder: the files and their labels, in sorted order.
pub struct ImageFolder {
    files: Vec<(PathBuf, usize)>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: dir.to_path_buf(),
            hint: " (an image folder needs train/<class>/ and val/<class>/ subfolders)".into(),
        },
        _ => DataError::io(dir, e),
    })?;
    let mut out = Vec::new();
    for entry in read {
        out.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// The images `paths` name, in order: a file as it is (any extension; decoding decides), a
/// folder as every `.jpg`/`.jpeg`/`.png` under it, recursively, sorted. A folder without one is
/// an error naming it.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let before = out.len();
        let mut stack = vec![path.clone()];
        while let Some(dir) = stack.pop() {
            let mut files = Vec::new();
            let mut dirs = Vec::new();
            for entry in sorted_entries(&dir)? {
                if entry.is_dir() {
                    dirs.push(entry);
                } else if is_image(&entry) {
                    files.push(entry);
                }
            }
            out.extend(files);
            // Depth first, in sorted order: reversed onto the stack.
            stack.extend(dirs.into_iter().rev());
        }
        if out.len() == before {
            return Err(DataError::corrupt(
                path,
                "no .jpg, .jpeg or .png file in this folder or below it",
            ));
        }
    }
    Ok(out)
}

/// Decodes one file to RGB.
pub fn decode_file(path: &Path) -> Result<Image, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.is_empty() {
        return Err(DataError::corrupt(path, "empty file"));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::corrupt(path, format!("cannot read: {e}")))?;
    let img = reader
        .decode()
        .map_err(|e| DataError::corrupt(path, format!("cannot decode image: {e}")))?;
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Image {
        width: w as usize,
        height: h as usize,
        channels: 3,
        data: rgb.into_raw(),
    })
}

impl ImageFolder {
    /// Lists `dir/<class>/*` for the given classes; a folder for an unknown class, or a class
    /// folder with no images, is an error.
    pub fn scan(dir: &Path, classes: &[String]) -> Result<Self, DataError> {
        let mut files = Vec::new();
        for entry in sorted_entries(dir)? {
            if !entry.is_dir() {
                continue;
            }
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let label = classes.iter().position(|c| *c == name).ok_or_else(|| {
                DataError::corrupt(
                    &entry,
                    format!(
                        "class folder \"{name}\" is not one of the {} classes under train/",
                        classes.len()
                    ),
                )
            })?;
            let before = files.len();
            for f in sorted_entries(&entry)? {
                if f.is_file() && is_image(&f) {
                    files.push((f, label));
                }
            }
            if files.len() == before {
                return Err(DataError::EmptyClass { path: entry });
            }
        }
        Ok(ImageFolder { files })
    }

    /// Class names: sorted sub-folder names of `train_dir`.
    pub fn classes(train_dir: &Path) -> Result<Vec<String>, DataError> {
        let classes: Vec<String> = sorted_entries(train_dir)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if classes.is_empty() {
            return Err(DataError::corrupt(train_dir, "holds no class folders"));
        }
        Ok(classes)
    }

    fn limit(mut self, n: Option<usize>) -> Self {
        if let Some(n) = n {
            // Keep every class represented: take an evenly strided subset, not the first n.
            if n < self.files.len() {
                let len = self.files.len();
                self.files = (0..n).map(|i| self.files[i * len / n].clone()).collect();
            }
        }
        self
    }
}

impl Source for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn label(&self, index: usize) -> Result<usize, DataError> {
        self.files.get(index).map(|f| f.1).ok_or(DataError::Index {
            index,
            len: self.files.len(),
        })
    }

    fn get(&self, index: usize) -> Result<(Image, usize), DataError> {
        let (path, label) = self.files.get(index).ok_or(DataError::Index {
            index,
            len: self.files.len(),
        })?;
        Ok((decode_file(path)?, *label))
    }

    fn channels(&self) -> usize {
        3
    }

    fn fixed_size(&self) -> Option<(usize, usize)> {
        None
    }

    fn path_of(&self, index: usize) -> Option<PathBuf> {
        self.files.get(index).map(|f| f.0.clone())
    }
}

pub(crate) fn open(root: &Path, config: &DataConfig) -> Result<Dataset, DataError> {
    let classes = ImageFolder::classes(&root.join("train"))?;
    if let Some(n) = config.num_classes {
        if n != classes.len() {
            return Err(DataError::config(
                "num_classes",
                format!(
                    "{} holds {} class folders, not {n}",
                    root.join("train").display(),
                    classes.len()
                ),
            ));
        }
    }
    let train = ImageFolder::scan(&root.join("train"), &classes)?.limit(config.train_size);
    let val = ImageFolder::scan(&root.join("val"), &classes)?.limit(config.val_size);
    Ok(Dataset {
        kind: DataKind::ImageFolder,
        train: Arc::new(train),
        val: Arc::new(val),
        class_names: classes,
    })
}
