#!/usr/bin/env bash
# One lease (~1,600 s): switches built but never measured on the GPU, each ON against the preset at 140 s (screening;
# winners are confirmed at 300 s before they enter the preset), plus the preset's eval-time switches ablated on its
# own artifact (no n-gram mixer, no TTT, neither; ~25 s each).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model
C="--protocol eighth --seconds 140 --val-tokens 524288 --data-dir /tmp/shards --tokenizer $T --out /tmp/jobout --name screen140s"
mkdir -p /tmp/jobout
python records/bench.py --ours "record=record:records_dir=/tmp/rec" $C --row-timeout 450
A=$(ls /tmp/rec/*/*/artifact.pgolf | head -1)
E="--data-dir /tmp/shards --tokenizer $T --max-tokens 524288"
python eval_ngram.py "$A" $E --no-ngram 2>&1 | tee /tmp/jobout/eval_no_ngram.log | tail -2
python eval_ngram.py "$A" $E --ttt-steps 0 2>&1 | tee /tmp/jobout/eval_no_ttt.log | tail -2
python eval_ngram.py "$A" $E --no-ngram --ttt-steps 0 2>&1 | tee /tmp/jobout/eval_neural_only.log | tail -2
for row in ${ROWS:-untie_mlp275=record:mlp_mult=2.75,recur_untie=mlp untie_gains=record:recur_untie=gains ve=record:value_embed_layers=9,10 qk525=record:qk_gain_init=5.25}; do
  python records/bench.py --ours "$row" $C --append --row-timeout 450
done
