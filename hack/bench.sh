#!/usr/bin/env bash
# `make bench`: release builds, the real stack, then every hack/bench/*.sh in turn. Each script prints a
# markdown section (the command it ran, the figures, ratios against a peer measured in the same run);
# they are collected into docs/benchmarks.md. Load goes to loopback only and every loop is bounded.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

hack/stack.sh up >/dev/null
cargo build --release --workspace --bins --locked
out=docs/benchmarks.md
tmp=$(mktemp)
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`make bench\` (hack/bench.sh → hack/bench/*.sh) on $(date -u +%Y-%m-%dT%H:%MZ),"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB,"
  echo "release builds, the real local stack on loopback. These machines are noisy: read the ratios against the peer"
  echo "measured in the same run, not the absolute numbers."
  echo
} > "$tmp"
status=0
for b in hack/bench/*.sh; do
  [[ -e $b ]] || continue
  log "running $b"
  if ! bash "$b" >> "$tmp" 2>"$LOG_DIR/bench-$(basename "$b" .sh).log"; then
    status=1
    printf '\n## %s\n\nFAILED — see %s\n\n' "$(basename "$b")" "$LOG_DIR/bench-$(basename "$b" .sh).log" >> "$tmp"
  fi
done
mv "$tmp" "$out"
log "wrote $out"
exit $status
