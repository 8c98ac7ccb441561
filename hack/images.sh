#!/usr/bin/env bash
# OCI images of the operator and the six components, built without Docker from the binaries cargo already
# built, for the real node's containerd (no registry is reachable, so images are imported, never pulled).
# Each image holds what the runtime stage of docker/*.Dockerfile holds (gcr.io/distroless/cc-debian12:nonroot
# plus the binary): the binary at the same path, exactly the shared libraries `ldd` lists for it, CA
# certificates, /etc/passwd and /etc/group with nonroot (65532), /tmp, and the same USER, WORKDIR,
# ENTRYPOINT, CMD and ENV; no shell. tests/e2e/tests/images.rs fails when this recipe and the Dockerfiles
# drift apart. umoci writes the layout, layer and config; skopeo turns it into an archive `ctr` imports.
# Also the pod sandbox image (pause), compiled from the pause.c of the Kubernetes module we build.
# And the images of a Shop's managed stores for the local node (examples/shop.yaml names them), which
# cannot pull the public ones the CRD defaults to; each honours the same environment as its public
# counterpart (operator/src/stores.rs sets it), runs as the operator's Store::run_as uid, has no shell:
#   store-mariadb   Debian's mariadbd + its libraries and share files; entrypoint shop-store-entry mariadb
#   store-ferretdb  the FerretDB binary hack/tools.sh builds (static); entrypoint /ferretdb
#   store-kafka     a jlink'd JRE of the host's JDK + the Kafka jars; entrypoint shop-store-entry kafka
#   store-zipkin    the same JRE + Zipkin's exec jar; entrypoint shop-store-entry zipkin
# (shop-store-entry: hack/store-entry, the public images' shell entrypoints in Rust.)
# Usage: hack/images.sh build [debug|release] | import | list
#   build    one archive per image under $STATE_DIR/images (an image whose inputs did not change is kept)
#   import   import every archive into the node's containerd (namespace k8s.io); tag each shop image a
#            second time (:$SHOP_IMAGE_SECOND_TAG, default dev2)
#   list     print "name<TAB>reference<TAB>archive" for every image
#   sizes    print a markdown table of the archives' sizes (docs/benchmarks.md)
# tools.sh for the paths of the stores' inputs (FerretDB, Kafka, Zipkin); it defines, runs nothing.
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

REPO=${SHOP_IMAGE_REPO:-shopkeeper.local}
TAG=${SHOP_IMAGE_TAG:-dev}
# The second tag every shop image gets on import, so a rolling update can switch tags without a rebuild.
SECOND_TAG=${SHOP_IMAGE_SECOND_TAG:-dev2}
PAUSE_IMAGE=${SHOP_PAUSE_IMAGE:-shopkeeper.local/pause:3.10}
CONTAINERD_SOCK=${SHOP_CONTAINERD_SOCK:-/run/shopkeeper/containerd/containerd.sock}
IMAGES_DIR=$STATE_DIR/images
SERVICES=(shop-registry shop-gateway shop-product shop-inventory shop-order shop-notification)
OPERATOR=shop-operator
STORES=(store-mariadb store-ferretdb store-kafka store-zipkin)
STORE_ENTRY_PATH=/usr/local/bin/shop-store-entry
# Store::run_as of operator/src/stores.rs (tests/e2e/tests/images.rs compares).
MYSQL_UID=999
STORE_UID=1000
# The JRE of the JVM stores: these modules of the host's JDK, linked once per JDK version.
JRE_MODULES=java.base,java.compiler,java.desktop,java.instrument,java.logging,java.management,java.management.rmi,java.naming,java.net.http,java.prefs,java.rmi,java.scripting,java.security.jgss,java.security.sasl,java.sql,java.transaction.xa,java.xml,jdk.crypto.ec,jdk.httpserver,jdk.jfr,jdk.management,jdk.naming.dns,jdk.net,jdk.unsupported,jdk.zipfs

# The runtime contract, one line per fact; docker/*.Dockerfile declare the same (the test compares them).
# From the base image gcr.io/distroless/cc-debian12:nonroot:
BASE_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
BASE_WORKDIR=/home/nonroot
# From docker/service.Dockerfile and docker/operator.Dockerfile:
NONROOT=65532
SERVICE_PATH=/usr/local/bin/app
SERVICE_ENV=(SHOP_BIND=0.0.0.0)
OPERATOR_PATH=/usr/local/bin/shop-operator
OPERATOR_CMD=(run)
# From the Kubernetes pause image (build/pause/Dockerfile): the binary alone, as 65535.
PAUSE_USER=65535:65535

ref_of() { [[ $1 == pause ]] && echo "$PAUSE_IMAGE" || echo "$REPO/$1:$TAG"; }
all_images() { echo "$OPERATOR" "${SERVICES[@]}" pause "${STORES[@]}"; }

need() { command -v "$1" >/dev/null || die "$1 is required ($2; hack/tools.sh apt installs it)"; }

# Shared libraries of an ELF file as absolute paths (the dynamic loader included), as ldd resolves them.
needed_libs() {
  local bin=$1 out
  out=$(ldd "$bin" 2>&1) || { [[ $out == *"not a dynamic executable"* ]] && return 0; die "ldd $bin: $out"; }
  [[ $out != *"not found"* ]] || die "$bin needs a library this machine lacks: $out"
  awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' <<<"$out"
}

# new_rootfs DIR: the files every Rust image carries besides the binary and its libraries, owned as in
# distroless (root, except nonroot's home).
new_rootfs() {
  local r=$1
  mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/home/nonroot"
  chmod 1777 "$r/tmp"
  chmod 0700 "$r/home/nonroot"
  chown "$NONROOT:$NONROOT" "$r/home/nonroot"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    "nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin" > "$r/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' "nonroot:x:$NONROOT:" > "$r/etc/group"
  # glibc's default for a missing nsswitch.conf asks DNS before /etc/hosts; pods expect files first.
  printf 'hosts: files dns\n' > "$r/etc/nsswitch.conf"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
}

# build_one NAME BINARY: builds $IMAGES_DIR/NAME.tar unless its stamp says the inputs are unchanged.
build_one() {
  local name=$1 bin=$2 ref path user workdir libs=() entry=() cmd=() env=()
  ref=$(ref_of "$name")
  case $name in
    pause) path=/pause; user=$PAUSE_USER; workdir=; entry=(/pause) ;;
    "$OPERATOR") path=$OPERATOR_PATH; user=$NONROOT:$NONROOT; workdir=$BASE_WORKDIR
      entry=("$path"); cmd=("${OPERATOR_CMD[@]}"); env=("${BASE_ENV[@]}") ;;
    *) path=$SERVICE_PATH; user=$NONROOT:$NONROOT; workdir=$BASE_WORKDIR
      entry=("$path"); env=("${BASE_ENV[@]}" "${SERVICE_ENV[@]}") ;;
  esac
  local found
  found=$(needed_libs "$bin")
  [[ -z $found ]] || mapfile -t libs <<<"$found"

  # Inputs: the binary, its libraries, the CA bundle, this script (the recipe) and the reference.
  local stamp=$IMAGES_DIR/$name.stamp out=$IMAGES_DIR/$name.tar sum
  local inputs=("$bin" "${BASH_SOURCE[0]}")
  [[ $name == pause ]] || inputs+=("${libs[@]}" /etc/ssl/certs/ca-certificates.crt)
  sum=$( { echo "$ref"; sha256sum "${inputs[@]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
  if [[ -f $out && -f $stamp && $(cat "$stamp") == "$sum" ]]; then
    log "image $ref unchanged ($out)"
    return 0
  fi

  fill_rust() {
    local r=$1 lib
    [[ $name == pause ]] || new_rootfs "$r"
    mkdir -p "$r$(dirname "$path")"
    # Debug builds carry line tables; the image does not need them (symbols stay, for backtraces).
    objcopy --strip-debug "$bin" "$r$path"
    chmod 0755 "$r$path"
    for lib in "${libs[@]}"; do
      mkdir -p "$r$(dirname "$lib")"
      cp -L --preserve=mode "$lib" "$r$lib"
    done
  }
  pack_image "$name" "$ref" "$sum" "$user" "$workdir" fill_rust
}

# pack_image NAME REF SUM USER WORKDIR FILL: umoci's own cycle: an empty image, unpacked to a bundle,
# filled by `FILL ROOTFS`, repacked into one layer, configured with the caller's arrays entry, cmd
# and env, written to $IMAGES_DIR/NAME.tar with SUM as its stamp.
pack_image() {
  local name=$1 ref=$2 sum=$3 user=$4 workdir=$5 fill=$6
  local out=$IMAGES_DIR/$name.tar stamp=$IMAGES_DIR/$name.stamp
  local work=$IMAGES_DIR/work/$name epoch=1970-01-01T00:00:00Z
  local layout=$work/oci bundle=$work/bundle
  rm -rf "$work"
  mkdir -p "$work"
  umoci init --layout "$layout"
  umoci new --image "$layout:img"
  umoci unpack --image "$layout:img" "$bundle" >/dev/null
  "$fill" "$bundle/rootfs"
  # Fixed times, so unchanged inputs give an identical layer and image digest.
  find "$bundle/rootfs" -exec touch -h -d @0 {} +
  umoci repack --image "$layout:img" --history.created "$epoch" --history.created_by "hack/images.sh" "$bundle"

  local cfg=(--config.user "$user") a
  [[ -z $workdir ]] || cfg+=(--config.workingdir "$workdir")
  for a in "${entry[@]}"; do cfg+=(--config.entrypoint "$a"); done
  for a in "${cmd[@]}"; do cfg+=(--config.cmd "$a"); done
  for a in "${env[@]}"; do cfg+=(--config.env "$a"); done
  umoci config --image "$layout:img" "${cfg[@]}" --created "$epoch" \
    --history.created "$epoch" --history.created_by "hack/images.sh config"
  rm -f "$out.new"
  skopeo copy --quiet "oci:$layout:img" "oci-archive:$out.new:$ref"
  mv -f "$out.new" "$out"
  echo "$sum" > "$stamp"
  rm -rf "$work"
  log "image $ref built: $(du -h "$out" | cut -f1) ($out)"
}

# ---------------------------------------------------------------- store images
# add_user ROOTFS NAME UID HOME: the store's user (and group), its home owned by it.
add_user() {
  local r=$1 user=$2 uid=$3 home=$4
  printf '%s:x:%s:%s:%s:%s:/sbin/nologin\n' "$user" "$uid" "$uid" "$user" "$home" >> "$r/etc/passwd"
  printf '%s:x:%s:\n' "$user" "$uid" >> "$r/etc/group"
  mkdir -p "$r$home"
  chown "$uid:$uid" "$r$home"
}

# copy_libs_of ROOTFS FILE [OWN_DIR]: the shared libraries ldd lists for FILE, each at its own path;
# those under OWN_DIR (a JRE's own, found through LD_LIBRARY_PATH) are already in the image.
copy_libs_of() {
  local r=$1 own=${3:-} found lib
  found=$(LD_LIBRARY_PATH=${own:+$own/lib:$own/lib/server} needed_libs "$2") || exit 1
  while read -r lib; do
    [[ -n $lib && ! -e $r$lib ]] || continue
    [[ -z $own || $lib != "$own"/* ]] || continue
    mkdir -p "$r$(dirname "$lib")"
    cp -L --preserve=mode "$lib" "$r$lib"
  done <<<"$found"
}

# A data directory the store's uid writes (the volume is mounted over it; fsGroup applies there).
data_dir() { mkdir -p "$1$2"; chown "$3:$3" "$1$2"; chmod 0770 "$1$2"; }

# The JRE of the JVM stores: jlink of the host's JDK, cached per JDK version and module list.
jre_dir() {
  local version sum dir
  version=$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.runtime.version/ {print $2}')
  sum=$(printf '%s %s' "$version" "$JRE_MODULES" | sha256sum | cut -c1-12)
  dir=$CACHE_DIR/jre-$version-$sum
  if [[ ! -x $dir/bin/java ]]; then
    log "jlink: a JRE of $version for the Kafka and Zipkin images ($dir)"
    rm -rf "$dir.new"
    jlink --add-modules "$JRE_MODULES" --strip-debug --no-header-files --no-man-pages --compress=2 \
      --output "$dir.new" >&2
    mv "$dir.new" "$dir"
  fi
  echo "$dir"
}

# sum_of FILE|DIR...: one digest of the inputs (a directory: every file under it, by path).
sum_of() {
  local f
  for f in "$@"; do
    if [[ -d $f ]]; then find "$f" -type f -print0 | sort -z | xargs -0 sha256sum; else sha256sum "$f"; fi
  done | sha256sum | cut -d' ' -f1
}

build_store() {
  local name=$1 entry_bin=$2 ref sum user workdir= entry=() cmd=() env=() inputs=() jre= extra_env=()
  ref=$(ref_of "$name")
  case $name in
    store-mariadb)
      user=$MYSQL_UID:$MYSQL_UID; entry=("$STORE_ENTRY_PATH" mariadb)
      inputs=(/usr/sbin/mariadbd /usr/share/mysql/english /usr/share/mysql/charsets /usr/share/mysql/*.sql) ;;
    store-ferretdb)
      [[ -x $FERRETDB_BIN ]] || die "$FERRETDB_BIN is missing: run hack/tools.sh mongo"
      # As in FerretDB's own image: its state file goes to the volume, not to the working directory.
      user=$STORE_UID:$STORE_UID; entry=(/ferretdb); inputs=("$FERRETDB_BIN"); extra_env=(FERRETDB_STATE_DIR=/state) ;;
    store-kafka)
      [[ -d $KAFKA_LIBS ]] || die "$KAFKA_LIBS is missing: run hack/tools.sh kafka"
      jre=$(jre_dir); user=$STORE_UID:$STORE_UID; entry=("$STORE_ENTRY_PATH" kafka)
      inputs=("$jre/release" "$KAFKA_LIBS") ;;
    store-zipkin)
      [[ -f $ZIPKIN_JAR ]] || die "$ZIPKIN_JAR is missing: run hack/tools.sh zipkin"
      jre=$(jre_dir); user=$STORE_UID:$STORE_UID; entry=("$STORE_ENTRY_PATH" zipkin)
      inputs=("$jre/release" "$ZIPKIN_JAR") ;;
  esac
  env=("${BASE_ENV[@]}")
  [[ -z $jre ]] || env=("PATH=/opt/java/bin:${BASE_ENV[0]#PATH=}" "${BASE_ENV[@]:1}" JAVA_HOME=/opt/java)
  env+=("${extra_env[@]}")
  [[ $name == store-ferretdb ]] || inputs+=("$entry_bin")
  sum=$( { echo "$ref"; sum_of "${inputs[@]}" "${BASH_SOURCE[0]}"; } | sha256sum | cut -d' ' -f1)
  if [[ -f $IMAGES_DIR/$name.tar && -f $IMAGES_DIR/$name.stamp && $(cat "$IMAGES_DIR/$name.stamp") == "$sum" ]]; then
    log "image $ref unchanged ($IMAGES_DIR/$name.tar)"
    return 0
  fi
  fill_store() {
    local r=$1
    new_rootfs "$r"
    if [[ $name != store-ferretdb ]]; then
      mkdir -p "$r$(dirname "$STORE_ENTRY_PATH")"
      objcopy --strip-debug "$entry_bin" "$r$STORE_ENTRY_PATH"
      chmod 0755 "$r$STORE_ENTRY_PATH"
      copy_libs_of "$r" "$entry_bin"
    fi
    case $name in
      store-mariadb)
        add_user "$r" mysql "$MYSQL_UID" /var/lib/mysql
        mkdir -p "$r/usr/sbin"
        cp -L --preserve=mode /usr/sbin/mariadbd "$r/usr/sbin/mariadbd"
        copy_libs_of "$r" /usr/sbin/mariadbd
        mkdir -p "$r/usr/share/mysql" "$r/docker-entrypoint-initdb.d"
        cp -R /usr/share/mysql/english /usr/share/mysql/charsets "$r/usr/share/mysql/"
        cp /usr/share/mysql/*.sql "$r/usr/share/mysql/"
        data_dir "$r" /var/lib/mysql "$MYSQL_UID" ;;
      store-ferretdb)
        add_user "$r" ferretdb "$STORE_UID" /home/ferretdb
        install -m 0755 "$FERRETDB_BIN" "$r/ferretdb"
        data_dir "$r" /state "$STORE_UID" ;;
      store-kafka|store-zipkin)
        add_user "$r" appuser "$STORE_UID" /home/appuser
        mkdir -p "$r/opt"
        cp -R "$jre" "$r/opt/java"
        local so
        for so in $(find "$jre" -type f \( -name '*.so' -o -path '*/bin/java' \)); do copy_libs_of "$r" "$so" "$jre"; done
        if [[ $name == store-kafka ]]; then
          mkdir -p "$r/opt/kafka"
          cp -R "$KAFKA_LIBS" "$r/opt/kafka/libs"
          data_dir "$r" /var/lib/kafka/data "$STORE_UID"
        else
          mkdir -p "$r/opt/zipkin"
          cp "$ZIPKIN_JAR" "$r/opt/zipkin/zipkin.jar"
        fi ;;
    esac
  }
  pack_image "$name" "$ref" "$sum" "$user" "$workdir" fill_store
}

# The pod sandbox binary: Kubernetes' pause.c from the module cache (hack/tools.sh k8s downloads it),
# built the way build/pause/Makefile builds it (static, -Os) and stripped.
build_pause_binary() {
  local src
  src=$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause
  [[ -f $src/linux/pause.c ]] || die "$src/linux/pause.c is missing: run hack/tools.sh k8s first"
  local version out=$IMAGES_DIR/bin/pause
  version=$(sed -n 's/^TAG ?= //p' "$src/Makefile")
  mkdir -p "$IMAGES_DIR/bin"
  if [[ ! -x $out || $src/linux/pause.c -nt $out ]]; then
    gcc -Os -Wall -Werror -static -DVERSION="v$version-$K8S_VERSION" -o "$out.new" "$src/linux/pause.c"
    strip "$out.new"
    mv -f "$out.new" "$out"
  fi
  echo "$out"
}

build() {
  local profile=${1:-debug} flags=()
  case $profile in debug) ;; release) flags=(--release) ;; *) die "unknown profile '$profile' (debug|release)" ;; esac
  need umoci "Debian package umoci"; need skopeo "Debian package skopeo"; need gcc "Debian package gcc"
  need objcopy "Debian package binutils"
  mkdir -p "$IMAGES_DIR"
  exec 9>"$IMAGES_DIR/.lock"
  flock 9
  local target=$ROOT_DIR/target/$profile n missing=0
  for n in "$OPERATOR" "${SERVICES[@]}"; do [[ -x $target/$n ]] || missing=1; done
  if ((missing)); then
    log "a $profile binary is missing: cargo build --workspace --bins --locked ${flags[*]}"
    (cd "$ROOT_DIR" && cargo build --workspace --bins --locked "${flags[@]}")
  fi
  for n in "$OPERATOR" "${SERVICES[@]}"; do build_one "$n" "$target/$n"; done
  build_one pause "$(build_pause_binary)"
  [[ -x $target/shop-store-entry ]] || (cd "$ROOT_DIR" && cargo build -p shop-store-entry --locked "${flags[@]}")
  for n in "${STORES[@]}"; do build_store "$n" "$target/shop-store-entry"; done
}

import() {
  need ctr "Debian package containerd"
  [[ -S $CONTAINERD_SOCK ]] || die "no containerd socket at $CONTAINERD_SOCK (is the node up? set SHOP_CONTAINERD_SOCK)"
  local ctr=(ctr --address "$CONTAINERD_SOCK" -n k8s.io) n ref tar
  for n in $(all_images); do
    ref=$(ref_of "$n"); tar=$IMAGES_DIR/$n.tar
    [[ -f $tar ]] || die "$tar is missing: run hack/images.sh build first"
    "${ctr[@]}" images import "$tar" >/dev/null || die "ctr images import $tar failed"
    "${ctr[@]}" images ls -q "name==$ref" | grep -qx "$ref" || die "$tar did not register as $ref"
    if [[ $n == pause || $n == store-* ]]; then log "imported $ref into $CONTAINERD_SOCK"; continue; fi
    "${ctr[@]}" images tag --force "$ref" "${ref%:*}:$SECOND_TAG" >/dev/null
    log "imported $ref (+ :$SECOND_TAG) into $CONTAINERD_SOCK"
  done
}

list() {
  local n
  for n in $(all_images); do printf '%s\t%s\t%s\n' "$n" "$(ref_of "$n")" "$IMAGES_DIR/$n.tar"; done
}

# A markdown table of each archive's sizes (docs/benchmarks.md, "Images"): the archive, its gzip layer,
# the unpacked files, and of those the binary and the shared libraries.
sizes() {
  local n
  echo "| image | archive | layer (gzip) | unpacked | binary | libraries |"
  echo "|---|---:|---:|---:|---:|---:|"
  for n in $(all_images); do
    python3 - "$(ref_of "$n")" "$IMAGES_DIR/$n.tar" <<'PY'
import gzip, json, os, sys, tarfile
ref, path = sys.argv[1:]
arc = tarfile.open(path)
blob = lambda d: arc.extractfile("blobs/" + d.replace(":", "/"))
manifest = json.load(blob(json.load(arc.extractfile("index.json"))["manifests"][0]["digest"]))
entry = json.load(blob(manifest["config"]["digest"]))["config"]["Entrypoint"][0].lstrip("/")
layers = total = binary = libs = 0
for layer in manifest["layers"]:
    layers += layer["size"]
    for f in tarfile.open(fileobj=gzip.GzipFile(fileobj=blob(layer["digest"]))):
        total += f.size
        binary += f.size if f.name.lstrip("./") == entry else 0
        libs += f.size if ".so" in f.name.rsplit("/", 1)[-1] else 0
mib = lambda b: f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"
print(f"| `{ref}` | {mib(os.path.getsize(path))} | {mib(layers)} | {mib(total)} | {mib(binary)} | {mib(libs)} |")
PY
  done
}

main() {
  case "${1:-}" in
    build) build "${2:-debug}" ;;
    import) import ;;
    list) list ;;
    sizes) sizes ;;
    *) sed -n '10,15p' "$0" >&2; exit 2 ;;
  esac
}

# Sourced (e.g. for $PAUSE_IMAGE), it only defines; run, it does what the arguments say.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
