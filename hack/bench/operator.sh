#!/usr/bin/env bash
# Operator benchmark (collected by hack/bench.sh into docs/benchmarks.md): apply→children time for 1 and
# 100 Shops, operator RSS at 100 Shops, writes per minute at steady state. Needs the local stack
# (hack/stack.sh up); builds the release operator and the driver (operator/src/bin/operator-bench.rs) when
# missing. SHOP_BENCH_SHOPS / SHOP_BENCH_STEADY_SECS shrink it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[[ -x target/release/shop-operator && -x target/release/operator-bench ]] \
  || cargo build --release --locked -p shop-operator --bin shop-operator --bin operator-bench >&2
exec target/release/operator-bench
