#!/usr/bin/env bash
# One lease (~1,750 s; muoneq_r, the last row, may be cut): the third 140 s screen, on MIXED shards, against the preset of 2026-12-02 (value embeddings
# 9,10 + QK gain 5.25). On the record row's artifact, chosen on held-out training text: the evaluation window (2048 =
# training, 3072, 4096) and TTT of every weight (SGD) against the LoRA TTT. Then values the public records use that
# record does not (values only: ~10 s of compile each) and a smaller global batch (more steps). Before the rows, a
# profile of the record step (recurrent phase, top 30 kernels), and again with inductor's mix-order reduction on
# (off since a torch 2.11 assertion on older code) and with coordinate-descent tuning: the next engine work starts
# from them (more steps in the same time is the biggest lever left), with a micro-benchmark of one attention
# layer: SDPA against flex_attention with document and sliding-window masks.
# Winners (held-out packed bpb better by > 0.002) are confirmed at 300 s, stacked, before they enter the preset.
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep_mixed.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model
C="--protocol eighth --seconds 140 --val-tokens 524288 --data-dir /tmp/shards_mixed --tokenizer $T --out /tmp/jobout --name screen140s_v3"
mkdir -p /tmp/jobout
python records/bench.py --ours "record=record:records_dir=/tmp/rec" $C --row-timeout 450
A=$(ls /tmp/rec/*/*/artifact.pgolf | head -1)
H="--data-dir /tmp/shards_mixed --tokenizer $T --ttt-steps 2"
python records/tune_mix.py "$A" $H --grid eval_seq_len=2048,3072,4096 --out /tmp/jobout/tune_window 2>&1 | tee /tmp/jobout/tune_window.log | tail -9
python records/tune_mix.py "$A" $H --ttt-weights all --grid ttt_lr=0.001,0.003,0.01 --out /tmp/jobout/tune_ttt_all 2>&1 | tee /tmp/jobout/tune_ttt_all.log | tail -9
python records/profile_step.py --data-dir /tmp/shards_mixed --label record_recurrent --out /tmp/jobout/profile \
    train_batch_tokens=98304 grad_accum_steps=1 tokenizer=$T 2>&1 | tail -60 > /tmp/jobout/profile.log
for option in mix_order coordinate_descent; do  # inductor options compile_graph leaves off: what each is worth per step
  timeout 300 python .devdata/profile_inductor.py $option --data-dir /tmp/shards_mixed --label record_recurrent_$option \
      --out /tmp/jobout/profile train_batch_tokens=98304 grad_accum_steps=1 tokenizer=$T 2>&1 | tail -60 > /tmp/jobout/profile_$option.log
done
timeout 240 python .devdata/attn_bench.py > /tmp/jobout/attn_bench.log 2>&1  # SDPA vs flex masks (document, window)
for row in ${ROWS:-wd09=record:muon_wd=0.09 bs524=record:train_batch_tokens=524288 muoneq_r=record:muon_row_norm=true}; do
  python records/bench.py --ours "$row" $C --append --row-timeout 450
done
