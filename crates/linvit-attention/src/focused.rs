//! FLatten focused linear attention (Han et al., "FLatten Transformer: Vision Transformer using
//! Focused Linear Attention", ICCV 2023), following `models/flatten_{pvt,pvt_v2,swin,cswin}.py`
//! of LeapLabTHU/FLatten-Transformer.
//!
//! One module covers every upstream flavour; the [`Projection`] picks it: fused `qkv` (Swin,
//! and DeiT-style backbones, where a CLS prefix attends like any token), `q` + `kv` with
//! spatial reduction (PVT, PVTv2 incl. `linear`), or external `q, k, v` with LePE (CSwin).
//!
//! Deviation: upstream fixes the number of key tokens at construction. Called on another grid,
//! this module resizes `positional_encoding` bilinearly over the key grid instead of failing.

use crate::LayerNorm;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::activation::{relu, softplus};
use burn::tensor::{DType, Device, Tensor, TensorData};
use linvit_kernels::focused::{FocusedAttention, HeadSharedDwc};
use serde::{Deserialize, Serialize};

use crate::explain;
use crate::kernel;
use crate::ops::{self, bilinear_matrix, linear_matrix, merge_heads, resample_axis, split_heads};
use crate::proj::{self, MixerInput, Qkv};
use crate::{MixerShape, Projection, TokenLayout};

/// Hyper-parameters of focused linear attention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FocusedConfig {
    /// Power p of the focusing function. Default: 3.
    pub focusing_factor: u32,
    /// Kernel of the depthwise conv on v (0 turns it off). Default: 5.
    pub kernel_size: usize,
}

impl Default for FocusedConfig {
    fn default() -> Self {
        Self {
            focusing_factor: 3,
            kernel_size: 5,
        }
    }
}

/// Focused linear attention; fields carry the upstream state-dict names.
#[derive(Module, Debug)]
pub struct FocusedLinearAttention {
    pub qkv: Option<Linear>,
    pub q: Option<Linear>,
    pub kv: Option<Linear>,
    pub sr: Option<Conv2d>,
    pub norm: Option<LayerNorm>,
    pub proj: Option<Linear>,
    /// Depthwise conv over the head dim, one kernel shared by all heads.
    pub dwc: Option<Conv2d>,
    /// LePE depthwise 3x3 over all channels (CSwin only).
    pub get_v: Option<Conv2d>,
    /// `[1, 1, C]`; the kernel divides by `softplus(scale)`.
    pub scale: Param<Tensor<3>>,
    /// `[1, n, C]` added to the keys, n = key tokens of the grid the module was built for.
    pub positional_encoding: Param<Tensor<3>>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub focusing_factor: u32,
    #[module(skip)]
    pub projection: Projection,
    /// Key grid `positional_encoding` was built for.
    #[module(skip)]
    pub key_grid: [usize; 2],
}

impl FocusedConfig {
    pub fn init(&self, shape: &MixerShape, device: &Device) -> FocusedLinearAttention {
        let p = proj::init(shape, device);
        let key_grid = shape.projection.key_grid(shape.grid);
        let head_dim = shape.head_dim();
        let external = matches!(shape.projection, Projection::External { .. });
        FocusedLinearAttention {
            qkv: p.qkv,
            q: p.q,
            kv: p.kv,
            sr: p.sr,
            norm: p.norm,
            proj: p.proj,
            dwc: (self.kernel_size > 0)
                .then(|| proj::depthwise(head_dim, self.kernel_size, device)),
            get_v: external.then(|| proj::depthwise(shape.dim, 3, device)),
            scale: Param::from_tensor(Tensor::zeros([1, 1, shape.dim], device)),
            positional_encoding: Param::from_tensor(Tensor::zeros(
                [1, key_grid[0] * key_grid[1], shape.dim],
                device,
            )),
            num_heads: shape.num_heads,
            focusing_factor: self.focusing_factor,
            projection: shape.projection,
            key_grid,
        }
    }
}

/// FLatten's kernel: `relu(x) + 1e-6`, divided by `softplus(scale)`, then the focusing function
/// `x^p / ||x^p|| * ||x||` with norms over the full channel dim (all heads together).
///
/// Computed as `y^p * (||x|| / ||y^p||)` with `y = x / max(x)` per token: `x^p / ||x^p||` does
/// not change when a token is scaled, so this is the same number wherever the literal formula
/// is finite, and finite where it is not. Literally, a token whose channels relu zeroed has every
/// entry at `1e-6 / softplus(scale)`, and for `p >= 4` its power underflows to 0 in f32: `0/0`,
/// and the training diverges (the paper trains p up to 32). With `y`'s largest entry 1,
/// `||y^p|| >= 1`. The maximum is held constant for the gradient, which is exact: the output
/// does not depend on it.
///
/// The power by repeated multiplication (an element-wise `powf` is several times slower on CPU
/// backends), then one full-size multiply by a per-token factor. The two norms are taken
/// separately, as upstream does: `sqrt(||x||^2 / ||y^p||^2)` would put `||y^p||^4` in the
/// gradient's denominator. [`crate::reference::focus`] is the literal form.
pub fn focus(x: Tensor<3>, scale: Tensor<3>, p: u32) -> Tensor<3> {
    focus_times(x, scale, p, 1.0)
}

/// [`focus`] times a constant, folded into the per-token factor (free). In training on flex one
/// autodiff node with its own backward (`fused::focus`).
fn focus_times(x: Tensor<3>, scale: Tensor<3>, p: u32, times: f64) -> Tensor<3> {
    if let Some(y) = crate::fused::focus(&x, &scale, p, times) {
        return y;
    }
    let x = relu(x).add_scalar(1e-6) / softplus(scale, 1.0);
    let norm2 = x.clone().square().sum_dim(2); // [b, n, 1]
    let peak = x.clone().max_dim(2).detach(); // [b, n, 1], > 0
    let xp = powi_by_mul(x / peak, p);
    let xp_norm2 = xp.clone().square().sum_dim(2); // [b, n, 1], >= 1
    let factor = norm2.sqrt() / xp_norm2.sqrt();
    let factor = if times == 1.0 {
        factor
    } else {
        factor.mul_scalar(times)
    };
    xp * factor
}

/// `x^p` for `p >= 1` by squaring and multiplying (`p = 3`: two passes).
pub fn powi_by_mul<const D: usize>(x: Tensor<D>, p: u32) -> Tensor<D> {
    match p {
        0 => x.ones_like(),
        1 => x,
        2 => x.square(),
        _ => {
            let half = powi_by_mul(x.clone(), p / 2).square();
            if p % 2 == 1 {
                half * x
            } else {
                half
            }
        }
    }
}

/// Normalised linear attention per head, in the order that keeps memory linear in tokens:
/// `z = 1 / (q . mean(k) + 1e-6)`, `kv = (k^T / sqrt(n)) (v / sqrt(n))`, `out = (q kv) z`.
///
/// # Shapes
/// - q `[B, h, N, d]`, k and v `[B, h, n, d]` -> `[B, h, N, d]`
pub fn linear_attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let n = k.dims()[2] as f64;
    linear_attend_prescaled(q, k.mul_scalar(n.powf(-0.5)), v)
}

/// [`linear_attend`] with the keys already divided by `sqrt(n)` (FLatten folds that into the
/// focusing factor, so it costs no pass over the keys).
///
/// The numerator `q kv` and the denominator `q . mean(k)` come out of one product with `kv`
/// augmented by the column `mean(k)^T`: `q [kv | mean(k)^T]`. `kv` is `k'^T v / sqrt(n)` with
/// `k' = k / sqrt(n)`, which equals upstream's `(k^T / sqrt(n)) (v / sqrt(n))` and keeps its sums
/// bounded (what keeps half precision finite). [`crate::reference::linear_attend`] is the
/// literal form.
///
/// # Shapes
/// - q `[B, h, N, d]`, k and v `[B, h, n, d]` -> `[B, h, N, d]`
pub fn linear_attend_prescaled(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [_, _, n, d] = k.dims();
    let s = (n as f64).powf(-0.5);
    let k_mean = k.clone().sum_dim(2).mul_scalar(s); // [b, h, 1, d]
    let kv = k.swap_dims(2, 3).matmul(v).mul_scalar(s); // [b, h, d, d]
    let kv_z = Tensor::cat(vec![kv, k_mean.swap_dims(2, 3)], 3); // [b, h, d, d + 1]
    let out = q.matmul(kv_z); // [b, h, N, d + 1]
    let den = out.clone().narrow(3, d, 1).add_scalar(1e-6);
    out.narrow(3, 0, d) / den
}

/// The depthwise conv over the head dim shared by all heads, on `v [B, h, N, d]` laid out as
/// `[B*h, d, H, W]`; returns merged-head tokens `[B, N, h*d]`. On flex in f32 it runs on the
/// merged-head tokens as they are (`ops::depthwise_tokens`, channel `c` through kernel
/// `c % d`; the heads are merged only where a fused kernel or node may run).
pub fn head_shared_dwc(dwc: &Conv2d, v: Tensor<4>, [h, w]: [usize; 2]) -> Tensor<3> {
    if kernel::kernel_applies(&v) || crate::fused::applies(&v) {
        if let Some(local) = ops::depthwise_tokens(dwc, &merge_heads(v.clone()), [h, w]) {
            return local;
        }
    }
    let [b, heads, n, d] = v.dims();
    // One copy into the conv's [B*h, d, H, W] layout.
    let image = v.swap_dims(2, 3).reshape([b * heads, d, h, w]);
    ops::conv2d(dwc, image)
        .reshape([b, heads * d, n])
        .swap_dims(1, 2)
}

proj::impl_projected!(FocusedLinearAttention);

impl FocusedLinearAttention {
    /// Mixes tokens, or for a block `x + attn(norm(x))` (see [`MixerInput`]).
    ///
    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> `[B, prefix + H*W, C]`
    pub fn forward<'a>(&self, x: impl Into<MixerInput<'a>>, layout: TokenLayout) -> Tensor<3> {
        proj::forward(self, x, layout, |qkv, layout| self.attend(qkv, layout))
    }

    /// The CSwin flavour: `q, k, v` each `[B, H*W, C]` (the block projects); LePE added, no
    /// `proj`. Upstream runs it on the whole map only, which validation enforces.
    pub fn forward_qkv(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        layout: TokenLayout,
    ) -> Tensor<3> {
        proj::forward_windows(self, [q, k, v], layout, |qkv, layout| {
            self.attend(qkv, layout)
        })
    }

    /// The key positional encoding for a key grid, resized when the grid differs from the one
    /// the module was built for.
    fn positional_encoding(&self, key_grid: [usize; 2]) -> Tensor<3> {
        let pe = self.positional_encoding.val();
        if key_grid == self.key_grid {
            return pe;
        }
        let m = bilinear_matrix(self.key_grid, key_grid, &pe.device());
        resample_axis(pe, m, 1)
    }

    pub(crate) fn attend(&self, qkv: Qkv, layout: TokenLayout) -> Tensor<3> {
        let Qkv { q, k, v, key_grid } = qkv;
        let [_, n_keys, _] = k.dims();
        let pe = if n_keys == key_grid[0] * key_grid[1] {
            self.positional_encoding(key_grid)
        } else {
            // A prefix token (CLS) among the keys gets no position, as in ViT-style backbones.
            let pe = self.positional_encoding(key_grid);
            let [_, _, c] = pe.dims();
            Tensor::cat(
                vec![
                    Tensor::zeros([1, n_keys - pe.dims()[1], c], (&pe.device(), pe.dtype())),
                    pe,
                ],
                1,
            )
        };
        let record = explain::recording();
        if let Some(out) = (!record)
            .then(|| self.attend_fused(&q, &k, &v, &pe, key_grid, layout))
            .flatten()
        {
            return out;
        }
        let k = k + pe;
        // A half-precision pass runs the focusing function and the normalised product in f32
        // (the projections and the DWC stay in half): `torch.autocast` runs `pow` and `norm` in
        // f32 too, and in float16 the `1e-6` floor cubed underflows, which makes the norms'
        // and the denominator's gradients infinite.
        let dtype = v.dtype();
        let to = |t: Tensor<3>, d: DType| if t.dtype() == d { t } else { t.cast(d) };
        // Only half types go up; f32 and f64 (the gradient checks) stay as they are.
        let wide = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            other => other,
        };
        let f32 = |t: Tensor<3>| to(t, wide);
        let (q, k, v32) = (f32(q), f32(k), f32(v.clone()));
        let scale = f32(self.scale.val());
        let q = focus(q, scale.clone(), self.focusing_factor);
        // The keys' 1/sqrt(n) of `linear_attend` rides on the focusing factor.
        let k = focus_times(k, scale, self.focusing_factor, (n_keys as f64).powf(-0.5));
        let heads = self.num_heads;
        // In training on flex, one autodiff node (`fused::linear_attention`); recording needs
        // the heads apart.
        let trained = (!record)
            .then(|| crate::fused::linear_attention(heads, [&q, &k, &v32]))
            .flatten();
        let out = match trained {
            Some(out) => to(out, dtype),
            None => {
                let (q, k, v32) = (
                    split_heads(q, heads),
                    split_heads(k, heads),
                    split_heads(v32, heads),
                );
                let out = merge_heads(linear_attend_prescaled(q.clone(), k.clone(), v32.clone()));
                let out = to(out, dtype);
                explain::push(|| explain::Record {
                    kind: "focused",
                    layout,
                    key_grid,
                    windows: None,
                    maps: vec![("attention", explain::implied_linear(q, k))],
                    values: v32,
                    output: out.clone(),
                    normalised: true,
                });
                out
            }
        };
        let v = split_heads(v, heads);
        match &self.dwc {
            Some(dwc) => add_head_shared_dwc(dwc, out, v, key_grid, layout),
            None => out,
        }
    }
}

impl FocusedLinearAttention {
    /// The fused CPU kernel ([`linvit_kernels::focused`]) where it applies: f32 tensors on flex
    /// that no autodiff graph tracks, i.e. inference. It computes what the Burn-op path of
    /// [`Self::attend`] computes, in a few passes on all cores instead of ~25 mostly
    /// single-threaded ones (`tests/fast_paths.rs` holds the two together); training and every
    /// other backend run the op path. `None` where it does not apply.
    fn attend_fused(
        &self,
        q: &Tensor<3>,
        k: &Tensor<3>,
        v: &Tensor<3>,
        pe: &Tensor<3>,
        key_grid: [usize; 2],
        layout: TokenLayout,
    ) -> Option<Tensor<3>> {
        // The conv is fused where the values lie on the query grid; otherwise (spatial
        // reduction, a CLS token) it runs as Burn ops on the kernel's output.
        let conv = match &self.dwc {
            Some(conv) => {
                let bias = kernel::optional_kernel_input(conv.bias.as_ref())?;
                let fused = (layout.prefix == 0 && key_grid == layout.hw())
                    .then(|| ops::same_size_kernel(conv))
                    .flatten();
                Some((kernel::kernel_input(&conv.weight.val())?, bias, fused))
            }
            None => None,
        };
        let softplus_scale = kernel::kernel_input(&softplus(self.scale.val(), 1.0))?;
        let key_offset = kernel::kernel_input(pe)?;
        let (q_in, k_in, v_in) = (
            kernel::kernel_rows(q)?,
            kernel::kernel_rows(k)?,
            kernel::kernel_rows(v)?,
        );
        let [b, n_q, c] = q.dims();
        let kernel = FocusedAttention {
            heads: self.num_heads,
            power: self.focusing_factor,
            softplus_scale: softplus_scale.as_slice()?,
            key_offset: key_offset.as_slice()?,
            dwc: match &conv {
                Some((weight, bias, Some(kernel))) => Some(HeadSharedDwc {
                    weight: weight.as_slice()?,
                    bias: kernel::optional_slice(bias)?,
                    kernel: *kernel,
                    grid: layout.hw(),
                }),
                _ => None,
            },
        };
        let out = kernel.forward(b, q_in.rows(), k_in.rows(), v_in.rows());
        let out = Tensor::from_data(TensorData::new(out, [b, n_q, c]), &q.device());
        Some(match (&self.dwc, kernel.dwc) {
            (Some(conv), None) => add_head_shared_dwc(
                conv,
                out,
                split_heads(v.clone(), self.num_heads),
                key_grid,
                layout,
            ),
            _ => out,
        })
    }
}

/// The head-shared depthwise conv applied to values and added to the grid tokens of `out`.
/// Values are taken on the query grid: prefix tokens dropped and, after spatial reduction,
/// upsampled along the flattened token axis with 1-D linear interpolation, as upstream does
/// (not a 2-D resize).
///
/// # Shapes
/// - out `[B, prefix + N, C]`, v `[B, h, prefix + n, d]` -> `[B, prefix + N, C]`
pub fn add_head_shared_dwc(
    dwc: &Conv2d,
    out: Tensor<3>,
    v: Tensor<4>,
    key_grid: [usize; 2],
    layout: TokenLayout,
) -> Tensor<3> {
    let [_, _, n, _] = v.dims();
    let grid_keys = key_grid[0] * key_grid[1];
    let mut v = ops::narrow(v, 2, n - grid_keys, grid_keys);
    let n_out = layout.grid_tokens();
    if grid_keys != n_out {
        let m = linear_matrix(grid_keys, n_out, &v.device());
        v = resample_axis(v, m, 2);
    }
    let local = head_shared_dwc(dwc, v, layout.hw());
    if layout.prefix == 0 {
        return out + local;
    }
    let [b, _, c] = out.dims();
    let prefix = Tensor::zeros([b, layout.prefix, c], (&out.device(), out.dtype()));
    out + Tensor::cat(vec![prefix, local], 1)
}
