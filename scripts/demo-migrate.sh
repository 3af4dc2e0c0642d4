#!/usr/bin/env bash
# Live migration between two "hosts" on this machine, step by step.
#
# Each host is a network namespace (the two joined by a veth pair) holding a
# private containerd with ckpt's shim, in mount and cgroup namespaces of its
# own: a fresh tmpfs on /run/containerd/ckpt and /run/ckpt (ckpt's per-host
# state) and the cgroup hierarchies remounted so that they are rooted at a
# per-host cgroup ckpt-demo-a/b-PID (as internal/ctrd/host.go does for the
# tests). Two hosts can then hold the same container at the same time, which
# post-copy needs: the source frozen, serving its memory, while the target
# already runs it.
#
# A container (a busybox sh counter, plus a busybox sort holding
# CKPT_DEMO_MIB MiB, default 256) runs on host A.
#   Part 1: `ckpt migrate` post-copy (the default) moves it to host B; CRIU's
#           page server listens on A's veth address. The counter goes on, on
#           B, from where it was on A; the container is gone from A.
#   Part 2: `ckpt migrate --copy` (stop-and-copy) moves it back to A, for
#           comparison of the downtimes (CKPT_DEMO_COPY=0 leaves it out).
# The whole demo takes well under a minute. The ctr and ckpt commands are
# printed as they run ("host-a#"): on real hosts ctr needs no --address and
# `--to` is the target's socket forwarded over SSH or a TLS endpoint
# (docs/migrate.md); here each ctr gets --address $D/HOST/containerd.sock.
#
# Needs root and what `make setup` installs; `make demo-migrate` builds ckpt
# first. Everything lives under one temp dir ($D), two network namespaces and
# per-host cgroups named ckpt-demo-a/b-PID; all of it is removed at the end,
# even on failure (CKPT_DEMO_KEEP=1 keeps the dir). Leftovers of a demo run
# that was killed outright (its PID gone) are removed at the start.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/bin
export PATH=$bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUNTIME=io.containerd.ckpt.v2
NS=ckpt-demo-migrate
IMAGE=docker.io/ckpt/busybox:demo
MIB=${CKPT_DEMO_MIB:-256}
DO_COPY=${CKPT_DEMO_COPY:-1}
A=ckpt-demo-a-$$
B=ckpt-demo-b-$$
IP_A=10.251.0.1
IP_B=10.251.0.2
PAGE_PORT=27027
# Paths that get a fresh tmpfs on each host: the shim's runc root and its
# restore records.
STATE_DIRS=(/run/containerd/ckpt /run/ckpt)

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo-migrate: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (containers, CRIU, namespaces)"
[[ $MIB =~ ^[0-9]+$ ]] || die "CKPT_DEMO_MIB must be a number of MiB"
for b in "$bin/ckpt" "$bin/containerd-shim-ckpt-v2"; do
  [ -x "$b" ] || die "$b missing: run 'make build' (or 'make demo-migrate')"
done
for c in containerd ctr criu runc ip nsenter unshare /bin/busybox; do
  command -v "$c" >/dev/null || die "$c not found: run 'make setup' first"
done

# --- cgroup hierarchies -------------------------------------------------------
# The mounts at and under /sys/fs/cgroup, in mount order (v1's tmpfs before
# the hierarchies on it): "point fstype source options".
mounts=()
while read -r point fstype source opts; do
  mounts+=("$point $fstype $source $opts")
done < <(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break
               if ($5 == "/sys/fs/cgroup" || index($5, "/sys/fs/cgroup/") == 1) print $5, $(i+1), $(i+2), $(i+3) }' /proc/self/mountinfo)
cgpoints=() # the hierarchies' mount points (cgroup and cgroup2 only)
for m in "${mounts[@]}"; do
  read -r point fstype _ _ <<<"$m"
  case $fstype in cgroup | cgroup2) cgpoints+=("$point") ;; esac
done
[ ${#cgpoints[@]} -gt 0 ] || die "no cgroup hierarchy under /sys/fs/cgroup"

# remove_cgroup_tree NAME: kills what runs in the per-host cgroup NAME (only
# a demo host's processes: its keeper, containerd, shims, containers, CRIU)
# and removes it, deepest first, in every hierarchy.
remove_cgroup_tree() {
  local name=$1 try d p
  for try in $(seq 150); do
    local left=0
    for p in "${cgpoints[@]}"; do
      [ -d "$p/$name" ] || continue
      while read -r d; do
        for pid in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        # A frozen cgroup (the post-copy source) keeps its killed processes.
        [ -f "$d/freezer.state" ] && echo THAWED >"$d/freezer.state" 2>/dev/null
        [ -f "$d/cgroup.freeze" ] && echo 0 >"$d/cgroup.freeze" 2>/dev/null
        rmdir "$d" 2>/dev/null || left=1
      done < <(find "$p/$name" -depth -type d)
    done
    [ $left = 0 ] && return 0
    sleep 0.1
  done
  echo "demo-migrate: could not remove cgroup $name" >&2
  return 1
}

# Leftovers of a demo run killed outright (no trap ran): its PID is gone,
# and so is its hosts' keeper (it dies with the script: pdeathsig).
for n in $(ip netns list | awk '{print $1}' | grep -E '^ckpt-demo-[ab]-[0-9]+$' || true); do
  [ -d "/proc/${n##*-}" ] || { echo "removing netns $n of an earlier demo run"; ip netns del "$n" || true; }
done
for c in $(find "${cgpoints[@]}" -mindepth 1 -maxdepth 1 -type d -name 'ckpt-demo-[ab]-*' -printf '%f\n' | grep -E '^ckpt-demo-[ab]-[0-9]+$' | sort -u || true); do
  [ -d "/proc/${c##*-}" ] && continue
  keeper=0
  for p in "${cgpoints[@]}"; do
    for pid in $(cat "$p/$c/daemon/cgroup.procs" 2>/dev/null); do
      case $(cat "/proc/$pid/comm" 2>/dev/null) in sleep | containerd) keeper=1 ;; esac
    done
  done
  [ $keeper = 0 ] || continue
  echo "removing cgroup $c of an earlier demo run (and what ran in it)"
  remove_cgroup_tree "$c" || true
done
for d in /tmp/ckpt-demo-migrate-*.*; do
  p=${d#/tmp/ckpt-demo-migrate-}
  p=${p%%.*}
  [[ $p =~ ^[0-9]+$ ]] && [ -d "$d" ] && [ ! -d "/proc/$p" ] && [ ! -e "$d/.kept" ] || continue
  echo "removing $d of an earlier demo run"
  rm -rf "$d"
done

dir=$(mktemp -d "/tmp/ckpt-demo-migrate-$$.XXXXXX")
exec 3>&1 # the printed commands, whatever their output is redirected to
keepers=() daemons=() cgroups=()
ctr_on() { local h=$1; shift; command ctr --address "$dir/$h/containerd.sock" --namespace "$NS" "$@" 2> >(grep -v "support for cgroup v1 is deprecated" >&2); }
# What the user would type: each argument quoted only if it needs it, the
# temp dir shown as $D.
quote() {
  local a out=
  for a; do
    if [[ $a =~ ^[][A-Za-z0-9_./:=@,+%-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  out=${out% }
  printf '%s\n' "${out//$dir/\$D}"
}
# On host H: ctr ARGS, printed, then run.
ctr_show() { local h=$1; shift; printf 'host-%s# %s\n' "$h" "$(quote ctr -n "$NS" "$@")" >&3; ctr_on "$h" "$@"; }

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  # containerd first (it would restart shims), then everything in the
  # per-host cgroups: the keepers, shims, containers and CRIU. The hosts'
  # mount namespaces (their tmpfs and the containers' mounts) go with their
  # last process.
  for p in "${daemons[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${daemons[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  # (Reaped here, where bash's "Killed" notices go nowhere.)
  { for p in "${keepers[@]}"; do kill -KILL "$p"; wait "$p"; done; } 2>/dev/null
  for c in "${cgroups[@]}"; do remove_cgroup_tree "$c"; done
  if [ $rc = 130 ] || [ $rc = 143 ]; then
    echo "demo interrupted; cleaned up" >&2
  elif [ $rc -ne 0 ]; then
    for h in a b; do
      [ -f "$dir/$h/containerd.log" ] || continue
      echo "demo failed; host $h's containerd log, last lines:" >&2
      tail -20 "$dir/$h/containerd.log" >&2
      [ -s "$dir/$h/host.log" ] && { echo "host $h's keeper said:" >&2; cat "$dir/$h/host.log" >&2; }
    done
  fi
  # Nothing is mounted under the dir in this mount namespace; in case.
  awk -v d="$dir" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip netns del "$A" 2>/dev/null
  ip netns del "$B" 2>/dev/null
  if [ "${CKPT_DEMO_KEEP:-0}" = 1 ]; then touch "$dir/.kept"; echo "kept $dir"; else rm -rf "$dir"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "D=$dir (the demo's temp dir)"
say "two hosts: network namespaces $A ($IP_A) and $B ($IP_B), one veth pair"
ip netns add "$A"
ip netns add "$B"
ip link add "dma$$" type veth peer name "dmb$$"
ip link set "dma$$" netns "$A"
ip link set "dmb$$" netns "$B"
ip -n "$A" addr add "$IP_A/30" dev "dma$$"
ip -n "$B" addr add "$IP_B/30" dev "dmb$$"
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set "dma$$" up
ip -n "$B" link set "dmb$$" up
if command -v ping >/dev/null; then
  ip netns exec "$A" ping -c1 -W2 "$IP_B" >/dev/null && echo "A reaches B over the veth pair"
fi

# start_host H NETNS: the per-host cgroup NETNS (and its leaf "daemon") in
# every hierarchy, a keeper process in the netns that moves itself there,
# unshares mount and cgroup namespaces (the cgroup namespace is rooted at
# the cgroups its creator is in), mounts the fresh tmpfs and the cgroup
# hierarchies again, and sleeps; then containerd, put in the leaf from
# outside and entered into the keeper's namespaces with nsenter.
start_host() {
  local h=$1 n=$2 d=$dir/$1 p m point fstype source opts
  mkdir -p "$d"
  cgroups+=("$n")
  for p in "${cgpoints[@]}"; do
    for c in "$n" "$n/daemon"; do
      mkdir "$p/$c"
      # A v1 cpuset cgroup takes no process until it has cpus and mems.
      if [ -f "$p/$c/cpuset.cpus" ]; then
        cat "$(dirname "$p/$c")/cpuset.cpus" >"$p/$c/cpuset.cpus"
        cat "$(dirname "$p/$c")/cpuset.mems" >"$p/$c/cpuset.mems"
      fi
    done
  done
  {
    echo "set -e"
    for p in "${cgpoints[@]}"; do echo "echo \$\$ > '$p/$n/cgroup.procs'"; done
    echo "exec unshare --mount --cgroup --propagation private sh '$d/host-inside.sh'"
  } >"$d/host-enter.sh"
  {
    echo "set -e"
    for p in "${STATE_DIRS[@]}"; do echo "mkdir -p '$p'; mount -t tmpfs -o mode=0711 ckpt-demo-host '$p'"; done
    for m in "${mounts[@]}"; do
      read -r point fstype source opts <<<"$m"
      echo "mkdir -p '$point'; mount -t '$fstype' -o '$opts' '$source' '$point'"
    done
    for p in "${cgpoints[@]}"; do echo "echo \$\$ > '$p/daemon/cgroup.procs'"; done
    # cgroup v2: the per-host cgroup gives its children (the containers'
    # cgroups) every controller it has; containerd stays in the leaf.
    for m in "${mounts[@]}"; do
      read -r point fstype _ _ <<<"$m"
      [ "$fstype" = cgroup2 ] || continue
      echo "for c in \$(cat '$point/cgroup.controllers'); do echo +\$c > '$point/cgroup.subtree_control' || echo \"controller \$c not enabled\" >&2; done"
    done
    echo "echo ready"
    echo "exec sleep infinity"
  } >"$d/host-inside.sh"
  nsenter --net="/run/netns/$n" -- setpriv --pdeathsig KILL sh "$d/host-enter.sh" >"$d/host.out" 2>"$d/host.log" &
  keepers+=($!)
  local keeper=$!
  for _ in $(seq 100); do grep -qx ready "$d/host.out" 2>/dev/null && break; sleep 0.1; done
  grep -qx ready "$d/host.out" || die "host $h did not get ready: $(cat "$d/host.log")"

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
  local enter=
  for p in "${cgpoints[@]}"; do enter+="echo \$\$ > '$p/$n/daemon/cgroup.procs' && "; done
  sh -c "${enter}exec setpriv --pdeathsig KILL nsenter --target $keeper --mount --cgroup --net -- containerd --config '$d/config.toml'" \
    >"$d/containerd.log" 2>&1 &
  daemons+=($!)
  for _ in $(seq 100); do
    ctr_on "$h" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "containerd of host $h did not come up"
}
say "a containerd with ckpt's shim on each host, in the host's own mount and cgroup namespaces"
start_host a "$A"
start_host b "$B"
echo "host a: containerd pid ${daemons[0]}, socket \$D/a/containerd.sock, cgroup /$A (its / inside)"
echo "host b: containerd pid ${daemons[1]}, socket \$D/b/containerd.sock, cgroup /$B (its / inside)"
for i in 0 1; do
  k=${keepers[$i]} c=${daemons[$i]}
  echo "host $([ $i = 0 ] && echo a || echo b) sees: $(nsenter --target "$k" --mount -- findmnt -n -o TARGET,FSTYPE /run/containerd/ckpt | tr -s ' ')," \
    "containerd in cgroup $(nsenter --target "$k" --cgroup --mount -- cat "/proc/$c/cgroup" | grep -m1 -E '(:(memory|pids):|^0::)')"
done

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
ctr_show a image import "$img/busybox.tar" >/dev/null
ctr_show b image import "$img/busybox.tar" >/dev/null

last() { tail -n1 "$1" 2>/dev/null || echo 0; }
# The task's processes (host pids) and their resident memory.
rss() { # host
  local pid t=0 kb
  for pid in $(ctr_on "$1" task ps counter 2>/dev/null | awk 'NR>1{print $1}'); do
    kb=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
    t=$((t + ${kb:-0}))
  done
  echo $((t / 1024))
}
# wait_counter LOG FLOOR: until the log's last number passes FLOOR.
wait_counter() {
  for _ in $(seq 100); do [ "$(last "$1")" -gt "$2" ] 2>/dev/null && return 0; sleep 0.1; done
  die "the counter in $1 did not pass $2"
}

# busybox sort keeps every line it has read (here 1 KiB ones) until its
# input ends, which never comes.
say "host a: a counter (sh) and a sort holding $MIB MiB, in one container"
ctr_show a run -d --runtime "$RUNTIME" --log-uri "file://$dir/a-counter.log" "$IMAGE" counter \
  sh -c "{ yes \$(printf %01023d 0) | head -c ${MIB}m; sleep 1000000; } | sort >/dev/null & i=0; while :; do i=\$((i+1)); echo \$i; sleep 0.2; done"
wait_counter "$dir/a-counter.log" 5
for _ in $(seq 300); do [ "$(rss a)" -ge "$MIB" ] && break; sleep 0.1; done
echo "on host a the counter is at $(last "$dir/a-counter.log"); the container holds $(rss a) MiB"
ctr_show a task ls

say "part 1, post-copy (the default): host a moves the counter to host b"
echo "(ckpt migrate is a client of both containerds; --to is host b's socket, as 'ssh -L' would forward it;"
echo " host b's CRIU fetches the memory from host a's page server at $IP_A:$PAGE_PORT)"
mig=(ckpt migrate --address "$dir/a/containerd.sock" --namespace "$NS" --to "$dir/b/containerd.sock"
  --page-server "$IP_A:$PAGE_PORT" --stdio "file://$dir/b-counter.log" counter)
printf 'host-a# %s\n' "$(quote "${mig[@]}")"
nsenter --net="/run/netns/$A" -- "${mig[@]}" 2>&1 | tee "$dir/migrate-postcopy.out" | sed "s|$dir|\$D|g" || die "ckpt migrate (post-copy) failed"
was=$(last "$dir/a-counter.log")

say "where is the counter now?"
ctr_show a container ls
ctr_show b task ls
[ -z "$(ctr_on a container ls -q)" ] || die "the container is still on host a"
wait_counter "$dir/b-counter.log" 0
first=$(head -n1 "$dir/b-counter.log")
sleep 1
echo "host a's counter stopped at $was; on host b it went on with $first, now $(last "$dir/b-counter.log")"
echo "host b's copy holds $(rss b) MiB (every page came over from host a)"
[ -n "$first" ] && [ "$first" -gt "$was" ] && [ "$first" -le $((was + 3)) ] || die "the moved counter did not continue from $was (it printed '$first')"
echo "the counter on host b is the same shell, memory and all; host a has no trace of it"
printf 'host-b# tail -n3 %s\n' "\$D/b-counter.log"
tail -n3 "$dir/b-counter.log"

if [ "$DO_COPY" = 1 ]; then
  say "part 2, stop-and-copy (--copy): host b moves it back to host a"
  echo "(every page moves before the container runs again: the downtime grows with memory; no page server)"
  mig=(ckpt migrate --copy --address "$dir/b/containerd.sock" --namespace "$NS" --to "$dir/a/containerd.sock"
    --stdio "file://$dir/a-counter-back.log" counter)
  printf 'host-b# %s\n' "$(quote "${mig[@]}")"
  nsenter --net="/run/netns/$B" -- "${mig[@]}" 2>&1 | tee "$dir/migrate-copy.out" | sed "s|$dir|\$D|g" || die "ckpt migrate --copy failed"
  was=$(last "$dir/b-counter.log")
  ctr_show b container ls
  ctr_show a task ls
  [ -z "$(ctr_on b container ls -q)" ] || die "the container is still on host b"
  wait_counter "$dir/a-counter-back.log" 0
  first=$(head -n1 "$dir/a-counter-back.log")
  echo "host b's counter stopped at $was; back on host a it went on with $first, holding $(rss a) MiB"
  [ -n "$first" ] && [ "$first" -gt "$was" ] && [ "$first" -le $((was + 3)) ] || die "the counter did not continue from $was (it printed '$first')"
fi

say "summary"
grep -h '^moved ' "$dir/migrate-postcopy.out" | sed "s|$dir|\$D|g; s/^/post-copy A->B: /" || true
if [ "$DO_COPY" = 1 ]; then grep -h '^moved ' "$dir/migrate-copy.out" | sed "s|$dir|\$D|g; s/^/--copy    B->A: /" || true; fi
say "demo done: a running container moved between two hosts, post-copy$([ "$DO_COPY" = 1 ] && echo ' and back with --copy')"
