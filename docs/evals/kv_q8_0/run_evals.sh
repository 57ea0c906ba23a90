#!/bin/bash
# The q8_0 KV cache against the default f16 one (2026-12-05, docs/QUALITY.md "A q8_0 KV cache").
# Run from the repository root after scripts/setup.sh; B is a built muninn.
set -euo pipefail
B=${B:-build/tools/muninn}
Q=docs/evals/kv_q8_0/config_q8_0.json   # configs/smollm2-135m.json with "kv_cache": "q8_0"
F=configs/smollm2-135m.json
O=${O:-/tmp/kv_q8_0}
mkdir -p "$O"
$B eval passkey --config $Q --lengths 32768,81920 --depths 0,0.25,0.5,0.75 --trials 5 \
  --fillers repeat,kjv,web --modes reread -t 2 --json-out $O/passkey_q8_0.json
$B eval needle --config $Q --lengths 16384,32768,65536 --depths 0,0.25,0.5,0.75,1 --trials 2 \
  --fillers kjv,web --modes reread -t 2 --json-out $O/needle_q8_0_seed_default.json
$B eval needle --config $F --lengths 16384 --depths 0,0.25,0.5,0.75,1 --trials 2 \
  --fillers kjv,web --modes reread -t 2 --json-out $O/needle16_f16_seed_default.json
for C in $Q $F; do
  n=$( [ $C = $Q ] && echo q8_0 || echo f16 )
  $B eval needle --config $C --lengths 16384 --depths 0,0.25,0.5,0.75,1 --trials 6 \
    --fillers kjv,web --modes reread -t 2 --seed 7 --json-out $O/needle16_${n}_seed7.json
  $B eval summary --config $C data/genesis.txt data/exodus.txt data/ruth.txt data/acts.txt \
    data/pride-and-prejudice.txt -t 2 --out-dir $O/summaries_$n > $O/summary_scores_$n.txt
done
for T in kjv web; do
  $B eval perplexity --config $Q --text data/$T.txt --modes reread --seq-len 4096 --scored 1024 \
    --windows 4 -t 2 --json-out $O/ppl_${T}_q8_0.json
done
