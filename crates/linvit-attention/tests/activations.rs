//! GELU's gradient is the erf form's exact derivative on every backend, as PyTorch's
//! `nn.GELU()` computes it. Burn's fusion layer (wgpu, CUDA, remote) differentiates the tanh
//! approximation instead; `linvit_attention::ops::gelu` routes around it. The reference is flex's
//! own GELU (`Path::Ops`), whose derivative is the exact `Phi(x) + x phi(x)`.

mod common;

use burn::tensor::activation;
use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use linvit_attention::ops::{gelu, gelu_written_out};

const N: usize = 4001;

/// Output and gradient of `sum(f(x) * g)` for x in [-6, 6] and a fixed cotangent.
fn run(f: fn(Tensor<1>) -> Tensor<1>, device: &Device) -> (Vec<f32>, Vec<f32>) {
    let ad = device.clone().autodiff();
    let xs: Vec<f32> = (0..N)
        .map(|i| -6.0 + 12.0 * i as f32 / (N - 1) as f32)
        .collect();
    let gs: Vec<f32> = (0..N).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect();
    let x = Tensor::<1>::from_data(TensorData::new(xs, [N]), &ad).require_grad();
    let g = Tensor::<1>::from_data(TensorData::new(gs, [N]), &ad);
    let y = f(x.clone());
    let grads = (y.clone() * g).sum().backward();
    let dx = x.grad(&grads).expect("x has a gradient");
    let vec = |t: Tensor<1>| {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    };
    (vec(y), vec(dx))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

#[test]
fn gelu_written_out_has_the_fused_kernels_values_and_gradient_on_flex() {
    let flex = Device::flex();
    let (y, dy) = run(activation::gelu, &flex);
    let (y2, dy2) = run(gelu_written_out, &flex);
    let (y_ours, dy_ours) = run(gelu, &flex);
    println!(
        "flex: written-out GELU vs fused: values {:.1e}, gradients {:.1e}",
        max_diff(&y, &y2),
        max_diff(&dy, &dy2)
    );
    assert!(max_diff(&y, &y2) < 2e-6 && max_diff(&dy, &dy2) < 2e-6);
    // On flex `gelu` is a node of our own (a vectorised erf, so within a few ulp of flex's, not
    // bit for bit); on the op path it is flex's GELU itself.
    println!(
        "flex: linvit gelu vs flex's: values {:.1e}, gradients {:.1e}",
        max_diff(&y, &y_ours),
        max_diff(&dy, &dy_ours)
    );
    assert!(max_diff(&y, &y_ours) < 3e-6 && max_diff(&dy, &dy_ours) < 3e-6);
    assert_ne!(dy_ours, dy);
    let (y_ops, dy_ops) = linvit_attention::Path::Ops.run(|| run(gelu, &flex));
    assert_eq!((y_ops, dy_ops), (y, dy));
}

#[test]
fn gelu_gradient_on_wgpu_is_the_exact_derivative() {
    if !common::vulkan_driver_present() {
        eprintln!(
            "SKIPPED: the wgpu GELU check, no Vulkan driver (apt-get install mesa-vulkan-drivers)"
        );
        return;
    }
    let (y, dy) = run(activation::gelu, &Device::flex());
    let wgpu = Device::wgpu(DeviceKind::DefaultDevice);
    let (y_ours, dy_ours) = run(gelu, &wgpu);
    let (_, dy_burn) = run(activation::gelu, &wgpu);
    println!(
        "wgpu: linvit gelu vs exact: values {:.1e}, gradients {:.1e}; burn's gelu gradients {:.1e}",
        max_diff(&y, &y_ours),
        max_diff(&dy, &dy_ours),
        max_diff(&dy, &dy_burn)
    );
    assert!(max_diff(&y, &y_ours) < 1e-5 && max_diff(&dy, &dy_ours) < 1e-5);
}

#[test]
fn gelu_in_inference_on_flex_is_the_vectorised_kernel_within_a_few_ulp_of_flexs() {
    let flex = Device::flex();
    let xs: Vec<f32> = (0..N)
        .map(|i| -6.0 + 12.0 * i as f32 / (N - 1) as f32)
        .collect();
    let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [N]), &flex);
    let vec = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().unwrap();
    let ours = vec(gelu(x.clone()));
    let burns = vec(activation::gelu(x));
    println!(
        "flex inference: linvit gelu vs flex's: {:.1e}",
        max_diff(&ours, &burns)
    );
    // |gelu| reaches 6 here, where one f32 ulp is 4.8e-7: a few ulp apart at most.
    assert!(max_diff(&ours, &burns) < 3e-6);
    // It is the kernel, not flex's GELU, that ran (a different erf, so not bit-identical).
    assert_eq!(ours, linvit_kernels::activation::gelu(&xs));
    assert_ne!(ours, burns);
}
