#!/usr/bin/env bash
# One bench row per device call: `bash .devdata/job_row.sh NAME SECONDS SPEC [BENCH OPTIONS]`. Rows of one NAME append to one table on
# a machine kept warm between calls (the bench refuses rows of another card: a fresh machine starts the table anew,
# and rows of `--train-tokens N` still compare across cards at equal tokens). Each call brings the tables back.
# Our rows' record folders (artifacts) stay in /tmp/keep for the next calls on the warm machine (tune_mix, eval_ngram).
# Several rows in one call: `... SPEC --ours SPEC2 --ours SPEC3 --train-tokens N --concurrent 3` (side by side).
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
name=$1 seconds=$2 spec=$3
nvidia-smi --query-gpu=name,driver_version,serial,uuid --format=csv,noheader | tee $OUT/gpu.txt
bash .devdata/prep_ordered.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model; D=/tmp/shards_ordered
app=""; ls -d /tmp/jobout/*_"$name" > /dev/null 2>&1 && app=--append
python records/bench.py --ours "$spec" --protocol eighth --seconds "$seconds" --val-tokens 524288 --data-dir $D --tokenizer $T \
    --out /tmp/jobout --name "$name" --row-timeout 560 --keep-records /tmp/keep $app "${@:4}" 2>&1 | grep -v "^\(\[[^]]*\] \)\?\(step\|config\|eval chunk\)" | tail -25
tar czf $OUT/jobout.tgz -C /tmp jobout
