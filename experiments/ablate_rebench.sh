#!/bin/sh
# Do two timings of the same ablation point agree? Copies the committed run records
# (experiments/runs) aside, times every point's training step again there (`--rebench`; nothing
# is retrained), and prints each point's step img/s from the committed table, from the rerun,
# and their ratio. Run from the repository root on an idle machine, after `cargo build`:
#   sh experiments/ablate_rebench.sh > experiments/ablate_rebench.md
set -eu
linvit=${LINVIT:-target/debug/linvit}
[ -n "${CARGO_TARGET_DIR:-}" ] && [ -z "${LINVIT:-}" ] && linvit=$CARGO_TARGET_DIR/debug/linvit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r experiments/runs "$tmp/runs"
echo "# Step img/s of every ablation point, timed twice"
echo
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores,"
echo "$(grep -qw avx512f /proc/cpuinfo && echo 'AVX-512 (avx512f)' || echo 'AVX2, no AVX-512'); $(date -u +%Y-%m-%d)."
echo "First: the committed results.csv. Second: \`sh experiments/ablate_rebench.sh\` (every point's"
echo "training step timed again from its run record, the median of at least 3 s)."
echo
for e in flatten_components flatten_kernel_size flatten_focusing_factor flatten_layout agent_num; do
  "$linvit" ablate "experiments/$e.toml" --runs "$tmp/runs" --rebench --out "$tmp/$e" >/dev/null 2>"$tmp/log" \
    || { cat "$tmp/log" >&2; exit 1; }
  # group,seed,...,step_img_s is column 8 (groups are quoted and may hold commas: parse in awk)
  paste -d'\n' "experiments/$e/results.csv" "$tmp/$e/results.csv" | awk -v e="$e" '
    function fields(line, out,   n, i, c, q, f) {
      n = 0; f = ""; q = 0
      for (i = 1; i <= length(line); i++) {
        c = substr(line, i, 1)
        if (c == "\"") { q = !q; continue }
        if (c == "," && !q) { out[++n] = f; f = ""; continue }
        f = f c
      }
      out[++n] = f
      return n
    }
    NR <= 2 { next }
    NR % 2 == 1 { fields($0, a); next }
    { fields($0, b); printf "%s|%s|%s|%.0f|%.0f|%.4f\n", e, a[1], a[2], a[8], b[8], b[8] / a[8] }
  ' >>"$tmp/rows"
done
# The ratio of every point, and that ratio over its experiment's median ratio: how far the point
# moved against the others timed in the same rounds, with the machine's drift between the two
# timings taken out.
sort -t'|' -k1,1 -k6,6n "$tmp/rows" | awk -F'|' '
  { e[NR] = $1; line[NR] = $0; r[NR] = $6; n[$1]++; list[$1, n[$1]] = $6 }
  END {
    for (k in n) med[k] = list[k, int((n[k] + 1) / 2)]
    print "| experiment | point | seed | first | second | second / first | over the experiment'"'"'s median ratio |"
    print "| --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= NR; i++) {
      split(line[i], f, "|"); q = r[i] / med[e[i]]
      printf "| %s | %s | %s | %s | %s | %.3f | %.3f |\n", f[1], f[2], f[3], f[4], f[5], r[i], q
      d = r[i] > 1 ? r[i] - 1 : 1 / r[i] - 1; dq = q > 1 ? q - 1 : 1 / q - 1
      if (d > 0.15) over++; if (dq > 0.15) overq++
      if (d > worst) { worst = d; at = f[2] }; if (dq > worstq) { worstq = dq; atq = f[2] }
    }
    printf "\n%d points. Raw: the largest disagreement is %.1f%% (%s); %d points differ by more than 15%%.\n", NR, 100 * worst, at, over
    printf "Against the experiment'"'"'s median ratio: the largest is %.1f%% (%s); %d points beyond 15%%.\n", 100 * worstq, atq, overq
    printf "Median ratio per experiment (the machine'"'"'s drift between the two timings):"
    for (k in med) printf " %s %.3f;", k, med[k]
    print ""
  }'
