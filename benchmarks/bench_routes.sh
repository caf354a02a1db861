#!/usr/bin/env bash
# Requests per CPU-second of the browser routes under gunicorn (or granian), measured with wrk
# (2 threads x 8 connections, 10 s per route) against moto S3 and Redis state, with
# ownership and validation on:
#   - the floor             GET  /bench/noop (a Flask route doing nothing: gunicorn and
#     Flask alone, what every route pays; each route's own share is printed above it)
#   - Companion sign-part   GET  /obitox/s3/multipart/<id>/<n>?key=...
#   - Companion /s3/params  GET  /obitox/s3/params?filename=...&type=...
#   - native parts          POST /obitox/multipart/<id>/parts   (10 part numbers)
#   - status                GET  /obitox/uploads/<id>
#   - progress              POST /obitox/uploads/<id>/progress  (a rising uploadedBytes)
#     both over 400 uploads in turn, as many clients' files: each report is a new
#     state of its upload (a new event), not one upload reported 2,000 times a second
# and, in the same run and the same way, Uppy Companion 6.2.2 itself (installed from
# npm into a cache folder outside the repository; COMPANION=0 skips it) in two forms:
# "standalone" (its own `companion` server, as its Docker image runs it) and "library"
# (`companion.app()` in a bare Express app: no access log, no session, no metrics,
# its lightest form). Prints requests/s, p50/p99 latency, the server's CPU seconds
# (utime+stime from /proc/<pid>/stat, before and after: the gunicorn workers, the node
# process) and requests per CPU-second, then each route's ratio to Companion measured in
# this run, and to the issue's reference figures (630 sign-part, 1090 /s3/params).
#
# Every child (moto, gunicorn, node, wrk) runs in a process group of its own with its output
# in a log file; a child that dies or does not answer stops the script at once, non-zero,
# with its last lines of output, and every child is stopped however the script ends
# (normally, on an error, on SIGTERM or SIGINT).
#
# PAIRS (default 1): how many status/progress pairs, and how many more /s3/params runs of
# ours and Companion library's back to back (the ratio of each pair, then their median).
#
# Usage: benchmarks/bench_routes.sh [WORKERS] [DURATION] [WORKER_CLASS]
#   WORKER_CLASS: sync (default, gunicorn's: a new connection per request; the fewest
#   CPU seconds per request here), gthread (THREADS per worker, default 4, with HTTP
#   keep-alive: measured 8-25% more CPU per request, the threads contend for the GIL)
#   or gevent (pip install gevent: keep-alive, no fewer CPU seconds per request here);
#   or granian: not gunicorn but granian's WSGI server (pip install granian: HTTP parsed
#   in Rust, keep-alive; THREADS, default 1, threads run the app per worker).
#   (needs wrk: apt-get install wrk; Companion needs node and npm)
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS="${1:-2}"
DURATION="${2:-10s}"
WORKER_CLASS="${3:-sync}"
case "$WORKER_CLASS" in
  gthread) WORKER_ARGS=(--worker-class gthread --threads "${THREADS:-4}" --keep-alive 5) ;;
  sync) WORKER_ARGS=(--worker-class sync) ;;
  gevent) WORKER_ARGS=(--worker-class gevent --worker-connections 1000 --keep-alive 5) ;;
  granian) ;;
  *) echo "WORKER_CLASS must be sync, gthread, gevent or granian"; exit 2 ;;
esac
REDIS="${OBITOX_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3_PORT=$(free_port)
APP_PORT=$(free_port)
PREFIX="obitox-bench-$$"
WORK=$(mktemp -d)

# -- the children ----------------------------------------------------------------------
declare -A names=() # pid -> name of each running child; its output is in $WORK/<name>.log
# start NAME DIR COMMAND...: COMMAND in DIR, in the background, in a process group of its
# own (setsid execs it: its pid is the group's id); sets STARTED to its pid.
start() {
  local name="$1" dir="$2"
  shift 2
  (cd "$dir" && exec setsid "$@") >"$WORK/$name.log" 2>&1 </dev/null &
  STARTED=$!
  names[$STARTED]="$name"
}
# stop PID: SIGTERM to the child's group, SIGKILL to what is left of it 5 s later.
stop() {
  unset "names[$1]"
  kill -TERM -- "-$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null || true
}
# fail NAME WHAT: stop the benchmark, saying WHAT of NAME, with its last lines of output.
fail() {
  {
    echo "$1 $2; its last lines of output:"
    grep -v '^[[:space:]]*$' "$WORK/$1.log" | tail -n 15 | sed 's/^/    /'
  } >&2
  exit 1
}
# alive PID: fail unless the child PID still runs.
alive() {
  local name="${names[$1]}" code=0
  kill -0 "$1" 2>/dev/null && return 0
  wait "$1" || code=$?
  unset "names[$1]"
  fail "$name" "(pid $1) exited with code $code"
}
# wait_http PID URL: until URL answers; fails as soon as the child PID ends, or after 30 s.
wait_http() {
  local deadline=$((SECONDS + 30))
  until curl -s -o /dev/null "$2"; do
    alive "$1"
    [ "$SECONDS" -lt "$deadline" ] || fail "${names[$1]}" "(pid $1) does not answer $2 after 30 s"
    sleep 0.2
  done
}
cleanup() {
  trap '' TERM INT # a second signal must not cut the clean-up short
  for pid in "${!names[@]}"; do stop "$pid"; done
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
trap 'exit 143' TERM # so that the EXIT trap stops the children
trap 'exit 130' INT

start moto . moto_server -H 127.0.0.1 -p "$S3_PORT"
MOTO=$STARTED
export BENCH_S3="http://127.0.0.1:$S3_PORT" BENCH_REDIS="$REDIS" BENCH_PREFIX="$PREFIX"
wait_http "$MOTO" "$BENCH_S3"
curl -s -X PUT "$BENCH_S3/obitox-bench" >/dev/null

if [ "$WORKER_CLASS" = granian ]; then
  # Granian's WSGI interface: its HTTP in Rust, keep-alive; one thread runs the app.
  start server benchmarks granian --interface wsgi --workers "$WORKERS" \
    --blocking-threads "${THREADS:-1}" --host 127.0.0.1 --port "$APP_PORT" \
    --log-level warning --no-ws routes_app:app
else
  start server . gunicorn --workers "$WORKERS" "${WORKER_ARGS[@]}" --bind "127.0.0.1:$APP_PORT" \
    --log-level warning --chdir benchmarks routes_app:app
fi
SERVER=$STARTED
BASE="http://127.0.0.1:$APP_PORT/obitox"
wait_http "$SERVER" "$BASE/openapi.json"

# Prints "uploadId quoted-key" of a Companion-protocol multipart upload made at $1.
companion_upload() {
  curl -s -H 'X-User: bench' -H 'Content-Type: application/json' \
    -d '{"filename":"movie.png","type":"image/png","metadata":{}}' "$1/s3/multipart" |
    python3 -c 'import json,sys,urllib.parse as u; d=json.load(sys.stdin); print(d["uploadId"], u.quote(d["key"], safe=""))'
}
# One Companion upload and one native upload (20 parts of 5 MiB) to sign parts of.
read -r CID CKEY < <(companion_upload "$BASE") || fail server "did not create a Companion upload"
NID=$(curl -s -H 'X-User: bench' -H 'Content-Type: application/json' \
  -d '{"filename":"movie.png","contentType":"image/png","size":104857600}' "$BASE/multipart" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["uploadId"])') ||
  fail server "did not create a multipart upload"

cat >"$WORK/get.lua" <<'LUA'
wrk.headers["X-User"] = "bench"
LUA
cat >"$WORK/parts.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["X-User"] = "bench"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"partNumbers":[1,2,3,4,5,6,7,8,9,10]}'
LUA

cpu_seconds() {
  # utime + stime in seconds: of process $2 itself ("self"), or of every child of $2
  # ("children": the workers of the server $2, gunicorn's or granian's).
  python3 - "$1" "$2" <<'PY'
import os, sys
mode, pid = sys.argv[1], sys.argv[2]
ticks = os.sysconf("SC_CLK_TCK")
total = 0
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        stat = open(f"/proc/{entry}/stat").read()
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2 :].split()
    if (mode == "self" and entry == pid) or (mode == "children" and fields[1] == pid):
        total += int(fields[11]) + int(fields[12])
print(f"{total / ticks:.2f}")
PY
}

RESULTS="$WORK/results"
: >"$RESULTS"
printf '%-30s %8s %9s %9s %7s %10s\n' route "req/s" p50 p99 "cpu s" "req/cpu-s"
# run NAME URL LUA MODE PID: one wrk run against the server PID; prints a row and records
# "NAME req/cpu-s".
run() {
  local name="$1" url="$2" script="$3" mode="$4" pid="$5"
  local before after out wrk code=0
  before=$(cpu_seconds "$mode" "$pid")
  # In the background: a signal to this script is handled now, not after the run.
  start wrk . wrk -t2 -c8 -d"$DURATION" --latency -s "$script" "$url"
  wrk=$STARTED
  wait "$wrk" || code=$?
  unset "names[$wrk]"
  [ "$code" = 0 ] || fail wrk "(pid $wrk) exited with code $code"
  alive "$pid" # a server that died during the run
  out=$(cat "$WORK/wrk.log")
  after=$(cpu_seconds "$mode" "$pid")
  WRK_OUT="$out" python3 - "$name" "$before" "$after" "$RESULTS" <<'PY'
import os, re, sys
name, before, after, results = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
out = os.environ["WRK_OUT"]
total = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
cpu = after - before
per_cpu = total / cpu if cpu else float("nan")
print(f"{name:<30} {rps:8.0f} {p50:>9} {p99:>9} {cpu:7.2f} {per_cpu:10.0f}")
if errors:
    print(f"  !! {errors.group(1)} answers were not 2xx")
with open(results, "a") as f:
    f.write(f"{name}\t{per_cpu:.1f}\n")
PY
}

PARAMS="s3/params?filename=cat.png&type=image/png&metadata%5Balbum%5D=summer"
run "flask route doing nothing" "http://127.0.0.1:$APP_PORT/bench/noop" "$WORK/get.lua" children "$SERVER"
run "obitox sign-part" "$BASE/s3/multipart/$CID/1?key=$CKEY" "$WORK/get.lua" children "$SERVER"
run "obitox /s3/params" "$BASE/$PARAMS" "$WORK/get.lua" children "$SERVER"
run "obitox native /parts (10)" "$BASE/multipart/$NID/parts" "$WORK/parts.lua" children "$SERVER"
# A progress report (DESIGN §12) against the status read it must stay close to, both over
# 400 uploads in turn (four batches of 100), as many clients' files: each report is of a
# different upload than the last and carries a higher count than that upload's last, so
# nearly every one writes and makes an event (the throttle of one upload's events by
# OBITOX_EVENTS_PROGRESS_INTERVAL_MS does not hide that cost).
IDS_LUA="$WORK/ids.lua"
echo "ids = {" >"$IDS_LUA"
for _ in 1 2 3 4; do
  curl -s -H 'X-User: bench' -H 'Content-Type: application/json' -d "$(python3 -c '
import json; print(json.dumps({"files": [{"filename": f"f{i}.bin", "contentType": "application/octet-stream", "size": 10**9} for i in range(100)]}))')" "$BASE/uploads/batch" |
    python3 -c 'import json,sys; print("".join(json.dumps(u["uploadId"]) + "," for u in json.load(sys.stdin)["uploads"]))' >>"$IDS_LUA" ||
    fail server "did not sign a batch"
done
echo "}" >>"$IDS_LUA"
cat "$IDS_LUA" - >"$WORK/status.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/obitox/uploads/" .. ids[n % #ids + 1], {["X-User"] = "bench"})
end
LUA
cat "$IDS_LUA" - >"$WORK/progress.lua" <<'LUA'
local threads = 0
function setup(thread)
  thread:set("me", threads)
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  -- Threads count apart (2n + me): one thread's report is never another's repeat.
  return wrk.format("POST", "/obitox/uploads/" .. ids[n % #ids + 1] .. "/progress",
    {["X-User"] = "bench", ["Content-Type"] = "application/json"},
    '{"uploadedBytes":' .. (2 * n + me) .. '}')
end
LUA
# PAIRS (default 1) read/report pairs, one after the other: the ratio printed at the end
# is the median of the pairs' ratios, each from two runs seconds apart (a shared
# machine's load moves between runs far more than within a pair).
for _ in $(seq "${PAIRS:-1}"); do
  run "obitox status GET /uploads/<id>" "$BASE/uploads" "$WORK/status.lua" children "$SERVER"
  run "obitox progress POST" "$BASE/uploads" "$WORK/progress.lua" children "$SERVER"
done

# -- Uppy Companion 6.2.2, the same routes, the same wrk, the same moto -----------------
COMPANION_VERSION=6.2.2
COMPANION_DIR="${OBITOX_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/obitox-bench}/companion-$COMPANION_VERSION"
install_companion() {
  [ -e "$COMPANION_DIR/node_modules/@uppy/companion/package.json" ] && return 0
  command -v npm >/dev/null && command -v node >/dev/null || return 1
  mkdir -p "$COMPANION_DIR"
  printf '{"name":"obitox-bench-companion","private":true,"type":"module",%s}\n' \
    "\"dependencies\":{\"@uppy/companion\":\"$COMPANION_VERSION\"}" >"$COMPANION_DIR/package.json"
  (cd "$COMPANION_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null 2>&1) && return 0
  # Companion 6.2.2 pins @aws-sdk/s3-presigned-post 3.986.0, a release some npm
  # mirrors lack; the next one (3.987.0) is used then, and said so.
  echo "note: npm could not install @aws-sdk/s3-presigned-post@3.986.0; using 3.987.0"
  printf '{"name":"obitox-bench-companion","private":true,"type":"module",%s,%s}\n' \
    "\"dependencies\":{\"@uppy/companion\":\"$COMPANION_VERSION\"}" \
    '"overrides":{"@aws-sdk/s3-presigned-post":"3.987.0"}' >"$COMPANION_DIR/package.json"
  (cd "$COMPANION_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
}

if [ "${COMPANION:-1}" != 0 ] && install_companion; then
  # Companion as a library, in a bare Express app: its lightest form.
  cat >"$COMPANION_DIR/library.mjs" <<'JS'
import express from 'express'
import bodyParser from 'body-parser'
import * as companion from '@uppy/companion'

const env = process.env
const app = express()
app.use(bodyParser.json())
const { app: companionApp } = await companion.app({
  s3: {
    key: env.COMPANION_AWS_KEY,
    secret: env.COMPANION_AWS_SECRET,
    bucket: env.COMPANION_AWS_BUCKET,
    region: env.COMPANION_AWS_REGION,
    endpoint: env.COMPANION_AWS_ENDPOINT,
    forcePathStyle: true,
  },
  server: { host: `127.0.0.1:${env.COMPANION_PORT}`, protocol: 'http' },
  filePath: env.COMPANION_DATADIR,
  secret: env.COMPANION_SECRET,
  corsOrigins: true,
  metrics: false,
})
app.use(companionApp)
app.listen(Number(env.COMPANION_PORT), '127.0.0.1')
JS
  mkdir -p "$WORK/companion-data"
  export COMPANION_SECRET="bench-$$" COMPANION_DATADIR="$WORK/companion-data" \
    COMPANION_AWS_KEY=testing COMPANION_AWS_SECRET=testing COMPANION_AWS_BUCKET=obitox-bench \
    COMPANION_AWS_REGION=us-east-1 COMPANION_AWS_ENDPOINT="$BENCH_S3" \
    COMPANION_AWS_FORCE_PATH_STYLE=true COMPANION_CLIENT_ORIGINS=true
  for form in library standalone; do
    COMPANION_PORT=$(free_port)
    export COMPANION_PORT COMPANION_DOMAIN="127.0.0.1:$COMPANION_PORT"
    if [ "$form" = library ]; then
      start "companion-$form" "$COMPANION_DIR" node library.mjs
    else
      start "companion-$form" "$COMPANION_DIR" node node_modules/@uppy/companion/bin/companion
    fi
    NODE=$STARTED
    CBASE="http://127.0.0.1:$COMPANION_PORT"
    wait_http "$NODE" "$CBASE/$PARAMS"
    read -r UID_ KEY_ < <(companion_upload "$CBASE") ||
      fail "companion-$form" "did not create a Companion upload"
    run "companion $form sign-part" "$CBASE/s3/multipart/$UID_/1?key=$KEY_" "$WORK/get.lua" self "$NODE"
    run "companion $form /s3/params" "$CBASE/$PARAMS" "$WORK/get.lua" self "$NODE"
    if [ "$form" = library ]; then
      # PAIRS more /s3/params pairs, ours then Companion's seconds apart: the machine's
      # load moves between the sections of this script far more than within a pair.
      for _ in $(seq "${PAIRS:-1}"); do
        run "paired obitox /s3/params" "$BASE/$PARAMS" "$WORK/get.lua" children "$SERVER"
        run "paired companion /s3/params" "$CBASE/$PARAMS" "$WORK/get.lua" self "$NODE"
      done
    fi
    stop "$NODE"
  done
else
  echo "(Companion not measured: COMPANION=0, node or npm missing, or its npm install failed)"
fi

SERVED_BY="gunicorn $WORKER_CLASS"
[ "$WORKER_CLASS" = granian ] && SERVED_BY="granian wsgi, $(granian --version 2>/dev/null | tail -1)"
echo "workers: $WORKERS ($SERVED_BY), wrk 2 threads x 8 connections, $DURATION per route"
python3 - "$RESULTS" <<'PY'
import sys
import statistics
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
rate = {name: float(value) for name, value in rows}
reads = [float(v) for name, v in rows if name == "obitox status GET /uploads/<id>"]
reports = [float(v) for name, v in rows if name == "obitox progress POST"]
ratios = sorted(read / report for read, report in zip(reads, reports))
shown = "(pairs: " + " ".join(f"{r:.2f}" for r in ratios) + ")" if len(ratios) > 1 else ""
print(
    f"a progress report costs {statistics.median(ratios):.2f}x a status read in CPU"
    f" (goal: <= 1.3x) {shown}".rstrip()
)
print("requests per CPU-second, obitox / Companion (goal: >= 2x):")
for route, reference in (("sign-part", 630), ("/s3/params", 1090)):
    ours = rate[f"obitox {route}"]
    parts = [f"{ours / reference:.2f}x the issue's {reference}"]
    for form in ("library", "standalone"):
        theirs = rate.get(f"companion {form} {route}")
        if theirs:
            parts.insert(0, f"{ours / theirs:.2f}x {form}")
    print(f"  {route:<11} " + ", ".join(parts))
ours = [float(v) for name, v in rows if name == "paired obitox /s3/params"]
theirs = [float(v) for name, v in rows if name == "paired companion /s3/params"]
if ours and theirs:
    paired = sorted(a / b for a, b in zip(ours, theirs))
    print(
        f"  /s3/params  {statistics.median(paired):.2f}x library in pairs run back to back"
        " (pairs: " + " ".join(f"{r:.2f}" for r in paired) + ")"
    )
# What the server and Flask cost before any route's own work: a goal of 2x needs the
# whole request at half Companion's, so the route's own share at that less the floor.
floor = 1e6 / rate["flask route doing nothing"]
print(f"CPU per request: {floor:.0f} us for a Flask route doing nothing (the floor), and:")
for route in ("sign-part", "/s3/params"):
    own = 1e6 / rate[f"obitox {route}"] - floor
    theirs = rate.get(f"companion library {route}")
    budget = f"; 2x library needs <= {5e5 / theirs - floor:.0f} us" if theirs else ""
    print(f"  {route:<11} {own:.0f} us above it{budget}")
PY
