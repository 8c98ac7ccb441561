#!/usr/bin/env bash
# Starts, checks and stops the real local stack on loopback, with no Docker:
#   MariaDB, a MongoDB wire-protocol server (FerretDB), Kafka (KRaft), Zipkin, and a Kubernetes control plane
#   (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok fake nodes).
# Usage: hack/stack.sh up [data|kube]... | down | status
# All data, logs, pids and the kubeconfig live under $STATE_DIR (default .state/, gitignored).
# SHOP_PROFILING=true turns on /debug/pprof of kube-apiserver, -controller-manager and -scheduler (off by
# default; for finding what bounds a benchmark, see docs/benchmarks.md).
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

KUBECONFIG_PATH=$STATE_DIR/kubeconfig
PKI=$STATE_DIR/pki
ADMIN_TOKEN_FILE=$PKI/admin.token
KUBECTL=(kubectl --kubeconfig "$KUBECONFIG_PATH")

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ---------------------------------------------------------------- MariaDB
up_mariadb() {
  local data=$STATE_DIR/mariadb sock=$STATE_DIR/mariadb.sock
  if [[ ! -d $data/mysql ]]; then
    log "initialising MariaDB data dir"
    mkdir -p "$data"
    mariadb-install-db --user=root --datadir="$data" --auth-root-authentication-method=normal \
      --skip-test-db >"$LOG_DIR/mariadb-init.log" 2>&1 || { tail -20 "$LOG_DIR/mariadb-init.log"; die "mariadb-install-db failed"; }
  fi
  # Tuned for many short transactions from ~64 pooled connections on 2 cores (docs/benchmarks.md,
  # "Orders"): a 1 GiB redo log, so a sustained run is not throttled by checkpoint flushing (at the
  # default 96 MiB the checkpoint age reached 66-76 MiB within 20 s); the thread pool, so a handful of
  # threads run statements instead of one runnable thread per connection (p99 44-50 -> 32-37 ms in
  # paired runs). flush-log-at-trx-commit=2: a local stack, commits survive a crash of the server
  # process but not of the machine.
  start_bg mariadb mariadbd --no-defaults --user=root --datadir="$data" --socket="$sock" \
    --bind-address=127.0.0.1 --port=3306 --pid-file="$STATE_DIR/mariadb.pidfile" \
    --max-connections=500 --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
    --innodb-log-file-size=1G --thread-handling=pool-of-threads \
    --skip-name-resolve --log-error="$LOG_DIR/mariadb.err"
  wait_for mariadb 60 mariadb-admin --socket="$sock" ping
  mariadb --socket="$sock" -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS order_service;
CREATE DATABASE IF NOT EXISTS inventory_service;
CREATE USER IF NOT EXISTS 'shop'@'127.0.0.1' IDENTIFIED BY 'shop';
CREATE USER IF NOT EXISTS 'shop'@'localhost' IDENTIFIED BY 'shop';
GRANT ALL ON *.* TO 'shop'@'127.0.0.1';
GRANT ALL ON *.* TO 'shop'@'localhost';
-- The real node's pods (10.244.0.0/24) reach this server through hack/node.sh's DNAT rule.
CREATE USER IF NOT EXISTS 'shop'@'10.244.0.%' IDENTIFIED BY 'shop';
GRANT ALL ON *.* TO 'shop'@'10.244.0.%';
SQL
}

# ---------------------------------------------------------------- MongoDB wire protocol (FerretDB)
# FerretDB v1 on its SQLite backend: one SQLite file per database under $STATE_DIR/mongo/data/ (the
# directory must exist and the URL must end with "/"), its state.json (instance id, telemetry choice)
# in $STATE_DIR/mongo. Telemetry off; the metrics/pprof HTTP listener (127.0.0.1:8088 by default) off.
up_mongo() {
  local dir=$STATE_DIR/mongo
  mkdir -p "$dir/data"
  start_bg mongo "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$dir/data/" \
    --listen-addr=127.0.0.1:27017 --state-dir="$dir" --debug-addr=- --telemetry=disable \
    --log-level=warn
  # Its listener opens once the backend is set up. (`ferretdb ping` is no probe here: without
  # --setup-database it returns success without connecting, and that flag needs the new auth.)
  wait_for mongo 60 tcp_open 127.0.0.1 27017
}

# ---------------------------------------------------------------- Kafka (KRaft, single node)
up_kafka() {
  local dir=$STATE_DIR/kafka
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
# PODS: the listener for the real node's pods. It listens on loopback like the others; pods reach it
# as 10.244.0.1:9094 through hack/node.sh's DNAT rule, so that is the address it advertises.
listeners=PLAINTEXT://127.0.0.1:9092,PODS://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092,PODS://10.244.0.1:9094
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PODS:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
  printf 'rootLogger.level=WARN\nrootLogger.appenderRef.c.ref=C\nappender.c.type=Console\nappender.c.name=C\nappender.c.layout.type=PatternLayout\nappender.c.layout.pattern=%%d %%p %%c - %%m%%n\nlogger.kafka.name=kafka\nlogger.kafka.level=INFO\n' > "$dir/log4j2.properties"
  local jopts=(-Xms256m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$dir/log4j2.properties" -Djava.awt.headless=true)
  if [[ ! -f $dir/data/meta.properties ]]; then
    local id
    id=$(java "${jopts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    java "${jopts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
      --ignore-formatted >"$LOG_DIR/kafka-format.log" 2>&1 || { cat "$LOG_DIR/kafka-format.log"; die "kafka storage format failed"; }
  fi
  start_bg kafka java "${jopts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties"
  wait_for kafka 120 grep -q "Kafka Server started" "$LOG_DIR/kafka.log"
}

# ---------------------------------------------------------------- Zipkin
up_zipkin() {
  STORAGE_TYPE=mem MEM_MAX_SPANS=200000 QUERY_PORT=9411 \
    start_bg zipkin java -Xms128m -Xmx384m -XX:+UseSerialGC -jar "$ZIPKIN_JAR" \
    '--armeria.ports[0].ip=127.0.0.1' '--armeria.ports[0].port=9411' '--armeria.ports[0].protocols[0]=http'
  wait_for zipkin 120 curl -sf http://127.0.0.1:9411/health
}

# ---------------------------------------------------------------- Kubernetes control plane
make_pki() {
  [[ -f $PKI/.done ]] && return 0
  mkdir -p "$PKI"
  log "generating a CA, serving certificate, service-account key and admin token"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=shopkeeper-local-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' > san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile san.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > admin.token
    printf '%s,admin,admin,"system:masters"\n' "$(cat admin.token)" > tokens.csv
  )
  touch "$PKI/.done"
}

# What the real node needs from the PKI (added idempotently, so a state folder from before the node
# existed is upgraded in place): the apiserver certificate also valid for the bridge address pods
# use, a client certificate the apiserver shows the kubelet (kubectl logs/exec), and tokens for
# the kubelet (system:node:shop-node) and kube-proxy (system:kube-proxy).
node_pki_extras() {
  (
    cd "$PKI"
    if ! openssl x509 -in apiserver.crt -noout -text 2>/dev/null | grep -q "IP Address:10.244.0.1"; then
      printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:10.244.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' > san.ext
      openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile san.ext 2>/dev/null
    fi
    if [[ ! -f apiserver-kubelet-client.crt ]]; then
      openssl req -newkey rsa:2048 -nodes -keyout apiserver-kubelet-client.key -out apiserver-kubelet-client.csr \
        -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
      openssl x509 -req -in apiserver-kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out apiserver-kubelet-client.crt -days 3650 2>/dev/null
    fi
    local user
    for user in system:node:shop-node system:kube-proxy; do
      grep -q ",$user," tokens.csv || {
        local group=""; [[ $user == system:node:* ]] && group=system:nodes
        printf '%s,%s,%s,"%s"\n' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" "$user" "$user" "$group" >> tokens.csv
      }
    done
  )
}

write_kubeconfig() {
  cat > "$KUBECONFIG_PATH" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: shopkeeper-local
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    token: $(cat "$ADMIN_TOKEN_FILE")
contexts:
- name: shopkeeper-local
  context: {cluster: shopkeeper-local, user: admin}
current-context: shopkeeper-local
KCFG
  chmod 600 "$KUBECONFIG_PATH"
}

apiserver_ready() { curl -sf --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$ADMIN_TOKEN_FILE")" https://127.0.0.1:6443/readyz; }
node_ready() { [[ $("${KUBECTL[@]}" get node kwok-node-0 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; }

up_kube() {
  make_pki
  node_pki_extras
  write_kubeconfig
  mkdir -p "$STATE_DIR/etcd"
  start_bg etcd "$K8S_BIN/etcd" --name local --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster local=http://127.0.0.1:2380 --unsafe-no-fsync --quota-backend-bytes=2147483648
  wait_for etcd 60 curl -sf http://127.0.0.1:2379/health
  start_bg kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --advertise-address=10.244.0.1 --secure-port=6443 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true --profiling="${SHOP_PROFILING:-false}" \
    --service-node-port-range=8000-32767 --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --cert-dir="$PKI/serving"
  wait_for kube-apiserver 120 apiserver_ready
  start_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=10257 \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=false --allocate-node-cidrs=false --profiling="${SHOP_PROFILING:-false}"
  start_bg kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 --profiling="${SHOP_PROFILING:-false}"
  wait_for kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz
  start_bg kwok "$KWOK_BIN" --kubeconfig="$KUBECONFIG_PATH" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --cidr=10.244.0.1/16 --node-lease-duration-seconds=40
  "${KUBECTL[@]}" apply -f - >/dev/null <<'NODE'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec:
  # Only what asks for kwok lands here (operator tests and benchmarks: Shop spec.placement);
  # everything else runs on the real node.
  taints:
  - {key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
NODE
  wait_for kwok 60 node_ready
  mkdir -p "$STATE_DIR/bin"
  ln -sf "$HELM_BIN" "$STATE_DIR/bin/helm"
}

ALL=(mariadb mongo kafka zipkin etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# cmd_up [data|kube|node]...: everything by default; `data` = the four backing servers, `kube` = the
# control plane (with kwok), `node` = the real node (hack/node.sh: containerd, kubelet, kube-proxy, DNS).
cmd_up() {
  local parts=("$@") t0=$SECONDS
  ((${#parts[@]})) || parts=(data kube node)
  for p in "${parts[@]}"; do
    case $p in
      data) main apt mongo kafka zipkin; up_mariadb; up_mongo; up_kafka; up_zipkin ;;
      kube) main k8s kwok helm; up_kube ;;
      node) "$ROOT_DIR/hack/node.sh" up ;;
      *) die "unknown part '$p' (data|kube|node)" ;;
    esac
  done
  log "stack up in $(( SECONDS - t0 ))s"
  cmd_status
}

# The node first (its pods and rules), then the servers in reverse start order.
cmd_down() {
  "$ROOT_DIR/hack/node.sh" down
  local i
  for (( i=${#ALL[@]}-1; i>=0; i-- )); do stop_pid "${ALL[$i]}"; done
}

cmd_status() {
  local n
  for n in "${ALL[@]}"; do
    if is_running "$n"; then printf '  %-24s running (pid %s)\n' "$n" "$(cat "$PID_DIR/$n.pid")"; else printf '  %-24s stopped\n' "$n"; fi
  done
  "$ROOT_DIR/hack/node.sh" status
  cat <<EOF2
  MariaDB        mysql://shop:shop@127.0.0.1:3306   (socket $STATE_DIR/mariadb.sock)
  MongoDB        mongodb://127.0.0.1:27017/?directConnection=true   (FerretDB $FERRETDB_VERSION, SQLite)
  Kafka          127.0.0.1:9092
  Zipkin         http://127.0.0.1:9411
  Kubernetes     https://127.0.0.1:6443   KUBECONFIG=$KUBECONFIG_PATH   (node shop-node, kwok-node-0 tainted)
  helm           $STATE_DIR/bin/helm
EOF2
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: hack/stack.sh up|down|status" ;;
esac
