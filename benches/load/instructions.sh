#!/usr/bin/env bash
# Instructions tether executes per proxied request, under callgrind (user space, libc
# included): the steadiest before/after measure for work on the request path. req/s and
# even CPU time per request move with the VM's neighbours; instruction counts move by
# well under 1% between identical runs.
#
# Starts four nginx "pods" and tether (1 worker) under valgrind, warms up, then counts
# only the measured wrk run (callgrind_control -z / -d). Prints instructions per request
# and the functions that execute the most of them.
#
# Caveat: valgrind hides the CPU's SHA extensions, so the cookie HMAC runs in software
# here (~7,000 instructions per verified cookie, ~0.2 µs natively with SHA-NI). With one
# session the HMAC never runs: each connection remembers the cookie it verified (the
# fast path's memo); SESSIONS=5000 sends another cookie on every request.
#
#   benches/load/instructions.sh                 # one sticky session
#   SESSIONS=5000 benches/load/instructions.sh   # 5,000 sessions
#   SCRIPT=new-session.lua benches/load/instructions.sh   # every request a new session
#   KEEP=/tmp/cg.out benches/load/instructions.sh   # keep the profile for callers
#   H2=1 benches/load/instructions.sh            # one sticky session over HTTP/2 (h2c,
#                                                # h2load 16 connections x 16 streams)
set -euo pipefail
cd "$(dirname "$0")/../.."
SESSIONS="${SESSIONS:-1}"
SCRIPT="${SCRIPT:-sticky.lua}"
DURATION="${DURATION:-10}"
TOP="${TOP:-25}"
. benches/load/common.sh
H2="${H2:-0}"
setup_load_env wrk nginx valgrind h2load:nghttp2-client curl
start_pods 1828
TETHER_WRAP="valgrind --tool=callgrind --callgrind-out-file=$work/cg.out" \
  start_tether 1828 18290 18299 1
for _ in $(seq 300); do curl -sf http://127.0.0.1:18299/readyz >/dev/null && break; sleep 0.1; done
load() { WRK_SESSIONS=$SESSIONS wrk -t1 -c16 -d"$1" -s benches/load/$SCRIPT http://127.0.0.1:18290/; }
if [ "$H2" = 1 ]; then
  cookie=$(curl -s -o /dev/null -D - http://127.0.0.1:18290/ | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
  # Prints a wrk-like "N requests in" line, so the count below reads either tool.
  load() {
    h2load -c16 -m16 -t1 -D "${1%s}" -H "cookie: $cookie" http://127.0.0.1:18290/ |
      awk '/^requests:/ {print $8, "requests in h2load"}'
  }
fi
load 3s >/dev/null
callgrind_control -z "$TETHER_PID" >/dev/null 2>&1
out=$(load "${DURATION}s")
callgrind_control -d "$TETHER_PID" >/dev/null 2>&1
sleep 1
requests=$(awk '/ requests in / {print $1}' <<<"$out")
dump=$(ls "$work"/cg.out.* | head -1)
# KEEP=FILE keeps the profile, for callgrind_annotate --tree=caller or kcachegrind.
[ -n "${KEEP:-}" ] && cp "$dump" "$KEEP"
annotated=$(callgrind_annotate --threshold=100 "$dump" 2>/dev/null)
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' <<<"$annotated")
echo "requests: $requests  instructions: $total  per request: $((total / requests))"
grep -m1 '^sticky:' <<<"$out" || true
echo "top functions (exclusive instructions per request):"
# Lines look like "1,234,567 ( 3.14%)  file:function [object]"; the 100% lines are the
# program's entry points, not work.
sed -n '/file:function/,$p' <<<"$annotated" |
  sed -nE 's/^ *([0-9,]+) \( *([0-9.]+)%\) +(\?\?\?:)?([^[]*).*$/\1 \2 \4/p' |
  awk -v r="$requests" -v top="$TOP" '$2 != "100.0" && n < top {
    ir = $1; gsub(",", "", ir); $1 = ""; $2 = ""; sub(/^ +/, "")
    printf "  %7.0f  %s\n", ir / r, substr($0, 1, 110); n++ }'
