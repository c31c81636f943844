//! The ablation runner: points from variants x axes x seeds, errors that name the bad key, and
//! resumability (a finished point is read back, not trained again).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use linvit_train::ablate::{
    report, run_experiment, AblateError, AblateOptions, Experiment, PointResult, POINT_FILE,
};
use linvit_train::bench::Rounds;
use linvit_train::{Progress, TrainOptions};

/// A tiny run on the procedural dataset: seconds per point.
const BASE: &str = r#"
[model]
preset = "tiny_vit"

[data]
kind = "synthetic"
image_size = 32
num_classes = 2
train_size = 64
val_size = 32
num_workers = 1

[data.augment]
randaugment_ops = 0
erase_prob = 0.0
mixup_alpha = 0.0
cutmix_alpha = 0.0
label_smoothing = 0.0

[train]
epochs = 1
batch_size = 32
lr = 1e-3
warmup_epochs = 0
log_every = 1
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("linvit-ablate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn experiment_file(dir: &Path, ablation: &str) -> PathBuf {
    let path = dir.join("exp.toml");
    std::fs::write(&path, format!("[ablation]\n{ablation}\n{BASE}")).unwrap();
    path
}

#[test]
fn points_are_variants_times_axes_times_seeds() {
    let dir = scratch("points");
    let path = experiment_file(
        &dir,
        r#"seeds = [0, 1]
variants = [
  { name = "linear", set = { "model.attention" = { kind = "linear" } } },
  { name = "softmax", set = { "model.attention.kind" = "softmax" } },
]
[ablation.axes]
"train.lr" = [1e-3, 2e-3, 4e-3]
"#,
    );
    let exp = Experiment::load(&path, &[]).unwrap();
    assert_eq!(exp.points.len(), 2 * 3 * 2);
    assert_eq!(exp.points[0].label(), "linear, lr=0.001 seed=0");
    assert_eq!(exp.points[11].label(), "softmax, lr=0.004 seed=1");
    assert_eq!(exp.points[3].config.train.lr, 2e-3);
    assert_eq!(exp.points[3].config.train.seed, 1);
    assert_eq!(
        exp.points[0]
            .config
            .model
            .attention
            .as_ref()
            .unwrap()
            .kind()
            .name(),
        "linear"
    );
    let hashes: std::collections::BTreeSet<&str> =
        exp.points.iter().map(|p| p.hash.as_str()).collect();
    assert_eq!(hashes.len(), 12, "every point resolves to its own config");
    let listing = exp.listing(&dir.join("runs"));
    assert!(listing.starts_with("exp: 12 points"), "{listing}");
    assert_eq!(listing.matches("to run").count(), 12, "{listing}");
}

#[test]
fn a_kind_axis_resets_the_family_so_its_own_keys_apply() {
    let dir = scratch("kind");
    let path = experiment_file(
        &dir,
        r#"[ablation.axes]
"model.attention.kind" = ["linear", "focused"]
"model.attention.kernel_size" = [0, 3]
"#,
    );
    let exp = Experiment::load(&path, &["train.epochs=2".into()]).unwrap();
    assert_eq!(exp.points.len(), 4);
    assert_eq!(exp.points[3].label(), "kind=focused, kernel_size=3");
    assert_eq!(exp.points[3].config.train.epochs, 2);
}

#[test]
fn an_unknown_axis_key_is_one_line_naming_it() {
    let dir = scratch("badkey");
    let path = experiment_file(
        &dir,
        r#"[ablation.axes]
"train.lrr" = [1e-3]
"#,
    );
    let err = Experiment::load(&path, &[]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AblateError::Key { .. }), "{text}");
    assert!(text.contains("`train.lrr`"), "{text}");
    assert!(text.contains("did you mean `train.lr`"), "{text}");
    assert!(text.contains("exp.toml"), "{text}");
    assert!(!text.contains('\n'), "{text}");

    let path = experiment_file(
        &dir,
        r#"[ablation.axes]
"model.attention.focusing_factr" = [2]
"#,
    );
    let text = Experiment::load(&path, &["model.attention={kind=\"focused\"}".into()])
        .unwrap_err()
        .to_string();
    assert!(text.contains("focusing_factr"), "{text}");
    assert!(text.contains("focusing_factor"), "{text}");
}

#[test]
fn an_axis_that_is_not_a_list_is_an_error() {
    let dir = scratch("notlist");
    let path = experiment_file(&dir, "[ablation.axes]\n\"train.lr\" = 0.1\n");
    let text = Experiment::load(&path, &[]).unwrap_err().to_string();
    assert!(text.contains("train.lr") && text.contains("list"), "{text}");
}

/// Quiet training, and a short step benchmark: tests check that it ran, not its figure.
fn options(jobs: usize) -> AblateOptions {
    AblateOptions {
        train: TrainOptions {
            progress: Progress::Quiet,
            ..TrainOptions::default()
        },
        jobs,
        budget: Rounds {
            rounds: 2,
            seconds: 0.0,
        },
        ..AblateOptions::default()
    }
}

#[test]
fn a_finished_point_is_not_trained_again() {
    let dir = scratch("resume");
    let path = experiment_file(
        &dir,
        r#"[ablation.axes]
"train.lr" = [1e-3, 2e-3]
"#,
    );
    let exp = Experiment::load(&path, &[]).unwrap();
    let runs = dir.join("runs");
    let out = dir.join("out");
    let first = run_experiment(&exp, &runs, &out, &Device::flex(), &options(1)).unwrap();
    assert_eq!(first.len(), 2);
    for r in &first {
        assert!(
            r.final_top1.is_some() && r.params > 0 && r.macs > 0,
            "{r:?}"
        );
        assert!(r.run_dir.join(POINT_FILE).exists());
        let step = r.step.as_ref().expect("every point's step is timed");
        assert!(step.img_s > 0.0 && step.batch == 32, "{step:?}");
        assert_eq!((step.rounds, step.steps), (2, 4), "{step:?}");
        assert_eq!(r.memberships.len(), 1);
    }
    assert_eq!(first[1].memberships[0].index, 1);
    assert_eq!(first[1].memberships[0].group, "lr=0.002");
    for file in [
        "results.csv",
        "results.md",
        "accuracy_vs_throughput.png",
        "curves.png",
    ] {
        assert!(out.join(file).exists(), "{file}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| lr=0.001 |") && md.contains("| lr=0.002 |"),
        "{md}"
    );

    // Mark the first point's record; a rerun must read it back instead of training or timing.
    let record = first[0].run_dir.join(POINT_FILE);
    let mut marked: PointResult =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    marked.seconds = 12345.0;
    marked.step.as_mut().unwrap().img_s = 777.0;
    std::fs::write(&record, serde_json::to_string(&marked).unwrap()).unwrap();
    let metrics = first[0].run_dir.join("metrics.csv");
    let before = std::fs::metadata(&metrics).unwrap().modified().unwrap();
    let listing = exp.listing(&runs);
    assert_eq!(listing.matches("finished").count(), 2, "{listing}");

    let second = run_experiment(&exp, &runs, &out, &Device::flex(), &options(1)).unwrap();
    assert_eq!(second[0].seconds, 12345.0);
    assert_eq!(second[0].step.as_ref().unwrap().img_s, 777.0);
    assert_eq!(
        std::fs::metadata(&metrics).unwrap().modified().unwrap(),
        before
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.contains(",777.0,") && csv.contains(",12345,"), "{csv}");

    // --rebench times the step again, and only that.
    let rebench = AblateOptions {
        rebench: true,
        ..options(1)
    };
    let third = run_experiment(&exp, &runs, &out, &Device::flex(), &rebench).unwrap();
    assert_ne!(third[0].step.as_ref().unwrap().img_s, 777.0);
    assert_eq!(third[0].seconds, 12345.0);
}

#[test]
fn the_report_rebuilds_every_table_and_plot_from_run_directories_alone() {
    let dir = scratch("report");
    let path = experiment_file(
        &dir,
        r#"seeds = [0, 1]
[ablation.axes]
"model.attention.kind" = ["linear", "softmax"]
"#,
    );
    let exp = Experiment::load(&path, &[]).unwrap();
    let runs = dir.join("runs");
    let out = dir.join("out");
    // Two points at a time: every point trains and is recorded, without peak memory (the
    // points share the process). Their numbers may differ from one-at-a-time runs in the last
    // bits, as the points share the thread pool, so they are not compared.
    let together = run_experiment(&exp, &runs, &out, &Device::flex(), &options(2)).unwrap();
    assert_eq!(together.len(), 4);
    for r in &together {
        assert!(r.peak_rss_bytes.is_none(), "{r:?}");
        assert!(
            r.final_top1.is_some_and(|t| (0.0..=1.0).contains(&t)),
            "{r:?}"
        );
        assert!(r.step.is_some(), "{r:?}");
    }

    // Rebuilt elsewhere, from the run directories given one by one in another order.
    let mut dirs: Vec<PathBuf> = together.iter().map(|r| r.run_dir.clone()).collect();
    dirs.reverse();
    let rebuilt = dir.join("rebuilt");
    let written = report(&dirs, Some(&rebuilt)).unwrap();
    assert_eq!(written, vec![rebuilt.clone()]);
    for file in [
        "results.csv",
        "results.md",
        "accuracy_vs_throughput.png",
        "curves.png",
    ] {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(rebuilt.join(file)).unwrap(),
            "{file} differs"
        );
    }
    // A folder of run directories works too, and the default folder is next to the file.
    let written = report(std::slice::from_ref(&runs), None).unwrap();
    assert_eq!(written, vec![dir.join("exp")]);

    // A missing point is named.
    let text = report(&dirs[1..], None).unwrap_err().to_string();
    assert!(
        text.contains("exp.toml") && text.contains("points 4 of 4"),
        "{text}"
    );
    // A folder with no finished run is one line naming it.
    let text = report(&[dir.join("out")], None).unwrap_err().to_string();
    assert!(text.contains("out") && text.contains(POINT_FILE), "{text}");
}
