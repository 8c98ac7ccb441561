#!/usr/bin/env bash
# A short A/B probe of the order path alone (the quick runs in docs/benchmarks.md "Orders"): starts release
# shop-inventory + shop-order on fresh databases, seeds $SKUS SKUs, runs wrk with hack/bench/orders.lua and prints
# wrk's summary plus the group-commit histograms (requests per transaction) of both services. No shop-notification:
# the events wait in Kafka. Compare configurations by passing env to either service:
#   hack/order-probe.sh                                   # defaults
#   EXTRA_ORD="ORDER_RESERVE_BATCH_MAX=1" hack/order-probe.sh   # one HTTP call per reservation
#   EXTRA_INV="RESERVE_BATCH_MAX=1" EXTRA_ORD="ORDER_WRITE_BATCH_MAX=1 ORDER_RESERVE_BATCH_MAX=1" hack/order-probe.sh
# Knobs: D (seconds, 10), C (connections, 32), SKUS (20). Needs `make up` (or `hack/stack.sh up data`) and
# `cargo build --release -p shop-inventory -p shop-order`. Run the configurations interleaved: this machine is noisy.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
D=${D:-10}; C=${C:-32}; SKUS=${SKUS:-20}
EXTRA_INV=${EXTRA_INV:-}; EXTRA_ORD=${EXTRA_ORD:-}
MYSQL=${SHOP_TEST_MYSQL_URL:-mysql://shop:shop@127.0.0.1:3306}
for b in shop-inventory shop-order; do [[ -x $BIN/$b ]] || { echo "$BIN/$b missing: cargo build --release -p $b" >&2; exit 1; }; done
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }
# shellcheck source=bench-lib.sh
source "$ROOT/hack/bench-lib.sh"
S=$(date +%s)_$$
mysql -h127.0.0.1 -P3306 -ushop -pshop -e "CREATE DATABASE probe_inv_$S; CREATE DATABASE probe_ord_$S;" 2>/dev/null
IP=$(free_port); OP=$(free_port "$IP")
LOGS=$(mktemp -d /tmp/order-probe.XXXXXX)
trap bench_cleanup EXIT
# shellcheck disable=SC2086 # EXTRA_* are lists of VAR=value words
env SHOP_BIND=127.0.0.1 RUST_LOG=warn SHOP_LOG_FORMAT=json SHOP_PORT=$IP DATABASE_URL=$MYSQL/probe_inv_$S \
  DATABASE_MAX_CONNECTIONS=32 $EXTRA_INV "$BIN/shop-inventory" >"$LOGS/inventory.log" 2>&1 &
PIDS+=($!)
# shellcheck disable=SC2086
env SHOP_BIND=127.0.0.1 RUST_LOG=warn SHOP_LOG_FORMAT=json SHOP_PORT=$OP DATABASE_URL=$MYSQL/probe_ord_$S \
  DATABASE_MAX_CONNECTIONS=32 SHOP_DNS_PATTERN=http://127.0.0.1:$IP ORDER_TOPIC=probe-$S $EXTRA_ORD \
  "$BIN/shop-order" >"$LOGS/order.log" 2>&1 &
PIDS+=($!)
for p in $IP $OP; do
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$p/health/ready" && break; sleep 0.2; done
  curl -fs -o /dev/null "http://127.0.0.1:$p/health/ready" || { echo "service on :$p not ready; logs in $LOGS" >&2; exit 1; }
done
for i in $(seq 0 $((SKUS - 1))); do
  curl -fsS -o /dev/null -X PUT "http://127.0.0.1:$IP/api/inventory/bench-sku-$i" -H 'content-type: application/json' -d '{"quantity":1000000000}'
done
export BENCH_SKUS=$SKUS
wrk -t1 -c4 -d2s -s hack/bench/orders.lua "http://127.0.0.1:$OP" >/dev/null
wrk -t2 -c"$C" -d"${D}s" --latency -s hack/bench/orders.lua "http://127.0.0.1:$OP" | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors"
curl -fsS "http://127.0.0.1:$IP/metrics" | grep -E "^inventory_reservation_batch_size_(sum|count)"
curl -fsS "http://127.0.0.1:$OP/metrics" | grep -E "^order_write_batch_size_(sum|count)"
