#!/usr/bin/env bash
# Benchmark of shop-registry: 10,000 simulated instances renewing every 30 s against a real shop-registry
# process on loopback — its CPU and RSS — plus, through the runtime's own discovery client, the time until
# a new instance is visible and until a cancelled or crashed one leaves the client's view. Prints a markdown
# section on stdout; progress goes to stderr.
#
# Method: `shop-load registry` (services/load/src/registry.rs) registers N instances, then renews
# each every 30 s at the real rate (N/30 renewals per second) for BENCH_REGISTRY_REAL_S seconds while the
# probes run, then repeats the renewals 10x faster for 20 s (time compressed, and labelled so) to show
# headroom. CPU is (utime+stime) from /proc over the phase's wall time; RSS is VmRSS/VmHWM.
# Usage: hack/bench/registry.sh   (builds the release binaries of this crate; needs nothing else running)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N=${BENCH_REGISTRY_INSTANCES:-10000}
REAL_S=${BENCH_REGISTRY_REAL_S:-110}
COMPRESSED_S=${BENCH_REGISTRY_COMPRESSED_S:-20}
PROFILE=${BENCH_PROFILE:-release}
log() { printf '[bench:registry] %s\n' "$*" >&2; }

cd "$ROOT"
# shellcheck source=../bench-lib.sh
source "$ROOT/hack/bench-lib.sh"
bench_build shop-registry shop-load
PORT=$(free_port)
LOGF=$(mktemp)
REG_ARGS=(--bind 127.0.0.1 --port "$PORT" --log-format text --max-instances $((N + 100)))
"$BIN/shop-registry" "${REG_ARGS[@]}" >"$LOGF" 2>&1 &
REG_PID=$!
trap 'kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; rm -f "$LOGF"' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null || { log "shop-registry did not start"; cat "$LOGF" >&2; exit 1; }

LOAD_CMD=("$BIN/shop-load" registry --registry "http://127.0.0.1:$PORT/eureka" --pid "$REG_PID" --instances "$N"
  --renew-ms 30000 --real-secs "$REAL_S" --compress 10 --compressed-secs "$COMPRESSED_S" --fetch-secs 5 --short-lease-secs 10)
log "running ${LOAD_CMD[*]}"
TABLE=$(timeout $((REAL_S + COMPRESSED_S + 400)) "${LOAD_CMD[@]}")

cat <<MD
## shop-registry (issue 3)

Command: \`hack/bench/registry.sh\` → \`shop-registry ${REG_ARGS[*]}\` (defaults otherwise: expiry check every 5 s,
self-preservation off) driven by \`shop-load registry --instances $N --renew-ms 30000 --real-secs $REAL_S --compress 10
--compressed-secs $COMPRESSED_S --fetch-secs 5 --short-lease-secs 10\`, all on 127.0.0.1, $PROFILE build.
The client is shop_runtime's discovery client with its default 5 s refresh (full fetch). The first renewal
phase runs at the real rate ($N instances every 30 s); the second is the same load with time compressed 10×.

$TABLE

For context (not measured here; figures from the Spring Cloud / Netflix defaults in
shared/notes/platform-reference.md): Eureka makes a new instance visible after up to ~90 s ("up to 3
heartbeats") and keeps routing to a dead one for up to ~5.5 min (2×90 s lease + 60 s eviction timer + 30 s
response cache + 30 s client fetch + 35 s load-balancer cache). Compare the rows above against those.
MD
