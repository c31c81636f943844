#!/bin/sh
# `linvit explain` on three models of the Fashion-MNIST ablations (experiments/ABLATIONS.md),
# seed 0, on four test images: FLatten (focused linear attention + DWC in every stage) against
# softmax, then agent attention (16 agents). The run directories are the ablations' own
# (experiments/runs/<hash>; their weights are not committed: `linvit ablate
# experiments/flatten_components.toml --runs experiments/runs` and
# `linvit ablate experiments/agent_num.toml --runs experiments/runs` retrain them, deterministically).
# Run from the repository root: sh experiments/explain/run.sh
set -eu
linvit=${LINVIT:-target/debug/linvit}
[ -n "${CARGO_TARGET_DIR:-}" ] && [ -z "${LINVIT:-}" ] && linvit=$CARGO_TARGET_DIR/debug/linvit
named=$(mktemp -d)
trap 'rm -rf "$named"' EXIT
# The model column and the map folders take the run folder's name.
ln -s "$PWD/experiments/runs/9b6535770fdf4dc5" "$named/flatten"
ln -s "$PWD/experiments/runs/941199c6b8522d81" "$named/softmax"
ln -s "$PWD/experiments/runs/396ddba3cee41f95" "$named/agent16"
out=experiments/explain/output
rm -rf "$out"
"$linvit" explain --checkpoint "$named/flatten" --compare "$named/softmax" \
    experiments/explain/images --query 0.4,0.5 --out "$out/flatten_vs_softmax"
"$linvit" explain --checkpoint "$named/agent16" \
    experiments/explain/images --query 0.4,0.5 --out "$out/agent16"
