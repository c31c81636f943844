#!/usr/bin/env bash
# Data-parallel training against one device on flex: the setting of the data-parallel test in
# crates/linvit-train/tests/train.rs (tiny ViT, 150 procedural images, batch 15 split 8 + 7 over
# two flex workers, 2 epochs = 20 steps, no drop path). Prints the largest relative difference
# of the per-step loss and gradient norm. Usage: experiments/precision/data_parallel.sh [LINVIT]
set -euo pipefail
LINVIT=${1:-target/debug/linvit}
OUT=$(mktemp -d)
for d in flex flex,flex; do
    "$LINVIT" train --devices $d --set model.preset=tiny_vit --set data.image_size=32 \
        --set data.train_size=150 --set data.val_size=256 --set data.num_classes=2 \
        --set data.augment.randaugment_ops=0 --set data.augment.erase_prob=0.0 \
        --set "data.augment.scale=[0.6, 1.0]" --set train.batch_size=15 --set train.epochs=2 \
        --set train.lr=3e-3 --set train.warmup_epochs=0.5 --set train.mixup=0.0 \
        --set train.cutmix=0.0 --set train.label_smoothing=0.0 --set train.log_every=1 \
        --set train.clip_grad=1.0 --set train.drop_path=0.0 --out "$OUT/$d" > /dev/null 2>&1
done
paste -d, "$OUT/flex/steps.csv" "$OUT/flex,flex/steps.csv" | awk -F, 'NR > 1 {
    l = ($3 - $9) / $3; g = ($5 - $11) / $5; if (l < 0) l = -l; if (g < 0) g = -g
    if (l > L) L = l; if (g > G) G = g; n++ }
    END { printf "%d steps: largest relative difference, loss %.2e, gradient norm %.2e\n", n, L, G }'
rm -rf "$OUT"
