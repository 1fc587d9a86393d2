#!/usr/bin/env python3
"""Serve a GGUF model through llama.cpp's OpenAI-compatible server on 127.0.0.1.

Uses the PyPI package `xllamacpp` (llama.cpp's server run in-process, prebuilt wheels, no
compiler needed: `python3 -m pip install xllamacpp`). The server listens on 127.0.0.1 at a free
port (or --port) and its base URL is printed on stdout as one line `LVH_TEST_ENDPOINT=http://...`
(and written to --url-file when given) once it answers requests.

Two ways to use it:

  * with a command after `--`: the command runs with LVH_TEST_ENDPOINT set to the server's URL,
    the server stops when it ends, and the script exits with the command's status. For CI:

        MODEL=$(target/release/lvh model fetch smollm2-135m-instruct)
        python3 scripts/llamacpp_server.py --model "$MODEL" -- \
            env LVH_TEST_MODEL="$MODEL" cargo test --release -p lvh --test remote_llamacpp

  * without one: serve until interrupted (Ctrl-C / SIGTERM).

With --embeddings the server runs in llama.cpp's embedding mode instead, without pooling: its
`/embeddings` endpoint returns, for every prompt position, the final-norm hidden state (the input
of the unembedding, lvh's `ln_final.hook_normalized`); the URL is then announced and passed on as
LVH_TEST_EMBEDDINGS_ENDPOINT (see crates/lvh/tests/llamacpp_residual.rs).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, timeout):
    """Polls /health until the model is loaded (HTTP 200) or the timeout passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.2)
    raise SystemExit(f"llama.cpp server at {url} not ready after {timeout} s: {last}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file to serve")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="CPU threads")
    ap.add_argument("--ctx", type=int, default=4096, help="context length (tokens)")
    ap.add_argument(
        "--kv-type",
        choices=["f16", "f32"],
        default="f16",
        help="K/V cache precision (f16 is llama.cpp's default; f32 removes one source of rounding)",
    )
    ap.add_argument("--parallel", type=int, default=1, help="server slots (concurrent requests)")
    ap.add_argument("--embeddings", action="store_true",
                    help="embedding mode, no pooling: per-position final hidden states from /embeddings")
    ap.add_argument("--url-file", help="also write the base URL to this file")
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for the model")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS... to run against the server")
    args = ap.parse_args()

    if not os.path.isfile(args.model):
        raise SystemExit(f"no such model file: {args.model}")
    try:
        import xllamacpp
    except ImportError:
        raise SystemExit("xllamacpp is not installed: python3 -m pip install xllamacpp")

    port = args.port or free_port()
    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_ctx = args.ctx
    p.n_parallel = args.parallel
    kv = {"f16": xllamacpp.ggml_type.GGML_TYPE_F16, "f32": xllamacpp.ggml_type.GGML_TYPE_F32}[args.kv_type]
    p.cache_type_k = kv
    p.cache_type_v = kv
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    if args.embeddings:
        p.embedding = True
        p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_NONE
        p.embd_normalize = -1  # the hidden states as they are
        p.n_batch = p.n_ubatch = args.ctx  # a whole prompt in one batch
    var = "LVH_TEST_EMBEDDINGS_ENDPOINT" if args.embeddings else "LVH_TEST_ENDPOINT"
    server = xllamacpp.Server(p)  # listens until the object is released
    url = getattr(server, "listening_address", None) or f"http://127.0.0.1:{port}"
    url = url.rstrip("/")
    wait_ready(url, args.ready_timeout)

    print(f"{var}={url}", flush=True)
    if args.url_file:
        with open(args.url_file, "w") as f:
            f.write(url + "\n")

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        env = dict(os.environ, **{var: url})
        status = subprocess.call(command, env=env)
        del server
        sys.exit(status)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    del server


if __name__ == "__main__":
    main()
