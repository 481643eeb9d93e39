# Device call I (one GPU): record vs record + EGT interleaved (fixed loop), 60 s each, same shards (val: first 524,288
# tokens), neural-only scoring for both (ngram_order=0 ttt_steps=0) to keep the call short.
export PYTHONUNBUFFERED=1
TOK=.devdata/tokenizers/fineweb_1024_bpe.model
nvidia-smi -L
bash .devdata/prep.sh 2>&1 | tail -1
python records/bench.py --ours record=record:ngram_order=0,ttt_steps=0,records_dir=/tmp/k0 \
  --ours record_egt_interleaved=record:egt_mode=interleaved,egt_every=25,ngram_order=0,ttt_steps=0,records_dir=/tmp/k1 \
  --data-dir /tmp/shards_v512k --tokenizer $TOK --protocol wall --seconds 60 --name issue7_egt_fixed --out $OUT/b 2>&1 \
  | grep -E "^(train_done|final|packed|egt |error|=== row)|^\| [a-z]" | grep -v "^| row" | cut -c1-300
