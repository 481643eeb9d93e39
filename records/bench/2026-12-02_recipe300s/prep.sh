# Device-side: convert the carried corpus to shards once per machine, plus /tmp/shards_v512k: the same train shards
# (links) and the first 524,288 val tokens, so that every row of a call scores the same, shorter validation set.
set -e
if [ ! -f /tmp/shards/fineweb_val_000000.bin ]; then
  python data/export.py .devdata/corpus/enwiki_train.txt.xz .devdata/corpus/imdb_train.txt.xz \
    --val-files .devdata/corpus/enwiki_val.txt.xz .devdata/corpus/imdb_val.txt.xz \
    --tokenizer .devdata/tokenizers/fineweb_1024_bpe.model --out /tmp/shards 2>&1 | tail -3
fi
mkdir -p /tmp/shards_v512k
for f in /tmp/shards/fineweb_train_*.bin; do ln -sf "$f" /tmp/shards_v512k/; done
python -c "
import eval_ngram as e
v = e.load_val_tokens('/tmp/shards')[:524288].numpy()
e.write_shard('/tmp/shards_v512k/fineweb_val_000000.bin', v)
print('val subset tokens', v.size)"
ls /tmp/shards | wc -l
