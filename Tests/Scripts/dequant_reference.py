"""Writes random quantized blocks and their dequantization by gguf-py (llama.cpp's reference Python package).

Usage: dequant_reference.py OUT_DIR. For each type, OUT_DIR/TYPE.bin holds the raw blocks and
OUT_DIR/TYPE.f32 the expected float32 values. Scale fields are set to finite half floats.
"""
import sys, os
import numpy as np
from gguf.quants import dequantize
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(1234)

def half(n):
    return rng.uniform(-2.0, 2.0, n).astype(np.float16).view(np.uint8).reshape(n, 2)

# (type, byte offsets of f16 fields within a block)
layouts = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "Q8_K": None, "F16": "f16", "BF16": "bf16",
}
for name, fields in layouts.items():
    qtype = T[name]
    block, size = GGML_QUANT_SIZES[qtype]
    nblocks = 37
    if fields == "f16":
        raw = rng.standard_normal(block * nblocks * 8).astype(np.float16).view(np.uint8)
    elif fields == "bf16":
        f = rng.standard_normal(block * nblocks * 8).astype(np.float32)
        raw = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
        if fields is None:  # Q8_K: f32 scale first
            raw[:, 0:4] = rng.uniform(-0.1, 0.1, nblocks).astype(np.float32).view(np.uint8).reshape(nblocks, 4)
        else:
            for off in fields:
                raw[:, off:off + 2] = half(nblocks)
        raw = raw.reshape(-1)
    if name == "Q8_K":  # gguf-py has no Q8_K: d (f32) · qs (int8), bsums unused
        b = raw.reshape(nblocks, size)
        d = b[:, 0:4].copy().view(np.float32)
        qs = b[:, 4:260].copy().view(np.int8).astype(np.float32)
        values = (d * qs).reshape(-1)
    else:
        values = dequantize(raw, qtype).astype(np.float32).reshape(-1)
    raw.tofile(os.path.join(out, name + ".bin"))
    values.tofile(os.path.join(out, name + ".f32"))
print(out)
