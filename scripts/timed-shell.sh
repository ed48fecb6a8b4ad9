#!/usr/bin/env bash
# scripts/timed-shell.sh: a SHELL for make that prints how long each recipe line took,
# so `make test SHELL=scripts/timed-shell.sh` shows where the time goes:
#   timed: 123.4 s  cargo test --locked --workspace --all-targets
# (make runs every recipe line as `$(SHELL) -c 'line'`.)
start=$(date +%s.%N)
status=0
/bin/sh "$@" || status=$?
end=$(date +%s.%N)
line=${*: -1}
printf 'timed: %6.1f s  %s%s\n' "$(awk "BEGIN { print $end - $start }")" "$line" \
  "$([ "$status" = 0 ] || echo " (exit $status)")" >&2
exit "$status"
