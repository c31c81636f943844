#!/usr/bin/env bash
# The stable focusing function's cost in the fused forward: focused attention alone at 3136
# tokens (B 2, h 4, d 32, p 3), forward only, `linvit bench attention` (median of >= 3 s of
# calls), the builds given interleaved round by round on the same machine.
# Usage: run.sh ROUNDS NAME=LINVIT_BINARY...
set -euo pipefail
rounds="$1"; shift
for r in $(seq "$rounds"); do
    for pair in "$@"; do
        name="${pair%%=*}"; bin="${pair#*=}"
        ms=$("$bin" bench attention --kinds focused --tokens 3136 --no-backward --seconds 3 --json \
            2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["forward_ms"])')
        echo "$r $name $ms"
    done
done
