#!/usr/bin/env python3
"""Writes tests/data/minilm_goldens.json: reference sentence embeddings of all-MiniLM-L6-v2 from an
independent implementation (Hugging Face transformers + PyTorch).

Run by a developer (not CI), with torch and transformers installed:
    python3 tools/reference/make_bert_goldens.py \
        [--model models/all-MiniLM-L6-v2] [--out tests/data/minilm_goldens.json]

It does what sentence-transformers does for this folder (modules.json: Transformer, Pooling,
Normalize) with plain transformers, so sentence-transformers itself is not needed:
  - tokenize with the folder's fast tokenizer, truncating to sentence_bert_config.json's
    max_seq_length (256; tokenizer.json's own 128-token truncation and padding are overridden);
  - run AutoModel (BertModel) in float32 with an all-ones attention mask, one text at a time;
  - mean-pool the last hidden state over all tokens ([CLS] and [SEP] included, as
    sentence-transformers' Pooling does), then L2-normalise.
Nothing of muninn is involved, so tests/model/bert_encoder_test.cc can compare muninn against it.

For each text the file holds:
  text                the input
  ids                 token ids as the HF tokenizer gives them ([CLS] ... [SEP], truncated)
  embedding           the 384-d normalised sentence embedding, rounded to 7 decimals
  layer_norms         Frobenius norm of the hidden states [T, 384] after the embeddings (index 0)
                      and after each encoder layer i (index i + 1)
"""
import argparse
import json
import os

import torch
from transformers import AutoModel, AutoTokenizer

GENESIS = (
    "In the beginning God created the heaven and the earth. And the earth was without form, and "
    "void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face "
    "of the waters. And God said, Let there be light: and there was light. And God saw the light, "
    "that it was good: and God divided the light from the darkness. And God called the light Day, "
    "and the darkness he called Night. And the evening and the morning were the first day. And "
    "God said, Let there be a firmament in the midst of the waters, and let it divide the waters "
    "from the waters. And God made the firmament, and divided the waters which were under the "
    "firmament from the waters which were above the firmament: and it was so. And God called the "
    "firmament Heaven. And the evening and the morning were the second day. And God said, Let the "
    "waters under the heaven be gathered together unto one place, and let the dry land appear: "
    "and it was so. And God called the dry land Earth; and the gathering together of the waters "
    "called he Seas: and God saw that it was good. And God said, Let the earth bring forth grass, "
    "the herb yielding seed, and the fruit tree yielding fruit after his kind, whose seed is in "
    "itself, upon the earth: and it was so. And the earth brought forth grass, and herb yielding "
    "seed after his kind, and the tree yielding fruit, whose seed was in itself, after his kind: "
    "and God saw that it was good. And the evening and the morning were the third day.")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Hello",
    "What is the capital of France?",
    "Café naïve résumé — Ångström, façade, Zürich, São Paulo.",
    "東京は日本の首都です。 🙂🚀 Привет, мир! Γειά σου κόσμε.",
    "def add(a, b):\n    return a + b  # sum\n\nprint(add(2, 3))  // -> 5",
    "Pi is 3.14159; e ≈ 2.71828 and 1,000,000 > 999,999!!! (really?) [yes] {no} <maybe>",
    "  MiXeD   CaSe\t\twith \n\n   whitespace   runs  ",
    "zero\u200bwidth\u00a0nbsp, soft\u00adhyphen and a control\x07char",
    "a" * 120 + " supercalifragilisticexpialidocious antidisestablishmentarianism",
    # Between tokenizer.json's 128 and max_seq_length 256: must not be cut at 128.
    GENESIS[:900],
    # Far over 256 tokens: truncated to 256.
    GENESIS,
]


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(root, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "data", "minilm_goldens.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    with open(os.path.join(args.model, "sentence_bert_config.json")) as f:
        max_len = int(json.load(f)["max_seq_length"])
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, dtype=torch.float32)
    model.eval()

    cases = []
    for text in TEXTS:
        enc = tok(text, truncation=True, max_length=max_len, padding=False,
                  return_tensors="pt")
        ids = enc["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                        token_type_ids=torch.zeros_like(ids), output_hidden_states=True)
        hidden = out.last_hidden_state[0].double()            # [T, 384]
        pooled = hidden.mean(dim=0)                            # mean over all (real) tokens
        emb = pooled / pooled.norm().clamp_min(1e-12)          # sentence-transformers Normalize
        layer_norms = [float(h[0].double().norm()) for h in out.hidden_states]
        cases.append({
            "text": text,
            "ids": ids[0].tolist(),
            "embedding": [round(float(v), 7) for v in emb],
            "layer_norms": [round(v, 6) for v in layer_norms],
        })
        print(f"{len(ids[0]):4d} tokens  {text[:60]!r}")

    data = {
        "model": "all-MiniLM-L6-v2",
        "max_seq_length": max_len,
        "dim": len(cases[0]["embedding"]),
        "generator": "tools/reference/make_bert_goldens.py (transformers AutoModel, float32, "
                     "mean pooling + L2 normalisation)",
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
