#!/usr/bin/env bash
# Judged pairs per second, side by side in one run on the same seeded subsample:
#   1. local, shared-prefix reuse through the KV cache (the default);
#   2. local, every judge prompt from scratch (--no-prefix-reuse);
#   3. remote: the same GGUF behind llama.cpp's server (xllamacpp, on 127.0.0.1), through
#      `lvh judge --endpoint` (same token ids; llama.cpp's prompt cache reuses prefixes).
#
#   bench/judge.sh [N_PAIRS] [CONSTITUTION] [PAIRS_FILE]
#
# Defaults: 20 pairs of the bundled preference set, constitution helpful-and-harmless, the
# default model (LVH_MODEL or SmolLM2-135M-Instruct, fetched on first use). Every run judges
# both orders under every principle. Times are judging only (`lvh judge` reports them without
# model loading; the server is started and warmed before its run). The scores of 1 and 2 agree
# up to float rounding; the remote ones differ by llama.cpp's 8-bit activation rounding, so the
# script reports their sign agreement with the local run and the largest |ΔS_C|.
#
# LVH_WEIGHTS=f32|quantized (default f32, as `lvh judge`); LVH_BIN skips the build;
# LVH_THREADS sets the server's CPU threads (default: all cores, like the local runtime);
# NO_REMOTE=1 skips the server (needs `python3 -m pip install xllamacpp` otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
constitution="${2:-helpful-and-harmless}"
pairs_file="${3:-}"
lvh="${LVH_BIN:-target/release/lvh}"
if [[ -z "${LVH_BIN:-}" ]]; then
  cargo build --release -q -p lvh
fi
model="${LVH_MODEL:-$("$lvh" model fetch smollm2-135m-instruct)}"
model_args=(--model "$model" --weights "${LVH_WEIGHTS:-f32}")
pair_args=()
if [[ -n "$pairs_file" ]]; then pair_args=(--pairs "$pairs_file"); fi
tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

run() { # $1 = label, rest = extra flags; prints the judging seconds
  local label="$1"; shift
  "$lvh" judge --constitution "$constitution" "${model_args[@]}" "${pair_args[@]}" \
    --sample "$n" --seed 0 --out "$tmp/$label.jsonl" "$@" 2>"$tmp/$label.err" \
    || { cat "$tmp/$label.err" >&2; exit 1; }
  sed -n 's/.* in \([0-9.]*\) s -> .*/\1/p' "$tmp/$label.err" | tail -1 >"$tmp/$label.secs"
}

echo "lvh judge: constitution $constitution, $n pairs, both orders, every principle; model $model"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
run prefix-reuse
run no-reuse --no-prefix-reuse
labels=(prefix-reuse no-reuse)
if [[ -z "${NO_REMOTE:-}" ]]; then
  python3 scripts/llamacpp_server.py --model "$model" --threads "${LVH_THREADS:-$(nproc)}" \
    --url-file "$tmp/url" >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do [[ -s "$tmp/url" ]] && break; sleep 0.2; done
  [[ -s "$tmp/url" ]] || { cat "$tmp/server.log" >&2; echo "server did not start" >&2; exit 1; }
  url="$(cat "$tmp/url")"
  # Warm-up: one pair outside the timed run.
  "$lvh" judge --constitution "$constitution" "${model_args[@]}" "${pair_args[@]}" \
    --sample 1 --seed 1 --out "$tmp/warm.jsonl" --endpoint "$url" 2>/dev/null
  run remote --endpoint "$url"
  labels+=(remote)
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$tmp" "$n" "${labels[@]}" <<'PY'
import json, sys
tmp, n, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
secs = {l: float(open(f"{tmp}/{l}.secs").read()) for l in labels}
rows = {l: [json.loads(x) for x in open(f"{tmp}/{l}.jsonl")] for l in labels}
for l in labels:
    print(f"{l:<14} {n} pairs in {secs[l]:8.2f} s  ->  {n / secs[l]:7.3f} judged pairs/s")
base = secs["prefix-reuse"]
for l in labels[1:]:
    print(f"speed of prefix-reuse / {l}: {secs[l] / base:5.2f}x")
ref = rows["prefix-reuse"]
for l in labels[1:]:
    other = rows[l]
    assert [r["index"] for r in other] == [r["index"] for r in ref]
    d = max(abs(a["score"] - b["score"]) for a, b in zip(ref, other))
    same = sum((a["score"] >= 0) == (b["score"] >= 0) for a, b in zip(ref, other))
    print(f"{l}: max |S_C - S_C(prefix-reuse)| = {d:.2e}; same sign on {same}/{len(ref)} pairs")
PY
