#!/usr/bin/env bash
# Before/after evaluation of the committed run3 memory adapter (issue 12): the same commands for
# the frozen base model and the adapter. Run from the repository root; JSON next to this script.
# Passkey at 16k and 32k (3 depths x 3 fillers) and 80k (depth 0.5 x 3 fillers), needle QA at
# 16k, 32k and 80k (3 depths x 2 fillers), perplexity on data/web.txt (not used in training).
set -euo pipefail
out=docs/evals/memory-adapter/final
C=configs/smollm2-135m-memlong.json
A=adapters/smollm2-135m-memlong/adapter
M=build/tools/muninn
for who in base adapter; do
  lora=none
  [[ $who == adapter ]] && lora=$A
  $M eval passkey --config $C --lora $lora --modes memlong --lengths 16384 32768 \
    --depths 0.25 0.5 0.75 --trials 1 --fillers repeat kjv web --local-tokens 1024 -t 2 \
    --json-out $out/passkey_16k_32k_$who.json > $out/passkey_16k_32k_$who.txt 2>&1
  $M eval passkey --config $C --lora $lora --modes memlong --lengths 81920 --depths 0.5 \
    --trials 1 --fillers repeat kjv web --local-tokens 1024 -t 2 \
    --json-out $out/passkey_80k_$who.json > $out/passkey_80k_$who.txt 2>&1
  $M eval perplexity --config $C --lora $lora --memory-mode memlong --text data/web.txt \
    --seq-len 4096 --scored 1024 --windows 2 -t 2 > $out/ppl_web_$who.json 2> $out/ppl_web_$who.log
  $M eval needle --config $C --lora $lora --modes memlong --lengths 16384 32768 81920 \
    --depths 0.25 0.5 0.75 --trials 1 --fillers kjv web -t 2 \
    --json-out $out/needle_$who.json > $out/needle_$who.txt 2>&1
done
echo done
