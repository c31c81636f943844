//! Softmax attention, the baseline every linear family is measured against, in each backbone's
//! flavour: ViT/DeiT (fused `qkv`, CLS attends like any token), Swin window attention (relative
//! position bias, shifted-window mask), PVT spatial-reduction attention (`sr_ratio`, PVTv2's
//! pooled `linear` option), and CSwin stripe attention with LePE. Follows timm's `Attention`,
//! Microsoft's Swin `WindowAttention`, PVT's `Attention` and CSwin's `LePEAttention`.

use crate::LayerNorm;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use linvit_kernels::window::WindowAttention;

use crate::agent::bias_init;
use crate::explain;
use crate::kernel;
use crate::ops::{self, merge_heads, softmax, split_heads};
use crate::proj::{self, MixerInput, Qkv};
use crate::{MixerShape, Projection, TokenLayout};

/// Softmax attention; fields carry the upstream state-dict names.
#[derive(Module, Debug)]
pub struct SoftmaxAttention {
    pub qkv: Option<Linear>,
    pub q: Option<Linear>,
    pub kv: Option<Linear>,
    pub sr: Option<Conv2d>,
    pub norm: Option<LayerNorm>,
    pub proj: Option<Linear>,
    /// LePE depthwise 3x3 per window (CSwin only).
    pub get_v: Option<Conv2d>,
    /// `[(2 wh - 1) (2 ww - 1), h]`, Swin only; indexed by the relative offset of two tokens.
    pub relative_position_bias_table: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub projection: Projection,
    /// Window the relative position table was built for.
    #[module(skip)]
    pub window: [usize; 2],
}

proj::impl_projected!(SoftmaxAttention);

impl SoftmaxAttention {
    pub fn new(shape: &MixerShape, device: &Device) -> Self {
        let p = proj::init(shape, device);
        let external = matches!(shape.projection, Projection::External { .. });
        let [wh, ww] = shape.grid;
        SoftmaxAttention {
            qkv: p.qkv,
            q: p.q,
            kv: p.kv,
            sr: p.sr,
            norm: p.norm,
            proj: p.proj,
            get_v: external.then(|| proj::depthwise(shape.dim, 3, device)),
            relative_position_bias_table: shape
                .relative_position_bias
                .then(|| bias_init([(2 * wh - 1) * (2 * ww - 1), shape.num_heads], device)),
            num_heads: shape.num_heads,
            projection: shape.projection,
            window: shape.grid,
        }
    }

    /// Mixes tokens, or for a block `x + attn(norm(x))` (see [`MixerInput`]).
    ///
    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> same; with Swin, B counts windows and H x W is the window
    /// - mask: `[nW, N, N]` added to the scores of window `b % nW` (0 or -100 upstream)
    pub fn forward<'a>(
        &self,
        x: impl Into<MixerInput<'a>>,
        layout: TokenLayout,
        mask: Option<Tensor<3>>,
    ) -> Tensor<3> {
        proj::forward(self, x, layout, |qkv, layout| {
            self.attend(qkv, layout, mask)
        })
    }

    /// The CSwin flavour: `q, k, v` each `[B, H*W, C]`, attention per window with LePE.
    pub fn forward_qkv(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        layout: TokenLayout,
    ) -> Tensor<3> {
        proj::forward_windows(self, [q, k, v], layout, |qkv, layout| {
            self.attend(qkv, layout, None)
        })
    }

    /// Swin's window attention on whole images, `[B, H*W, C]` in image order -> same: the
    /// windows of side `window`, after a cyclic shift of `-shift` (`mask` as in [`Self::forward`]),
    /// are cut out by the projections' kernels, so the image is neither rolled nor partitioned
    /// before and after (four copies of it per block): `qkv` reads its input rows in window
    /// order (see [`window_rows`]) and `proj` reads the windows' output back in image order,
    /// each gathering the rows of a block while it is in cache. `None` where the kernels do not
    /// apply (training, other backends); the caller then partitions and calls `forward`. With
    /// `block_norm`, `x` is a pre-norm block's stream and the result the block's first half `x +
    /// attn(block_norm(x))`, the norm and the add fused into the projections (see
    /// [`MixerInput`]).
    pub fn forward_image_windows(
        &self,
        x: &Tensor<3>,
        block_norm: Option<&LayerNorm>,
        grid: [usize; 2],
        window: usize,
        shift: usize,
        mask: Option<&Tensor<3>>,
    ) -> Option<Tensor<3>> {
        let (qkv, proj) = (self.qkv.as_ref()?, self.proj.as_ref()?);
        if !kernel::kernel_applies(x) || explain::recording() {
            return None;
        }
        // What `attend_fused` declines, declined before the projection rather than after.
        let layout = TokenLayout::grid(window, window);
        let table_fits = self.relative_position_bias_table.is_none() || self.window == [window; 2];
        if window * window > FUSED_TOKENS || !table_fits {
            return None;
        }
        let [b, n, c] = x.dims();
        // One unshifted window per image is already in window order.
        let order = (shift > 0 || grid != [window; 2]).then(|| window_rows(b, grid, window, shift));
        let back = order.as_deref().map(inverse_permutation);
        let t = ops::linear_in_block(qkv, x, order.as_deref(), block_norm, None)?;
        let windows = t.reshape([b * n / (window * window), window * window, 3 * c]);
        let [q, k, v] = [0, 1, 2].map(|i| windows.clone().narrow(2, i * c, c));
        let scale = ((c / self.num_heads) as f64).powf(-0.5);
        let out = self.attend_fused(&q, &k, &v, layout, mask, scale)?;
        let residual = block_norm.map(|_| x);
        ops::linear_in_block(
            proj,
            &out.reshape([b, n, c]),
            back.as_deref(),
            None,
            residual,
        )
    }

    /// `[1, h, N, N]` relative position bias of Swin for a `wh x ww` window.
    fn relative_position_bias(&self, table: Tensor<2>) -> Tensor<4> {
        let [wh, ww] = self.window;
        let n = wh * ww;
        let mut index = Vec::with_capacity(n * n);
        for i in 0..n {
            let (y1, x1) = (i / ww, i % ww);
            for j in 0..n {
                let (y2, x2) = (j / ww, j % ww);
                index.push(((y1 + wh - 1 - y2) * (2 * ww - 1) + (x1 + ww - 1 - x2)) as i64);
            }
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n * n]), &table.device());
        let heads = table.dims()[1];
        table
            .select(0, index)
            .reshape([n, n, heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }

    pub(crate) fn attend(
        &self,
        qkv: Qkv,
        layout: TokenLayout,
        mask: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let Qkv { q, k, v, key_grid } = qkv;
        let heads = self.num_heads;
        let [_, _, c] = q.dims();
        let scale = ((c / heads) as f64).powf(-0.5);
        // Recording (`linvit explain`) needs the score matrix: the explicit path below.
        let record = explain::recording();
        if let Some(out) = (!record)
            .then(|| self.attend_fused(&q, &k, &v, layout, mask.as_ref(), scale))
            .flatten()
        {
            return out;
        }
        if let Some(out) = (!record)
            .then(|| self.attend_tracked([&q, &k, &v], layout, mask.as_ref(), scale))
            .flatten()
        {
            return out;
        }
        if !record && self.relative_position_bias_table.is_none() && mask.is_none() {
            // Burn's attention op: tiled with an online softmax on flex (no N x n scores), flash
            // kernels on CubeCL; under autodiff it is the same matmul-softmax-matmul as below.
            // Only without bias or mask: CubeCL's flash kernels drop an additive bias.
            let options = AttentionModuleOptions {
                scale: Some(scale),
                ..Default::default()
            };
            let [q, k, v] = [q, k, v].map(|t| split_heads(t, heads));
            return merge_heads(attention(q, k, v, None, None, options));
        }
        let q = split_heads(q, heads).mul_scalar(scale);
        let mut scores = q.matmul(split_heads(k, heads).swap_dims(2, 3)); // [b, h, N, n]
        if let Some(table) = &self.relative_position_bias_table {
            assert_eq!(
                layout.hw(),
                self.window,
                "Swin window attention was built for a {:?} window",
                self.window
            );
            scores = scores + self.relative_position_bias(table.val());
        }
        if let Some(mask) = mask {
            let [bw, h, n, m] = scores.dims();
            let [nw, _, _] = mask.dims();
            scores = (scores.reshape([bw / nw, nw, h, n, m]) + mask.reshape([1, nw, 1, n, m]))
                .reshape([bw, h, n, m]);
        }
        let attention = softmax(scores, 3);
        let values = split_heads(v, heads);
        let out = merge_heads(attention.clone().matmul(values.clone()));
        explain::push(|| explain::Record {
            kind: "softmax",
            layout,
            key_grid,
            windows: None,
            maps: vec![("attention", attention)],
            values,
            output: out.clone(),
            normalised: true,
        });
        out
    }

    /// In training on flex, where [`Self::attend_fused`] would apply in inference (as many keys
    /// as queries, at most [`FUSED_TOKENS`]), the attention as one autodiff node with its own
    /// backward (`fused::window_softmax`). `None` where the node does not apply.
    fn attend_tracked(
        &self,
        qkv: [&Tensor<3>; 3],
        layout: TokenLayout,
        mask: Option<&Tensor<3>>,
        scale: f64,
    ) -> Option<Tensor<3>> {
        let [q, k, _] = qkv;
        let n = q.dims()[1];
        if n > FUSED_TOKENS || k.dims()[1] != n || !crate::fused::applies(q) {
            return None;
        }
        let bias = match &self.relative_position_bias_table {
            Some(table) if layout.hw() == self.window => {
                Some(self.relative_position_bias(table.val()))
            }
            Some(_) => return None,
            None => None,
        };
        let heads = self.num_heads;
        crate::fused::window_softmax(heads, scale as f32, qkv, bias.as_ref(), mask)
    }

    /// The fused CPU kernel ([`linvit_kernels::window`]) where it applies: f32 tensors on flex
    /// that no autodiff graph tracks (inference), as many keys as queries, and short runs of
    /// tokens (Swin's windows; up to [`FUSED_TOKENS`], where one head's scores stay in L2).
    /// Reads `q, k, v` in place from the `qkv` projection. Computes what the op path above
    /// computes (`tests/fast_paths.rs` holds the two together); `None` where it does not apply.
    fn attend_fused(
        &self,
        q: &Tensor<3>,
        k: &Tensor<3>,
        v: &Tensor<3>,
        layout: TokenLayout,
        mask: Option<&Tensor<3>>,
        scale: f64,
    ) -> Option<Tensor<3>> {
        let [b, n, c] = q.dims();
        if n > FUSED_TOKENS || k.dims()[1] != n {
            return None;
        }
        let bias = match &self.relative_position_bias_table {
            Some(table) if layout.hw() == self.window => Some(kernel::kernel_input(
                &self.relative_position_bias(table.val()),
            )?),
            Some(_) => return None,
            None => None,
        };
        let mask = match mask {
            Some(m) => Some(kernel::kernel_input(m)?),
            None => None,
        };
        let (q_in, k_in, v_in) = (
            kernel::kernel_rows(q)?,
            kernel::kernel_rows(k)?,
            kernel::kernel_rows(v)?,
        );
        let kernel = WindowAttention {
            heads: self.num_heads,
            scale: scale as f32,
            bias: kernel::optional_slice(&bias)?,
            mask: kernel::optional_slice(&mask)?,
        };
        let out = kernel.forward(n, q_in.rows(), k_in.rows(), v_in.rows());
        Some(Tensor::from_data(
            TensorData::new(out, [b, n, c]),
            &q.device(),
        ))
    }
}

/// The row, among `batch` images of `[h, w]` tokens in image order, of each token of Swin's
/// windows in window order (images, then windows row-major, then tokens row-major), the image
/// cyclically shifted by `-shift` first: token `(y, x)` of the shifted image is `((y + shift) mod
/// h, (x + shift) mod w)` of the image, as `roll(-shift)` then the window partition gives.
fn window_rows(batch: usize, [h, w]: [usize; 2], window: usize, shift: usize) -> Vec<usize> {
    let mut rows = Vec::with_capacity(batch * h * w);
    for image in 0..batch {
        for wy in (0..h).step_by(window) {
            for wx in (0..w).step_by(window) {
                for y in wy..wy + window {
                    for x in wx..wx + window {
                        rows.push(image * h * w + (y + shift) % h * w + (x + shift) % w);
                    }
                }
            }
        }
    }
    rows
}

/// `inverse[order[i]] = i`.
///
/// # Panics
/// Where `order` is not a permutation of its indices (a caller bug).
fn inverse_permutation(order: &[usize]) -> Vec<usize> {
    let mut inverse = vec![usize::MAX; order.len()];
    for (i, &r) in order.iter().enumerate() {
        assert!(
            inverse[r] == usize::MAX,
            "row {r} appears twice in the row order"
        );
        inverse[r] = i;
    }
    inverse
}

/// Longest token run the fused kernel takes: its `[N, N]` scores of one head (1 MiB at 512)
/// stay in L2. Longer sequences run Burn's attention op, tiled with an online softmax.
const FUSED_TOKENS: usize = 512;
