#!/usr/bin/env bash
# Session 10 (one lease, ~1,470 s): the recipe at 300 s, before the ablation table (which must start from the preset
# this picks). record now packs int6 on the SDClip grid (k=7) with GPTQ: 1.47 MB freed on CPU
# (records/bench/2026-12-01_quant_real_weights_cpu); two ways to spend it: MLP 3.25x (+2.9M params, est. 15.1 MB) and
# a 12th block (+2.2M, est. 14.8 MB). The record row is also issue 14's bytes-per-parameter row at 300 s.
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model
C="--protocol eighth --seconds 300 --val-tokens 524288 --data-dir /tmp/shards --tokenizer $T --out /tmp/jobout --name recipe300s"
mkdir -p /tmp/jobout
python records/bench.py --ours "record=record:records_dir=/tmp/rec" $C --row-timeout 600
for row in ${ROWS:-mlp325=record:mlp_mult=3.25 layers12=record:num_layers=12}; do
  python records/bench.py --ours "$row" $C --append --row-timeout 600
done
# Issue 14's "after": the whole proxy val set (3.9M tokens) scored from the record row's artifact, n-gram + TTT
# (before: 199.2 s, records/bench/2026-12-01_shuffled_order_h200).
A=$(ls /tmp/rec/*/*/artifact.pgolf | head -1)
python eval_ngram.py "$A" --data-dir /tmp/shards --tokenizer $T 2>&1 | tee /tmp/jobout/eval_full.log
