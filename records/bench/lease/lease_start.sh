#!/usr/bin/env bash
# First call of a lease: brotli for the 1.1063 script (when .whl is carried), a snapshot of the repo (edits here between calls never reach a
# running row), the detached job .devdata/$1 started from the snapshot, then a first wait of $2 s.
# Next calls (each within 30 s of the last): bash .devdata/lease_wait.sh 585
cd "$(dirname "$0")/.."
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
fi
{ nvidia-smi --query-gpu=name,driver_version,serial,uuid --format=csv,noheader; python -c "import torch; print('torch', torch.__version__)"; } | tee $OUT/gpu.txt
rm -rf /tmp/jobrepo && cp -r . /tmp/jobrepo && rm -f /tmp/job.rc
bash .devdata/detached.sh start job bash /tmp/jobrepo/.devdata/$1
bash .devdata/lease_wait.sh "${2:-560}"
