#!/usr/bin/env python3
"""How far above the authors' PyTorch code a preset can get on this machine, at most: the matrix
products it must compute, against the rate this machine multiplies matrices at.

A forward pass or training step cannot run faster than its matrix products (linear layers,
batched attention products, convolutions) alone would at the machine's best matrix-multiply
rate. So `PyTorch's time / (matrix-product FLOPs / that rate)` bounds the ratio linvit /
PyTorch any implementation can reach without changing the arithmetic. For each preset and
phase this prints:

- the matrix-product GFLOP (counted by torch.profiler's `with_flops` on the authors' model:
  `mm`, `addmm`, `bmm`, `baddbmm`, `conv2d`; the profiler counts no convolution backward, so the
  training bound is generous by those few GFLOP);
- the rate: `torch.mm` on 2048 x 2048 x 2048 (MKL's best shape), measured just before and after
  each side's timing and averaged, so that both sides see the VM's speed of that moment;
- each side's time and its efficiency (FLOP / time / rate: the share of the phase that would
  be matrix products at that rate), and the bound `PyTorch time * rate / FLOP`.

linvit's side is `linvit bench model` (the same numbers `vs_pytorch.sh` takes). Needs what
pytorch_baseline.py needs (torch, einops, timm 0.4.12, the authors' checkouts):

    LINVIT=target/debug/linvit python3 experiments/bench/gemm_bound.py \
        --upstream ../FLatten-Transformer --upstream ../Agent-Attention [--rounds 2]
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pytorch_baseline as baseline

PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::conv2d"}
PRESETS = "flatten_pvt_t,flatten_swin_t,agent_pvt_t,agent_swin_t,agent_deit_t"


def mm_rate(torch, side=2048, reps=6):
    """GFLOP/s of the best of `reps` square `torch.mm`s."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    c = torch.empty(side, side)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * side**3 / best / 1e9


def product_gflop(torch, f):
    """The matrix-product GFLOP of one call of `f`, as torch.profiler counts them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        f()
    return sum(e.flops for e in prof.key_averages() if e.key in PRODUCTS) / 1e9


def ours(linvit, preset, batch):
    """linvit's forward and training-step milliseconds (`linvit bench model`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ours.json")
        subprocess.run([linvit, "bench", "model", "--presets", preset, "--resolutions", "224",
                        "--batch", str(batch), "--device", "flex", "--seconds", "3", "--json",
                        "--out", out], check=True, stdout=subprocess.DEVNULL)
        row = json.load(open(out))["rows"][0]
    return {"forward": batch * 1e3 / row["forward_img_s"], "train": batch * 1e3 / row["train_img_s"]}


def theirs(torch, model, x, labels):
    """PyTorch's forward and training-step milliseconds, timed as pytorch_baseline.py does."""
    with torch.inference_mode():
        forward = baseline.median_ms(3, lambda: model(x))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train = baseline.median_ms(3, lambda: train_step(torch, model, opt, x, labels))
    model.eval()
    return {"forward": forward, "train": train}


def train_step(torch, model, opt, x, labels):
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    opt.step()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", action="append", required=True)
    p.add_argument("--linvit", default=os.environ.get("LINVIT", "target/debug/linvit"))
    p.add_argument("--presets", default=PRESETS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="rounds of both sides per preset")
    a = p.parse_args()
    # The authors' constructors print; the table is all that goes to stdout.
    results, sys.stdout = sys.stdout, sys.stderr
    for checkout in a.upstream:
        baseline.add_upstream(checkout)
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    lines = []
    for preset in baseline.preset_args(a.linvit, a.presets.split(",")):
        with contextlib.redirect_stdout(io.StringIO()):
            model = baseline.build(preset["upstream"], preset["args"], 224)
        x = torch.randn(a.batch, 3, 224, 224)
        labels = torch.randint(0, preset["args"].get("num_classes", 1000), (a.batch,))
        with torch.inference_mode():
            gflop = {"forward": product_gflop(torch, lambda: model(x))}
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        train_step(torch, model, opt, x, labels)
        gflop["train"] = product_gflop(torch, lambda: train_step(torch, model, opt, x, labels))
        model.eval()
        # Per round and side: (rate around it, its times).
        rounds = {"linvit": [], "pytorch": []}
        for r in range(a.rounds):
            order = ["linvit", "pytorch"] if r % 2 == 0 else ["pytorch", "linvit"]
            for side in order:
                before = mm_rate(torch)
                times = (ours(a.linvit, preset["name"], a.batch) if side == "linvit"
                         else theirs(torch, model, x, labels))
                rounds[side].append(((before + mm_rate(torch)) / 2, times))
        for phase in ["forward", "train"]:
            eff = {side: statistics.median(gflop[phase] * 1e3 / (t[phase] * rate) for rate, t in runs)
                   for side, runs in rounds.items()}
            rate = statistics.median(rate for runs in rounds.values() for rate, _ in runs)
            ms = {side: statistics.median(t[phase] for _, t in runs) for side, runs in rounds.items()}
            lines.append(f"| {preset['name']} | {phase} | {gflop[phase]:.1f} | {rate:.0f} | "
                         f"{ms['pytorch']:.0f} | {eff['pytorch']:.2f} | {ms['linvit']:.0f} | "
                         f"{eff['linvit']:.2f} | {eff['linvit'] / eff['pytorch']:.2f}x | "
                         f"{1 / eff['pytorch']:.2f}x |")
        del model, opt
    print("| preset | phase | matrix-product GFLOP | mm GFLOP/s | PyTorch ms | PyTorch efficiency "
          "| linvit ms | linvit efficiency | ratio | bound |", file=results)
    print("|" + " --- |" * 10, file=results)
    for line in lines:
        print(line, file=results)


if __name__ == "__main__":
    main()
