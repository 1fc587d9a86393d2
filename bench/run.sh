#!/usr/bin/env bash
# Monte Carlo RLAIF throughput: lvh (rlaif-sim) against a vectorised numpy implementation of the
# same round (THEORY §7 steps 1-4), at d in {16, 64, 256} and n in {1e3, 1e5}: one round alone,
# and a running simulation of several rounds (steps 1-5; the per-round time of `simulate`).
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
        # Simulations of `rounds` rounds, reps/rounds of them (at least one).
        if [ "$n" -le 10000 ]; then rounds=20; else rounds=3; fi
        echo "d=$d n=$n: numpy ($reps reps, simulations of $rounds rounds)..." >&2
        python3 bench/numpy_sim.py --d "$d" --n "$n" --reps "$reps" --rounds "$rounds" --json >>"$RESULTS"
        echo "d=$d n=$n: lvh ($reps reps, simulations of $rounds rounds)..." >&2
        "$BIN" --d "$d" --n "$n" --reps "$reps" --rounds "$rounds" --json >>"$RESULTS"
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
print("One round (best of the repetitions), and a simulation (per-round time of a run of several")
print("rounds, best of the runs); the targets are read on the simulation, the throughput of")
print("`lvh simulate`.")
print(f"{'d':>4} {'k':>3} {'n':>7} | {'numpy round':>11} {'lvh round':>10} {'ratio':>6} | "
      f"{'numpy sim':>10} {'lvh sim':>9} {'ratio':>6} | {'numpy iters':>11} {'lvh iters':>9} | "
      f"{'lvh sample':>10} {'lvh fit':>9} | target")
for (d, n), s in sorted(by.items()):
    np_, lv = s["numpy"], s["lvh"]
    ratio = np_["best_s"] / lv["best_s"]
    sim = np_["sim_round_s"] / lv["sim_round_s"]
    t = targets.get((d, n))
    tgt = "" if t is None else (f">= {t:g}x: " + ("met" if sim >= t else "NOT met"))
    it = lambda r: "/".join(str(i) for i in sorted(set(r["newton_iterations"] + r["sim_newton_iterations"])))
    ms = lambda x: f"{x*1e3:.3f}ms"
    print(f"{d:>4} {lv['k']:>3} {n:>7} | {ms(np_['best_s']):>11} {ms(lv['best_s']):>10} {ratio:>5.1f}x | "
          f"{ms(np_['sim_round_s']):>10} {ms(lv['sim_round_s']):>9} {sim:>5.1f}x | "
          f"{it(np_):>11} {it(lv):>9} | {ms(lv['sample_s']):>10} {ms(lv['fit_s']):>9} | {tgt}")
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
