//! `linvit bench attention|model` and `linvit ablate` as a user runs them.

mod common;
use common::{linvit, linvit_env, scratch};

#[test]
fn bench_attention_reports_every_kind_at_every_token_count_with_memory() {
    let dir = scratch("attention");
    let json = dir.join("attention.json");
    let png = dir.join("attention.png");
    let (code, out, err) = linvit(&[
        "bench",
        "attention",
        "--kinds",
        "softmax,softmax_naive,linear,focused,agent",
        "--tokens",
        "16,64",
        "--batch",
        "1",
        "--heads",
        "2",
        "--head-dim",
        "8",
        "--seconds",
        "0",
        "--min-reps",
        "1",
        "--json",
        "--out",
        json.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report,
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&json).unwrap()).unwrap()
    );
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    for row in rows {
        assert!(row["forward_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["backward_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["peak_bytes"].is_u64(), "{row}");
        assert!(row.get("oom").is_none(), "{row}");
    }
    assert_eq!(rows[0]["kind"], "softmax");
    assert_eq!(rows[9]["tokens"], 64);
    assert!(report["memory"].as_str().unwrap().contains("resident set"));
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
}

#[test]
fn bench_attention_rejects_a_token_count_that_is_not_a_grid() {
    let (code, _, err) = linvit(&["bench", "attention", "--tokens", "200"]);
    assert_eq!(code, 1);
    assert!(err.contains("--tokens") && err.contains("200"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = linvit(&["bench", "attention", "--kinds", "softmx"]);
    assert_eq!(code, 1);
    assert!(err.contains("\"softmx\""), "{err}");
}

/// `linvit bench model --json` of one tiny preset at one resolution, timed once.
fn tiny_bench_model(preset: &str, resolution: &str, more: &[&str]) -> Vec<String> {
    let mut args = vec![
        "bench",
        "model",
        "--presets",
        preset,
        "--resolutions",
        resolution,
        "--batch",
        "2",
        "--seconds",
        "0",
        "--min-reps",
        "1",
        "--json",
    ];
    args.extend(more);
    args.into_iter().map(String::from).collect()
}

#[test]
fn bench_model_times_a_tiny_preset() {
    let args = tiny_bench_model("tiny_flatten_pvt", "64", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = linvit(&args);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &report["rows"][0];
    assert!(row["forward_img_s"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["train_img_s"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["params"].as_u64().unwrap() > 0, "{row}");
    let (code, _, err) = linvit(&["bench", "model", "--presets", "flaten_pvt_t"]);
    assert_eq!(code, 1);
    assert!(err.contains("flatten_pvt_t"), "{err}");
}

#[test]
fn bench_json_names_the_cpu_and_the_instruction_set_that_linvit_isa_narrows() {
    let args = tiny_bench_model("tiny_vit", "32", &["--no-train"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = linvit(&args);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(!report["cpu"].as_str().unwrap().is_empty(), "{report}");
    assert!(report["cores"].as_u64().unwrap() >= 1, "{report}");
    let widest = report["isa"].as_str().unwrap().to_string();
    assert!(
        ["portable", "avx2", "avx512"].contains(&widest.as_str()),
        "{report}"
    );

    // Forcing the baseline path runs and says so.
    let (code, out, err) = linvit_env(&args, &[("LINVIT_ISA", "portable")]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["isa"], "portable", "{report}");
    assert!(report["rows"][0]["forward_img_s"].as_f64().unwrap() > 0.0);

    // A value that is not an instruction set, or one this CPU lacks, is one line naming it.
    let (code, _, err) = linvit_env(&["models"], &[("LINVIT_ISA", "avx3")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("LINVIT_ISA=avx3") && err.contains("avx2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    if widest != "avx512" {
        let (code, _, err) = linvit_env(&["models"], &[("LINVIT_ISA", "avx512")]);
        assert_eq!(code, 1);
        assert!(
            err.contains(&format!("widest instruction set is {widest}")),
            "{err}"
        );
    }
}

#[test]
fn ablate_dry_run_lists_points_and_a_bad_key_is_one_line() {
    let dir = scratch("ablate");
    let exp = dir.join("grid.toml");
    std::fs::write(
        &exp,
        "[ablation]\nseeds = [0, 1]\n[ablation.axes]\n\"model.layout\" = [\"LLLL\", \"LLSS\"]\n",
    )
    .unwrap();
    let (code, out, err) = linvit(&["ablate", exp.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("grid: 4 points"), "{out}");
    assert!(out.contains("layout=LLSS seed=1"), "{out}");

    std::fs::write(
        &exp,
        "[ablation]\n[ablation.axes]\n\"train.epoch\" = [1, 2]\n",
    )
    .unwrap();
    let (code, _, err) = linvit(&["ablate", exp.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`train.epoch`") && err.contains("train.epochs"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
