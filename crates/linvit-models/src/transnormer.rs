//! TransNormerLLM as a causal language model (Qin et al., 2023), following the released Hugging
//! Face code (`modeling_transnormer.py`: `GLU`, `TransnormerDecoderLayer`, `TransnormerModel`,
//! `TransnormerForCausalLM`). Module paths equal the upstream state-dict keys
//! (`model.embed_tokens.weight`, `model.layers.0.token_mixer.qkvu_proj.weight`, ...), so its
//! checkpoints load with an empty rename map.
//!
//! `h = sqrt(D) * embed(ids)`; per layer `h += token_mixer(SRMSNorm(h))`,
//! `h += channel_mixer(SRMSNorm(h))`; `logits = lm_head(SRMSNorm(h))`. Layer `l` of `L` decays
//! with the ALiBi slopes times `1 - l/(L-1) + 1e-5`. `lm_head` shares the embedding's weight
//! when `tie_word_embeddings` (upstream's default). The padding row of the embedding is read
//! normally but gets no gradient from the lookup, as `nn.Embedding(padding_idx=...)`.
//!
//! Generation runs a prefill in the blocked form, then the recurrent form one token at a time;
//! the per-layer state is `[B, h, dk, dh]` whatever the length, so decoding memory is constant.

use crate::model_error;
use crate::ModelError;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};
use linvit_attention::lightning::{CausalForm, Decay};
use linvit_attention::norm::{
    srms_norm, transnormer_linear, MixerState, NormLinearAttention, NormLinearAttentionConfig,
    INIT_STD,
};
use serde::{Deserialize, Serialize};

/// A TransNormer language model's shape. Field names follow `TransnormerConfig` where they
/// mean the same thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransnormerConfig {
    /// Token ids `0..vocab_size`. Default: 256 (bytes).
    pub vocab_size: usize,
    /// Model width D (`decoder_embed_dim`). Default: 128.
    pub embed_dim: usize,
    /// Decoder layers (`decoder_layers`). Default: 4.
    pub layers: usize,
    /// Heads (`decoder_attention_heads`). Default: 4.
    pub heads: usize,
    /// Width of q, k, v, u in the token mixer. Default: 128.
    pub hidden_dim: usize,
    /// Inner width of the SGLU channel mixer. Default: 256.
    pub glu_dim: usize,
    /// LRPE per layer (`linear_use_lrpe_list`); missing entries are false. Default: first layer.
    pub lrpe: Vec<bool>,
    /// Biases on every Linear. Default: false.
    pub bias: bool,
    /// Multiply embeddings by `sqrt(D)` (upstream's `no_scale_embedding = False`). Default: true.
    pub scale_embedding: bool,
    /// The padding id whose embedding row the lookup never updates. Default: 0.
    pub pad_token_id: usize,
    /// `lm_head` reuses the embedding weight. Default: true.
    pub tie_word_embeddings: bool,
    /// How training computes the causal attention. Default: blocked, 64-token blocks.
    pub form: CausalForm,
    /// Standard deviation of every initial weight (upstream's `init_std`). Default: 0.02.
    pub init_std: f64,
}

impl Default for TransnormerConfig {
    fn default() -> Self {
        Self {
            vocab_size: 256,
            embed_dim: 128,
            layers: 4,
            heads: 4,
            hidden_dim: 128,
            glu_dim: 256,
            lrpe: vec![true],
            bias: false,
            scale_embedding: true,
            pad_token_id: 0,
            tie_word_embeddings: true,
            form: CausalForm::default(),
            init_std: INIT_STD,
        }
    }
}

impl TransnormerConfig {
    /// Checks what upstream would crash on or silently mis-build.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("embed_dim", self.embed_dim),
            ("layers", self.layers),
            ("heads", self.heads),
            ("hidden_dim", self.hidden_dim),
            ("glu_dim", self.glu_dim),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(model_error!("{key} must be positive"));
        }
        if !self.hidden_dim.is_multiple_of(self.heads) || !self.embed_dim.is_multiple_of(self.heads)
        {
            return Err(model_error!(
                "embed_dim {} and hidden_dim {} must be divisible by heads {}",
                self.embed_dim,
                self.hidden_dim,
                self.heads
            ));
        }
        if self.lrpe.iter().any(|&on| on) && self.hidden_dim != self.embed_dim {
            return Err(model_error!(
                "LRPE needs hidden_dim == embed_dim (upstream sizes it from embed_dim), got {} and {}",
                self.hidden_dim, self.embed_dim
            ));
        }
        if self.lrpe.len() > self.layers {
            return Err(model_error!(
                "lrpe lists {} layers; the model has {}",
                self.lrpe.len(),
                self.layers
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(model_error!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id,
                self.vocab_size
            ));
        }
        if let CausalForm::Blocked { block_size: 0 } = self.form {
            return Err("form.block_size must be positive".into());
        }
        Ok(())
    }

    /// The config an upstream `TransnormerConfig` (its keyword arguments as JSON) describes.
    /// Errors name the key; activations and norms other than the released ones are refused.
    pub fn from_upstream(config: &serde_json::Value) -> Result<Self, ModelError> {
        let get = |key: &str| config.get(key);
        let usize_of = |key: &str, default: usize| -> Result<usize, ModelError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .map(|v| v as usize)
                    .ok_or_else(|| model_error!("config.{key} is not a non-negative integer")),
            }
        };
        let bool_of = |key: &str, default: bool| -> Result<bool, ModelError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| model_error!("config.{key} is not a boolean")),
            }
        };
        let text = |key: &str, default: &str| -> String {
            get(key)
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        let act = text("linear_act_fun", "silu");
        if !["silu", "swish"].contains(&act.as_str()) {
            return Err(model_error!(
                "config.linear_act_fun {act:?} is not supported (silu/swish)"
            ));
        }
        let norm = text("norm_type", "simplermsnorm");
        if norm != "simplermsnorm" {
            return Err(model_error!(
                "config.norm_type {norm:?} is not supported (simplermsnorm)"
            ));
        }
        let layers = usize_of("decoder_layers", 24)?;
        let lrpe = match get("linear_use_lrpe_list") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .ok_or("config.linear_use_lrpe_list is not a list")?
                .iter()
                .map(|x| x.as_u64().map(|x| x != 0).or_else(|| x.as_bool()))
                .collect::<Option<Vec<bool>>>()
                .ok_or("config.linear_use_lrpe_list holds a non-integer")?,
        };
        let embed_dim = usize_of("decoder_embed_dim", 1024)?;
        Ok(Self {
            vocab_size: usize_of("vocab_size", 64000)?,
            embed_dim,
            layers,
            heads: usize_of("decoder_attention_heads", 8)?,
            hidden_dim: usize_of("hidden_dim", embed_dim)?,
            glu_dim: usize_of("glu_dim", embed_dim)?,
            lrpe,
            bias: bool_of("bias", false)?,
            scale_embedding: !bool_of("no_scale_embedding", false)?,
            pad_token_id: usize_of("pad_token_id", 0)?,
            tie_word_embeddings: bool_of("tie_word_embeddings", true)?,
            form: CausalForm::default(),
            init_std: match get("init_std") {
                None => INIT_STD,
                Some(v) => v.as_f64().ok_or("config.init_std is not a number")?,
            },
        })
    }

    /// The token mixer of layer `layer`.
    pub fn mixer(&self, layer: usize) -> NormLinearAttentionConfig {
        NormLinearAttentionConfig {
            embed_dim: self.embed_dim,
            hidden_dim: self.hidden_dim,
            num_heads: self.heads,
            use_lrpe: self.lrpe.get(layer).copied().unwrap_or(false),
            bias: self.bias,
            init_std: self.init_std,
        }
    }

    /// Builds the model; call [`TransnormerConfig::validate`] first on user input.
    pub fn init(&self, device: &Device) -> TransnormerForCausalLM {
        let layers = (0..self.layers)
            .map(|l| TransnormerDecoderLayer {
                token_mixer: self
                    .mixer(l)
                    .init(Decay::transnormer(self.heads, l, self.layers), device),
                channel_mixer: Glu::new(
                    self.embed_dim,
                    self.glu_dim,
                    self.bias,
                    self.init_std,
                    device,
                ),
            })
            .collect();
        let scale = if self.scale_embedding {
            (self.embed_dim as f64).sqrt()
        } else {
            1.0
        };
        TransnormerForCausalLM {
            model: TransnormerModel {
                embed_tokens: self.embedding(device),
                layers,
                embed_scale: scale,
                pad_token_id: self.pad_token_id,
            },
            lm_head: (!self.tie_word_embeddings).then(|| {
                transnormer_linear(
                    self.embed_dim,
                    self.vocab_size,
                    false,
                    self.init_std,
                    device,
                )
            }),
            form: self.form,
        }
    }

    /// N(0, 0.02) rows with the padding row zeroed, as upstream's `_init_weights`.
    fn embedding(&self, device: &Device) -> Embedding {
        let mut embedding = EmbeddingConfig::new(self.vocab_size, self.embed_dim)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: self.init_std,
            })
            .init(device);
        // Zeroed on the host: a tensor edited on the autodiff device is not a graph leaf.
        let mut weight = embedding
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("float weights");
        let d = self.embed_dim;
        weight[self.pad_token_id * d..(self.pad_token_id + 1) * d].fill(0.0);
        let weight = Tensor::from_data(TensorData::new(weight, [self.vocab_size, d]), device);
        embedding.weight = Param::from_tensor(weight);
        embedding
    }

    /// Parameters, counting a tied weight once.
    pub fn num_params(&self) -> usize {
        let (d, hd, g, v) = (
            self.embed_dim,
            self.hidden_dim,
            self.glu_dim,
            self.vocab_size,
        );
        let bias = |n: usize| if self.bias { n } else { 0 };
        let mixer = d * 4 * hd + bias(4 * hd) + hd * d + bias(d);
        let glu = 2 * (d * g + bias(g)) + g * d + bias(d);
        let lrpe = (0..self.layers)
            .filter(|&l| self.lrpe.get(l).copied().unwrap_or(false))
            .count()
            * d;
        let head = if self.tie_word_embeddings { 0 } else { d * v };
        v * d + self.layers * (mixer + glu) + lrpe + head
    }
}

/// SGLU channel mixer: `l3(l1(x) * l2(x))`, no activation.
#[derive(Module, Debug)]
pub struct Glu {
    pub l1: Linear,
    pub l2: Linear,
    pub l3: Linear,
}

impl Glu {
    /// SGLU with N(0, `std`) weights (upstream: `init_std`, 0.02).
    pub fn new(dim: usize, inner: usize, bias: bool, std: f64, device: &Device) -> Self {
        let linear = |i, o| transnormer_linear(i, o, bias, std, device);
        Self {
            l1: linear(dim, inner),
            l2: linear(dim, inner),
            l3: linear(inner, dim),
        }
    }

    /// # Shapes
    /// - x: `[..., D]` -> `[..., D]` (any number of leading dimensions, as upstream)
    pub fn forward<const R: usize>(&self, x: Tensor<R>) -> Tensor<R> {
        self.l3
            .forward(self.l1.forward(x.clone()) * self.l2.forward(x))
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct TransnormerDecoderLayer {
    pub token_mixer: NormLinearAttention,
    pub channel_mixer: Glu,
}

impl TransnormerDecoderLayer {
    /// Continues a sequence from `state` (none: its start).
    ///
    /// # Shapes
    /// - x: `[B, n, D]` -> `[B, n, D]`
    pub fn forward_from(
        &self,
        x: Tensor<3>,
        state: Option<MixerState>,
        form: CausalForm,
    ) -> (Tensor<3>, MixerState) {
        let (mixed, state) = self
            .token_mixer
            .forward_from(srms_norm(x.clone()), state, form);
        let x = x + mixed;
        let x = x.clone() + self.channel_mixer.forward(srms_norm(x));
        (x, state)
    }
}

/// Embedding and decoder layers (upstream `TransnormerModel`).
#[derive(Module, Debug)]
pub struct TransnormerModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<TransnormerDecoderLayer>,
    #[module(skip)]
    pub embed_scale: f64,
    #[module(skip)]
    pub pad_token_id: usize,
}

impl TransnormerModel {
    /// Scaled embeddings; the padding row takes no gradient from the lookup.
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let keep = ids
            .clone()
            .not_equal_elem(self.pad_token_id as i64)
            .float()
            .unsqueeze_dim::<3>(2); // [B, n, 1]
        let x = self.embed_tokens.forward(ids);
        let x = x.clone() * keep.clone() + x.detach() * keep.neg().add_scalar(1.0);
        x.mul_scalar(self.embed_scale)
    }
}

/// Per-layer states of a sequence being decoded.
pub type DecodeState = Vec<MixerState>;

/// The causal language model (upstream `TransnormerForCausalLM`).
#[derive(Module, Debug)]
pub struct TransnormerForCausalLM {
    pub model: TransnormerModel,
    /// Untied output projection; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    pub form: CausalForm,
}

impl TransnormerForCausalLM {
    /// Logits for sequences starting at position 0, in the configured training form.
    ///
    /// # Shapes
    /// - ids: `[B, n]` -> `[B, n, vocab]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward_from(ids, None, self.form).0
    }

    /// Logits for the next tokens of sequences at `state` (none: their start) in `form`, and
    /// the state after them. Prefill with the blocked form, then feed one token at a time with
    /// [`CausalForm::Recurrent`].
    ///
    /// # Shapes
    /// - ids: `[B, n]` -> `[B, n, vocab]`
    pub fn forward_from(
        &self,
        ids: Tensor<2, Int>,
        state: Option<DecodeState>,
        form: CausalForm,
    ) -> (Tensor<3>, DecodeState) {
        let mut x = self.model.embed(ids);
        let mut states = state.map(|s| s.into_iter().map(Some).collect::<Vec<_>>());
        let mut next = Vec::with_capacity(self.model.layers.len());
        for (l, layer) in self.model.layers.iter().enumerate() {
            let previous = states
                .as_mut()
                .and_then(|s| s.get_mut(l))
                .and_then(Option::take);
            let (y, s) = layer.forward_from(x, previous, form);
            x = y;
            next.push(s);
        }
        (self.head(srms_norm(x)), next)
    }

    fn head(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => {
                let [b, n, d] = x.dims();
                let weight = self.model.embed_tokens.weight.val(); // [vocab, D]
                let vocab = weight.dims()[0];
                x.reshape([b * n, d])
                    .matmul(weight.transpose())
                    .reshape([b, n, vocab])
            }
        }
    }

    /// Upstream keys this model does not take: the tied `lm_head.weight` (the same tensor as
    /// `model.embed_tokens.weight` in upstream state dicts).
    pub fn derived_keys(&self) -> Vec<String> {
        match self.lm_head {
            None => vec!["lm_head.weight".into()],
            Some(_) => Vec::new(),
        }
    }
}
