#!/usr/bin/env bash
# Half-precision training against f32 on flex: the setting of the half-precision test in
# crates/linvit-train/tests/train.rs (tiny FLatten-PVT, 150 procedural images, batch 15, 2 epochs
# = 20 steps, no drop path). Prints, per precision, the first step's loss and the mean loss of
# the second epoch relative to the f32 run's. Usage: experiments/precision/run.sh [LINVIT]
set -euo pipefail
LINVIT=${1:-target/debug/linvit}
OUT=$(mktemp -d)
for p in f32 bf16 f16; do
    "$LINVIT" train --set model.preset=tiny_flatten_pvt --set data.image_size=32 \
        --set data.train_size=150 --set data.val_size=256 --set data.num_classes=2 \
        --set data.augment.randaugment_ops=0 --set data.augment.erase_prob=0.0 \
        --set "data.augment.scale=[0.6, 1.0]" --set train.batch_size=15 --set train.epochs=2 \
        --set train.lr=3e-3 --set train.warmup_epochs=0.5 --set train.mixup=0.0 \
        --set train.cutmix=0.0 --set train.label_smoothing=0.0 --set train.log_every=1 \
        --set train.drop_path=0.0 --set "train.precision=\"$p\"" --out "$OUT/$p" > /dev/null 2>&1
done
stats() { awk -F, 'NR==2 {first=$3} NR>11 {s+=$3; n++} END {printf "%.6f %.6f\n", first, s/n}' "$1"; }
read -r f0 m0 < <(stats "$OUT/f32/steps.csv")
for p in bf16 f16; do
    read -r f m < <(stats "$OUT/$p/steps.csv")
    awk -v p=$p -v f=$f -v m=$m -v f0=$f0 -v m0=$m0 'BEGIN {
        d1 = (f - f0) / f0; d2 = (m - m0) / m0; if (d1 < 0) d1 = -d1; if (d2 < 0) d2 = -d2
        printf "%s: first-step loss %.4f vs %.4f (%.2f%% off); second-epoch mean %.4f vs %.4f (%.2f%% off)\n",
            p, f, f0, 100 * d1, m, m0, 100 * d2 }'
done
grep -h '"scale"' "$OUT"/f16/checkpoints/*/state.json | head -1 | sed 's/^ */f16 loss scale at the end: /'
rm -rf "$OUT"
