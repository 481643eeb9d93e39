#!/usr/bin/env bash
# run.sh: the project's front door.
#   ./run.sh [key=value ...]   set-up, then the main job: a record attempt on all CUDA GPUs with FineWeb,
#                              otherwise the CPU smoke run on local text (key=value go to train_gpt.py)
#   ./run.sh test [ARGS]       the test suite (python -m pytest -q tests ARGS)
#   ./run.sh diff A B          compare two record folders (records/diff.py)
#   ./run.sh bench [ARGS]      benchmarks (records/bench.py)
# Environment: PYTHON (default python3), RUNSH_RECORDS_DIR (where record folders go, default records/),
# RUNSH_TRAIN_SHARDS (FineWeb train shards for a record attempt, default 80), RUNSH_SHARED_DATA (local
# corpus and tokenizer folder, default ../shared/data), RUNSH_MAX_BYTES (text per input file converted
# for the smoke run, default 1000000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python3}"
# The team's data folder (corpus/, tokenizers/), a sibling of the repo; a fresh clone may not have it.
SHARED_DATA="${RUNSH_SHARED_DATA:-../shared/data}"

usage() {  # $1 = what was wrong
    echo "run.sh: $1; usage:" >&2
    sed -n '3,7p' "$0" | sed 's/^#//' >&2
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

smoke_run() {  # $1 = why there is no record attempt
    local why=$1; shift
    shopt -s nullglob
    local source=corpus train=("$SHARED_DATA"/corpus/*_train.txt*) val=("$SHARED_DATA"/corpus/*_val.txt*)
    if [ ${#train[@]} -eq 0 ] || [ ${#val[@]} -eq 0 ]; then
        source=sample train=(data/sample/*_train.txt.xz) val=(data/sample/*_val.txt.xz)
    fi
    local tokenizer=bytes vocab=256 tokenizer_name=bytes
    for model in "$SHARED_DATA"/tokenizers/fineweb_1024_bpe.model data/tokenizers/fineweb_1024_bpe.model; do
        if [ -f "$model" ]; then tokenizer=$model vocab=1024 tokenizer_name=sp1024; break; fi
    done
    local data_dir=data/local/${source}_${tokenizer_name}
    echo "run.sh: mode smoke ($why): CPU smoke preset on $source text (${train[*]} ${val[*]})," \
         "tokenizer $tokenizer_name ($tokenizer)"
    if [ "$tokenizer_name" = bytes ]; then
        echo "run.sh: no sp1024 tokenizer in $SHARED_DATA/tokenizers/ or data/tokenizers/," \
             "so byte-level tokens (python data/fineweb.py fetches sp1024 when online)"
    fi
    if [ -f "$data_dir/export.json" ]; then
        echo "run.sh: using the shards converted earlier in $data_dir (delete it to convert again)"
    else
        # Convert into a private folder, then rename it into place: a run started alongside never sees half a folder.
        local partial=$data_dir.partial.$$
        rm -rf "$data_dir"  # without export.json it is an unfinished conversion
        "$PYTHON" data/export.py "${train[@]}" --val-files "${val[@]}" --tokenizer "$tokenizer" \
            --out "$partial" --max-bytes "${RUNSH_MAX_BYTES:-1000000}"
        mv -T "$partial" "$data_dir" 2>/dev/null || rm -rf "$partial"
        echo "run.sh: shards in $data_dir (converted once; later runs reuse them)"
    fi
    exec "$PYTHON" train_gpt.py --preset smoke data_dir="$data_dir" tokenizer="$tokenizer" vocab_size="$vocab" \
        "$@"
}

main_job() {
    for arg in "$@"; do
        case "$arg" in *=*) ;; *) usage "'$arg' is not a key=value config override" ;; esac
    done
    if [ -n "${RUNSH_RECORDS_DIR:-}" ]; then set -- "records_dir=$RUNSH_RECORDS_DIR" "$@"; fi
    ensure_requirements "torch, numpy, sentencepiece, huggingface_hub"
    local gpus
    gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
    if [ "$gpus" -gt 0 ]; then
        record_attempt "$gpus" "$@" || smoke_run "FineWeb sp1024 is neither present nor downloadable" "$@"
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
    bench)
        shift
        exec "$PYTHON" records/bench.py "$@" ;;
    "" | *=*)
        main_job "$@" ;;
    *)
        usage "unknown command '$1'" ;;
esac
