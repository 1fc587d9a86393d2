#!/usr/bin/env python3
"""Writes crates/lvh/tests/data/cvector_generator_controlvector.gguf the way llama.cpp's
`cvector-generator` (`export_gguf` in examples/cvector-generator) writes a control vector, with
llama.cpp's own ggml/gguf C library (the copy linked into the `xllamacpp` wheel, called through
ctypes):

    gguf_init_empty();
    gguf_set_val_str(ctx, "general.architecture", "controlvector");
    gguf_set_val_str(ctx, "controlvector.model_hint", <arch>);
    gguf_set_val_i32(ctx, "controlvector.layer_count", n_layers - 1);   // i32, not u32
    gguf_add_tensor(ctx, direction.1 ... direction.{n_layers-1});        // F32 [n_embd]
    gguf_write_to_file(ctx, fname, false);

Known values, checked by crates/lvh/tests/geometry_export.rs: n_embd = 6, n_layers = 4,
direction.l[j] = (l * 10 + j) / 4 - 3.

    python3 scripts/make_cvector_generator_fixture.py   # needs `pip install xllamacpp`
"""

import ctypes
import os

import xllamacpp

N_EMBD = 6
N_LAYERS = 4
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "crates",
    "lvh",
    "tests",
    "data",
    "cvector_generator_controlvector.gguf",
)


class GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def main():
    lib = ctypes.CDLL(os.path.join(os.path.dirname(xllamacpp.__file__), "xllamacpp.abi3.so"))
    lib.ggml_init.restype = ctypes.c_void_p
    lib.ggml_init.argtypes = [GgmlInitParams]
    lib.ggml_new_tensor_1d.restype = ctypes.c_void_p
    lib.ggml_new_tensor_1d.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    lib.ggml_set_name.restype = ctypes.c_void_p
    lib.ggml_set_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_get_data.restype = ctypes.c_void_p
    lib.ggml_get_data.argtypes = [ctypes.c_void_p]
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    lib.gguf_init_empty.restype = ctypes.c_void_p
    lib.gguf_set_val_str.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.gguf_set_val_i32.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32]
    lib.gguf_add_tensor.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.gguf_write_to_file.restype = ctypes.c_bool
    lib.gguf_write_to_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_bool]
    lib.gguf_free.argtypes = [ctypes.c_void_p]

    ggml = lib.ggml_init(GgmlInitParams(1 << 20, None, False))
    tensors = []
    for il in range(N_LAYERS - 1):
        t = lib.ggml_new_tensor_1d(ggml, 0, N_EMBD)  # GGML_TYPE_F32
        lib.ggml_set_name(t, f"direction.{il + 1}".encode())
        data = (ctypes.c_float * N_EMBD).from_address(lib.ggml_get_data(t))
        for j in range(N_EMBD):
            data[j] = ((il + 1) * 10 + j) / 4.0 - 3.0
        tensors.append(t)

    ctx = lib.gguf_init_empty()
    arch = b"controlvector"
    lib.gguf_set_val_str(ctx, b"general.architecture", arch)
    lib.gguf_set_val_str(ctx, arch + b".model_hint", b"llama")
    lib.gguf_set_val_i32(ctx, arch + b".layer_count", len(tensors))
    for t in tensors:
        lib.gguf_add_tensor(ctx, t)
    if not lib.gguf_write_to_file(ctx, os.path.normpath(OUT).encode(), False):
        raise SystemExit(f"gguf_write_to_file failed: {OUT}")
    lib.gguf_free(ctx)
    lib.ggml_free(ggml)
    print(os.path.normpath(OUT))


if __name__ == "__main__":
    main()
