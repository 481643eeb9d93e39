#!/usr/bin/env bash
# Issue 15 at 140 s on one lease (~1,650 s of device time, estimated from the 300 s rows: our row 300 s + 148 s,
# the 1.1194 script 300 + 200, the 1.1063 script ~300 + 250): the three scripts, then issue 14's peer-shape speed row,
# then the A/B of the skip-weights fix (the code before it, baa29b2), then the first ablation (recurrence off). The record row keeps its folder and a final checkpoint (saved after
# the budget, outside training time) whose EMA weights come back in parts. Each row lands in its table as it ends (line-buffered logs).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model; P=.devdata/peers/parameter-golf
C="--protocol eighth --seconds 140 --val-tokens 524288 --data-dir /tmp/shards --tokenizer $T --out /tmp/jobout"
S="BIGRAM_DIM=112,MIXED_QUANT=1,N_INT6_LAYERS=32,NUM_LAYERS=11,RECUR_LAYERS=4,5,RECUR_START_STEP=3000,REPEAT_UNTIE_MLP=full,REPEAT_UNTIE_MLP_LAYERS=4,5,DISABLE_LAYER0_ATTN=1,PARALLEL_RESIDUAL=1,PARALLEL_START_LAYER=7,POST_GPTQ_EVAL_ONLY=0,GPTQ_CALIB_SAMPLES=16,TORCHINDUCTOR_MIX_ORDER_REDUCTION=0"
mkdir -p /tmp/jobout
python records/bench.py --ours "record=record:records_dir=/tmp/rec,checkpoint_every_s=99999" $C --name eighth140s --row-timeout 450
python .devdata/extract_weights.py "/tmp/rec/*/*/checkpoint_current.pt" /tmp/ema_parts  # the EMA weights it packed, for CPU studies
python records/bench.py --peer "1.1194=$P/record_1.1194_leakyrelu_ttt_train_gpt.py:TTT_ENABLED=1" $C --name eighth140s --append --row-timeout 500
python records/bench.py --peer "1.1063=$P/record_1.1063_parallel_residuals_recurrence_train_gpt.py:$S" $C --name eighth140s --append --row-timeout 600
mkdir -p /tmp/old && for f in train_gpt.py eval_ngram.py; do git show baa29b2:$f > /tmp/old/$f; done  # skip weights under Muon
python records/bench.py --ours "skip_muon_baa29b2=record" --ours-script /tmp/old/train_gpt.py $C --name eighth140s --append --row-timeout 450
python records/bench.py --ours "peer_shape=record:mlp_mult=3.0,xsa_layers=4,recur_layers=,parallel_start=0,layer0_attention=True" $C --name eighth140s --append --row-timeout 450
python records/bench.py --ours "no_recur=record:recur_layers=" $C --name ablations140s --row-timeout 450
