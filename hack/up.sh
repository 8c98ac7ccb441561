#!/usr/bin/env bash
# `make up`: the local stack (building any missing tool), then the platform; prints the URLs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source hack/lib.sh
require_free_disk "${SHOP_MIN_FREE_GIB:-8}" "make up"
hack/stack.sh up
hack/platform.sh up
