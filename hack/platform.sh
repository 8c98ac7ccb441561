#!/usr/bin/env bash
# The platform as its users run it: the operator installed by Helm as a pod on the real node, and the
# example Shop applied (examples/shop.yaml), which the operator turns into its four stores' pods
# (MariaDB, FerretDB, Kafka, Zipkin on volumes of the node's StorageClass) and the six components' pods. Images are built from
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

# Available, and at the Shop's current generation (a status from before the last apply says nothing).
shop_available() {
  local got gen seen phase
  got=$("${KUBECTL[@]}" get -n "$SHOP_NS" shop "$SHOP" -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.status.phase}' 2>/dev/null) || return 1
  read -r gen seen phase <<<"$got"
  [[ $phase == Available && $gen == "$seen" ]]
}

# One line of progress: the phase, ready components and each store's condition.
shop_progress() {
  "${KUBECTL[@]}" get -n "$SHOP_NS" shop "$SHOP" -o jsonpath='{.status.phase} {.status.readyComponents} components ready; {range .status.conditions[*]}{.type}={.status} {end}' 2>/dev/null |
    sed 's/Available=[A-Za-z]* //; s/Progressing=[A-Za-z]* //; s/Degraded=[A-Za-z]* //'
}

# What a user needs when the Shop does not come up, most important last (CI shows the end of the
# output): each pod that is not Ready with its state and the last lines of its log, the namespace's
# latest warnings, the claims, then the Shop's conditions that are not True. Written to a file too:
# hack/test.sh prints it again after the teardown's lines.
diagnose() {
  local out=$STATE_DIR/platform-failure.txt pod
  {
    for pod in $("${KUBECTL[@]}" get pods -n "$SHOP_NS" -o jsonpath='{range .items[*]}{.metadata.name}{"="}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}' 2>/dev/null); do
      [[ $pod == *=True ]] && continue
      pod=${pod%%=*}
      echo "pod $pod: $("${KUBECTL[@]}" get pod -n "$SHOP_NS" "$pod" -o jsonpath='{.status.phase} {range .status.containerStatuses[*]}restarts={.restartCount} {.state.waiting.reason} {.state.waiting.message} {.lastState.terminated.reason} {.lastState.terminated.exitCode}{end} {.status.conditions[?(@.type=="PodScheduled")].message}' 2>/dev/null | cut -c1-300)"
      "${KUBECTL[@]}" logs -n "$SHOP_NS" "$pod" --all-containers --tail 3 2>&1 | cut -c1-200 | sed 's/^/    /' || true
    done
    # The operator: a Shop without a status means it never finished a reconcile (its errors say why).
    echo "operator: $("${KUBECTL[@]}" get pods -n "$OPERATOR_NS" -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {range .status.containerStatuses[*]}ready={.ready} restarts={.restartCount} {.state.waiting.reason} {.lastState.terminated.reason}{end}; {end}' 2>/dev/null | cut -c1-300)"
    "${KUBECTL[@]}" logs -n "$OPERATOR_NS" "deploy/$RELEASE-shopkeeper" --tail 200 2>&1 |
      grep -E 'WARN|ERROR|error|panic' | tail -n 6 | cut -c1-300 | sed 's/^/    /' || true
    "${KUBECTL[@]}" get events -n "$SHOP_NS" --field-selector type=Warning --sort-by=.lastTimestamp --no-headers 2>/dev/null | tail -n 5 | cut -c1-200 | sed 's/^/  event /' || true
    "${KUBECTL[@]}" get pvc -n "$SHOP_NS" --no-headers 2>/dev/null | sed 's/^/  pvc /' || true
    echo "Shop $SHOP_NS/$SHOP: $(shop_progress)"
    "${KUBECTL[@]}" get -n "$SHOP_NS" shop "$SHOP" -o jsonpath='{range .status.conditions[?(@.status!="True")]}  {.type}: {.reason}: {.message}{"\n"}{end}' 2>/dev/null | cut -c1-300 || true
  } > "$out" 2>&1
  cat "$out" >&2
}

# Pods still running an image that has since been rebuilt under the same tag (the Shop's pods and the
# operator use :dev with pullPolicy Never, so a new build changes no pod spec): deleted, so their
# controllers start them on the image just imported. Compares each container's imageID with the
# config digest of the archive hack/images.sh built.
replace_stale_pods() {
  local ns name image id want
  declare -A digest=()
  while IFS=$'\t' read -r _ ref tar; do
    [[ -f $tar ]] || continue
    digest[$ref]=$(python3 - "$tar" <<'PY'
import json, sys, tarfile
arc = tarfile.open(sys.argv[1])
blob = lambda d: arc.extractfile("blobs/" + d.replace(":", "/"))
index = json.load(arc.extractfile("index.json"))
print(json.load(blob(index["manifests"][0]["digest"]))["config"]["digest"])
PY
)
  done < <(hack/images.sh list)
  while read -r ns name image id; do
    want=${digest[$image]:-}
    [[ -n $want && -n $id && $id != *"$want"* ]] || continue
    log "pod $ns/$name runs an older build of $image: deleting it so it restarts on the new one"
    "${KUBECTL[@]}" delete pod -n "$ns" "$name" --wait=false >/dev/null || true
  done < <("${KUBECTL[@]}" get pods -n "$SHOP_NS" -o json 2>/dev/null |
    jq -r '.items[] | .metadata.namespace as $ns | .metadata.name as $n | (.status.containerStatuses // [])[] | [$ns, $n, .image, .imageID] | @tsv';
    "${KUBECTL[@]}" get pods -n "$OPERATOR_NS" -o json 2>/dev/null |
    jq -r '.items[] | .metadata.namespace as $ns | .metadata.name as $n | (.status.containerStatuses // [])[] | [$ns, $n, .image, .imageID] | @tsv')
}

# Every Deployment and StatefulSet of the Shop finished rolling out (no old pod left).
shop_rolled_out() {
  local obj
  for obj in $("${KUBECTL[@]}" get deploy,statefulset -n "$SHOP_NS" -l "app.kubernetes.io/instance=$SHOP" -o name); do
    "${KUBECTL[@]}" rollout status -n "$SHOP_NS" "$obj" --timeout=5s >/dev/null 2>&1 || return 1
  done
}

# Waits for the Shop with a progress line every 15 s (a first start pulls nothing but initialises
# MariaDB, formats Kafka's log and starts two JVMs on two cores: minutes, not seconds).
wait_shop() {
  local timeout=$1 start=$SECONDS last=-15
  until shop_available && shop_rolled_out; do
    if (( SECONDS - start > timeout )); then
      diagnose
      die "Shop $SHOP_NS/$SHOP did not become Available within ${timeout}s (details above, also in $STATE_DIR/platform-failure.txt)"
    fi
    if (( SECONDS - last >= 15 )); then
      last=$SECONDS
      log "Shop $SHOP_NS/$SHOP after $(( SECONDS - start ))s: $(shop_progress)"
    fi
    sleep 2
  done
  log "Shop $SHOP_NS/$SHOP Available after $(( SECONDS - start ))s"
}

cmd_up() {
  [[ -f $KUBECONFIG_PATH ]] || die "the stack is not up: run hack/stack.sh up first (make up does both)"
  local flags=(); [[ $PROFILE == release ]] && flags=(--release)
  rm -f "$STATE_DIR/platform-failure.txt"
  log "cargo build ($PROFILE)"
  cargo build --workspace --bins --locked "${flags[@]}"
  hack/images.sh build "$PROFILE"
  hack/images.sh import
  # The namespace first: the operator watches it, so the chart puts its Role there.
  shop_namespace
  install_operator
  replace_stale_pods
  # Self-contained: the Shop, its JWT Secret, and stores the operator runs for it.
  "${KUBECTL[@]}" apply -n "$SHOP_NS" -f examples/shop.yaml >/dev/null
  log "waiting for Shop $SHOP_NS/$SHOP to become Available (the operator starts its four stores, then the six components)"
  wait_shop "${SHOP_UP_TIMEOUT:-900}"
  wait_for gateway 60 curl -sf http://127.0.0.1:8080/health/ready
  "${KUBECTL[@]}" get pods -n "$SHOP_NS" -o wide
  urls
}

# The demo Shop's Zipkin: a ClusterIP Service, which the host reaches through kube-proxy's rules.
zipkin_url() {
  local ip
  ip=$("${KUBECTL[@]}" get svc -n "$SHOP_NS" "$SHOP-zipkin" -o jsonpath='{.spec.clusterIP}' 2>/dev/null) || ip=
  echo "http://${ip:-<demo-zipkin ClusterIP>}:9411"
}

urls() {
  cat <<EOF2

  shopkeeper is up: the operator, the Shop's four stores and its six components run as pods on the local node.
  Gateway      http://127.0.0.1:8080      (e.g. curl http://127.0.0.1:8080/api/product)
  Storefront   http://127.0.0.1:8080/     (admin: http://127.0.0.1:8080/admin; paste a dev token to order)
  Registry     http://127.0.0.1:8761      (dashboard; Eureka API under /eureka)
  Zipkin       $(zipkin_url)   (the Shop's own Zipkin: one trace per request)
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
