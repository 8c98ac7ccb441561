#!/usr/bin/env bash
# `make chaos`: the full chaos soak against `make up`'s Shop. Orders through the gateway while every
# component's pod, then Kafka, MariaDB and FerretDB are killed and inventory is paused; then every
# order is checked against the stores. Writes docs/reliability.md. Arguments go to shop-chaos
# (e.g. `make chaos ARGS="--orders 2000 --faults kill:order,kill:mysql"`; `shop-chaos --help`).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

[[ -f $STATE_DIR/kubeconfig ]] || die "the platform is not up: run make up first"
kubectl --kubeconfig "$STATE_DIR/kubeconfig" get -n shop shop demo >/dev/null 2>&1 ||
  die "the example Shop shop/demo is not there: run make up first"
# The dev token is minted by the debug shop-gateway binary make up built.
# The whole workspace, as make up builds it: a subset would unify features differently and rebuild.
cargo build --locked --workspace --bins
exec target/debug/shop-chaos --report docs/reliability.md "$@"
