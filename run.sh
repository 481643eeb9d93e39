#!/usr/bin/env bash
# run.sh: the project's front door.
#   ./run.sh [key=value ...]   set-up, then the main job: a record attempt on all CUDA GPUs with FineWeb; with GPUs
#                              but no FineWeb, a few minutes of the record architecture on local text; without a
#                              GPU, the CPU smoke run on local text (key=value go to train_gpt.py)
#   ./run.sh test [ARGS]       the test suite (python -m pytest -q tests ARGS)
#   ./run.sh diff A B          compare two record folders (records/diff.py)
#   ./run.sh check FOLDER...   check record folders against the challenge's rules (records/check.py)
#   ./run.sh bench [ARGS]      benchmarks (records/bench.py)
# Environment: PYTHON (default python3), RUNSH_RECORDS_DIR (where record folders go, default records/),
# RUNSH_TRAIN_SHARDS (FineWeb train shards for a record attempt, default 80), RUNSH_SHARED_DATA (local
# corpus and tokenizer folder, default ../shared/data), RUNSH_MAX_BYTES (text per input file converted for
# the local runs, default 1000000 for smoke, 0 = whole files for the GPU run), RUNSH_GPU_SECONDS (training
# seconds of the local GPU run, default 180), RUNSH_GPU_EVAL_TOKENS (val tokens it scores, default 1048576).
# Tests only: RUNSH_TEST_GPU_COUNT stands in for the number of CUDA GPUs, so the GPU paths run on CPU machines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python3}"
# The team's data folder (corpus/, tokenizers/), a sibling of the repo; a fresh clone may not have it.
SHARED_DATA="${RUNSH_SHARED_DATA:-../shared/data}"

commands() {  # the command list at the top of this file
    sed -n '3,9p' "$0" | sed 's/^#//'
}

usage() {  # $1 = what was wrong
    echo "run.sh: $1; usage:" >&2
    commands >&2
    exit 2
}

# ---------------------------------------------------------------- set-up
ensure_requirements() {  # install requirements.txt only when an import fails: reruns stay fast and offline
    if ! "$PYTHON" -c "import $1" 2>/dev/null; then
        echo "run.sh: installing requirements.txt (import $1 failed)"
        "$PYTHON" -m pip install -r requirements.txt
    fi
}

# ---------------------------------------------------------------- main job
record_attempt() {  # $1 = number of GPUs; returns non-zero when FineWeb is neither present nor downloadable
    local gpus=$1; shift
    echo "run.sh: $gpus CUDA GPU(s); checking FineWeb sp1024 (data/fineweb.py skips files already present)"
    "$PYTHON" data/fineweb.py --variant sp1024 --train-shards "${RUNSH_TRAIN_SHARDS:-80}" || return 1
    echo "run.sh: mode record: $gpus CUDA GPU(s) and FineWeb sp1024 in data/datasets/fineweb10B_sp1024"
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$gpus" train_gpt.py \
        data_dir=data/datasets/fineweb10B_sp1024 tokenizer=data/tokenizers/fineweb_1024_bpe.model \
        "$@"
}

local_shards() {  # $1 = bytes of text per input file (0 = whole files); sets DATA_DIR, TOKENIZER, VOCAB
    local max_bytes=$1
    shopt -s nullglob
    local source=corpus train=("$SHARED_DATA"/corpus/*_train.txt*) val=("$SHARED_DATA"/corpus/*_val.txt*)
    if [ ${#train[@]} -eq 0 ] || [ ${#val[@]} -eq 0 ]; then
        source=sample train=(data/sample/*_train.txt.xz) val=(data/sample/*_val.txt.xz)
    fi
    TOKENIZER=bytes VOCAB=256
    local tokenizer_name=bytes
    for model in "$SHARED_DATA"/tokenizers/fineweb_1024_bpe.model data/tokenizers/fineweb_1024_bpe.model; do
        if [ -f "$model" ]; then TOKENIZER=$model VOCAB=1024 tokenizer_name=sp1024; break; fi
    done
    local limit=() suffix=""
    if [ "$max_bytes" -gt 0 ]; then limit=(--max-bytes "$max_bytes") suffix=_max$max_bytes; fi
    DATA_DIR=data/local/${source}_${tokenizer_name}${suffix}
    echo "run.sh: local text: $source (${train[*]} ${val[*]}), tokenizer $tokenizer_name ($TOKENIZER)"
    if [ "$tokenizer_name" = bytes ]; then
        echo "run.sh: no sp1024 tokenizer in $SHARED_DATA/tokenizers/ or data/tokenizers/," \
             "so byte-level tokens (python data/fineweb.py fetches sp1024 when online)"
    fi
    if [ -f "$DATA_DIR/export.json" ]; then
        echo "run.sh: using the shards converted earlier in $DATA_DIR (delete it to convert again)"
    else
        # Convert into a private folder, then rename it into place: a run started alongside never sees half a folder.
        local partial=$DATA_DIR.partial.$$
        rm -rf "$DATA_DIR"  # without export.json it is an unfinished conversion
        "$PYTHON" data/export.py "${train[@]}" --val-files "${val[@]}" --tokenizer "$TOKENIZER" \
            --out "$partial" ${limit[@]+"${limit[@]}"}
        mv -T "$partial" "$DATA_DIR" 2>/dev/null || rm -rf "$partial"
        echo "run.sh: shards in $DATA_DIR (converted once; later runs reuse them)"
    fi
}

smoke_run() {  # $1 = why there is no record attempt
    local why=$1; shift
    echo "run.sh: mode smoke ($why): the CPU smoke preset on local text"
    local_shards "${RUNSH_MAX_BYTES:-1000000}"
    exec "$PYTHON" train_gpt.py --preset smoke data_dir="$DATA_DIR" tokenizer="$TOKENIZER" vocab_size="$VOCAB" "$@"
}

local_gpu_run() {  # $1 = number of GPUs; FineWeb could not be had
    local gpus=$1; shift
    local seconds=${RUNSH_GPU_SECONDS:-180} eval_tokens=${RUNSH_GPU_EVAL_TOKENS:-1048576}
    echo "run.sh: no FineWeb record attempt: FineWeb sp1024 is neither in data/datasets/fineweb10B_sp1024 nor" \
         "downloadable from here (the error above says why). To make one, fetch it on a machine that reaches the" \
         "Hugging Face hub: python data/fineweb.py --variant sp1024 --train-shards 80 (HF_ENDPOINT for a mirror," \
         "--local-hub DIR for a copy; README: Data), then run ./run.sh again"
    echo "run.sh: mode local-gpu: the record architecture on $gpus GPU(s) and local text instead: compiled first" \
         "(outside the clock), $seconds s of training with each GPU doing what one of eight does in a real run," \
         "then packing and scoring the first $eval_tokens val tokens; a few minutes in all, progress lines with ETA"
    local_shards "${RUNSH_MAX_BYTES:-0}"
    local batch  # the record preset's global batch; a train_batch_tokens=N word of the user's comes later and wins
    batch=$("$PYTHON" train_gpt.py --print-config | "$PYTHON" -c "import json, sys; print(json.load(sys.stdin)['train_batch_tokens'])")
    set -- track=local_gpu data_dir="$DATA_DIR" tokenizer="$TOKENIZER" vocab_size="$VOCAB" \
        max_wallclock_seconds="$seconds" train_batch_tokens=$((batch * gpus / 8)) grad_accum_steps=1 \
        eval_max_tokens="$eval_tokens" "$@"
    if [ "$gpus" -eq 1 ]; then
        set -- "$PYTHON" train_gpt.py "$@"
    else
        set -- "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$gpus" train_gpt.py "$@"
    fi
    echo "run.sh: $*"
    exec "$@"
}

main_job() {
    for arg in "$@"; do
        case "$arg" in *=*) ;; *) usage "'$arg' is not a key=value config override" ;; esac
    done
    if [ -n "${RUNSH_RECORDS_DIR:-}" ]; then set -- "records_dir=$RUNSH_RECORDS_DIR" "$@"; fi
    ensure_requirements "torch, numpy, sentencepiece, huggingface_hub"
    local gpus=${RUNSH_TEST_GPU_COUNT:-}
    if [ -z "$gpus" ]; then
        gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
    fi
    if [ "$gpus" -gt 0 ]; then
        record_attempt "$gpus" "$@" || local_gpu_run "$gpus" "$@"
    else
        smoke_run "no CUDA GPU" "$@"
    fi
}

# ---------------------------------------------------------------- commands
case "${1:-}" in
    test)
        shift
        ensure_requirements "torch, numpy, sentencepiece, huggingface_hub, pytest"
        exec "$PYTHON" -m pytest -q tests "$@" ;;
    diff)
        [ $# -eq 3 ] || usage "diff takes two record folders"
        exec "$PYTHON" records/diff.py "$2" "$3" ;;
    check)
        [ $# -ge 2 ] || usage "check takes one or more record folders"
        shift
        exec "$PYTHON" records/check.py "$@" ;;
    bench)
        shift
        exec "$PYTHON" records/bench.py "$@" ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;  # this file's header
    "" | *=*)
        main_job "$@" ;;
    *)
        usage "unknown command '$1'" ;;
esac
