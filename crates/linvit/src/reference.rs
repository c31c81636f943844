//! Reference cases produced by the authors' PyTorch code (see `shared/reference/README.md`):
//! finding them, reading them, and the comparison rule they state.

use crate::CliError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A problem with a case folder: which file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CaseError {
    pub path: PathBuf,
    pub reason: String,
}

impl CaseError {
    pub fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// `{abs, rel}`: pass iff `|a - b| <= abs + rel |b|` element-wise.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// Gradient rule: per tensor `abs = max(abs_floor, abs_factor * max|b|)`, then as [`Tolerance`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct GradTolerance {
    pub abs_factor: f64,
    pub abs_floor: f64,
    pub rel: f64,
}

impl GradTolerance {
    pub fn for_tensor(&self, expected: &[f32]) -> Tolerance {
        let max = expected
            .iter()
            .fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        Tolerance {
            abs: self.abs_floor.max(self.abs_factor * max),
            rel: self.rel,
        }
    }
}

/// Where the module under test came from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Upstream {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub function: Option<String>,
    /// The authors' factory function, where the case was built through one (`args` are then
    /// the keyword arguments passed to it).
    #[serde(default)]
    pub factory: Option<String>,
    #[serde(default)]
    pub package: Option<String>,
}

/// The part of `case.json` every case has, enough to decide whether linvit can run it.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseHeader {
    pub case: String,
    pub kind: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub upstream: Option<Upstream>,
}

impl CaseHeader {
    /// The upstream source file name without folders (`flatten_pvt.py`), or the class for timm.
    pub fn upstream_file(&self) -> String {
        let up = self.upstream.as_ref();
        up.and_then(|u| u.file.as_deref())
            .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
            .or_else(|| up.and_then(|u| u.class.clone()))
            .unwrap_or_default()
    }
}

/// Reads the header of `case.json` in a case folder.
pub fn read_header(dir: &Path) -> Result<CaseHeader, CaseError> {
    let json_path = dir.join("case.json");
    let text = std::fs::read_to_string(&json_path)
        .map_err(|e| CaseError::new(&json_path, e.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| CaseError::new(&json_path, format!("not a valid case description ({e})")))
}

/// `case.json` of a case linvit runs: the fields it uses.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseSpec {
    #[serde(flatten)]
    pub header: CaseHeader,
    #[serde(default)]
    pub args: Value,
    #[serde(default)]
    pub forward: Value,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub tolerance: Tolerance,
    pub grad_tolerance: GradTolerance,
}

impl CaseSpec {
    /// An integer argument (or a string of digits, as the authors' argparse passes numbers),
    /// or an error naming it.
    pub fn arg_usize(&self, key: &str) -> Result<usize, CliError> {
        self.args
            .get(key)
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .map(|v| v as usize)
            .ok_or_else(|| cli_error!("args.{key} is missing or not a non-negative integer"))
    }

    pub fn arg_usize_or(&self, key: &str, default: usize) -> Result<usize, CliError> {
        match self.args.get(key) {
            None => Ok(default),
            Some(_) => self.arg_usize(key),
        }
    }

    pub fn arg_bool_or(&self, key: &str, default: bool) -> Result<bool, CliError> {
        match self.args.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| cli_error!("args.{key} is not a boolean")),
        }
    }

    pub fn arg_i64(&self, key: &str) -> Result<i64, CliError> {
        self.args
            .get(key)
            .and_then(Value::as_i64)
            .ok_or_else(|| cli_error!("args.{key} is missing or not an integer"))
    }
}

/// A float32 tensor read from a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every int64 tensor of a safetensors file (token ids), as shape and values.
pub type IntTensors = BTreeMap<String, (Vec<usize>, Vec<i64>)>;

/// Reads every float32 tensor of a safetensors file (integer buffers are skipped).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>, CaseError> {
    read_tensors(path).map(|(floats, _)| floats)
}

/// Reads the float32 and the int64 tensors of a safetensors file in one pass.
pub fn read_tensors(path: &Path) -> Result<(BTreeMap<String, HostTensor>, IntTensors), CaseError> {
    let bytes = std::fs::read(path).map_err(|e| CaseError::new(path, e.to_string()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| CaseError::new(path, format!("not a valid safetensors file ({e})")))?;
    let (mut floats, mut ints) = (BTreeMap::new(), BTreeMap::new());
    for (name, view) in file.tensors() {
        let shape = view.shape().to_vec();
        match view.dtype() {
            safetensors::Dtype::F32 => {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                floats.insert(name, HostTensor { shape, data });
            }
            safetensors::Dtype::I64 => {
                let data = view
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                ints.insert(name, (shape, data));
            }
            _ => {}
        }
    }
    Ok((floats, ints))
}

/// One case folder, read.
#[derive(Debug, Clone)]
pub struct Case {
    pub dir: PathBuf,
    pub spec: CaseSpec,
    /// `input`, `output`, `output_grad_seed`, `input_grad`, `grad.<param>`.
    pub io: BTreeMap<String, HostTensor>,
}

impl Case {
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("weights.safetensors")
    }

    /// A tensor of `io.safetensors`, or an error naming it.
    pub fn io_tensor(&self, name: &str) -> Result<&HostTensor, CaseError> {
        self.io.get(name).ok_or_else(|| {
            CaseError::new(
                &self.dir.join("io.safetensors"),
                format!("has no tensor {name:?}"),
            )
        })
    }

    /// The expected parameter gradients, by upstream name.
    pub fn param_grads(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.io
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("grad.").map(|name| (name, v)))
    }
}

/// Reads `case.json` and `io.safetensors` of a case folder, checking the shapes they declare.
pub fn load_case(dir: &Path) -> Result<Case, CaseError> {
    let json_path = dir.join("case.json");
    let text = std::fs::read_to_string(&json_path)
        .map_err(|e| CaseError::new(&json_path, e.to_string()))?;
    let spec: CaseSpec = serde_json::from_str(&text)
        .map_err(|e| CaseError::new(&json_path, format!("not a valid case description ({e})")))?;
    let io_path = dir.join("io.safetensors");
    let io = read_safetensors(&io_path)?;
    let case = Case {
        dir: dir.to_path_buf(),
        spec,
        io,
    };
    for (name, shape) in [
        ("input", &case.spec.input_shape),
        ("output", &case.spec.output_shape),
        ("output_grad_seed", &case.spec.output_shape),
    ] {
        let t = case.io_tensor(name)?;
        if &t.shape != shape {
            return Err(CaseError::new(
                &io_path,
                format!("{name} has shape {:?}, case.json says {shape:?}", t.shape),
            ));
        }
    }
    Ok(case)
}

/// Case folders under `path`: the folder itself when it holds `case.json`, else its
/// sub-folders that do (searched two levels deep, so `shared/` finds `reference/*` and
/// `reference-lm/*`), sorted by name.
pub fn discover(path: &Path) -> Result<Vec<PathBuf>, CaseError> {
    if path.join("case.json").is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(CaseError::new(path, "no such case folder"));
    }
    let mut found = Vec::new();
    collect_cases(path, 2, &mut found)?;
    found.sort();
    if found.is_empty() {
        return Err(CaseError::new(
            path,
            "holds no case folders (no case.json found)",
        ));
    }
    Ok(found)
}

fn collect_cases(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<(), CaseError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CaseError::new(dir, e.to_string()))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if !p.is_dir() {
            continue;
        }
        if p.join("case.json").is_file() {
            found.push(p);
        } else if depth > 1 {
            collect_cases(&p, depth - 1, found)?;
        }
    }
    Ok(())
}

/// The folder holding `reference/` and `reference-lm/`: `LINVIT_REFERENCE_DIR`, else the
/// `shared/` folder beside the repository. `None` when neither exists.
pub fn reference_root() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LINVIT_REFERENCE_DIR") {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let beside_repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    beside_repo
        .join("reference")
        .is_dir()
        .then(|| beside_repo.canonicalize().unwrap_or(beside_repo))
}

/// Worst `|a - b| / (abs + rel |b|)` over all elements; pass iff it is `<= 1`. A NaN, an
/// infinity or a length mismatch counts as infinitely bad.
pub fn worst_ratio(actual: &[f32], expected: &[f32], tol: Tolerance) -> f64 {
    if actual.len() != expected.len() {
        return f64::INFINITY;
    }
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &b)| {
            let (a, b) = (a as f64, b as f64);
            let r = (a - b).abs() / (tol.abs + tol.rel * b.abs());
            if r.is_nan() {
                f64::INFINITY
            } else {
                r
            }
        })
        .fold(0.0, f64::max)
}

// What a case run reports, and the reading of its tensors and gradients back to the host in
// upstream names: shared by the vision (`verify`) and language-model (`verify_lm`) cases.

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Numbers out of tolerance; the reason names the worst tensor.
    Fail(String),
    /// A kind of case this build does not implement yet.
    Unsupported(String),
    /// The case could not be run (bad files, weights that do not fit).
    Error(String),
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub case: String,
    pub kind: String,
    pub family: String,
    /// Worst output ratio (`<= 1` passes).
    pub output_ratio: Option<f64>,
    /// Worst ratio over the input gradient and all parameter gradients.
    pub grad_ratio: Option<f64>,
    /// The tensor that gave `grad_ratio`.
    pub worst_grad: Option<String>,
    pub seconds: f64,
    /// Which implementation ran on flex (`linvit_attention::Path`): `auto`, the fused kernels
    /// and fused autodiff nodes, or `ops`, Burn's ops throughout.
    pub path: linvit_attention::Path,
    /// Fused autodiff operations the case's forwards recorded (0 on the op path, and on
    /// backends other than flex).
    pub fused_nodes: usize,
    #[serde(flatten)]
    pub status: Status,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.status == Status::Pass
    }

    /// The header line of a table of these rows (their `Display`).
    pub fn header() -> String {
        format!(
            "{:<34} {:>10} {:>10}  {:<6} detail",
            "case", "output", "gradient", "result"
        )
    }
}

/// The row: the case, its worst output and gradient ratios, the result and its detail.
impl std::fmt::Display for CaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ratio = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let (result, detail) = match &self.status {
            Status::Pass => (
                "PASS",
                format!(
                    "worst {} {}; {} fused nodes",
                    // Decode cases compare prefill logits and recurrent states, not gradients.
                    if self.kind == "decode" {
                        "state/prefill"
                    } else {
                        "gradient"
                    },
                    self.worst_grad.as_deref().unwrap_or("-"),
                    self.fused_nodes
                ),
            ),
            Status::Fail(why) => ("FAIL", why.clone()),
            Status::Unsupported(why) => ("UNSUP", why.clone()),
            Status::Error(why) => ("ERROR", why.clone()),
        };
        write!(
            f,
            "{:<34} {:>10} {:>10}  {:<6} {}",
            self.case,
            ratio(self.output_ratio),
            ratio(self.grad_ratio),
            result,
            detail
        )
    }
}

pub fn to_host<const D: usize>(t: Tensor<D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor");
    HostTensor { shape, data }
}

/// Gradients of every float parameter, by upstream name and in PyTorch layout: Linear weights
/// transposed back to `[out, in]`, LayerNorm `gamma/beta` named `weight/bias`.
pub fn parameter_grads<M: Module>(
    module: &M,
    grads: &Gradients,
) -> std::collections::BTreeMap<String, HostTensor> {
    let mut visitor = GradVisitor {
        grads,
        path: Vec::new(),
        containers: Vec::new(),
        out: Default::default(),
    };
    module.visit(&mut visitor);
    visitor.out
}

struct GradVisitor<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    containers: Vec<String>,
    out: std::collections::BTreeMap<String, HostTensor>,
}

impl ModuleVisitor for GradVisitor<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(grad) = param.val().grad(self.grads) else {
            return;
        };
        let owner = self.containers.last().map(String::as_str).unwrap_or("");
        let mut names: Vec<String> = self
            .path
            .iter()
            .zip(&self.containers)
            .filter(|(_, c)| !c.starts_with("Enum:"))
            .map(|(p, _)| p.clone())
            .collect();
        let mut host = to_host(grad);
        if let Some(last) = names.last_mut() {
            match (owner, last.as_str()) {
                ("Struct:Linear", "weight") if host.shape.len() == 2 => host = transpose(host),
                ("Struct:LayerNorm", "gamma") => *last = "weight".into(),
                ("Struct:LayerNorm", "beta") => *last = "bias".into(),
                _ => {}
            }
        }
        self.out.insert(names.join("."), host);
    }
}

fn transpose(t: HostTensor) -> HostTensor {
    let [r, c] = [t.shape[0], t.shape[1]];
    let mut data = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor {
        shape: vec![c, r],
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_ratio_applies_the_case_rule() {
        let tol = Tolerance { abs: 0.1, rel: 0.5 };
        // |1.3 - 1.0| / (0.1 + 0.5 * 1.0) = 0.5
        assert!((worst_ratio(&[1.3, 2.0], &[1.0, 2.0], tol) - 0.5).abs() < 1e-6);
        assert_eq!(worst_ratio(&[f32::NAN], &[1.0], tol), f64::INFINITY);
        assert_eq!(worst_ratio(&[1.0], &[1.0, 2.0], tol), f64::INFINITY);
    }

    #[test]
    fn grad_tolerance_scales_with_the_largest_reference_value() {
        let g = GradTolerance {
            abs_factor: 1e-3,
            abs_floor: 1e-6,
            rel: 1e-3,
        };
        assert_eq!(g.for_tensor(&[-4.0, 2.0]).abs, 4e-3);
        assert_eq!(g.for_tensor(&[0.0]).abs, 1e-6);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let err = discover(Path::new("/nonexistent/case")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/case"), "{err}");
    }
}
