#!/usr/bin/env bash
# The main job: a private containerd with ckpt's shim, a counter container
# run through io.containerd.ckpt.v2, checkpointed and restored with ctr, and
# proof that the restored counter continues where it stopped.
#
# Needs root and what scripts/setup.sh installs; `make demo` builds ckpt
# first. Everything lives under one temp dir and is removed at the end
# (CKPT_DEMO_KEEP=1 keeps the dir and containerd's log for a post-mortem).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/bin
export PATH=$bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUNTIME=io.containerd.ckpt.v2
NS=ckpt-demo
IMAGE=docker.io/ckpt/busybox:demo

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (containers, CRIU)"
for b in "$bin/ckpt" "$bin/containerd-shim-ckpt-v2"; do
  [ -x "$b" ] || die "$b missing: run 'make build' (or 'make demo')"
done
for c in containerd ctr criu runc /bin/busybox; do
  command -v "$c" >/dev/null || die "$c not found: run 'make setup' first"
done

dir=$(mktemp -d /tmp/ckpt-demo.XXXXXX)
sock=$dir/containerd.sock
ctrd_pid=
# ctr, without its cgroup v1 deprecation warning on every call.
ctr() { command ctr --address "$sock" --namespace "$NS" "$@" 2> >(grep -v "support for cgroup v1 is deprecated" >&2); }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$ctrd_pid" ]; then
    ctr task kill -s KILL counter >/dev/null 2>&1
    sleep 0.3
    ctr task delete -f counter >/dev/null 2>&1
    ctr container delete counter >/dev/null 2>&1
    kill "$ctrd_pid" 2>/dev/null
    wait "$ctrd_pid" 2>/dev/null
  fi
  # Shims of this daemon that outlived it.
  pkill -KILL -f "containerd-shim-ckpt-v2.*-address $sock" 2>/dev/null
  if [ $rc -ne 0 ]; then
    echo "demo failed; containerd's log (shim logs included), last lines:" >&2
    tail -40 "$dir/containerd.log" >&2 2>/dev/null
  fi
  # containerd puts tasks under /<namespace>/<id>; runc removes the task's
  # cgroup, the empty namespace level is left to us.
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$NS" -exec rmdir {} + 2>/dev/null
  # Unmount whatever containerd left mounted under the dir, deepest first.
  awk -v d="$dir" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  if [ "${CKPT_DEMO_KEEP:-0}" = 1 ]; then
    echo "kept $dir"
  else
    rm -rf "$dir"
  fi
  exit $rc
}
trap cleanup EXIT

say "ckpt check: can this host checkpoint and restore containers?"
ckpt check

say "starting a private containerd ($(containerd --version | awk '{print $3}')) in $dir"
cat >"$dir/config.toml" <<EOF
version = 3
root = '$dir/root'
state = '$dir/state'
disabled_plugins = ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.images', 'io.containerd.cri.v1.runtime', 'io.containerd.nri.v1.nri', 'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing']

[grpc]
  address = '$sock'

[ttrpc]
  address = '$sock.ttrpc'

[debug]
  level = '${CKPT_DEMO_LOG_LEVEL:-info}'
EOF
containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 100); do
  ctr version >/dev/null 2>&1 && break
  kill -0 "$ctrd_pid" 2>/dev/null || die "containerd exited at start"
  sleep 0.1
done
ctr version >/dev/null || die "containerd did not come up"

say "building a busybox image from Debian's busybox-static (no registry) and importing it"
# An OCI image layout with one uncompressed layer.
img=$dir/image
mkdir -p "$img/rootfs/bin" "$img/rootfs"/{dev,proc,sys,tmp,etc,out} "$img/oci/blobs/sha256"
cp /bin/busybox "$img/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$img/rootfs/bin/$a"; done
blob() { # file -> prints "digest size" and stores the blob
  local d s
  d=$(sha256sum "$1" | awk '{print $1}')
  s=$(stat -c %s "$1")
  cp "$1" "$img/oci/blobs/sha256/$d"
  echo "$d $s"
}
tar -C "$img/rootfs" --owner=0 --group=0 --numeric-owner -cf "$img/layer.tar" .
read -r ld ls < <(blob "$img/layer.tar")
arch=$(go env GOARCH 2>/dev/null || echo amd64)
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$arch" "$ld" >"$img/config.json"
read -r cd cs < <(blob "$img/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$cd" "$cs" "$ld" "$ls" >"$img/manifest.json"
read -r md ms < <(blob "$img/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"demo"},"platform":{"architecture":"%s","os":"linux"}}]}' "$md" "$ms" "$IMAGE" "$arch" >"$img/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$img/oci/oci-layout"
tar -C "$img/oci" -cf "$img/busybox.tar" .
ctr image import "$img/busybox.tar" >/dev/null
ctr image ls -q | grep -qx "$IMAGE" || die "image import failed"

out=$dir/out
mkdir -p "$out"
counter='i=0; while :; do i=$((i+1)); echo $i >>/out/count; sleep 0.2; done'
last() { tail -n1 "$out/count" 2>/dev/null || echo 0; }
wait_for() { # wait until the counter passes $1
  for _ in $(seq 100); do [ "$(last)" -gt "$1" ] && return 0; sleep 0.1; done
  return 1
}

say "ctr run -d --runtime $RUNTIME ... counter (counts in shell memory, appends to a host file)"
ctr run -d --runtime "$RUNTIME" --mount "type=bind,src=$out,dst=/out,options=rbind:rw" \
  "$IMAGE" counter sh -c "$counter"
wait_for 5 || die "the counter did not start counting"
echo "counter is at $(last), task pid $(ctr task ls | awk '$1=="counter"{print $2}')"

say "ctr task checkpoint --image-path (leave running): what a checkpoint holds"
ctr task checkpoint --image-path "$dir/peek" --work-path "$dir/peek-work" counter
ckpt inspect "$dir/peek" | sed -n 1,20p

say "ctr container checkpoint --task counter $NS/counter:1"
# ctr pauses the task, checkpoints it and lets it run on: the checkpoint
# holds a value between these two readings.
before=$(last)
ctr container checkpoint --task counter "$NS/counter:1"
after=$(last)
echo "checkpointed while the count went from $before to $after"
ctr task kill -s KILL counter
for _ in $(seq 50); do ctr task ls | grep -q '^counter .*STOPPED' && break; sleep 0.1; done
ctr task delete counter >/dev/null
ctr container delete counter
lines=$(wc -l <"$out/count")
echo "container removed; it had counted on to $(last)"

say "ctr container restore --live counter $NS/counter:1"
ctr container restore --live counter "$NS/counter:1"
for _ in $(seq 100); do [ "$(wc -l <"$out/count")" -gt $((lines + 3)) ] && break; sleep 0.1; done
first=$(sed -n "$((lines + 1))p" "$out/count")
echo "restored task pid $(ctr task ls | awk '$1=="counter"{print $2}'): first value after restore $first, now $(last)"
[ -n "$first" ] && [ "$first" -gt "$before" ] && [ "$first" -le $((after + 1)) ] ||
  die "the restored counter did not continue from the checkpoint (between $before and $after); it wrote '$first'"
echo "the restored counter continued from the checkpoint: it is the same shell, memory and all"
ctr task exec --exec-id peek counter sh -c 'echo "exec in the restored container sees count $(tail -n1 /out/count)"'

say "demo done: checkpoint and restore through $RUNTIME work on this host"
