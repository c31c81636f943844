//! `linvit verify`: proof, on the user's machine and backend, that our modules compute what the
//! authors' code computes. For each case: build the module from `case.json`, load the upstream
//! weights, run forward in eval mode, back-propagate `sum(output * output_grad_seed)`, and
//! compare output, input gradient and every parameter gradient under the case's tolerances.

use crate::CliError;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use std::collections::BTreeMap;

use linvit_attention::import::{load_upstream, to_upstream, Rename};
use linvit_attention::{
    AgentConfig, Attention, AttentionConfig, FocusedConfig, MixerShape, Projection, TokenLayout,
};
use linvit_models::{upstream, Model};

use crate::reference::{
    load_case, parameter_grads, read_header, to_host, worst_ratio, Case, CaseError, CaseHeader,
    HostTensor,
};
pub use crate::reference::{CaseReport, Status};

/// A module built from a case, and how to feed it.
enum Subject {
    /// Tokens `[B, N, C]` through a mixer.
    Tokens {
        module: Attention,
        layout: TokenLayout,
    },
    /// CSwin's stacked `qkv` `[3, B, L, C]` through a mixer.
    Stacked {
        module: Attention,
        layout: TokenLayout,
    },
    /// Images `[B, 3, H, W]` to logits, with the map from upstream keys to our paths.
    Model { model: Model, renames: Vec<Rename> },
}

/// What one forward and backward produced, in upstream names and layouts.
struct Outcome {
    output: HostTensor,
    input_grad: Option<HostTensor>,
    param_grads: BTreeMap<String, HostTensor>,
}

/// What `linvit verify` found: the path that ran (`auto` or `ops`) and one row per case.
/// Its `Display` is the table the command prints (row by row as the cases finish); with
/// `--json` each row is printed as its JSON object instead.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub path: linvit_attention::Path,
    pub cases: Vec<CaseReport>,
}

impl VerifyReport {
    /// The lines above the rows.
    pub fn head(path: linvit_attention::Path) -> String {
        format!("path: {}\n{}", path.name(), CaseReport::header())
    }

    pub fn all_passed(&self) -> bool {
        self.cases.iter().all(CaseReport::passed)
    }

    /// The line below the rows.
    pub fn summary(&self) -> String {
        let passed = self.cases.iter().filter(|c| c.passed()).count();
        format!("{passed} of {} cases passed", self.cases.len())
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", Self::head(self.path))?;
        for case in &self.cases {
            writeln!(f, "{case}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// Verifies the case folders `dirs` in turn on `device`, on this thread's
/// [`linvit_attention::Path`], handing each row to `on_case` as soon as it is done (a case
/// can take minutes on a slow backend).
pub fn verify_all(
    dirs: &[std::path::PathBuf],
    device: &Device,
    mut on_case: impl FnMut(&CaseReport),
) -> VerifyReport {
    let cases = dirs
        .iter()
        .map(|dir| {
            let report = verify_case(dir, device);
            on_case(&report);
            report
        })
        .collect();
    VerifyReport {
        path: linvit_attention::Path::current(),
        cases,
    }
}

/// Verifies one case folder on `device` (without autodiff; gradients are turned on here), on
/// this thread's [`linvit_attention::Path`].
pub fn verify_case(dir: &Path, device: &Device) -> CaseReport {
    let start = Instant::now();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = CaseReport {
        case: name,
        kind: String::new(),
        family: String::new(),
        output_ratio: None,
        grad_ratio: None,
        worst_grad: None,
        seconds: 0.0,
        path: linvit_attention::Path::current(),
        fused_nodes: 0,
        status: Status::Pass,
    };
    let nodes_before = linvit_attention::Path::fused_nodes();
    report.status = match read_header(dir) {
        Err(e) => Status::Error(e.to_string()),
        Ok(header) => {
            report.case = header.case.clone();
            report.kind = header.kind.clone();
            report.family = header.family.clone();
            match supported(&header) {
                Err(_) if crate::verify_lm::handles(&header) => {
                    crate::verify_lm::run(dir, &header, device, &mut report)
                        .unwrap_or_else(|status| status)
                }
                Err(why) => Status::Unsupported(why.message),
                Ok(flavour) => match load_case(dir) {
                    Err(e) => Status::Error(e.to_string()),
                    Ok(case) => {
                        run(&case, flavour, device, &mut report).unwrap_or_else(|status| status)
                    }
                },
            }
        }
    };
    report.seconds = start.elapsed().as_secs_f64();
    report.fused_nodes = linvit_attention::Path::fused_nodes() - nodes_before;
    report
}

fn run(
    case: &Case,
    flavour: Flavour,
    device: &Device,
    report: &mut CaseReport,
) -> Result<Status, Status> {
    let device = device.clone().autodiff();
    let mut subject = build(case, flavour, &device)?;
    let weights = case.weights_path();
    let loaded = match &mut subject {
        Subject::Tokens { module, .. } | Subject::Stacked { module, .. } => {
            load_upstream(module, &weights, &[])
        }
        Subject::Model { model, renames } => load_upstream(model, &weights, renames),
    };
    loaded.map_err(|e| Status::Error(e.to_string()))?;

    let outcome = execute(&subject, case, &device)?;
    let expected = case.io_tensor("output").map_err(error)?;
    let out_ratio = worst_ratio(&outcome.output.data, &expected.data, case.spec.tolerance);
    // Inference (autodiff off) may take a fused kernel instead of the ops autodiff
    // differentiates (focused attention on flex); its output must match the reference too.
    let inferred = infer(&subject, case, &device.clone().inner())?;
    let infer_ratio = worst_ratio(&inferred.data, &expected.data, case.spec.tolerance);
    report.output_ratio = Some(out_ratio.max(infer_ratio));

    let mut worst = (0.0f64, String::from("input_grad"));
    let mut check = |name: &str, actual: Option<&HostTensor>, expected: &HostTensor| {
        let ratio = match actual {
            Some(a) if a.shape == expected.shape => {
                let tol = case.spec.grad_tolerance.for_tensor(&expected.data);
                worst_ratio(&a.data, &expected.data, tol)
            }
            // No gradient reached it: fine only where upstream's is all zeros too.
            None if expected.data.iter().all(|&g| g == 0.0) => 0.0,
            _ => f64::INFINITY,
        };
        if ratio > worst.0 || !ratio.is_finite() {
            worst = (ratio, name.to_string());
        }
    };
    check(
        "input_grad",
        outcome.input_grad.as_ref(),
        case.io_tensor("input_grad").map_err(error)?,
    );
    for (name, expected) in case.param_grads() {
        check(
            &format!("grad.{name}"),
            outcome.param_grads.get(name),
            expected,
        );
    }
    report.grad_ratio = Some(worst.0);
    report.worst_grad = Some(worst.1.clone());
    Ok(if out_ratio > 1.0 || !out_ratio.is_finite() {
        Status::Fail(format!("output off by {out_ratio:.3}x the tolerance"))
    } else if infer_ratio > 1.0 || !infer_ratio.is_finite() {
        Status::Fail(format!(
            "output without autodiff off by {infer_ratio:.3}x the tolerance"
        ))
    } else if worst.0 > 1.0 || !worst.0.is_finite() {
        Status::Fail(format!("{} off by {:.3}x the tolerance", worst.1, worst.0))
    } else {
        Status::Pass
    })
}

/// Forward on the case's input with gradients on, then backward of `sum(output * seed)`.
fn execute(subject: &Subject, case: &Case, device: &Device) -> Result<Outcome, Status> {
    let input = case.io_tensor("input").map_err(error)?;
    let seed = case.io_tensor("output_grad_seed").map_err(error)?;
    match subject {
        Subject::Tokens { module, layout } => {
            let x = to_tensor::<3>(input, device)?.require_grad();
            let out = module.forward(x.clone(), *layout);
            backward(out, seed, device, module, &[], |g| x.grad(g).map(to_host))
        }
        Subject::Stacked { module, layout } => {
            let x = to_tensor::<4>(input, device)?.require_grad();
            let part = |i| x.clone().narrow(0, i, 1).squeeze_dim::<3>(0);
            let out = module.forward_qkv(part(0), part(1), part(2), *layout);
            backward(out, seed, device, module, &[], |g| x.grad(g).map(to_host))
        }
        Subject::Model { model, renames } => {
            let x = to_tensor::<4>(input, device)?.require_grad();
            let out = model.forward(x.clone());
            backward(out, seed, device, model, renames, |g| {
                x.grad(g).map(to_host)
            })
        }
    }
}

/// Forward on the case's input with autodiff off (the module's inference path).
fn infer(subject: &Subject, case: &Case, device: &Device) -> Result<HostTensor, Status> {
    let input = case.io_tensor("input").map_err(error)?;
    Ok(match subject {
        Subject::Tokens { module, layout } => to_host(
            module
                .valid()
                .forward(to_tensor::<3>(input, device)?, *layout),
        ),
        Subject::Stacked { module, layout } => {
            let x = to_tensor::<4>(input, device)?;
            let part = |i| x.clone().narrow(0, i, 1).squeeze_dim::<3>(0);
            to_host(
                module
                    .valid()
                    .forward_qkv(part(0), part(1), part(2), *layout),
            )
        }
        Subject::Model { model, .. } => {
            to_host(model.valid().forward(to_tensor::<4>(input, device)?))
        }
    })
}

fn backward<const D: usize, M: Module>(
    out: Tensor<D>,
    seed: &HostTensor,
    device: &Device,
    module: &M,
    renames: &[Rename],
    input_grad: impl Fn(&Gradients) -> Option<HostTensor>,
) -> Result<Outcome, Status> {
    let output = to_host(out.clone());
    if output.shape != seed.shape {
        return Err(Status::Error(format!(
            "output has shape {:?}, the case expects {:?}",
            output.shape, seed.shape
        )));
    }
    let grads = (out * to_tensor::<D>(seed, device)?).sum().backward();
    let param_grads = parameter_grads(module, &grads)
        .into_iter()
        .map(|(path, g)| (to_upstream(&path, renames), g))
        .collect();
    Ok(Outcome {
        output,
        input_grad: input_grad(&grads),
        param_grads,
    })
}

fn error(e: CaseError) -> Status {
    Status::Error(e.to_string())
}

fn to_tensor<const D: usize>(t: &HostTensor, device: &Device) -> Result<Tensor<D>, Status> {
    if t.shape.len() != D {
        return Err(Status::Error(format!(
            "a tensor has shape {:?}, expected {D} dimensions",
            t.shape
        )));
    }
    Ok(Tensor::from_data(
        TensorData::new(t.data.clone(), t.shape.clone()),
        device,
    ))
}

/// The upstream attention modules linvit builds, by the file that defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    /// A whole model of a supported upstream class.
    Model,
    /// One attention module.
    Mixer(Mixer),
}

/// The upstream attention modules linvit builds, by the file that defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mixer {
    FlattenPvt,
    FlattenSwin,
    FlattenCswin,
    AgentDeit,
    AgentPvt,
    AgentSwin,
    AgentCswin,
}

impl Flavour {
    fn of(header: &CaseHeader) -> Option<Self> {
        if header.kind == "model" && model_call(header, &serde_json::Value::Null).is_ok() {
            return Some(Flavour::Model);
        }
        if header.kind != "attention" {
            return None;
        }
        Some(Flavour::Mixer(match header.upstream_file().as_str() {
            "flatten_pvt.py" | "flatten_pvt_v2.py" => Mixer::FlattenPvt,
            "flatten_swin.py" => Mixer::FlattenSwin,
            "flatten_cswin.py" => Mixer::FlattenCswin,
            "agent_deit.py" => Mixer::AgentDeit,
            "agent_pvt.py" => Mixer::AgentPvt,
            "agent_swin.py" => Mixer::AgentSwin,
            "agent_cswin.py" => Mixer::AgentCswin,
            _ => return None,
        }))
    }
}

/// The upstream class file a model case builds and the keyword arguments its constructor gets
/// before the class defaults: the factory's with the case's `args` on top where the case names
/// a factory (`create_model(name, **args)`), else the case's `args`.
fn model_call(
    header: &CaseHeader,
    args: &serde_json::Value,
) -> Result<(String, serde_json::Value), CliError> {
    let file = header.upstream_file();
    let Some(name) = header.upstream.as_ref().and_then(|u| u.factory.as_deref()) else {
        upstream::class(&file)?;
        return Ok((file, args.clone()));
    };
    let factory = upstream::factory(name)?;
    let class = upstream::class(factory.file)?;
    if !file.is_empty() && file != factory.file && file != class.class {
        return Err(cli_error!(
            "upstream.factory {name:?} builds {} ({}), not {file:?}",
            class.class,
            factory.file
        ));
    }
    Ok((
        factory.file.to_string(),
        upstream::overlay(factory.kwargs(), args),
    ))
}

/// Whether this build runs a case; the reason when it does not.
fn supported(header: &CaseHeader) -> Result<Flavour, CliError> {
    let names_factory = header
        .upstream
        .as_ref()
        .is_some_and(|u| u.factory.is_some());
    if header.kind == "model" && names_factory {
        model_call(header, &serde_json::Value::Null)?;
    }
    Flavour::of(header).ok_or_else(|| {
        cli_error!(
            "{} cases from {} ({} family) are not supported yet",
            header.kind,
            header.upstream_file(),
            header.family
        )
    })
}

/// Builds the module a case describes, from its upstream file and constructor arguments.
fn build(case: &Case, flavour: Flavour, device: &Device) -> Result<Subject, Status> {
    let spec = &case.spec;
    fn bad(e: impl std::fmt::Display) -> Status {
        Status::Error(format!("case.json: {e}"))
    }
    let mixer = match flavour {
        Flavour::Mixer(mixer) => mixer,
        Flavour::Model => {
            let (file, args) = model_call(&spec.header, &spec.args).map_err(bad)?;
            // The cases ran upstream in eval mode, where drop path is the identity (timm's Swin
            // defaults to a rate of 0.1; our gradients run with autodiff, which would apply it).
            let eval = serde_json::json!({ "drop_path_rate": 0.0 });
            let args = upstream::overlay(args, &eval);
            let config = upstream::model_config(&file, &args).map_err(bad)?;
            config.validate().map_err(bad)?;
            return Ok(Subject::Model {
                model: config.init(device),
                renames: config.renames(),
            });
        }
    };
    let dim = spec.arg_usize("dim").map_err(bad)?;
    let heads = spec.arg_usize("num_heads").map_err(bad)?;
    let qkv_bias = spec.arg_bool_or("qkv_bias", false).map_err(bad)?;
    let flatten = || -> Result<AttentionConfig, CliError> {
        Ok(AttentionConfig::Focused(FocusedConfig {
            focusing_factor: spec.arg_usize_or("focusing_factor", 3)? as u32,
            kernel_size: spec.arg_usize_or("kernel_size", 5)?,
        }))
    };
    let agent = || -> Result<AttentionConfig, CliError> {
        Ok(AttentionConfig::Agent(AgentConfig {
            agent_num: spec.arg_usize("agent_num")?,
            dwc_kernel: 3,
        }))
    };
    let window = |key: &str| -> Result<[usize; 2], CliError> {
        match spec.args.get(key) {
            Some(serde_json::Value::Array(v)) if v.len() == 2 => Ok([
                v[0].as_u64().unwrap_or(0) as usize,
                v[1].as_u64().unwrap_or(0) as usize,
            ]),
            Some(v) if v.is_u64() => {
                let w = v.as_u64().unwrap_or(0) as usize;
                Ok([w, w])
            }
            _ => Err(cli_error!("args.{key} is missing or not a size")),
        }
    };
    let pvt_grid = || -> Result<[usize; 2], CliError> {
        let h = spec.forward.get("H").and_then(|v| v.as_u64());
        let w = spec.forward.get("W").and_then(|v| v.as_u64());
        match (h, w) {
            (Some(h), Some(w)) => Ok([h as usize, w as usize]),
            _ => Err("forward.H / forward.W are missing".into()),
        }
    };
    let reduced = || -> Result<Projection, CliError> {
        Ok(Projection::Reduced {
            sr_ratio: spec.arg_usize_or("sr_ratio", 1)?,
            pooled: spec.arg_bool_or("linear", false)?,
        })
    };
    let cswin = || -> Result<(Projection, [usize; 2]), CliError> {
        let res = spec.arg_usize("resolution")?;
        let stripe = spec.arg_i64("idx")?;
        let split = spec.arg_usize("split_size")?;
        Ok((
            Projection::External {
                stripe: stripe.clamp(-1, 1) as i8,
                split,
            },
            [res, res],
        ))
    };
    let (attention, grid, projection, prefix) = match mixer {
        Mixer::FlattenPvt => (flatten(), pvt_grid(), reduced(), 0),
        Mixer::FlattenSwin => (flatten(), window("window_size"), Ok(Projection::Fused), 0),
        Mixer::FlattenCswin => {
            let (p, g) = cswin().map_err(bad)?;
            (flatten(), Ok(g), Ok(p), 0)
        }
        Mixer::AgentDeit => (agent(), window("window"), Ok(Projection::Fused), 1),
        Mixer::AgentPvt => (agent(), pvt_grid(), reduced(), 0),
        Mixer::AgentSwin => (agent(), window("window_size"), Ok(Projection::Fused), 0),
        Mixer::AgentCswin => {
            let (p, g) = cswin().map_err(bad)?;
            (agent(), Ok(g), Ok(p), 0)
        }
    };
    let attention = attention.map_err(bad)?;
    let grid = grid.map_err(bad)?;
    let projection = projection.map_err(bad)?;
    let shape = MixerShape::new(dim, heads, grid)
        .with_qkv_bias(qkv_bias)
        .with_prefix(prefix)
        .with_projection(projection);
    shape.validate(&attention).map_err(|e| bad(e.to_string()))?;
    let layout = TokenLayout::grid(grid[0], grid[1]).with_prefix(prefix);
    let module = attention.init(&shape, device);
    Ok(if matches!(projection, Projection::External { .. }) {
        Subject::Stacked { module, layout }
    } else {
        Subject::Tokens { module, layout }
    })
}
