#!/usr/bin/env bash
# timed.sh PHASE CMD...: run CMD and print how long the phase took (also on failure).
phase=$1; shift
start=$(date +%s)
"$@"; rc=$?
echo "=== phase $phase: $(( $(date +%s) - start )) s (exit $rc)"
exit $rc
