#!/bin/sh
# linvit against the authors' PyTorch code on this machine, in interleaved pairs (the VM's speed
# drifts over minutes, so each pair's two sides see the same phase; the side that goes first
# alternates). Writes experiments/bench/vs_pytorch.jsonl and vs_pytorch.md.
#
#   UPSTREAM=path/to/FLatten-Transformer PYTHON=path/to/python experiments/bench/vs_pytorch.sh [PAIRS]
#
# Repository root, after `cargo build -p linvit`; PYTHON needs torch and timm.
set -e
B=${LINVIT:-target/debug/linvit}
PY=${PYTHON:-python3}
: "${UPSTREAM:?set UPSTREAM to a checkout of LeapLabTHU/FLatten-Transformer}"
PAIRS=${1:-12}
PRESETS=flatten_pvt_t,flatten_swin_t
OUT=experiments/bench/vs_pytorch.jsonl
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: >"$OUT"

ours() {
    "$B" bench model --presets $PRESETS --resolutions 224 --batch 8 --device flex --seconds 3 \
        --no-train --json --out "$TMP/ours.json" >/dev/null
    "$PY" -c 'import json, sys
for r in json.load(open(sys.argv[1]))["rows"]:
    print(json.dumps({"pair": int(sys.argv[2]), "side": "linvit", "preset": r["preset"],
                      "forward_img_s": r["forward_img_s"]}))' "$TMP/ours.json" "$1" >>"$OUT"
}

theirs() {
    LINVIT=$B "$PY" experiments/bench/pytorch_baseline.py --upstream "$UPSTREAM" --presets $PRESETS \
        --resolution 224 --batch 8 --seconds 3 --json >"$TMP/theirs.jsonl"
    "$PY" -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(json.dumps({"pair": int(sys.argv[1]), "side": "pytorch", **r}))' "$1" <"$TMP/theirs.jsonl" >>"$OUT"
}

i=1
while [ "$i" -le "$PAIRS" ]; do
    if [ $((i % 2)) -eq 1 ]; then ours $i; theirs $i; else theirs $i; ours $i; fi
    echo "pair $i of $PAIRS done" >&2
    i=$((i + 1))
done
"$PY" experiments/bench/pytorch_baseline.py --summary "$OUT" | tee experiments/bench/vs_pytorch.md
