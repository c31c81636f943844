//! Token rows read in place from a larger buffer.

use crate::matmul::Operand;
use crate::{new_buffer, rows_per_task};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A `[rows, width]` matrix inside a larger buffer, row `r` at `data[offset + r * stride..]`:
/// the queries, keys and values of a fused `qkv` projection are three such views of one
/// `[tokens, 3C]` buffer, read without copying them apart.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    data: &'a [f32],
    offset: usize,
    stride: usize,
    width: usize,
    rows: usize,
}

impl<'a> Rows<'a> {
    /// # Panics
    /// Where a row is wider than the stride or the last row ends past `data` (a caller bug).
    pub fn new(data: &'a [f32], offset: usize, stride: usize, width: usize, rows: usize) -> Self {
        assert!(
            width <= stride && (rows == 0 || offset + (rows - 1) * stride + width <= data.len())
        );
        Rows {
            data,
            offset,
            stride,
            width,
            rows,
        }
    }

    /// Rows packed back to back: `data` is `[rows, width]`.
    ///
    /// # Panics
    /// Where `data.len()` is not a multiple of `width`.
    pub fn dense(data: &'a [f32], width: usize) -> Self {
        assert!(width > 0 && data.len().is_multiple_of(width));
        Self::new(data, 0, width, width, data.len() / width)
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn row(&self, r: usize) -> &'a [f32] {
        assert!(r < self.rows);
        &self.data[self.offset + r * self.stride..][..self.width]
    }

    /// The buffer from row `r`, column `col` on: element `(i, j)` of the block there is at
    /// `i * stride + j`.
    pub(crate) fn from(&self, r: usize, col: usize) -> &'a [f32] {
        assert!(r < self.rows && col < self.width);
        &self.data[self.offset + r * self.stride + col..]
    }

    /// The rows packed back to back (`[rows, width]`), copied on all cores.
    pub fn to_dense(&self) -> Vec<f32> {
        let (width, task) = (self.width, rows_per_task(self.width));
        let write = |t: usize, chunk: &mut [MaybeUninit<f32>]| {
            for (i, dst) in chunk.chunks_exact_mut(width.max(1)).enumerate() {
                dst.write_copy_of_slice(self.row(t * task + i));
            }
        };
        // SAFETY: each chunk holds whole rows, and each row is written from its source row.
        unsafe { new_buffer(self.rows * width, task * width, write) }
    }

    /// The block at row `r`, column `col` as a product operand.
    pub(crate) fn operand(&self, r: usize, col: usize) -> Operand<'a> {
        Operand(self.from(r, col), [self.stride, 1])
    }

    /// The same block transposed (`[width, rows]`) as a product operand.
    pub(crate) fn operand_transposed(&self, r: usize, col: usize) -> Operand<'a> {
        Operand(self.from(r, col), [1, self.stride])
    }
}

/// Adds `grad` (`[rows, len]`) into columns `start..start + len` of `sum` (`[rows, width]`), in
/// place: a column view's gradient added into its parent's.
///
/// # Panics
/// Where the columns do not fit in `width` or the row counts differ (a caller bug).
pub fn add_columns(sum: &mut [f32], width: usize, start: usize, grad: &[f32]) {
    assert!(width > 0 && sum.len().is_multiple_of(width));
    let len = view_width(sum.len() / width, width, start, grad.len());
    let task = rows_per_task(width);
    sum.par_chunks_mut(task * width)
        .zip(grad.par_chunks(task * len))
        .for_each(|(sum, grad)| {
            for (row, g) in sum.chunks_exact_mut(width).zip(grad.chunks_exact(len)) {
                for (s, g) in row[start..start + len].iter_mut().zip(g) {
                    *s += g;
                }
            }
        });
}

/// `grad` (`[rows, len]`) as columns `start..start + len` of a new `[rows, width]` matrix that
/// is zero elsewhere: a column view's gradient as its parent's, each element written once.
///
/// # Panics
/// Where the columns do not fit in `width` (a caller bug).
pub fn widen_columns(width: usize, start: usize, grad: &[f32], rows: usize) -> Vec<f32> {
    let len = view_width(rows, width, start, grad.len());
    let task = rows_per_task(width);
    let write = |t: usize, out: &mut [MaybeUninit<f32>]| {
        let grad = grad[t * task * len..].chunks_exact(len);
        for (row, g) in out.chunks_exact_mut(width).zip(grad) {
            let (before, rest) = row.split_at_mut(start);
            let (view, after) = rest.split_at_mut(len);
            before.fill(MaybeUninit::new(0.0));
            view.write_copy_of_slice(g);
            after.fill(MaybeUninit::new(0.0));
        }
    };
    // SAFETY: each chunk holds whole rows (the gradient has a row of `len` for each), and every
    // element of each row is written: zeros before and after the view, the gradient in it.
    unsafe { new_buffer(rows * width, task * width, write) }
}

/// The width of a view of `count` elements at column `start` of `rows` rows `width` wide;
/// panics where it does not fit.
fn view_width(rows: usize, width: usize, start: usize, count: usize) -> usize {
    assert!(rows > 0 && count.is_multiple_of(rows));
    let len = count / rows;
    assert!(len > 0 && start + len <= width);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_gradients_land_in_their_columns_and_add_to_what_is_there() {
        // [3, 5] parent, a view of columns 1..3.
        let grad = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let widened = widen_columns(5, 1, &grad, 3);
        assert_eq!(
            widened,
            [0., 1., 2., 0., 0., 0., 3., 4., 0., 0., 0., 5., 6., 0., 0.]
        );
        let mut sum: Vec<f32> = (0..15).map(|i| i as f32 * 10.0).collect();
        add_columns(&mut sum, 5, 3, &grad);
        assert_eq!(
            sum,
            [0., 10., 20., 31., 42., 50., 60., 70., 83., 94., 100., 110., 120., 135., 146.]
        );
        // The last column alone, and the whole width.
        assert_eq!(widen_columns(2, 1, &[7.0, 8.0], 2), [0.0, 7.0, 0.0, 8.0]);
        let mut whole = vec![1.0; 4];
        add_columns(&mut whole, 2, 0, &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(whole, [2.0, 3.0, 4.0, 5.0]);
    }

    /// Rows spread over several tasks (the last one short) land where the element-by-element
    /// definition puts them.
    #[test]
    fn column_gradients_over_many_tasks_land_in_their_columns() {
        let (width, start, len) = (96, 40, 33);
        let rows = 3 * rows_per_task(width) + 5;
        let grad: Vec<f32> = (0..rows * len).map(|i| (i % 997) as f32).collect();
        let base: Vec<f32> = (0..rows * width).map(|i| (i % 13) as f32 * 0.5).collect();
        let in_view = |i: usize| (start..start + len).contains(&(i % width));
        let at = |i: usize| grad[i / width * len + i % width - start];
        let widened = widen_columns(width, start, &grad, rows);
        let want: Vec<f32> = (0..rows * width)
            .map(|i| if in_view(i) { at(i) } else { 0.0 })
            .collect();
        assert_eq!(widened, want);
        let mut sum = base.clone();
        add_columns(&mut sum, width, start, &grad);
        let want: Vec<f32> = (0..rows * width)
            .map(|i| if in_view(i) { base[i] + at(i) } else { base[i] })
            .collect();
        assert_eq!(sum, want);
    }

    #[test]
    #[should_panic]
    fn a_view_past_the_last_column_is_refused() {
        add_columns(&mut [0.0; 6], 3, 2, &[1.0, 1.0, 1.0, 1.0]);
    }
}
