#!/usr/bin/env bash
# Monte Carlo RLAIF throughput: lvh (rlaif-sim) against a vectorised numpy implementation of the
# same round (THEORY §7 steps 1-4), at d in {16, 64, 256} and n in {1e3, 1e5}.
# Usage: bench/run.sh            (full grid; several minutes on 2 cores)
#        DS="16 64" NS="1000" bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DS=${DS:-"16 64 256"}
NS=${NS:-"1000 100000"}

if ! python3 -c 'import numpy, scipy' 2>/dev/null; then
    echo "installing numpy and scipy into the user site..." >&2
    python3 -m pip install --user --quiet numpy scipy
fi

cargo build --quiet --release -p rlaif-sim --example mc_throughput
BIN=target/release/examples/mc_throughput

RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
START="$(date -u +%H:%M) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"

for d in $DS; do
    for n in $NS; do
        # Best of several repetitions (after one warm-up round each side).
        if [ "$n" -le 10000 ] && [ "$d" -lt 256 ]; then reps=1000; elif [ "$n" -le 10000 ]; then reps=100; elif [ "$d" -ge 256 ]; then reps=3; else reps=5; fi
        echo "d=$d n=$n: numpy ($reps reps)..." >&2
        python3 bench/numpy_sim.py --d "$d" --n "$n" --reps "$reps" --json >>"$RESULTS"
        echo "d=$d n=$n: lvh ($reps reps)..." >&2
        "$BIN" --d "$d" --n "$n" --reps "$reps" --json >>"$RESULTS"
    done
done

echo "run: $(date -u +%F) from $START to $(date -u +%H:%M) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault((r["d"], r["n"]), {})[r["side"]] = r
targets = {(64, 100000): 3.0, (16, 1000): 20.0}
print()
print(f"{'d':>4} {'k':>3} {'n':>7} | {'numpy pairs/s':>13} {'lvh pairs/s':>12} {'ratio':>7} | "
      f"{'numpy iters':>11} {'lvh iters':>9} | {'lvh sample':>10} {'lvh fit':>9} | target")
for (d, n), s in sorted(by.items()):
    np_, lv = s["numpy"], s["lvh"]
    ratio = lv["pairs_per_s"] / np_["pairs_per_s"]
    t = targets.get((d, n))
    tgt = "" if t is None else (f">= {t:g}x: " + ("met" if ratio >= t else "NOT met"))
    it = lambda r: "/".join(str(i) for i in sorted(set(r["newton_iterations"])))
    print(f"{d:>4} {lv['k']:>3} {n:>7} | {np_['pairs_per_s']:>13.4g} {lv['pairs_per_s']:>12.4g} "
          f"{ratio:>6.1f}x | {it(np_):>11} {it(lv):>9} | {lv['sample_s']*1e3:>8.2f}ms "
          f"{lv['fit_s']*1e3:>7.2f}ms | {tgt}")
print()
print("Hessian build (one Newton iteration's gradient-and-Hessian pass over all n rows, as in the "
      "fit; flops counted on the Hessian triangle only, 2·n(d+1)(d+2)/2):")
for (d, n), s in sorted(by.items()):
    lv = s["lvh"]
    print(f"  d={d:<4} n={n:<7} {lv['hessian_s']*1e3:9.3f} ms  {lv['hessian_gflops']:7.2f} GFLOP/s "
          f"= {100*lv['hessian_gflops']/lv['peak_gflops']:5.1f}% of nominal, "
          f"{100*lv['hessian_gflops']/lv['measured_peak_gflops']:5.1f}% of measured peak")
print(f"nominal peak: {rows[-1]['peak_note']}")
print(f"measured peak: {rows[-1]['measured_peak_note']}")
print(f"lvh threads: {rows[-1]['threads']}; numpy uses scipy: {rows[0]['scipy']}")
PY
