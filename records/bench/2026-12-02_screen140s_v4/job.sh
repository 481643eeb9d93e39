#!/usr/bin/env bash
# One lease (~1,950 s: the last two or three rows will be cut): the fourth 140 s screen, on MIXED shards, against the preset with
# batch 524,288, MuonEq-R and Muon decay 0.09 (records/bench/2026-12-02_screen140s_v3): the batch smaller still, the
# byte headroom spent on a wider MLP (15.29 MB of 16), a shorter EMA (more steps now; public small-batch SP8192
# records use 0.990), decay higher still, the 1.1063's matrix LR, and the same width
# as 4 heads of 128 (attention is 31% of the step; its kernels may run faster at head 128: attn_backends.py times each
# SDPA backend at both shapes first). First, record again with another seed: how far apart two runs of one setting
# land at 140 s, the noise the 0.002 bar has to clear.
# Winners (held-out packed bpb better by > 0.002 and by more than the two seeds' spread) enter record; job_pair1194.sh
# then confirms the stack at 300 s against the previous record.
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep_mixed.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model
C="--protocol eighth --seconds 140 --val-tokens 524288 --data-dir /tmp/shards_mixed --tokenizer $T --out /tmp/jobout --name screen140s_v4"
mkdir -p /tmp/jobout
E=eval_max_tokens=65536  # rows are chosen on held-out training text: val scored on 65,536 tokens only, ~20 s less a row
timeout 120 python .devdata/attn_backends.py > /tmp/jobout/attn_backends.log 2>&1
python records/bench.py --ours "record=record:records_dir=/tmp/rec,$E" $C --row-timeout 450
for row in ${ROWS:-seed1338=record:seed=1338 bs393=record:train_batch_tokens=393216 h4d128=record:num_heads=4,num_kv_heads=2 mlp3375=record:mlp_mult=3.375 ema990=record:ema_decay=0.99 wd12=record:muon_wd=0.12 mlr03=record:matrix_lr=0.03}; do
  python records/bench.py --ours "$row,$E" $C --append --row-timeout 450
done
