#!/usr/bin/env python3
"""Precision of the CUDA tensor-core prefill attention's two-term f16 split (attention_mma.cu),
emulated with NumPy on the host: K and V are f16 (exact in the MMAs), the scaled queries and the
probabilities are each split into hi = f16(x) and lo = f16(x - hi), both terms are multiplied and
the products summed in f32. Prints the normalised MSE against a float64 attention on the shape of
the conformance case {T 64, S 64, M 128, 9/3 heads, d 64, f16 K/V} (memory keys first, causal
local keys, bottom-right aligned). The conformance bound is 1e-10. The tensor cores' own f32
accumulation order is not emulated.

    python3 tools/reference/check_mma_split_precision.py     # needs numpy
"""
import numpy as np


def split(x):
    hi = x.astype(np.float16)
    lo = (x - hi.astype(np.float32)).astype(np.float16)
    return hi, lo


def attention(q, k, v, T, S, M, H, Hkv, d, emulate):
    scale = np.float32(1.0 / np.sqrt(d))
    out = np.zeros((T, H, d))
    mask = np.ones((T, M + S), bool)
    for t in range(T):
        for s in range(S):
            if s > t + (S - T):
                mask[t, M + s] = False
    for h in range(H):
        g = h // (H // Hkv)
        K = k[:, g, :].astype(np.float64)
        V = v[:, g, :].astype(np.float64)
        Q = (q[:, h, :] * scale).astype(np.float32)
        if emulate:
            qh, ql = split(Q)
            sc = (qh.astype(np.float64) @ K.T).astype(np.float32) + \
                 (ql.astype(np.float64) @ K.T).astype(np.float32)
        else:
            sc = Q.astype(np.float64) @ K.T
        sc = np.where(mask, sc, -np.inf)
        p = np.exp(sc - sc.max(1, keepdims=True))
        l = p.sum(1, keepdims=True)
        if emulate:
            ph, pl = split(p.astype(np.float32))
            o = (ph.astype(np.float64) @ V).astype(np.float32) + \
                (pl.astype(np.float64) @ V).astype(np.float32)
        else:
            o = p @ V
        out[:, h, :] = o / l
    return out


def main():
    rng = np.random.default_rng(0)
    T, S, M, H, Hkv, d = 64, 64, 128, 9, 3, 64
    q = rng.uniform(-1, 1, (T, H, d)).astype(np.float32)
    k = rng.uniform(-1, 1, (M + S, Hkv, d)).astype(np.float16)  # memory rows first
    v = rng.uniform(-1, 1, (M + S, Hkv, d)).astype(np.float16)
    ref = attention(q, k, v, T, S, M, H, Hkv, d, emulate=False)
    got = attention(q, k, v, T, S, M, H, Hkv, d, emulate=True)
    print(f"NMSE of the two-term f16 split vs float64: {((got - ref) ** 2).sum() / (ref ** 2).sum():.3e}")


if __name__ == "__main__":
    main()
