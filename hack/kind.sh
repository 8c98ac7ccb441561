#!/usr/bin/env bash
# The kind path (needs Docker, kind, kubectl and helm; it cannot run on the project's CI machines,
# which have no Docker engine and cannot fetch kind's node image). Usage: hack/kind.sh SUBCOMMAND
#   up       create the cluster from kind-config.yaml (host ports 8080 and 8761)
#   images   build the operator and the six service images with Docker and load them into the cluster
#   install  helm install the operator chart (CRD included) into shopkeeper-system, with the loaded image
#   shop     namespace shop (restricted Pod Security), examples/kind/shop.yaml (its stores are managed and
#            pull the CRD's public default images), then wait until the Shop is Available
#   all      the four above in order;  down: delete the cluster
#   plan     print what images/install/shop would do, one line each, without running anything:
#              image <reference>          built and loaded by `images`
#              helm <argument>            the arguments of `install`'s helm command
#              apply <file>               applied by `shop` into namespace shop
#            tests/e2e/tests/kind_path.rs checks the plan against the objects it applies.
# Make targets: kind-up, kind-images, kind-install, kind-shop, kind-down. See docs/operator.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=${KIND_CLUSTER:-shopkeeper}
REPO=${SHOP_IMAGE_REPO:-shopkeeper.local}
TAG=${SHOP_IMAGE_TAG:-dev}
HELM=${HELM:-helm}
CONTEXT=kind-$CLUSTER
COMPONENTS=(registry gateway product inventory order notification)
SHOP_NS=shop
SHOP_FILE=examples/kind/shop.yaml
# A first start pulls four store images and initialises them: minutes.
SHOP_TIMEOUT=${SHOP_TIMEOUT:-600}

need() { command -v "$1" >/dev/null || { echo "hack/kind.sh: $1 is required (${2})" >&2; exit 1; }; }

# Every image `images` builds and loads: reference, then the docker build arguments. The one list
# `images` and `plan` read.
image_builds() {
  printf '%s\t%s\n' "$REPO/shop-operator:$TAG" "-f docker/operator.Dockerfile"
  local c
  for c in "${COMPONENTS[@]}"; do
    printf '%s\t%s\n' "$REPO/shop-$c:$TAG" "-f docker/service.Dockerfile --build-arg PACKAGE=shop-$c --build-arg BIN=shop-$c"
  done
}

# The arguments of `install`'s helm command (the operator image is the one `images` loaded).
helm_args() {
  HELM_ARGS=(upgrade --install shopkeeper charts/shopkeeper --kube-context "$CONTEXT"
    --namespace shopkeeper-system --create-namespace
    --set "image.repository=$REPO/shop-operator" --set "image.tag=$TAG" --set image.pullPolicy=Never
    --wait --timeout 300s)
}

up() {
  need kind "https://kind.sigs.k8s.io"; need docker "a running Docker engine"
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config kind-config.yaml
  kubectl cluster-info --context "$CONTEXT"
}

images() {
  need docker "a running Docker engine"; need kind "https://kind.sigs.k8s.io"
  export DOCKER_BUILDKIT=1
  local ref args refs=()
  while IFS=$'\t' read -r ref args; do
    # shellcheck disable=SC2086 # args is a word list by construction
    docker build $args -t "$ref" .
    refs+=("$ref")
  done < <(image_builds)
  kind load docker-image --name "$CLUSTER" "${refs[@]}"
}

install() {
  need "$HELM" "helm 3"
  helm_args
  "$HELM" "${HELM_ARGS[@]}"
}

# The Shop file names its components' images; loaded images with another repository or tag
# (SHOP_IMAGE_REPO/SHOP_IMAGE_TAG) would leave its pods waiting for images nobody loaded.
check_shop_images() {
  grep -qx "    repository: $REPO" "$SHOP_FILE" && grep -qx "    tag: $TAG" "$SHOP_FILE" || {
    echo "hack/kind.sh: $SHOP_FILE's spec.image is not $REPO with tag $TAG, the images 'images' loads;" \
      "edit spec.image there or unset SHOP_IMAGE_REPO/SHOP_IMAGE_TAG" >&2
    exit 1
  }
}

shop() {
  need kubectl "kubectl"
  check_shop_images
  local k=(kubectl --context "$CONTEXT") start=$SECONDS phase=
  "${k[@]}" create namespace "$SHOP_NS" --dry-run=client -o yaml | "${k[@]}" apply -f -
  "${k[@]}" label namespace "$SHOP_NS" --overwrite \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest
  "${k[@]}" apply -n "$SHOP_NS" -f "$SHOP_FILE"
  until [[ $phase == Available ]]; do
    (( SECONDS - start < SHOP_TIMEOUT )) || {
      "${k[@]}" get pods -n "$SHOP_NS" >&2
      "${k[@]}" get shop -n "$SHOP_NS" demo -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
      echo "hack/kind.sh: Shop $SHOP_NS/demo not Available within ${SHOP_TIMEOUT}s" >&2; exit 1; }
    sleep 10
    phase=$("${k[@]}" get shop -n "$SHOP_NS" demo -o jsonpath='{.status.phase}' 2>/dev/null || true)
    echo "Shop $SHOP_NS/demo after $(( SECONDS - start ))s: ${phase:-no status yet} $("${k[@]}" get shop -n "$SHOP_NS" demo -o jsonpath='{.status.readyComponents}' 2>/dev/null || true)"
  done
  echo "gateway http://127.0.0.1:8080  registry http://127.0.0.1:8761  zipkin: kubectl port-forward -n $SHOP_NS svc/demo-zipkin 9411"
}

plan() {
  check_shop_images
  local ref _ a
  while IFS=$'\t' read -r ref _; do echo "image $ref"; done < <(image_builds)
  helm_args
  for a in "${HELM_ARGS[@]}"; do echo "helm $a"; done
  echo "apply $SHOP_FILE"
}

down() { kind delete cluster --name "$CLUSTER"; }

case "${1:-}" in
  up) up ;; images) images ;; install) install ;; shop) shop ;; plan) plan ;;
  all) up; images; install; shop ;;
  down) down ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
