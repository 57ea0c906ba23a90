#!/usr/bin/env bash
# Recipe of the SmolLM2-135M MemLong memory adapter (issue 12; docs/TRAINING.md, "The memory
# adapter"). Run from the repository root after scripts/setup.sh:
#
#   adapters/smollm2-135m-memlong/train.sh            # start (into out/memlong-run3/)
#   adapters/smollm2-135m-memlong/train.sh --resume   # continue (e.g. from the committed
#                                                     # checkpoint: copy checkpoint.bin and
#                                                     # metrics.jsonl into out/memlong-run3/ first)
# Needs data/pride-and-prejudice.txt (scripts/setup.sh --eval-books).
#
# Synthetic recall examples (a fact in one 128-token chunk of KJV filler, the question and answer
# in the local block, loss on the answer only) read from MemLong memory laid out as
# configs/smollm2-135m-memlong.json says (memory layer 17 read by 17, 19, ..., 27); LoRA r 16 on q
# and o of layers 17-29 (the memory layer's K/V and norms stay frozen). Curriculum: the fact's
# chunk alone for 400 steps, with random distractors up to top-8 until step 1000, then the
# retriever's real top-8 over 512 filler chunks and the fact. After every 2 recall examples one
# 64-token block of Pride and Prejudice as language modelling with MemLong's stream memory
# (--lm-data): run2, recall only, wrecked the model's language (KJV perplexity 9e5 with the
# adapter; docs/TRAINING.md). 64 tokens because the step's loss is a mean over supervised tokens:
# with 256-token blocks the ~7 answer tokens of a recall example weighed ~5 % of a step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec nice -n 2 build/tools/muninn train --task recall --config configs/smollm2-135m-memlong.json \
  -d data/kjv.txt -o out/memlong-run3 --lm-data data/pride-and-prejudice.txt --lm-every 2 \
  --examples 12000 --eval-examples 24 --pool 512 --steps 3000 --grad-accum 4 \
  --lr 3e-3 --warmup 20 --decay cosine --min-lr-ratio 0.1 --clip 1.0 \
  -r 16 --alpha 32 --targets q,o --first-layer 17 --no-norms \
  --gold-only-steps 400 --distractor-steps 600 --local-filler 8 --local-filler-max 256 \
  --block 64 --passkey-share 0.6 --seed 21 --checkpoint-every 25 --eval-every 100 -t 2 \
  --plot out/memlong-run3/loss.png "$@"
