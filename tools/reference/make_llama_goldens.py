#!/usr/bin/env python3
"""Writes tests/data/llama_goldens.json: reference outputs of the default model from an
independent implementation (Hugging Face transformers + PyTorch).

Run by a developer (not CI), with torch, transformers, gguf and accelerate installed:
    python3 tools/reference/make_llama_goldens.py \
        [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--out tests/data/llama_goldens.json]

transformers reads the GGUF file itself, dequantizes every tensor to float32 (undoing GGUF's
permutation of the Q/K rows, so it runs the usual rotate-half RoPE), and runs its own LlamaModel in
float32. Nothing of muninn is involved, so tests/model/llama_golden_test.cc can compare muninn's
forward (quantized weights used in place, activations quantized to 8 bits per 32-block inside the
dot products) against it.

For each prompt the file holds:
  text, ids                  the prompt and its ids as the HF tokenizer gives them; the C++ test
                             feeds `ids` directly, so tokenization is not in the loop
  top_ids, top_logits        the 50 largest last-position logits, descending
  logits_stats               mean, std, min, max, argmax and L2 norm of the full last-position row
  layer_output_norms         L2 norm of the last position's hidden state after decoder layer i
                             (before the final norm), i = 0..n_layer-1
  layer_output_rms_all       RMS over all positions and features after decoder layer i
  final_norm_norm            L2 norm of the last position after the final RMSNorm
  greedy_ids                 64 tokens of greedy continuation (argmax, no EOS stop)
  greedy_margins             at each of those 64 steps, the reference's own top1 - top2 gap of
                             the raw float32 logits it picked the token from (a small value is
                             a near-tie that float32 summation order alone may flip)
  greedy_runner_up_ids       the top-2 token at each step
The top level records the versions of transformers, torch and gguf that made the file.
"""
import argparse
import importlib.metadata
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    ("In the beginning God created the heaven and the earth. And the earth was without form, and "
     "void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face "
     "of the waters. And God said, Let there be light: and there was light. And God saw the light, "
     "that it was good: and God divided the light from the darkness."),
    "Numbers: 3.14159, 2.71828 and 1,000,000 — café, naïve, 東京 🙂",
]
N_TOP = 50
N_GREEDY = 64


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(root, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "data", "llama_goldens.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model_dir, gguf_name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_name,
                                                 dtype=torch.float32)
    model.eval()
    layers = model.model.layers

    captured = {}

    def hook(index):
        def fn(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[index] = hidden.detach()
        return fn

    for i, layer in enumerate(layers):
        layer.register_forward_hook(hook(i))

    out_prompts = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        captured.clear()
        with torch.no_grad():
            res = model(x, output_hidden_states=True)
        logits = res.logits[0, -1].double()
        top = torch.topk(logits, N_TOP)
        layer_norms = [float(captured[i][0, -1].double().norm()) for i in range(len(layers))]
        layer_rms = [float(captured[i][0].double().pow(2).mean().sqrt()) for i in range(len(layers))]
        final = res.hidden_states[-1][0, -1].double().norm()
        # The attention mask must be given: without one, generate() infers it as
        # `input_ids != pad_token_id` and, pad being <|im_end|> here, masked the chat prompt's
        # <|im_end|> out of attention (the goldens before 2026-12-01 carried that error).
        with torch.no_grad():
            gen = model.generate(x, attention_mask=torch.ones_like(x),
                                 max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY,
                                 do_sample=False, num_beams=1, eos_token_id=None,
                                 pad_token_id=tok.eos_token_id or 0,
                                 return_dict_in_generate=True, output_logits=True)
        greedy = gen.sequences[0, len(ids):].tolist()
        # Raw float32 logits of each decode step (before any logits processor).
        margins, runners_up = [], []
        for step, step_logits in enumerate(gen.logits):
            top2 = torch.topk(step_logits[0].float(), 2)
            if int(top2.indices[0]) != greedy[step]:
                raise SystemExit(f"step {step}: generate picked {greedy[step]}, "
                                 f"raw argmax is {int(top2.indices[0])}")
            margins.append(float(top2.values[0] - top2.values[1]))
            runners_up.append(int(top2.indices[1]))
        out_prompts.append({
            "text": text,
            "ids": ids,
            "top_ids": top.indices.tolist(),
            "top_logits": [round(float(v), 6) for v in top.values],
            "logits_stats": {
                "mean": float(logits.mean()), "std": float(logits.std()),
                "min": float(logits.min()), "max": float(logits.max()),
                "argmax": int(logits.argmax()), "l2": float(logits.norm()),
            },
            "layer_output_norms": [round(v, 6) for v in layer_norms],
            "layer_output_rms_all": [round(v, 6) for v in layer_rms],
            "final_norm_norm": round(float(final), 6),
            "greedy_ids": greedy,
            "greedy_margins": [round(v, 6) for v in margins],
            "greedy_runner_up_ids": runners_up,
            "greedy_text": tok.decode(greedy),
        })
        low = min(range(len(margins)), key=lambda i: margins[i])
        print(f"{text[:40]!r}: {len(ids)} ids, argmax {int(logits.argmax())}, "
              f"greedy {tok.decode(greedy)[:60]!r}, smallest margin {margins[low]:.6f} "
              f"at step {low}")

    doc = {
        "generator": "tools/reference/make_llama_goldens.py",
        "model": gguf_name,
        "framework": f"transformers {transformers.__version__}, "
                     f"torch {torch.__version__}, float32",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "gguf": importlib.metadata.version("gguf")},
        "n_layer": len(layers),
        "vocab_size": int(model.config.vocab_size),
        "prompts": out_prompts,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
