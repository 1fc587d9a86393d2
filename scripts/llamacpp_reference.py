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
    args = ap.parse_args()

    import xllamacpp as xlc  # imported late so --help works without it

    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)
    prompts = [p if isinstance(p, dict) else {"text": p} for p in prompts]

    params = xlc.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
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
        results.append(entry)

    out = {
        "model": os.path.basename(args.model),
        "model_sha256": sha256_file(args.model),
        "llama_cpp": getattr(xlc, "__version__", None) or _version(),
        "add_special": add_special,
        "prompts": results,
    }
    text = json.dumps(out, ensure_ascii=False, indent=1) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def _version():
    try:
        from importlib.metadata import version
        return "xllamacpp " + version("xllamacpp")
    except Exception:  # noqa: BLE001 - provenance only
        return None


if __name__ == "__main__":
    main()
