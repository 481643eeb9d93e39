#!/usr/bin/env bash
# Runs longer than one device call (600 s): `detached.sh start NAME CMD...` starts CMD in its own process session
# (it survives the call while the machine stays warm, i.e. the next call comes within 30 s), logging to /tmp/NAME.log;
# `detached.sh wait NAME SECONDS` waits for it up to SECONDS and prints the log's tail and exit code; on a machine
# that never started NAME (given back between calls) it says so at once instead of waiting.
cd "$(dirname "$0")/.."
verb=$1; name=$2; shift 2
case $verb in
  start) setsid nohup bash -c "$*; echo \$? > /tmp/$name.rc" > /tmp/$name.log 2>&1 < /dev/null & echo "started $name" ;;
  wait) [ -f /tmp/$name.log ] || { echo "no job $name on this machine: a fresh one (the last call was over 30 s ago?)"; echo "rc=lost"; exit 3; }
        end=$((SECONDS + $1)); while [ ! -f /tmp/$name.rc ] && [ $SECONDS -lt $end ]; do sleep 5; done
        grep -v "^\(\[[^]]*\] \)\?\(step\|config\)" /tmp/$name.log | tail -25; echo "rc=$(cat /tmp/$name.rc 2>/dev/null || echo running)" ;;
esac
