#!/usr/bin/env bash
# One lease: issue 15's 300 s pair `record` (no overrides but where records go) vs the 1.1063 script (its record settings,
# 16 GPTQ calibration texts as in eighth300s_v3/v4 so it fits), ordered-tail shards; between them the mixer tuned on
# the record artifact's 262,144 held-out ORDERED training tokens (records/tune_mix.py; val never opened).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep_ordered.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model; P=.devdata/peers/parameter-golf; D=/tmp/shards_ordered
C="--protocol eighth --seconds 300 --val-tokens 524288 --data-dir $D --tokenizer $T --out /tmp/jobout --name pair1063_300s"
S="BIGRAM_DIM=112,MIXED_QUANT=1,N_INT6_LAYERS=32,NUM_LAYERS=11,RECUR_LAYERS=4,5,RECUR_START_STEP=3000,REPEAT_UNTIE_MLP=full,REPEAT_UNTIE_MLP_LAYERS=4,5,DISABLE_LAYER0_ATTN=1,PARALLEL_RESIDUAL=1,PARALLEL_START_LAYER=7,POST_GPTQ_EVAL_ONLY=0,GPTQ_CALIB_SAMPLES=16,TORCHINDUCTOR_MIX_ORDER_REDUCTION=0"
mkdir -p /tmp/jobout /tmp/ema_parts
python records/bench.py --ours "record=record:records_dir=/tmp/rec" $C --row-timeout 600
A=$(find /tmp/rec -name artifact.pgolf | head -1); sha256sum $A; split -b 8000000 $A /tmp/ema_parts/artifact.pgolf.part_
timeout 200 python records/tune_mix.py $A --data-dir $D --grid recent=0,1,2 --grid gate_bias=-10,-9,-8,-7,-6 \
    --grid ngram_order=5,7,9 --grid ttt_steps=0,2 --out /tmp/jobout/tune_mix_record300 > /tmp/jobout/tune_mix_record300.log 2>&1
tail -30 /tmp/jobout/tune_mix_record300.log
python records/bench.py --peer "1.1063=$P/record_1.1063_parallel_residuals_recurrence_train_gpt.py:$S" $C --append --row-timeout 1100
