#!/usr/bin/env bash
# Wait up to $1 s for the detached job, bringing back (at most 8 files) every table and log so far as one jobout.tgz
# and job.log, refreshed each minute: a call cut short by the session's device time (its limit shrinks to what is left)
# still returns the last minute's files. Plus whatever the job split into /tmp/ema_parts (e.g. an artifact in 8 MB
# parts; cat them back together here).
cd "$(dirname "$0")/.."
[ -f /tmp/job.log ] || { bash .devdata/detached.sh wait job 0; exit 3; }  # a fresh machine: nothing to wait for
bring_back() {
    [ -d /tmp/jobout ] && tar czf $OUT/.jobout.tgz -C /tmp jobout && mv $OUT/.jobout.tgz $OUT/jobout.tgz
    cp /tmp/job.log $OUT/.job.log && mv $OUT/.job.log $OUT/job.log
}
end=$((SECONDS + $1))
until bash .devdata/detached.sh wait job $((end - SECONDS < 60 ? end - SECONDS : 60)) | grep -q "^rc=[0-9]" || [ $SECONDS -ge $end ]; do
    bring_back
done
bring_back
bash .devdata/detached.sh wait job 0 | grep -v "warmup_step\|chunk" | tail -25
[ -d /tmp/ema_parts ] && [ ! -f /tmp/ema_parts.sent ] && cp /tmp/ema_parts/* $OUT/ && touch /tmp/ema_parts.sent  # once
ls -la $OUT
