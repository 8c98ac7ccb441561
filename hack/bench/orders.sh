#!/usr/bin/env bash
# Benchmark of the order path: POST /api/order throughput and p50/p99 latency through shop-gateway (JWT
# checked) -> shop-order -> shop-inventory (reservation) -> MariaDB (order + outbox in one transaction) -> outbox relay -> Kafka
# -> shop-notification (MongoDB), the order->notification delay p50/p99, and the RSS of each service
# idle and under that load. Prints a markdown section on stdout; progress goes to stderr.
#
# Phases (each bounded in count and time; loopback only):
#   1. warm-up: wrk, 3 s, 4 connections (discarded); shop-notification starts;
#   2. paced: $PACED orders at $RATE/s, one at a time, and for each the delay between the order's
#      occurredAt (shop-order's clock) and the notification's createdAt (shop-notification's clock;
#      same host) -> p50/p99/max (`shop-load order-paced`: services/load/src/order_paced.rs). First, while the
#      notification store is small: FerretDB answers per-order lookups by scanning;
#   3. whole pipeline through the gateway: wrk -t2 -c$CONNS for $DURATION s against shop-gateway (a route
#      that needs a valid JWT, as the original's gateway secured /api/order) while shop-notification
#      consumes and stores on the same 2 cores (orders/s, p50/p99, non-201 count, peak RSS), then the time
#      until all are stored; then the same load straight at shop-order (the gateway's share);
#   4. order path alone: shop-notification stopped (SIGTERM), the same load through the gateway and
#      straight (Kafka keeps the events), then shop-notification restarts and the time until it has
#      caught up.
#   Every load phase also records the CPU time each process used (/proc/<pid>/stat: the gateway, the
#   services, mariadbd, ferretdb, Kafka, wrk, and the rest of the machine from /proc/stat), so the table
#   says where the 2 cores went and what one order costs in each process.
# Usage: hack/bench/orders.sh   (needs `make up`; builds the release binaries of the three services,
#        and shop-load, whose order-paced subcommand places the paced orders)
# Knobs: BENCH_ORDERS_DURATION_S (20), BENCH_ORDERS_CONNECTIONS (32), BENCH_ORDERS_PACED (300),
#        BENCH_ORDERS_RATE (50), BENCH_SKUS (20), BENCH_PROFILE (release), BENCH_ORDERS_ZIPKIN (0: no span export),
#        BENCH_NO_BUILD (0; 1 uses the binaries already built).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${BENCH_ORDERS_DURATION_S:-20}
CONNS=${BENCH_ORDERS_CONNECTIONS:-32}
PACED=${BENCH_ORDERS_PACED:-300}
RATE=${BENCH_ORDERS_RATE:-50}
export BENCH_SKUS=${BENCH_SKUS:-20}
PROFILE=${BENCH_PROFILE:-release}
ZIPKIN=${BENCH_ORDERS_ZIPKIN:-0}
KAFKA=${SHOP_TEST_KAFKA:-127.0.0.1:9092}
MYSQL_BASE=${SHOP_TEST_MYSQL_URL:-mysql://shop:shop@127.0.0.1:3306}
MONGO=${SHOP_TEST_MONGODB_URL:-mongodb://127.0.0.1:27017/?directConnection=true}
log() { printf '[bench:orders] %s\n' "$*" >&2; }

for hp in 127.0.0.1:3306 "${KAFKA%%,*}" 127.0.0.1:27017; do
  (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null || { echo "server $hp not reachable: start the stack with \`make up\`" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

cd "$ROOT"
if [[ ${BENCH_NO_BUILD:-0} == 1 ]]; then
  log "BENCH_NO_BUILD=1: using the binaries already in target/$PROFILE"
elif [[ $PROFILE == release ]]; then
  cargo build -q --release -p shop-inventory -p shop-order -p shop-notification -p shop-gateway -p shop-load --bins >&2
else
  cargo build -q -p shop-inventory -p shop-order -p shop-notification -p shop-gateway -p shop-load --bins >&2
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
[[ -x $BIN/shop-load ]] || { echo "$BIN/shop-load is missing: cargo build --release -p shop-load" >&2; exit 1; }

suffix=$(date +%s)_$$
INV_DB=bench_inv_$suffix
ORD_DB=bench_ord_$suffix
TOPIC=bench-orders-$suffix
mysql -h127.0.0.1 -P3306 -ushop -pshop -e "CREATE DATABASE $INV_DB; CREATE DATABASE $ORD_DB;" 2>/dev/null
# shellcheck source=../bench-lib.sh
source "$ROOT/hack/bench-lib.sh"
INV_PORT=$(free_port); ORD_PORT=$(free_port "$INV_PORT"); NOT_PORT=$(free_port "$INV_PORT" "$ORD_PORT")
GW_PORT=$(free_port "$INV_PORT" "$ORD_PORT" "$NOT_PORT")
INV=http://127.0.0.1:$INV_PORT; ORD=http://127.0.0.1:$ORD_PORT; NOT=http://127.0.0.1:$NOT_PORT
GW=http://127.0.0.1:$GW_PORT
LOGS=/tmp/bench-orders-$suffix
mkdir -p "$LOGS"

common=(SHOP_BIND=127.0.0.1 SHOP_LOG_FORMAT=json RUST_LOG=warn)
if [[ $ZIPKIN == 1 ]]; then common+=(SHOP_ZIPKIN_ENDPOINT=http://127.0.0.1:9411/api/v2/spans); fi
trap bench_cleanup EXIT

env "${common[@]}" SHOP_PORT=$INV_PORT DATABASE_URL=$MYSQL_BASE/$INV_DB DATABASE_MAX_CONNECTIONS=32 \
  "$BIN/shop-inventory" >"$LOGS/inventory.log" 2>&1 &
INV_PID=$!; PIDS+=($INV_PID)
env "${common[@]}" SHOP_PORT=$ORD_PORT DATABASE_URL=$MYSQL_BASE/$ORD_DB DATABASE_MAX_CONNECTIONS=32 \
  SHOP_DNS_PATTERN=http://127.0.0.1:$INV_PORT SHOP_KAFKA_BOOTSTRAP=$KAFKA ORDER_TOPIC=$TOPIC \
  "$BIN/shop-order" >"$LOGS/order.log" 2>&1 &
ORD_PID=$!; PIDS+=($ORD_PID)
# The gateway: /api/order needs a valid HS256 JWT, checked on every request as on the platform's routes;
# the token is minted once and orders.lua sends it. Rate limiting off: a per-IP limit would turn the load
# into 429s.
JWT_SECRET=bench-secret-$suffix-0123456789abcdef
printf 'routes:\n  - {id: orders, prefix: /api/order, upstreams: ["%s"], auth: authenticated}\nrate_limit: {enabled: false}\n' \
  "$ORD" > "$LOGS/routes.yaml"
env "${common[@]}" SHOP_PORT=$GW_PORT SHOP_JWT_SECRET=$JWT_SECRET \
  "$BIN/shop-gateway" --routes "$LOGS/routes.yaml" >"$LOGS/gateway.log" 2>&1 &
GW_PID=$!; PIDS+=($GW_PID)
BENCH_TOKEN=$("$BIN/shop-gateway" mint-token --secret "$JWT_SECRET" --sub bench --scope "orders:write")
export BENCH_TOKEN

for url in $INV $ORD $GW; do
  for _ in $(seq 1 120); do curl -fsS -o /dev/null "$url/health/ready" 2>/dev/null && break; sleep 0.5; done
  curl -fsS -o /dev/null "$url/health/ready" || { echo "$url not ready; logs in $LOGS" >&2; exit 1; }
done
log "services ready (inventory :$INV_PORT, order :$ORD_PORT, notification :$NOT_PORT, gateway :$GW_PORT); logs in $LOGS"

for i in $(seq 0 $((BENCH_SKUS - 1))); do
  curl -fsS -o /dev/null -X PUT "$INV/api/inventory/bench-sku-$i" -H 'content-type: application/json' -d '{"quantity":1000000000}'
done

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
# CPU accounting. ticks PID: utime+stime of a process (all its threads) in clock ticks; machine_ticks: busy
# ticks of the whole machine (/proc/stat: all but idle and iowait).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
machine_ticks() { awk '$1=="cpu" {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
HZ=$(getconf CLK_TCK)
MARIADB_PID=$(cat "$ROOT/.state/pids/mariadb.pid" 2>/dev/null || echo 0)
FERRET_PID=$(cat "$ROOT/.state/pids/mongo.pid" 2>/dev/null || echo 0)
KAFKA_PID=$(cat "$ROOT/.state/pids/kafka.pid" 2>/dev/null || echo 0)
# cpu_mark: ticks of "gateway order inventory notification mariadbd ferretdb kafka wrk machine". wrk's are
# the CPU of every child this shell has waited for (`times`, run in this shell, not in a subshell: the
# finished wrk runs count there, through the command substitution that waited for them).
cpu_mark() {
  local w
  times > "$LOGS/times"
  w=$(awk -v hz="$HZ" 'NR==2 { gsub(/[ms]/, " "); printf "%d", (($1 * 60 + $2) + ($3 * 60 + $4)) * hz }' "$LOGS/times")
  CPU_MARK="$(ticks "$GW_PID") $(ticks "$ORD_PID") $(ticks "$INV_PID") $(ticks "${NOT_PID:-0}")"
  CPU_MARK+=" $(ticks "$MARIADB_PID") $(ticks "$FERRET_PID") $(ticks "$KAFKA_PID") $w $(machine_ticks)"
}
# cpu_row NAME BEFORE AFTER SECONDS ORDERS: a markdown row: for each process its share of the phase
# (percent of one core) / its CPU microseconds per order; "rest" is the machine minus the named
# processes (the kube control plane, the node, Zipkin, the kernel's own threads).
cpu_row() {
  awk -v name="$1" -v b="$2" -v a="$3" -v secs="$4" -v orders="$5" -v hz="$HZ" 'BEGIN {
    split(b, x, " "); split(a, y, " "); named = 0; row = "| " name " |"
    for (i = 1; i <= 9; i++) {
      d = y[i] - x[i]; if (d < 0) d = 0
      if (i < 9) named += d; else { total = d; d = total - named; if (d < 0) d = 0 }
      row = row sprintf(" %.0f %% / %.0f |", 100 * d / hz / secs, orders > 0 ? 1e6 * d / hz / orders : 0)
    }
    print row sprintf(" %.0f %% |", 100 * total / hz / secs) }'
}
# totalElements of the order list (shop-order's own compact JSON; it follows "content", so the last match).
orders_total() { curl -fsS "$ORD/api/order?size=1" | grep -o '"totalElements": *[0-9]*' | tail -n1 | grep -o '[0-9]*$'; }
notified_total() { curl -fsS -o /dev/null -D - "$NOT/api/notifications?size=1" | awk -F': ' 'tolower($1)=="x-total-count" {gsub("\r","",$2); print $2}'; }

log "warm-up"
wrk -t1 -c4 -d3s -s hack/bench/orders.lua "$ORD" >/dev/null 2>&1
IDLE_INV=$(rss_kb $INV_PID); IDLE_ORD=$(rss_kb $ORD_PID)

# wrk output -> "rps p50 p99 requests non2xx" plus socket errors on a second line.
wrk_fields() {
  awk '/Requests\/sec/ {r=$2} $1=="50%" {a=$2} $1=="99%" {b=$2} /requests in/ {n=$1} /Non-2xx/ {x=$NF}
       END {print r, a, b, n, (x==""?0:x)}' <<<"$1"
  awk '/Socket errors/ {print; f=1} END {if (!f) print "none"}' <<<"$1"
}
# Starts shop-notification (same database and consumer group each time, so a restart resumes from
# its committed offsets); the first start reads the topic the warm-up created from the beginning.
start_notification() {
  env "${common[@]}" SHOP_PORT=$NOT_PORT SHOP_MONGO_URL=$MONGO SHOP_MONGO_DB=bench-notification-$suffix \
    SHOP_KAFKA_BOOTSTRAP=$KAFKA SHOP_NOTIFICATION_TOPIC=$TOPIC SHOP_NOTIFICATION_GROUP=bench-notification-$suffix \
    "$BIN/shop-notification" >>"$LOGS/notification.log" 2>&1 &
  NOT_PID=$!; PIDS+=($NOT_PID)
  for _ in $(seq 1 120); do curl -fsS -o /dev/null "$NOT/health/ready" 2>/dev/null && break; sleep 0.5; done
  curl -fsS -o /dev/null "$NOT/health/ready" || { echo "$NOT not ready; logs in $LOGS" >&2; exit 1; }
}
# Seconds (from $1, a date +%s%N) until shop-notification has stored every placed order (bounded).
wait_notified() {
  local placed n=0 deadline=$(( $(date +%s) + 120 ))
  placed=$(orders_total)
  while (( $(date +%s) < deadline )); do
    n=$(notified_total || echo 0); n=${n:-0}
    (( n >= placed )) && break
    sleep 0.2
  done
  if (( n >= placed )); then awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN{printf "%.2f", (b-a)/1e9}'
  else echo ">120 (only $n of $placed)"; fi
}

start_notification
sleep 2
IDLE_NOT=$(rss_kb $NOT_PID)

# The delay is measured first, while the notification store is small: FerretDB
# (SQLite backend, no index used for lookups) answers the per-order lookups by scanning.
log "paced: $PACED orders at $RATE/s"
PACED_OUT=$("$BIN/shop-load" order-paced "$ORD" "$NOT" "$PACED" "$RATE" "$BENCH_SKUS")
read -r D_N D_MISSING D_P50 D_P99 D_MAX <<<"$PACED_OUT"

# load NAME URL: wrk -t2 -c$CONNS for $DURATION s at URL; leaves the output in $LOGS/wrk-NAME.txt, the wrk
# fields in W_RPS W_P50 W_P99 W_REQS W_NON2XX W_ERRS, and one CPU row (see cpu_row) in CPU_ROWS.
CPU_ROWS=""
load() {
  local before after out
  cpu_mark; before=$CPU_MARK
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency -s hack/bench/orders.lua "$2" 2>&1)
  cpu_mark; after=$CPU_MARK
  echo "$out" > "$LOGS/wrk-$1.txt"
  { read -r W_RPS W_P50 W_P99 W_REQS W_NON2XX; read -r W_ERRS; } < <(wrk_fields "$out")
  CPU_ROWS+="$(cpu_row "$1 ($(printf '%.0f' "$W_RPS") orders/s)" "$before" "$after" "$DURATION" "$W_REQS")"$'\n'
}

log "saturation, whole pipeline through the gateway: wrk -t2 -c$CONNS -d${DURATION}s"
PEAKS=$LOGS/peaks
( pi=0; po=0; pn=0
  while :; do
    a=$(rss_kb $INV_PID); b=$(rss_kb $ORD_PID); c=$(rss_kb $NOT_PID)
    (( a > pi )) && pi=$a; (( b > po )) && po=$b; (( c > pn )) && pn=$c
    echo "$pi $po $pn" > "$PEAKS"; sleep 0.25
  done ) &
SAMPLER=$!; PIDS+=($SAMPLER)
load "whole pipeline, gateway" "$GW"
wrk_end=$(date +%s%N)
kill $SAMPLER 2>/dev/null || true
read -r PEAK_INV PEAK_ORD PEAK_NOT < "$PEAKS"
RPS=$W_RPS P50=$W_P50 P99=$W_P99 REQS=$W_REQS NON2XX=$W_NON2XX ERRS=$W_ERRS
log "draining: waiting for every placed order to be notified"
drain_s=$(wait_notified "$wrk_end")

log "saturation, whole pipeline straight at shop-order: wrk -t2 -c$CONNS -d${DURATION}s"
load "whole pipeline, direct" "$ORD"
RPS_D=$W_RPS P50_D=$W_P50 P99_D=$W_P99 REQS_D=$W_REQS NON2XX_D=$W_NON2XX
drain_d=$(wait_notified "$(date +%s%N)")
PLACED=$(orders_total)

log "saturation, order path alone (shop-notification stopped), through the gateway and straight"
kill -TERM "$NOT_PID"; wait "$NOT_PID" 2>/dev/null || true
NOT_PID=0
load "order path alone, gateway" "$GW"
RPS_GA=$W_RPS P50_GA=$W_P50 P99_GA=$W_P99 REQS_GA=$W_REQS NON2XX_GA=$W_NON2XX
load "order path alone, direct" "$ORD"
RPS_A=$W_RPS P50_A=$W_P50 P99_A=$W_P99 REQS_A=$W_REQS NON2XX_A=$W_NON2XX ERRS_A=$W_ERRS
BACKLOG=$(( $(orders_total) - PLACED ))
log "shop-notification restarted: catching up on $BACKLOG orders"
backlog_start=$(date +%s%N)
start_notification
backlog_s=$(wait_notified "$backlog_start")
sleep 2
FINAL_PLACED=$(orders_total); FINAL_NOTIFIED=$(notified_total || echo "?")
if [[ $FINAL_PLACED == "$FINAL_NOTIFIED" ]]; then ONCE="every order once"; else ONCE="**MISMATCH**"; fi
AFTER_INV=$(rss_kb $INV_PID); AFTER_ORD=$(rss_kb $ORD_PID); AFTER_NOT=$(rss_kb $NOT_PID)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

ok_rps=$(awk -v r="$RPS" -v n="$NON2XX" -v t="$REQS" 'BEGIN{ if (t>0) printf "%.0f", r*(t-n)/t; else print 0 }')
cat <<MD
## shop-order: orders/s, latency, order->notification delay, RSS

Command: \`hack/bench/orders.sh\` ($PROFILE build; BENCH_ORDERS_DURATION_S=$DURATION, BENCH_ORDERS_CONNECTIONS=$CONNS;
real MariaDB 127.0.0.1:3306, real Kafka $KAFKA, FerretDB $(sed -n 's/^FERRETDB_VERSION=//p' "$ROOT/hack/versions.env") on SQLite; $(nproc) cores shared by the whole stack
and the load generator; Zipkin export $( [[ $ZIPKIN == 1 ]] && echo on || echo off )).
Each request is the original's body for one of $BENCH_SKUS SKUs: shop-order reserves it in shop-inventory over HTTP
(conditional UPDATE in MariaDB), then writes order + lines + outbox row in one transaction; the relay publishes to
Kafka with an idempotent producer; shop-notification consumes, stores in MongoDB (unique eventId) and commits.

| Measure | Value | Goal |
|---|---|---|
| whole pipeline **through the gateway** (JWT checked; shop-notification consuming on the same cores): POST /api/order | **$RPS req/s** ($REQS requests, $NON2XX non-201; $ok_rps placed/s), p50 **$P50**, p99 **$P99** | >= 2,000 orders/s, p99 <= 50 ms |
| all placed orders stored by shop-notification after that run | ${drain_s} s after the load ended | |
| whole pipeline straight at shop-order | $RPS_D req/s ($REQS_D requests, $NON2XX_D non-201), p50 $P50_D, p99 $P99_D; gateway/direct **$(ratio "$RPS" "$RPS_D")**; all stored ${drain_d} s after | |
| order path alone (shop-notification stopped), through the gateway | $RPS_GA req/s ($REQS_GA requests, $NON2XX_GA non-201), p50 $P50_GA, p99 $P99_GA; whole pipeline / alone through the gateway **$(ratio "$RPS" "$RPS_GA")** | |
| order path alone, straight at shop-order | $RPS_A req/s ($REQS_A requests, $NON2XX_A non-201), p50 $P50_A, p99 $P99_A | |
| shop-notification restarted after the alone runs: catching up on $BACKLOG orders | ${backlog_s} s (restart included) | |
| orders placed (MariaDB) / notifications stored (MongoDB, unique eventId) at the end | $FINAL_PLACED / $FINAL_NOTIFIED: $ONCE | every placed order stored once |
| socket errors (whole via gateway / alone direct) | $ERRS / $ERRS_A | |
| order->notification delay, paced $RATE orders/s (n=$D_N, missing $D_MISSING) | **p50 $D_P50 ms, p99 $D_P99 ms**, max $D_MAX ms | p99 <= 200 ms |

Where the CPU went in each load phase: per process, percent of one core over the ${DURATION} s / CPU microseconds per
order (200 % = both cores; "rest" = the machine minus the named processes: the idle kube control plane and node,
Zipkin, kernel threads; wrk is the load generator).

| phase | shop-gateway | shop-order | shop-inventory | shop-notification | mariadbd | ferretdb | Kafka | wrk | rest | machine busy |
|---|---|---|---|---|---|---|---|---|---|---|
${CPU_ROWS}
| RSS (MB) | idle (after warm-up) | peak under the whole-pipeline load | at the end |
|---|---|---|---|
| shop-inventory | $(mb "$IDLE_INV") | $(mb "$PEAK_INV") | $(mb "$AFTER_INV") |
| shop-order | $(mb "$IDLE_ORD") | $(mb "$PEAK_ORD") | $(mb "$AFTER_ORD") |
| shop-notification | $(mb "$IDLE_NOT") | $(mb "$PEAK_NOT") | $(mb "$AFTER_NOT") |

For scale: the tutorial's Spring Boot services idle at 185-567 MB RSS each (platform-reference §4).
MD
