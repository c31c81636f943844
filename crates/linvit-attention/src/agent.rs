//! Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear
//! Attention", ECCV 2024), following `agent_transformer/models/agent_{deit,pvt,swin,cswin}.py`
//! of LeapLabTHU/Agent-Attention.
//!
//! Two softmax attentions through `m` agent tokens pooled from the queries: the agents gather
//! from all keys, then every query reads from the agents, so the cost is `O(N m)`. The flavour
//! follows the [`Projection`] and the prefix: fused `qkv` with a CLS prefix is Agent-DeiT (with
//! `ac_bias`/`ca_bias`), fused without prefix is Agent-Swin, `q`+`kv` with `sr` is Agent-PVT,
//! external `q, k, v` in stripes with LePE is Agent-CSwin.
//!
//! All resizing (7x7 bias grids to the token grid, agent pooling, v upsampling after spatial
//! reduction) uses PyTorch's semantics: bilinear with `align_corners=False`, no antialiasing,
//! adaptive-pool bins `[floor(i*in/out), ceil((i+1)*in/out))`. Deviation: called on a grid other
//! than the one it was built for, the module resizes its `ah/aw/ha/wa` biases with 1-D linear
//! interpolation instead of failing.

use crate::LayerNorm;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use linvit_kernels::focused::HeadSharedDwc;
use serde::{Deserialize, Serialize};

use crate::explain;
use crate::kernel;
use crate::ops::{
    self, adaptive_pool_matrix, bilinear_matrix, linear_matrix, merge_heads, resample_axis,
    softmax, split_heads,
};
use crate::proj::{self, MixerInput, Qkv};
use crate::{MixerShape, Projection, TokenLayout};

/// Side of the learned bias grids `an_bias`/`na_bias`, resized to the token grid at run time.
const BIAS_GRID: usize = 7;

/// Hyper-parameters of agent attention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Number of agent tokens; a perfect square (pooled to `sqrt x sqrt`). Default: 49.
    pub agent_num: usize,
    /// Kernel of the depthwise conv on v over all channels. Default: 3.
    pub dwc_kernel: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            agent_num: 49,
            dwc_kernel: 3,
        }
    }
}

/// Agent attention; fields carry the upstream state-dict names.
#[derive(Module, Debug)]
pub struct AgentAttention {
    pub qkv: Option<Linear>,
    pub q: Option<Linear>,
    pub kv: Option<Linear>,
    pub sr: Option<Conv2d>,
    pub norm: Option<LayerNorm>,
    pub proj: Option<Linear>,
    /// Depthwise conv over all channels of v (absent in CSwin).
    pub dwc: Option<Conv2d>,
    /// LePE depthwise 3x3 per window (CSwin only).
    pub get_v: Option<Conv2d>,
    /// `[h, m, 7, 7]`: agent -> key bias grid.
    pub an_bias: Param<Tensor<4>>,
    /// `[h, m, 7, 7]`: query -> agent bias grid.
    pub na_bias: Param<Tensor<4>>,
    /// `[1, h, m, kh, 1]` and `[1, h, m, 1, kw]`: agent -> key row/column biases.
    pub ah_bias: Param<Tensor<5>>,
    pub aw_bias: Param<Tensor<5>>,
    /// `[1, h, qh, 1, m]` and `[1, h, 1, qw, m]`: query row/column -> agent biases.
    pub ha_bias: Param<Tensor<5>>,
    pub wa_bias: Param<Tensor<5>>,
    /// `[1, h, m, 1]`: agent -> CLS key bias (with a prefix token only).
    pub ac_bias: Option<Param<Tensor<4>>>,
    /// `[1, h, 1, m]`: CLS query -> agent bias (with a prefix token only).
    pub ca_bias: Option<Param<Tensor<4>>>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub agent_num: usize,
    #[module(skip)]
    pub projection: Projection,
}

impl AgentConfig {
    pub fn init(&self, shape: &MixerShape, device: &Device) -> AgentAttention {
        let p = proj::init(shape, device);
        let (h, m) = (shape.num_heads, self.agent_num);
        let external = matches!(shape.projection, Projection::External { .. });
        // Biases live on the attention window (a stripe in CSwin) and the key grid inside it.
        let [qh, qw] = shape.projection.window(shape.grid);
        let [kh, kw] = shape.projection.key_grid([qh, qw]);
        let prefix = shape.prefix > 0;
        AgentAttention {
            qkv: p.qkv,
            q: p.q,
            kv: p.kv,
            sr: p.sr,
            norm: p.norm,
            proj: p.proj,
            dwc: (!external).then(|| proj::depthwise(shape.dim, self.dwc_kernel, device)),
            get_v: external.then(|| proj::depthwise(shape.dim, 3, device)),
            an_bias: bias_init([h, m, BIAS_GRID, BIAS_GRID], device),
            na_bias: bias_init([h, m, BIAS_GRID, BIAS_GRID], device),
            ah_bias: bias_init([1, h, m, kh, 1], device),
            aw_bias: bias_init([1, h, m, 1, kw], device),
            ha_bias: bias_init([1, h, qh, 1, m], device),
            wa_bias: bias_init([1, h, 1, qw, m], device),
            ac_bias: prefix.then(|| bias_init([1, h, m, 1], device)),
            ca_bias: prefix.then(|| bias_init([1, h, 1, m], device)),
            num_heads: h,
            agent_num: m,
            projection: shape.projection,
        }
    }
}

/// Upstream draws every position bias from `trunc_normal_(std=0.02)`, cut at +-2 (not at two
/// standard deviations), which is a plain normal in practice.
pub(crate) fn bias_init<const D: usize>(dims: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::random(
        dims,
        Distribution::Normal(0.0, 0.02),
        device,
    ))
}

/// Resizes axis `dim` of a bias to `len` with 1-D linear interpolation when it differs.
fn fit_axis<const D: usize>(bias: Tensor<D>, dim: usize, len: usize) -> Tensor<D> {
    let have = bias.dims()[dim];
    if have == len {
        return bias;
    }
    let m = linear_matrix(have, len, &bias.device());
    resample_axis(bias, m, dim)
}

proj::impl_projected!(AgentAttention);

impl AgentAttention {
    /// Mixes tokens, or for a block `x + attn(norm(x))` (see [`MixerInput`]).
    ///
    /// # Shapes
    /// - x: `[B, prefix + H*W, C]` -> `[B, prefix + H*W, C]`
    pub fn forward<'a>(&self, x: impl Into<MixerInput<'a>>, layout: TokenLayout) -> Tensor<3> {
        proj::forward(self, x, layout, |qkv, layout| self.attend(qkv, layout))
    }

    /// The CSwin flavour: `q, k, v` each `[B, H*W, C]`; attention per window (the whole map
    /// or stripes), LePE added per window, no `proj`.
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

    /// `[1, h, m, prefix + n]`: the agents' bias over the keys.
    fn agent_to_key_bias(&self, key_grid: [usize; 2], prefix: usize) -> Tensor<4> {
        let an = self.an_bias.val();
        let [h, m, gh, gw] = an.dims();
        let n = key_grid[0] * key_grid[1];
        let resize = bilinear_matrix([gh, gw], key_grid, &an.device()).cast(an.dtype()); // [n, 49]
        let grid = an
            .reshape([h * m, gh * gw])
            .matmul(resize.transpose())
            .reshape([1, h, m, n]);
        let rows = fit_axis(self.ah_bias.val(), 3, key_grid[0]);
        let cols = fit_axis(self.aw_bias.val(), 4, key_grid[1]);
        let bias = grid + (rows + cols).reshape([1, h, m, n]);
        match (&self.ac_bias, prefix) {
            (Some(ac), p) if p > 0 => Tensor::cat(vec![ac.val(), bias], 3),
            _ => bias,
        }
    }

    /// `[1, h, prefix + N, m]`: the queries' bias over the agents.
    fn query_to_agent_bias(&self, grid: [usize; 2], prefix: usize) -> Tensor<4> {
        let na = self.na_bias.val();
        let [h, m, gh, gw] = na.dims();
        let n = grid[0] * grid[1];
        let resize = bilinear_matrix([gh, gw], grid, &na.device()).cast(na.dtype()); // [N, 49]
        let spatial = resize
            .unsqueeze::<3>()
            .matmul(na.reshape([h, m, gh * gw]).swap_dims(1, 2)) // [h, N, m]
            .unsqueeze::<4>();
        let rows = fit_axis(self.ha_bias.val(), 2, grid[0]);
        let cols = fit_axis(self.wa_bias.val(), 3, grid[1]);
        let bias = spatial + (rows + cols).reshape([1, h, n, m]);
        match (&self.ca_bias, prefix) {
            (Some(ca), p) if p > 0 => Tensor::cat(vec![ca.val(), bias], 2),
            _ => bias,
        }
    }

    /// `[m, N]`: each agent as the average of its bin of the grid queries `q` (adaptive
    /// average pooling to `sqrt(m) x sqrt(m)` written as a matrix), in `q`'s dtype.
    fn pool(&self, grid: [usize; 2], q: &Tensor<3>) -> Tensor<2> {
        let p = (self.agent_num as f64).sqrt().round() as usize;
        adaptive_pool_matrix(grid, [p, p], &q.device()).cast(q.dtype())
    }

    /// The score scale `head_dim^-0.5` for `c` channels.
    fn scale(&self, c: usize) -> f64 {
        ((c / self.num_heads) as f64).powf(-0.5)
    }

    pub(crate) fn attend(&self, qkv: Qkv, layout: TokenLayout) -> Tensor<3> {
        let Qkv { q, k, v, key_grid } = qkv;
        if !explain::recording() {
            if let Some(out) = self.attend_fused([&q, &k, &v], key_grid, layout) {
                return out;
            }
            if let Some(out) = self.attend_tracked([&q, &k, &v], key_grid, layout) {
                return self.add_dwc(out, v, key_grid, layout);
            }
        }
        let heads = self.num_heads;
        let [_, n_q, c] = q.dims();
        let prefix = layout.prefix;
        let grid = layout.hw();
        let scale = self.scale(c);

        let grid_q = q.clone().narrow(1, prefix, n_q - prefix);
        let pool = self.pool(grid, &q); // [m, N]
        let agents = pool.unsqueeze::<3>().matmul(grid_q); // [b, m, c]

        let q = split_heads(q, heads);
        let k = split_heads(k, heads);
        let v_heads = split_heads(v.clone(), heads);
        let agents = split_heads(agents, heads); // [b, h, m, d]

        let gather = softmax(
            agents.clone().mul_scalar(scale).matmul(k.swap_dims(2, 3))
                + self.agent_to_key_bias(key_grid, prefix),
            3,
        );
        let agent_v = gather.clone().matmul(v_heads.clone()); // [b, h, m, d]
        let broadcast = softmax(
            q.mul_scalar(scale).matmul(agents.swap_dims(2, 3))
                + self.query_to_agent_bias(grid, prefix),
            3,
        );
        let out = merge_heads(broadcast.clone().matmul(agent_v)); // [b, N, c]
        explain::push(|| explain::Record {
            kind: "agent",
            layout,
            key_grid,
            windows: None,
            maps: vec![
                ("attention", broadcast.clone().matmul(gather.clone())),
                ("query_to_agent", broadcast),
                ("agent_to_key", gather),
            ],
            values: v_heads,
            output: out.clone(),
            normalised: true,
        });

        self.add_dwc(out, v, key_grid, layout)
    }

    /// `out` plus the depthwise conv of the values on the query grid, added to the grid tokens
    /// (the values upsampled bilinearly first after spatial reduction, as upstream does).
    fn add_dwc(
        &self,
        out: Tensor<3>,
        v: Tensor<3>,
        key_grid: [usize; 2],
        layout: TokenLayout,
    ) -> Tensor<3> {
        let Some(dwc) = &self.dwc else {
            return out;
        };
        let ([b, _, c], [_, n_k, _]) = (out.dims(), v.dims());
        let (grid, prefix) = (layout.hw(), layout.prefix);
        let grid_keys = key_grid[0] * key_grid[1];
        let mut grid_v = ops::narrow(v, 1, n_k - grid_keys, grid_keys);
        if key_grid != grid {
            let up = bilinear_matrix(key_grid, grid, &grid_v.device());
            grid_v = resample_axis(grid_v, up, 1);
        }
        let local = ops::conv2d_tokens(dwc, grid_v, grid);
        if prefix == 0 {
            out + local
        } else {
            let zeros = Tensor::zeros([b, prefix, c], (&out.device(), out.dtype()));
            out + Tensor::cat(vec![zeros, local], 1)
        }
    }

    /// In training on flex, the two softmax attentions through the agents as one autodiff node
    /// with its own backward (`fused::agent`); the conv is added after it by the caller (its
    /// own node). `None` where the node does not apply.
    fn attend_tracked(
        &self,
        qkv: [&Tensor<3>; 3],
        key_grid: [usize; 2],
        layout: TokenLayout,
    ) -> Option<Tensor<3>> {
        let q = qkv[0];
        if !crate::fused::applies(q) {
            return None;
        }
        let (grid, prefix) = (layout.hw(), layout.prefix);
        let core = crate::fused::AgentCore {
            heads: self.num_heads,
            scale: self.scale(q.dims()[2]) as f32,
            prefix,
            pool: self.pool(grid, q),
        };
        let biases = [
            &self.agent_to_key_bias(key_grid, prefix),
            &self.query_to_agent_bias(grid, prefix),
        ];
        crate::fused::agent(&core, qkv, biases)
    }

    /// The fused CPU kernel ([`linvit_kernels::agent`]) where it applies: f32 tensors on flex
    /// that no autodiff graph tracks, i.e. inference. It computes what the Burn-op path of
    /// [`Self::attend`] computes, one image at a time in cache instead of a score tensor and a
    /// layout copy per step (`tests/fast_paths.rs` holds the two together); the conv is fused
    /// where the values lie on the query grid, and runs as Burn ops on the kernel's output after
    /// spatial reduction. `None` where the kernel does not apply.
    fn attend_fused(
        &self,
        [q, k, v]: [&Tensor<3>; 3],
        key_grid: [usize; 2],
        layout: TokenLayout,
    ) -> Option<Tensor<3>> {
        if !kernel::kernel_applies(q) {
            return None;
        }
        let (grid, prefix) = (layout.hw(), layout.prefix);
        let conv = match &self.dwc {
            Some(conv) => {
                let bias = kernel::optional_kernel_input(conv.bias.as_ref())?;
                let fused = (key_grid == grid)
                    .then(|| ops::same_size_kernel(conv))
                    .flatten();
                Some((kernel::kernel_input(&conv.weight.val())?, bias, fused))
            }
            None => None,
        };
        let pool = kernel::kernel_input(&self.pool(grid, q))?;
        let agent_bias = kernel::kernel_input(&self.agent_to_key_bias(key_grid, prefix))?;
        let query_bias = kernel::kernel_input(&self.query_to_agent_bias(grid, prefix))?;
        let (q_in, k_in, v_in) = (
            kernel::kernel_rows(q)?,
            kernel::kernel_rows(k)?,
            kernel::kernel_rows(v)?,
        );
        let [b, n_q, c] = q.dims();
        let kernel = linvit_kernels::agent::AgentAttention {
            heads: self.num_heads,
            scale: self.scale(c) as f32,
            prefix,
            pool: pool.as_slice()?,
            agent_bias: agent_bias.as_slice()?,
            query_bias: query_bias.as_slice()?,
            dwc: match &conv {
                Some((weight, bias, Some(kernel))) => Some(HeadSharedDwc {
                    weight: weight.as_slice()?,
                    bias: kernel::optional_slice(bias)?,
                    kernel: *kernel,
                    grid,
                }),
                _ => None,
            },
        };
        let out = kernel.forward(b, q_in.rows(), k_in.rows(), v_in.rows());
        let out = Tensor::from_data(TensorData::new(out, [b, n_q, c]), &q.device());
        Some(match kernel.dwc {
            Some(_) => out,
            None => self.add_dwc(out, v.clone(), key_grid, layout),
        })
    }
}
