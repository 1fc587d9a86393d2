#!/usr/bin/env bash
# Runtime benchmark: lvh's capture-prefill (batch x seq, every resid_post) against PyTorch +
# transformers on the same GGUF, decode against llama.cpp (xllamacpp), capture overhead and
# peak RSS, every weight mode; prints a markdown table with the ratios. See bench/README.md.
#
#   bench/runtime.sh [MODEL.gguf]        (default: LVH_MODEL or the fetched SmolLM2-135M-Instruct)
#
# BATCH (8), SEQ (128), DECODE (64), REPEATS (3), MODES (bf16,f32,quantized), PREFILL_ROUNDS (3),
# DECODE_ROUNDS (5), TORCH_DTYPES (float32,bfloat16) override the sizes;
# JSON=FILE keeps the raw numbers. Needs python3 with numpy; torch + transformers + gguf and
# xllamacpp for the two reference sides (each is skipped with a message when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lm-runtime --example runtime_bench
model="${1:-${LVH_MODEL:-}}"
if [[ -z "$model" ]]; then
  cargo build --release -q -p lvh
  model="$(target/release/lvh model fetch smollm2-135m-instruct)"
fi
exec python3 bench/runtime.py --model "$model" --bin target/release/examples/runtime_bench \
  --batch "${BATCH:-8}" --seq "${SEQ:-128}" --decode "${DECODE:-64}" --repeats "${REPEATS:-3}" \
  --modes "${MODES:-bf16,f32,quantized}" --prefill-rounds "${PREFILL_ROUNDS:-3}" \
  --decode-rounds "${DECODE_ROUNDS:-5}" --torch-dtypes "${TORCH_DTYPES:-float32,bfloat16}" ${JSON:+--json "$JSON"}
