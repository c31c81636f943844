#!/usr/bin/env python3
"""Time the authors' PyTorch models on this machine, the way `linvit bench model` times ours.

The PyTorch side of the comparisons in experiments/bench/README.md ("Against PyTorch on the same
machine") and experiments/bench/vs_pytorch.md. It builds each preset from the constructor
arguments `linvit models --json` lists (the same numbers our presets are built from) with the
authors' own model classes, imported from checkouts given by --upstream (their code is not part
of this repository): https://github.com/LeapLabTHU/FLatten-Transformer for the FLatten presets,
https://github.com/LeapLabTHU/Agent-Attention for the agent presets. A model whose parameter
count differs from ours stops the run. Each phase is timed as `linvit bench` does it: one
untimed warm-up call, then calls until --seconds have passed (at least 3), and the median call;
its peak memory is the peak resident set above the one before the phase, as `linvit bench`
measures it (`/proc/self/clear_refs` resets the peak).

Needs torch, einops and timm 0.4.12 (the authors' pinned version: their files import timm's
DropPath, to_2tuple and trunc_normal_, and Agent-Attention's deit.py registers models the old way).

    python3 experiments/bench/pytorch_baseline.py --upstream ../FLatten-Transformer \
        --upstream ../Agent-Attention --presets flatten_pvt_t,agent_deit_t --train --json
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

# The upstream file a preset names (`linvit models --json`, "upstream") -> the class in it.
CLASSES = {
    "flatten_pvt.py": "PyramidVisionTransformer",
    "flatten_swin.py": "FLattenSwinTransformer",
    "agent_deit.py": "VisionTransformer",
    "agent_pvt.py": "PyramidVisionTransformer",
    "agent_swin.py": "AgentSwinTransformer",
}


def add_upstream(checkout):
    """Makes a checkout's model files importable: FLatten-Transformer's `models/` as top-level
    modules, Agent-Attention's `agent_transformer/models/` as the package `agent_models` (its
    files import each other relatively)."""
    import importlib.util

    flatten = os.path.join(checkout, "models")
    agent = os.path.join(checkout, "agent_transformer", "models")
    if os.path.isfile(os.path.join(agent, "__init__.py")):
        spec = importlib.util.spec_from_file_location(
            "agent_models", os.path.join(agent, "__init__.py"), submodule_search_locations=[agent])
        module = importlib.util.module_from_spec(spec)
        sys.modules["agent_models"] = module
        spec.loader.exec_module(module)
    elif os.path.isdir(flatten):
        sys.path.insert(0, flatten)
    else:
        sys.exit(f"pytorch_baseline: {checkout} holds neither models/ nor agent_transformer/models/")


def preset_args(linvit, names):
    """Each named preset's row of `linvit models --json`: its upstream file, constructor
    arguments and parameter count."""
    try:
        out = subprocess.run([linvit, "models", "--json"], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"pytorch_baseline: cannot run `{linvit} models --json` (set --linvit or LINVIT): {e}")
    listed = {row["name"]: row for row in json.loads(out.stdout)}
    for name in names:
        if name not in listed:
            sys.exit(f"pytorch_baseline: no preset {name!r} in `{linvit} models --json`")
    return [listed[name] for name in names]


def recipe_row(linvit, path):
    """The model a training recipe (`configs/*.toml`) trains, as a row like `preset_args`'s: its
    preset's arguments with the recipe's `[model] args` on top, its image size and channels, 10
    classes (Fashion-MNIST's), at the recipe's batch size."""
    import tomllib

    with open(path, "rb") as f:
        recipe = tomllib.load(f)
    model, data = recipe["model"], recipe.get("data", {})
    row = dict(preset_args(linvit, [model["preset"]])[0])
    args = {**row["args"], **model.get("args", {})}
    args["in_chans"] = data.get("channels", 3)
    args["num_classes"] = model.get("num_classes", 10)
    row.update(name=os.path.basename(path).removesuffix(".toml"), args=args, params=None,
               resolution=data.get("image_size", 224), batch=recipe.get("train", {}).get("batch_size"))
    return row


def build(file, args, resolution):
    import torch.nn as nn

    if file not in CLASSES:
        sys.exit(f"pytorch_baseline: no upstream class for {file!r} here ({', '.join(CLASSES)})")
    module_name = file.removesuffix(".py")
    if module_name.startswith("agent_"):
        module_name = "agent_models." + module_name
    try:
        cls = getattr(importlib.import_module(module_name), CLASSES[file])
    except (ImportError, AttributeError) as e:
        sys.exit(f"pytorch_baseline: no {CLASSES[file]} in {file} (is its checkout an --upstream?): {e}")
    args = dict(args)
    args["img_size"] = resolution
    if isinstance(args.get("norm_layer"), str):
        # `linvit models --json` writes the factories' norm as source text, e.g.
        # "partial(nn.LayerNorm, eps=1e-6)"; the class default is plain nn.LayerNorm.
        eps = re.search(r"eps\s*=\s*([0-9.eE+-]+)", args["norm_layer"])
        args["norm_layer"] = functools.partial(nn.LayerNorm, eps=float(eps.group(1))) if eps else nn.LayerNorm
    return cls(**args).eval()


def check_reference(root):
    """Load the reference cases' weights into the upstream classes and compare their outputs with
    the stored ones under the cases' own rule, to show that --upstream is the authors' code."""
    import torch
    from safetensors.torch import load_file

    for case in sorted(os.listdir(root)):
        folder = os.path.join(root, case)
        if not os.path.isfile(os.path.join(folder, "case.json")):
            continue
        meta = json.load(open(os.path.join(folder, "case.json")))
        file = os.path.basename(meta.get("upstream", {}).get("file", ""))
        if meta.get("kind") != "model" or file not in CLASSES:
            continue
        args = dict(meta["args"])
        model = build(file, args, args["img_size"])
        missing, unexpected = model.load_state_dict(
            load_file(os.path.join(folder, "weights.safetensors")), strict=False)
        io = load_file(os.path.join(folder, "io.safetensors"))
        with torch.no_grad():
            out = model(io["input"])
        tol, want = meta["tolerance"], io["output"]
        ratio = ((out - want).abs() / (tol["abs"] + tol["rel"] * want.abs())).max().item()
        print(f"{case}: missing keys {missing}, unexpected keys {unexpected}, "
              f"worst ratio to the tolerance {ratio:.4f}" + (" FAIL" if ratio > 1 else ""),
              file=sys.__stdout__)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def median_ms(seconds, f):
    """The median time of `f` over calls for `seconds` (at least 3, at most 50) after one
    untimed call. `f` must return only once its work is done (synchronise a GPU inside it)."""
    f()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 50):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def proc_status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


class PeakMemory:
    """The peak resident set of a phase above the one before it, as `linvit bench` measures
    it: freed memory returned to the system first (gc, malloc_trim), then the peak reset."""

    def __enter__(self):
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.base = proc_status_kb("VmRSS:")
        return self

    def __exit__(self, *exc):
        self.bytes = (proc_status_kb("VmHWM:") - self.base) * 1024


class CudaPeakMemory:
    """[`PeakMemory`] on the GPU: the peak of `torch.cuda.max_memory_allocated` over the phase
    above what was allocated before it."""

    def __enter__(self):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        import torch

        torch.cuda.synchronize()
        self.bytes = torch.cuda.max_memory_allocated() - self.base


def summary(path):
    """Markdown tables of interleaved pairs (lines of `vs_pytorch.sh`): per preset and phase,
    each side's median and range, and the per-pair ratio linvit / PyTorch; and the training
    step's peak memory."""
    rows = [json.loads(line) for line in open(path)]
    by = {}
    for r in rows:
        by.setdefault(r["preset"], {}).setdefault(r["pair"], {})[r["side"]] = r

    def spread(xs, digits=1):
        return f"{statistics.median(xs):.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"

    for phase, key, target in [("forward", "forward_img_s", 1.5), ("training step", "train_img_s", 1.3)]:
        lines = []
        for preset, pairs in by.items():
            done = [p for p in pairs.values() if key in p.get("linvit", {}) and key in p.get("pytorch", {})]
            if not done:
                continue
            ours = [p["linvit"][key] for p in done]
            theirs = [p["pytorch"][key] for p in done]
            ratios = [a / b for a, b in zip(ours, theirs)]
            lines.append(f"| {preset} | {len(done)} | {spread(ours)} | {spread(theirs)} | "
                         f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
                         f"{sum(r >= target for r in ratios)} of {len(done)} |")
        print_table(f"{phase}, img/s:",
                    f"| preset | pairs | linvit, median (range) | PyTorch | ratio, median (range) "
                    f"| pairs >= {target}x |", lines)
    lines = []
    for preset, pairs in by.items():
        done = [p for p in pairs.values() if "train_peak_bytes" in p.get("linvit", {})
                and "train_peak_bytes" in p.get("pytorch", {})]
        if not done:
            continue
        ours = [p["linvit"]["train_peak_bytes"] / 2**20 for p in done]
        theirs = [p["pytorch"]["train_peak_bytes"] / 2**20 for p in done]
        lines.append(f"| {preset} | {spread(ours, 0)} | {spread(theirs, 0)} | "
                     f"{statistics.median(ours) / statistics.median(theirs):.2f} |")
    print_table("training step, peak resident set above the one before the phase, MiB:",
                "| preset | linvit, median (range) | PyTorch | linvit / PyTorch |", lines)


def print_table(title, header, lines):
    """A Markdown table under `title`, or nothing where it has no rows."""
    if not lines:
        return
    print(f"\n{title}\n\n{header}")
    print("|" + " --- |" * (header.count("|") - 1))
    for line in lines:
        print(line)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", action="append", default=[],
                   help="a checkout of LeapLabTHU/FLatten-Transformer or LeapLabTHU/Agent-Attention "
                   "(repeat for both)")
    p.add_argument("--linvit", default=os.environ.get("LINVIT", "target/debug/linvit"))
    p.add_argument("--presets", default="flatten_pvt_t,flatten_swin_t",
                   help="comma-separated preset names, or recipes (configs/*.toml: their model, "
                   "image size, channels and batch size)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda for PyTorch eager on the GPU (memory then is "
                   "torch.cuda.max_memory_allocated, not the resident set)")
    p.add_argument("--train", action="store_true",
                   help="also time a training step (forward, cross entropy, backward, AdamW)")
    p.add_argument("--json", action="store_true", help="print one JSON object per preset")
    p.add_argument("--check", metavar="REFERENCE_DIR",
                   help="only check --upstream against the model reference cases in REFERENCE_DIR "
                   "(e.g. ../shared/reference) whose classes it holds; needs safetensors")
    p.add_argument("--summary", metavar="JSONL",
                   help="only summarise the pairs `vs_pytorch.sh` wrote to JSONL (no torch needed)")
    a = p.parse_args()
    if a.summary:
        return summary(a.summary)
    if not a.upstream:
        p.error("--upstream is required (checkouts of FLatten-Transformer and/or Agent-Attention)")

    # The authors' constructors print (`Linear Attention sr_ratio1 f3 kernel5`): everything but
    # the results goes to stderr, so that `--json` output is JSON lines only.
    results = sys.stdout
    sys.stdout = sys.stderr
    for checkout in a.upstream:
        add_upstream(checkout)
    if a.check:
        return check_reference(a.check)

    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    names = a.presets.split(",")
    rows = [recipe_row(a.linvit, n) if n.endswith(".toml") else preset_args(a.linvit, [n])[0]
            for n in names]
    for preset in rows:
        name = preset["name"]
        resolution = preset.get("resolution", a.resolution)
        batch = preset.get("batch") or a.batch
        model = build(preset["upstream"], preset["args"], resolution)
        params = sum(t.numel() for t in model.parameters())
        if preset["params"] is not None and params != preset["params"]:
            sys.exit(f"pytorch_baseline: {name}: the authors' model has {params} parameters, "
                     f"ours {preset['params']}; not the same model")
        device = torch.device(a.device)
        model = model.to(device)
        channels = preset["args"].get("in_chans", 3)
        classes = preset["args"].get("num_classes", 1000)
        x = torch.randn(batch, channels, resolution, resolution, device=device)

        def done(value):
            if device.type == "cuda":
                torch.cuda.synchronize()
            return value

        memory_of = CudaPeakMemory if device.type == "cuda" else PeakMemory
        with torch.inference_mode(), memory_of() as memory:
            forward_ms = median_ms(a.seconds, lambda: done(model(x)))
        row = {
            "preset": name,
            "resolution": resolution,
            "batch": batch,
            "params": params,
            "forward_ms": forward_ms,
            "forward_img_s": batch * 1e3 / forward_ms,
            "forward_peak_bytes": memory.bytes,
        }
        if a.train:
            model.train()
            labels = torch.randint(0, classes, (batch,), device=device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step():
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), labels).backward()
                opt.step()
                done(None)

            with memory_of() as memory:
                row["train_step_ms"] = median_ms(a.seconds, step)
            row["train_img_s"] = batch * 1e3 / row["train_step_ms"]
            row["train_peak_bytes"] = memory.bytes
        del model
        row.update(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_name(),
                   isa=torch.backends.cpu.get_cpu_capability(), device=a.device)
        if device.type == "cuda":
            row["gpu"] = torch.cuda.get_device_name(device)
        if a.json:
            print(json.dumps(row), file=results, flush=True)
        else:
            print(f"{name} {resolution}: forward {row['forward_img_s']:.2f} img/s"
                  + (f", train step {row['train_img_s']:.2f} img/s" if a.train else ""),
                  file=results, flush=True)


if __name__ == "__main__":
    main()
