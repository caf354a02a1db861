#!/bin/bash
# Instructions per 100-file batch request, per variant of bench_profiles.py, counted by
# callgrind (steady under load, unlike wall time). Usage:
#   benchmarks/callgrind_profiles.sh [N] [BEFORE_CHECKOUT]
# N requests per variant (default 5); BEFORE_CHECKOUT (e.g. a worktree of main) adds
# the "plain" variant run on that code, for a before/after count.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
n=${1:-5}
before=${2:-}
python=$(python -c 'import sys; print(sys.executable)')  # the interpreter, not a shim
out=$(mktemp -d)
run() {  # label, checkout, variant
  PYTHONPATH="$2" valgrind --tool=callgrind --dump-before=getppid \
    --callgrind-out-file="$out/$1.out" "$python" "$here/bench_profiles.py" \
    --callgrind "$n" --variant "$3" > "$out/$1.log" 2>&1
  # Dumps: .1 = start-up and the warm-up request, .2 = the N requests, then the rest.
  total=$(grep -h '^summary:\|^totals:' "$out/$1.out.2" | head -1 | awk '{print $2}')
  echo "$1: $((total / n)) instructions per request ($n requests)"
}
if [ -n "$before" ]; then run "before-plain" "$before" plain; fi
run "plain" "$root" plain
run "configured" "$root" configured
run "profiled" "$root" profiled
rm -rf "$out"
