#!/usr/bin/env python3
"""Time the authors' PyTorch models on this machine, the way `linvit bench model` times ours.

The PyTorch side of the comparison in experiments/bench/README.md ("Against PyTorch on the same
machine"). It builds each preset from the constructor arguments `linvit models --json` lists (the
same numbers our presets are built from) with the authors' own model classes, imported from a
checkout of https://github.com/LeapLabTHU/FLatten-Transformer given by --upstream (their code is
not part of this repository). Each phase is timed as `linvit bench` does it: one untimed warm-up
call, then calls until --seconds have passed (at least 3), and the median call.

Needs torch and timm (the authors' files import timm's DropPath, to_2tuple and trunc_normal_).

    python3 experiments/bench/pytorch_baseline.py --upstream ../FLatten-Transformer \
        --presets flatten_pvt_t,flatten_swin_t --resolution 224 --batch 8 --json
"""

import argparse
import functools
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

# Preset name prefix -> (module under the upstream checkout's `models/`, class name).
UPSTREAM = {
    "flatten_pvt": ("flatten_pvt", "PyramidVisionTransformer"),
    "flatten_swin": ("flatten_swin", "FLattenSwinTransformer"),
}


def preset_args(linvit, names):
    """Each named preset's constructor arguments, as `linvit models --json` lists them."""
    try:
        out = subprocess.run([linvit, "models", "--json"], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"pytorch_baseline: cannot run `{linvit} models --json` (set --linvit or LINVIT): {e}")
    listed = {row["name"]: row["args"] for row in json.loads(out.stdout)}
    for name in names:
        if name not in listed:
            sys.exit(f"pytorch_baseline: no preset {name!r} in `{linvit} models --json`")
    return [(name, listed[name]) for name in names]


def build(upstream, name, args, resolution):
    import torch.nn as nn

    family = next((k for k in UPSTREAM if name.startswith(k)), None)
    if family is None:
        sys.exit(f"pytorch_baseline: preset {name!r} has no upstream class here ({', '.join(UPSTREAM)})")
    module_name, class_name = UPSTREAM[family]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        sys.exit(f"pytorch_baseline: no {class_name} in {os.path.join(upstream, 'models', module_name)}.py: {e}")
    args = dict(args)
    args["img_size"] = resolution
    if isinstance(args.get("norm_layer"), str):
        # `linvit models --json` writes the factories' norm as source text, e.g.
        # "partial(nn.LayerNorm, eps=1e-6)"; the class default is plain nn.LayerNorm.
        eps = re.search(r"eps\s*=\s*([0-9.eE+-]+)", args["norm_layer"])
        args["norm_layer"] = functools.partial(nn.LayerNorm, eps=float(eps.group(1))) if eps else nn.LayerNorm
    return cls(**args).eval()


def check_reference(upstream, root):
    """Load the reference cases' weights into the upstream classes and compare their outputs with
    the stored ones under the cases' own rule, to show that --upstream is the authors' code."""
    import torch
    from safetensors.torch import load_file

    for case in ("flatten_swin_reduced_model", "flatten_pvt_reduced_model"):
        folder = os.path.join(root, case)
        meta = json.load(open(os.path.join(folder, "case.json")))
        args = dict(meta["args"])
        model = build(upstream, case, args, args["img_size"])
        missing, unexpected = model.load_state_dict(
            load_file(os.path.join(folder, "weights.safetensors")), strict=False)
        io = load_file(os.path.join(folder, "io.safetensors"))
        with torch.no_grad():
            out = model(io["input"])
        tol, want = meta["tolerance"], io["output"]
        ratio = ((out - want).abs() / (tol["abs"] + tol["rel"] * want.abs())).max().item()
        print(f"{case}: missing keys {missing}, unexpected keys {unexpected}, "
              f"worst ratio to the tolerance {ratio:.4f}" + (" FAIL" if ratio > 1 else ""))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def median_ms(seconds, f):
    f()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 50):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def summary(path):
    """Markdown table of interleaved pairs (lines of `vs_pytorch.sh`): per preset, each side's
    median and range, and the per-pair ratio linvit / PyTorch."""
    pairs = {}
    for line in open(path):
        r = json.loads(line)
        pairs.setdefault(r["preset"], {}).setdefault(r["pair"], {})[r["side"]] = r["forward_img_s"]

    def spread(xs):
        return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"

    print("| preset | pairs | linvit img/s, median (range) | PyTorch img/s | ratio, median (range) "
          "| pairs >= 1.5x |")
    print("| --- | --- | --- | --- | --- | --- |")
    for preset, by_pair in pairs.items():
        done = [p for p in by_pair.values() if len(p) == 2]
        ours = [p["linvit"] for p in done]
        theirs = [p["pytorch"] for p in done]
        ratios = [p["linvit"] / p["pytorch"] for p in done]
        print(f"| {preset} | {len(done)} | {spread(ours)} | {spread(theirs)} | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{sum(r >= 1.5 for r in ratios)} of {len(done)} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", help="checkout of LeapLabTHU/FLatten-Transformer")
    p.add_argument("--linvit", default=os.environ.get("LINVIT", "target/debug/linvit"))
    p.add_argument("--presets", default="flatten_pvt_t,flatten_swin_t")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--train", action="store_true",
                   help="also time a training step (forward, cross entropy, backward, AdamW)")
    p.add_argument("--json", action="store_true", help="print one JSON object per preset")
    p.add_argument("--check", metavar="REFERENCE_DIR",
                   help="only check --upstream against the FLatten model reference cases in "
                   "REFERENCE_DIR (e.g. ../shared/reference); needs safetensors")
    p.add_argument("--summary", metavar="JSONL",
                   help="only summarise the pairs `vs_pytorch.sh` wrote to JSONL (no torch needed)")
    a = p.parse_args()
    if a.summary:
        return summary(a.summary)
    if not a.upstream:
        p.error("--upstream is required (a checkout of LeapLabTHU/FLatten-Transformer)")

    sys.path.insert(0, os.path.join(a.upstream, "models"))
    if a.check:
        return check_reference(a.upstream, a.check)

    import torch
    import torch.nn as nn

    # The authors' constructors print (`Linear Attention sr_ratio1 f3 kernel5`): everything but
    # the results goes to stderr, so that `--json` output is JSON lines only.
    results = sys.stdout
    sys.stdout = sys.stderr
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    for name, args in preset_args(a.linvit, a.presets.split(",")):
        model = build(a.upstream, name, args, a.resolution)
        x = torch.randn(a.batch, 3, a.resolution, a.resolution)
        with torch.inference_mode():
            forward_ms = median_ms(a.seconds, lambda: model(x))
        row = {
            "preset": name,
            "resolution": a.resolution,
            "batch": a.batch,
            "params": sum(t.numel() for t in model.parameters()),
            "forward_ms": forward_ms,
            "forward_img_s": a.batch * 1e3 / forward_ms,
        }
        if a.train:
            model.train()
            labels = torch.randint(0, 1000, (a.batch,))
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step():
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), labels).backward()
                opt.step()

            row["train_step_ms"] = median_ms(a.seconds, step)
            row["train_img_s"] = a.batch * 1e3 / row["train_step_ms"]
        row.update(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_name())
        if a.json:
            print(json.dumps(row), file=results, flush=True)
        else:
            print(f"{name} {a.resolution}: forward {row['forward_img_s']:.2f} img/s"
                  + (f", train step {row['train_img_s']:.2f} img/s" if a.train else ""),
                  file=results, flush=True)


if __name__ == "__main__":
    main()
