//! `linvit verify` for the TransNormerLLM and Lightning Attention cases (`shared/reference-lm/`,
//! see its README): the causal decayed linear attention operator, SRMSNorm, the token mixer, the
//! SGLU channel mixer, a decoder layer, a whole causal LM, and the LM's incremental decoding.
//!
//! Every case runs our production path: the blocked (Lightning-2) form for training-mode
//! forwards, and for `decode` a blocked prefill followed by the recurrent form one token at a
//! time, where upstream's training path is quadratic. Agreement within the cases' tolerances is
//! the claim that those forms compute upstream's operator.

use crate::CliError;
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;

use linvit_attention::import::{load_upstream, load_upstream_except};
use linvit_attention::lightning::{causal_linear_attention, CausalForm, Decay};
use linvit_attention::norm::{srms_norm, NormLinearAttentionConfig, INIT_STD};
use linvit_models::transnormer::{Glu, TransnormerConfig, TransnormerDecoderLayer};

use crate::reference::{
    parameter_grads, read_tensors, to_host, worst_ratio, CaseError, CaseHeader, CaseReport,
    GradTolerance, HostTensor, IntTensors, Status, Tolerance,
};

/// The block size verify runs the blocked form with: small enough that every case spans
/// several blocks and a ragged last one.
const BLOCK: usize = 64;

/// What upstream piece a case exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Operator,
    Srms,
    Mixer,
    ChannelMixer,
    Layer,
    Model,
    Decode,
}

/// Whether a case belongs to the LM families this module runs (or reports as unsupported).
pub(crate) fn handles(header: &CaseHeader) -> bool {
    header.family == "lightning" || header.family == "transnormer"
}

fn of(header: &CaseHeader) -> Result<Piece, CliError> {
    let up = header.upstream.as_ref();
    let name = up
        .and_then(|u| u.class.clone().or_else(|| u.function.clone()))
        .unwrap_or_default();
    Ok(match (header.kind.as_str(), name.as_str()) {
        ("op", "linear_attn") => Piece::Operator,
        ("op", "SimpleRMSNorm") => Piece::Srms,
        ("attention", "NormLinearAttention") => Piece::Mixer,
        ("channel_mixer", "GLU") => Piece::ChannelMixer,
        ("layer", "TransnormerDecoderLayer") => Piece::Layer,
        ("model", "TransnormerForCausalLM") => Piece::Model,
        ("decode", "TransnormerForCausalLM") => Piece::Decode,
        (kind, name) => {
            return Err(cli_error!(
                "{kind} cases of {name} ({} family) are not supported",
                header.family
            ))
        }
    })
}

/// One LM case folder, read.
struct LmCase {
    json: Value,
    floats: BTreeMap<String, HostTensor>,
    ints: IntTensors,
    weights: std::path::PathBuf,
}

impl LmCase {
    fn read(dir: &Path) -> Result<Self, CaseError> {
        let json_path = dir.join("case.json");
        let text = std::fs::read_to_string(&json_path)
            .map_err(|e| CaseError::new(&json_path, e.to_string()))?;
        let json = serde_json::from_str(&text).map_err(|e| {
            CaseError::new(&json_path, format!("not a valid case description ({e})"))
        })?;
        let (floats, ints) = read_tensors(&dir.join("io.safetensors"))?;
        Ok(Self {
            json,
            floats,
            ints,
            weights: dir.join("weights.safetensors"),
        })
    }

    fn float(&self, name: &str) -> Result<&HostTensor, Status> {
        self.floats
            .get(name)
            .ok_or_else(|| Status::Error(format!("io.safetensors has no float tensor {name:?}")))
    }

    fn ids(&self, name: &str, device: &Device) -> Result<Tensor<2, Int>, Status> {
        let (shape, data) = self
            .ints
            .get(name)
            .ok_or_else(|| Status::Error(format!("io.safetensors has no int64 tensor {name:?}")))?;
        if shape.len() != 2 {
            return Err(Status::Error(format!(
                "{name} has shape {shape:?}, expected [B, n]"
            )));
        }
        Ok(Tensor::from_data(
            TensorData::new(data.clone(), shape.clone()),
            device,
        ))
    }

    fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>, Status> {
        let t = self.float(name)?;
        if t.shape.len() != D {
            return Err(Status::Error(format!(
                "{name} has shape {:?}, expected {D} dimensions",
                t.shape
            )));
        }
        Ok(Tensor::from_data(
            TensorData::new(t.data.clone(), t.shape.clone()),
            device,
        ))
    }

    fn tolerance(&self, key: &str) -> Result<Tolerance, Status> {
        serde_json::from_value(self.json.get(key).cloned().unwrap_or(Value::Null))
            .map_err(|e| Status::Error(format!("case.json: {key} is not a tolerance ({e})")))
    }

    fn grad_tolerance(&self) -> Result<GradTolerance, Status> {
        serde_json::from_value(
            self.json
                .get("grad_tolerance")
                .cloned()
                .unwrap_or(Value::Null),
        )
        .map_err(|e| Status::Error(format!("case.json: grad_tolerance is not valid ({e})")))
    }

    fn arg(&self, path: &[&str]) -> Option<&Value> {
        path.iter()
            .try_fold(self.json.get("args")?, |v, key| v.get(*key))
    }

    fn arg_usize(&self, path: &[&str]) -> Result<usize, Status> {
        self.arg(path)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| Status::Error(format!("case.json: args.{} is missing", path.join("."))))
    }

    fn arg_bool(&self, path: &[&str]) -> bool {
        self.arg(path)
            .map(|v| v.as_bool().unwrap_or(v.as_u64() == Some(1)))
            .unwrap_or(false)
    }

    /// The `slope_rate` forward argument `[H, 1, 1]` as decay rates.
    fn slope_rate(&self) -> Result<Decay, Status> {
        Ok(Decay::slopes(self.float("slope_rate")?.data.clone()))
    }
}

/// Runs an LM case and fills the report's ratios.
pub(crate) fn run(
    dir: &Path,
    header: &CaseHeader,
    device: &Device,
    report: &mut CaseReport,
) -> Result<Status, Status> {
    let piece = of(header).map_err(|e| Status::Unsupported(e.message))?;
    let case = LmCase::read(dir).map_err(|e| Status::Error(e.to_string()))?;
    let device = device.clone().autodiff();
    let mut checks = Checks::default();
    let blocked = CausalForm::Blocked { block_size: BLOCK };
    let tol = case.tolerance("tolerance")?;
    match piece {
        Piece::Decode => return decode(&case, &device, tol, report),
        Piece::Operator => {
            let [q, k, v] = ["q", "k", "v"]
                .map(|name| case.tensor::<4>(name, &device).map(|t| t.require_grad()));
            let (q, k, v) = (q?, k?, v?);
            let decay = match case.floats.get("slopes") {
                Some(s) => Decay::slopes(s.data.clone()),
                None => Decay::none(),
            };
            let (out, _) =
                causal_linear_attention(q.clone(), k.clone(), v.clone(), &decay, blocked, None);
            let grads = checks.output(&case, out, tol, &device)?;
            for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
                checks.grad(
                    &case,
                    &format!("input_grad.{name}"),
                    t.grad(&grads).map(to_host),
                )?;
            }
        }
        // Upstream's SimpleRMSNorm and GLU take any number of leading dimensions.
        Piece::Srms => by_input_rank!(case, srms_case(&case, tol, &device, &mut checks)),
        Piece::Mixer => {
            let config = NormLinearAttentionConfig {
                embed_dim: case.arg_usize(&["ctor", "embed_dim"])?,
                hidden_dim: case.arg_usize(&["ctor", "hidden_dim"])?,
                num_heads: case.arg_usize(&["ctor", "num_heads"])?,
                use_lrpe: case.arg_bool(&["ctor", "linear_use_lrpe"]),
                bias: case.arg_bool(&["ctor", "bias"]),
                init_std: INIT_STD,
            };
            let mut module = config.init(case.slope_rate()?, &device);
            load(&mut module, &case, &[])?;
            let x = case.tensor::<3>("input", &device)?.require_grad();
            let grads = checks.output(&case, module.forward(x.clone(), blocked), tol, &device)?;
            checks.grad(&case, "input_grad", x.grad(&grads).map(to_host))?;
            checks.params(&case, &module, &grads)?;
        }
        Piece::ChannelMixer => {
            let d1 = case.arg_usize(&["ctor", "d1"])?;
            let d2 = case.arg_usize(&["ctor", "d2"])?;
            let mut module = Glu::new(d1, d2, case.arg_bool(&["ctor", "bias"]), INIT_STD, &device);
            load(&mut module, &case, &[])?;
            by_input_rank!(case, glu_case(&case, &module, tol, &device, &mut checks))
        }
        Piece::Layer => {
            let mut config = upstream_config(&case)?;
            let layer = case.arg_usize(&["layer_idx"])?;
            config.layers = case.arg_usize(&["num_layers"])?;
            config.lrpe = vec![false; config.layers];
            if let Some(slot) = config.lrpe.get_mut(layer) {
                *slot = case.arg_bool(&["linear_use_lrpe"]);
            }
            let mut module = TransnormerDecoderLayer {
                token_mixer: config.mixer(layer).init(case.slope_rate()?, &device),
                channel_mixer: Glu::new(
                    config.embed_dim,
                    config.glu_dim,
                    config.bias,
                    config.init_std,
                    &device,
                ),
            };
            load(&mut module, &case, &[])?;
            let x = case.tensor::<3>("input", &device)?.require_grad();
            let (out, _) = module.forward_from(x.clone(), None, blocked);
            let grads = checks.output(&case, out, tol, &device)?;
            checks.grad(&case, "input_grad", x.grad(&grads).map(to_host))?;
            checks.params(&case, &module, &grads)?;
        }
        Piece::Model => {
            let mut config = upstream_config(&case)?;
            config.form = blocked;
            let mut model = config.init(&device);
            let derived = model.derived_keys();
            load(&mut model, &case, &derived)?;
            let out = model.forward(case.ids("input", &device)?);
            let grads = checks.output(&case, out, tol, &device)?;
            checks.params(&case, &model, &grads)?;
        }
    }
    report.output_ratio = Some(checks.output_ratio);
    report.grad_ratio = Some(checks.worst.0);
    report.worst_grad = Some(checks.worst.1.clone());
    Ok(checks.status())
}

/// Calls `$f::<D>(...)` with `D` the rank of the case's `input` (1 to 6).
macro_rules! by_input_rank {
    ($case:ident, $f:ident($($arg:expr),*)) => {
        match $case.float("input")?.shape.len() {
            1 => $f::<1>($($arg),*)?,
            2 => $f::<2>($($arg),*)?,
            3 => $f::<3>($($arg),*)?,
            4 => $f::<4>($($arg),*)?,
            5 => $f::<5>($($arg),*)?,
            6 => $f::<6>($($arg),*)?,
            rank => {
                return Err(Status::Error(format!(
                    "input has {rank} dimensions; 1 to 6 are supported"
                )))
            }
        }
    };
}
use by_input_rank;

/// SRMSNorm over the last dimension of a rank-`D` input.
fn srms_case<const D: usize>(
    case: &LmCase,
    tol: Tolerance,
    device: &Device,
    checks: &mut Checks,
) -> Result<(), Status> {
    let x = case.tensor::<D>("input", device)?.require_grad();
    let grads = checks.output(case, srms_norm(x.clone()), tol, device)?;
    checks.grad(case, "input_grad", x.grad(&grads).map(to_host))
}

/// The GLU channel mixer on a rank-`D` input `[..., d1]`.
fn glu_case<const D: usize>(
    case: &LmCase,
    module: &Glu,
    tol: Tolerance,
    device: &Device,
    checks: &mut Checks,
) -> Result<(), Status> {
    let x = case.tensor::<D>("input", device)?.require_grad();
    let grads = checks.output(case, module.forward(x.clone()), tol, device)?;
    checks.grad(case, "input_grad", x.grad(&grads).map(to_host))?;
    checks.params(case, module, &grads)
}

fn upstream_config(case: &LmCase) -> Result<TransnormerConfig, Status> {
    let config = case
        .arg(&["config"])
        .ok_or_else(|| Status::Error("case.json: args.config is missing".into()))?;
    let mut config = TransnormerConfig::from_upstream(config)
        .map_err(|e| Status::Error(format!("case.json: {e}")))?;
    if let Some(tied) = case
        .json
        .get("effective_config")
        .and_then(|c| c.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
    {
        config.tie_word_embeddings = tied;
    }
    config
        .validate()
        .map_err(|e| Status::Error(format!("case.json: {e}")))?;
    Ok(config)
}

fn load<M: Module + burn::store::ModuleSnapshot>(
    module: &mut M,
    case: &LmCase,
    derived: &[String],
) -> Result<(), Status> {
    let result = if derived.is_empty() {
        load_upstream(module, &case.weights, &[])
    } else {
        load_upstream_except(module, &case.weights, &[], derived)
    };
    result.map(|_| ()).map_err(|e| Status::Error(e.to_string()))
}

/// The comparisons of one case: output ratio and the worst gradient.
#[derive(Default)]
struct Checks {
    output_ratio: f64,
    worst: (f64, String),
    grad_tolerance: Option<GradTolerance>,
}

impl Checks {
    /// Compares the output, then back-propagates `sum(output * output_grad_seed)`.
    fn output<const D: usize>(
        &mut self,
        case: &LmCase,
        out: Tensor<D>,
        tol: Tolerance,
        device: &Device,
    ) -> Result<burn::tensor::Gradients, Status> {
        let expected = case.float("output")?;
        let host = to_host(out.clone());
        if host.shape != expected.shape {
            return Err(Status::Error(format!(
                "output has shape {:?}, the case expects {:?}",
                host.shape, expected.shape
            )));
        }
        self.output_ratio = worst_ratio(&host.data, &expected.data, tol);
        self.grad_tolerance = Some(case.grad_tolerance()?);
        let seed = case.tensor::<D>("output_grad_seed", device)?;
        Ok((out * seed).sum().backward())
    }

    fn grad(
        &mut self,
        case: &LmCase,
        name: &str,
        actual: Option<HostTensor>,
    ) -> Result<(), Status> {
        let expected = case.float(name)?;
        let tol = self
            .grad_tolerance
            .expect("output() runs before the gradients")
            .for_tensor(&expected.data);
        let ratio = match actual {
            Some(a) if a.shape == expected.shape => worst_ratio(&a.data, &expected.data, tol),
            None if expected.data.iter().all(|&g| g == 0.0) => 0.0,
            _ => f64::INFINITY,
        };
        if ratio > self.worst.0 || !ratio.is_finite() || self.worst.1.is_empty() {
            self.worst = (ratio, name.to_string());
        }
        Ok(())
    }

    /// Every `grad.<param>` of the case against the module's parameter gradients.
    fn params<M: Module>(
        &mut self,
        case: &LmCase,
        module: &M,
        grads: &burn::tensor::Gradients,
    ) -> Result<(), Status> {
        let mut ours = parameter_grads(module, grads);
        let expected: Vec<String> = case
            .floats
            .keys()
            .filter_map(|k| k.strip_prefix("grad.").map(str::to_string))
            .collect();
        for name in expected {
            self.grad(case, &format!("grad.{name}"), ours.remove(&name))?;
        }
        Ok(())
    }

    fn status(&self) -> Status {
        if self.output_ratio > 1.0 || !self.output_ratio.is_finite() {
            Status::Fail(format!(
                "output off by {:.3}x the tolerance",
                self.output_ratio
            ))
        } else if self.worst.0 > 1.0 || !self.worst.0.is_finite() {
            Status::Fail(format!(
                "{} off by {:.3}x the tolerance",
                self.worst.1, self.worst.0
            ))
        } else {
            Status::Pass
        }
    }
}

/// The incremental path: a blocked prefill, then one recurrent step per decode id, compared
/// with the prefill logits, the per-step logits and every layer's state after each phase.
fn decode(
    case: &LmCase,
    device: &Device,
    tol: Tolerance,
    report: &mut CaseReport,
) -> Result<Status, Status> {
    let extra: BTreeMap<String, Tolerance> = serde_json::from_value(
        case.json
            .get("extra_tolerances")
            .cloned()
            .unwrap_or(Value::Null),
    )
    .map_err(|e| Status::Error(format!("case.json: extra_tolerances is not valid ({e})")))?;
    let mut config = upstream_config(case)?;
    // Upstream's inference path prefills in 256-token blocks; the block size does not change
    // the result, so this runs ours.
    config.form = CausalForm::Blocked { block_size: BLOCK };
    let mut model = config.init(device);
    let derived = model.derived_keys();
    load(&mut model, case, &derived)?;
    let model = model.no_grad();
    let prefix = case.ids("input", device)?;
    let steps = case.ids("decode_ids", device)?;
    let (prefill, mut state) = model.forward_from(prefix, None, config.form);
    let mut compared: Vec<(String, HostTensor)> = vec![("prefill_output".into(), to_host(prefill))];
    for (l, s) in state.iter().enumerate() {
        compared.push((
            format!("past.layers.{l}.after_prefill"),
            to_host(s.kv.clone()),
        ));
    }
    let [b, n] = steps.dims();
    let mut logits = Vec::with_capacity(n);
    for t in 0..n {
        let id = steps.clone().narrow(1, t, 1);
        let (out, next) = model.forward_from(id, Some(state), CausalForm::Recurrent);
        logits.push(out);
        state = next;
    }
    let output = Tensor::cat(logits, 1);
    debug_assert_eq!(output.dims()[0], b);
    compared.push(("output".into(), to_host(output)));
    for (l, s) in state.iter().enumerate() {
        compared.push((format!("past.layers.{l}.final"), to_host(s.kv.clone())));
    }
    let mut worst_extra = (0.0f64, String::new());
    for (name, actual) in &compared {
        let expected = case.float(name)?;
        let tol = if name == "output" {
            tol
        } else {
            *extra.get(name).ok_or_else(|| {
                Status::Error(format!("case.json: extra_tolerances has no {name:?}"))
            })?
        };
        let ratio = if actual.shape == expected.shape {
            worst_ratio(&actual.data, &expected.data, tol)
        } else {
            f64::INFINITY
        };
        if name == "output" {
            report.output_ratio = Some(ratio);
        } else if ratio > worst_extra.0 || worst_extra.1.is_empty() || !ratio.is_finite() {
            worst_extra = (ratio, name.clone());
        }
    }
    report.grad_ratio = Some(worst_extra.0);
    report.worst_grad = Some(worst_extra.1.clone());
    let out = report.output_ratio.unwrap_or(f64::INFINITY);
    Ok(if out > 1.0 || !out.is_finite() {
        Status::Fail(format!("output off by {out:.3}x the tolerance"))
    } else if worst_extra.0 > 1.0 || !worst_extra.0.is_finite() {
        Status::Fail(format!(
            "{} off by {:.3}x the tolerance",
            worst_extra.1, worst_extra.0
        ))
    } else {
        Status::Pass
    })
}
