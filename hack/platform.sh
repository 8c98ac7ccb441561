#!/usr/bin/env bash
# The platform as its users run it: the operator installed by Helm as a pod on the real node, and the
# example Shop applied, which the operator turns into the six components' pods. Images are built from
# the workspace's binaries (hack/images.sh) and imported into the node's containerd; nothing is pulled.
# Usage: hack/platform.sh up | down | status | urls
# PROFILE=release builds and ships release binaries (default: debug, which `make test` has built).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

PROFILE=${PROFILE:-debug}
KUBECONFIG_PATH=$STATE_DIR/kubeconfig
KUBECTL=(kubectl --kubeconfig "$KUBECONFIG_PATH")
HELM=("$STATE_DIR/bin/helm" --kubeconfig "$KUBECONFIG_PATH")
RELEASE=shopkeeper
OPERATOR_NS=shopkeeper-system
SHOP_NS=shop
SHOP=demo
export SHOP_IMAGE_REPO=${SHOP_IMAGE_REPO:-shopkeeper.local}
export SHOP_IMAGE_TAG=${SHOP_IMAGE_TAG:-dev}

# The namespace of the example Shop, admitted under the restricted Pod Security Standard.
shop_namespace() {
  "${KUBECTL[@]}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $SHOP_NS
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
YAML
}

# helm install exactly as a user would (hack/kind.sh install does the same against kind). The operator
# watches the shop namespace only (a Role there): the operator's own tests run operators of their
# own in other namespaces of the same cluster, which a cluster-wide one would also reconcile.
install_operator() {
  log "helm upgrade --install $RELEASE (operator image $SHOP_IMAGE_REPO/shop-operator:$SHOP_IMAGE_TAG)"
  "${HELM[@]}" upgrade --install "$RELEASE" charts/shopkeeper --namespace "$OPERATOR_NS" --create-namespace \
    --set image.repository="$SHOP_IMAGE_REPO/shop-operator" --set image.tag="$SHOP_IMAGE_TAG" \
    --set image.pullPolicy=Never --set watchNamespace="$SHOP_NS" --wait --timeout 180s >/dev/null
  "${KUBECTL[@]}" label namespace "$OPERATOR_NS" --overwrite \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
}

shop_available() {
  [[ $("${KUBECTL[@]}" get -n "$SHOP_NS" shop "$SHOP" -o jsonpath='{.status.phase}' 2>/dev/null) == Available ]]
}

cmd_up() {
  [[ -f $KUBECONFIG_PATH ]] || die "the stack is not up: run hack/stack.sh up first (make up does both)"
  local flags=(); [[ $PROFILE == release ]] && flags=(--release)
  log "cargo build ($PROFILE)"
  cargo build --workspace --bins --locked "${flags[@]}"
  hack/images.sh build "$PROFILE"
  hack/images.sh import
  # The namespace first: the operator watches it, so the chart puts its Role there.
  shop_namespace
  install_operator
  "${KUBECTL[@]}" apply -n "$SHOP_NS" -f examples/backing-secret.yaml -f examples/shop.yaml >/dev/null
  log "waiting for Shop $SHOP_NS/$SHOP to become Available (the operator creates the six components' pods)"
  if ! wait_for platform 300 shop_available; then
    "${KUBECTL[@]}" get pods -n "$SHOP_NS" -o wide >&2 || true
    "${KUBECTL[@]}" get shop -n "$SHOP_NS" "$SHOP" -o yaml >&2 || true
    die "Shop $SHOP_NS/$SHOP did not become Available"
  fi
  wait_for gateway 60 curl -sf http://127.0.0.1:8080/health/ready
  "${KUBECTL[@]}" get pods -n "$SHOP_NS" -o wide
  urls
}

urls() {
  cat <<EOF2

  shopkeeper is up: the operator and the six components run as pods on the local node.
  Gateway      http://127.0.0.1:8080      (e.g. curl http://127.0.0.1:8080/api/product)
  Registry     http://127.0.0.1:8761      (dashboard; Eureka API under /eureka)
  Zipkin       http://127.0.0.1:9411      (traces)
  Kubernetes   export KUBECONFIG=$KUBECONFIG_PATH
               kubectl get shops,pods -n $SHOP_NS -o wide ; kubectl logs -n $SHOP_NS deploy/$SHOP-order
  Operator     kubectl logs -n $OPERATOR_NS deploy/$RELEASE-shopkeeper
  Dev token    TOKEN=\$(make -s token)   then  curl -H "Authorization: Bearer \$TOKEN" ...
  Stop         make down

EOF2
}

# The platform lives in the cluster; stopping the node (hack/node.sh down) stops its pods, and the
# next `make up` finds the release and the Shop in etcd and brings the same pods back.
cmd_down() {
  # Host processes of the platform from before it ran as pods (pid files of an older state folder).
  local s
  for s in operator svc-gateway svc-notification svc-order svc-product svc-inventory svc-registry; do stop_pid "$s"; done
}

cmd_status() {
  if [[ -f $KUBECONFIG_PATH ]] && "${KUBECTL[@]}" get --raw=/readyz >/dev/null 2>&1; then
    "${KUBECTL[@]}" get shops -A 2>/dev/null || true
    "${KUBECTL[@]}" get pods -n "$SHOP_NS" -o wide 2>/dev/null || true
  else
    echo "  platform: the control plane is not running"
  fi
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  urls) urls ;;
  *) die "usage: hack/platform.sh up|down|status|urls" ;;
esac
