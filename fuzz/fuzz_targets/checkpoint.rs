//! Checkpoint loading: the authors' safetensors and `.pth` files (with the name mapping and
//! load-time resizing) and linvit's own model folders. Any bytes load or give an error.
#![no_main]

use burn::tensor::Device;
use libfuzzer_sys::fuzz_target;
use linvit_attention::import::load_upstream_resized;
use linvit_models::checkpoint::load_model;
use linvit_models::presets::preset;

mod scratch;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let device = Device::flex();
    match pick % 3 {
        0 | 1 => {
            let name = if pick % 3 == 0 {
                "weights.safetensors"
            } else {
                "weights.pth"
            };
            let path = scratch::write(name, body);
            let config = preset("tiny_agent_deit").unwrap().config();
            let mut model = config.init(&device);
            let _ =
                load_upstream_resized(&mut model, &path, &config.renames(), config.resize_rule());
        }
        _ => {
            // A model folder: a valid model.json from the preset, fuzzed weights.
            let config = preset("tiny_vit").unwrap().config();
            let json = serde_json::to_vec(&config).unwrap();
            let dir = scratch::write("model.json", &json)
                .parent()
                .unwrap()
                .to_path_buf();
            scratch::write("model.bpk", body);
            let _ = load_model(&dir, &device);
        }
    }
});
