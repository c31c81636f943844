//! Every preset builds, and its parameter count matches the number its paper publishes.

use burn::module::Module;
use burn::tensor::Device;
use linvit_models::presets::PRESETS;

#[test]
fn preset_parameter_counts_match_the_papers() {
    let device = Device::flex();
    let mut mismatches = Vec::new();
    for preset in PRESETS {
        let config = preset.config();
        config
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", preset.name));
        let params = config.init(&device).num_params();
        let verdict = match (preset.matches_published(params), preset.discrepancy) {
            (Some(true), None) => "ok",
            (Some(true), Some(_)) => {
                mismatches.push(format!(
                    "{}: matches, drop its discrepancy note",
                    preset.name
                ));
                "STALE NOTE"
            }
            (Some(false), Some(why)) => why,
            (Some(false), None) => {
                mismatches.push(format!(
                    "{}: {:.2}M, paper {:?}M",
                    preset.name,
                    params as f64 / 1e6,
                    preset.params_m
                ));
                "MISMATCH"
            }
            (None, _) => "unpublished",
        };
        eprintln!(
            "{:<20} {:>8.2}M params (paper {:>6}) {:>6.2}G MACs  {verdict}",
            preset.name,
            params as f64 / 1e6,
            preset
                .params_m
                .map(|p| format!("{p}M"))
                .unwrap_or("-".into()),
            config.macs() as f64 / 1e9,
        );
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
