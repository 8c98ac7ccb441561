#!/usr/bin/env bash
# Shared helpers for the stack scripts: where caches and state live, logging, waiting, pid files.
# Sourced, never run. Everything the stack starts is tracked by a pid file under $STATE_DIR/pids,
# so `make down` stops exactly what the project started and never matches processes by name.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$ROOT_DIR/hack/versions.env"

# Built tools live outside the repo, keyed by version, so a fresh clone reuses them.
CACHE_DIR=${SHOPKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shopkeeper}
# Runtime data (databases, logs, pids, kubeconfig) lives in one gitignored folder.
STATE_DIR=${SHOPKEEPER_STATE:-$ROOT_DIR/.state}
PID_DIR=$STATE_DIR/pids
LOG_DIR=$STATE_DIR/logs
mkdir -p "$CACHE_DIR" "$STATE_DIR" "$PID_DIR" "$LOG_DIR"

export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

log() { printf '\033[1;34m[stack]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[stack] error:\033[0m %s\n' "$*" >&2; exit 1; }

# require_free_disk GIB WHAT: stops with a clear message unless the filesystem holding the repo
# has GIB GiB free. The real node's kubelet evicts pods when it falls below 512 MiB
# (evictionHard nodefs.available in node.sh): a full disk otherwise shows up as the platform's
# pods going unready in the middle of the tests, which says nothing of why.
require_free_disk() {
  local need=$1 what=$2 free mount
  free=$(df -P -BG "$ROOT_DIR" | awk 'NR == 2 { sub(/G$/, "", $4); print $4 }')
  mount=$(df -P "$ROOT_DIR" | awk 'NR == 2 { print $6 }')
  [[ $free =~ ^[0-9]+$ ]] || return 0
  (( free >= need )) || die "only $free GiB free on $mount: $what needs about $need GiB (a debug build of the workspace, the stores' data, the node's images; below 512 MiB the node evicts the platform's pods). Free some (old target/ directories, cargo clean) or set SHOP_MIN_FREE_GIB."
}

# wait_for NAME TIMEOUT_SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > timeout )); then
      log "$name did not become ready within ${timeout}s; last lines of its log:"
      tail -n 30 "$LOG_DIR/$name.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
  log "$name ready ($(( SECONDS - start ))s)"
}

# is_running NAME: true when NAME's pid file points at a live process.
is_running() {
  local f=$PID_DIR/$1.pid
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# start_bg NAME COMMAND...: starts COMMAND detached (own session), logs to $LOG_DIR/NAME.log.
start_bg() {
  local name=$1; shift
  if is_running "$name"; then log "$name already running (pid $(cat "$PID_DIR/$name.pid"))"; return 0; fi
  # A fresh log per start (the previous one is kept as .prev), so readiness checks that grep the log
  # never see a line from an earlier run.
  [[ -f $LOG_DIR/$name.log ]] && mv -f "$LOG_DIR/$name.log" "$LOG_DIR/$name.log.prev"
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$PID_DIR/$name.pid"
  log "$name started (pid $!, log $LOG_DIR/$name.log)"
}

# stop_pid NAME: SIGTERM the process group recorded for NAME, SIGKILL after 15 s.
stop_pid() {
  local name=$1 f=$PID_DIR/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop on SIGTERM; sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    log "$name stopped"
  fi
  rm -f "$f"
}
