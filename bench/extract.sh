#!/usr/bin/env bash
# Extraction throughput of `lvh extract`: items/s and tokens/s over N contrast items (default
# 1000) at every layer's resid_post (last-token pooling, chat template), and peak RSS.
#
#   bench/extract.sh [CONTRAST.jsonl] [N]
#   env: MODEL (GGUF path or known name; default: the default model), BATCH (8),
#        WEIGHTS (f32|quantized; f32), LVH (binary; default: target/release/lvh, built if absent)
#
# Default data: ../shared/data/contrast.dev.jsonl when present, else the bundled set.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-}
N=${2:-1000}
if [[ -z "$DATA" && -f ../shared/data/contrast.dev.jsonl ]]; then DATA=../shared/data/contrast.dev.jsonl; fi
LVH=${LVH:-target/release/lvh}
[[ -x "$LVH" ]] || cargo build --release -p lvh
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
args=(extract --limit "$N" --batch "${BATCH:-8}" --weights "${WEIGHTS:-f32}" --out "$OUT/run" --json)
[[ -n "$DATA" ]] && args+=(--contrast "$DATA")
[[ -n "${MODEL:-}" ]] && args+=(--model "$MODEL")
/usr/bin/time -v "$LVH" "${args[@]}" >"$OUT/summary.json" 2>"$OUT/time.txt" || {
  cat "$OUT/time.txt" >&2
  exit 1
}
python3 - "$OUT/summary.json" "$OUT/time.txt" "${DATA:-bundled}" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
t = open(sys.argv[2]).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", t).group(1)
print(f"data           {sys.argv[3]}")
print(f"items          {s['items']} x {s['hooks']} hooks ({s['pooling']} pooling)")
print(f"tokens         {s['tokens_computed']}")
print(f"extract time   {s['seconds']:.1f} s (wall incl. load: {wall})")
print(f"items/s        {s['items_per_s']:.2f}")
print(f"tokens/s       {s['tokens_per_s']:.1f}")
print(f"peak RSS       {rss / 1024:.0f} MiB")
PY
