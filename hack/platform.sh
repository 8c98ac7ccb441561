#!/usr/bin/env bash
# Runs the six shopkeeper services (and the operator) as host processes on their well-known ports,
# wired to the local stack. Usage: hack/platform.sh up|down|status
# PROFILE=release uses release builds (default: debug, which `make test` has already built).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

PROFILE=${PROFILE:-debug}
BIN=$ROOT_DIR/target/$PROFILE
KUBECONFIG_PATH=$STATE_DIR/kubeconfig
# Development-only signing secret for gateway tokens (`make token` mints one). Never use it elsewhere.
DEV_JWT_SECRET=${SHOP_DEV_JWT_SECRET:-shopkeeper-dev-secret-change-me-0123456789}
SERVICES=(registry inventory product order notification gateway)

common_env=(
  SHOP_BIND=127.0.0.1
  SHOP_LOG_FORMAT=json
  SHOP_REGISTRY_URL=http://127.0.0.1:8761/eureka
  SHOP_ZIPKIN_ENDPOINT=http://127.0.0.1:9411/api/v2/spans
  SHOP_KAFKA_BOOTSTRAP=127.0.0.1:9092
  SHOP_MONGO_URL="mongodb://127.0.0.1:27017/?directConnection=true"
  RUST_LOG=${RUST_LOG:-info}
)

port_of() {
  case $1 in registry) echo 8761 ;; gateway) echo 8080 ;; product) echo 8081 ;; order) echo 8082 ;;
    inventory) echo 8083 ;; notification) echo 8084 ;; esac
}

start_service() {
  local s=$1 port; port=$(port_of "$s")
  local extra=()
  case $s in
    inventory) extra=(DATABASE_URL=mysql://shop:shop@127.0.0.1:3306/inventory_service) ;;
    order) extra=(DATABASE_URL=mysql://shop:shop@127.0.0.1:3306/order_service) ;;
    gateway) extra=(SHOP_JWT_SECRET="$DEV_JWT_SECRET") ;;
  esac
  start_bg "svc-$s" env "${common_env[@]}" "${extra[@]}" SHOP_PORT="$port" "$BIN/shop-$s"
  wait_for "svc-$s" 60 curl -sf "http://127.0.0.1:$port/health/ready"
}

cmd_up() {
  [[ -f $KUBECONFIG_PATH ]] || die "the stack is not up: run hack/stack.sh up first (make up does both)"
  local flags=(); [[ $PROFILE == release ]] && flags=(--release)
  cargo build --workspace --bins --locked "${flags[@]}"
  for s in "${SERVICES[@]}"; do start_service "$s"; done
  # The operator reconciles the example Shop into the local control plane (kwok makes its pods Ready;
  # the traffic itself goes to the host processes above).
  kubectl --kubeconfig "$KUBECONFIG_PATH" apply -f crds/ >/dev/null
  start_bg operator env KUBECONFIG="$KUBECONFIG_PATH" SHOP_OPERATOR_ADMIN_ADDR=127.0.0.1:9090 \
    SHOP_OPERATOR_LOG_FORMAT=json "$BIN/shop-operator"
  wait_for operator 60 curl -sf http://127.0.0.1:9090/healthz
  kubectl --kubeconfig "$KUBECONFIG_PATH" create namespace shop --dry-run=client -o yaml \
    | kubectl --kubeconfig "$KUBECONFIG_PATH" apply -f - >/dev/null
  kubectl --kubeconfig "$KUBECONFIG_PATH" apply -n shop -f examples/backing-secret.yaml -f examples/shop.yaml >/dev/null
  wait_for operator 120 kubectl --kubeconfig "$KUBECONFIG_PATH" wait -n shop shop/demo \
    --for=condition=Available --timeout=5s
  kubectl --kubeconfig "$KUBECONFIG_PATH" get shops -n shop
  urls
}

urls() {
  cat <<EOF2

  shopkeeper is up.
  Gateway      http://127.0.0.1:8080      (e.g. curl http://127.0.0.1:8080/api/product)
  Registry     http://127.0.0.1:8761      (dashboard; Eureka API under /eureka)
  Zipkin       http://127.0.0.1:9411      (traces)
  Services     product :8081  order :8082  inventory :8083  notification :8084  (each: /health/ready, /metrics)
  Operator     http://127.0.0.1:9090/metrics ; kubectl --kubeconfig $KUBECONFIG_PATH get shops -A
  Dev token    TOKEN=\$(make -s token)   then  curl -H "Authorization: Bearer \$TOKEN" ...
  Stop         make down

EOF2
}

cmd_down() {
  stop_pid operator
  local i
  for (( i=${#SERVICES[@]}-1; i>=0; i-- )); do stop_pid "svc-${SERVICES[$i]}"; done
}

cmd_status() {
  local n
  for n in "${SERVICES[@]/#/svc-}" operator; do
    if is_running "$n"; then printf '  %-24s running (pid %s)\n' "$n" "$(cat "$PID_DIR/$n.pid")"; else printf '  %-24s stopped\n' "$n"; fi
  done
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  urls) urls ;;
  *) die "usage: hack/platform.sh up|down|status" ;;
esac
