//! What an attention module attends to: the attention matrix each family implies, recorded
//! during a forward pass (`linvit explain`).
//!
//! - softmax: `softmax(q k^T * scale + bias + mask)`;
//! - focused and plain linear: the row `phi(q_i) . phi(k_j) / sum_j phi(q_i) . phi(k_j)` that
//!   the linear form computes without forming it (with FLatten's `1/sqrt(n)` and `1e-6` as in
//!   [`crate::focused::linear_attend_prescaled`]);
//! - agent: the query-to-agent map and the agent-to-key map, and their product, the implied
//!   query-to-key matrix;
//! - norm (TransNormer): `silu(q) silu(k)^T`, unnormalised (the SRMSNorm comes after).
//!
//! In every case the matrix times the values is the module's attention output before the
//! depthwise conv (or LePE, or SRMSNorm) and the output projection: [`Record::output`] holds that
//! output as the module computed it, and the tests check the product against it.
//!
//! Recording is per thread and off unless [`record`] runs: the modules ask [`recording`] (one
//! thread-local read) and, while it is on, take their Burn-op path instead of a fused kernel.

use std::cell::RefCell;

use burn::tensor::Tensor;

use crate::ops::merge_heads;
use crate::TokenLayout;

pub use crate::windows::Windows;

/// One attention call.
#[derive(Clone, Debug)]
pub struct Record {
    /// The family (`softmax`, `focused`, `linear`, `agent`, `norm`).
    pub kind: &'static str,
    /// The queries' layout in this call (a window's, where the call runs on windows).
    pub layout: TokenLayout,
    /// The keys' grid (smaller than the queries' after spatial reduction).
    pub key_grid: [usize; 2],
    /// Where the call's batch is windows of a larger grid; `None` for whole grids.
    pub windows: Option<Windows>,
    /// Named matrices `[batch, heads, rows, cols]`. `attention` (queries x keys) is always
    /// there; agent attention adds `query_to_agent` and `agent_to_key`.
    pub maps: Vec<(&'static str, Tensor<4>)>,
    /// The values per head, `[batch, heads, keys, head_dim]`.
    pub values: Tensor<4>,
    /// The module's attention output before the conv/LePE/norm and the projection,
    /// `[batch, queries, channels]`, as the module computed it.
    pub output: Tensor<3>,
    /// Whether the rows of `attention` are distributions (every family but `norm`).
    pub normalised: bool,
}

impl Record {
    /// The `attention` matrix.
    pub fn attention(&self) -> &Tensor<4> {
        &self
            .maps
            .iter()
            .find(|(name, _)| *name == "attention")
            .expect("every record holds its attention matrix")
            .1
    }

    /// `attention x values`, heads merged: what [`Record::output`] must equal.
    pub fn attention_times_values(&self) -> Tensor<3> {
        merge_heads(self.attention().clone().matmul(self.values.clone()))
    }
}

struct State {
    records: Vec<Record>,
    windows: Option<Windows>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` with recording on, and returns its result with every attention call it made, in
/// order. Attention modules take their Burn-op path while recording (no fused kernels).
pub fn record<R>(f: impl FnOnce() -> R) -> (R, Vec<Record>) {
    let before = STATE.with(|s| {
        s.borrow_mut().replace(State {
            records: Vec::new(),
            windows: None,
        })
    });
    let out = f();
    let state = STATE.with(|s| std::mem::replace(&mut *s.borrow_mut(), before));
    (out, state.map(|s| s.records).unwrap_or_default())
}

/// Whether this thread is recording.
pub fn recording() -> bool {
    STATE.with(|s| s.borrow().is_some())
}

/// Runs `f` with the calls it makes marked as running on `windows` (while recording).
pub fn in_windows<R>(windows: Windows, f: impl FnOnce() -> R) -> R {
    let mark = |w: Option<Windows>| {
        STATE.with(|s| {
            s.borrow_mut()
                .as_mut()
                .map(|state| std::mem::replace(&mut state.windows, w))
        })
    };
    let before = mark(Some(windows));
    let out = f();
    if let Some(before) = before {
        mark(before);
    }
    out
}

/// Keeps a call's record (the windows mark filled in) when recording; does nothing otherwise.
pub(crate) fn push(make: impl FnOnce() -> Record) {
    STATE.with(|s| {
        if let Some(state) = s.borrow_mut().as_mut() {
            let mut record = make();
            record.windows = state.windows;
            state.records.push(record);
        }
    });
}

/// The matrix the linear form `q (k^T v) / (q . sum k)` implies, with FLatten's scaling:
/// `s (q_i . k_j) / (s sum_j q_i . k_j + 1e-6)`, `s = 1/sqrt(n)` (see
/// [`crate::focused::linear_attend_prescaled`]; `k` already carries any other factor).
pub(crate) fn implied_linear(q: Tensor<4>, k: Tensor<4>) -> Tensor<4> {
    let n = k.dims()[2] as f64;
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(n.powf(-0.5));
    let den = scores.clone().sum_dim(3).add_scalar(1e-6);
    scores / den
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_window_position_round_trips() {
        let w = Windows {
            grid: [8, 12],
            window: [4, 4],
            shift: 2,
        };
        for row in 0..8 {
            for col in 0..12 {
                let (index, i) = w.locate(row, col);
                assert!(index < w.count() && i < 16);
                assert_eq!(w.position(index, i), (row, col));
            }
        }
        // Unshifted: the first window holds the top-left 4x4 tokens.
        let w = Windows { shift: 0, ..w };
        assert_eq!(w.locate(3, 3), (0, 15));
        assert_eq!(w.locate(0, 4), (1, 0));
    }
}
