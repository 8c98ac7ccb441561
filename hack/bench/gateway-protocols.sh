#!/usr/bin/env bash
# shop-gateway against nginx by client protocol, in one run: plain HTTP/1.1 (the reference row of
# gateway.sh, measured again here beside the others), HTTP/1.1 over TLS, HTTP/2 over TLS (ALPN h2) and
# h2c (HTTP/2 with prior knowledge on a plain port). Both proxies forward HTTP/1.1 to the same upstream
# (nginx `return 200`, 1 worker) over a keep-alive pool and terminate TLS with the same certificate
# (ECDSA P-256, TLS 1.3, made here with openssl).
#  - HTTP/1.1 rows: wrk -t2 -c64 (closed loop, after a 2 s warm-up).
#  - HTTP/2 rows: h2load -t2 -c16 -m4 (16 connections x 4 streams = 64 requests in flight, as wrk's 64
#    connections), after a 1 s warm-up; its per-request log gives p50/p99.
#  - "added p99": the proxy's p99 minus the upstream's own in the same round, with the same load tool:
#    wrk at the upstream's HTTP/1.1 port for the HTTP/1.1 rows, h2load at its h2c port for the HTTP/2 rows
#    (the proxies still forward HTTP/1.1; the h2c port only gives h2load a direct peer).
# BENCH_PROTO_ROUNDS (3) rounds with both proxies started afresh and the targets' order rotating; figures
# are medians over the rounds, the ratio is the median of the per-round ratios gateway / nginx.
# Prints a markdown section on stdout; progress on stderr. Usage: hack/bench/gateway-protocols.sh
# (BENCH_PROTO_SECS=8, BENCH_PROTO_ROUNDS=3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DUR=${BENCH_PROTO_SECS:-8}
ROUNDS=${BENCH_PROTO_ROUNDS:-3}
PROFILE=${BENCH_PROFILE:-release}
NGINX=${NGINX:-/usr/sbin/nginx}
log() { printf '[bench:protocols] %s\n' "$*" >&2; }
for t in wrk h2load openssl; do
  command -v "$t" >/dev/null || { echo "$t is not installed (make tools installs wrk and h2load)" >&2; exit 1; }
done
[[ -x $NGINX ]] || { echo "nginx is not installed at $NGINX (apt-get install nginx-light)" >&2; exit 1; }

cd "$ROOT"
# shellcheck source=../bench-lib.sh
source "$ROOT/hack/bench-lib.sh"
bench_build shop-gateway
bench_scratch

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$TMP/tls.key" -out "$TMP/tls.crt" 2>/dev/null

UP=$(free_port); NP=$(free_port "$UP"); NT=$(free_port "$UP" "$NP"); NH=$(free_port "$UP" "$NP" "$NT")
GP=$(free_port "$UP" "$NP" "$NT" "$NH"); GT=$(free_port "$UP" "$NP" "$NT" "$NH" "$GP")
UH=$(free_port "$UP" "$NP" "$NT" "$NH" "$GP" "$GT")
nginx_upstream_conf "$TMP/up" "$UP" "$UH"
# nginx: one master, 2 workers, a server per protocol (plain, TLS with h2 by ALPN, h2c), same proxying.
mkdir -p "$TMP/ng"
{
  _nginx_head "$TMP/ng" 2
  cat <<EOF
http {
  $(_nginx_http_common "$TMP/ng")
  keepalive_requests 10000000;
  upstream up { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 10000000; }
  ssl_certificate $TMP/tls.crt;
  ssl_certificate_key $TMP/tls.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:$NP; location / { include $TMP/ng/proxy.conf; } }
  server { listen 127.0.0.1:$NT ssl http2; location / { include $TMP/ng/proxy.conf; } }
  server { listen 127.0.0.1:$NH http2; location / { include $TMP/ng/proxy.conf; } }
}
EOF
} > "$TMP/ng/nginx.conf"
cat > "$TMP/ng/proxy.conf" <<'EOF'
proxy_pass http://up;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Request-Id $request_id;
EOF
gateway_bench_routes "$TMP/routes.yaml" "$UP"
start_upstream "$NGINX" "$TMP/up" "$UP"

NG_PID="" GWP_PID="" GWT_PID=""
start_proxies() {
  "$NGINX" -p "$TMP/ng" -c "$TMP/ng/nginx.conf" -e "$TMP/ng/error.log" 2>>"$TMP/ng/stderr" & PIDS+=($!)
  NG_PID=$!
  SHOP_BIND=127.0.0.1 SHOP_PORT=$GP SHOP_LOG_FORMAT=json RUST_LOG=warn \
    "$BIN/shop-gateway" --routes "$TMP/routes.yaml" >>"$TMP/gw.log" 2>&1 & PIDS+=($!)
  GWP_PID=$!
  SHOP_BIND=127.0.0.1 SHOP_PORT=$GT SHOP_LOG_FORMAT=json RUST_LOG=warn \
    SHOP_TLS_CERT_FILE="$TMP/tls.crt" SHOP_TLS_KEY_FILE="$TMP/tls.key" \
    "$BIN/shop-gateway" --routes "$TMP/routes.yaml" >>"$TMP/gwt.log" 2>&1 & PIDS+=($!)
  GWT_PID=$!
  wait_http "http://127.0.0.1:$NP/"
  wait_http "http://127.0.0.1:$GP/health/ready"
  local i
  for i in $(seq 1 100); do curl -skf -o /dev/null "https://127.0.0.1:$GT/health/ready" && break; sleep 0.1; done
  # Each target answers with the upstream's body over the protocol it is measured with.
  for u in "https://127.0.0.1:$NT/api/bench" "https://127.0.0.1:$GT/api/bench"; do
    curl -skf --http2 -o /dev/null -w '%{http_version}' "$u" | grep -qx 2 || { echo "$u does not answer over h2" >&2; exit 1; }
  done
  for u in "http://127.0.0.1:$NH/api/bench" "http://127.0.0.1:$GP/api/bench"; do
    curl -sf --http2-prior-knowledge -o /dev/null "$u" || { echo "$u does not answer over h2c" >&2; exit 1; }
  done
}
stop_proxies() {
  kill "$NG_PID" "$GWP_PID" "$GWT_PID" 2>/dev/null || true
  wait "$NG_PID" "$GWP_PID" "$GWT_PID" 2>/dev/null || true
}


# One measurement -> "req/s p50_ms p99_ms".
measure_wrk() { # url
  wrk -t2 -c64 -d2s "$1" >/dev/null 2>&1 || true
  local out; out=$(wrk -t2 -c64 -d"${DUR}s" --latency "$1")
  [[ $(awk '/Non-2xx|Socket errors/' <<<"$out") == "" ]] || log "errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"
  printf '%s %s %s' "$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
    "$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")" "$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
}
measure_h2() { # url
  local lf="$TMP/h2load.log" out
  rm -f "$lf"
  out=$(h2load -t2 -c16 -m4 --warm-up-time=1 -D "$DUR" --log-file="$lf" "$1" 2>&1)
  local failed; failed=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
  [[ ${failed:-0} == 0 ]] || log "h2load: $(grep '^requests:' <<<"$out")"
  # The log: start time, status, duration in microseconds, one line per request.
  printf '%s ' "$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' <<<"$out")"
  awk '{print $3}' "$lf" | sort -n | awk '{ v[NR] = $1 } END {
    a = int(NR * 0.50); if (a < 1) a = 1; b = int(NR * 0.99); if (b < 1) b = 1
    printf "%.3f %.3f", v[a] / 1000, v[b] / 1000 }'
}

CASES=("HTTP/1.1" "HTTPS HTTP/1.1" "HTTP/2 over TLS" "h2c")
declare -A TOOL=(["HTTP/1.1"]=wrk ["HTTPS HTTP/1.1"]=wrk ["HTTP/2 over TLS"]=h2 ["h2c"]=h2)
declare -A NURL=(["HTTP/1.1"]="http://127.0.0.1:$NP/api/bench" ["HTTPS HTTP/1.1"]="https://127.0.0.1:$NT/api/bench"
  ["HTTP/2 over TLS"]="https://127.0.0.1:$NT/api/bench" ["h2c"]="http://127.0.0.1:$NH/api/bench")
declare -A GURL=(["HTTP/1.1"]="http://127.0.0.1:$GP/api/bench" ["HTTPS HTTP/1.1"]="https://127.0.0.1:$GT/api/bench"
  ["HTTP/2 over TLS"]="https://127.0.0.1:$GT/api/bench" ["h2c"]="http://127.0.0.1:$GP/api/bench")
declare -A RPS P50 P99 ADD RATIOS
DIRECT99=() DIRECTH2=()
for r in $(seq 0 $(( ROUNDS - 1 ))); do
  start_proxies
  log "round $((r + 1))/$ROUNDS: upstream direct (HTTP/1.1, h2c)"
  read -r _ _ d99 <<<"$(measure_wrk "http://127.0.0.1:$UP/api/bench")"
  read -r _ _ h99 <<<"$(measure_h2 "http://127.0.0.1:$UH/api/bench")"
  DIRECT99+=("$d99"); DIRECTH2+=("$h99")
  for c in "${CASES[@]}"; do
    base=$d99; [[ ${TOOL[$c]} == h2 ]] && base=$h99
    declare -A got=()
    peers=(nginx gateway); (( (r + ${#c}) % 2 )) && peers=(gateway nginx)
    for p in "${peers[@]}"; do
      url=${NURL[$c]}; [[ $p == gateway ]] && url=${GURL[$c]}
      log "round $((r + 1))/$ROUNDS: $c $p"
      if [[ ${TOOL[$c]} == wrk ]]; then m=$(measure_wrk "$url"); else m=$(measure_h2 "$url"); fi
      read -r rps p50 p99 <<<"$m"
      got[$p]=$rps
      RPS["$c/$p"]+="$rps "; P50["$c/$p"]+="$p50 "; P99["$c/$p"]+="$p99 "
      ADD["$c/$p"]+="$(awk -v a="$p99" -v b="$base" 'BEGIN {printf "%.3f", a-b}') "
    done
    RATIOS[$c]+="$(awk -v g="${got[gateway]}" -v n="${got[nginx]}" 'BEGIN {printf "%.2f", (n > 0 ? g/n : 0)}') "
  done
  stop_proxies
done

cat <<EOF
## shop-gateway vs nginx by client protocol (HTTPS, HTTP/2, h2c)

Command: \`hack/bench/gateway-protocols.sh\` (BENCH_PROTO_SECS=$DUR, BENCH_PROTO_ROUNDS=$ROUNDS). Both proxies: 2 workers,
HTTP/1.1 keep-alive pool to the same upstream (nginx \`return 200\`, 1 worker); TLS 1.3 with the same ECDSA P-256
certificate. HTTP/1.1 rows: \`wrk -t2 -c64 -d${DUR}s\`; HTTP/2 rows: \`h2load -t2 -c16 -m4 -D $DUR\` (64 requests in flight
either way). shop-gateway: $PROFILE build, one process on a plain port (HTTP/1.1 and h2c) and one with TLS. Medians
over $ROUNDS rounds with fresh proxies; "added p99" = the proxy's p99 minus the upstream's own in the same round with the
same tool (upstream p99 per round: wrk ${DIRECT99[*]} ms; h2load at its h2c port ${DIRECTH2[*]} ms). Load tools,
upstream and proxies share the same $(nproc) cores.

| protocol | nginx req/s | shop-gateway req/s | gateway / nginx (per round) | nginx p50 / p99 ms | gateway p50 / p99 ms | added p99 ms nginx / gateway |
|---|---|---|---|---|---|---|
EOF
# shellcheck disable=SC2086 # per-round lists, split on purpose
for c in "${CASES[@]}"; do
  printf '| %s | %s | %s | **%s** (%s) | %s / %s | %s / %s | %s / %s |\n' "$c" \
    "$(median ${RPS["$c/nginx"]})" "$(median ${RPS["$c/gateway"]})" "$(median ${RATIOS[$c]})" "${RATIOS[$c]% }" \
    "$(median ${P50["$c/nginx"]})" "$(median ${P99["$c/nginx"]})" \
    "$(median ${P50["$c/gateway"]})" "$(median ${P99["$c/gateway"]})" \
    "$(median ${ADD["$c/nginx"]})" "$(median ${ADD["$c/gateway"]})"
done
echo
log "done"
