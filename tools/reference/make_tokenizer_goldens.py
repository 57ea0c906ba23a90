#!/usr/bin/env python3
"""Writes tests/data/tokenizer_goldens.json (+ tests/data/tiny_spm.model): token ids computed by
independent implementations, which tests/model/tokenizer_goldens_test.cc compares exactly.

Developer-run, never in CI:
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install transformers tokenizers gguf sentencepiece
    /tmp/venv/bin/python tools/reference/make_tokenizer_goldens.py

Sources of truth:
  * SmolLM2-135M-Instruct GGUF (models/): transformers converts the GGUF vocabulary
    (AutoTokenizer.from_pretrained(dir, gguf_file=...)); the encoding runs in HF `tokenizers`
    (Rust). The GGUF says tokenizer.ggml.pre = "smollm"; transformers' converter has no entry
    for it and would fall back to plain GPT-2 splitting, so we install the pre-tokenizer that
    SmolLM2's own tokenizer.json uses: Sequence[Digits(individual_digits), ByteLevel].
    The same vocabulary is also run with the GPT-2, Llama-3 and Qwen2 split regexes, which checks
    muninn's hand-written pre-tokenizers against a real regex engine.
  * all-MiniLM-L6-v2 tokenizer.json (models/): HF `tokenizers` with truncation/padding off.
  * A tiny SentencePiece BPE model with byte fallback trained here on a fixed corpus: the
    Python sentencepiece library gives the ids; its pieces/scores/types are also stored so that
    muninn's own SentencePiece implementation (GGUF "llama" vocab path) is checked against it.
"""
import json
import os
import sys
import tempfile

from tokenizers import Regex, Tokenizer, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, 'models')
OUT_DIR = os.path.join(ROOT, 'tests', 'data')

TEXTS = [
    "Hello world",
    "Hello, world! How are you doing today?",
    "  leading spaces and trailing   ",
    "multiple\n\nnewlines\r\n\tand tabs\t\there",
    "I'm sure you've seen it; they'll say we'd done it. DON'T SHOUT",
    "Numbers: 1234567890, 3.14159, 1,000,000 and -42 ½ ٣",
    "Ünïcödé àccents: café naïve résumé Ångström",
    "中文字符测试，日本語のテキスト、한국어 텍스트",
    "Emoji 😀👍🏽👨‍👩‍👧‍👦 and symbols ©®™ ∑∫√",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Special <|endoftext|> in the middle",
    "URL https://example.com/path?q=1&r=two#frag",
    "email: someone@example.org; path C:\\Windows\\System32",
    "ǅungla Ǆ İstanbul ß ẞ ﬁ ﬀ",
    "Zero\u200bwidth\u00a0nbsp\u3000ideographic space",
    "Русский текст и Ελληνικά",
    "Math: x² + y² = z², α→β, ∀x∈ℝ",
    "{\"json\": [1, 2, {\"k\": null}]}",
    "    indented\n        more\n",
    "a" * 50 + " " + "ab" * 20,
    "",
    " ",
    "\n",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
    "unaffable unbelievable tokenization WordPiece",
    "tabs\tand\u000bvertical\u000cform feed",
]

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def load_gguf_tokenizer(path):
    """The HF `tokenizers` backend transformers builds for a GGUF vocabulary.

    AutoTokenizer.from_pretrained(dir, gguf_file=...) does this too, but its GGUF reader needs
    torch; the metadata is read here with the `gguf` package instead and handed to the same
    transformers converter."""
    import gguf
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer)
    reader = gguf.GGUFReader(path)
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith('tokenizer.') or name == 'general.architecture':
            meta[name] = field.contents()
    tokenizer_dict = {new: meta['tokenizer.' + key]
                      for key, new in GGUF_TOKENIZER_MAPPING['tokenizer'].items()
                      if 'tokenizer.' + key in meta}
    backend, _ = convert_gguf_tokenizer(meta['general.architecture'], tokenizer_dict)
    return backend if isinstance(backend, Tokenizer) else backend.backend_tokenizer


def smollm_cases():
    backend = load_gguf_tokenizer(os.path.join(MODELS, 'SmolLM2-135M-Instruct.Q4_1.gguf'))
    flavours = {
        'smollm': pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
        'gpt2': pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        'llama-bpe': pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior='isolated'),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        'qwen2': pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior='isolated'),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
    }
    cases = []
    for pre, pt in flavours.items():
        backend.pre_tokenizer = pt
        rows = []
        for text in TEXTS:
            # add_special_tokens=False: SmolLM2 adds no BOS; special tokens are split out as the
            # GGUF marks them control (muninn: parse_special = true).
            ids = backend.encode(text, add_special_tokens=False).ids
            rows.append({'text': text, 'ids': ids})
        cases.append({'name': 'smollm2_gguf_' + pre, 'source': 'gguf', 'pre': pre,
                      'add_special': False, 'parse_special': True, 'rows': rows})
    return cases


def minilm_case():
    tok = Tokenizer.from_file(os.path.join(MODELS, 'all-MiniLM-L6-v2', 'tokenizer.json'))
    tok.no_truncation()
    tok.no_padding()
    rows = [{'text': t, 'ids': tok.encode(t, add_special_tokens=True).ids} for t in TEXTS]
    return {'name': 'minilm_wordpiece', 'source': 'hf_dir', 'add_special': True,
            'parse_special': True, 'rows': rows}


SPM_CORPUS = """The quick brown fox jumps over the lazy dog.
Hello world, hello tokenizer. Numbers 123 and 4567 appear here.
SentencePiece splits text into pieces; byte fallback covers the rest.
A long document is read, remembered and answered over.
""" * 20


def spm_case():
    import sentencepiece as spm
    model_path = os.path.join(OUT_DIR, 'tiny_spm.model')
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, 'corpus.txt')
        with open(corpus, 'w') as f:
            f.write(SPM_CORPUS)
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=os.path.join(tmp, 'm'), vocab_size=400, model_type='bpe',
            byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
            pad_id=-1, normalization_rule_name='identity',
            remove_extra_whitespaces=False, minloglevel=2)
        with open(os.path.join(tmp, 'm.model'), 'rb') as src, open(model_path, 'wb') as dst:
            dst.write(src.read())
    sp = spm.SentencePieceProcessor(model_file=model_path)
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    rows = [{'text': t, 'ids': sp.encode(t)} for t in TEXTS]
    return {'name': 'tiny_spm', 'source': 'spm_model', 'model_file': 'tests/data/tiny_spm.model',
            'add_special': False, 'parse_special': False, 'rows': rows,
            'vocab': {'tokens': pieces, 'scores': scores, 'token_types': types,
                      'bos_id': sp.bos_id(), 'eos_id': sp.eos_id(), 'unk_id': sp.unk_id()}}


def main():
    import sentencepiece
    import tokenizers
    import transformers
    os.makedirs(OUT_DIR, exist_ok=True)
    cases = smollm_cases() + [minilm_case(), spm_case()]
    out = {
        'generator': 'tools/reference/make_tokenizer_goldens.py',
        'versions': {'transformers': transformers.__version__,
                     'tokenizers': tokenizers.__version__,
                     'sentencepiece': sentencepiece.__version__,
                     'python': sys.version.split()[0]},
        'cases': cases,
    }
    path = os.path.join(OUT_DIR, 'tokenizer_goldens.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(out, f, ensure_ascii=False, separators=(',', ':'))
        f.write('\n')
    print('wrote', path, os.path.getsize(path), 'bytes;', len(cases), 'cases')


if __name__ == '__main__':
    main()
