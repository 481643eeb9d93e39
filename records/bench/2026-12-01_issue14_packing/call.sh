# Device call (one H200): prep the proxy shards, then probe.py on the 11-layer record shape, eighth protocol
# (98,304 tokens/step, no accumulation), 150 s of training, scored at stride 256 on the 524,288-token val subset.
# The device receives the main checkout: this branch's scripts travel in .devdata/h14q/ (carried) and run from /tmp/w.
# usage: bash .devdata/h14q/call.sh NAME [key=value ...]   (results under $OUT/NAME)
export PYTHONUNBUFFERED=1
SECONDS=0; bash .devdata/prep.sh 2>&1 | tail -2; echo "prep_s=$SECONDS"
ROOT=$PWD; mkdir -p /tmp/w && cp .devdata/h14q/*.py /tmp/w/ && cd /tmp/w
name=$1; shift
python probe.py $OUT/$name data_dir=/tmp/shards_v512k tokenizer=$ROOT/.devdata/tokenizers/fineweb_1024_bpe.model \
  num_layers=11 train_batch_tokens=98304 grad_accum_steps=1 max_wallclock_seconds=150 eval_stride=256 ngram_order=0 \
  ttt_steps=0 gptq_tokens=262144 "$@" 2>&1 | tee $OUT/$name.log | grep -vE "^step=([0-9]*[1-9]00|[0-9]*50) "
echo "total_s=$SECONDS"
