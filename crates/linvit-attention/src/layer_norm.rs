//! `nn.LayerNorm` over the last dim, with its epsilon readable.
//!
//! Why not `burn::nn::LayerNorm`: Burn 0.22 keeps its epsilon private, and the fused kernels
//! (inference and the training nodes of `fused.rs`) need it. This module has the same fields,
//! so the same parameter paths (`gamma`, `beta`), the same record, the same container name for
//! burn-store's PyTorch adapter (`weight`/`bias` -> `gamma`/`beta`), and a forward that calls
//! the same tensor op as Burn's.

use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::module::layer_norm;
use burn::tensor::{DType, Device, FloatDType, Tensor};

#[derive(Module, Debug)]
#[module(custom_display)]
pub struct LayerNorm {
    /// The scale (PyTorch's `weight`).
    pub gamma: Param<Tensor<1>>,
    /// The shift (PyTorch's `bias`).
    pub beta: Option<Param<Tensor<1>>>,
    epsilon: f64,
}

impl LayerNorm {
    /// `nn.LayerNorm(dim, eps)`: ones and zeros, with a bias.
    pub fn new(dim: usize, epsilon: f64, device: &Device) -> Self {
        LayerNorm {
            gamma: Param::from_tensor(Tensor::ones([dim], device)),
            beta: Some(Param::from_tensor(Tensor::zeros([dim], device))),
            epsilon,
        }
    }

    /// The epsilon added to the variance.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Burn's layers, op by op (`ops::layer_norm` runs the fused kernels where they apply).
    /// Half precision is normalised in f32, as Burn and PyTorch do: `f16` overflows on the
    /// squares.
    ///
    /// # Shapes
    /// - input: `[..., dim]` -> same
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let (gamma, beta) = (self.gamma.val(), self.beta.as_ref().map(Param::val));
        let dtype = input.dtype();
        if dtype != DType::F16 {
            return layer_norm(input, gamma, beta, self.epsilon);
        }
        let wide = FloatDType::F32;
        let beta = beta.map(|b| b.cast(wide));
        layer_norm(input.cast(wide), gamma.cast(wide), beta, self.epsilon).cast(FloatDType::F16)
    }
}

impl ModuleDisplay for LayerNorm {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let [dim] = self.gamma.shape().dims();
        content
            .add("d_model", &dim)
            .add("epsilon", &self.epsilon)
            .add("bias", &self.beta.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn matches_burns_layer_norm() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 5, 7], Distribution::Normal(0.5, 2.0), &device);
        let ours = LayerNorm::new(7, 1e-6, &device);
        let burns = LayerNormConfig::new(7).with_epsilon(1e-6).init(&device);
        assert_eq!(ours.epsilon(), 1e-6);
        ours.forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&burns.forward(x).into_data(), Tolerance::absolute(1e-6));
    }
}
