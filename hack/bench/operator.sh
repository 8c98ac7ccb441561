#!/usr/bin/env bash
# Operator benchmark (collected by hack/bench.sh into docs/benchmarks.md): apply→children time for 1 and
# 100 Shops, operator RSS at 100 Shops, writes per minute at steady state. Needs the local stack
# (hack/stack.sh up) and the release operator binary; SHOP_BENCH_SHOPS / SHOP_BENCH_STEADY_SECS shrink it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[[ -x target/release/shop-operator ]] || cargo build --release --locked -p shop-operator --bin shop-operator >&2
exec python3 hack/bench/operator.py
