#!/usr/bin/env bash
# `make test`: builds/starts whatever of the stack is missing (the real node included), lints, builds every
# binary, brings the platform up as pods, runs every test.
# Servers this script started are stopped at the end; servers that were already up are left alone.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

started_here=()
for n in mariadb mongo kafka zipkin etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  is_running "$n" || started_here+=("$n")
done
node_started_here=
is_running kubelet || node_started_here=1
cleanup() {
  local rc=$?
  if [[ -n $node_started_here ]]; then
    log "stopping the node make test started"
    hack/node.sh down
  fi
  if ((${#started_here[@]})); then
    log "stopping what make test started: ${started_here[*]}"
    local i
    for (( i=${#started_here[@]}-1; i>=0; i-- )); do stop_pid "${started_here[$i]}"; done
  fi
  # Why the platform did not come up, once more as the last lines: CI shows the end of the output.
  if (( rc != 0 )) && [[ -s $STATE_DIR/platform-failure.txt ]]; then
    log "the platform did not come up:"
    cat "$STATE_DIR/platform-failure.txt" >&2
  fi
  # Which tests failed and why, once more as the last lines: cargo prints each failure's output
  # next to its own test binary, often far above the end of a long run.
  if (( rc != 0 )) && [[ -s $STATE_DIR/test-output.txt ]]; then
    failure_summary "$STATE_DIR/test-output.txt" >&2
  fi
  exit $rc
}
trap cleanup EXIT

# The `---- name stdout ----` sections of a cargo test log (their first 12 non-blank lines, kept
# short: CI keeps only the end of the output), each under the test binary it came from.
failure_summary() {
  awk '
    /^ *Running / { bin = $2; if (match($0, /deps\/[^)]*/)) bin = bin " (" substr($0, RSTART + 5, RLENGTH - 5) ")" }
    /^---- .* stdout ----$/ { if (!shown) print "\n=== failed tests (details above) ==="; shown = 1
                              print "--- " bin ": " $2; n = 0; grab = 1; next }
    /^failures:$/ { grab = 0 }
    /^note: run with `RUST_BACKTRACE/ || /^ *$/ { next }
    grab && n < 12 { print; n++ }
  ' "$1"
}

require_free_disk "${SHOP_MIN_FREE_GIB:-12}" "make test"
t0=$SECONDS
hack/stack.sh up
log "stack ready after $(( SECONDS - t0 ))s"

if [[ -z ${SHOP_SKIP_LINT:-} ]]; then
  cargo fmt --all -- --check || die "cargo fmt --check failed: run make fmt"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  "$STATE_DIR/bin/helm" lint charts/shopkeeper
fi
cargo build --workspace --bins --locked
# The platform as pods on the real node (operator by Helm, the example Shop): the real-node tests
# in tests/e2e/tests/real_node*.rs run against it.
hack/platform.sh up
hack/tools.sh chromium  # the headless browser tests/e2e/tests/storefront.rs drives (Debian's chromium + chromedriver)
hack/tools.sh spring  # the real Spring clients tests/e2e/tests/spring_clients.rs runs (built once per source hash)
hack/tools.sh schemathesis >/dev/null  # the API fuzzer tests/e2e/tests/fuzz.rs runs (a venv, once per version)
rm -f "$STATE_DIR/test-output.txt"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${SHOP_TEST_THREADS:-4}" 2>&1 |
  tee "$STATE_DIR/test-output.txt"
log "make test finished in $(( SECONDS - t0 ))s"
