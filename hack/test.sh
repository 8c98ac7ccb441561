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
  exit $rc
}
trap cleanup EXIT

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
hack/tools.sh spring  # the real Spring clients tests/e2e/tests/spring_clients.rs runs (built once per source hash)
cargo test --workspace --locked --no-fail-fast -- --test-threads="${SHOP_TEST_THREADS:-4}"
log "make test finished in $(( SECONDS - t0 ))s"
