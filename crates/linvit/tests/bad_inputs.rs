//! The bad-input corpus: files and configs a user can get wrong, generated here, each fed to
//! the `linvit` binary. Every case must end with a non-zero exit status and a one-line error
//! on stderr that names the file or key and why, with no panic. The test prints the count.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("linvit-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes `bytes` over file `name` of dataset folder `dir`; returns the file's path.
fn overwrite(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let f = dir.join(name);
    write(&f, bytes);
    f
}

fn be(x: u32) -> [u8; 4] {
    x.to_be_bytes()
}

/// An IDX image file: magic 0x803, count, rows, cols, then `data`.
fn idx_images(count: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
    [&be(0x803)[..], &be(count), &be(rows), &be(cols), data].concat()
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    [&be(0x801)[..], &be(labels.len() as u32), labels].concat()
}

/// A complete, valid Fashion-MNIST-style folder of `n` 28x28 images per split.
fn idx_dataset(dir: &Path, n: u32) {
    for prefix in ["train", "t10k"] {
        let pixels = vec![7u8; (n * 28 * 28) as usize];
        write(
            &dir.join(format!("{prefix}-images-idx3-ubyte")),
            &idx_images(n, 28, 28, &pixels),
        );
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write(
            &dir.join(format!("{prefix}-labels-idx1-ubyte")),
            &idx_labels(&labels),
        );
    }
}

fn cifar_dataset(dir: &Path, records: usize) {
    let record: Vec<u8> = std::iter::once(3u8).chain([9u8; 3072]).collect();
    for name in (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()])
    {
        write(&dir.join(&name), &record.repeat(records));
    }
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let img = image::RgbImage::from_pixel(width, height, image::Rgb([10, 20, 30]));
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// PNG's chunk checksum (CRC-32, polynomial 0xEDB88320), so a forged header is read as valid.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn folder_dataset(dir: &Path) {
    for split in ["train", "val"] {
        for class in ["cat", "dog"] {
            write(&dir.join(split).join(class).join("a.png"), &png(8, 8));
        }
    }
}

/// One bad input: a name, the arguments, and what the error must mention.
struct Case {
    name: &'static str,
    args: Vec<String>,
    mentions: Vec<String>,
}

fn inspect(kind: &str, dir: &Path) -> Vec<String> {
    [
        "data",
        "inspect",
        "--set",
        &format!("data.kind={kind}"),
        "--set",
        &format!("data.path=\"{}\"", dir.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `linvit train` with `sets` on a tiny quick run, so a config that is wrongly accepted fails
/// the test in seconds rather than training the quickstart.
fn train_with(sets: &[&str], out: &Path) -> Vec<String> {
    let mut args = strings(&[
        "train",
        "--set",
        "train.epochs=1",
        "--set",
        "data.train_size=64",
        "--set",
        "data.val_size=32",
        "--set",
        "train.batch_size=32",
    ]);
    for s in sets {
        args.push("--set".into());
        args.push(s.to_string());
    }
    args.extend(["--out".into(), out.display().to_string()]);
    args
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A dataset that `build` makes wrong in `root/name`, opened by `linvit data inspect`; the
/// error must name the file `build` returns.
fn data_case(
    root: &Path,
    name: &'static str,
    kind: &str,
    build: &dyn Fn(&Path) -> PathBuf,
) -> Case {
    let dir = root.join(name);
    let culprit = build(&dir);
    let mut args = inspect(kind, &dir);
    if kind == "image-folder" {
        let classes = std::fs::read_dir(dir.join("train")).unwrap().count();
        args.extend(["--set".into(), format!("data.num_classes={classes}")]);
    }
    Case {
        name,
        args,
        mentions: vec![culprit.display().to_string()],
    }
}

/// IDX files (MNIST / Fashion-MNIST).
fn idx_cases(root: &Path) -> Vec<Case> {
    vec![
        data_case(root, "idx_truncated", "idx", &|d| {
            idx_dataset(d, 10);
            overwrite(
                d,
                "train-images-idx3-ubyte",
                &idx_images(10, 28, 28, &[0u8; 5 * 28 * 28]),
            )
        }),
        data_case(root, "idx_wrong_magic", "idx", &|d| {
            idx_dataset(d, 10);
            let f = d.join("t10k-labels-idx1-ubyte");
            let mut bytes = std::fs::read(&f).unwrap();
            bytes[3] = 0x03;
            write(&f, &bytes);
            f
        }),
        data_case(root, "idx_zero_bytes", "idx", &|d| {
            idx_dataset(d, 10);
            overwrite(d, "train-labels-idx1-ubyte", &[])
        }),
        data_case(root, "idx_huge_dimensions", "idx", &|d| {
            idx_dataset(d, 10);
            overwrite(
                d,
                "train-images-idx3-ubyte",
                &idx_images(2_000_000_000, 65_535, 65_535, &[0u8; 64]),
            )
        }),
        data_case(root, "idx_label_count_mismatch", "idx", &|d| {
            idx_dataset(d, 10);
            overwrite(d, "train-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]))
        }),
        data_case(root, "idx_label_out_of_range", "idx", &|d| {
            idx_dataset(d, 10);
            overwrite(
                d,
                "t10k-labels-idx1-ubyte",
                &idx_labels(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 200]),
            )
        }),
        data_case(root, "idx_corrupt_gzip", "idx", &|d| {
            idx_dataset(d, 10);
            std::fs::remove_file(d.join("train-images-idx3-ubyte")).unwrap();
            overwrite(
                d,
                "train-images-idx3-ubyte.gz",
                &[0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            )
        }),
    ]
}

/// CIFAR-10 binary batches.
fn cifar_cases(root: &Path) -> Vec<Case> {
    vec![
        data_case(root, "cifar_truncated", "cifar10", &|d| {
            cifar_dataset(d, 4);
            overwrite(d, "data_batch_3.bin", &vec![1u8; 3073 * 2 + 100])
        }),
        data_case(root, "cifar_zero_bytes", "cifar10", &|d| {
            cifar_dataset(d, 4);
            overwrite(d, "test_batch.bin", &[])
        }),
        data_case(root, "cifar_label_out_of_range", "cifar10", &|d| {
            cifar_dataset(d, 4);
            let f = d.join("data_batch_1.bin");
            let record: Vec<u8> = std::iter::once(77u8).chain([9u8; 3072]).collect();
            write(&f, &record.repeat(4));
            f
        }),
        data_case(root, "cifar_missing_batch", "cifar10", &|d| {
            cifar_dataset(d, 4);
            let f = d.join("data_batch_5.bin");
            std::fs::remove_file(&f).unwrap();
            f
        }),
    ]
}

/// Image folders (PNG / JPEG).
fn image_folder_cases(root: &Path) -> Vec<Case> {
    vec![
        data_case(root, "png_corrupt", "image-folder", &|d| {
            folder_dataset(d);
            overwrite(
                d,
                "train/cat/b.png",
                b"\x89PNG\r\n\x1a\nthis is not a png at all",
            )
        }),
        data_case(root, "png_zero_bytes", "image-folder", &|d| {
            folder_dataset(d);
            overwrite(d, "val/dog/b.png", &[])
        }),
        data_case(root, "png_truncated", "image-folder", &|d| {
            folder_dataset(d);
            let f = d.join("train/dog/b.png");
            let bytes = png(16, 16);
            write(&f, &bytes[..bytes.len() / 2]);
            f
        }),
        data_case(root, "png_huge_dimensions", "image-folder", &|d| {
            folder_dataset(d);
            let f = d.join("train/cat/huge.png");
            // A valid header declaring 100000 x 100000 pixels and no image data.
            let mut bytes = png(1, 1);
            bytes[16..20].copy_from_slice(&be(100_000));
            bytes[20..24].copy_from_slice(&be(100_000));
            let crc = crc32(&bytes[12..29]);
            bytes[29..33].copy_from_slice(&be(crc));
            write(&f, &bytes[..33]);
            f
        }),
        data_case(root, "jpeg_truncated", "image-folder", &|d| {
            folder_dataset(d);
            let f = d.join("val/cat/b.jpg");
            let mut out = Vec::new();
            image::RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]))
                .write_to(
                    &mut std::io::Cursor::new(&mut out),
                    image::ImageFormat::Jpeg,
                )
                .unwrap();
            write(&f, &out[..out.len() / 3]);
            f
        }),
        data_case(root, "jpeg_wrong_magic", "image-folder", &|d| {
            folder_dataset(d);
            overwrite(d, "train/dog/c.jpeg", b"GIF89a not a jpeg")
        }),
        data_case(root, "image_folder_empty_class", "image-folder", &|d| {
            folder_dataset(d);
            let f = d.join("train/bird");
            std::fs::create_dir_all(&f).unwrap();
            f
        }),
    ]
}

/// Configs: `--set` keys and a file that is not TOML.
fn config_cases(root: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let config_cases: [(&'static str, &[&str], &[&str]); 13] = [
        (
            "config_unknown_key",
            &["train.epoch=3"],
            &["train.epoch", "train.epochs"],
        ),
        // Inside `model.args` the keys are the upstream class's keyword arguments.
        (
            "config_unknown_model_arg",
            &[
                "model.preset=\"tiny_agent_pvt\"",
                "model.args.agent_numm=[4, 9, 16, 4]",
            ],
            &["model.args.agent_numm", "\"agent_num\""],
        ),
        (
            "config_model_arg_wrong_type",
            &["model.args.depths=\"deep\""],
            &["model.args.depths", "list of integers"],
        ),
        (
            "config_model_arg_not_modelled",
            &["model.args.qk_scale=0.5"],
            &["model.args.qk_scale", "default"],
        ),
        ("config_wrong_type", &["train.lr=\"fast\""], &["train.lr"]),
        ("config_negative_lr", &["train.lr=-0.1"], &["train.lr"]),
        (
            "config_zero_heads",
            &["model.args.num_heads=[0, 2, 3, 4]"],
            &["num_heads"],
        ),
        (
            "config_dims_not_divisible_by_heads",
            &["model.args.embed_dims=[16, 33, 48, 64]"],
            &["divisible"],
        ),
        (
            "config_agent_num_not_square",
            &[
                "model.preset=\"tiny_agent_pvt\"",
                "model.args.agent_num=[5, 9, 16, 4]",
            ],
            &["agent_num"],
        ),
        // A window larger than the map is clamped to the map, as upstream Swin does; one that
        // does not tile the map is an error.
        (
            "config_window_not_tiling_the_map",
            &["model.preset=\"tiny_swin\"", "model.args.window_size=5"],
            &["window 5"],
        ),
        (
            "config_unknown_preset",
            &["model.preset=\"flaten_pvt_t\""],
            &["flaten_pvt_t", "flatten_pvt_t"],
        ),
        (
            "config_unknown_layout_letter",
            &["model.layout=\"LLXS\""],
            &["X"],
        ),
        (
            "config_zero_batch",
            &["train.batch_size=0"],
            &["train.batch_size"],
        ),
    ];
    for (name, sets, mentions) in config_cases {
        cases.push(Case {
            name,
            args: train_with(sets, &root.join(name)),
            mentions: strings(mentions),
        });
    }
    let bad_file = root.join("bad.toml");
    write(&bad_file, b"[train\nepochs = 3");
    cases.push(Case {
        name: "config_file_not_toml",
        args: strings(&["train", "--config", bad_file.to_str().unwrap()]),
        mentions: vec![bad_file.display().to_string()],
    });
    cases
}

/// Checkpoints: copies of a trained model folder whose files do not fit.
fn checkpoint_cases(root: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let good = root.join("ckpt_good");
    let out = Command::new(env!("CARGO_BIN_EXE_linvit"))
        .args(train_with(&[], &good))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let best = good.join("best");
    let mut ckpt_case = |name: &'static str, edit: &dyn Fn(&Path) -> PathBuf| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&best).unwrap().flatten() {
            std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
        }
        let culprit = edit(&dir);
        cases.push(Case {
            name,
            args: strings(&["eval", "--checkpoint", dir.to_str().unwrap()]),
            mentions: vec![culprit.display().to_string()],
        });
    };
    let edit_json = |dir: &Path, from: &str, to: &str| -> PathBuf {
        let f = dir.join("model.json");
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains(from), "{from} not in {text}");
        write(&f, text.replacen(from, to, 1).as_bytes());
        f
    };
    ckpt_case("ckpt_weights_truncated", &|d| {
        let f = d.join("model.bpk");
        let bytes = std::fs::read(&f).unwrap();
        write(&f, &bytes[..bytes.len() / 2]);
        f
    });
    ckpt_case("ckpt_weights_zero_bytes", &|d| {
        overwrite(d, "model.bpk", &[])
    });
    ckpt_case("ckpt_weights_missing", &|d| {
        let f = d.join("model.bpk");
        std::fs::remove_file(&f).unwrap();
        f
    });
    ckpt_case("ckpt_config_not_json", &|d| {
        overwrite(d, "model.json", b"{\"family\": ")
    });
    ckpt_case("ckpt_misshaped_tensors", &|d| {
        edit_json(
            d,
            "\"embed_dims\": [\n    16,",
            "\"embed_dims\": [\n    24,",
        );
        d.join("model.bpk")
    });
    ckpt_case("ckpt_missing_tensors", &|d| {
        edit_json(d, "\"depths\": [\n    2,", "\"depths\": [\n    3,");
        d.join("model.bpk")
    });
    ckpt_case("ckpt_extra_tensors", &|d| {
        edit_json(d, "\"depths\": [\n    2,", "\"depths\": [\n    1,");
        d.join("model.bpk")
    });
    cases
}

/// Runs `case`: its one error line, or what is wrong with how it failed.
fn run_case(case: &Case) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_linvit"))
        .args(&case.args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    let problem = if out.status.success() {
        Some("exited 0".to_string())
    } else if err.contains("panicked") {
        Some("panicked".into())
    } else if error_lines.len() != 1 {
        Some(format!("{} error lines", error_lines.len()))
    } else {
        (case.mentions.iter())
            .find(|m| !error_lines[0].contains(m.as_str()))
            .map(|m| format!("the error does not name {m:?}"))
    };
    match problem {
        Some(p) => Err(format!("{}: {p}\n{err}", case.name)),
        None => Ok(error_lines[0].to_string()),
    }
}

#[test]
fn every_bad_input_gets_a_one_line_error_naming_it_and_no_panic() {
    let root = scratch();
    let cases: Vec<Case> = [
        idx_cases(&root),
        cifar_cases(&root),
        image_folder_cases(&root),
        config_cases(&root),
        checkpoint_cases(&root),
    ]
    .into_iter()
    .flatten()
    .collect();
    let total = cases.len();
    let mut failures = Vec::new();
    for case in &cases {
        match run_case(case) {
            Ok(line) => println!("{:<36} {line}", case.name),
            Err(p) => {
                eprintln!("PROBLEM {}", p.lines().next().unwrap_or_default());
                failures.push(p);
            }
        }
    }
    println!(
        "bad-input corpus: {total} cases, {} clear errors, {} problems",
        total - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    std::fs::remove_dir_all(&root).ok();
}
