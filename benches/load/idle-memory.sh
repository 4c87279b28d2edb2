#!/usr/bin/env bash
# Memory of tether at rest and per idle keep-alive connection.
#
# Starts four upstream "pods" (nginx) and tether (release build, workers = $WORKERS),
# reads tether's RSS when idle, after one request, then opens $CONNS client connections
# that each send one sticky request and stay open (keep-alive, idle), and reads the RSS
# again. Prints idle RSS and (RSS with connections - RSS before) / connections.
#
#   benches/load/idle-memory.sh            # 10,000 connections, 1 worker
#   CONNS=20000 WORKERS=2 benches/load/idle-memory.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS="${CONNS:-10000}"
WORKERS="${WORKERS:-1}"
ulimit -n "$(( $(ulimit -Hn) < CONNS + 1024 ? $(ulimit -Hn) : CONNS + 1024 ))"
. benches/load/common.sh
setup_load_env nginx
start_pods 1818
start_tether 1818 18190 18199 "$WORKERS"
for _ in $(seq 50); do curl -sf http://127.0.0.1:18199/readyz >/dev/null && break; sleep 0.1; done
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$TETHER_PID/status"; }

idle=$(rss_kb)
curl -sf http://127.0.0.1:18190/ >/dev/null
after_one=$(rss_kb)
# Every connection sends one request (a new session each) and then sits idle.
python3 - "$CONNS" "$work/ready" <<'PY' & CLIENT=$!; pids+=($CLIENT)
import asyncio, sys
n, ready = int(sys.argv[1]), sys.argv[2]
async def one(held):
    r, w = await asyncio.open_connection("127.0.0.1", 18190)
    w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    await r.readexactly(length)
    held.append((r, w))
async def main():
    held, sem = [], asyncio.Semaphore(256)
    async def limited():
        async with sem:
            await one(held)
    await asyncio.gather(*(limited() for _ in range(n)))
    open(ready, "w").write(str(len(held)))
    await asyncio.sleep(3600)
asyncio.run(main())
PY
for _ in $(seq 600); do [ -s "$work/ready" ] && break; sleep 0.1; done
[ -s "$work/ready" ] || { echo "clients did not connect" >&2; exit 1; }
sleep 1
with_conns=$(rss_kb)
open=$(cat "$work/ready")
printf 'tether idle RSS:            %6.1f MB\n' "$(awk -v k="$idle" 'BEGIN {print k / 1024}')"
printf 'after one request:          %6.1f MB\n' "$(awk -v k="$after_one" 'BEGIN {print k / 1024}')"
printf 'with %d idle connections: %6.1f MB\n' "$open" "$(awk -v k="$with_conns" 'BEGIN {print k / 1024}')"
printf 'per idle connection:        %6.1f KB\n' "$(awk -v a="$with_conns" -v b="$after_one" -v n="$open" 'BEGIN {print (a - b) / n}')"
