#!/usr/bin/env bash
# Shared helpers for the benchmark scripts (hack/bench/*.sh, hack/order-probe.sh): free loopback ports,
# waiting for HTTP, cleaning up what a script started, and the nginx peers the gateway is measured against.
# Sourced, never run (it lives outside hack/bench/ because `make bench` runs every script in there).

# Processes the script started (append with `PIDS+=($!)`), stopped by `bench_cleanup`.
PIDS=()
# bench_scratch: a scratch folder in TMP, removed (and the processes in PIDS stopped) when the script exits.
bench_scratch() {
  _BENCH_SCRATCH=$(mktemp -d)
  TMP=$_BENCH_SCRATCH
  trap bench_cleanup EXIT
}
bench_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -z ${_BENCH_SCRATCH:-} ]] || rm -rf "$_BENCH_SCRATCH"
}

# bench_build PACKAGE...: builds the binaries of the packages in $PROFILE (release unless BENCH_PROFILE
# says otherwise) unless BENCH_SKIP_BUILD or BENCH_NO_BUILD=1 says they are built already (make bench
# builds the workspace first); sets BIN to the folder they are in.
bench_build() {
  local pkgs=() p
  for p in "$@"; do pkgs+=(-p "$p"); done
  if [[ -n ${BENCH_SKIP_BUILD:-} || ${BENCH_NO_BUILD:-0} == 1 ]]; then
    : # binaries already built
  elif [[ ${PROFILE:-release} == release ]]; then
    cargo build -q --release "${pkgs[@]}" --bins >&2
  else
    cargo build -q "${pkgs[@]}" --bins >&2
  fi
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/${PROFILE:-release}
}

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

# wait_http URL [TRIES]: polls URL every 0.1 s until it answers 2xx (100 tries by default).
wait_http() {
  local i
  for i in $(seq 1 "${2:-100}"); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 did not come up" >&2; return 1
}

# Figures of wrk runs: latencies in ms, medians over rounds.
to_ms() { # wrk latency value like 812.00us / 1.20ms / 2.01s -> ms
  awk -v v="$1" 'BEGIN { n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
    if (u=="us") n/=1000; else if (u=="s") n*=1000; printf "%.3f", n }'
}
median() { # numbers... -> the median (the lower middle one for an even count)
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%s", v[int((NR + 1) / 2)] }'
}

# The gateway benchmarks' peers, all nginx, each in its own folder DIR (nginx.conf, logs, temp paths).
_nginx_head() { # dir workers -> the top of an nginx.conf
  cat <<EOF
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
_nginx_http_common() { # dir
  echo "access_log off; client_body_temp_path $1/cb; proxy_temp_path $1/pt; fastcgi_temp_path $1/ft; uwsgi_temp_path $1/ut; scgi_temp_path $1/st;"
}

# nginx_upstream_conf DIR PORT [H2C_PORT]: the upstream both proxies forward to, one worker answering
# `return 200`; with H2C_PORT the same answer over h2c there too (the direct peer of HTTP/2 loads).
nginx_upstream_conf() {
  mkdir -p "$1"
  local answer='location / { default_type text/plain; return 200 "hello from the upstream\n"; }' h2c=""
  [[ -z ${3:-} ]] || h2c="server { listen 127.0.0.1:$3 http2; $answer }"
  {
    _nginx_head "$1" 1
    cat <<EOF
http {
  $(_nginx_http_common "$1")
  keepalive_requests 10000000;
  server { listen 127.0.0.1:$2; $answer }
  $h2c
}
EOF
  } > "$1/nginx.conf"
}

# nginx_proxy_conf DIR PORT UPSTREAM_PORT WORKERS [DIRECTIVE...]: nginx as the gateway's peer, a reverse
# proxy with an upstream keep-alive pool, setting X-Forwarded-For and X-Request-Id as the gateway does.
# Extra top-level directives (e.g. `master_process off;`) follow.
nginx_proxy_conf() {
  local dir=$1 port=$2 up=$3 workers=$4; shift 4
  mkdir -p "$dir"
  {
    _nginx_head "$dir" "$workers"
    printf '%s\n' "$@"
    cat <<EOF
http {
  $(_nginx_http_common "$dir")
  keepalive_requests 10000000;
  upstream up { server 127.0.0.1:$up; keepalive 256; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$port;
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
  } > "$dir/nginx.conf"
}

# gateway_bench_routes FILE UPSTREAM_PORT: shop-gateway's routes for the same exchange (one public static
# route; rate limiting off, since a per-IP limit would turn the load into 429s).
gateway_bench_routes() {
  cat > "$1" <<EOF
routes:
  - {id: bench, prefix: /, upstreams: ["http://127.0.0.1:$2"], auth: public}
rate_limit: {enabled: false}
EOF
}

# start_upstream NGINX DIR PORT: starts the upstream (PIDS, UP_PID) and waits for it; on failure its logs
# say why (once, a run stopped here without a word).
start_upstream() {
  "$1" -p "$2" -c "$2/nginx.conf" -e "$2/error.log" 2>"$2/stderr" & PIDS+=($!)
  UP_PID=$!
  wait_http "http://127.0.0.1:$3/" || { tail -n 5 "$2/stderr" "$2/error.log" >&2 || true; exit 1; }
}
