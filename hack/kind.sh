#!/usr/bin/env bash
# The kind path (needs Docker, kind, kubectl and helm; it cannot run on the project's CI machines,
# which have no Docker engine). Usage: hack/kind.sh up|images|install|shop|all|down
#   up       create the cluster from kind-config.yaml (host ports 8080, 8761, 9411)
#   images   build the operator and the six service images and load them into the cluster
#   install  helm install the operator chart (CRD included) into shopkeeper-system
#   shop     deploy Zipkin on node port 30411, the backing Secret and examples/kind/shop.yaml
#   all      the four above in order;  down: delete the cluster
# Make targets: kind-up, kind-images, kind-install, kind-shop, kind-down. See docs/operator.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=${KIND_CLUSTER:-shopkeeper}
REPO=${SHOP_IMAGE_REPO:-shopkeeper.local}
TAG=${SHOP_IMAGE_TAG:-dev}
HELM=${HELM:-helm}
COMPONENTS=(registry gateway product inventory order notification)

need() { command -v "$1" >/dev/null || { echo "hack/kind.sh: $1 is required (${2})" >&2; exit 1; }; }

up() {
  need kind "https://kind.sigs.k8s.io"; need docker "a running Docker engine"
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config kind-config.yaml
  kubectl cluster-info --context "kind-$CLUSTER"
}

images() {
  need docker "a running Docker engine"; need kind "https://kind.sigs.k8s.io"
  export DOCKER_BUILDKIT=1
  docker build -f docker/operator.Dockerfile -t "$REPO/shop-operator:$TAG" .
  for c in "${COMPONENTS[@]}"; do
    docker build -f docker/service.Dockerfile --build-arg "PACKAGE=shop-$c" --build-arg "BIN=shop-$c" -t "$REPO/shop-$c:$TAG" .
  done
  kind load docker-image --name "$CLUSTER" "$REPO/shop-operator:$TAG" "${COMPONENTS[@]/#/$REPO/shop-}"
}

install() {
  need "$HELM" "helm 3"
  "$HELM" upgrade --install shopkeeper charts/shopkeeper --kube-context "kind-$CLUSTER" \
    --namespace shopkeeper-system --create-namespace \
    --set image.repository="$REPO/shop-operator" --set image.tag="$TAG" --set image.pullPolicy=Never --wait
}

shop() {
  local k=(kubectl --context "kind-$CLUSTER")
  "${k[@]}" create namespace shop-deps --dry-run=client -o yaml | "${k[@]}" apply -f -
  "${k[@]}" -n shop-deps create deployment zipkin --image=openzipkin/zipkin-slim:3 --port=9411 \
    --dry-run=client -o yaml | "${k[@]}" apply -f -
  "${k[@]}" -n shop-deps apply -f - <<YAML
apiVersion: v1
kind: Service
metadata: {name: zipkin}
spec:
  type: NodePort
  selector: {app: zipkin}
  ports: [{port: 9411, targetPort: 9411, nodePort: 30411}]
YAML
  "${k[@]}" create namespace shop --dry-run=client -o yaml | "${k[@]}" apply -f -
  "${k[@]}" -n shop apply -f examples/backing-secret.yaml -f examples/kind/shop.yaml
  "${k[@]}" -n shop wait shop/demo --for=jsonpath='{.status.phase}'=Available --timeout=300s
  echo "gateway http://127.0.0.1:8080  registry http://127.0.0.1:8761  zipkin http://127.0.0.1:9411"
}

down() { kind delete cluster --name "$CLUSTER"; }

case "${1:-}" in
  up) up ;; images) images ;; install) install ;; shop) shop ;;
  all) up; images; install; shop ;;
  down) down ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
