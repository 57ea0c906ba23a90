#!/usr/bin/env python3
"""Writes a tiny random Huginn checkpoint folder's text files (tests/data/huginn_tiny/) and the
goldens of an independent PyTorch forward of it (tests/data/huginn_goldens.json).

Run by a developer (not CI), with torch, numpy, safetensors and tokenizers installed:
    python3 tools/reference/make_huginn_goldens.py [--out-dir tests/data] [--weights-dir DIR]

The forward below is written from specs/huginn.md §3-§5 alone (sandwich block, fused Wqkv with
qk_bias added before interleaved RoPE, embedding scale, adapter on [state ; e], ln_f twice, tied
head), in float64, with nothing of muninn involved. The dimensions are Huginn's scaled down
(n_embd 64, 4 heads of 16, MLP 128, vocabulary 300, 2/4/2 layers) and the config.json keys are
Huginn's own (RavenConfig, model_type huginn_raven).

The weights are not committed: every value comes from a counter-based generator (splitmix64 of
seed, tensor index and element index, mapped to a uniform in [-1, 1)) that
tests/model/huginn_test.cc reimplements, so the C++ test writes the same F32 model.safetensors
itself. The goldens carry per-tensor checksums so a drift of either generator is caught first.
--weights-dir DIR writes a complete folder (the text files and model.safetensors) to try the CLI:
    muninn generate -m DIR --steps 8 -p "Huginn and" -n 16

Goldens (all with zero initial state, init_scale = 0):
  checksums                   per tensor: sum of values (float64) and the first value
  prompt                      token ids fed to both implementations
  runs[r]  r = 1, 4, 32       full-prompt forward without a cache:
      logits                  [T][V] every position
      norms                   L2 norm per position of: embeddings (after the scale), prelude.i
                              (layer outputs), prelude_out, adapter.t, core.t.j, state.t,
                              latent, coda.i, output_norm
      state_last              [r][n_embd] the last position's core output per iteration
  decode_s4_r4                the prompt fed one token at a time with a compress-s4 KV cache
                              (one slot per core layer, overwritten every iteration) at r = 4:
                              logits [T][V] of each step's token
  tokenizer                   texts and their ids from the `tokenizers` library
"""
import argparse
import json
import math
import os

import numpy as np
import torch

N_EMBD, N_HEADS, HEAD_DIM, N_FF, VOCAB = 64, 4, 16, 128, 300
N_PRELUDE, N_CORE, N_CODA = 2, 4, 2
N_LAYERS = N_PRELUDE + N_CORE + N_CODA
ROPE_BASE, EPS, BLOCK = 50000.0, 1e-6, 256
SEED = 6
STATE_DAMP = 0.1  # adapter columns that multiply the state are scaled by this (a contractive core)
PROMPT = [1, 17, 42, 255, 3, 99, 150]
SPECIAL = ["<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>",
           "<|end_turn|>", "<|pad|>"]
MASK = (1 << 64) - 1


def splitmix64(x):
    """Vectorised splitmix64 on uint64 numpy arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(tensor_index, n):
    """n values in [-1, 1): element i of tensor k is splitmix64(seed·2^40 + k·2^28 + i)."""
    base = (SEED << 40) + (tensor_index << 28)
    z = splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(base))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 * 2.0 - 1.0


def layer_prefix(l):
    if l < N_PRELUDE:
        return f"transformer.prelude.{l}"
    if l < N_PRELUDE + N_CORE:
        return f"transformer.core_block.{l - N_PRELUDE}"
    return f"transformer.coda.{l - N_PRELUDE - N_CORE}"


def tensor_specs():
    """(name, shape, scale, offset) in generator order; the C++ test has the same table."""
    s_in, s_ff, s_ad = math.sqrt(3 / N_EMBD), math.sqrt(3 / N_FF), math.sqrt(3 / (2 * N_EMBD))
    specs = [("transformer.wte.weight", [VOCAB, N_EMBD], 0.5, 0.0),
             ("transformer.adapter.weight", [N_EMBD, 2 * N_EMBD], 2 * s_ad, 0.0),
             ("transformer.ln_f.weight", [N_EMBD], 0.1, 1.0)]
    for l in range(N_LAYERS):
        p = layer_prefix(l)
        specs += [(f"{p}.norm_1.weight", [N_EMBD], 0.1, 1.0),
                  (f"{p}.attn.Wqkv.weight", [3 * N_EMBD, N_EMBD], s_in, 0.0),
                  (f"{p}.attn.qk_bias", [2, 1, N_HEADS, HEAD_DIM], 0.1, 0.0),
                  (f"{p}.attn.proj.weight", [N_EMBD, N_EMBD], s_in, 0.0),
                  (f"{p}.norm_2.weight", [N_EMBD], 0.1, 1.0),
                  (f"{p}.mlp.fc.weight", [2 * N_FF, N_EMBD], s_in, 0.0),
                  (f"{p}.mlp.proj.weight", [N_EMBD, N_FF], s_ff, 0.0),
                  (f"{p}.norm_3.weight", [N_EMBD], 0.1, 1.0),
                  (f"{p}.norm_4.weight", [N_EMBD], 0.1, 1.0)]
    return specs


def make_weights():
    w = {}
    for k, (name, shape, scale, offset) in enumerate(tensor_specs()):
        v = offset + scale * uniform(k, int(np.prod(shape)))
        v = v.reshape(shape)
        if name == "transformer.adapter.weight":
            v[:, :N_EMBD] *= STATE_DAMP
        w[name] = v.astype(np.float32)  # the checkpoint is F32, as huginn-0125's
    return w


# ---------------------------------------------------------------- the reference forward (float64)

def rmsnorm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def rope(x, pos):
    """Interleaved pairs (2i, 2i+1), ω_i = base^(-2i/d); x [T, H, D], pos [T]."""
    d = x.shape[-1]
    omega = ROPE_BASE ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    a = pos[:, None].double() * omega[None, :]                       # [T, D/2]
    cos, sin = torch.cos(a)[:, None, :], torch.sin(a)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x1 * cos + x0 * sin
    return out


class Reference:
    def __init__(self, weights):
        self.w = {k: torch.from_numpy(v.astype(np.float64)) for k, v in weights.items()}

    def qkv(self, l, x, pos):
        p = layer_prefix(l)
        t = x.shape[0]
        y = x @ self.w[f"{p}.attn.Wqkv.weight"].T
        q, k, v = y.split(N_EMBD, dim=-1)
        bias = self.w[f"{p}.attn.qk_bias"].reshape(2, N_HEADS * HEAD_DIM)
        q, k = q + bias[0], k + bias[1]
        q = rope(q.reshape(t, N_HEADS, HEAD_DIM), pos)
        k = rope(k.reshape(t, N_HEADS, HEAD_DIM), pos)
        return q, k, v.reshape(t, N_HEADS, HEAD_DIM)

    @staticmethod
    def attend(q, keys, values, q_pos, k_pos):
        # q [T, H, D], keys [S, H, D]; query at position a sees keys at positions <= a
        s = torch.einsum("thd,shd->hts", q, keys) / math.sqrt(HEAD_DIM)
        mask = k_pos[None, :] > q_pos[:, None]
        s = s.masked_fill(mask[None], float("-inf"))
        return torch.einsum("hts,shd->thd", torch.softmax(s, dim=-1), values)

    def block(self, l, x, pos, kv=None):
        """kv: None (attend within x) or a function (k, v) -> (keys, values, key positions)."""
        p = layer_prefix(l)
        q, k, v = self.qkv(l, rmsnorm(x, self.w[f"{p}.norm_1.weight"]), pos)
        if kv is None:
            keys, values, k_pos = k, v, pos
        else:
            keys, values, k_pos = kv(k, v)
        a = self.attend(q, keys, values, pos, k_pos).reshape(x.shape[0], N_EMBD)
        u = rmsnorm(x + a @ self.w[f"{p}.attn.proj.weight"].T, self.w[f"{p}.norm_2.weight"])
        g, up = (rmsnorm(u, self.w[f"{p}.norm_3.weight"]) @ self.w[f"{p}.mlp.fc.weight"].T).split(
            N_FF, dim=-1)
        m = (torch.nn.functional.silu(g) * up) @ self.w[f"{p}.mlp.proj.weight"].T
        return rmsnorm(u + m, self.w[f"{p}.norm_4.weight"])

    def forward(self, ids, steps, pos, kv_for=None, record=None):
        """kv_for(layer, iteration) -> kv function or None. record(name, tensor) is optional."""
        rec = record or (lambda name, t: None)
        kv = kv_for or (lambda l, it: None)
        x = self.w["transformer.wte.weight"][ids] * math.sqrt(N_EMBD)
        rec("embeddings", x)
        for l in range(N_PRELUDE):
            x = self.block(l, x, pos, kv(l, 0))
            rec(f"prelude.{l}", x)
        e = x
        rec("prelude_out", e)
        s = torch.zeros_like(e)
        for it in range(steps):
            s = torch.cat([s, e], dim=-1) @ self.w["transformer.adapter.weight"].T
            rec(f"adapter.{it}", s)
            for j in range(N_CORE):
                s = self.block(N_PRELUDE + j, s, pos, kv(N_PRELUDE + j, it))
                rec(f"core.{it}.{j}", s)
            rec(f"state.{it}", s)
        x = rmsnorm(s, self.w["transformer.ln_f.weight"])
        rec("latent", x)
        for c in range(N_CODA):
            x = self.block(N_PRELUDE + N_CORE + c, x, pos, kv(N_PRELUDE + N_CORE + c, 0))
            rec(f"coda.{c}", x)
        x = rmsnorm(x, self.w["transformer.ln_f.weight"])
        rec("output_norm", x)
        return x @ self.w["transformer.wte.weight"].T, s


def run_full(ref, steps):
    norms, states = {}, []

    def record(name, t):
        norms[name] = [float(v) for v in t.norm(dim=-1)]
        if name.startswith("state."):
            states.append([float(v) for v in t[-1]])

    ids = torch.tensor(PROMPT)
    logits, _ = ref.forward(ids, steps, torch.arange(len(PROMPT)), record=record)
    return {"steps": steps, "init": "zero", "logits": [[float(v) for v in row] for row in logits],
            "norms": norms, "state_last": states}


def run_decode_s4(ref, steps):
    """Token by token; prelude/coda slots per layer, one shared slot per core layer (compress-s4):
    every iteration overwrites the token's row, so later tokens read earlier tokens' last
    iteration."""
    cache = {}  # slot -> (keys [P, H, D], values) rows by position
    out = []
    for p, tok in enumerate(PROMPT):
        def kv_for(l, it):
            slot = l if l < N_PRELUDE or l >= N_PRELUDE + N_CORE else N_PRELUDE + (
                (N_CORE * it + l - N_PRELUDE) % 4)

            def kv(k, v):
                ks, vs = cache.get(slot, (torch.zeros(0, N_HEADS, HEAD_DIM, dtype=torch.float64),) * 2)
                ks = torch.cat([ks[:p], k], dim=0)
                vs = torch.cat([vs[:p], v], dim=0)
                cache[slot] = (ks, vs)
                return ks, vs, torch.arange(p + 1)
            return kv
        logits, _ = ref.forward(torch.tensor([tok]), steps, torch.tensor([p]), kv_for=kv_for)
        out.append([float(v) for v in logits[0]])
    return {"steps": steps, "share": "compress-s4", "logits": out}


# ---------------------------------------------------------------- checkpoint text files

def config_json():
    return {
        "architectures": ["RavenForCausalLM"], "model_type": "huginn_raven",
        "n_embd": N_EMBD, "n_heads": N_HEADS, "n_layers": N_LAYERS, "block_size": BLOCK,
        "vocab_size": VOCAB, "padded_vocab_size": VOCAB, "padding_multiple": 4,
        "tie_embeddings": True, "tie_word_embeddings": True, "intermediate_size": N_FF,
        "bias": False, "architecture_class_name": "RecurrentGPT",
        "block_class_name": "SandwichBlock", "norm_class_name": "RMSNorm_llama",
        "norm_eps": EPS, "mlp_class_name": "GatedMLP", "nonlin_name": "SiLU",
        "init_strategy": "takase", "init_orthogonal": False, "state_init": "like-init",
        "injection_type": "linear", "n_layers_in_recurrent_block": N_CORE,
        "mean_recurrence": 32, "sampling_scheme": "poisson-lognormal-filling",
        "mean_backprop_depth": 8, "n_layers_in_prelude": N_PRELUDE, "n_layers_in_coda": N_CODA,
        "qk_bias": True, "activation_checkpoint_impl": "per-iteration", "rope_base": ROPE_BASE,
        "torch_dtype": "float32", "bos_token_id": VOCAB - 6, "eos_token_id": [VOCAB - 5, VOCAB - 2],
        "pad_token_id": VOCAB - 1,
    }


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(SPECIAL),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = ["the recurrent core thinks in latent space before it answers.",
              "Huginn and Muninn fly over the world every day.",
              "2 + 2 = 4, and the answer is four."] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens(SPECIAL)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|begin_header|>' + message['role'] + "
    "'<|end_header|>\\n\\n' + message['content'] | trim + '<|end_turn|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|begin_header|>Huginn<|end_header|>\\n\\n' }}"
    "{% else %}{{ '<|end_text|>' }}{% endif %}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "../../tests/data"))
    ap.add_argument("--weights-dir", default=None)
    args = ap.parse_args()
    folder = os.path.join(args.out_dir, "huginn_tiny")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_json(), f, indent=1)
    tok = make_tokenizer()
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": SPECIAL[0], "eos_token": SPECIAL[1], "pad_token": SPECIAL[5],
                   "chat_template": CHAT_TEMPLATE,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)

    weights = make_weights()
    if args.weights_dir:
        from safetensors.numpy import save_file
        import shutil
        os.makedirs(args.weights_dir, exist_ok=True)
        save_file(weights, os.path.join(args.weights_dir, "model.safetensors"))
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(folder, name), os.path.join(args.weights_dir, name))
    ref = Reference(weights)
    texts = ["Huginn and Muninn", "the answer is 4.", "<|begin_text|>hi<|end_turn|>"]
    goldens = {
        "generator": "tools/reference/make_huginn_goldens.py",
        "framework": f"torch {torch.__version__}, float64 reference forward from specs/huginn.md",
        "seed": SEED, "state_damp": STATE_DAMP,
        "checksums": {name: [float(v.astype(np.float64).sum()), float(v.reshape(-1)[0])]
                      for name, v in weights.items()},
        "prompt": PROMPT,
        "runs": [run_full(ref, r) for r in (1, 4, 32)],
        "decode_s4_r4": run_decode_s4(ref, 4),
        "tokenizer": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids}
                      for t in texts],
    }
    with open(os.path.join(args.out_dir, "huginn_goldens.json"), "w") as f:
        json.dump(goldens, f, separators=(",", ":"))
    # How contractive the core is (the C++ tolerances assume it converges).
    st = goldens["runs"][2]["state_last"]
    diffs = [float(np.linalg.norm(np.array(st[i]) - np.array(st[i - 1]))) for i in range(1, len(st))]
    print("state change per iteration at r=32:", " ".join(f"{d:.2e}" for d in diffs[:8]), "...",
          f"{diffs[-1]:.2e}")


if __name__ == "__main__":
    main()
