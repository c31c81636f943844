//! `linvit verify` reads a case written in any of the forms the authors' code is called in. Each
//! public reference case is rewritten into another form (same weights, inputs and expected
//! tensors, another `case.json`) and must still pass:
//! - model cases with only the keyword arguments that differ from the class defaults;
//! - model cases as one of the authors' factories plus overrides (`create_model(name, **kw)`);
//! - agent counts as strings, as the authors' argparse passes them (`"9-16-49-49".split('-')`);
//! - SRMSNorm and the GLU channel mixer on a 4-D input (upstream takes any leading dimensions).
//!
//! Without the cases (no `LINVIT_REFERENCE_DIR`, no `../shared`), the tests say so and skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use linvit::reference::{discover, read_header, reference_root};
use linvit::verify::{verify_case, Status};
use linvit_models::upstream::{class, same, FACTORIES};
use serde_json::{Map, Value};

fn reference(sub: &str) -> Option<PathBuf> {
    let root = reference_root().map(|r| r.join(sub)).filter(|r| r.is_dir());
    if root.is_none() {
        eprintln!("SKIPPED: {sub} conformance cases not found (set LINVIT_REFERENCE_DIR)");
    }
    root
}

/// A copy of the case folder `src` under a scratch folder, with `case.json` replaced.
fn rewritten(src: &Path, form: &str, json: &Value) -> PathBuf {
    let name = src.file_name().unwrap().to_string_lossy().to_string();
    let dir = std::env::temp_dir()
        .join(format!("linvit-forms-{}", std::process::id()))
        .join(form)
        .join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["weights.safetensors", "io.safetensors"] {
        std::fs::copy(src.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("case.json"),
        serde_json::to_string_pretty(json).unwrap(),
    )
    .unwrap();
    dir
}

fn case_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap()
}

/// Runs each rewritten case through `linvit verify`'s function; all must pass.
fn all_pass(cases: &[PathBuf], form: &str) {
    assert!(
        !cases.is_empty(),
        "no case was rewritten into the {form} form"
    );
    let mut failures = Vec::new();
    for dir in cases {
        let report = verify_case(dir, &Device::flex());
        eprintln!(
            "{form}: {:<30} output {:.4} gradient {:.4} {:?}",
            report.case,
            report.output_ratio.unwrap_or(f64::NAN),
            report.grad_ratio.unwrap_or(f64::NAN),
            report.status
        );
        if report.status != Status::Pass {
            failures.push(format!("{}: {:?}", report.case, report.status));
        }
    }
    eprintln!("{form}: {} cases rewritten, all checked", cases.len());
    assert!(failures.is_empty(), "{form}:\n{}", failures.join("\n"));
}

/// The public model cases with their upstream class file.
fn model_cases(root: &Path) -> Vec<(PathBuf, String)> {
    discover(root)
        .unwrap()
        .into_iter()
        .filter_map(|dir| {
            let header = read_header(&dir).ok()?;
            (header.kind == "model").then(|| (dir, header.upstream_file()))
        })
        .collect()
}

#[test]
fn model_cases_with_only_the_arguments_that_differ_from_the_class_defaults_pass() {
    let Some(root) = reference("reference") else {
        return;
    };
    let mut cases = Vec::new();
    let mut dropped = 0;
    for (dir, file) in model_cases(&root) {
        let defaults = class(&file).unwrap().defaults();
        let mut json = case_json(&dir);
        let args = json["args"].as_object().unwrap().clone();
        let kept: Map<String, Value> = args
            .into_iter()
            .filter(|(k, v)| !defaults.get(k).is_some_and(|d| same(d, v)))
            .collect();
        dropped += json["args"].as_object().unwrap().len() - kept.len();
        json["args"] = Value::Object(kept);
        cases.push(rewritten(&dir, "defaults-omitted", &json));
    }
    assert!(
        dropped >= 20,
        "only {dropped} default arguments were left out"
    );
    all_pass(&cases, "defaults-omitted");
}

#[test]
fn model_cases_written_as_a_factory_call_with_overrides_pass() {
    let Some(root) = reference("reference") else {
        return;
    };
    let mut cases = Vec::new();
    for (dir, file) in model_cases(&root) {
        // The factory of the case's class whose call needs the fewest overrides.
        let defaults = class(&file).unwrap().defaults();
        let json = case_json(&dir);
        let given = json["args"].as_object().unwrap().clone();
        let overrides = |kwargs: &Value| -> Map<String, Value> {
            let kwargs = kwargs.as_object().unwrap();
            let mut out = Map::new();
            for key in given.keys().chain(kwargs.keys()) {
                // What the case's call means for this key: its value, else the class default.
                let wanted = given.get(key).or_else(|| defaults.get(key)).unwrap();
                if !kwargs.get(key).is_some_and(|v| same(v, wanted)) {
                    out.insert(key.clone(), wanted.clone());
                }
            }
            out
        };
        let best = FACTORIES
            .iter()
            .filter(|f| f.file == file)
            .map(|f| (f.name, overrides(&f.kwargs())))
            .min_by_key(|(_, o)| o.len());
        let Some((name, args)) = best else {
            continue; // no factory for this class (the Swins, timm)
        };
        let mut json = json.clone();
        json["upstream"]["factory"] = name.into();
        json["args"] = Value::Object(args);
        cases.push(rewritten(&dir, "factory", &json));
    }
    assert!(
        cases.len() >= 6,
        "only {} cases have a factory",
        cases.len()
    );
    all_pass(&cases, "factory");
}

/// `agent_num` (a list per stage, or one count) with every number as a string.
fn agent_num_as_strings(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(agent_num_as_strings).collect()),
        Value::Number(n) => Value::String(n.to_string()),
        other => other.clone(),
    }
}

#[test]
fn agent_cases_with_counts_as_strings_pass() {
    let Some(root) = reference("reference") else {
        return;
    };
    let mut cases = Vec::new();
    for dir in discover(&root).unwrap() {
        let mut json = case_json(&dir);
        let Some(agent_num) = json["args"].get("agent_num").cloned() else {
            continue;
        };
        json["args"]["agent_num"] = agent_num_as_strings(&agent_num);
        cases.push(rewritten(&dir, "strings", &json));
    }
    assert!(cases.len() >= 8, "only {} agent cases", cases.len());
    all_pass(&cases, "strings");
}

/// Rewrites every tensor of shape `from` in `io.safetensors` to shape `to` (same data).
fn reshape_io(dir: &Path, from: &[usize], to: &[usize]) {
    let path = dir.join("io.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = if view.shape() == from {
                to.to_vec()
            } else {
                view.shape().to_vec()
            };
            let view =
                safetensors::tensor::TensorView::new(view.dtype(), shape, view.data()).unwrap();
            (name, view)
        })
        .collect();
    let out = safetensors::serialize(tensors, None::<HashMap<String, String>>).unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn srmsnorm_and_glu_pass_on_a_4d_input() {
    let Some(root) = reference("reference-lm") else {
        return;
    };
    let mut cases = Vec::new();
    for (name, from, to) in [
        ("srmsnorm", [2, 100, 192], [2, 10, 10, 192]),
        ("tnl_glu", [2, 50, 64], [2, 5, 10, 64]),
    ] {
        let src = root.join(name);
        let mut json = case_json(&src);
        json["input_shape"] = to.to_vec().into();
        json["output_shape"] = to.to_vec().into();
        let dir = rewritten(&src, "4d", &json);
        reshape_io(&dir, &from, &to);
        cases.push(dir);
    }
    all_pass(&cases, "4d");
}
