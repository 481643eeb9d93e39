#!/usr/bin/env bash
# Wait up to $1 s for the detached job, then bring back (at most 8 files) every table and log so far as one
# jobout.tgz, plus the record row's EMA weights in <= 15 MB parts (/tmp/ema_parts; cat them back together here).
cd "$(dirname "$0")/.."
bash .devdata/detached.sh wait job "$1" | grep -v "^step\|^config\|warmup_step\|chunk" | tail -25
[ -d /tmp/jobout ] && tar czf $OUT/jobout.tgz -C /tmp jobout
[ -d /tmp/ema_parts ] && [ ! -f /tmp/ema_parts.sent ] && cp /tmp/ema_parts/* $OUT/ && touch /tmp/ema_parts.sent  # once
cp /tmp/job.log $OUT/job.log 2>/dev/null; ls -la $OUT
