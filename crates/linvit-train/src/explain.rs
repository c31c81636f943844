//! What a trained model's attention does on given images (`linvit explain`): for every
//! attention call of a forward pass, the numerical rank and the mean row entropy of each head's
//! attention matrix, and the row of a chosen query token laid out on the key grid.
//!
//! The matrices are the ones each family implies ([`linvit_attention::explain`]): softmax's
//! scores, the linear forms' `phi(q) phi(k)^T / normaliser`, agent attention's product of its
//! query-to-agent and agent-to-key maps. Windowed calls (Swin, CSwin stripes) are measured per
//! window and averaged over the image's windows; their query row is placed back on the stage's
//! grid (zero outside the query's window).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use linvit_attention::explain::{record, Record};
use linvit_data::{load_batch, Split};
use serde::Serialize;

use crate::eval::{files_dataset, load};
use crate::TrainError;

/// The rank is computed on at most this many rows (evenly spaced queries) of a matrix; a
/// 3136-token stage would otherwise take a 3136 x 3136 SVD per head.
pub const RANK_ROWS: usize = 256;

/// One head of one attention call, on one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadStats {
    /// The attention call, counted in forward order from 0.
    pub layer: usize,
    pub kind: String,
    /// The stage's token grid (queries).
    pub grid: [usize; 2],
    /// Whether the call ran on windows (the numbers are means over the image's windows).
    pub windowed: bool,
    pub head: usize,
    /// The matrix's rows and columns (per window), and how many rows the rank used.
    pub rows: usize,
    pub cols: usize,
    pub rank_rows: usize,
    /// Singular values above `max(rows, cols) * f32::EPSILON * largest` (NumPy's
    /// `matrix_rank` rule), averaged over windows.
    pub rank: f64,
    /// Mean over rows of `-sum p log p` (nats), each row scaled to sum 1; `None` for norm
    /// attention, whose rows are not distributions.
    pub entropy: Option<f64>,
    /// `ln(cols)`: the entropy of a uniform row.
    pub max_entropy: f64,
}

/// A query token's row of one call's matrix, on a grid of keys.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryMap {
    pub layer: usize,
    pub kind: String,
    /// `attention` (query to keys; agent attention's through its agents), or for agent
    /// attention `agent_to_key`: the keys that the agent the query weighs most gathers from.
    pub name: &'static str,
    pub grid: [usize; 2],
    /// Row-major on `grid`, mean over heads.
    pub values: Vec<f32>,
    /// The query token on the stage grid, `(row, col)`, and that grid.
    pub query: (usize, usize),
    pub query_grid: [usize; 2],
}

/// One image through one model.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub image: PathBuf,
    /// The input as the model saw it (after the run's validation preprocessing), `[C, H, W]`
    /// values, normalised.
    pub input: (Vec<f32>, [usize; 3]),
    pub heads: Vec<HeadStats>,
    pub maps: Vec<QueryMap>,
}

/// Explains `images` (files, or folders of them) under `checkpoint`; `query` is the query
/// token's position as fractions of the image's height and width (`[0.5, 0.5]`: the centre).
pub fn explain(
    checkpoint: &Path,
    images: &[PathBuf],
    query: [f64; 2],
    device: &Device,
) -> Result<Vec<Explanation>, TrainError> {
    let images = linvit_data::source::folder::image_files(images)?;
    let loaded = load(checkpoint, device)?;
    let (dataset, data) = files_dataset(&loaded, &images);
    let inner = device.clone().inner();
    let mut out = Vec::new();
    for (i, path) in images.iter().enumerate() {
        let batch = load_batch(&dataset, &data, Split::Val, 0, i, &[i])?;
        let input = linvit_data::to_tensors(batch, &inner).images;
        let dims = input.dims();
        let pixels = host(input.clone().reshape([dims[1] * dims[2] * dims[3]]));
        let (_, calls) = record(|| loaded.model.forward(input));
        let mut heads = Vec::new();
        let mut maps = Vec::new();
        for (layer, call) in calls.iter().enumerate() {
            heads.extend(head_stats(layer, call));
            maps.extend(query_maps(layer, call, query));
        }
        out.push(Explanation {
            image: path.clone(),
            input: (pixels, [dims[1], dims[2], dims[3]]),
            heads,
            maps,
        });
    }
    Ok(out)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor")
}

/// The stage grid of a call: the windows' grid, else its own.
fn stage_grid(call: &Record) -> [usize; 2] {
    call.windows
        .map(|w| w.grid)
        .unwrap_or_else(|| call.layout.hw())
}

/// Rank and entropy of each head of `call` (one image: batch 1, or its windows).
fn head_stats(layer: usize, call: &Record) -> Vec<HeadStats> {
    let attention = call.attention().clone();
    let [batch, heads, rows, cols] = attention.dims();
    let values = host(attention);
    let used: Vec<usize> = if rows > RANK_ROWS {
        (0..RANK_ROWS).map(|i| i * rows / RANK_ROWS).collect()
    } else {
        (0..rows).collect()
    };
    (0..heads)
        .map(|h| {
            let (mut rank, mut entropy) = (0.0, 0.0);
            for b in 0..batch {
                let start = (b * heads + h) * rows * cols;
                let matrix = &values[start..start + rows * cols];
                rank += numerical_rank(matrix, cols, &used) as f64;
                entropy += mean_row_entropy(matrix, cols);
            }
            HeadStats {
                layer,
                kind: call.kind.to_string(),
                grid: stage_grid(call),
                windowed: call.windows.is_some(),
                head: h,
                rows,
                cols,
                rank_rows: used.len(),
                rank: rank / batch as f64,
                entropy: call.normalised.then_some(entropy / batch as f64),
                max_entropy: (cols as f64).ln(),
            }
        })
        .collect()
}

/// NumPy's `matrix_rank` of the rows `used` of a row-major matrix with `cols` columns.
fn numerical_rank(matrix: &[f32], cols: usize, used: &[usize]) -> usize {
    let picked: Vec<f32> = used
        .iter()
        .flat_map(|&r| matrix[r * cols..(r + 1) * cols].iter().copied())
        .collect();
    let device = Device::flex();
    let a = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(picked, [used.len(), cols]),
        &device,
    );
    let (_, s, _) = burn::linalg::svd::<2, 1>(a, 100);
    let s = host(s);
    let largest = s.iter().fold(0.0f32, |m, v| m.max(*v));
    let tolerance = largest * used.len().max(cols) as f32 * f32::EPSILON;
    s.iter().filter(|v| **v > tolerance).count()
}

/// Mean over rows of the entropy of each row scaled to sum 1 (rows summing to 0 are skipped).
fn mean_row_entropy(matrix: &[f32], cols: usize) -> f64 {
    let (mut total, mut n) = (0.0, 0usize);
    for row in matrix.chunks(cols) {
        let sum: f64 = row.iter().map(|v| v.max(0.0) as f64).sum();
        if sum <= 0.0 {
            continue;
        }
        total -= row
            .iter()
            .map(|v| v.max(0.0) as f64 / sum)
            .filter(|p| *p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f64>();
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        total / n as f64
    }
}

/// The query token's rows of `call`'s maps, laid out on their key grids.
fn query_maps(layer: usize, call: &Record, query: [f64; 2]) -> Vec<QueryMap> {
    let grid = stage_grid(call);
    let at = |f: f64, n: usize| ((f * n as f64) as usize).min(n - 1);
    let (row, col) = (at(query[0], grid[0]), at(query[1], grid[1]));
    let prefix = call.layout.prefix;
    // The batch entry and the row of the query.
    let (entry, q) = match call.windows {
        Some(w) => w.locate(row, col),
        None => (0, prefix + row * grid[1] + col),
    };
    let mean_row = |map: &Tensor<4>, r: usize| -> Vec<f32> {
        let [_, heads, _, cols] = map.dims();
        let picked = map
            .clone()
            .narrow(0, entry, 1)
            .narrow(2, r, 1)
            .reshape([heads, cols])
            .mean_dim(0)
            .reshape([cols]);
        host(picked)
    };
    // Keys on the grid: the last key_grid cells of a row (prefix keys dropped); windowed rows
    // placed back on the stage grid.
    let on_grid = |keys: Vec<f32>| -> ([usize; 2], Vec<f32>) {
        match call.windows {
            Some(w) => {
                let mut full = vec![0.0; w.grid[0] * w.grid[1]];
                for (j, v) in keys.iter().enumerate() {
                    let (r, c) = w.position(entry, j);
                    full[r * w.grid[1] + c] = *v;
                }
                (w.grid, full)
            }
            None => {
                let n = call.key_grid[0] * call.key_grid[1];
                (call.key_grid, keys[keys.len() - n..].to_vec())
            }
        }
    };
    let mut out = Vec::new();
    let (key_grid, values) = on_grid(mean_row(call.attention(), q));
    out.push(QueryMap {
        layer,
        kind: call.kind.to_string(),
        name: "attention",
        grid: key_grid,
        values,
        query: (row, col),
        query_grid: grid,
    });
    let find = |name: &str| call.maps.iter().find(|(n, _)| *n == name).map(|(_, m)| m);
    if let (Some(to_agent), Some(agent_to_key)) = (find("query_to_agent"), find("agent_to_key")) {
        let weights = mean_row(to_agent, q);
        let top = (0..weights.len())
            .max_by(|&a, &b| weights[a].total_cmp(&weights[b]))
            .unwrap_or(0);
        let (key_grid, values) = on_grid(mean_row(agent_to_key, top));
        out.push(QueryMap {
            layer,
            kind: call.kind.to_string(),
            name: "agent_to_key",
            grid: key_grid,
            values,
            query: (row, col),
            query_grid: grid,
        });
    }
    out
}

/// `map` over `image` (the model's input, `[C, H, W]`, normalised values) as an RGB PNG of
/// `side` pixels: the image in grey, the map in red-to-yellow on top (its maximum opaque), the
/// query token's cell outlined in cyan.
pub fn write_overlay(
    path: &Path,
    input: &(Vec<f32>, [usize; 3]),
    map: &QueryMap,
    side: u32,
) -> Result<(), TrainError> {
    let (pixels, [c, h, w]) = input;
    let (lo, hi) = pixels
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let grey = |y: usize, x: usize| -> f32 {
        let v: f32 = (0..*c).map(|k| pixels[(k * h + y) * w + x]).sum::<f32>() / *c as f32;
        (v - lo) / (hi - lo).max(1e-12)
    };
    let peak = map.values.iter().fold(0.0f32, |m, v| m.max(*v)).max(1e-12);
    let [gh, gw] = map.grid;
    // The query token's cell in pixels (the query grid may differ from the key grid).
    let (qr, qc) = map.query;
    let [qh, qw] = map.query_grid;
    let span = |i: usize, n: usize| (i as u32 * side / n as u32, (i as u32 + 1) * side / n as u32);
    let ((y0, y1), (x0, x1)) = (span(qr, qh), span(qc, qw));
    let img = image::RgbImage::from_fn(side, side, |px, py| {
        let (fy, fx) = (py as f64 / side as f64, px as f64 / side as f64);
        let inside = (y0..y1).contains(&py) && (x0..x1).contains(&px);
        let border = py < y0 + 2 || py + 2 >= y1 || px < x0 + 2 || px + 2 >= x1;
        if inside && border {
            return image::Rgb([0, 255, 255]);
        }
        let g = grey((fy * *h as f64) as usize, (fx * *w as f64) as usize);
        let (my, mx) = ((fy * gh as f64) as usize, (fx * gw as f64) as usize);
        let a = (map.values[my * gw + mx] / peak).clamp(0.0, 1.0);
        let heat = [1.0, a, 0.0];
        let mut rgb = [0u8; 3];
        for (k, out) in rgb.iter_mut().enumerate() {
            *out = (255.0 * ((1.0 - 0.7 * a) * g + 0.7 * a * heat[k])) as u8;
        }
        image::Rgb(rgb)
    });
    img.save(path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
