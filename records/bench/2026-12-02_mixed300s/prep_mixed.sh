# Device-side: the proxy's training documents mixed (data/export.py --shuffle-train 1337) into /tmp/shards_mixed, val as in /tmp/shards.
set -e
[ -f /tmp/shards_mixed/fineweb_val_000000.bin ] || python data/export.py .devdata/corpus/enwiki_train.txt.xz .devdata/corpus/imdb_train.txt.xz \
    --val-files .devdata/corpus/enwiki_val.txt.xz .devdata/corpus/imdb_val.txt.xz --shuffle-train 1337 \
    --tokenizer .devdata/tokenizers/fineweb_1024_bpe.model --out /tmp/shards_mixed 2>&1 | tail -2
