#!/usr/bin/env python3
"""Writes tests/data/quant_vectors.bin: GGUF block (de)quantization vectors from gguf-py.

Run by a developer (not CI) after `pip install gguf numpy`:
    python3 tools/reference/make_quant_vectors.py [--out tests/data/quant_vectors.bin]

gguf-py (the `gguf` package that ships with llama.cpp) has its own numpy implementation of the
GGUF formats, independent of muninn's C++; tests/core/quant_test.cc checks that muninn's
DequantizeRow / QuantizeRow reproduce these bytes and floats exactly.

File format (little-endian):
    [0, 4)   magic  b"MQV1"
    [4, 8)   u32    version = 1
    [8, 12)  u32    number of records
    then each record:
        u8      kind: 0 = dequantize (blocks -> floats), 1 = quantize (floats -> blocks)
        u8      length L of the dtype name, then L bytes of the name (muninn/GGUF name, e.g. "q4_K")
        u32     n_elements
        u32     n_bytes (encoded size)
        kind 0: n_bytes of encoded blocks, then n_elements f32 expected values
        kind 1: n_elements f32 inputs, then n_bytes of expected encoded blocks
"""
import argparse
import struct

import numpy as np
from gguf import quants
from gguf.constants import GGMLQuantizationType as T

SEED = 20240611

# dtype name -> (gguf type, elements per record, has a gguf-py quantizer)
TYPES = {
    "f16": (T.F16, 64, True),
    "bf16": (T.BF16, 64, True),
    "q4_0": (T.Q4_0, 32 * 8, True),
    "q4_1": (T.Q4_1, 32 * 8, True),
    "q5_0": (T.Q5_0, 32 * 8, True),
    "q5_1": (T.Q5_1, 32 * 8, True),
    "q8_0": (T.Q8_0, 32 * 8, True),
    "q4_K": (T.Q4_K, 256 * 4, False),
    "q5_K": (T.Q5_K, 256 * 4, False),
    "q6_K": (T.Q6_K, 256 * 4, False),
}

# Byte offsets of the f16 scale fields of each K block, which must hold finite values.
K_HALF_FIELDS = {"q4_K": (144, [0, 2]), "q5_K": (176, [0, 2]), "q6_K": (210, [208])}


def encode(name, x):
    qtype = TYPES[name][0]
    if qtype == T.F16:
        return x.astype(np.float16).view(np.uint8).reshape(-1)
    return quants.quantize(x.reshape(1, -1), qtype).reshape(-1)


def decode(name, raw):
    qtype = TYPES[name][0]
    if qtype == T.F16:
        return raw.view(np.float16).astype(np.float32)
    return quants.dequantize(raw.reshape(1, -1), qtype).reshape(-1).astype(np.float32)


def random_floats(rng, n):
    # Mixed magnitudes per 32 elements, a zero block, exact ties for the rounding paths.
    x = rng.standard_normal(n).astype(np.float32)
    scales = np.exp(rng.uniform(-6, 4, n // 32)).astype(np.float32)
    x *= np.repeat(scales, 32)[:n]
    x[:32] = 0.0 if n >= 64 else x[:32]
    if n >= 96:
        x[64:96] = np.arange(-16, 16, dtype=np.float32) * 0.5  # halves: ties in q8_0 / q4_*
    return x


def random_k_blocks(rng, name, n):
    size, halves = K_HALF_FIELDS[name]
    nb = n // 256
    raw = rng.integers(0, 256, size=nb * size, dtype=np.uint8).reshape(nb, size)
    for off in halves:
        h = (rng.standard_normal(nb) * 0.05).astype(np.float16)
        raw[:, off:off + 2] = h.view(np.uint8).reshape(nb, 2)
    return raw.reshape(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/quant_vectors.bin")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    records = []
    for name, (qtype, n, can_quantize) in TYPES.items():
        if can_quantize:
            x = random_floats(rng, n)
            raw = encode(name, x)
            records.append((1, name, n, x, raw))
            # Dequantize both the quantizer's output and raw random blocks (every code used).
            records.append((0, name, n, decode(name, raw), raw))
            if qtype not in (T.F16, T.BF16):
                rnd = rng.integers(0, 256, size=raw.size, dtype=np.uint8)
                bsize = quants.GGML_QUANT_SIZES[qtype][1]
                blk = rnd.reshape(-1, bsize)
                h = (rng.standard_normal(blk.shape[0]) * 0.05).astype(np.float16)
                blk[:, 0:2] = h.view(np.uint8).reshape(-1, 2)
                if qtype in (T.Q4_1, T.Q5_1):
                    m = (rng.standard_normal(blk.shape[0])).astype(np.float16)
                    blk[:, 2:4] = m.view(np.uint8).reshape(-1, 2)
                rnd = blk.reshape(-1)
                records.append((0, name, n, decode(name, rnd), rnd))
            else:
                bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
                # Keep to finite values: NaN payloads are not part of the contract.
                exp_mask = 0x7C00 if qtype == T.F16 else 0x7F80
                bits = np.where((bits & exp_mask) == exp_mask, bits ^ 0x4000, bits).astype(np.uint16)
                rnd = bits.view(np.uint8)
                records.append((0, name, n, decode(name, rnd), rnd))
        else:
            raw = random_k_blocks(rng, name, n)
            records.append((0, name, n, decode(name, raw), raw))

    out = bytearray(b"MQV1")
    out += struct.pack("<II", 1, len(records))
    for kind, name, n, floats, raw in records:
        floats = np.ascontiguousarray(floats, dtype="<f4")
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        assert floats.size == n
        out += struct.pack("<BB", kind, len(name)) + name.encode()
        out += struct.pack("<II", n, raw.size)
        if kind == 0:
            out += raw.tobytes() + floats.tobytes()
        else:
            out += floats.tobytes() + raw.tobytes()
    with open(args.out, "wb") as f:
        f.write(out)
    print(f"wrote {len(records)} records, {len(out)} bytes to {args.out}")


if __name__ == "__main__":
    main()
