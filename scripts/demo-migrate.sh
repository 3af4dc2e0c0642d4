#!/usr/bin/env bash
# ckpt migrate between two "hosts" on this machine: two network namespaces
# joined by a veth pair, a private containerd with ckpt's shim in each. A
# counter runs on host A; `ckpt migrate --copy`, run on host A, moves it to
# host B through B's containerd socket (what `ssh -L` forwards from a real
# host B), and the counter continues on B from where it was.
#
# Needs root and what `make setup` installs; `make demo-migrate` builds
# ckpt first. Everything lives under one temp dir and two namespaces named
# ckpt-demo-a/b-PID, removed at the end (CKPT_DEMO_KEEP=1 keeps the dir).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/bin
export PATH=$bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUNTIME=io.containerd.ckpt.v2
NS=ckpt-demo-migrate
IMAGE=docker.io/ckpt/busybox:demo
A=ckpt-demo-a-$$
B=ckpt-demo-b-$$

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo-migrate: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (containers, CRIU, network namespaces)"
for b in "$bin/ckpt" "$bin/containerd-shim-ckpt-v2"; do
  [ -x "$b" ] || die "$b missing: run 'make build' (or 'make demo-migrate')"
done
for c in containerd ctr criu runc ip nsenter /bin/busybox; do
  command -v "$c" >/dev/null || die "$c not found: run 'make setup' first"
done

dir=$(mktemp -d /tmp/ckpt-demo-migrate.XXXXXX)
pids=()
ctr_on() { local h=$1; shift; command ctr --address "$dir/$h/containerd.sock" --namespace "$NS" "$@" 2> >(grep -v "support for cgroup v1 is deprecated" >&2); }

cleanup() {
  local rc=$?
  set +e
  for h in a b; do
    if [ -S "$dir/$h/containerd.sock" ]; then
      ctr_on "$h" task kill -s KILL counter >/dev/null 2>&1
      sleep 0.3
      ctr_on "$h" task delete -f counter >/dev/null 2>&1
      ctr_on "$h" container delete counter >/dev/null 2>&1
    fi
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  # Shims of these daemons that outlived them (matched by their socket).
  for h in a b; do
    for p in $(pgrep -f "containerd-shim-ckpt-v2.*-address $dir/$h/containerd.sock( |$)"); do kill -KILL "$p"; done
  done
  if [ $rc -ne 0 ]; then
    for h in a b; do
      echo "demo failed; host $h's containerd log, last lines:" >&2
      tail -20 "$dir/$h/containerd.log" >&2 2>/dev/null
    done
  fi
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$NS" -exec rmdir {} + 2>/dev/null
  # The shim's runc root for the namespace (empty once the tasks are gone).
  rmdir "/run/containerd/ckpt/$NS" 2>/dev/null
  awk -v d="$dir" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip netns del "$A" 2>/dev/null
  ip netns del "$B" 2>/dev/null
  if [ "${CKPT_DEMO_KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
  exit $rc
}
trap cleanup EXIT

say "two hosts: network namespaces $A (10.251.0.1) and $B (10.251.0.2), one veth pair"
ip netns add "$A"
ip netns add "$B"
ip link add "dma$$" type veth peer name "dmb$$"
ip link set "dma$$" netns "$A"
ip link set "dmb$$" netns "$B"
ip -n "$A" addr add 10.251.0.1/30 dev "dma$$"
ip -n "$B" addr add 10.251.0.2/30 dev "dmb$$"
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set "dma$$" up
ip -n "$B" link set "dmb$$" up
if command -v ping >/dev/null; then
  ip netns exec "$A" ping -c1 -W2 10.251.0.2 >/dev/null && echo "A reaches B over the veth pair"
fi

start_containerd() { # host netns
  local h=$1 n=$2 d=$dir/$1
  mkdir -p "$d"
  cat >"$d/config.toml" <<EOF
version = 3
root = '$d/root'
state = '$d/state'
disabled_plugins = ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.images', 'io.containerd.cri.v1.runtime', 'io.containerd.nri.v1.nri', 'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing']

[grpc]
  address = '$d/containerd.sock'

[ttrpc]
  address = '$d/containerd.sock.ttrpc'
EOF
  nsenter --net="/run/netns/$n" -- containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    ctr_on "$h" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "containerd of host $h did not come up"
}
say "a containerd with ckpt's shim on each host (own root, state, socket)"
start_containerd a "$A"
start_containerd b "$B"
echo "host a: $dir/a/containerd.sock   host b: $dir/b/containerd.sock"

say "the same busybox image on both hosts (built locally, no registry)"
img=$dir/image
mkdir -p "$img/rootfs/bin" "$img/rootfs"/{dev,proc,sys,tmp,etc} "$img/oci/blobs/sha256"
cp /bin/busybox "$img/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$img/rootfs/bin/$a"; done
blob() {
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
ctr_on a image import "$img/busybox.tar" >/dev/null
ctr_on b image import "$img/busybox.tar" >/dev/null

say "host a: ctr run -d --runtime $RUNTIME counter (counts in shell memory, prints to a log)"
ctr_on a run -d --runtime "$RUNTIME" --log-uri "file://$dir/a-counter.log" "$IMAGE" counter \
  sh -c 'i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done'
last() { tail -n1 "$1" 2>/dev/null || echo 0; }
for _ in $(seq 100); do [ "$(last "$dir/a-counter.log")" -gt 5 ] && break; sleep 0.1; done
echo "on host a the counter is at $(last "$dir/a-counter.log")"

say "host a: ckpt migrate --copy counter --to host b (B's socket, as 'ssh -L' would forward it)"
nsenter --net="/run/netns/$A" -- ckpt migrate --copy --address "$dir/a/containerd.sock" --namespace "$NS" \
  --to "$dir/b/containerd.sock" --stdio "file://$dir/b-counter.log" counter
was=$(last "$dir/a-counter.log")

say "where is the counter now?"
echo "host a containers: $(ctr_on a container ls -q | tr '\n' ' ')(none expected)"
echo "host b tasks:"
ctr_on b task ls
for _ in $(seq 100); do [ "$(wc -l <"$dir/b-counter.log" 2>/dev/null || echo 0)" -ge 3 ] && break; sleep 0.1; done
first=$(head -n1 "$dir/b-counter.log")
echo "host a's counter stopped at $was; on host b it went on with $first, now $(last "$dir/b-counter.log")"
[ -n "$first" ] && [ "$first" -gt "$was" ] && [ "$first" -le $((was + 2)) ] || die "the moved counter did not continue from $was (it printed '$first')"
echo "the counter on host b is the same shell, memory and all"

say "demo done: a running container moved between two containerds"
