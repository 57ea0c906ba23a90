#!/usr/bin/env python3
"""Writes tests/data/lora_goldens.json: LoRA training goldens of a tiny random llama from an
independent implementation (PyTorch autograd + Hugging Face transformers' LlamaForCausalLM +
PEFT), and checks that PEFT loads an adapter folder muninn exported.

Run by a developer (not CI), with torch, transformers, peft, numpy and safetensors installed
(a venv outside the repository):
    python3 tools/reference/make_lora_goldens.py [--out tests/data/lora_goldens.json]
    python3 tools/reference/make_lora_goldens.py --check-adapter DIR
        DIR: a PEFT folder muninn exported for the tiny model with muninn_check.json beside it
        (muninn's losses of blocks 0 and 1 under that adapter); the trainer test writes one into
        $MUNINN_LORA_EXPORT_DIR when that is set.

The model, adapter and data are those of tests/model/tiny_lora_llama.h: every value comes from a
counter-based generator (splitmix64 of seed, stream and element index, mapped to a uniform in
[-1, 1) and rounded to float32) implemented identically there, so no weights are committed.
Everything here runs in float64 with eager attention, so the goldens carry no float32 rounding.

Goldens:
  versions               torch, transformers, peft
  loss0, n_supervised0   mean cross-entropy of block 0 at the initial adapter (labels aligned with
                         the inputs: labels[t] is the token after ids[t]; -100 skipped)
  grads                  PEFT name -> flat gradient of that mean loss (every LoRA A/B of layers 1
                         and 2 and their input_layernorm / post_attention_layernorm weights)
  trace                  10 optimizer steps, each accumulating blocks 0 and 1 (loss = summed CE /
                         supervised tokens of both blocks): AdamW (lr 1e-2, betas 0.9/0.999, eps
                         1e-8, weight decay 0.01), linear warm-up 2 steps then linear decay to 0
                         at step 10 (transformers' get_linear_schedule_with_warmup), global-norm
                         clipping at 1.0 (torch.nn.utils.clip_grad_norm_):
      losses[s]          the step's loss before its update
      grad_norms[s]      the global gradient norm before clipping
      lrs[s]             the learning rate the step used
      final              PEFT name -> parameter values after the 10 steps
"""
import argparse
import importlib.metadata
import json
import math
import os

import numpy as np
import torch

SEED = 12
VOCAB, EMBD, LAYERS, HEADS, HEADS_KV, HD, FF, BLOCK = 256, 32, 3, 4, 2, 8, 48, 24
RANK, ALPHA, FIRST_LAYER = 4, 8.0, 1
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODULE = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
          "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
STEPS, LR, WARMUP, WD, CLIP = 10, 1e-2, 2, 0.01, 1.0
MASK = (1 << 64) - 1


def splitmix64(x):
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def raw(k, n):
    base = np.uint64((SEED << 40) + (k << 28))
    return splitmix64(np.arange(n, dtype=np.uint64) + base)


def uniform(k, shape, scale, offset=0.0):
    """float32-rounded offset + scale·u (u in [-1, 1)), returned as float64."""
    n = int(np.prod(shape))
    u = (raw(k, n) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 * 2.0 - 1.0
    return (offset + scale * u).astype(np.float32).astype(np.float64).reshape(shape)


def model_specs():
    s_e, s_q, s_f = math.sqrt(3.0 / EMBD), math.sqrt(3.0 / (HEADS * HD)), math.sqrt(3.0 / FF)
    specs = [("model.embed_tokens.weight", (VOCAB, EMBD), 1.0, 0.0),
             ("model.norm.weight", (EMBD,), 0.1, 1.0),
             ("lm_head.weight", (VOCAB, EMBD), 0.5, 0.0)]
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        specs += [(p + "input_layernorm.weight", (EMBD,), 0.1, 1.0),
                  (p + "self_attn.q_proj.weight", (HEADS * HD, EMBD), 2 * s_e, 0.0),
                  (p + "self_attn.k_proj.weight", (HEADS_KV * HD, EMBD), 2 * s_e, 0.0),
                  (p + "self_attn.v_proj.weight", (HEADS_KV * HD, EMBD), s_e, 0.0),
                  (p + "self_attn.o_proj.weight", (EMBD, HEADS * HD), s_q, 0.0),
                  (p + "post_attention_layernorm.weight", (EMBD,), 0.1, 1.0),
                  (p + "mlp.gate_proj.weight", (FF, EMBD), s_e, 0.0),
                  (p + "mlp.up_proj.weight", (FF, EMBD), s_e, 0.0),
                  (p + "mlp.down_proj.weight", (EMBD, FF), s_f, 0.0)]
    return specs


def in_out(target):
    return {"q_proj": (EMBD, HEADS * HD), "k_proj": (EMBD, HEADS_KV * HD),
            "v_proj": (EMBD, HEADS_KV * HD), "o_proj": (HEADS * HD, EMBD),
            "gate_proj": (EMBD, FF), "up_proj": (EMBD, FF), "down_proj": (FF, EMBD)}[target]


def adapter_layout():
    """(peft name, kind, shape) in muninn's LoraParams order: per trained layer, targets in model
    order with A then B, then the two norms. Stream of entry k is 1000 + k."""
    out = []
    for l in range(FIRST_LAYER, LAYERS):
        p = f"base_model.model.model.layers.{l}."
        for t in TARGETS:
            n_in, n_out = in_out(t)
            out.append((p + f"{MODULE[t]}.{t}.lora_A.weight", "A", (RANK, n_in)))
            out.append((p + f"{MODULE[t]}.{t}.lora_B.weight", "B", (n_out, RANK)))
        out.append((p + "input_layernorm.weight", "norm", (EMBD,)))
        out.append((p + "post_attention_layernorm.weight", "norm", (EMBD,)))
    return out


def block(b):
    seq = (raw(2000 + b, BLOCK + 1) % np.uint64(VOCAB)).astype(np.int64)
    ids, labels = seq[:-1].copy(), seq[1:].copy()
    labels[2::5] = -100
    return torch.tensor(ids).unsqueeze(0), torch.tensor(labels)


def build_base():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=EMBD, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=HEADS_KV, head_dim=HD,
                      intermediate_size=FF, max_position_embeddings=128, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu",
                      attention_bias=False, mlp_bias=False)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).to(torch.float64)
    sd = {name: torch.from_numpy(uniform(k, shape, scale, offset))
          for k, (name, shape, scale, offset) in enumerate(model_specs())}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in m for m in missing), missing
    model.eval()
    return model


def build_peft():
    from peft import LoraConfig, get_peft_model
    base = build_base()
    lc = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                    target_modules=TARGETS, layers_to_transform=list(range(FIRST_LAYER, LAYERS)))
    model = get_peft_model(base, lc)
    named = dict(model.named_parameters())
    params = []
    for k, (name, kind, shape) in enumerate(adapter_layout()):
        key = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight")
        if kind == "norm":
            key = name.replace("base_model.model.", "base_model.model.", 1)
        p = named[key]
        assert tuple(p.shape) == shape, (name, p.shape, shape)
        with torch.no_grad():
            if kind == "A":
                p.copy_(torch.from_numpy(uniform(1000 + k, shape, 1.0 / math.sqrt(shape[1]))))
            elif kind == "B":
                p.copy_(torch.from_numpy(uniform(1000 + k, shape, 0.1)))
        p.requires_grad_(True)
        params.append((name, p))
    model.eval()  # dropout is 0 anyway
    return model, params


def loss_of(model, b, reduction="mean"):
    ids, labels = block(b)
    logits = model(input_ids=ids).logits[0]
    return torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100,
                                             reduction=reduction), int((labels != -100).sum())


def make_goldens(out_path):
    from transformers import get_linear_schedule_with_warmup
    model, params = build_peft()
    loss, n_sup = loss_of(model, 0)
    loss.backward()
    grads = {name: p.grad.detach().reshape(-1).tolist() for name, p in params}
    loss0 = loss.item()

    model, params = build_peft()
    plist = [p for _, p in params]
    opt = torch.optim.AdamW(plist, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)
    sched = get_linear_schedule_with_warmup(opt, WARMUP, STEPS)
    losses, norms, lrs = [], [], []
    n_total = sum(int((block(b)[1] != -100).sum()) for b in (0, 1))
    for _ in range(STEPS):
        opt.zero_grad()
        total = 0.0
        for b in (0, 1):
            l, _ = loss_of(model, b, reduction="sum")
            (l / n_total).backward()
            total += l.item()
        losses.append(total / n_total)
        lrs.append(opt.param_groups[0]["lr"])
        norms.append(float(torch.nn.utils.clip_grad_norm_(plist, CLIP)))
        opt.step()
        sched.step()
    final = {name: [float("%.9g" % v) for v in p.detach().reshape(-1).tolist()]
             for name, p in params}
    g = {"versions": {m: importlib.metadata.version(m) for m in ("torch", "transformers", "peft")},
         "loss0": loss0, "n_supervised0": n_sup,
         "grads": {k: [float("%.9g" % v) for v in vs] for k, vs in grads.items()},
         "trace": {"losses": losses, "grad_norms": norms, "lrs": lrs, "final": final}}
    with open(out_path, "w") as f:
        json.dump(g, f, separators=(",", ":"))
    print(f"wrote {out_path}: loss0 {loss0:.6f}, trace {losses[0]:.5f} -> {losses[-1]:.5f}")


def check_adapter(folder):
    """Loads `folder` with PEFT on the tiny model and compares the losses of blocks 0 and 1 with
    those muninn computed with the same adapter (muninn_check.json in the folder)."""
    from peft import PeftModel
    with open(os.path.join(folder, "adapter_config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(folder, "muninn_check.json")) as f:
        want = json.load(f)
    model = PeftModel.from_pretrained(build_base(), folder)
    model.eval()
    print(f"adapter_config: r={cfg['r']} alpha={cfg['lora_alpha']} "
          f"targets={sorted(cfg['target_modules'])} layers={cfg.get('layers_to_transform')} "
          f"modules_to_save={cfg.get('modules_to_save')}")
    ok = True
    with torch.no_grad():
        base_loss, _ = loss_of(build_base(), 0)
        for b, w in enumerate(want["losses"]):
            loss, _ = loss_of(model, b)
            d = abs(loss.item() - w)
            ok = ok and d < 1e-5 * abs(w)
            print(f"block {b}: PEFT loss {loss.item():.7f}  muninn loss {w:.7f}  |diff| {d:.1e}")
    print(f"(base model without the adapter, block 0: {base_loss.item():.7f})")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(root, "tests", "data", "lora_goldens.json"))
    ap.add_argument("--check-adapter", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.check_adapter:
        raise SystemExit(check_adapter(args.check_adapter))
    make_goldens(args.out)


if __name__ == "__main__":
    main()
