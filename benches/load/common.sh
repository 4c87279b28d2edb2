# Shared by the load scripts in benches/load (sourced, not run).
#
#   setup_load_env wrk nginx     installs missing Debian packages, builds tether
#                                (release), sets TETHER, a temporary $work directory
#                                and a cleanup trap that kills every pid in `pids`
#   nginx_head NAME WORKERS      prints an nginx config's opening lines (pid and error
#                                log named NAME in $work) up to inside `http {`
#   start_pods PORT_PREFIX       four nginx "pods" on 127.0.0.1:${PORT_PREFIX}1..4; each
#                                answers with x-pod and echoes X-Wrk-Slot (sticky.lua);
#                                /big answers 256 KiB
#   start_tether PORT_PREFIX LISTEN ADMIN WORKERS [TLS]
#                                tether (cookie `tether`) on 127.0.0.1:LISTEN, admin on
#                                ADMIN, in front of those pods; sets TETHER_PID; runs
#                                under $TETHER_WRAP when set (e.g. valgrind); with TLS
#                                (a directory holding cert.pem and key.pem) it
#                                terminates TLS
#   ports_free PORT...           exits with a message when any PORT is already taken
#   make_cert DIR                a self-signed cert.pem, key.pem and both in one
#                                combined.pem (HAProxy's form) for localhost in DIR

ports_free() { # PORT...: refuses to go on when any of them is already listening on
  # 127.0.0.1, so a table is never reported from some other process's answers
  local p taken=()
  for p in "$@"; do
    if ss -Htln "sport = :$p" | grep -q .; then taken+=("$p"); fi
  done
  if [ "${#taken[@]}" -gt 0 ]; then
    echo "ports already in use: ${taken[*]} (stop what listens there, then run again)" >&2
    exit 1
  fi
}

setup_load_env() {
  local need=() bin
  # Each argument is a command, or COMMAND:PACKAGE when Debian names them apart.
  for bin in "$@"; do command -v "${bin%%:*}" >/dev/null || need+=("${bin#*:}"); done
  if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # TETHER_BIN: a tether binary built elsewhere (an earlier commit, for before/after).
  if [ -n "${TETHER_BIN:-}" ]; then
    TETHER="$TETHER_BIN"
  else
    cargo build --release --quiet --bin tether
    TETHER="$PWD/target/release/tether"
  fi
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
}

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$work"
}

nginx_head() { # NAME WORKERS: the opening of an nginx config, up to inside http { }
  cat <<CONF
worker_processes $2;
pid $work/$1.pid;
error_log $work/$1.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
CONF
}

start_pods() {
  local prefix=$1 i
  # /big answers any method with 256 KiB (a static file; POST's 405 turned into 200)
  # after reading the request body, for the "big" scenario.
  mkdir -p "$work/www"
  head -c 262144 /dev/zero | tr '\0' 'b' > "$work/www/big"
  cat > "$work/upstream.conf" <<CONF
$(nginx_head upstream 2)
$(for i in 1 2 3 4; do echo "  server { listen 127.0.0.1:${prefix}$i; location / { add_header x-pod pod-$i; add_header x-wrk-slot \$http_x_wrk_slot; return 200 \"pod-$i\n\"; } location = /big { client_max_body_size 1m; root $work/www; error_page 405 =200 \$uri; add_header x-pod pod-$i always; add_header x-wrk-slot \$http_x_wrk_slot always; } }"; done)
}
CONF
  nginx -c "$work/upstream.conf" -g 'daemon off;' & pids+=($!)
  sleep 0.5
}

start_tether() {
  local prefix=$1 listen=$2 admin=$3 workers=$4 tls=${5:-}
  cat > "$work/tether-$listen.toml" <<CONF
[server]
listen = "127.0.0.1:$listen"
admin = "127.0.0.1:$admin"
workers = $workers
$([ -n "$tls" ] && printf '[server.tls]\ncert_file = "%s/cert.pem"\nkey_file = "%s/key.pem"\n' "$tls" "$tls")
[[keys]]
id = "k1"
secret = "$("$TETHER" keygen)"
[[backend]]
name = "app"
endpoints = [$(for i in 1 2 3 4; do printf '{ name = "pod-%s", address = "127.0.0.1:%s%s" }%s' "$i" "$prefix" "$i" "$([ "$i" -lt 4 ] && echo ', ')"; done)]
[backend.affinity]
cookie = "tether"
CONF
  # shellcheck disable=SC2086 # TETHER_WRAP is a command line, split on purpose
  RUST_LOG=warn ${TETHER_WRAP:-} "$TETHER" run --config "$work/tether-$listen.toml" 2>"$work/tether-$listen.err" & TETHER_PID=$!; pids+=($TETHER_PID)
}

make_cert() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
  cat "$1/cert.pem" "$1/key.pem" > "$1/combined.pem"
}
