#!/usr/bin/env bash
# User-space instructions per proxied request, shop-gateway against nginx, counted by valgrind's callgrind.
# Prints a markdown section on stdout; progress on stderr.
#
# Why: the timed gateway bench (gateway.sh) shares 2 noisy cores with its load tool and upstream, and one
# start of a process can run 30 % slower than another; differences of a few percent drown there. An
# instruction count does not depend on the machine's mood: the same build gives the same count to within
# 0.1 %, so it shows what a change to the request path costs, and how the gateway's own work compares with
# nginx's for the same exchange. It leaves out the kernel (about two thirds of either proxy's CPU time on
# loopback, the same system calls for both) and cache behaviour; gateway.sh measures time.
#
# Each proxy runs alone under callgrind (nginx: one worker, `master_process off` so the worker is the
# process valgrind follows; shop-gateway: one worker) in front of an nginx upstream answering `return
# 200`, with the same proxy settings as gateway.sh. `shop-load gateway` sends WARM requests, the counters are
# zeroed, then N requests at RATE/s over 32 keep-alive connections (every request wakes the proxy, as at
# gateway.sh's fixed rate), and the counters are dumped: instructions / N, everything the process ran in
# that window (event loop, timers, parsing, headers, allocation, its share of idle wake-ups).
# Usage: hack/bench/gateway-instructions.sh   (BENCH_INSTR_REQUESTS=6000, BENCH_INSTR_RATE=1000)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N=${BENCH_INSTR_REQUESTS:-6000}
RATE=${BENCH_INSTR_RATE:-1000}
WARM=2000
NGINX=${NGINX:-/usr/sbin/nginx}
log() { printf '[bench:gateway-instructions] %s\n' "$*" >&2; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
  || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[[ -x $NGINX ]] || { echo "nginx is not installed at $NGINX (apt-get install nginx-light)" >&2; exit 1; }
(( N >= RATE && N % RATE == 0 )) || { echo "BENCH_INSTR_REQUESTS must be a multiple of BENCH_INSTR_RATE" >&2; exit 1; }

cd "$ROOT"
[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build -q --release -p shop-gateway -p shop-load --bins >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

# shellcheck source=../bench-lib.sh
source "$ROOT/hack/bench-lib.sh"
bench_scratch

UP=$(free_port); NG=$(free_port "$UP"); GW=$(free_port "$UP" "$NG")
nginx_upstream_conf "$TMP/up" "$UP"
# One worker, and no master: the worker is the process valgrind follows.
nginx_proxy_conf "$TMP/ng" "$NG" "$UP" 1 "master_process off;"
gateway_bench_routes "$TMP/routes.yaml" "$UP"
start_upstream "$NGINX" "$TMP/up" "$UP"

declare -A PER_REQ
count() { # name url command... -> instructions per request in PER_REQ[name]
  local name=$1 url=$2; shift 2
  log "$name under callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.%p" "$@" >"$TMP/$name.log" 2>&1 </dev/null &
  local vp=$!; PIDS+=("$vp")
  wait_http "$url" 300 # slow to start under valgrind
  "$BIN/shop-load" gateway "$url" "$RATE" $(( WARM / RATE )) 32 >/dev/null
  callgrind_control -z "$vp" >/dev/null 2>&1
  local out; out=$("$BIN/shop-load" gateway "$url" "$RATE" $(( N / RATE )) 32)
  callgrind_control -d "$vp" >/dev/null 2>&1
  kill "$vp"; wait "$vp" 2>/dev/null || true
  local ok errors
  ok=$(grep -o '"ok": *[0-9]*' <<<"$out" | grep -o '[0-9]*$'); errors=$(grep -o '"errors": *[0-9]*' <<<"$out" | grep -o '[0-9]*$')
  [[ $ok == "$N" && $errors == 0 ]] || { echo "$name: $ok ok, $errors errors of $N: $out" >&2; exit 1; }
  # The dump after zeroing is the `.1` part; its summary line is the instruction count of the window.
  local dump; dump=$(ls "$TMP/$name".*.1)
  local ir; ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  PER_REQ[$name]=$(( ir / N ))
  log "$name: $ir instructions for $N requests"
}
count nginx "http://127.0.0.1:$NG/api/bench" "$NGINX" -p "$TMP/ng" -c "$TMP/ng/nginx.conf" -e "$TMP/ng/error.log"
SHOP_BIND=127.0.0.1 SHOP_PORT=$GW SHOP_LOG_FORMAT=json RUST_LOG=warn \
  count shop-gateway "http://127.0.0.1:$GW/api/bench" "$BIN/shop-gateway" --routes "$TMP/routes.yaml" --workers 1

ratio=$(awk -v g="${PER_REQ[shop-gateway]}" -v n="${PER_REQ[nginx]}" 'BEGIN {printf "%.3f", g/n}')
cat <<EOF
## shop-gateway vs nginx: user-space instructions per proxied request

Command: \`hack/bench/gateway-instructions.sh\` (BENCH_INSTR_REQUESTS=$N, BENCH_INSTR_RATE=$RATE). Each proxy alone under
valgrind's callgrind (nginx: 1 worker, \`master_process off\`; shop-gateway: release, 1 worker, static route, rate
limiting off), in front of an nginx \`return 200\` upstream; $N requests at $RATE/s over 32 keep-alive connections after
$WARM to warm up; all instructions the proxy process ran in that window divided by $N. Deterministic to about 0.1 %
for one build; the kernel's work (system calls, TCP on loopback) is not counted.

| proxy | instructions per request |
|---|---|
| nginx | ${PER_REQ[nginx]} |
| shop-gateway | ${PER_REQ[shop-gateway]} |

- shop-gateway / nginx: **$ratio**.
EOF
log "done"
