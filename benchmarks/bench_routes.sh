#!/usr/bin/env bash
# Requests per CPU-second of the browser routes under gunicorn, measured with wrk
# (2 threads x 8 connections, 10 s per route) against moto S3 and Redis state, with
# ownership and validation on:
#   - Companion sign-part   GET  /obitox/s3/multipart/<id>/<n>?key=...
#   - Companion /s3/params  GET  /obitox/s3/params?filename=...&type=...
#   - native parts          POST /obitox/multipart/<id>/parts   (10 part numbers)
# Prints requests/s, p50/p99 latency, the gunicorn workers' CPU seconds (utime+stime
# from /proc/<pid>/stat, before and after) and requests per CPU-second, with the ratio
# to Uppy Companion 6.2.2 measured the same way (630 sign-part, 1090 /s3/params).
#
# Usage: benchmarks/bench_routes.sh [WORKERS] [DURATION] [WORKER_CLASS]
#   WORKER_CLASS: sync (default, gunicorn's: a new connection per request; the fewest
#   CPU seconds per request here) or gthread (THREADS per worker, default 4, with HTTP
#   keep-alive: measured 8-25% more CPU per request, the threads contend for the GIL).
#   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS="${1:-2}"
DURATION="${2:-10s}"
WORKER_CLASS="${3:-sync}"
case "$WORKER_CLASS" in
  gthread) WORKER_ARGS=(--worker-class gthread --threads "${THREADS:-4}" --keep-alive 5) ;;
  sync) WORKER_ARGS=(--worker-class sync) ;;
  *) echo "WORKER_CLASS must be gthread or sync"; exit 2 ;;
esac
REDIS="${OBITOX_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3_PORT=$(free_port)
APP_PORT=$(free_port)
PREFIX="obitox-bench-$$"
WORK=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  python3 - "$REDIS" "$PREFIX" <<'PY' || true
import sys, redis
client = redis.Redis.from_url(sys.argv[1])
keys = list(client.scan_iter(match=f"{sys.argv[2]}*"))
if keys:
    client.delete(*keys)
PY
  rm -rf "$WORK"
}
trap cleanup EXIT

moto_server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
pids+=($!)
export BENCH_S3="http://127.0.0.1:$S3_PORT" BENCH_REDIS="$REDIS" BENCH_PREFIX="$PREFIX"
for _ in $(seq 1 50); do curl -s -o /dev/null "$BENCH_S3" && break; sleep 0.2; done
curl -s -X PUT "$BENCH_S3/obitox-bench" >/dev/null

gunicorn --workers "$WORKERS" "${WORKER_ARGS[@]}" --bind "127.0.0.1:$APP_PORT" --log-level warning \
  --chdir benchmarks routes_app:app >"$WORK/gunicorn.log" 2>&1 &
GUNICORN=$!
pids+=("$GUNICORN")
BASE="http://127.0.0.1:$APP_PORT/obitox"
for _ in $(seq 1 100); do curl -s -o /dev/null "$BASE/openapi.json" && break; sleep 0.2; done

# One Companion upload and one native upload (20 parts of 5 MiB) to sign parts of.
read -r CID CKEY < <(curl -s -H 'X-User: bench' -H 'Content-Type: application/json' \
  -d '{"filename":"movie.png","type":"image/png"}' "$BASE/s3/multipart" |
  python3 -c 'import json,sys,urllib.parse as u; d=json.load(sys.stdin); print(d["uploadId"], u.quote(d["key"]))')
NID=$(curl -s -H 'X-User: bench' -H 'Content-Type: application/json' \
  -d '{"filename":"movie.png","contentType":"image/png","size":104857600}' "$BASE/multipart" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["uploadId"])')

cat >"$WORK/get.lua" <<'LUA'
wrk.headers["X-User"] = "bench"
LUA
cat >"$WORK/parts.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["X-User"] = "bench"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"partNumbers":[1,2,3,4,5,6,7,8,9,10]}'
LUA

worker_cpu() {
  # utime + stime of every gunicorn worker (children of the master), in seconds.
  python3 - "$GUNICORN" <<'PY'
import os, sys
master = sys.argv[1]
ticks = os.sysconf("SC_CLK_TCK")
total = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[1] == master:  # ppid
        total += int(fields[11]) + int(fields[12])
print(f"{total / ticks:.2f}")
PY
}

printf '%-22s %10s %9s %9s %9s %12s %s\n' route "req/s" p50 p99 "cpu s" "req/cpu-s" "vs Companion"
run() {
  local name="$1" url="$2" script="$3" companion="$4"
  local before after out
  before=$(worker_cpu)
  out=$(wrk -t2 -c8 -d"$DURATION" --latency -s "$script" "$url")
  after=$(worker_cpu)
  python3 - "$name" "$before" "$after" "$companion" <<PY
import re, sys
name, before, after, companion = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
out = """$out"""
total = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
cpu = after - before
per_cpu = total / cpu if cpu else float("nan")
ratio = f"{per_cpu / float(companion):.2f}x of {companion}" if companion != "-" else "-"
print(f"{name:<22} {rps:10.0f} {p50:>9} {p99:>9} {cpu:9.2f} {per_cpu:12.0f} {ratio}")
if errors:
    print(f"  !! {errors.group(1)} answers were not 2xx")
PY
}

run "companion sign-part" "$BASE/s3/multipart/$CID/1?key=$CKEY" "$WORK/get.lua" 630
run "companion /s3/params" "$BASE/s3/params?filename=cat.png&type=image/png&metadata%5Balbum%5D=summer" "$WORK/get.lua" 1090
run "native /parts (10)" "$BASE/multipart/$NID/parts" "$WORK/parts.lua" -
echo "workers: $WORKERS (gunicorn $WORKER_CLASS), wrk 2 threads x 8 connections, $DURATION per route"
