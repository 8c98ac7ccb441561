#!/usr/bin/env bash
# Image sizes for `make bench` (docs/benchmarks.md, "Images"): the release images hack/images.sh builds for
# the real node, measured from their OCI archives. Prints a markdown section on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
"$ROOT_DIR/hack/images.sh" build release >&2
cat <<MD
## Images (\`hack/images.sh build release && hack/images.sh sizes\`, $(date -u +%Y-%m-%dT%H:%MZ))
One OCI archive per image, built without Docker (umoci + skopeo) from the release binaries: the binary (debug info
stripped), exactly the shared libraries \`ldd\` lists for it, CA certificates, passwd/group with nonroot 65532,
\`/tmp\`; no shell. The same content as the runtime stage of \`docker/*.Dockerfile\` (tests/e2e/tests/images.rs).
"archive" is what \`ctr images import\` reads, "unpacked" what the node's snapshot holds.

MD
"$ROOT_DIR/hack/images.sh" sizes
echo
