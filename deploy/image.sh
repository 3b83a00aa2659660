#!/usr/bin/env bash
# Builds Myelin's container image without a Docker daemon, with buildah from Debian's packages
# (vfs storage, chroot isolation: it runs as root on a plain machine, no daemon, no registry):
#
#   deploy/image.sh            # -> image myelin:0.1.0 in buildah's store, and
#                              #    target/image/myelin-0.1.0.oci.tar (OCI archive: podman load,
#                              #    skopeo copy to a registry, or ctr/k3s import)
#   deploy/image.sh --check    # the same, then starts the image's `myelin serve` and waits for
#                              #    "myelin ready" (ONNX Runtime and the bundled models load)
#
# No base image can be pulled here (only the package registries are reachable), so the image
# is built from scratch: the release binary, the shared libraries it and the libraries in
# runtime/ link against (as ldd lists them, copied from this Debian 12 machine), runtime/
# (ONNX Runtime, liblsl), models/ (the decoders a user attaches; the per-seed benchmark
# variants in evaluation-models/ stay out), CA certificates, and user myelin (10001), which
# deploy/k8s/statefulset.yaml runs as. Working directory /opt/myelin: the server finds
# runtime/ and models/ there.
set -euo pipefail
cd "$(dirname "$0")/.."
image=myelin:0.1.0
archive=target/image/myelin-0.1.0.oci.tar
log() { printf '[image] %s\n' "$*" >&2; }

[[ -f runtime/libonnxruntime.so.1.31.1 && -f runtime/liblsl.so.2 ]] || ./deploy/setup.sh
if ! command -v buildah >/dev/null; then
  log "installing buildah (Debian package)"
  sudo=""
  (( $(id -u) == 0 )) || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends buildah >/dev/null
fi
log "building the release binary"
cargo build --release --locked --bin myelin

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
app=$rootfs/opt/myelin
mkdir -p "$app" "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/var/lib/myelin" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 target/release/myelin "$rootfs/usr/local/bin/myelin"
cp -r runtime models "$app/"
rm -rf "$app/runtime/gpu"
# The libraries the binary and runtime/ need, at the paths the loader looks in.
libraries=$(ldd target/release/myelin runtime/libonnxruntime.so.1.31.1 runtime/liblsl.so.2 |
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
for library in $libraries; do
  mkdir -p "$rootfs$(dirname "$library")"
  cp -L "$library" "$rootfs$library"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" 2>/dev/null || log "no CA bundle on this machine: NATS over TLS will need one mounted"
printf 'root:x:0:0:root:/root:/sbin/nologin\nmyelin:x:10001:10001:myelin:/var/lib/myelin:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nmyelin:x:10001:\n' >"$rootfs/etc/group"
chown -R 10001:10001 "$rootfs/var/lib/myelin"

export BUILDAH_ISOLATION=chroot
buildah=(buildah --storage-driver vfs)
log "assembling $image from scratch ($(du -sh "$rootfs" | cut -f1))"
container=$("${buildah[@]}" from scratch)
"${buildah[@]}" copy --quiet "$container" "$rootfs" / >/dev/null
"${buildah[@]}" config --user 10001:10001 --workingdir /opt/myelin \
  --entrypoint '["/usr/local/bin/myelin"]' --cmd '["serve"]' \
  --port 50051 --port 9464 --env RUST_LOG=info,ort=warn \
  --label org.opencontainers.image.title=myelin --label org.opencontainers.image.version=0.1.0 \
  --label org.opencontainers.image.source="$(git config --get remote.origin.url 2>/dev/null || echo local)" \
  --label org.opencontainers.image.revision="$(git rev-parse HEAD)" "$container"
"${buildah[@]}" commit --quiet --rm "$container" "$image" >/dev/null
mkdir -p "$(dirname "$archive")"
rm -f "$archive"
"${buildah[@]}" push --quiet "$image" "oci-archive:$archive:$image"
log "built $image; saved as $archive ($(du -h "$archive" | cut -f1))"

if [[ ${1:-} == --check ]]; then
  log "check: starting the image's myelin serve (loopback, ports picked by the OS)"
  container=$("${buildah[@]}" from "$image")
  out=$(mktemp)
  # In its own process group, so that stopping it stops the server inside and nothing else.
  setsid "${buildah[@]}" run --env MYELIN_SERVER__GRPC_ADDR=127.0.0.1:0 --env MYELIN_SERVER__HTTP_ADDR=127.0.0.1:0 \
    "$container" -- /usr/local/bin/myelin serve >"$out" 2>&1 &
  runner=$!
  for _ in $(seq 120); do
    grep -q '^myelin ready ' "$out" && break
    kill -0 "$runner" 2>/dev/null || break
    sleep 0.5
  done
  ready=$(grep '^myelin ready ' "$out" || true)
  kill -TERM -- -"$runner" 2>/dev/null || true
  wait "$runner" 2>/dev/null || true
  "${buildah[@]}" rm "$container" >/dev/null
  if [[ -z $ready ]]; then
    tail -20 "$out" >&2
    log "check FAILED: the image's server never said it was ready"
    exit 1
  fi
  log "check: $ready"
  grep -E 'models? (loaded|ready)|loaded [0-9]+ models' "$out" | head -3 >&2 || true
fi
