#!/usr/bin/env bash
# Installs or builds every tool of the local stack, from package registries only (no Docker, no
# prebuilt downloads). Each tool is cached under $CACHE_DIR/<tool>-<version>; a tool whose cache
# directory holds a finished marker is not rebuilt. Usage: hack/tools.sh [all|k8s|kwok|helm|mongo|kafka|zipkin|apt]...
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GO_BUILD_FLAGS=(-trimpath)

# Kubernetes control plane + etcd: one wrapper module, one `go build` for all binaries.
# k8s.io/kubernetes requires its staging modules at v0.0.0, which the proxy does not serve, so the
# wrapper replaces each with the matching published v0.x.y (see docs/local-stack.md).
tool_k8s() {
  local out=$CACHE_DIR/k8s-$K8S_VERSION
  [[ -f $out/.done ]] && return 0
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, etcd $K8S_VERSION (cold: ~15-25 min on 2 cores)"
  local src=$CACHE_DIR/src/k8s-$K8S_VERSION
  mkdir -p "$src" "$out"
  local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
    cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
    kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
    mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming)
  {
    printf 'module example.invalid/k8sbin\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    for m in "${staging[@]}"; do printf '\tk8s.io/%s => k8s.io/%s %s\n' "$m" "$m" "$K8S_STAGING_VERSION"; done
    printf ')\n'
  } > "$src/go.mod"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldf="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (
    cd "$src"
    go get k8s.io/kubernetes/cmd/kube-apiserver@"$K8S_VERSION" \
      k8s.io/kubernetes/cmd/kube-controller-manager@"$K8S_VERSION" \
      k8s.io/kubernetes/cmd/kube-scheduler@"$K8S_VERSION" go.etcd.io/etcd/server/v3
    go build "${GO_BUILD_FLAGS[@]}" -tags selinux,notest,grpcnotrace -ldflags "$ldf" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler
    go build "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  )
  "$out/kube-apiserver" --version
  touch "$out/.done"
}

# kwok: the fake kubelet that makes pods of Deployments Running and Ready without a container runtime.
tool_kwok() {
  local out=$CACHE_DIR/kwok-$KWOK_VERSION
  [[ -f $out/.done ]] && return 0
  log "building kwok $KWOK_VERSION"
  mkdir -p "$out"
  GOBIN=$out go install "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok@"$KWOK_VERSION"
  touch "$out/.done"
}

# helm, with its version ldflags so `helm version` tells the truth.
tool_helm() {
  local out=$CACHE_DIR/helm-$HELM_VERSION
  [[ -f $out/.done ]] && return 0
  log "building helm $HELM_VERSION"
  mkdir -p "$out"
  GOBIN=$out go install "${GO_BUILD_FLAGS[@]}" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    helm.sh/helm/v3/cmd/helm@"$HELM_VERSION"
  "$out/helm" version --short
  touch "$out/.done"
}

# MongoDB wire-protocol server: nx-27017 (PyPI) in its own virtualenv. FerretDB v1.24.1, the planned
# server, is not served by the Go module proxy this machine reaches (403 on every version).
tool_mongo() {
  local out=$CACHE_DIR/nx27017-$NX27017_VERSION
  [[ -f $out/.done ]] && return 0
  log "installing nx-27017 $NX27017_VERSION (MongoDB wire protocol on SQLite) from PyPI"
  python3 -m venv "$out"
  "$out/bin/pip" install -q --disable-pip-version-check "nx-27017==$NX27017_VERSION" \
    "neosqlite==$NEOSQLITE_VERSION" "pymongo==$PYMONGO_VERSION"
  touch "$out/.done"
}

mvn_get() { # mvn_get OUTDIR ARGS... : runs the pinned maven-dependency-plugin
  local outdir=$1; shift
  mvn -B -q "org.apache.maven.plugins:maven-dependency-plugin:$MAVEN_DEPENDENCY_PLUGIN:$1" "${@:2}" -DoutputDirectory="$outdir"
}

# Apache Kafka broker (KRaft) from Maven Central jars. The POM brings no logging binding; Kafka 4.1 uses
# slf4j 1.7, so the binding is log4j-slf4j-impl (the slf4j2 one is silently ignored: NOP logger).
tool_kafka() {
  local out=$CACHE_DIR/kafka-$KAFKA_VERSION
  [[ -f $out/.done ]] && return 0
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central"
  mkdir -p "$out/libs"
  cat > "$out/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>dev.shopkeeper.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version><packaging>pom</packaging>
 <dependencies>
  <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
  <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-1.2-api</artifactId><version>$LOG4J_VERSION</version></dependency>
 </dependencies></project>
POM
  mvn_get "$out/libs" copy-dependencies -f "$out/pom.xml" -DincludeScope=runtime
  touch "$out/.done"
}

# Zipkin server, the exec jar, in-memory storage.
tool_zipkin() {
  local out=$CACHE_DIR/zipkin-$ZIPKIN_VERSION
  [[ -f $out/.done ]] && return 0
  log "fetching zipkin-server $ZIPKIN_VERSION"
  mkdir -p "$out"
  mvn_get "$out" copy -Dartifact="io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec"
  touch "$out/.done"
}

# Debian packages: MariaDB server (and nginx, wrk and valgrind, used only by `make bench`).
tool_apt() {
  local missing=()
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v valgrind >/dev/null || missing+=(valgrind)
  command -v cmake >/dev/null || missing+=(cmake)
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

main() {
  local what=("$@")
  ((${#what[@]})) || what=(all)
  for t in "${what[@]}"; do
    case $t in
      all) tool_apt; tool_kafka; tool_zipkin; tool_mongo; tool_kwok; tool_helm; tool_k8s ;;
      k8s|kwok|helm|mongo|kafka|zipkin|apt) "tool_$t" ;;
      *) die "unknown tool '$t'" ;;
    esac
  done
}

# Paths other scripts use.
K8S_BIN=$CACHE_DIR/k8s-$K8S_VERSION
KWOK_BIN=$CACHE_DIR/kwok-$KWOK_VERSION/kwok
HELM_BIN=$CACHE_DIR/helm-$HELM_VERSION/helm
NX27017_BIN=$CACHE_DIR/nx27017-$NX27017_VERSION/bin/nx-27017
KAFKA_LIBS=$CACHE_DIR/kafka-$KAFKA_VERSION/libs
ZIPKIN_JAR=$CACHE_DIR/zipkin-$ZIPKIN_VERSION/zipkin-server-$ZIPKIN_VERSION-exec.jar

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
