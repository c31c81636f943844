#!/usr/bin/env bash
# Decoded + augmented training images per second (2 loader threads, batch 128), written here.
# Run from the repository root after `cargo build -p linvit -p linvit-data --examples`.
set -euo pipefail
out=experiments/data_bench
bin=target/debug/linvit
$bin bench data --images 5000 --json > $out/synthetic.json
$bin bench data --set data.kind=idx --set data.image_size=28 --images 12000 --json > $out/fashion_mnist.json
jpegs=$(mktemp -d)
target/debug/examples/data_report export "$jpegs" 224 1000 100 > /dev/null
$bin bench data --set data.kind=image-folder --set "data.path=\"$jpegs\"" --set data.image_size=224 \
    --set data.num_classes=10 --images 1000 --json > $out/image_folder_224_jpeg.json
rm -rf "$jpegs"
