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
#  2. Latency at a fixed rate = half of the gateway's max: `shop-load gateway` (open loop, one thread driving its 32
#     connections from an epoll loop with a timerfd per due time, latency measured from the scheduled send
#     time, no coordinated omission; wrk2 is not available) for direct, nginx, gateway; the "added" latency
#     is proxy minus direct within the same round.
#  CPU: every load run also reads the CPU time and run-queue wait of the proxy's and the upstream's threads
#  (/proc/<pid>/task/*/schedstat) and the load tools' CPU time, to show how busy the 2 cores were: at a fixed
#  rate each request costs the servers about twice the CPU it costs at wrk's maximum (no batching of
#  wake-ups), so "half of the maximum rate" keeps the cores ~80 % busy and the tails are run-queue waits.
#  3. RSS after the load: shop-gateway VmRSS/VmHWM; nginx proxy master + workers VmRSS (the last round's
#     processes: a 1 s wrk warm-up and one fixed-rate run).
# Both load phases run BENCH_GATEWAY_ROUNDS (5) rounds with freshly started proxies, the targets' order rotating each round, and every
# figure is the median over the rounds: on a shared 2-core machine a single sequential run per target mostly
# measured whatever else ran at that moment (runs of one binary varied by 20-30 %), and a fixed order always
# gave the same target the same position.
# Everything listens on free random 127.0.0.1 ports; every load run is bounded in time.
# The throughput ratio is the median of the per-round ratios (gateway / nginx measured minutes apart at
# most, in the same round), which cancels most of the machine's drift between rounds; the ratio of the
# medians is printed next to it.
# Usage: hack/bench/gateway.sh   (BENCH_GATEWAY_SECS=8, BENCH_GATEWAY_ROUNDS=5 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DUR=${BENCH_GATEWAY_SECS:-8}
ROUNDS=${BENCH_GATEWAY_ROUNDS:-5}
PROFILE=${BENCH_PROFILE:-release}
NGINX=${NGINX:-/usr/sbin/nginx}
log() { printf '[bench:gateway] %s\n' "$*" >&2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[[ -x $NGINX ]] || { echo "nginx is not installed at $NGINX (apt-get install nginx-light)" >&2; exit 1; }

cd "$ROOT"
# shellcheck source=../bench-lib.sh
source "$ROOT/hack/bench-lib.sh"
bench_build shop-gateway shop-load
bench_scratch

UP=$(free_port); NG=$(free_port "$UP"); GW=$(free_port "$UP" "$NG")
nginx_upstream_conf "$TMP/up" "$UP"
nginx_proxy_conf "$TMP/ng" "$NG" "$UP" 2
gateway_bench_routes "$TMP/routes.yaml" "$UP"
start_upstream "$NGINX" "$TMP/up" "$UP"
# Both proxies are started afresh for every round. One process keeps the speed it started with: two
# copies of one gateway binary, started at different times, ran at 29-31 and 40-43 us of CPU per request
# over interleaved rounds, and at 39-40 both once restarted; so rounds on one process measured that
# process's start, not the proxy, and a fresh start per round makes the median one over starts.
# (The upstream serves every target of a round alike and stays.)
NG_PID="" GW_PID=""
start_proxies() {
  "$NGINX" -p "$TMP/ng" -c "$TMP/ng/nginx.conf" -e "$TMP/ng/error.log" 2>>"$TMP/ng/stderr" & PIDS+=($!)
  NG_PID=$!
  SHOP_BIND=127.0.0.1 SHOP_PORT=$GW SHOP_LOG_FORMAT=json RUST_LOG=warn \
    "$BIN/shop-gateway" --routes "$TMP/routes.yaml" >>"$TMP/gw.log" 2>&1 & PIDS+=($!)
  GW_PID=$!
  wait_http "http://127.0.0.1:$NG/"
  wait_http "http://127.0.0.1:$GW/health/ready"
  curl -sf "http://127.0.0.1:$GW/api/bench" | grep -q upstream || { echo "gateway does not proxy" >&2; exit 1; }
  PROXY_PIDS=([direct]="" [nginx]="$NG_PID" [gateway]="$GW_PID")
}
# Stops both and waits for them to exit, so the next round's listeners are the only ones (the
# gateway's SO_REUSEPORT would let a draining process share the port).
stop_proxies() {
  kill "$NG_PID" "$GW_PID" 2>/dev/null || true
  wait "$NG_PID" "$GW_PID" 2>/dev/null || true
}

declare -A URL=([direct]="http://127.0.0.1:$UP/api/bench" [nginx]="http://127.0.0.1:$NG/api/bench"
  [gateway]="http://127.0.0.1:$GW/api/bench")
TARGETS=(direct nginx gateway)
order() { # round -> the targets rotated by the round number
  local r=$1 n=${#TARGETS[@]} k
  for k in $(seq 0 $(( n - 1 ))); do printf '%s ' "${TARGETS[$(( (k + r) % n ))]}"; done
}
# CPU time and run-queue wait (ns) of all threads of these processes and their children.
sched_of() { # pids... -> "cpu_ns wait_ns"
  local p c t cpu=0 wait=0 a b
  for p in "$@"; do
    for c in "$p" $(pgrep -P "$p" || true); do
      for t in /proc/"$c"/task/*/schedstat; do
        read -r a b _ < "$t" 2>/dev/null || continue
        cpu=$(( cpu + a )); wait=$(( wait + b ))
      done
    done
  done
  echo "$cpu $wait"
}
declare -A PROXY_PIDS=([direct]="" [nginx]="" [gateway]="")
SNAP=""
snap() { SNAP="$(sched_of "$UP_PID") $(sched_of ${PROXY_PIDS[$1]})"; }
# Per request CPU (us) of the upstream and the proxy since `snap`, and the proxy's run-queue wait (ms/s).
cpu_since() { # name requests seconds -> "up_us proxy_us proxy_wait_ms_per_s"
  local now; now="$(sched_of "$UP_PID") $(sched_of ${PROXY_PIDS[$1]})"
  awk -v a="$SNAP" -v b="$now" -v n="$2" -v s="$3" 'BEGIN { split(a, x, " "); split(b, y, " ");
    if (n < 1) n = 1; printf "%.1f %.1f %.0f", (y[1]-x[1])/1000/n, (y[3]-x[3])/1000/n, (y[4]-x[4])/1e6/s }'
}
declare -A RPS P50 P99 MRPS MP50 MP99 WCPU
run_wrk() { # name url
  log "wrk warm-up $1"
  wrk -t2 -c64 -d2s "$2" >/dev/null 2>&1 || true
  log "wrk $1 (${DUR}s)"
  snap "$1"
  local out
  out=$(wrk -t2 -c64 -d"${DUR}s" --latency "$2")
  echo "$1 $out" >> "$TMP/wrk.txt"
  local n; n=$(awk '/requests in/ {print $1}' <<<"$out")
  local u p; read -r u p _ <<<"$(cpu_since "$1" "$n" "$DUR")"
  WCPU[$1]+="$p "
  RPS[$1]+="$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out") "
  P50[$1]+="$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")") "
  P99[$1]+="$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")") "
}
for r in $(seq 0 $(( ROUNDS - 1 ))); do
  start_proxies
  for t in $(order "$r"); do run_wrk "$t" "${URL[$t]}"; done
  stop_proxies
done
# shellcheck disable=SC2086 # the per-round lists are split on purpose
for t in "${TARGETS[@]}"; do
  MRPS[$t]=$(median ${RPS[$t]}); MP50[$t]=$(median ${P50[$t]}); MP99[$t]=$(median ${P99[$t]})
done

RATE=$(( ${MRPS[gateway]:-0} / 2 ))
(( RATE > 0 )) || { echo "no throughput measured" >&2; exit 1; }
# The number at a top-level key of `shop-load gateway`'s one-line flat JSON (our own tool; no nested objects).
json_num() { # key json
  local v
  v=$(grep -o "\"$1\": *-\?[0-9][0-9.eE+-]*" <<<"$2" | head -n1 | sed 's/.*: *//') && [[ -n $v ]] \
    || { echo "no number \"$1\" in shop-load gateway output: $2" >&2; return 1; }
  echo "$v"
}
declare -A R50 R99 FR50 FR99 ADD50 ADD99 FRRPS FCPU FUP FTOOL FWAIT FBUSY
run_fixed() { # name url -> R50/R99 of this round; appended to the per-target lists
  log "fixed rate $RATE/s $1 (${DUR}s)"
  snap "$1"
  local out; out=$("$BIN/shop-load" gateway "$2" "$RATE" "$DUR" 32)
  echo "$1 $out" >> "$TMP/fixed.txt"
  local p50 p99 ok errors rps tool up px wait
  p50=$(json_num p50_us "$out"); p99=$(json_num p99_us "$out")
  ok=$(json_num ok "$out"); errors=$(json_num errors "$out"); rps=$(json_num achieved_rps "$out")
  tool=$(json_num tool_cpu_ms "$out")
  read -r up px wait <<<"$(cpu_since "$1" "$ok" "$DUR")"
  FCPU[$1]+="$px "; FUP[$1]+="$up "; FWAIT[$1]+="$wait "
  FTOOL[$1]+="$(awk -v t="$tool" -v n="$ok" 'BEGIN {printf "%.1f", t*1000/(n<1?1:n)}') "
  # Share of the machine's CPU used by upstream + proxy + load tool during the run.
  FBUSY[$1]+="$(awk -v u="$up" -v p="$px" -v t="$tool" -v n="$ok" -v d="$DUR" -v c="$(nproc)" \
    'BEGIN {printf "%.0f", ((u+p)*n/1e6 + t/1000) / (d*c) * 100}') "
  R50[$1]=$(awk -v v="$p50" 'BEGIN {printf "%.3f", v/1000}')
  R99[$1]=$(awk -v v="$p99" 'BEGIN {printf "%.3f", v/1000}')
  FR50[$1]+="${R50[$1]} "; FR99[$1]+="${R99[$1]} "
  FRRPS[$1]+="$(awk -v o="$ok" -v e="$errors" -v r="$rps" 'BEGIN {printf "%d/%d/%d", o, e, r}') "
}
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a-b}'; }
for r in $(seq 0 $(( ROUNDS - 1 ))); do
  (( r == 0 )) || stop_proxies
  start_proxies
  # Warm the fresh proxies' upstream pools, as wrk's warm-up does in the first phase.
  for t in nginx gateway; do wrk -t2 -c64 -d1s "${URL[$t]}" >/dev/null 2>&1 || true; done
  for t in $(order "$r"); do run_fixed "$t" "${URL[$t]}"; done
  for t in nginx gateway; do
    ADD50[$t]+="$(minus "${R50[$t]}" "${R50[direct]}") "; ADD99[$t]+="$(minus "${R99[$t]}" "${R99[direct]}") "
  done
done
declare -A MF50 MF99 MA50 MA99 CPUROW
# shellcheck disable=SC2086
for t in "${TARGETS[@]}"; do
  MF50[$t]=$(median ${FR50[$t]}); MF99[$t]=$(median ${FR99[$t]})
  CPUROW[$t]="$(median ${WCPU[$t]}) | $(median ${FUP[$t]}) | $(median ${FCPU[$t]}) | $(median ${FTOOL[$t]}) | $(median ${FBUSY[$t]}) | $(median ${FWAIT[$t]})"
  if [[ $t != direct ]]; then MA50[$t]=$(median ${ADD50[$t]}); MA99[$t]=$(median ${ADD99[$t]}); fi
done

kib() { awk -v f="$2" '$1==f {print $2}' "/proc/$1/status"; }
GW_RSS=$(kib "$GW_PID" VmRSS:); GW_HWM=$(kib "$GW_PID" VmHWM:)
NG_RSS=$(kib "$NG_PID" VmRSS:)
for w in $(pgrep -P "$NG_PID"); do NG_RSS=$(( NG_RSS + $(kib "$w" VmRSS:) )); done

ratio=$(awk -v g="${MRPS[gateway]}" -v n="${MRPS[nginx]}" 'BEGIN {printf "%.2f", g/n}')
# shellcheck disable=SC2206 # per-round lists, split on purpose
GWR=(${RPS[gateway]}) NGR=(${RPS[nginx]})
ROUND_RATIOS=()
for i in "${!GWR[@]}"; do
  ROUND_RATIOS+=("$(awk -v g="${GWR[$i]}" -v n="${NGR[$i]:-0}" 'BEGIN {printf "%.2f", (n > 0 ? g/n : 0)}')")
done
pratio=$(median "${ROUND_RATIOS[@]}")
row() { # target label
  local t=$1
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "${MRPS[$t]}" "${RPS[$t]% }" "${MP50[$t]}" \
    "${MP99[$t]}" "${MF50[$t]}" "${MF99[$t]}" "${MA50[$t]:-–}" "${MA99[$t]:-–}" "${FRRPS[$t]% }"
}
cat <<EOF
## shop-gateway vs nginx (reverse proxy to the same upstream)

Command: \`hack/bench/gateway.sh\` (BENCH_GATEWAY_SECS=$DUR, BENCH_GATEWAY_ROUNDS=$ROUNDS). Upstream: nginx \`return 200\` (1 worker).
nginx proxy: 2 workers, upstream keepalive pool. shop-gateway: $PROFILE build, 2 workers, static route, rate limiting off,
default auth (GET public). Throughput: \`wrk -t2 -c64 -d${DUR}s --latency\` (closed loop, after a 2 s warm-up). Fixed rate:
\`shop-load gateway URL $RATE $DUR 32\` (open loop at half of the gateway's median max: one thread, 32 connections, an epoll
loop with a timerfd per due time; latency from the scheduled send time). Each phase runs $ROUNDS rounds with the targets' order
rotating and both proxies started afresh for every round (one process keeps the speed it started with); figures are medians over the rounds ("added" = proxy minus direct within a round, then the median). wrk, the upstream and the proxies share the same $(nproc) cores.

| target | max req/s (wrk, median) | req/s per round | wrk p50 ms | wrk p99 ms | p50 ms @ $RATE/s | p99 ms @ $RATE/s | added p50 ms | added p99 ms | fixed-rate rounds (ok/errors/req/s) |
|---|---|---|---|---|---|---|---|---|---|
$(row direct direct)
$(row nginx nginx)
$(row gateway shop-gateway)

- Throughput ratio shop-gateway / nginx, median of the rounds' ratios (${ROUND_RATIOS[*]}): **$pratio** (goal: >= 1.00); ratio of the medians: $ratio.
- Added p99 of shop-gateway at half its max rate: **${MA99[gateway]} ms** (nginx: ${MA99[nginx]} ms; goal: < 1 ms).
- RSS after the last round: shop-gateway **$(( GW_RSS / 1024 )) MiB** (peak $(( GW_HWM / 1024 )) MiB); nginx proxy master + workers **$(( NG_RSS / 1024 )) MiB**.

CPU per request (medians over the rounds; from the threads' schedstat): the proxy's at wrk's maximum, then at
$RATE/s the upstream's, the proxy's and shop-load gateway's, how busy the $(nproc) cores were in all (upstream + proxy
+ load tool), and how long the proxy's threads waited for a CPU (ms per second of run).

| target | proxy us/req @ max | upstream us/req @ $RATE/s | proxy us/req @ $RATE/s | shop-load gateway us/req | cores busy % | proxy run-queue wait ms/s |
|---|---|---|---|---|---|---|
| direct | ${CPUROW[direct]} |
| nginx | ${CPUROW[nginx]} |
| shop-gateway | ${CPUROW[gateway]} |

EOF
log "done"
