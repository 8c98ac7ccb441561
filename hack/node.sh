#!/usr/bin/env bash
# The real Kubernetes node of the local cluster: containerd + runc + CNI (bridge, host-local, portmap,
# loopback) from Debian, kubelet + kube-proxy from the same wrapper module as the apiserver, and
# CoreDNS on the host answering *.svc.cluster.local. Pods really run here; kwok stays beside it for
# benchmarks and fast operator tests only (its node is tainted).
# Usage: hack/node.sh up | down | status
#   up    the bridge and the DNAT rule for the host's stack, then containerd, kubelet, kube-proxy and
#         CoreDNS; waits for the node to be Ready
#   down  undoes everything up did to the machine: processes (by pid), containers and their shims,
#         network namespaces, mounts, iptables rules, the bridge, cgroups and the sysctls it changed
#
# Addresses (fixed, private to this machine):
#   bridge shop0 10.244.0.1/24   pods 10.244.0.0/24, the node's InternalIP is the bridge address
#   services 10.96.0.0/16        node ports 8000-32767 (gateway 8080, registry 8761 on 127.0.0.1)
#   cluster DNS 10.244.0.1:53    CoreDNS on the host
# Pods reach the host's stack (MariaDB 3306, MongoDB 27017, Kafka 9094, Zipkin 9411) on 10.244.0.1:
# a DNAT rule sends those ports to the servers' loopback listeners, so the stack never binds to
# anything but 127.0.0.1. See docs/local-stack.md, "The real node".
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

NODE_NAME=shop-node
BRIDGE=shop0
NODE_IP=10.244.0.1
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
# Ports of the host's stack that pods may reach on $NODE_IP (Kafka's pod listener is 9094).
HOST_PORTS_FOR_PODS=3306,27017,9094,9411
NODE_DIR=$STATE_DIR/node
RUN_DIR=/run/shopkeeper
CONTAINERD_SOCK=$RUN_DIR/containerd/containerd.sock
KUBECONFIG_PATH=$STATE_DIR/kubeconfig
PKI=$STATE_DIR/pki
KUBECTL=(kubectl --kubeconfig "$KUBECONFIG_PATH")
CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
# What `down` restores: sysctl values before the first `up`, one `name value` a line.
SYSCTL_SAVE=$NODE_DIR/sysctls.saved
# Sysctls the kubelet and kube-proxy set on the machine (kubelet: overcommit and panic settings;
# kube-proxy: route_localnet for node ports on 127.0.0.1). Saved before they start, restored by down.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward)

NODE_PROCS=(containerd kubelet kube-proxy coredns local-volumes)

# write_config FILE < TEXT: writes FILE only when TEXT differs, in one rename. A running kube-proxy
# exits when its configuration file changes, and a rewrite with the same text looks like a change
# to it (truncated, then written); `up` on a running node must leave the files alone.
write_config() {
  local file=$1 new
  new=$(cat)
  [[ -f $file && $(cat "$file") == "$new" ]] && return 0
  printf '%s\n' "$new" > "$file.tmp"
  mv -f "$file.tmp" "$file"
}

# ---------------------------------------------------------------- network: bridge + host ports
net_up() {
  [[ $(id -u) == 0 ]] || die "the real node needs root (containerd, kubelet, iptables)"
  mkdir -p "$NODE_DIR"
  if [[ ! -f $SYSCTL_SAVE ]]; then
    local s
    for s in "${SYSCTLS[@]}"; do printf '%s %s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo '')"; done > "$SYSCTL_SAVE.tmp"
    mv "$SYSCTL_SAVE.tmp" "$SYSCTL_SAVE"
  fi
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($NODE_IP/24)"
    ip link add "$BRIDGE" type bridge
    ip addr add "$NODE_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  # Pod traffic between veths on the bridge must pass iptables (Service DNAT), and pods' packets
  # are forwarded by the host.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
  # Pods -> 10.244.0.1:<stack port> -> the server's 127.0.0.1 listener. route_localnet on the bridge
  # only (the kubelet's KUBE-FIREWALL rule lets DNATed packets to 127/8 through).
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  iptables -t nat -N SHOP-HOST-PORTS 2>/dev/null || iptables -t nat -F SHOP-HOST-PORTS
  iptables -t nat -A SHOP-HOST-PORTS -i "$BRIDGE" -d "$NODE_IP" -p tcp -m multiport \
    --dports "$HOST_PORTS_FOR_PODS" -j DNAT --to-destination 127.0.0.1
  iptables -t nat -C PREROUTING -j SHOP-HOST-PORTS 2>/dev/null || iptables -t nat -I PREROUTING -j SHOP-HOST-PORTS
}

# ---------------------------------------------------------------- certificates and identities
# The kubelet serves on $NODE_IP with a certificate of our CA; the apiserver calls it with a client
# certificate of group system:masters (kubectl logs/exec); the kubelet and kube-proxy authenticate
# with their own tokens (system:node:<name> in system:nodes, system:kube-proxy).
node_pki() {
  [[ -f $PKI/ca.crt ]] || die "no cluster CA yet: start the control plane first (hack/stack.sh up kube)"
  (
    cd "$PKI"
    if [[ ! -f kubelet.crt ]]; then
      openssl req -newkey rsa:2048 -nodes -keyout kubelet.key -out kubelet.csr -subj "/CN=$NODE_NAME" 2>/dev/null
      printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:%s\n' "$NODE_IP" "$NODE_NAME" > kubelet.ext
      openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out kubelet.crt -days 3650 -extfile kubelet.ext 2>/dev/null
    fi
  )
  node_kubeconfig kubelet "$(token_of "system:node:$NODE_NAME")"
  node_kubeconfig kube-proxy "$(token_of system:kube-proxy)"
}

token_of() { awk -F, -v u="$1" '$2 == u {print $1}' "$PKI/tokens.csv"; }

node_kubeconfig() { # node_kubeconfig NAME TOKEN
  [[ -n $2 ]] || die "no token for $1 in $PKI/tokens.csv (the control plane's PKI predates the node: run make clean-state)"
  write_config "$NODE_DIR/$1.kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {token: "$2"}
contexts:
- name: local
  context: {cluster: local, user: $1}
current-context: local
KCFG
  chmod 600 "$NODE_DIR/$1.kubeconfig"
}

# ---------------------------------------------------------------- containerd
containerd_up() {
  mkdir -p "$NODE_DIR/cni" "$NODE_DIR/containerd" "$RUN_DIR/containerd"
  # containerd 1.6 keeps shim sockets (/run/containerd/s) and runc state (/run/containerd/runc)
  # there whatever its config says; down removes that folder only when the node created it.
  [[ -e /run/containerd || -f $NODE_DIR/run-containerd.ours ]] || touch "$NODE_DIR/run-containerd.ours"
  # The three settings without which nothing starts here (machine lacks CAP_SYS_RESOURCE):
  # restrict_oom_score_adj (no negative oom_score_adj), and cgroupfs, not systemd.
  write_config "$NODE_DIR/containerd.toml" <<TOML
version = 2
root = "$NODE_DIR/containerd/root"
state = "$RUN_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "shopkeeper.local/pause:3.10"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
TOML
  # eth0's MTU is 1400 on these machines; the pods' veths must not be larger.
  local mtu
  mtu=$(ip -o link show "$(ip route show default | awk '{print $5; exit}')" 2>/dev/null | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
  write_config "$NODE_DIR/cni/10-shop.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "shop",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
      "hairpinMode": true, "mtu": ${mtu:-1400},
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_DIR/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  start_bg containerd containerd --config "$NODE_DIR/containerd.toml"
  # `ctr version` answers before the CRI plugin has initialised; a kubelet started in that gap exits
  # with "server is not initialized yet". The CRI logs "Start streaming server" once it serves.
  wait_for containerd 60 containerd_cri_ready
}

containerd_cri_ready() {
  "${CTR[@]}" version && grep -q 'Start streaming server' "$LOG_DIR/containerd.log"
}

# ---------------------------------------------------------------- kubelet
kubelet_up() {
  mkdir -p "$NODE_DIR/pod-logs" "$STATE_DIR/kubelet"
  # Remember whether /var/lib/kubelet existed: the kubelet writes pki/ and device-plugins/ there
  # even with --root-dir, and down removes them only when we created them.
  [[ -e /var/lib/kubelet || -f $NODE_DIR/var-lib-kubelet.ours ]] || touch "$NODE_DIR/var-lib-kubelet.ours"
  write_config "$NODE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
# 1.36 refuses cgroup v1 unless told otherwise; these machines mount the v1 hierarchies.
failCgroupV1: false
# No CAP_SYS_RESOURCE here: a negative oom_score_adj would be refused.
oomScoreAdj: 0
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
podLogsDir: $NODE_DIR/pod-logs
failSwapOn: false
serializeImagePulls: false
# Small machines with a busy disk: evict only when really out of room.
# Absolute thresholds: these disks are thin-provisioned, so a percentage of their nominal size says
# little about the room really left; and images are imported, never pulled again, so no image GC.
evictionHard: {memory.available: "200Mi", nodefs.available: "512Mi", imagefs.available: "512Mi", nodefs.inodesFree: "2%"}
imageGCHighThresholdPercent: 100
maxPods: 110
shutdownGracePeriod: 0s
YAML
  start_bg kubelet "$K8S_BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" \
    --kubeconfig="$NODE_DIR/kubelet.kubeconfig" --root-dir="$STATE_DIR/kubelet" \
    --cert-dir="$PKI/kubelet-certs" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  wait_for kubelet 90 curl -sf http://127.0.0.1:10248/healthz
}

# ---------------------------------------------------------------- kube-proxy
kube_proxy_up() {
  write_config "$NODE_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
# Node ports answer on loopback (http://127.0.0.1:8080) and the bridge only, never on eth0.
nodePortAddresses: ["127.0.0.0/8", "$NODE_IP/32"]
iptables: {localhostNodePorts: true}
# Leave the machine's conntrack table size alone.
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
YAML
  start_bg kube-proxy "$K8S_BIN/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1
  wait_for kube-proxy 60 curl -sf http://127.0.0.1:10256/livez
}

# ---------------------------------------------------------------- CoreDNS
coredns_up() {
  write_config "$NODE_DIR/Corefile" <<CORE
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_PATH
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
.:53 {
    bind $NODE_IP
    errors
    forward . /etc/resolv.conf
    cache 30
}
CORE
  start_bg coredns "$COREDNS_BIN" -conf "$NODE_DIR/Corefile"
  wait_for coredns 60 grep -q "CoreDNS-" "$LOG_DIR/coredns.log"
}

# ---------------------------------------------------------------- volumes
# The node's storage: StorageClass shop-local (the cluster default) and a provisioner for it, so a
# PersistentVolumeClaim (a managed store's data) gets a volume the way it would on a real cluster.
# Each claim gets a `local` PersistentVolume on a directory of its own under $VOLUMES_DIR, pinned to
# this node; `local` (unlike hostPath) gets the pod's fsGroup, so a store running as its own uid can
# write it. When a claim is deleted and its volume is Released, the directory and the volume go
# (reclaimPolicy Delete, carried out here as an external provisioner would). A claim kept by
# keepData stays Bound and keeps its directory. The provisioner is a loop of this script, tracked by
# its pid file like every process of the stack.
VOLUMES_DIR=$STATE_DIR/volumes
STORAGE_CLASS=shop-local
VOLUME_PROVISIONER=shopkeeper.dev/local-dir

storage_class_up() {
  "${KUBECTL[@]}" apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: $VOLUME_PROVISIONER
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
}

# GET on the API server with curl: this loop polls every 2 s, and curl costs a fraction of a
# kubectl start (kubectl only writes, which is rare).
api_get() {
  curl -sf --max-time 10 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$PKI/admin.token")" \
    "https://127.0.0.1:6443$1"
}

# One pass: a volume for every pending claim of the class, and away with every released volume.
provision_once() {
  local ns name uid size modes dir
  while IFS=$'\t' read -r ns name uid size modes; do
    [[ -n $uid ]] || continue
    dir=$VOLUMES_DIR/pvc-$uid
    mkdir -p "$dir"
    "${KUBECTL[@]}" create -f - >/dev/null <<YAML || continue
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pvc-$uid
  annotations: {pv.kubernetes.io/provisioned-by: $VOLUME_PROVISIONER}
spec:
  capacity: {storage: "$size"}
  accessModes: [$modes]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: $STORAGE_CLASS
  volumeMode: Filesystem
  claimRef: {namespace: $ns, name: $name, uid: $uid}
  local: {path: $dir}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]
YAML
    log "volume pvc-$uid for claim $ns/$name ($size)"
  done < <(api_get /api/v1/persistentvolumeclaims | jq -r --arg sc "$STORAGE_CLASS" '.items[]
    | select(.status.phase == "Pending" and (.spec.volumeName // "") == "" and .spec.storageClassName == $sc)
    | [.metadata.namespace, .metadata.name, .metadata.uid, .spec.resources.requests.storage,
       (.spec.accessModes | join(","))] | @tsv')
  local pv
  while read -r pv; do
    [[ $pv == pvc-* ]] || continue
    rm -rf "${VOLUMES_DIR:?}/$pv"
    "${KUBECTL[@]}" delete pv "$pv" --wait=false >/dev/null && log "volume $pv released: deleted with its data"
  done < <(api_get /api/v1/persistentvolumes | jq -r --arg p "$VOLUME_PROVISIONER" '.items[]
    | select(.metadata.annotations["pv.kubernetes.io/provisioned-by"] == $p and .status.phase == "Released"
             and .spec.persistentVolumeReclaimPolicy == "Delete") | .metadata.name')
}

provisioner_loop() {
  while true; do
    provision_once || log "provisioner pass failed; retrying"
    sleep 2
  done
}

volumes_up() {
  mkdir -p "$VOLUMES_DIR"
  storage_class_up
  start_bg local-volumes "$ROOT_DIR/hack/node.sh" provisioner
}

node_ready() {
  [[ $("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

cmd_up() {
  local t0=$SECONDS
  main apt k8s coredns
  net_up
  node_pki
  containerd_up
  kubelet_up
  kube_proxy_up
  coredns_up
  wait_for kubelet 120 node_ready
  volumes_up
  log "node $NODE_NAME Ready in $(( SECONDS - t0 ))s"
}

# ---------------------------------------------------------------- down
# Every container the node's containerd runs, killed and removed (the shims outlive containerd).
# `tasks rm -f` kills a running task and deletes it in one call; eight at a time.
kill_containers() {
  [[ -S $CONTAINERD_SOCK ]] || return 0
  local ids
  ids=$("${CTR[@]}" tasks ls -q 2>/dev/null || true)
  if [[ -n $ids ]]; then
    log "killing $(wc -w <<<"$ids") containers"
    xargs -r -n 1 -P 8 "${CTR[@]}" tasks rm -f <<<"$ids" >/dev/null 2>&1 || true
  fi
  ids=$("${CTR[@]}" containers ls -q 2>/dev/null || true)
  [[ -z $ids ]] || xargs -r -n 1 -P 8 "${CTR[@]}" containers rm <<<"$ids" >/dev/null 2>&1 || true
}

# Shims started by our containerd carry its socket in their command line: an exact match on our
# own path, not on a process name.
kill_shims() {
  local pids
  pids=$(pgrep -f -- "-address $CONTAINERD_SOCK" || true)
  [[ -z $pids ]] || { log "stopping containerd shims: $pids"; kill -KILL $pids 2>/dev/null || true; }
}

unmount_under() { # unmount_under DIR...: every mount below the given folders, deepest first
  local d m
  for d in "$@"; do
    while read -r m; do
      [[ -n $m ]] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(findmnt -rn -o TARGET | awk -v p="$d" 'index($0, p) == 1' | sort -r)
  done
}

# Network namespaces the CRI made for our pods (their veths die with them).
delete_pod_netns() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
}

# Chains the kubelet leaves (kube-proxy --cleanup removes its own).
delete_kube_chains() {
  local ipt table chain
  for ipt in iptables ip6tables; do
    for table in filter nat mangle; do
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
        "$ipt" -t "$table" -S 2>/dev/null | awk -v c="$chain" '$1 == "-A" && $0 ~ ("-j " c "( |$)") {sub(/^-A/, "-D"); print}' |
          while read -r rule; do eval "$ipt -t $table $rule" 2>/dev/null || true; done
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# Pod cgroups the kubelet made (cgroupfs driver): deepest first, only empty ones can go.
remove_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d $root ]] || continue
    find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

restore_sysctls() {
  [[ -f $SYSCTL_SAVE ]] || return 0
  local name value
  while read -r name value; do
    [[ -n $value ]] && sysctl -qw "$name=$value" 2>/dev/null || true
  done < "$SYSCTL_SAVE"
  rm -f "$SYSCTL_SAVE"
}

cmd_down() {
  stop_pid local-volumes
  stop_pid kubelet
  kill_containers
  stop_pid coredns
  stop_pid kube-proxy
  if [[ -x $K8S_BIN/kube-proxy ]] && iptables -t nat -S 2>/dev/null | grep -q KUBE-; then
    "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  stop_pid containerd
  kill_shims
  delete_pod_netns
  unmount_under "$STATE_DIR/kubelet" "$RUN_DIR" "$NODE_DIR/containerd" /run/containerd/io.containerd
  delete_kube_chains
  if iptables -t nat -S SHOP-HOST-PORTS >/dev/null 2>&1; then
    iptables -t nat -D PREROUTING -j SHOP-HOST-PORTS 2>/dev/null || true
    iptables -t nat -F SHOP-HOST-PORTS; iptables -t nat -X SHOP-HOST-PORTS
  fi
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; log "bridge $BRIDGE removed"; fi
  remove_cgroups
  restore_sysctls
  rm -rf "$NODE_DIR/ipam" "$RUN_DIR"
  if [[ -f $NODE_DIR/run-containerd.ours ]]; then rm -rf /run/containerd "$NODE_DIR/run-containerd.ours"; fi
  if [[ -f $NODE_DIR/var-lib-kubelet.ours ]]; then rm -rf /var/lib/kubelet "$NODE_DIR/var-lib-kubelet.ours"; fi
  # libcni keeps per-attachment results here; stale ones would confuse the next start's teardown.
  rm -rf /var/lib/cni/results/shop-* 2>/dev/null || true
}

cmd_status() {
  local n
  for n in "${NODE_PROCS[@]}"; do
    if is_running "$n"; then printf '  %-24s running (pid %s)\n' "$n" "$(cat "$PID_DIR/$n.pid")"; else printf '  %-24s stopped\n' "$n"; fi
  done
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  provisioner) provisioner_loop ;;
  *) die "usage: hack/node.sh up|down|status" ;;
esac
