#!/usr/bin/env python3
"""Training tokens/s of `muninn train` against PyTorch + transformers + PEFT on the CPU, same model,
same LoRA configuration, same blocks, same thread count (issue 12's benchmark).

    python3 bench/compare_train_pytorch.py [--muninn build/tools/muninn]
        [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--data data/genesis.txt]
        [--threads 2] [--block 1024] [--steps 4] [--rank 16] [--first-layer 15]

Run with a Python that has torch, transformers, peft and gguf (a venv outside the repository).
transformers reads the GGUF file itself and dequantizes it to float32; muninn runs the frozen
bottom with the Q4_1 weights in place and the trained layers in f32 (dequantized once). Both:
LoRA rank r, alpha 2r, dropout 0 on q,k,v,o of layers [first-layer, n_layer) plus those layers'
RMSNorm weights; AdamW; one 1024-token block per step; the cross-entropy over the full
vocabulary. The first step is a warm-up and is not counted; tokens/s = supervised tokens of the
remaining steps / their wall time. Prints one line per engine and the ratio.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time


def run_muninn(args, tmp):
    out = os.path.join(tmp, "muninn_run")
    cmd = [args.muninn, "train", "-m", args.model, "-d", args.data, "-o", out,
           "--block", str(args.block), "--steps", str(args.steps), "--rank", str(args.rank),
           "--alpha", str(2 * args.rank), "--targets", "q,k,v,o",
           "--first-layer", str(args.first_layer), "--lr", "1e-4", "-t", str(args.threads),
           "--checkpoint-every", "0"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
    subprocess.run(cmd, check=True, env=env)
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]
    rows = [r for r in rows if "step" in r and "loss" in r]
    # elapsed_s is cumulative from the start of training: count steps 2..N.
    t = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
    tokens = sum(r["tokens"] for r in rows[1:])
    return tokens / t, [r["loss"] for r in rows]


def run_pytorch(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(args.threads)
    d, f = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    n_layer = model.config.num_hidden_layers
    lc = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, bias="none",
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                    layers_to_transform=list(range(args.first_layer, n_layer)))
    model = get_peft_model(model, lc)
    for l in range(args.first_layer, n_layer):
        layer = model.base_model.model.model.layers[l]
        layer.input_layernorm.weight.requires_grad_(True)
        layer.post_attention_layernorm.weight.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ids = tok(open(args.data).read(), add_special_tokens=False)["input_ids"]
    model.train()
    times, losses, tokens = [], [], 0
    for s in range(args.steps):
        chunk = torch.tensor(ids[s * args.block:(s + 1) * args.block + 1]).unsqueeze(0)
        t0 = time.perf_counter()
        logits = model(input_ids=chunk[:, :-1]).logits[0]
        loss = torch.nn.functional.cross_entropy(logits, chunk[0, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if s > 0:
            times.append(dt)
            tokens += chunk.shape[1] - 1
    return tokens / sum(times), losses


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    ap = argparse.ArgumentParser()
    ap.add_argument("--muninn", default=os.path.join(root, "build", "tools", "muninn"))
    ap.add_argument("--model", default=os.path.join(root, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data", default=os.path.join(root, "data", "genesis.txt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--first-layer", type=int, default=15)
    args = ap.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (the first step is a warm-up)")
    tmp = tempfile.mkdtemp(prefix="muninn_train_bench_")
    try:
        m_tps, m_loss = run_muninn(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p_tps, p_loss = run_pytorch(args)
    print(f"muninn   {m_tps:8.1f} tok/s  losses {', '.join(f'{l:.3f}' for l in m_loss)}")
    print(f"pytorch  {p_tps:8.1f} tok/s  losses {', '.join(f'{l:.3f}' for l in p_loss)}")
    print(f"ratio muninn / pytorch: {m_tps / p_tps:.2f}x  (threads {args.threads}, block "
          f"{args.block}, LoRA r {args.rank} on q,k,v,o of layers {args.first_layer}..)")


if __name__ == "__main__":
    main()
