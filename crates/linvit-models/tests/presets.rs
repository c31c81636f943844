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

mod upstream_forms {
    //! The authors' model calls in every form their code accepts map to the same config.

    use linvit_models::presets::{preset, PRESETS};
    use linvit_models::upstream::{
        self, class, factory, model_config, overlay, CLASSES, FACTORIES,
    };
    use linvit_models::ModelConfig;
    use serde_json::{json, Value};

    fn config(file: &str, args: Value) -> ModelConfig {
        model_config(file, &args).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    #[test]
    fn every_preset_factory_builds_the_presets_class() {
        for p in PRESETS {
            if let Some(name) = p.factory() {
                assert_eq!(factory(name).unwrap().file, p.upstream(), "{}", p.name);
            }
            // Every argument a preset passes is one its class takes.
            upstream::resolve(p.upstream(), &p.arguments()).unwrap();
        }
        for f in FACTORIES {
            class(f.file).unwrap();
            upstream::resolve(f.file, &f.kwargs()).unwrap();
        }
        assert_eq!(CLASSES.len(), 10);
    }

    #[test]
    fn omitted_arguments_take_the_class_defaults() {
        // No `num_classes`: the class default, 1000.
        let ModelConfig::Vit(vit) =
            config("agent_deit.py", json!({"embed_dim": 192, "num_heads": 3}))
        else {
            panic!("agent_deit.py builds a ViT")
        };
        assert_eq!(vit.num_classes, 1000);
        assert_eq!(
            (vit.img_size, vit.patch_size, vit.blocks.len()),
            (224, 16, 12)
        );
        // The defaults spelled out give the same config.
        let explicit = class("agent_deit.py").unwrap().defaults();
        let explicit = overlay(explicit, &json!({"embed_dim": 192, "num_heads": 3}));
        assert_eq!(config("agent_deit.py", explicit), ModelConfig::Vit(vit));
    }

    #[test]
    fn a_factory_with_overrides_is_create_model() {
        let f = factory("flatten_pvt_tiny").unwrap();
        let call = overlay(
            f.kwargs(),
            &json!({"num_classes": 10, "la_sr_ratios": "1111"}),
        );
        let built = config(f.file, call);
        let ours = preset("flatten_pvt_t")
            .unwrap()
            .config_with(&json!({"num_classes": 10, "drop_path_rate": 0.0}))
            .unwrap();
        assert_eq!(built, ours);
        let err = factory("flatten_pvt_tinyy").unwrap_err().message;
        assert!(err.contains("\"flatten_pvt_tiny\""), "{err}");
    }

    #[test]
    fn agent_layer_zero_or_negative_means_every_block() {
        let base =
            json!({"embed_dim": 64, "num_heads": 2, "depth": 4, "img_size": 64, "patch_size": 8});
        let all = config(
            "agent_deit.py",
            overlay(base.clone(), &json!({"agent_layer": 4})),
        );
        for sentinel in [-1, 0] {
            let got = config(
                "agent_deit.py",
                overlay(base.clone(), &json!({"agent_layer": sentinel})),
            );
            assert_eq!(got, all, "agent_layer = {sentinel}");
        }
        let three = config("agent_deit.py", overlay(base, &json!({"agent_layer": 3})));
        assert_ne!(three, all);
    }

    #[test]
    fn numbers_as_strings_where_upstream_ints_them() {
        let p = preset("agent_pvt_t").unwrap();
        let strings = p
            .config_with(&json!({"agent_num": ["9", "16", "49", "49"]}))
            .unwrap();
        assert_eq!(strings, p.config());
    }

    #[test]
    fn an_unknown_argument_names_the_nearest_known_one() {
        let err = model_config("agent_pvt.py", &json!({"agent_numm": [4, 9, 16, 4]}))
            .unwrap_err()
            .message;
        assert!(err.starts_with("args.agent_numm:"), "{err}");
        assert!(err.contains("\"agent_num\""), "{err}");
        let err = model_config("flatten_swin.py", &json!({"window_sizes": 7}))
            .unwrap_err()
            .message;
        assert!(err.contains("\"window_size\""), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_type() {
        let err = model_config("flatten_pvt.py", &json!({"depths": "deep"}))
            .unwrap_err()
            .message;
        assert!(
            err.contains("args.depths") && err.contains("list of integers"),
            "{err}"
        );
        let err = model_config("agent_deit.py", &json!({"agent_layer": "x"}))
            .unwrap_err()
            .message;
        assert!(
            err.contains("args.agent_layer") && err.contains("integer"),
            "{err}"
        );
    }

    #[test]
    fn arguments_linvit_does_not_model_must_keep_their_defaults() {
        for (key, value) in [
            ("qk_scale", json!(0.5)),
            ("drop_rate", json!(0.1)),
            ("ape", json!(true)),
        ] {
            let err = model_config("flatten_swin.py", &json!({ key: value }))
                .unwrap_err()
                .message;
            assert!(err.starts_with(&format!("args.{key} = ")), "{err}");
        }
        // At their defaults (0 written as an integer too) they are accepted.
        config(
            "flatten_swin.py",
            json!({"qk_scale": null, "drop_rate": 0, "ape": false}),
        );
    }

    #[test]
    fn pvt_norm_layer_sets_the_block_norm_epsilon() {
        let eps = |norm: &str| match config("flatten_pvt.py", json!({ "norm_layer": norm })) {
            ModelConfig::Pvt(c) => c.norm_eps,
            _ => panic!("flatten_pvt.py builds a PVT"),
        };
        assert_eq!(eps("nn.LayerNorm"), 1e-5);
        assert_eq!(eps("partial(nn.LayerNorm, eps=1e-6)"), 1e-6);
        assert_eq!(
            eps("functools.partial(torch.nn.LayerNorm, eps=1e-06)"),
            1e-6
        );
        let err = model_config("flatten_pvt.py", &json!({"norm_layer": "nn.BatchNorm2d"}))
            .unwrap_err()
            .message;
        assert!(err.contains("args.norm_layer"), "{err}");
        // Every factory passes 1e-6, and so do the presets built on them.
        match preset("flatten_pvt_t").unwrap().config() {
            ModelConfig::Pvt(c) => assert_eq!(c.norm_eps, 1e-6),
            _ => unreachable!(),
        }
    }
}

#[test]
fn swin_windows_follow_the_resolution() {
    let swin = linvit_models::presets::preset("swin_t").unwrap();
    let (args, adjusted) = swin.arguments_at(384);
    assert_eq!(args["window_size"], 12);
    assert!(adjusted.unwrap().contains("7 -> 12"));
    let flatten = linvit_models::presets::preset("flatten_swin_t").unwrap();
    let (args, _) = flatten.arguments_at(384);
    assert_eq!(args["window_size"], 96);
    let (args, adjusted) = flatten.arguments_at(224);
    assert!(args.get("window_size").is_none() && adjusted.is_none());
}
