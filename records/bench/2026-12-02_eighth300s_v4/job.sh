#!/usr/bin/env bash
# One lease (~1,790 s, as eighth300s_v3 took): issue 15's acceptance table at 300 s with the final
# preset: record, the 1.1194 script, the 1.1063 script (16 GPTQ calibration texts, as in v3, to fit the lease).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep_mixed.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model; P=.devdata/peers/parameter-golf
C="--protocol eighth --seconds 300 --val-tokens 524288 --data-dir /tmp/shards_mixed --tokenizer $T --out /tmp/jobout --name eighth300s_v4"
S="BIGRAM_DIM=112,MIXED_QUANT=1,N_INT6_LAYERS=32,NUM_LAYERS=11,RECUR_LAYERS=4,5,RECUR_START_STEP=3000,REPEAT_UNTIE_MLP=full,REPEAT_UNTIE_MLP_LAYERS=4,5,DISABLE_LAYER0_ATTN=1,PARALLEL_RESIDUAL=1,PARALLEL_START_LAYER=7,POST_GPTQ_EVAL_ONLY=0,GPTQ_CALIB_SAMPLES=16,TORCHINDUCTOR_MIX_ORDER_REDUCTION=0"
mkdir -p /tmp/jobout
python records/bench.py --ours record $C --row-timeout 600
python records/bench.py --peer "1.1194=$P/record_1.1194_leakyrelu_ttt_train_gpt.py:TTT_ENABLED=1" $C --append --row-timeout 700
python records/bench.py --peer "1.1063=$P/record_1.1063_parallel_residuals_recurrence_train_gpt.py:$S" $C --append --row-timeout 1100
