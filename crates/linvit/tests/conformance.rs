//! The reference cases from the authors' PyTorch code, run through the same function
//! `linvit verify` uses: every attention and model case must pass on flex, and every attention
//! case on wgpu where a Vulkan driver is installed (CI installs Mesa's lavapipe). Without the cases (no
//! `LINVIT_REFERENCE_DIR`, no `../shared`), the tests say so and check nothing else.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, DeviceKind};
use linvit::reference::{discover, read_header, reference_root};
use linvit::verify::{verify_case, Status};

fn cases_of_kind(kind: &str, at_least: usize) -> Option<Vec<PathBuf>> {
    let Some(root) = reference_root() else {
        eprintln!(
            "SKIPPED: conformance cases not found (set LINVIT_REFERENCE_DIR to the folder holding \
             reference/ and reference-lm/, or place shared/ beside the repository)"
        );
        return None;
    };
    let cases: Vec<PathBuf> = discover(&root.join("reference"))
        .expect("the reference folder holds cases")
        .into_iter()
        .filter(|dir| read_header(dir).map(|h| h.kind == kind).unwrap_or(true))
        .collect();
    assert!(
        cases.len() >= at_least,
        "expected at least {at_least} {kind} cases, found {}",
        cases.len()
    );
    Some(cases)
}

/// Runs every case and asserts each passes; with `fused`, also that each case's forwards
/// recorded fused autodiff nodes (`Some(true)`) or none (`Some(false)`).
fn run_all(cases: &[PathBuf], device: &Device, backend: &str, fused: Option<bool>) {
    let mut failures = Vec::new();
    for dir in cases {
        let report = verify_case(dir, device);
        if let Some(fused) = fused {
            assert_eq!(
                report.fused_nodes > 0,
                fused,
                "{}: {} fused nodes",
                report.case,
                report.fused_nodes
            );
        }
        eprintln!(
            "{backend:>5} {:<28} output {:.4} gradient {:.4} ({}) {:?} {:.1}s",
            report.case,
            report.output_ratio.unwrap_or(f64::NAN),
            report.grad_ratio.unwrap_or(f64::NAN),
            report.worst_grad.as_deref().unwrap_or("-"),
            report.status,
            report.seconds
        );
        if report.status != Status::Pass {
            failures.push(format!("{}: {:?}", report.case, report.status));
        }
    }
    eprintln!(
        "{backend}: {} of {} cases passed",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "failing cases on {backend}:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_attention_case_matches_the_authors_code_on_flex() {
    if let Some(cases) = cases_of_kind("attention", 12) {
        run_all(&cases, &Device::flex(), "flex", Some(true));
    }
}

#[test]
fn every_model_case_matches_the_authors_code_on_flex() {
    if let Some(cases) = cases_of_kind("model", 10) {
        run_all(&cases, &Device::flex(), "flex", Some(true));
    }
}

/// The same cases on Burn's ops throughout (`Path::Ops`): the two tests above run the fused
/// kernels and the fused autodiff nodes (`Path::Auto`, `linvit verify`'s default), this one
/// the reference they stand in for, so both agree with the authors' code.
#[test]
fn every_model_case_matches_the_authors_code_on_flex_through_burns_ops() {
    if let Some(cases) = cases_of_kind("model", 10) {
        linvit_attention::Path::Ops
            .run(|| run_all(&cases, &Device::flex(), "flex ops", Some(false)));
    }
}

/// Whether the machine has a Vulkan driver for wgpu to find (Mesa installs its ICD files here).
fn vulkan_driver_present() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|dir| {
            std::fs::read_dir(Path::new(dir))
                .map(|mut entries| entries.next().is_some())
                .unwrap_or(false)
        })
}

#[test]
fn every_attention_case_matches_the_authors_code_on_wgpu() {
    if !vulkan_driver_present() {
        eprintln!(
            "SKIPPED: wgpu conformance, no Vulkan driver (apt-get install mesa-vulkan-drivers)"
        );
        return;
    }
    if let Some(cases) = cases_of_kind("attention", 12) {
        run_all(
            &cases,
            &Device::wgpu(DeviceKind::DefaultDevice),
            "wgpu",
            Some(false),
        );
    }
}

/// Every case of `reference-lm/` (TransNormerLLM and Lightning Attention), when present.
fn lm_cases() -> Option<Vec<PathBuf>> {
    let root = reference_root()?.join("reference-lm");
    if !root.is_dir() {
        eprintln!("SKIPPED: {} not found", root.display());
        return None;
    }
    let cases = discover(&root).expect("reference-lm holds cases");
    assert!(
        cases.len() >= 11,
        "expected 11 reference-lm cases, found {}",
        cases.len()
    );
    Some(cases)
}

#[test]
fn every_transnormer_and_lightning_case_matches_upstream_on_flex() {
    match lm_cases() {
        Some(cases) => run_all(&cases, &Device::flex(), "flex", None),
        None => eprintln!("SKIPPED: reference-lm conformance cases not found"),
    }
}

#[test]
fn every_transnormer_and_lightning_case_matches_upstream_on_wgpu() {
    if !vulkan_driver_present() {
        eprintln!("SKIPPED: wgpu reference-lm conformance, no Vulkan driver");
        return;
    }
    match lm_cases() {
        Some(cases) => run_all(
            &cases,
            &Device::wgpu(DeviceKind::DefaultDevice),
            "wgpu",
            None,
        ),
        None => eprintln!("SKIPPED: reference-lm conformance cases not found"),
    }
}

#[test]
fn a_case_with_weights_of_the_wrong_shape_is_an_error_naming_the_key() {
    let Some(root) = reference_root() else {
        eprintln!("SKIPPED: conformance cases not found");
        return;
    };
    // Pair one case's description and inputs with another case's weights.
    let tmp = std::env::temp_dir().join(format!("linvit-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = root.join("reference/flatten_pvt_attn_sr1");
    for file in ["case.json", "io.safetensors"] {
        std::fs::copy(src.join(file), tmp.join(file)).unwrap();
    }
    std::fs::copy(
        root.join("reference/flatten_pvt_attn_sr2/weights.safetensors"),
        tmp.join("weights.safetensors"),
    )
    .unwrap();
    let report = verify_case(&tmp, &Device::flex());
    std::fs::remove_dir_all(&tmp).ok();
    match report.status {
        Status::Error(reason) => {
            assert!(reason.contains("weights.safetensors"), "{reason}");
            assert!(reason.contains("dwc.weight"), "{reason}");
            assert!(reason.contains("sr.weight"), "{reason}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
