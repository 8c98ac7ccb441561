#!/usr/bin/env bash
# `make fuzz`: every JSON endpoint of every service fuzzed from its OpenAPI document by schemathesis,
# directly and through the gateway, with many more examples than the bounded run `make test` does
# (tests/e2e/tests/fuzz.rs; the same test, bigger numbers). Writes the counts (cases per service
# and per route, failures found) into docs/reliability.md between the fuzz markers.
# Needs the local stack (MariaDB, FerretDB, Kafka, Zipkin: `make up` or `hack/stack.sh up`); the
# test fails, naming what is missing, without it.
#   SHOP_FUZZ_EXAMPLES  examples per operation and phase (default 100)
#   SHOP_FUZZ_SEED      schemathesis seed (default: a new one each run, printed and written down)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

hack/tools.sh schemathesis >/dev/null
cargo build --workspace --bins --locked
export SHOP_FUZZ_EXAMPLES=${SHOP_FUZZ_EXAMPLES:-100}
export SHOP_FUZZ_SEED=${SHOP_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
export SHOP_FUZZ_REPORT=$ROOT_DIR/docs/reliability.md
# A long run: each schemathesis run may take up to an hour.
export SHOP_FUZZ_TARGET_TIMEOUT_SECS=${SHOP_FUZZ_TARGET_TIMEOUT_SECS:-3600}
log "fuzzing with $SHOP_FUZZ_EXAMPLES examples per operation and phase, seed $SHOP_FUZZ_SEED"
cargo test --locked -p shop-e2e --test fuzz -- --nocapture
