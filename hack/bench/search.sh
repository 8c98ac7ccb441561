#!/usr/bin/env bash
# Benchmark of the catalog search (`GET /api/product?q=&minPrice=&maxPrice=`) at BENCH_SEARCH_PRODUCTS
# (100,000) products on the real FerretDB, against the original's exact-name filter (`?name=`, answered
# by MongoDB) on the same data in the same run. Prints a markdown section on stdout; progress on stderr.
#
# Phases (bounded; loopback only):
#   1. seed: a fresh database; wrk -t2 -c8 creates exactly N products through POST /api/product
#      (hack/bench/search-seed.lua: names and descriptions from a 170-word vocabulary);
#   2. restart: shop-product starts again on that database; the time its search index takes to build
#      from the collection (its log line) and the RSS before and after;
#   3. queries: wrk -t1 -c4 for D s each: search (one or two words, a price range on every third),
#      then the name filter (names that exist), then search again; req/s, p50, p99.
# Usage: hack/bench/search.sh   (needs `make up`; builds the release shop-product unless BENCH_SKIP_BUILD=1)
# Knobs: BENCH_SEARCH_PRODUCTS (100000), BENCH_SEARCH_SECS (10), BENCH_SEARCH_NAME_SECS (60: the name filter,
#        one connection), BENCH_SEARCH_DB (reuse a database an earlier run seeded), BENCH_PROFILE (release).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N=${BENCH_SEARCH_PRODUCTS:-100000}
SECS=${BENCH_SEARCH_SECS:-10}
NAME_SECS=${BENCH_SEARCH_NAME_SECS:-60}
PROFILE=${BENCH_PROFILE:-release}
MONGO=${SHOP_TEST_MONGODB_URL:-mongodb://127.0.0.1:27017/?directConnection=true}
log() { printf '[bench:search] %s\n' "$*" >&2; }

(exec 3<>/dev/tcp/127.0.0.1/27017) 2>/dev/null || { echo "MongoDB (FerretDB) 127.0.0.1:27017 not reachable: start the stack with \`make up\`" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

cd "$ROOT"
# shellcheck source=../bench-lib.sh
source "$ROOT/hack/bench-lib.sh"
bench_build shop-product
bench_scratch
DB=bench-search-$(date +%s)-$$
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
PID=""
start_product() {
  SHOP_BIND=127.0.0.1 SHOP_PORT=$PORT SHOP_LOG_FORMAT=json RUST_LOG=info SHOP_MONGO_URL=$MONGO SHOP_MONGO_DB=$DB \
    SHOP_DNS_PATTERN=http://127.0.0.1:1 "$BIN/shop-product" >"$TMP/product.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  wait_http "$URL/health/ready" 300
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
total() { curl -fsS -o /dev/null -D - "$URL/api/product?size=1&$1" | awk -F': ' 'tolower($1)=="x-total-count" {gsub("\r","",$2); print $2}'; }

if [[ -n ${BENCH_SEARCH_DB:-} ]]; then
  # A database an earlier run seeded (its name is in that run's log): the seeding is skipped.
  DB=$BENCH_SEARCH_DB
  log "reusing database $DB (no seeding)"
  start_product
  RSS_EMPTY="-"; RSS_SEEDED="-"; seed_s="-"
else
start_product
RSS_EMPTY=$(rss_mb "$PID")
log "seeding $N products through POST /api/product (wrk -t2 -c8)"
seed_start=$(date +%s%N)
# wrk runs for its whole -d even when every thread has stopped itself, so it runs in the background and
# is stopped once N products were created or none was for 10 s (bounded by 900 s in all). Progress is
# read from shop-product's log, not from a count: a count is a collection scan on FerretDB.
SEED_PRODUCTS=$N SEED_THREADS=2 wrk -t2 -c8 -d900s --timeout 10s -s hack/bench/search-seed.lua "$URL" > "$TMP/seed.txt" 2>&1 &
SEED_PID=$!; PIDS+=("$SEED_PID")
last=-1; still=0
while kill -0 "$SEED_PID" 2>/dev/null; do
  sleep 1
  now=$(grep -c 'product created' "$TMP/product.log" || true)
  (( now >= N )) && break
  if (( now == last )); then still=$((still + 1)); else still=0; last=$now; fi
  (( still >= 10 )) && break
done
kill "$SEED_PID" 2>/dev/null || true; wait "$SEED_PID" 2>/dev/null || true
seed_s=$(awk -v a="$seed_start" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')
STORED=$(total "")
# Made up one by one, bounded: POSTs lost to a client timeout (wrk gives no callback for them) and the
# one wrk never sends (it calls request() once on the first thread to verify the script).
missing=$(( N - STORED ))
if (( missing > 0 && missing <= 1000 )); then
  log "topping up $missing products wrk did not send or lost"
  for i in $(seq 1 "$missing"); do
    curl -fsS -o /dev/null -XPOST "$URL/api/product" -H 'content-type: application/json' \
      -d "{\"name\":\"steel lamp\",\"description\":\"top up $i\",\"price\":\"120.00\",\"skuCode\":\"seed-top-$i\"}"
  done
  STORED=$(total "")
fi
[[ $STORED == "$N" ]] || { echo "seeding stored $STORED products, not $N (wrk: $(tail -n 3 "$TMP/seed.txt"))" >&2; exit 1; }
RSS_SEEDED=$(rss_mb "$PID")
log "database $DB holds the $N products (BENCH_SEARCH_DB=$DB reuses it)"
fi

log "restarting shop-product on the $N products: building the index from the collection"
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
start_product
# (start_product truncated the log: the line below is this process's build, not the first start's)
for _ in $(seq 1 1500); do grep -q 'catalog search index built' "$TMP/product.log" && break; sleep 0.2; done
BUILD_LINE=$(grep 'catalog search index built' "$TMP/product.log" | tail -n1)
BUILD_MS=$(grep -o '"took_ms":[0-9]*' <<<"$BUILD_LINE" | grep -o '[0-9]*$')
BUILD_N=$(grep -o '"products":[0-9]*' <<<"$BUILD_LINE" | grep -o '[0-9]*$')
sleep 1
RSS_INDEXED=$(rss_mb "$PID")

# The original's plain list (page 0 with the total) and exact-name filter are answered by FerretDB;
# one request of each, timed (they read the whole collection).
LIST_S=$(curl -fsS -o /dev/null -w '%{time_total}' "$URL/api/product")
# Names that exist, for the name filter (taken from a search page).
NAMES=$(curl -fsS "$URL/api/product?q=lamp&size=50" | grep -o '"name":"[^"]*"' | cut -d'"' -f4 | head -n 20 | paste -sd, -)
WORDS_TOTAL=$(total "q=phone")
RANGE_TOTAL=$(total "q=lamp&minPrice=100&maxPrice=250")

# query KIND -> "rps p50 p99 requests non2xx"
query() {
  local out
  # The name filter reads the whole collection per request: one connection, a longer run and timeout.
  local conns=4 secs=$SECS
  [[ $1 == name ]] && conns=1 secs=$NAME_SECS
  out=$(QUERY_KIND=$1 QUERY_NAMES=$NAMES wrk -t1 -c"$conns" -d"${secs}s" --timeout 90s --latency -s hack/bench/search-query.lua "$URL" 2>&1)
  echo "$out" > "$TMP/wrk-$1-$2.txt"
  awk '/Requests\/sec/ {r=$2} $1=="50%" {a=$2} $1=="99%" {b=$2} /requests in/ {n=$1} /Non-2xx/ {x=$NF}
       END {print r, a, b, n, (x==""?0:x)}' <<<"$out"
}
log "queries: search, name filter, search (wrk -t1 -c4, ${SECS}s each)"
read -r S1_RPS S1_P50 S1_P99 S1_N S1_X < <(query search 1)
read -r NM_RPS NM_P50 NM_P99 NM_N NM_X < <(query name 1)
read -r S2_RPS S2_P50 S2_P99 S2_N S2_X < <(query search 2)
ratio=$(awk -v a="$S1_RPS" -v b="$S2_RPS" -v c="$NM_RPS" 'BEGIN{ if (c > 0) printf "%.0f", (a + b) / 2 / c; else print "n/a" }')

cat <<MD
## Catalog search at $N products

Command: \`hack/bench/search.sh\` ($PROFILE build, BENCH_SEARCH_PRODUCTS=$N, BENCH_SEARCH_SECS=$SECS; real FerretDB
v1.24.2 on SQLite at 127.0.0.1:27017; $(nproc) cores shared with the whole stack and wrk). Products come from a
170-word vocabulary (hack/bench/search-seed.lua): \`q=phone\` matches $WORDS_TOTAL of them, \`q=lamp&minPrice=100&maxPrice=250\`
$RANGE_TOTAL. The search is answered by shop-product's in-memory index and reads back only the page (20 products, each
by \`_id\`); the original's \`?name=\` filter is answered by FerretDB, which reads every document for any filter but
\`{_id: v}\`.

| Measure | Value |
|---|---|
| seeding $N products through POST /api/product (wrk -t2 -c8) | ${seed_s} s$( [[ $seed_s == - ]] && echo " (reused database $DB)" || awk -v n="$N" -v s="$seed_s" 'BEGIN{printf " (%.0f products/s)", n/s}') |
| index build at start, from the collection | **${BUILD_MS} ms** for ${BUILD_N} products |
| shop-product RSS: empty / after seeding / restarted with the index built | $RSS_EMPTY / $RSS_SEEDED / $RSS_INDEXED MB |
| search (\`q=\` one or two words, a price range on every third), wrk -t1 -c4 ${SECS}s, run 1 | **$S1_RPS req/s**, p50 $S1_P50, p99 **$S1_P99** ($S1_N requests, $S1_X non-2xx) |
| the original's exact-name filter (\`?name=\`, existing names), wrk -t1 -c1 ${NAME_SECS}s | $NM_RPS req/s, p50 $NM_P50, p99 $NM_P99 ($NM_N requests, $NM_X non-2xx) |
| the original's plain list (\`GET /api/product\`: page 0 and the total), one request | ${LIST_S} s |
| search, run 2 | $S2_RPS req/s, p50 $S2_P50, p99 $S2_P99 ($S2_N requests, $S2_X non-2xx) |
| search / name filter throughput | **${ratio}x** |
MD
