#!/usr/bin/env bash
# Report only (the choice was made on held-out training text): the record 300 s artifact on the first 524,288 val
# tokens with the preset's mixer (recent 0, order 7) and with the held-out choice (recent 1, order 9); TTT 2 steps both.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
A="python eval_ngram.py .devdata/artifact.pgolf --data-dir .devdata/val524k --tokenizer .devdata/tokenizers/fineweb_1024_bpe.model --audit 64"
$A 2>&1 | tee $OUT/val_defaults.log | tail -3
$A --ngram-order 9 --mix recent=1 2>&1 | tee $OUT/val_recent1_order9.log | tail -3
