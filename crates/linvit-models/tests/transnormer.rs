//! The TransNormer language model: shapes, parameter count, the three causal forms giving the
//! same logits and gradients through the whole model, incremental decoding equal to one pass
//! over the whole sequence, and the padding row's gradient rule.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use linvit_attention::lightning::CausalForm;
use linvit_models::transnormer::TransnormerConfig;

fn tiny(form: CausalForm) -> TransnormerConfig {
    TransnormerConfig {
        vocab_size: 40,
        embed_dim: 32,
        layers: 3,
        heads: 4,
        hidden_dim: 32,
        glu_dim: 48,
        lrpe: vec![true, false, true],
        form,
        ..TransnormerConfig::default()
    }
}

fn ids(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let (b, n) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [b, n]), device)
}

fn tokens(n: usize, seed: i64) -> Vec<i64> {
    (0..n as i64)
        .map(|i| (i * 7 + seed * 13 + i * i) % 39 + 1)
        .collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn parameter_count_matches_the_modules_and_the_reference_model() {
    let device = Device::flex();
    let config = tiny(CausalForm::Quadratic);
    assert_eq!(config.init(&device).num_params(), config.num_params());
    // The reference-lm `tnl_reduced_model` config: 98,368 parameters upstream.
    let upstream = serde_json::json!({
        "vocab_size": 128, "decoder_embed_dim": 64, "decoder_layers": 2,
        "decoder_attention_heads": 4, "hidden_dim": 64, "glu_dim": 128,
        "linear_use_lrpe_list": [1, 0], "linear_act_fun": "swish",
        "norm_type": "simplermsnorm", "bias": false, "no_scale_embedding": false,
        "pad_token_id": 0
    });
    let config = TransnormerConfig::from_upstream(&upstream).unwrap();
    assert_eq!(config.num_params(), 98_368);
    assert_eq!(config.init(&device).num_params(), 98_368);
}

#[test]
fn the_three_forms_give_the_same_logits_and_gradients_through_the_model() {
    let device = Device::flex().autodiff();
    let rows = vec![tokens(77, 1), tokens(77, 2)];
    let built = tiny(CausalForm::Quadratic).init(&device);
    let mut reference: Option<(Vec<f32>, Vec<f32>)> = None;
    for form in [
        CausalForm::Quadratic,
        CausalForm::Blocked { block_size: 16 },
        CausalForm::Blocked { block_size: 50 },
        CausalForm::Recurrent,
    ] {
        let mut model = built.clone();
        model.form = form;
        let logits = model.forward(ids(&rows, &device));
        assert_eq!(logits.dims(), [2, 77, 40]);
        let grads = logits.clone().powi_scalar(2).sum().backward();
        let g = host(
            model.model.layers[0]
                .token_mixer
                .qkvu_proj
                .weight
                .val()
                .grad(&grads)
                .expect("qkvu_proj gets a gradient"),
        );
        let out = host(logits);
        match &reference {
            None => reference = Some((out, g)),
            Some((r_out, r_g)) => {
                let scale = r_out.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(max_diff(&out, r_out) <= 1e-4 * scale, "{form:?} logits");
                let g_scale = r_g.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(max_diff(&g, r_g) <= 1e-3 * g_scale, "{form:?} gradient");
            }
        }
    }
}

#[test]
fn decoding_token_by_token_equals_one_pass_over_the_sequence() {
    let device = Device::flex();
    let model = tiny(CausalForm::Blocked { block_size: 32 }).init(&device);
    let full = tokens(90, 3);
    let whole = host(model.forward(ids(&[full.clone()], &device)));
    let (prefill, mut state) = model.forward_from(
        ids(&[full[..70].to_vec()], &device),
        None,
        CausalForm::Blocked { block_size: 32 },
    );
    let mut pieces = host(prefill);
    let state_shapes: Vec<[usize; 4]> = state.iter().map(|s| s.kv.dims()).collect();
    for &t in &full[70..] {
        let (logits, next) =
            model.forward_from(ids(&[vec![t]], &device), Some(state), CausalForm::Recurrent);
        pieces.extend(host(logits));
        state = next;
        // Constant memory: the state never grows with the number of tokens.
        assert_eq!(
            state.iter().map(|s| s.kv.dims()).collect::<Vec<_>>(),
            state_shapes
        );
    }
    assert_eq!(
        state_shapes[0],
        [1, 4, 16, 8],
        "LRPE doubles the key features"
    );
    assert_eq!(state[0].offset, 90);
    let scale = whole.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(max_diff(&pieces, &whole) <= 1e-4 * scale);
}

#[test]
fn the_padding_row_gets_no_gradient_from_the_lookup() {
    let device = Device::flex().autodiff();
    let config = TransnormerConfig {
        tie_word_embeddings: false,
        ..tiny(CausalForm::Quadratic)
    };
    let model = config.init(&device);
    let mut row = tokens(20, 4);
    row[3] = 0;
    row[11] = 0;
    let logits = model.forward(ids(&[row], &device));
    let grads = logits.sum().backward();
    let g = host(model.model.embed_tokens.weight.val().grad(&grads).unwrap());
    let d = 32;
    assert!(g[..d].iter().all(|&x| x == 0.0), "the pad row moved");
    let used = tokens(20, 4)[0] as usize;
    assert!(g[used * d..(used + 1) * d].iter().any(|&x| x != 0.0));
}

#[test]
fn bad_configs_are_refused_with_the_key() {
    let lrpe = TransnormerConfig {
        hidden_dim: 64,
        ..tiny(CausalForm::Quadratic)
    };
    assert!(lrpe.validate().unwrap_err().message.contains("LRPE"));
    let heads = TransnormerConfig {
        heads: 5,
        ..tiny(CausalForm::Quadratic)
    };
    assert!(heads.validate().unwrap_err().message.contains("divisible"));
    let upstream = serde_json::json!({"linear_act_fun": "relu"});
    assert!(TransnormerConfig::from_upstream(&upstream)
        .unwrap_err()
        .message
        .contains("linear_act_fun"));
}
