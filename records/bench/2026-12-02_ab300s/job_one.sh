#!/usr/bin/env bash
# One row in one call (no detached job): prep the ordered shards, run the row given as $1 (bench --ours spec), table to $OUT.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,serial,uuid --format=csv,noheader | tee $OUT/gpu.txt
bash .devdata/prep_ordered.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model; D=/tmp/shards_ordered
python records/bench.py --ours "$1" --protocol eighth --seconds 300 --val-tokens 524288 --data-dir $D --tokenizer $T \
    --out $OUT --name "$2" --row-timeout 540 2>&1 | grep -v "^step" | tail -30
