#!/usr/bin/env python3
"""Reference tokenization and next-token log-probabilities from the real llama.cpp.

Starts llama.cpp's server in-process through the `xllamacpp` wheel (`pip install xllamacpp`) on a
GGUF file and, for every prompt, records:

  * `ids`: llama.cpp's tokenization (`/tokenize`, special tokens parsed, BOS/EOS as the model asks
    unless --no-add-special);
  * `pieces`: the text of each token as llama.cpp decodes it (a list of byte values when a token is
    not valid UTF-8 on its own);
  * with --top-logprobs K (K <= 20 is what the server returns reliably): `top_logprobs`, the K most
    likely next tokens after the whole prompt as `{"id", "logprob"}`, from `/v1/completions` fed
    the token ids above (so tokenization cannot differ between the two calls).

Options that make the reference more exact: --kv-type f32 keeps K/V in f32 (llama.cpp's default is
f16, and with flash attention it casts K/V to f16 whatever the cache type), --flash-attn off.
With --full-logprobs N the native `/completion` endpoint is asked for `n_probs` = N (the server
returns up to the whole vocabulary; they are log-softmax of the raw logits, not post-sampling)
and the N most likely are stored as `full_logprobs` (same layout as `top_logprobs`).

--numpy-reference writes a second, independent reference instead (no llama.cpp needed): a plain
numpy forward of a llama or gemma3 GGUF with the weights dequantized by the `gguf` package
(f64 maths; llama: adjacent-pair RoPE, grouped-query causal attention, SwiGLU; gemma3 adds the
√d embedding scale, per-head q/k norms, NEOX RoPE with base 10,000 on the sliding-window layers
(l % 6 < 5, window from the file), post-attention and post-MLP norms and tanh-GELU), recording per prompt
the last position's `resid_post` at --layers and the --top-logprobs most likely next tokens.

Prompts come from a JSON file: a list of strings, or of objects with a "text" field (other fields,
such as "name", are copied to the output). Output is JSON on stdout or in --out:

    {"model": PATH, "model_sha256": HEX, "llama_cpp": VERSION, "add_special": BOOL,
     "prompts": [{"text": ..., "ids": [...], "pieces": [...], "top_logprobs": [...]}, ...]}

Example:
    python3 scripts/llamacpp_reference.py --model SmolLM2-135M-Instruct.Q4_1.gguf \
        --prompts prompts.json --top-logprobs 20 --out reference.json
"""

import argparse
import hashlib
import json
import os
import sys
import urllib.request

import numpy as np


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def post(base, path, obj):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(obj).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--prompts", required=True, help="JSON list of prompts (strings or {text: ...})")
    ap.add_argument("--out", help="output JSON file (default: stdout)")
    ap.add_argument("--no-add-special", action="store_true", help="do not add BOS/EOS")
    ap.add_argument("--top-logprobs", type=int, default=0, help="record the K most likely next tokens")
    ap.add_argument("--ctx", type=int, default=4096, help="context size")
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--kv-type", choices=["f16", "f32"], default="f16", help="K/V cache type")
    ap.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--full-logprobs", type=int, default=0,
                    help="also record the N most likely next tokens via /completion n_probs")
    ap.add_argument("--numpy-reference", action="store_true",
                    help="independent numpy forward instead of llama.cpp (llama and gemma3 architectures)")
    ap.add_argument("--layers", default="0,9,19,29", help="--numpy-reference: resid_post layers")
    ap.add_argument("--names", help="only these prompt names (comma-separated)")
    args = ap.parse_args()

    if args.numpy_reference:
        return numpy_reference(args)

    import xllamacpp as xlc  # imported late so --help works without it

    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)
    prompts = [p if isinstance(p, dict) else {"text": p} for p in prompts]
    if args.names:
        prompts = [p for p in prompts if p.get("name") in args.names.split(",")]

    params = xlc.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    kv = {"f16": xlc.ggml_type.GGML_TYPE_F16, "f32": xlc.ggml_type.GGML_TYPE_F32}[args.kv_type]
    params.cache_type_k = kv
    params.cache_type_v = kv
    params.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[args.flash_attn]
    server = xlc.Server(params)
    base = server.listening_address

    add_special = not args.no_add_special
    results = []
    for p in prompts:
        tok = post(base, "/tokenize", {
            "content": p["text"],
            "add_special": add_special,
            "parse_special": True,
            "with_pieces": True,
        })["tokens"]
        entry = dict(p)
        entry["ids"] = [t["id"] for t in tok]
        entry["pieces"] = [t["piece"] for t in tok]
        if args.top_logprobs > 0 and entry["ids"]:
            # The server withholds a token that is not valid UTF-8 on its own until later tokens
            # complete it, so ask for a few more when the first comes back empty; only the first
            # position (right after the prompt) is recorded.
            for max_tokens in (1, 4):
                r = post(base, "/v1/completions", {
                    "prompt": entry["ids"],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "logprobs": args.top_logprobs,
                    "cache_prompt": False,
                })
                logprobs = r["choices"][0].get("logprobs") or {}
                content = logprobs.get("content") or []
                if content:
                    break
            if content:
                entry["top_logprobs"] = [
                    {"id": t["id"], "logprob": t["logprob"]} for t in content[0]["top_logprobs"]
                ]
            else:
                print(f"warning: no log-probs returned for prompt {p.get('name', p['text'][:30])!r}: "
                      f"{json.dumps(r)[:300]}", file=sys.stderr)
        if args.full_logprobs > 0 and entry["ids"]:
            for n_predict in (1, 4):
                r = post(base, "/completion", {
                    "prompt": entry["ids"],
                    "n_predict": n_predict,
                    "temperature": 0,
                    "n_probs": args.full_logprobs,
                    "cache_prompt": False,
                })
                probs = r.get("completion_probabilities") or []
                if probs:
                    break
            if probs:
                entry["full_logprobs"] = [
                    {"id": t["id"], "logprob": t["logprob"]} for t in probs[0]["top_logprobs"]
                ]
        results.append(entry)

    out = {
        "model": os.path.basename(args.model),
        "model_sha256": sha256_file(args.model),
        "llama_cpp": getattr(xlc, "__version__", None) or _version(),
        "add_special": add_special,
        "kv_type": args.kv_type,
        "flash_attn": args.flash_attn,
        "prompts": results,
    }
    write(args, out)


def write(args, out):
    text = json.dumps(out, ensure_ascii=False, indent=1) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def numpy_reference(args):
    """Independent f64 numpy forward of a llama or gemma3 GGUF (see the module docs)."""
    import gguf

    r = gguf.GGUFReader(args.model)
    fields = r.fields

    def val(key):
        f = fields[key]
        return f.parts[f.data[0]][0]

    arch = bytes(fields["general.architecture"].parts[fields["general.architecture"].data[0]]).decode()
    if arch not in ("llama", "gemma3"):
        raise SystemExit("--numpy-reference supports the llama and gemma3 architectures only")
    gemma = arch == "gemma3"
    n_layers = int(val(f"{arch}.block_count"))
    d = int(val(f"{arch}.embedding_length"))
    h = int(val(f"{arch}.attention.head_count"))
    kvh = int(val(f"{arch}.attention.head_count_kv"))
    eps = float(val(f"{arch}.attention.layer_norm_rms_epsilon"))
    base = float(val(f"{arch}.rope.freq_base"))
    hd = int(val(f"{arch}.attention.key_length")) if gemma else d // h
    # Gemma 3: layers with l % 6 < 5 attend within a sliding window with RoPE base 10,000 (the
    # rest are global with the file's base); as in Google's reference and llama.cpp.
    window = int(val("gemma3.attention.sliding_window")) if gemma else None
    tensors = {t.name: t for t in r.tensors}

    def mat(name):
        t = tensors[name]
        n, k = int(t.shape[1]), int(t.shape[0])  # GGUF lists ne0 (the row length) first
        return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(n, k).astype(np.float64)

    def vec(name):
        t = tensors[name]
        return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(-1).astype(np.float64)

    emb = mat("token_embd.weight")
    out_w = mat("output.weight") if "output.weight" in tensors else emb
    out_norm = vec("output_norm.weight")
    norms = ["attn_norm", "ffn_norm"] + (
        ["attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm"] if gemma else [])
    blocks = []
    for l in range(n_layers):
        def w(s, l=l):
            return f"blk.{l}.{s}.weight"
        blocks.append({k: mat(w(k)) for k in
                       ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")})
        blocks[-1].update({k: vec(w(k)) for k in norms})

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x, pos, b):  # [t, heads, hd]
        theta = b ** (-2.0 * np.arange(hd // 2) / hd)
        a = pos[:, None] * theta[None]
        c, s = np.cos(a)[:, None], np.sin(a)[:, None]
        if gemma:  # NEOX layout: the two halves of the head form the pairs
            x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
            return np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], -1)
        y = np.empty_like(x)  # GGUF llama layout: adjacent pairs
        y[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
        y[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
        return y

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))

    layers = [int(x) for x in args.layers.split(",")]
    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)
    if isinstance(prompts, dict):  # a reference file of this script: reuse its token ids
        prompts = prompts["prompts"]
    results = []
    for p in prompts:
        if "ids" not in p:
            raise SystemExit(f"{args.prompts}: --numpy-reference needs token ids (`ids`) per prompt")
        if args.names and p.get("name") not in args.names.split(","):
            continue
        ids = p["ids"]
        t = len(ids)
        x = emb[ids] * (np.sqrt(d) if gemma else 1.0)
        pos = np.arange(t, dtype=np.float64)
        i, j = np.arange(t)[:, None], np.arange(t)[None]
        mask = np.where(j > i, -np.inf, 0.0)
        local = np.where((j > i) | (j <= i - (window or 0)), -np.inf, 0.0) if gemma else mask
        resid = {}
        for l, b in enumerate(blocks):
            sliding = gemma and l % 6 < 5
            rb = 10000.0 if sliding else base
            n = rms(x, b["attn_norm"])
            q = (n @ b["attn_q"].T).reshape(t, h, hd)
            k = (n @ b["attn_k"].T).reshape(t, kvh, hd)
            if gemma:
                q, k = rms(q, b["attn_q_norm"]), rms(k, b["attn_k_norm"])
            q, k = rope(q, pos, rb), rope(k, pos, rb)
            v = (n @ b["attn_v"].T).reshape(t, kvh, hd)
            k, v = np.repeat(k, h // kvh, axis=1), np.repeat(v, h // kvh, axis=1)
            sc = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + (local if sliding else mask)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            a = np.einsum("hts,shd->thd", sc, v).reshape(t, h * hd) @ b["attn_output"].T
            x = x + (rms(a, b["post_attention_norm"]) if gemma else a)
            m = rms(x, b["ffn_norm"])
            g = m @ b["ffn_gate"].T
            act = gelu_tanh(g) if gemma else g / (1 + np.exp(-g))
            f = (act * (m @ b["ffn_up"].T)) @ b["ffn_down"].T
            x = x + (rms(f, b["post_ffw_norm"]) if gemma else f)
            if l in layers:
                resid[str(l)] = [float(f"{v:.7g}") for v in x[-1]]
        logits = rms(x[-1], out_norm) @ out_w.T
        lp = logits - logits.max()
        lp = lp - np.log(np.exp(lp).sum())
        top = np.argsort(-lp)[: max(args.top_logprobs, 1)]
        results.append({"name": p.get("name"), "ids": ids, "resid_post_last": resid,
                        "top_logprobs": [{"id": int(i), "logprob": float(lp[i])} for i in top]})
    write(args, {
        "model": os.path.basename(args.model),
        "model_sha256": sha256_file(args.model),
        "reference": "numpy f64 forward, weights dequantized by gguf " + _pkg_version("gguf"),
        "prompts": results,
    })


def _pkg_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001 - provenance only
        return "?"


def _version():
    try:
        from importlib.metadata import version
        return "xllamacpp " + version("xllamacpp")
    except Exception:  # noqa: BLE001 - provenance only
        return None


if __name__ == "__main__":
    main()
