"""Writes repeng_controlvector.gguf exactly as repeng's ControlVector.export_gguf does
(gguf-py GGUFWriter; architecture "controlvector", model_hint, layer_count, one F32
tensor direction.<layer> per layer), with known values checked by geometry_export.rs.

    python3 make_repeng_controlvector.py   # needs `pip install gguf numpy`
"""
import gguf
import numpy as np

d = 7
directions = {
    layer: np.array([(layer * 10 + j) / 8.0 - 1.0 for j in range(d)], dtype=np.float32)
    for layer in (1, 2, 5)
}
arch = "controlvector"
writer = gguf.GGUFWriter("repeng_controlvector.gguf", arch)
writer.add_string(f"{arch}.model_hint", "llama")
writer.add_uint32(f"{arch}.layer_count", len(directions))
for layer in directions.keys():
    writer.add_tensor(f"direction.{layer}", directions[layer])
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
