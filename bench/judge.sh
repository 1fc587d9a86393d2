#!/usr/bin/env bash
# Judged pairs per second, with shared-prefix reuse through the KV cache and without.
#
#   bench/judge.sh [N_PAIRS] [CONSTITUTION] [PAIRS_FILE]
#
# Defaults: 20 pairs of the bundled preference set, constitution helpful-and-harmless, the
# default model (LVH_MODEL or SmolLM2-135M-Instruct, fetched on first use). Both runs judge the
# same seeded subsample in both orders under every principle; the scores agree up to float
# rounding (checked below), only the time differs. LVH_WEIGHTS=f32 dequantizes the weights
# (about 5x faster prefill on SmolLM2); LVH_BIN skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
constitution="${2:-helpful-and-harmless}"
pairs_file="${3:-}"
lvh="${LVH_BIN:-target/release/lvh}"
if [[ -z "${LVH_BIN:-}" ]]; then
  cargo build --release -q -p lvh
fi
model_args=(--weights "${LVH_WEIGHTS:-quantized}")
if [[ -n "${LVH_MODEL:-}" ]]; then model_args+=(--model "$LVH_MODEL"); fi
pair_args=()
if [[ -n "$pairs_file" ]]; then pair_args=(--pairs "$pairs_file"); fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

run() { # $1 = label, rest = extra flags
  local label="$1"; shift
  local out="$tmp/$label.jsonl"
  local t0 t1
  t0=$(date +%s.%N)
  "$lvh" judge --constitution "$constitution" "${model_args[@]}" "${pair_args[@]}" \
    --sample "$n" --seed 0 --out "$out" "$@" 2>/dev/null
  t1=$(date +%s.%N)
  python3 - "$label" "$t0" "$t1" "$n" <<'PY'
import sys
label, t0, t1, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
dt = t1 - t0
print(f"{label:<16} {n} pairs in {dt:7.2f} s  ->  {n / dt:6.3f} judged pairs/s (model load included)")
PY
}

echo "lvh judge: constitution $constitution, $n pairs, both orders, every principle"
run prefix-reuse
run no-reuse --no-prefix-reuse
python3 - "$tmp/prefix-reuse.jsonl" "$tmp/no-reuse.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b)
d = max(abs(x["score"] - y["score"]) for x, y in zip(a, b))
print(f"max |S_C(reuse) - S_C(no reuse)| = {d:.2e} over {len(a)} pairs")
PY
