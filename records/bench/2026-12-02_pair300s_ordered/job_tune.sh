#!/usr/bin/env bash
# The record 300 s artifact (pair1063 lease, sha256 385e74b3...) tuned on its 262,144 held-out ORDERED training tokens.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
: the held-out tail only, .devdata/tail: the last 262,145 training tokens of /tmp/shards_ordered
mkdir -p $OUT/tune
timeout 380 python records/tune_mix.py .devdata/artifact.pgolf --data-dir .devdata/tail --tokenizer .devdata/tokenizers/fineweb_1024_bpe.model --grid recent=0,1,2 \
  --grid gate_bias=-10,-9,-8,-7,-6 --grid ngram_order=5,7,9 --grid ttt_steps=0,2 --out $OUT/tune 2>&1 | tee $OUT/tune/log.txt | tail -40
