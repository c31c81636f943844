//! The embedded procedural dataset: no files, deterministic from a seed, any size and class
//! count. A class is a (shape, texture) pair — e.g. "striped triangle" — drawn at a random
//! position, scale and rotation, in random colours over a random gradient with clutter and
//! noise. Colour, brightness and position carry no class information, so a linear probe on raw
//! pixels does poorly, while shape and texture are local patterns a small ViT picks up.
//!
//! Images are rendered on demand from `(seed, split, index)`; nothing is stored.

use std::sync::Arc;

use super::{Dataset, Image, Source, Split};
use crate::rng::{below, chance, normal, purpose, stream, uniform, DataRng};
use crate::{DataConfig, DataError, DataKind};

/// Shapes, in class order.
pub const SHAPES: [&str; 7] = [
    "disk", "square", "triangle", "cross", "ring", "ellipse", "crescent",
];
/// Textures, in class order.
pub const TEXTURES: [&str; 4] = ["solid", "striped", "checkered", "dotted"];
/// Most classes the generator can tell apart.
pub const MAX_CLASSES: usize = SHAPES.len() * TEXTURES.len();
/// Default number of classes.
pub const DEFAULT_CLASSES: usize = 10;
/// Default training images.
pub const DEFAULT_TRAIN_SIZE: usize = 20_000;
/// Default validation images.
pub const DEFAULT_VAL_SIZE: usize = 2_000;

/// How many textures `num_classes` classes use: as few as possible, so shapes vary first.
fn textures_used(num_classes: usize) -> usize {
    num_classes.div_ceil(SHAPES.len()).clamp(2, TEXTURES.len())
}

/// `(shape, texture)` of a class.
pub fn class_parts(class: usize, num_classes: usize) -> (usize, usize) {
    let t = textures_used(num_classes);
    (class / t, class % t)
}

/// Class names such as `striped-triangle`.
pub fn class_names(num_classes: usize) -> Vec<String> {
    (0..num_classes)
        .map(|c| {
            let (s, t) = class_parts(c, num_classes);
            format!("{}-{}", TEXTURES[t], SHAPES[s])
        })
        .collect()
}

/// One split of the procedural dataset.
#[derive(Clone, Debug)]
pub struct Synthetic {
    pub seed: u64,
    pub split: Split,
    pub len: usize,
    pub size: usize,
    pub num_classes: usize,
}

fn inside(shape: usize, u: f32, v: f32) -> bool {
    match shape {
        0 => u * u + v * v <= 1.0,
        1 => u.abs().max(v.abs()) <= 0.8,
        2 => v >= -0.5 && v <= 1.0 - 1.732_050_8 * u.abs(),
        3 => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
        4 => {
            let r2 = u * u + v * v;
            (0.3025..=1.0).contains(&r2)
        }
        5 => u * u + (v / 0.45) * (v / 0.45) <= 1.0,
        _ => u * u + v * v <= 1.0 && (u - 0.45) * (u - 0.45) + v * v >= 0.64,
    }
}

fn luminance(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn random_colour(rng: &mut DataRng) -> [f32; 3] {
    [
        uniform(rng, 0.0, 255.0),
        uniform(rng, 0.0, 255.0),
        uniform(rng, 0.0, 255.0),
    ]
}

/// A colour whose luminance differs from `other`'s by at least `gap`.
fn contrasting(rng: &mut DataRng, other: [f32; 3], gap: f32) -> [f32; 3] {
    let mut c = random_colour(rng);
    for _ in 0..8 {
        if (luminance(c) - luminance(other)).abs() >= gap {
            return c;
        }
        c = random_colour(rng);
    }
    let shift = if luminance(other) > 127.0 { -gap } else { gap };
    c.map(|v| (v * 0.3 + luminance(other) * 0.7 + shift).clamp(0.0, 255.0))
}

struct Texture {
    kind: usize,
    period: f32,
    cos: f32,
    sin: f32,
    second: [f32; 3],
}

impl Texture {
    /// Whether pixel `(x, y)` shows the second colour.
    fn second_at(&self, x: f32, y: f32) -> bool {
        let a = (x * self.cos + y * self.sin) / self.period;
        let b = (-x * self.sin + y * self.cos) / self.period;
        match self.kind {
            0 => false,
            1 => a.rem_euclid(1.0) < 0.5,
            2 => (a.floor() as i64 + b.floor() as i64).rem_euclid(2) == 0,
            _ => {
                let (fa, fb) = (a.rem_euclid(1.0) - 0.5, b.rem_euclid(1.0) - 0.5);
                fa * fa + fb * fb < 0.09
            }
        }
    }
}

/// Renders image `index` of a split; the label is `index % num_classes`.
pub fn render(seed: u64, split: Split, index: usize, size: usize, num_classes: usize) -> Image {
    let label = index % num_classes;
    let (shape, texture) = class_parts(label, num_classes);
    let mut rng = stream(seed, purpose::SYNTHETIC, split.id(), index as u64);
    let s = size as f32;
    let mut px = vec![[0f32; 3]; size * size];

    // Background: a linear gradient between two random colours.
    let (c0, c1) = (random_colour(&mut rng), random_colour(&mut rng));
    let ang = uniform(&mut rng, 0.0, std::f32::consts::TAU);
    let (gx, gy) = (ang.cos() / s, ang.sin() / s);
    for y in 0..size {
        for x in 0..size {
            let t = ((x as f32 - s / 2.0) * gx + (y as f32 - s / 2.0) * gy + 0.5).clamp(0.0, 1.0);
            px[y * size + x] = std::array::from_fn(|k| c0[k] + (c1[k] - c0[k]) * t);
        }
    }

    // Clutter behind the object: small blobs and thin lines in random colours.
    let clutter = 2 + below(&mut rng, 4);
    for _ in 0..clutter {
        draw_clutter(&mut rng, &mut px, size);
    }

    // The object.
    let r = uniform(&mut rng, 0.2, 0.36) * s;
    let cx = uniform(&mut rng, 0.25, 0.75) * s;
    let cy = uniform(&mut rng, 0.25, 0.75) * s;
    let rot = uniform(&mut rng, 0.0, std::f32::consts::TAU);
    let (rc, rs) = (rot.cos(), rot.sin());
    let bg_mid = px[(cy as usize).min(size - 1) * size + (cx as usize).min(size - 1)];
    let fg = contrasting(&mut rng, bg_mid, 60.0);
    let tex_ang = uniform(&mut rng, 0.0, std::f32::consts::TAU);
    let tex = Texture {
        kind: texture,
        period: (uniform(&mut rng, 0.4, 0.7) * r).max(3.0),
        cos: tex_ang.cos(),
        sin: tex_ang.sin(),
        second: contrasting(&mut rng, fg, 70.0),
    };
    let (x0, x1) = (
        (cx - r - 1.0).max(0.0) as usize,
        ((cx + r + 2.0) as usize).min(size),
    );
    let (y0, y1) = (
        (cy - r - 1.0).max(0.0) as usize,
        ((cy + r + 2.0) as usize).min(size),
    );
    const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
    for y in y0..y1 {
        for x in x0..x1 {
            let mut cover = 0u32;
            for (ox, oy) in SUB {
                let (dx, dy) = (x as f32 + ox - cx, y as f32 + oy - cy);
                let (u, v) = ((dx * rc + dy * rs) / r, (-dx * rs + dy * rc) / r);
                cover += inside(shape, u, v) as u32;
            }
            if cover == 0 {
                continue;
            }
            let colour = if tex.second_at(x as f32 + 0.5, y as f32 + 0.5) {
                tex.second
            } else {
                fg
            };
            let a = cover as f32 / 4.0;
            let p = &mut px[y * size + x];
            *p = std::array::from_fn(|k| p[k] * (1.0 - a) + colour[k] * a);
        }
    }

    // One occluding line in front, then sensor noise.
    if chance(&mut rng, 0.5) {
        draw_clutter(&mut rng, &mut px, size);
    }
    let sigma = uniform(&mut rng, 3.0, 18.0);
    let mut data = Vec::with_capacity(size * size * 3);
    for p in &px {
        for v in p {
            data.push((v + sigma * normal(&mut rng)).round().clamp(0.0, 255.0) as u8);
        }
    }
    Image {
        width: size,
        height: size,
        channels: 3,
        data,
    }
}

fn draw_clutter(rng: &mut DataRng, px: &mut [[f32; 3]], size: usize) {
    let s = size as f32;
    let colour = random_colour(rng);
    if chance(rng, 0.5) {
        let r = uniform(rng, 0.04, 0.12) * s;
        let (cx, cy) = (uniform(rng, 0.0, s), uniform(rng, 0.0, s));
        let (x0, x1) = (
            (cx - r).max(0.0) as usize,
            ((cx + r + 1.0) as usize).min(size),
        );
        let (y0, y1) = (
            (cy - r).max(0.0) as usize,
            ((cy + r + 1.0) as usize).min(size),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    px[y * size + x] = colour;
                }
            }
        }
    } else {
        let (ax, ay) = (uniform(rng, 0.0, s), uniform(rng, 0.0, s));
        let (bx, by) = (uniform(rng, 0.0, s), uniform(rng, 0.0, s));
        let half = uniform(rng, 0.4, 0.04 * s + 0.6);
        let (ex, ey) = (bx - ax, by - ay);
        let len2 = (ex * ex + ey * ey).max(1e-6);
        for y in 0..size {
            for x in 0..size {
                let (px_, py_) = (x as f32 + 0.5 - ax, y as f32 + 0.5 - ay);
                let t = ((px_ * ex + py_ * ey) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (px_ - t * ex, py_ - t * ey);
                if qx * qx + qy * qy <= half * half {
                    px[y * size + x] = colour;
                }
            }
        }
    }
}

impl Source for Synthetic {
    fn len(&self) -> usize {
        self.len
    }

    fn label(&self, index: usize) -> Result<usize, DataError> {
        if index >= self.len {
            return Err(DataError::Index {
                index,
                len: self.len,
            });
        }
        Ok(index % self.num_classes)
    }

    fn get(&self, index: usize) -> Result<(Image, usize), DataError> {
        let label = self.label(index)?;
        Ok((
            render(self.seed, self.split, index, self.size, self.num_classes),
            label,
        ))
    }

    fn channels(&self) -> usize {
        3
    }

    fn fixed_size(&self) -> Option<(usize, usize)> {
        Some((self.size, self.size))
    }
}

pub(crate) fn open(config: &DataConfig) -> Result<Dataset, DataError> {
    let num_classes = config.num_classes.unwrap_or(DEFAULT_CLASSES);
    let split = |split, len| {
        Arc::new(Synthetic {
            seed: config.seed,
            split,
            len,
            size: config.image_size,
            num_classes,
        })
    };
    Ok(Dataset {
        kind: DataKind::Synthetic,
        train: split(
            Split::Train,
            config.train_size.unwrap_or(DEFAULT_TRAIN_SIZE),
        ),
        val: split(Split::Val, config.val_size.unwrap_or(DEFAULT_VAL_SIZE)),
        class_names: class_names(num_classes),
    })
}

/// Image format for [`export_image_folder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Png,
    /// JPEG at quality 90.
    Jpeg,
}

/// Writes the procedural dataset as an ImageNet-layout folder (`root/{train,val}/<class>/N.ext`),
/// `train` and `val` images in all, at `size` pixels: a stand-in ImageFolder for tests and the
/// decode benchmark. Returns the number of files written.
pub fn export_image_folder(
    root: &std::path::Path,
    seed: u64,
    num_classes: usize,
    size: usize,
    train: usize,
    val: usize,
    format: ExportFormat,
) -> Result<usize, DataError> {
    use rayon::prelude::*;
    let names = class_names(num_classes);
    let ext = match format {
        ExportFormat::Png => "png",
        ExportFormat::Jpeg => "jpg",
    };
    let mut jobs = Vec::new();
    for (split, n) in [(Split::Train, train), (Split::Val, val)] {
        for name in &names {
            let dir = root.join(split.name()).join(name);
            std::fs::create_dir_all(&dir).map_err(|e| DataError::Write {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        }
        jobs.extend((0..n).map(|i| (split, i)));
    }
    jobs.par_iter().try_for_each(|&(split, i)| {
        let img = render(seed, split, i, size, num_classes);
        let path = root
            .join(split.name())
            .join(&names[i % num_classes])
            .join(format!("{i:06}.{ext}"));
        let write = |reason: String| DataError::Write {
            path: path.clone(),
            reason,
        };
        let rgb = image::RgbImage::from_raw(size as u32, size as u32, img.data)
            .ok_or_else(|| write("buffer size mismatch".into()))?;
        match format {
            ExportFormat::Png => rgb.save(&path).map_err(|e| write(e.to_string())),
            ExportFormat::Jpeg => {
                let file = std::fs::File::create(&path).map_err(|e| write(e.to_string()))?;
                let mut out = std::io::BufWriter::new(file);
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                    .encode_image(&rgb)
                    .map_err(|e| write(e.to_string()))
            }
        }
    })?;
    Ok(jobs.len())
}
