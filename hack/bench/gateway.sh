#!/usr/bin/env bash
# Benchmark of shop-gateway against nginx (Debian) as a reverse proxy to the same upstream, on the same
# machine, with the same load tools, in one run. Prints a markdown section on stdout; progress on stderr.
#
# Upstream: an nginx instance answering `return 200` (1 worker). Peers, in turn, each given the same
# cores: the upstream directly, nginx proxying with an upstream keepalive pool (2 workers), and the
# release shop-gateway proxying through a static route (tokio default runtime = 2 threads on 2 cores).
# The gateway runs with rate limiting off (a per-IP limit would turn the load into 429s) and its default
# auth rules (GETs are public), so the figures are those of the proxy path.
#  1. Max throughput: wrk -t2 -c64 -d${DUR}s --latency (closed loop), req/s and p50/p99.
#  2. Latency at a fixed rate = half of the gateway's max: gateway-load (open loop, latency measured from
#     the scheduled send time, no coordinated omission; wrk2 is not available) for direct, nginx, gateway;
#     the "added" latency is proxy minus direct.
#  3. RSS after the load: shop-gateway VmRSS/VmHWM; nginx proxy master + workers VmRSS.
# Everything listens on free random 127.0.0.1 ports; every load run is bounded in time.
# Usage: hack/bench/gateway.sh   (BENCH_GATEWAY_SECS=10 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DUR=${BENCH_GATEWAY_SECS:-10}
PROFILE=${BENCH_PROFILE:-release}
NGINX=${NGINX:-/usr/sbin/nginx}
log() { printf '[bench:gateway] %s\n' "$*" >&2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[[ -x $NGINX ]] || { echo "nginx is not installed at $NGINX (apt-get install nginx-light)" >&2; exit 1; }

cd "$ROOT"
if [[ -n ${BENCH_SKIP_BUILD:-} ]]; then
  : # binaries already built (make bench builds the workspace first)
elif [[ $PROFILE == release ]]; then
  cargo build -q --release -p shop-gateway --bins >&2
else
  cargo build -q -p shop-gateway --bins >&2
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# A loopback TCP port nobody listens on: random in 20000-60000, the first one a connection to is refused
# (bounded tries); ports given as arguments (the ones already picked for this run) are skipped.
free_port() {
  local p used
  for _ in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40001 ))
    for used in "$@"; do [[ $p == "$used" ]] && continue 2; done
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free loopback port found in 20000-60000" >&2
  return 1
}
wait_http() { # url
  local i
  for i in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 did not come up" >&2; return 1
}

UP=$(free_port); NG=$(free_port "$UP"); GW=$(free_port "$UP" "$NG")
mkdir -p "$TMP/up" "$TMP/ng"
common_http='access_log off; client_body_temp_path TMPDIR/cb; proxy_temp_path TMPDIR/pt; fastcgi_temp_path TMPDIR/ft; uwsgi_temp_path TMPDIR/ut; scgi_temp_path TMPDIR/st;'
cat > "$TMP/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/up/nginx.pid;
error_log $TMP/up/error.log warn;
events { worker_connections 4096; }
http {
  ${common_http//TMPDIR/$TMP/up}
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$UP;
    location / { default_type text/plain; return 200 "hello from the upstream\n"; }
  }
}
EOF
cat > "$TMP/ng/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $TMP/ng/nginx.pid;
error_log $TMP/ng/error.log warn;
events { worker_connections 4096; }
http {
  ${common_http//TMPDIR/$TMP/ng}
  keepalive_requests 10000000;
  upstream up { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Request-Id \$request_id;
    }
  }
}
EOF
cat > "$TMP/routes.yaml" <<EOF
routes:
  - {id: bench, prefix: /, upstreams: ["http://127.0.0.1:$UP"], auth: public}
rate_limit: {enabled: false}
EOF

"$NGINX" -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/error.log" 2>"$TMP/up/stderr" & PIDS+=($!)
"$NGINX" -p "$TMP/ng" -c "$TMP/ng/nginx.conf" -e "$TMP/ng/error.log" 2>"$TMP/ng/stderr" & PIDS+=($!)
NG_PID=$!
SHOP_BIND=127.0.0.1 SHOP_PORT=$GW SHOP_LOG_FORMAT=json RUST_LOG=warn \
  "$BIN/shop-gateway" --routes "$TMP/routes.yaml" >"$TMP/gw.log" 2>&1 & PIDS+=($!)
GW_PID=$!
wait_http "http://127.0.0.1:$UP/"
wait_http "http://127.0.0.1:$NG/"
wait_http "http://127.0.0.1:$GW/health/ready"
curl -sf "http://127.0.0.1:$GW/api/bench" | grep -q upstream || { echo "gateway does not proxy" >&2; exit 1; }

to_ms() { # wrk latency value like 812.00us / 1.20ms / 2.01s -> ms
  awk -v v="$1" 'BEGIN { n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
    if (u=="us") n/=1000; else if (u=="s") n*=1000; printf "%.3f", n }'
}
declare -A RPS P50 P99 FR50 FR99 FRRPS
run_wrk() { # name url
  log "wrk warm-up $1"
  wrk -t2 -c64 -d2s "$2" >/dev/null 2>&1 || true
  log "wrk $1 (${DUR}s)"
  local out; out=$(wrk -t2 -c64 -d"${DUR}s" --latency "$2")
  echo "$out" >> "$TMP/wrk.txt"
  RPS[$1]=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  P50[$1]=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  P99[$1]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
}
run_wrk direct "http://127.0.0.1:$UP/api/bench"
run_wrk nginx "http://127.0.0.1:$NG/api/bench"
run_wrk gateway "http://127.0.0.1:$GW/api/bench"

RATE=$(( ${RPS[gateway]} / 2 ))
(( RATE > 0 )) || { echo "no throughput measured" >&2; exit 1; }
# The number at a top-level key of gateway-load's one-line flat JSON (our own tool; no nested objects).
json_num() { # key json
  local v
  v=$(grep -o "\"$1\": *-\?[0-9][0-9.eE+-]*" <<<"$2" | head -n1 | sed 's/.*: *//') && [[ -n $v ]] \
    || { echo "no number \"$1\" in gateway-load output: $2" >&2; return 1; }
  echo "$v"
}
run_fixed() { # name url
  log "fixed rate $RATE/s $1 (${DUR}s)"
  local out; out=$("$BIN/gateway-load" "$2" "$RATE" "$DUR" 32)
  echo "$1 $out" >> "$TMP/fixed.txt"
  local p50 p99 ok errors rps
  p50=$(json_num p50_us "$out"); p99=$(json_num p99_us "$out")
  ok=$(json_num ok "$out"); errors=$(json_num errors "$out"); rps=$(json_num achieved_rps "$out")
  FR50[$1]=$(awk -v v="$p50" 'BEGIN {printf "%.3f", v/1000}')
  FR99[$1]=$(awk -v v="$p99" 'BEGIN {printf "%.3f", v/1000}')
  FRRPS[$1]=$(awk -v o="$ok" -v e="$errors" -v r="$rps" 'BEGIN {printf "%d ok / %d errors, %d req/s", o, e, r}')
}
run_fixed direct "http://127.0.0.1:$UP/api/bench"
run_fixed nginx "http://127.0.0.1:$NG/api/bench"
run_fixed gateway "http://127.0.0.1:$GW/api/bench"

kib() { awk -v f="$2" '$1==f {print $2}' "/proc/$1/status"; }
GW_RSS=$(kib "$GW_PID" VmRSS:); GW_HWM=$(kib "$GW_PID" VmHWM:)
NG_RSS=$(kib "$NG_PID" VmRSS:)
for w in $(pgrep -P "$NG_PID"); do NG_RSS=$(( NG_RSS + $(kib "$w" VmRSS:) )); done

ratio=$(awk -v g="${RPS[gateway]}" -v n="${RPS[nginx]}" 'BEGIN {printf "%.2f", g/n}')
add() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a-b}'; }
cat <<EOF
## shop-gateway vs nginx (reverse proxy to the same upstream)

Command: \`hack/bench/gateway.sh\` (BENCH_GATEWAY_SECS=$DUR). Upstream: nginx \`return 200\` (1 worker). nginx proxy: 2 workers,
upstream keepalive pool. shop-gateway: $PROFILE build, static route, rate limiting off, default auth (GET public).
Throughput: \`wrk -t2 -c64 -d${DUR}s --latency\` (closed loop). Fixed rate: \`gateway-load URL $RATE $DUR 32\` (open loop at half of the
gateway's max; latency from the scheduled send time). wrk, the upstream and the proxy share the same $(nproc) cores.

| target | max req/s (wrk) | wrk p50 ms | wrk p99 ms | p50 ms @ $RATE/s | p99 ms @ $RATE/s | added p50 ms @ $RATE/s | added p99 ms @ $RATE/s | fixed-rate run |
|---|---|---|---|---|---|---|---|---|
| direct | ${RPS[direct]} | ${P50[direct]} | ${P99[direct]} | ${FR50[direct]} | ${FR99[direct]} | – | – | ${FRRPS[direct]} |
| nginx | ${RPS[nginx]} | ${P50[nginx]} | ${P99[nginx]} | ${FR50[nginx]} | ${FR99[nginx]} | $(add "${FR50[nginx]}" "${FR50[direct]}") | $(add "${FR99[nginx]}" "${FR99[direct]}") | ${FRRPS[nginx]} |
| shop-gateway | ${RPS[gateway]} | ${P50[gateway]} | ${P99[gateway]} | ${FR50[gateway]} | ${FR99[gateway]} | $(add "${FR50[gateway]}" "${FR50[direct]}") | $(add "${FR99[gateway]}" "${FR99[direct]}") | ${FRRPS[gateway]} |

- Throughput ratio shop-gateway / nginx: **$ratio** (goal: >= 1.00).
- Added p99 of shop-gateway at half its max rate: **$(add "${FR99[gateway]}" "${FR99[direct]}") ms** (goal: < 1 ms).
- RSS after the runs: shop-gateway **$(( GW_RSS / 1024 )) MiB** (peak $(( GW_HWM / 1024 )) MiB); nginx proxy master + workers **$(( NG_RSS / 1024 )) MiB**.

EOF
log "done"
