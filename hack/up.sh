#!/usr/bin/env bash
# `make up`: the local stack (building any missing tool), then the platform; prints the URLs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
hack/stack.sh up
hack/platform.sh up
