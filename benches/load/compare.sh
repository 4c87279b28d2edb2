#!/usr/bin/env bash
# tether vs nginx vs HAProxy on the sticky path, side by side in one run.
#
# An nginx upstream serves four "pods" (each answers with an x-pod header). In front of
# it, with the same worker count: tether (cookie affinity), nginx (`hash $cookie_tether
# consistent`) and HAProxy (`cookie tether insert indirect nocache dynamic`). wrk runs
# against each in turn, twice, for three scenarios: one sticky session; 10,000 sticky
# sessions (each keeping the cookie it was given); every request a new session. Prints
# req/s, p50, p99, CPU time per request (user + system, the proxy's own processes), peak
# RSS per proxy and tether's ratio to the better peer. CPU per request is the steadiest
# column: req/s on a shared VM swings by ~10% between identical runs.
#
# A fourth row, "relay", is the ceiling no HTTP proxy can pass on the same cores: HAProxy
# in TCP mode with the same threads, relaying bytes 1:1 to the pods with no HTTP work at
# all (no parsing, no stickiness; its "pinned" and RSS columns are left blank).
# Every proxy pays the same kernel cost per hop; the gap between a proxy and the relay
# is what its HTTP handling costs. RELAY=0 skips it.
#
# A fifth row, "floor", is examples/h1_floor.rs: the least HTTP/1 work a proxy on tokio
# can do (httparse on both heads, one upstream connection per client connection, no
# stickiness), on the same threads. It shows how close to the relay tether's runtime
# and thread layout can get, so the rest of tether's gap is its own HTTP machinery.
# FLOOR=0 skips it.
#
#   benches/load/compare.sh               # workers 1 and 2, 10 s per run: ~12 minutes
#   SCENARIOS="one post" benches/load/compare.sh   # "post": one sticky session, every
#                                                  # request a POST with a 1 KiB body
#   SCENARIOS="tls" benches/load/compare.sh        # "tls": one sticky session over
#       HTTPS, each proxy terminating TLS with the same self-signed certificate (no
#       relay or floor rows: neither terminates TLS)
#   SCENARIOS="h2" benches/load/compare.sh         # "h2": HTTP/2 with prior knowledge
#       (h2c), one sticky session, h2load with 16 connections x 16 streams; each proxy
#       speaks HTTP/1.1 to the pods (nginx `listen ... http2`, HAProxy `proto h2`). h2load
#       reports no percentiles: the p50 column holds its mean, p99 is blank
#   SCENARIOS="big" benches/load/compare.sh        # "big": one sticky session, every
#       request a POST of 256 KiB answered with 256 KiB (bodies streamed both ways)
#   WORKERS="1" DURATION=5 RELAY=0 FLOOR=0 benches/load/compare.sh   # ~2 minutes
#   TETHER_BIN=/tmp/before/tether benches/load/compare.sh   # another build of tether
#                                (an earlier commit's), for before/after in one setup
set -euo pipefail
cd "$(dirname "$0")/../.."
WORKERS="${WORKERS:-1 2}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
RELAY="${RELAY:-1}"
FLOOR="${FLOOR:-1}"
SCENARIOS="${SCENARIOS:-one many new}"
LOAD=benches/load

. "$LOAD/common.sh"
# Every port this script listens on: a taken one would make the table some other
# process's (nginx would print "Address already in use" and the run would go on).
ports_free $(seq 18081 18086) $(seq 18090 18099)
setup_load_env wrk nginx haproxy openssl h2load:nghttp2-client curl
make_cert "$work"
TLS=0; [[ " $SCENARIOS " == *" tls "* ]] && TLS=1
# --- upstream: four pods in one nginx (2 workers, shared by every proxy alike) ---
start_pods 1808
[ "$FLOOR" = 1 ] && cargo build --release --quiet --example h1_floor

start_proxies() {
  local w=$1
  start_tether 1808 18090 18099 "$w"
  TETHER_TLS_PID=
  if [ "$TLS" = 1 ]; then
    local plain=$TETHER_PID
    start_tether 1808 18097 18098 "$w" "$work"
    TETHER_TLS_PID=$TETHER_PID TETHER_PID=$plain
  fi
  # nginx, sticky by consistent hash on the cookie
  cat > "$work/nginx.conf" <<CONF
$(nginx_head nginx "$w")
  upstream pods {
    hash \$cookie_tether consistent;
    server 127.0.0.1:18081; server 127.0.0.1:18082; server 127.0.0.1:18083; server 127.0.0.1:18084;
    keepalive 256;
  }
  server { listen 127.0.0.1:18091; location / { proxy_pass http://pods; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:18085 http2; location / { proxy_pass http://pods; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server {
    listen 127.0.0.1:18095 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / { proxy_pass http://pods; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
  nginx -c "$work/nginx.conf" -g 'daemon off;' & NGINX_PID=$!; pids+=($NGINX_PID)
  # HAProxy, cookie insert
  cat > "$work/haproxy.cfg" <<CONF
global
  nbthread $w
  maxconn 4000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:18092
  default_backend pods
frontend ftls
  bind 127.0.0.1:18096 ssl crt $work/combined.pem
  default_backend pods
frontend fh2
  bind 127.0.0.1:18086 proto h2
  default_backend pods
backend pods
  balance roundrobin
  cookie tether insert indirect nocache dynamic
  dynamic-cookie-key tether-bench
  http-reuse always
$(for i in 1 2 3 4; do echo "  server pod-$i 127.0.0.1:1808$i"; done)
frontend relay
  mode tcp
  bind 127.0.0.1:18093
  default_backend relay_pods
backend relay_pods
  mode tcp
  balance roundrobin
$(for i in 1 2 3 4; do echo "  server pod-$i 127.0.0.1:1808$i"; done)
CONF
  haproxy -f "$work/haproxy.cfg" -db & HAPROXY_PID=$!; pids+=($HAPROXY_PID)
  FLOOR_PID=
  if [ "$FLOOR" = 1 ]; then
    target/release/examples/h1_floor 127.0.0.1:18094 "$w" 127.0.0.1:1808{1,2,3,4} 2>"$work/floor.err" &
    FLOOR_PID=$!; pids+=($FLOOR_PID)
  fi
  sleep 1
}

stop_proxies() {
  kill "$TETHER_PID" "$NGINX_PID" "$HAPROXY_PID" $FLOOR_PID $TETHER_TLS_PID 2>/dev/null || true
  wait "$TETHER_PID" "$NGINX_PID" "$HAPROXY_PID" $FLOOR_PID $TETHER_TLS_PID 2>/dev/null || true
  sleep 0.5
}

peak_rss_kb() { # sum of VmHWM over a process and its children (nginx workers)
  local total=0
  for p in "$1" $(pgrep -P "$1" || true); do
    local kb; kb=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

cpu_ticks() { # user + system clock ticks of a process and its children (nginx workers)
  local total=0 p t
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# run_h2 PORT PID -> "rps mean - - cpu_us_per_request": h2load with the cookie the
# proxy sets on a first request (nginx sets none: any value pins by its hash)
run_h2() {
  local port=$1 cookie out t0 t1
  cookie=$(curl -s -o /dev/null -D - --http2-prior-knowledge "http://127.0.0.1:$port/" |
    awk -F': ' 'tolower($1) == "set-cookie" { split($2, a, ";"); print a[1]; exit }')
  t0=$(cpu_ticks "$2")
  out=$(h2load -c16 -m16 -t"$THREADS" -D "$DURATION" -H "cookie: ${cookie:-tether=bench}" \
    "http://127.0.0.1:$port/" 2>&1)
  t1=$(cpu_ticks "$2")
  local rps mean done cpu
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  mean=$(awk '/^time for request:/ {print $6}' <<<"$out")
  done=$(awk '/^requests:/ {print $8}' <<<"$out")
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${done:-0}" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n }')
  echo "${rps:-0} ${mean:--} - - ${cpu:--}"
}

# run NAME PORT PID SCENARIO -> "rps p50 p99 sticky cpu_us_per_request"
run() {
  local port=$2 scenario=$4 env=()
  if [ "$scenario" = h2 ]; then
    run_h2 "$port" "$3"
    return
  fi
  case "$scenario" in
    one)   env=(WRK_SESSIONS=1) ;;
    many)  env=(WRK_SESSIONS=5000) ;;  # per thread: 2 threads = 10,000 sessions
    new)   env=() ;;
    post)  env=(WRK_SESSIONS=1 WRK_BODY_BYTES=1024) ;;
    big)   env=(WRK_SESSIONS=1 WRK_BODY_BYTES=262144) ;;
    tls)   env=(WRK_SESSIONS=1) ;;
  esac
  local scheme=http path=/; [ "$scenario" = tls ] && scheme=https
  [ "$scenario" = big ] && path=/big
  [ "$1" = nginx ] && env+=(WRK_CLIENT_COOKIES=1)
  local script="$LOAD/sticky.lua"; [ "$scenario" = new ] && script="$LOAD/new-session.lua"
  local out t0 t1
  t0=$(cpu_ticks "$3")
  out=$(env "${env[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$scheme://127.0.0.1:$port$path" 2>&1)
  t1=$(cpu_ticks "$3")
  local rps p50 p99 sticky cpu
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" '/ requests in / {printf "%.1f", t * 1e6 / hz / $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  sticky=$(awk '/^sticky:/ {print $2}' <<<"$out"); sticky=${sticky:--}
  echo "$rps $p50 $p99 $sticky ${cpu:--}"
}

proxies="tether nginx haproxy"; [ "$RELAY" = 1 ] && proxies="$proxies relay"
[ "$FLOOR" = 1 ] && proxies="$proxies floor"
printf '%-8s %-7s %-8s %-3s %12s %10s %10s %10s %10s %10s\n' workers scenario proxy run "req/s" p50 p99 "cpu(us/r)" "rss(KB)" "pinned"
for w in $WORKERS; do
  start_proxies "$w"
  for scenario in $SCENARIOS; do
    declare -A best=()
    # Neither the relay nor the floor terminates TLS, and the floor takes no bodies.
    these=$proxies
    [ "$scenario" = tls ] && these="tether nginx haproxy"
    [ "$scenario" = h2 ] && these="tether nginx haproxy"
    [ "$scenario" = post ] && these=${these/ floor/}
    [ "$scenario" = big ] && these=${these/ floor/}
    for round in 1 2; do
      for proxy in $these; do
        case $scenario:$proxy in
          tls:tether) port=18097; pid=$TETHER_TLS_PID ;;
          tls:nginx) port=18095; pid=$NGINX_PID ;;
          tls:haproxy) port=18096; pid=$HAPROXY_PID ;;
          h2:nginx) port=18085; pid=$NGINX_PID ;;
          h2:haproxy) port=18086; pid=$HAPROXY_PID ;;
          *:tether) port=18090; pid=$TETHER_PID ;;
          *:nginx) port=18091; pid=$NGINX_PID ;;
          *:haproxy) port=18092; pid=$HAPROXY_PID ;;
          *:relay) port=18093; pid=$HAPROXY_PID ;;
          *:floor) port=18094; pid=$FLOOR_PID ;;
        esac
        read -r rps p50 p99 sticky cpu < <(run "$proxy" "$port" "$pid" "$scenario")
        rss=$(peak_rss_kb "$pid")
        # Neither is sticky (each pins a connection, not a session); the relay runs
        # inside the HAProxy process, so it has no RSS of its own.
        case $proxy in relay) sticky=-; rss=- ;; floor) sticky=- ;; esac
        printf '%-8s %-7s %-8s %-3s %12s %10s %10s %10s %10s %10s\n' "$w" "$scenario" "$proxy" "$round" "$rps" "$p50" "$p99" "$cpu" "$rss" "$sticky"
        cur=${best[$proxy]:-0}
        best[$proxy]=$(awk -v a="$cur" -v b="$rps" 'BEGIN {print (b > a) ? b : a}')
      done
    done
    peer=$(awk -v a="${best[nginx]}" -v b="${best[haproxy]}" 'BEGIN {print (a > b) ? a : b}')
    ratio=$(awk -v t="${best[tether]}" -v p="$peer" 'BEGIN {printf "%.2f", (p > 0) ? t / p : 0}')
    echo "# workers=$w scenario=$scenario: tether ${best[tether]} req/s, better peer $peer req/s, ratio $ratio"
    if [ "$RELAY" = 1 ] && [ "$scenario" != tls ] && [ "$scenario" != h2 ]; then
      awk -v t="${best[tether]}" -v p="$peer" -v r="${best[relay]}" 'BEGIN {
        printf "#   ceiling: relay %s req/s; tether at %.0f%% of it, better peer at %.0f%%; 1.25x the peer would be %.0f%%\n",
          r, 100 * t / r, 100 * p / r, 125 * p / r }'
    fi
    if [ "$FLOOR" = 1 ] && [ "$scenario" != tls ] && [ "$scenario" != post ] && [ "$scenario" != big ] && [ "$scenario" != h2 ]; then
      awk -v t="${best[tether]}" -v p="$peer" -v f="${best[floor]}" 'BEGIN {
        printf "#   floor: minimal HTTP/1 proxy on tokio %s req/s, %.2fx the better peer; tether at %.0f%% of it\n",
          f, f / p, 100 * t / f }'
    fi
    unset best
  done
  stop_proxies
done
