#!/usr/bin/env bash
# One lease: are the four changes chosen at 140 s on mixed shards (batch 524,288, MuonEq-R, Muon decay 0.09, 4/2 heads
# of 128) still better at 300 s? `record` against batch 786,432 alone and against all four reverted (the preset of
# eighth300s_v4), ordered-tail shards, chosen on held-out packed bpb (the ordered tail: Wikipedia articles in order).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep_ordered.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model; D=/tmp/shards_ordered
C="--protocol eighth --seconds 300 --val-tokens 524288 --data-dir $D --tokenizer $T --out /tmp/jobout --name ab300s --row-timeout 600"
mkdir -p /tmp/jobout
python records/bench.py --ours "record=record" $C
python records/bench.py --ours "bs786=record:train_batch_tokens=786432" $C --append
python records/bench.py --ours "v4=record:train_batch_tokens=786432,muon_row_norm=false,muon_wd=0.04,num_heads=8,num_kv_heads=4" $C --append
