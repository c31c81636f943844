//! Token rows read in place from a larger buffer.

use crate::matmul::Operand;

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

    /// The block at row `r`, column `col` as a product operand.
    pub(crate) fn operand(&self, r: usize, col: usize) -> Operand<'a> {
        Operand(self.from(r, col), [self.stride, 1])
    }

    /// The same block transposed (`[width, rows]`) as a product operand.
    pub(crate) fn operand_transposed(&self, r: usize, col: usize) -> Operand<'a> {
        Operand(self.from(r, col), [1, self.stride])
    }
}
