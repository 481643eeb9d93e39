#!/usr/bin/env bash
# Wait up to $1 s for the detached job, then bring back (at most 8 files) every table and log so far as one
# jobout.tgz, plus whatever the job split into /tmp/ema_parts (e.g. an artifact in 8 MB parts; cat them back together here).
cd "$(dirname "$0")/.."
bash .devdata/detached.sh wait job "$1" | grep -v "^\(\[[^]]*\] \)\?\(step\|config\)\|warmup_step\|chunk" | tail -25
[ -f /tmp/job.log ] || exit 3  # a fresh machine: nothing to wait for or bring back
[ -d /tmp/jobout ] && tar czf $OUT/jobout.tgz -C /tmp jobout
[ -d /tmp/ema_parts ] && [ ! -f /tmp/ema_parts.sent ] && cp /tmp/ema_parts/* $OUT/ && touch /tmp/ema_parts.sent  # once
cp /tmp/job.log $OUT/job.log 2>/dev/null; ls -la $OUT
