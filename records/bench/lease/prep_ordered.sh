# Device-side: the proxy's training documents mixed (--shuffle-train 1337) except the last TAIL tokens' worth (default
# 262,144), which follow in input order: IMDb first, then Wikipedia, so the held-out tail is consecutive Wikipedia
# articles like the val split's first 524,288 tokens. Val as in /tmp/shards. Out: /tmp/shards_ordered[_TAIL].
set -e
TAIL=${1:-262144}; OUTD=/tmp/shards_ordered; [ "$TAIL" = 262144 ] || OUTD=/tmp/shards_ordered_$TAIL
[ -f $OUTD/export.json ] || python data/export.py .devdata/corpus/imdb_train.txt.xz .devdata/corpus/enwiki_train.txt.xz \
    --val-files .devdata/corpus/enwiki_val.txt.xz .devdata/corpus/imdb_val.txt.xz --shuffle-train 1337 --ordered-tail $TAIL \
    --tokenizer .devdata/tokenizers/fineweb_1024_bpe.model --out $OUTD 2>&1 | tail -2
