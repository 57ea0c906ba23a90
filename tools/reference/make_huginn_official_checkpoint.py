#!/usr/bin/env python3
"""Saves a tiny random Huginn checkpoint with the official modeling code's save_pretrained, and
the official forward's logits for a few tokens, to check that muninn loads what the official code
writes (issue 13: the persistent RoPE buffer `freqs_cis` [1, block_size, 1, head_dim/2, 2] made
muninn refuse official checkpoints).

Run by a developer (not CI), with torch and transformers installed and a copy of the official
modeling code: the folder holding raven_config_minimal.py and raven_modeling_minimal.py (the
Hub snapshot of tomg-group-umd/huginn-0125, or recpre/ in github.com/seal-rg/recurrent-pretraining).
That code is imported from where it lies; nothing of it is copied here.

    python3 tools/reference/make_huginn_official_checkpoint.py --official DIR --out /tmp/huginn_off
    muninn logits -m /tmp/huginn_off --ids 1,17,42,7 --steps 4 --init zero --top 3

The dimensions are those of tests/data/huginn_tiny/config.json (n_embd 64, 4 heads, 2/4/2
layers, vocabulary 300); its tokenizer files are copied next to the weights. The script prints
every tensor of more than 4 dimensions the checkpoint holds (freqs_cis), and the official logits
(zero initial state, --steps iterations) of the last position, top 3, to set beside
`muninn logits --top 3`.

Run on 2026-12-03 with torch 2.5.1 (CPU) and transformers 4.52.4 against recpre/ at
seal-rg/recurrent-pretraining 59e0b69: the checkpoint holds freqs_cis F32 [1, 256, 1, 8, 2];
muninn loads it, and `muninn logits ... --exact` gives the official top 3 (ids 68, 93, 208:
1.49090, 1.45988, 1.39851 against 1.490896, 1.459875, 1.398512; without --exact, bf16 matrices:
1.49377, 1.45909, 1.39847).
"""
import argparse
import importlib
import json
import os
import shutil
import sys
import types

import torch
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "..", "tests", "data", "huginn_tiny")


def import_official(folder):
    """Imports raven_modeling_minimal from `folder` as a package (it imports its config relatively)."""
    pkg = types.ModuleType("huginn_official")
    pkg.__path__ = [os.path.abspath(folder)]
    sys.modules["huginn_official"] = pkg
    cfg = importlib.import_module("huginn_official.raven_config_minimal")
    mod = importlib.import_module("huginn_official.raven_modeling_minimal")
    return cfg.RavenConfig, mod.RavenForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, help="folder with raven_{config,modeling}_minimal.py")
    ap.add_argument("--out", required=True, help="checkpoint folder to write")
    ap.add_argument("--ids", default="1,17,42,7", help="token ids for the logits")
    ap.add_argument("--steps", type=int, default=4, help="recurrent iterations")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    RavenConfig, RavenForCausalLM = import_official(args.official)
    with open(os.path.join(TINY, "config.json")) as f:
        fields = json.load(f)
    for key in ("architectures", "model_type", "padded_vocab_size", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id"):
        fields.pop(key, None)
    fields["torch_dtype"] = "float32"
    config = RavenConfig(**fields)
    torch.manual_seed(args.seed)
    model = RavenForCausalLM(config).float().eval()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TINY, name), os.path.join(args.out, name))

    with safe_open(os.path.join(args.out, "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            t = f.get_slice(key)
            shape = t.get_shape()
            if len(shape) > 4:
                print(f"tensor {key}: {t.get_dtype()} {shape}")

    ids = torch.tensor([[int(x) for x in args.ids.split(",")]])
    with torch.no_grad():
        out = model(ids, num_steps=args.steps, init_scale=0.0)
    last = out.logits[0, -1].double()
    top = torch.topk(last, 3)
    print("official logits, last position, top 3:")
    for v, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  id {i}: {v:.6f}")


if __name__ == "__main__":
    main()
