#!/usr/bin/env bash
# One lease (~1,600 s), session 12, on MIXED proxy shards (data/export.py --shuffle-train 1337: both corpora in every
# shard, so the held-out training tail is Wikipedia + IMDb like the text the rows are scored on, and scripts that read
# in order are not handicapped). 1) `record` at 300 s; 2) on its artifact, per-document TTT against the stream TTT,
# chosen on the held-out TRAINING tokens with records/tune_mix.py, then the chosen setting scored once on val
# (reported, not chosen on); 3) the 140 s screen's winners at 300 s: value embeddings, and with QK gain 5.25.
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.."
bash .devdata/prep_mixed.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model; D=/tmp/shards_mixed
C="--protocol eighth --seconds 300 --val-tokens 524288 --data-dir $D --tokenizer $T --out /tmp/jobout --name mixed300s"
mkdir -p /tmp/jobout
python records/bench.py --ours "record=record:records_dir=/tmp/rec" $C --row-timeout 600
A=$(ls /tmp/rec/*/*/artifact.pgolf | head -1)
python records/tune_mix.py "$A" --data-dir $D --tokenizer $T --ttt-steps 1 --grid ttt_doc_chunk=0,256 \
  --grid ttt_lr=0.003,0.01,0.03 --out /tmp/jobout/tune_doc_ttt 2>&1 | tee /tmp/jobout/tune_doc_ttt.log | tail -14
BEST=$(grep "^best as eval_ngram.py arguments:" /tmp/jobout/tune_doc_ttt.log | sed 's/^best as eval_ngram.py arguments: //; s/(defaults)//')
echo "chosen on held-out training text: ttt_steps=1 $BEST"
python eval_ngram.py "$A" --data-dir $D --tokenizer $T --max-tokens 524288 --ttt-steps 1 $BEST 2>&1 | tee /tmp/jobout/eval_chosen.log | grep -v "^eval chunk"
for row in ${ROWS:-ve=record:value_embed_layers=9,10 ve_qk525=record:value_embed_layers=9,10,qk_gain_init=5.25}; do
  python records/bench.py --ours "$row" $C --append --row-timeout 600
done
