#!/usr/bin/env python3
"""Serve a GGUF model through llama.cpp's server (xllamacpp, in-process) with llama.cpp's own
command-line options, such as a control vector:

    python3 scripts/llamacpp_cvec_server.py --model MODEL.gguf -- \
        --control-vector-scaled control_vector.gguf:-0.5 --control-vector-layer-range 12 12

Everything after `--` is parsed by llama.cpp's `common_params_parse` (the parser of
`llama-server`), so `--control-vector FILE`, `--control-vector-scaled FILE:SCALE[,FILE:SCALE...]` and
`--control-vector-layer-range START END` mean exactly what they mean to llama.cpp: the file is
read by `common_control_vector_load` and applied by `llama_apply_adapter_cvec` when the model
loads. xllamacpp's `CommonParams` exposes no field for control vectors, so the parser is called
through ctypes on the `common_params` struct that the `CommonParams` object holds (its address
is checked first with sentinel values; the script refuses to go on if the layout differs).

The server listens on 127.0.0.1 at a free port; once it answers, one line
`LVH_TEST_ENDPOINT=http://...` is printed on stdout. It serves until interrupted (SIGINT,
SIGTERM) or until its standard input closes.
"""

import argparse
import ctypes
import os
import signal
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_server import free_port, wait_ready  # noqa: E402

# `bool common_params_parse(int, char **, common_params &, llama_example, void (*)(int, char **))`
PARSE_SYMBOL = "_Z19common_params_parseiPPcR13common_params13llama_examplePFviS0_E"
# `LLAMA_EXAMPLE_SERVER` in llama.cpp's common.h (checked: `--port` is accepted only there).
LLAMA_EXAMPLE_SERVER = 12


def params_address(p):
    """Address of the `common_params` inside an xllamacpp `CommonParams` object.

    Its first two fields are `int32_t n_predict, n_ctx`; they are set to sentinels through the
    Python properties and looked for right after the object header."""
    import xllamacpp  # noqa: F401

    saved = (p.n_predict, p.n_ctx)
    p.n_predict, p.n_ctx = 0x1357_9BDF, 0x0246_8ACE
    try:
        for off in (16, 24, 32):
            a, b = struct.unpack("<ii", ctypes.string_at(id(p) + off, 8))
            if (a, b) == (0x1357_9BDF, 0x0246_8ACE):
                return id(p) + off
    finally:
        p.n_predict, p.n_ctx = saved
    raise SystemExit("xllamacpp.CommonParams: cannot locate common_params (layout changed)")


def parse_llama_args(p, args):
    """Runs llama.cpp's argument parser on `args` into the params held by `p`."""
    import xllamacpp

    so_path = os.path.join(os.path.dirname(xllamacpp.__file__), "xllamacpp.abi3.so")
    lib = ctypes.CDLL(so_path)
    parse = getattr(lib, PARSE_SYMBOL)
    parse.restype = ctypes.c_bool
    parse.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    argv_list = [b"llama-server"] + [a.encode() for a in args]
    argv = (ctypes.c_char_p * (len(argv_list) + 1))(*argv_list, None)
    if not parse(len(argv_list), argv, params_address(p), LLAMA_EXAMPLE_SERVER, None):
        raise SystemExit(f"llama.cpp refused the arguments {args}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file to serve")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="CPU threads")
    ap.add_argument("--ctx", type=int, default=2048, help="context length (tokens)")
    ap.add_argument("--kv-type", choices=["f16", "f32"], default="f32", help="K/V cache precision")
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for the model")
    ap.add_argument("llama_args", nargs=argparse.REMAINDER, help="-- llama.cpp server options")
    args = ap.parse_args()

    if not os.path.isfile(args.model):
        raise SystemExit(f"no such model file: {args.model}")
    try:
        import xllamacpp
    except ImportError:
        raise SystemExit("xllamacpp is not installed: python3 -m pip install xllamacpp")

    extra = args.llama_args[1:] if args.llama_args[:1] == ["--"] else args.llama_args
    port = free_port()
    p = xllamacpp.CommonParams()
    parse_llama_args(p, ["-m", args.model] + extra)
    p.model.path = args.model
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_ctx = args.ctx
    p.n_parallel = 1
    kv = {"f16": xllamacpp.ggml_type.GGML_TYPE_F16, "f32": xllamacpp.ggml_type.GGML_TYPE_F32}[args.kv_type]
    p.cache_type_k = kv
    p.cache_type_v = kv
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    server = xllamacpp.Server(p)
    url = (getattr(server, "listening_address", None) or f"http://127.0.0.1:{port}").rstrip("/")
    wait_ready(url, args.ready_timeout)
    print(f"LVH_TEST_ENDPOINT={url}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    stop.wait()
    del server
    # Skip interpreter finalisation: the stdin watcher may still hold the stdin buffer lock.
    os._exit(0)


if __name__ == "__main__":
    main()
