#!/usr/bin/env python3
"""Runtime benchmark, all sides in one run, printing ratios (see bench/README.md, "Runtime").

  1. lvh runtime (crates/lm-runtime/examples/runtime_bench.rs), once per weight mode, each in
     its own process: capture-prefill of BATCH x SEQ seeded random ids recording every block's
     resid_post at every position, the same prefill without capture, greedy decode, VmHWM;
  2. PyTorch + transformers on the same GGUF (`gguf_file=`, weights dequantized to f32):
     prefill of the same ids with output_hidden_states=True under torch.no_grad();
  3. llama.cpp (xllamacpp's in-process server): greedy decode of the same number of tokens,
     tokens/s from the server's own timings (`predicted_per_second`);
  4. interleaved capture-prefill rounds (--prefill-rounds, default 3): each lvh mode and each
     transformers dtype alternating (transformers in float32, the named peer, and in bfloat16,
     which PyTorch runs on oneDNN's AMX kernels on CPUs that have them);
  5. interleaved decode rounds (--decode-rounds, default 5): decode only, each lvh mode and
     llama.cpp alternating, so that every per-round ratio compares the two under the same load.

Every side uses all cores (torch.set_num_threads(os.cpu_count()), rayon's default, the server's
--threads). Missing python packages make that side print "skipped: ..." and the ratio n/a.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np


def rust_side(binary, model, mode, batch, seq, decode, repeats):
    out = subprocess.run([binary, model, mode, str(batch), str(seq), str(decode), str(repeats)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Transformers:
    """PyTorch + transformers on the GGUF (`gguf_file=`, dequantized to `dtype`), kept loaded
    for several prefill measurements: BATCH x SEQ seeded ids, output_hidden_states=True."""

    def __init__(self, model, dtype, batch, seq, vocab_hi):
        import torch
        from transformers import AutoModelForCausalLM
        torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        t0 = time.perf_counter()
        self.m = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(os.path.abspath(model)) or ".", gguf_file=os.path.basename(model),
            torch_dtype=getattr(torch, dtype))
        self.m.eval()
        self.load_s = time.perf_counter() - t0
        rng = np.random.default_rng(7)
        self.ids = torch.tensor(rng.integers(100, vocab_hi, size=(batch, seq)), dtype=torch.long)
        with torch.no_grad():
            self.m(self.ids[:, :16], output_hidden_states=True)  # warm-up

    def prefill(self, repeats):
        best = float("inf")
        with self.torch.no_grad():
            for _ in range(repeats):
                t = time.perf_counter()
                out = self.m(self.ids, output_hidden_states=True)
                best = min(best, time.perf_counter() - t)
                assert len(out.hidden_states) == self.m.config.num_hidden_layers + 1
        return self.ids.numel() / best


def torch_side(model, dtype, batch, seq, repeats, vocab_hi):
    try:
        t = Transformers(model, dtype, batch, seq, vocab_hi)
    except ImportError as e:
        return {"skipped": f"{e} (python3 -m pip install --user torch transformers gguf)"}, None
    tok_s = t.prefill(repeats)
    return {"torch": t.torch.__version__, "dtype": dtype, "load_s": t.load_s,
            "prefill_capture_s": t.ids.numel() / tok_s, "prefill_capture_tok_s": tok_s}, t


def prefill_rounds(binary, model, modes, batch, seq, repeats, rounds, peers):
    """Capture-prefill only, each lvh mode and each transformers dtype alternating, `rounds`
    times: every per-round ratio compares the two sides under the same machine load."""
    out = {m: [] for m in modes}
    out.update({f"torch_{d}": [] for d in peers})
    for r in range(rounds):
        for m in modes:
            out[m].append(rust_side(binary, model, m, batch, seq, 0, repeats)["prefill_capture_tok_s"])
        for d, t in peers.items():
            out[f"torch_{d}"].append(t.prefill(repeats))
        print(f"prefill round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]:.0f}" for k, v in out.items()), file=sys.stderr, flush=True)
    return out


class LlamaCpp:
    """llama.cpp's server in-process (xllamacpp), kept up for several decode measurements."""

    def __init__(self, model, threads):
        import xllamacpp as xlc
        p = xlc.CommonParams()
        p.model.path = model
        p.n_ctx = 1024
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        self.server = xlc.Server(p)
        self.base = self.server.listening_address

    def post(self, obj):
        req = urllib.request.Request(self.base + "/completion", data=json.dumps(obj).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def decode(self, n):
        """Greedy decode of n tokens after a seeded 16-token prompt; the server's own timing."""
        rng = np.random.default_rng(8)
        prompt = [int(x) for x in rng.integers(100, 32000, size=16)]
        req = {"prompt": prompt, "n_predict": n, "temperature": 0, "ignore_eos": True,
               "cache_prompt": False}
        timings = self.post(req)["timings"]
        return {"decode_tok_s": timings["predicted_per_second"],
                "decode_tokens": timings["predicted_n"]}


def llamacpp_side(model, decode, threads):
    try:
        server = LlamaCpp(model, threads)
    except ImportError as e:
        return {"skipped": f"{e} (python3 -m pip install --user xllamacpp)"}, None
    server.decode(4)  # warm-up
    return server.decode(decode), server


def decode_rounds(binary, model, modes, decode, rounds, server):
    """Decode only, lvh and llama.cpp alternating, `rounds` times: the per-round ratios see the
    same machine state, which a single sequential measurement of each side does not."""
    out = {m: [] for m in modes}
    out["llamacpp"] = []
    for r in range(rounds):
        for m in modes:
            out[m].append(rust_side(binary, model, m, 0, 0, decode, 1)["decode_tok_s"])
        out["llamacpp"].append(server.decode(decode)["decode_tok_s"])
        print(f"decode round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]:.1f}" for k, v in out.items()), file=sys.stderr, flush=True)
    return out


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", required=True, help="runtime_bench example binary")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="bf16,f32,quantized")
    ap.add_argument("--torch-dtypes", default="float32,bfloat16",
                    help="transformers weight dtypes to measure (float32 is the named peer)")
    ap.add_argument("--prefill-rounds", type=int, default=3,
                    help="interleaved capture-prefill rounds, lvh and transformers alternating (0: none)")
    ap.add_argument("--decode-rounds", type=int, default=5,
                    help="interleaved decode-only rounds, lvh and llama.cpp alternating (0: none)")
    ap.add_argument("--json", help="also write all raw numbers here")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    res = {"cores": cores, "loadavg_start": load}
    for mode in args.modes.split(","):
        print(f"lvh {mode} ...", file=sys.stderr, flush=True)
        res[mode] = rust_side(args.bin, args.model, mode, args.batch, args.seq, args.decode, args.repeats)
    peers = {}
    for dtype in args.torch_dtypes.split(","):
        print(f"transformers {dtype} ...", file=sys.stderr, flush=True)
        res[f"torch_{dtype}"], peer = torch_side(args.model, dtype, args.batch, args.seq, args.repeats, 32000)
        if peer is not None:
            peers[dtype] = peer
    res["torch"] = res["torch_float32"] if "torch_float32" in res else {"skipped": "float32 not in --torch-dtypes"}
    modes = args.modes.split(",")
    if peers and args.prefill_rounds > 0:
        res["prefill_rounds"] = prefill_rounds(args.bin, args.model, modes, args.batch, args.seq,
                                               args.repeats, args.prefill_rounds, peers)
    del peers
    print("llama.cpp ...", file=sys.stderr, flush=True)
    res["llamacpp"], server = llamacpp_side(args.model, args.decode, cores)
    if server is not None and args.decode_rounds > 0:
        res["decode_rounds"] = decode_rounds(args.bin, args.model, modes, args.decode,
                                             args.decode_rounds, server)
    del server
    res["loadavg_end"] = os.getloadavg()[0]
    model_bytes = os.path.getsize(args.model)

    tq = res["torch"].get("prefill_capture_tok_s")
    ld = res["llamacpp"].get("decode_tok_s")
    print(f"\nmodel {os.path.basename(args.model)} ({model_bytes / 2**20:.1f} MiB), batch {args.batch} x {args.seq}, "
          f"decode {args.decode}, {cores} cores, load average {load:.1f} -> {res['loadavg_end']:.1f}")
    for side in ("torch", "llamacpp"):
        if "skipped" in res[side]:
            print(f"{side}: skipped: {res[side]['skipped']}")
    hdr = ("weights", "capture tok/s", "vs transformers", "plain tok/s", "capture overhead",
           "decode tok/s", "vs llama.cpp", "peak RSS MiB", "RSS budget MiB")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for mode in args.modes.split(","):
        r = res[mode]
        rss = (r["peak_rss_kib"] or 0) / 1024
        budget = (2 * model_bytes + r["capture_bytes"]) / 2**20
        print(f"| lvh {mode} | {r['prefill_capture_tok_s']:.0f} | {ratio(r['prefill_capture_tok_s'], tq)} | "
              f"{r['prefill_plain_tok_s']:.0f} | {100 * r['capture_overhead']:+.1f}% | {r['decode_tok_s']:.1f} | "
              f"{ratio(r['decode_tok_s'], ld)} | {rss:.0f} | {budget:.0f} |")
    for dtype in args.torch_dtypes.split(","):
        r = res[f"torch_{dtype}"]
        if "prefill_capture_tok_s" in r:
            print(f"| transformers {r['torch']} ({dtype}) | {r['prefill_capture_tok_s']:.0f} | "
                  f"{ratio(r['prefill_capture_tok_s'], tq)} | | | | | | |")
    if ld:
        print(f"| llama.cpp (xllamacpp) | | | | | {ld:.1f} | 1.00x | | |")
    if "prefill_rounds" in res:
        pr = res["prefill_rounds"]
        peers_run = [k for k in pr if k.startswith("torch_")]
        print(f"\ninterleaved capture-prefill, {args.prefill_rounds} rounds (tokens/s per round; ratio = lvh / "
              "transformers of the same round):")
        print("| side | tokens/s per round | " + " | ".join(f"median ratio vs {k[6:]}" for k in peers_run) + " |")
        print("|---|---|" + "---|" * len(peers_run))
        for mode in modes:
            cells = [f"{np.median([a / b for a, b in zip(pr[mode], pr[k])]):.2f}x" for k in peers_run]
            print(f"| lvh {mode} | {' '.join(f'{v:.0f}' for v in pr[mode])} | " + " | ".join(cells) + " |")
        for k in peers_run:
            print(f"| transformers {k[6:]} | {' '.join(f'{v:.0f}' for v in pr[k])} |" + " |" * len(peers_run))
    if "decode_rounds" in res:
        dr = res["decode_rounds"]
        print(f"\ninterleaved decode, {args.decode_rounds} rounds (tokens/s per round; ratio = lvh / llama.cpp "
              "of the same round):")
        print("| weights | tokens/s per round | median ratio | min ratio | best / best |")
        print("|---|---|---|---|---|")
        for mode in modes:
            rs = [a / b for a, b in zip(dr[mode], dr["llamacpp"])]
            print(f"| lvh {mode} | {' '.join(f'{v:.1f}' for v in dr[mode])} | {np.median(rs):.2f}x | "
                  f"{min(rs):.2f}x | {max(dr[mode]) / max(dr['llamacpp']):.2f}x |")
        print(f"| llama.cpp | {' '.join(f'{v:.1f}' for v in dr['llamacpp'])} | | | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
