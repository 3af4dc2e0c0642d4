#!/usr/bin/env bash
# Runs ckpt's test suite a second time, inside a privileged container, the way
# CI systems that run their jobs in containers do. No registry is used: the
# image is Debian 12 (bookworm) minbase made with debootstrap and imported
# into podman (both from Debian's packages). See docs/containerized-ci.md.
#
# Usage (as root):
#   scripts/test-in-container.sh [--rebuild] [--shell] [COMMAND...]
#
#   COMMAND        run this inside instead of the full suite; also CKPT_TEST_CMD
#                  (default: make test). CI=true is always set inside, and
#                  scripts/setup.sh always runs first.
#   --rebuild      throw away the cached rootfs and images and build them anew
#   --shell        an interactive shell in the prepared container (debugging)
#
# Environment:
#   CKPT_CACHE            cache dir (default /var/cache/ckpt): rootfs-bookworm/,
#                         podman/ (image store), logs/
#   CKPT_TEST_CMD         the command run inside (default: make test)
#   CKPT_CGROUPNS         private (default) | host: the container's cgroup
#                         namespace (see docs/containerized-ci.md)
#   CKPT_NESTED_TMP       tmpfs (default) | overlay: what /tmp is inside; on
#                         overlay containerd's overlayfs snapshotter fails
#   CKPT_NESTED_INIT      1 (default): catatonit is the container's pid 1;
#                         0: the test shell is pid 1
#   CKPT_NESTED_TIMEOUT   limit for the whole nested test run (default 40m)
#   CKPT_NICE             niceness of every heavy step (default 10)
#   CKPT_OCI_RUNTIME      runtime podman starts the container with (default
#                         /usr/local/sbin/runc; Debian's crun 1.8 refuses
#                         hybrid cgroup hosts)
#   CKPT_NESTED_PREFIX    prefix of every nested output line (default "[nested] ")
#   CKPT_SHARE_GO_CACHE   1 (default): bind-mount the host's Go module and
#                         build caches; 0: the container keeps its own
#
# The exit status is the nested run's.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
CKPT_CACHE=${CKPT_CACHE:-/var/cache/ckpt}
SUITE=bookworm
MIRROR=${CKPT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=$CKPT_CACHE/rootfs-$SUITE
NICE=${CKPT_NICE:-10}
CGROUPNS=${CKPT_CGROUPNS:-private}
TEST_CMD=${CKPT_TEST_CMD:-make test}
TIMEOUT=${CKPT_NESTED_TIMEOUT:-40m}
PREFIX=${CKPT_NESTED_PREFIX-"[nested] "}
SHARE_GO_CACHE=${CKPT_SHARE_GO_CACHE:-1}
NESTED_TMP=${CKPT_NESTED_TMP:-tmpfs}
NESTED_INIT=${CKPT_NESTED_INIT:-1}
BASE_IMAGE=localhost/ckpt-test-base:$SUITE
LOGDIR=$CKPT_CACHE/logs

rebuild=0 shell=0
while [ $# -gt 0 ]; do
  case $1 in
    --rebuild) rebuild=1; shift ;;
    --shell) shell=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] && TEST_CMD="$*"

log() { printf '== test-in-container: %s\n' "$*"; }
die() { printf '== test-in-container: FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }
dur() { local s=$1; printf '%dm%02ds' $((s / 60)) $((s % 60)); }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, podman --privileged)"
command -v go >/dev/null || die "no Go at /usr/local/go (the container bind-mounts the host's)"
case $CGROUPNS in host|private) ;; *) die "CKPT_CGROUPNS must be host or private" ;; esac
mkdir -p "$CKPT_CACHE" "$LOGDIR"

# --- tools: podman and debootstrap from Debian ------------------------------
need=()
command -v podman >/dev/null || need+=(podman catatonit)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive nice -n "$NICE" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
OCI_RUNTIME=${CKPT_OCI_RUNTIME:-/usr/local/sbin/runc}
if [ ! -x "$OCI_RUNTIME" ]; then
  # Before scripts/setup.sh has run on the host: Debian's runc (crun 1.8
  # stops at "cgroups in hybrid mode not supported" on hybrid hosts).
  command -v runc >/dev/null || DEBIAN_FRONTEND=noninteractive nice -n "$NICE" apt-get install -y -qq --no-install-recommends runc >/dev/null
  OCI_RUNTIME=$(command -v runc)
fi

# Podman keeps its own store under the cache, drives cgroups directly (no
# systemd here) and writes events to a file.
PODMAN=(podman --root "$CKPT_CACHE/podman/storage" --runroot /run/ckpt-podman
  --cgroup-manager=cgroupfs --events-backend=file --storage-driver="${CKPT_STORAGE_DRIVER:-overlay}"
  --runtime "$OCI_RUNTIME")
pm() { nice -n "$NICE" "${PODMAN[@]}" "$@"; }

# One image build at a time; test runs themselves may overlap.
exec 9>"$CKPT_CACHE/test-in-container.lock"
flock 9

if [ $rebuild = 1 ]; then
  log "--rebuild: removing $ROOTFS and the ckpt-test images"
  rm -rf "$ROOTFS" "$ROOTFS.tmp"
  pm images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/ckpt-test(-base)?:' | xargs -r "${PODMAN[@]}" rmi >/dev/null || true
fi

t_rootfs=0 t_import=0 t_prepare=0
# --- 1. rootfs: debootstrap bookworm minbase (cached) -----------------------
if [ ! -f "$ROOTFS/.ckpt-rootfs-complete" ]; then
  log "debootstrap $SUITE minbase into $ROOTFS"
  t0=$(now)
  rm -rf "$ROOTFS.tmp" "$ROOTFS"
  nice -n "$NICE" debootstrap --variant=minbase "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$LOGDIR/debootstrap.log" 2>&1 ||
    { tail -20 "$LOGDIR/debootstrap.log"; die "debootstrap failed (log: $LOGDIR/debootstrap.log)"; }
  # The same suites as a Debian 12 host: point releases and security fixes.
  rm -f "$ROOTFS.tmp/etc/apt/sources.list"
  cat >"$ROOTFS.tmp/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  printf 'APT::Install-Recommends "false";\n' >"$ROOTFS.tmp/etc/apt/apt.conf.d/90ckpt-no-recommends"
  rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*
  date -u +%FT%TZ >"$ROOTFS.tmp/.ckpt-rootfs-complete"
  mv "$ROOTFS.tmp" "$ROOTFS"
  t_rootfs=$(($(now) - t0))
fi
stamp=$(sha256sum "$ROOTFS/.ckpt-rootfs-complete" | cut -c1-12)

# --- 2. base image: podman import of the rootfs -----------------------------
if ! pm image exists "$BASE_IMAGE" || [ "$(pm image inspect --format '{{index .Config.Labels "ckpt.rootfs"}}' "$BASE_IMAGE" 2>/dev/null)" != "$stamp" ]; then
  log "podman import $ROOTFS as $BASE_IMAGE"
  t0=$(now)
  tar --numeric-owner --xattrs -C "$ROOTFS" -cf - . |
    pm import --change "LABEL ckpt.rootfs=$stamp" --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  t_import=$(($(now) - t0))
fi

# --- what every container gets ----------------------------------------------
# podman (4.3) tries to raise RLIMIT_NOFILE to 1048576 and lowers its own
# RLIMIT_NPROC to 32768; without CAP_SYS_RESOURCE (as in this sandbox) the
# OCI runtime then fails "setting rlimit ...: operation not permitted".
# Ask for what podman itself has. --pids-limit 0/-1 become pids.max=1 with
# runc 1.5: give the kernel's pid_max instead.
hard_nofile=$(ulimit -Hn); [ "$hard_nofile" = unlimited ] && hard_nofile=1048576
[ "$hard_nofile" -gt 1048576 ] && hard_nofile=1048576
hard_nproc=$(ulimit -Hu); { [ "$hard_nproc" = unlimited ] || [ "$hard_nproc" -gt 32768 ]; } && hard_nproc=32768
run_opts=(
  --privileged --network host --cgroupns "$CGROUPNS" --hostname ckpt-nested
  --ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit "nproc=$hard_nproc:$hard_nproc"
  --pids-limit "$(cat /proc/sys/kernel/pid_max)"
  -v /usr/local/go:/usr/local/go:ro
  -v "$top:/src:ro" -v "$LOGDIR:/ckpt-logs"
  -e CI=true -e HOME=/root -e CKPT_CACHE=/var/cache/ckpt -e GOTOOLCHAIN=local
  -e "PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  -e "GOFLAGS=$(go env GOFLAGS)" -e "GOPROXY=$(go env GOPROXY)" -e "GOSUMDB=$(go env GOSUMDB)"
  -e "GONOSUMDB=$(go env GONOSUMDB)" -e "GOPRIVATE=$(go env GOPRIVATE)"
)
# The tests keep containerd's root (overlayfs snapshots) under /tmp; on the
# container's own overlay root the kernel refuses that ("overlay: filesystem
# on ... not supported as upperdir" -> mount: invalid argument).
case $NESTED_TMP in
  tmpfs) run_opts+=(--tmpfs /tmp:rw,exec,dev,suid,mode=1777) ;;
  overlay) ;;
  *) die "CKPT_NESTED_TMP must be tmpfs or overlay" ;;
esac
# The host's apt policy for reaching its mirror (Acquire::* settings, e.g.
# a mirror snapshot whose Release files are past Valid-Until): the nested
# apt, setup-docker.sh's private one included, must reach the same mirror
# the same way.
for f in /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && grep -q '^Acquire::' "$f" && run_opts+=(-v "$f:$f:ro")
done
# The host's trust store: where TLS to the Go module proxy is intercepted, the
# intercepting CA is only there. Go, OpenSSL, curl and git read these.
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$ca" ]; then
  run_opts+=(-v "$ca:/etc/ssl/ckpt-host-ca.crt:ro" -e SSL_CERT_FILE=/etc/ssl/ckpt-host-ca.crt
    -e CURL_CA_BUNDLE=/etc/ssl/ckpt-host-ca.crt -e GIT_SSL_CAINFO=/etc/ssl/ckpt-host-ca.crt)
fi
if [ "$SHARE_GO_CACHE" = 1 ]; then
  # Go's module and build caches are safe for concurrent use by several go
  # commands, the host's included.
  gomod=$(go env GOMODCACHE) gocache=$(go env GOCACHE)
  mkdir -p "$gomod" "$gocache"
  run_opts+=(-v "$gomod:/root/go/pkg/mod" -v "$gocache:/root/.cache/go-build"
    -e GOMODCACHE=/root/go/pkg/mod -e GOCACHE=/root/.cache/go-build)
fi

# --- 3. prepared image: the base plus scripts/setup.sh (cached) -------------
# Keyed on what setup.sh installs: the script, go.mod's runc, containerd's
# version and the rootfs. setup.sh runs again before every test run anyway
# (it is idempotent), so a stale image only costs time.
key=$( { cat "$top/scripts/setup.sh" "$top/scripts/setup-clients.sh"; grep 'opencontainers/runc ' "$top/go.mod" || true; echo "${CONTAINERD_VERSION:-}" "$stamp"; } | sha256sum | cut -c1-12)
IMAGE=localhost/ckpt-test:$SUITE-$key
if ! pm image exists "$IMAGE"; then
  log "preparing $IMAGE: scripts/setup.sh inside (apt, CRIU build, runc, containerd)"
  t0=$(now)
  seeds=()
  for f in "$CKPT_CACHE"/criu_*.orig.tar.xz; do
    [ -f "$f" ] && seeds+=(-v "$f:/seed/$(basename "$f"):ro")
  done
  prep=ckpt-prep-$$
  trap 'pm rm -f -t 0 "$prep" >/dev/null 2>&1 || true' EXIT
  set +e
  pm run --name "$prep" "${run_opts[@]}" "${seeds[@]}" "$BASE_IMAGE" bash -euo pipefail -c '
      mkdir -p /var/cache/ckpt; cp /seed/* /var/cache/ckpt/ 2>/dev/null || true
      bash /src/scripts/setup.sh
      rm -rf /var/cache/ckpt/criu-build; apt-get clean' 2>&1 | tee "$LOGDIR/prepare.log" | awk '{print "[nested prepare] " $0; fflush()}'
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || die "scripts/setup.sh in the container exited $rc (log: $LOGDIR/prepare.log)"
  pm commit -q "$prep" "$IMAGE" >/dev/null
  pm rm -f "$prep" >/dev/null
  trap - EXIT
  # Older prepared images are dead weight (one still in use by a concurrent
  # run stays).
  pm images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/ckpt-test:' | grep -vx "$IMAGE" |
    xargs -r "${PODMAN[@]}" rmi >/dev/null 2>&1 || true
  pm image prune -f >/dev/null 2>&1 || true
  t_prepare=$(($(now) - t0))
fi
flock -u 9

# --- 4. the nested run ------------------------------------------------------
# The source is mounted read-only and copied to the same path inside: a
# snapshot that concurrent edits cannot change mid-run, whose build outputs
# (bin/) never land in the host's tree, and whose paths match the host's so
# the shared Go build cache hits.
inner='set -euo pipefail
# make integration keeps go test'"'"'s full output there; keep it for the reader.
trap '"'"'for l in integration integration-2.4; do [ -f /tmp/ckpt-$l.log ] && cp /tmp/ckpt-$l.log "/ckpt-logs/nested-$CKPT_RUN-$l.log"; done; true'"'"' EXIT
mkdir -p "$CKPT_TOP"
tar -C /src --exclude=./bin -cf - . | tar -C "$CKPT_TOP" -xf -
cd "$CKPT_TOP"
echo "== nested: $(uname -r), pid $$ in its own pid namespace, cgroup $(grep -m1 memory /proc/self/cgroup)"
bash scripts/setup.sh
echo "== nested: $CKPT_TEST_CMD"
eval "$CKPT_TEST_CMD"'
name=ckpt-nested-$$
init_opt=(); [ "$NESTED_INIT" = 1 ] && init_opt=(--init)
if [ $shell = 1 ]; then
  exec "${PODMAN[@]}" run --rm -it "${init_opt[@]}" --name "$name" "${run_opts[@]}" -e "CKPT_TOP=$top" -e "CKPT_TEST_CMD=bash" -e CKPT_RUN=shell -w / "$IMAGE" bash -c "$inner"
fi

ts=$(date +%Y%m%d-%H%M%S)
rawlog=$LOGDIR/nested-$ts.log
bar='=================================================================='
cat <<HDR
$bar
== NESTED RUN BEGIN: ckpt's tests inside a privileged podman container
==   image    $IMAGE (Debian $SUITE minbase + scripts/setup.sh)
==   engine   $(podman --version), OCI runtime $OCI_RUNTIME
==   options  --privileged --network host --cgroupns $CGROUPNS, own pid/mount/ipc/uts namespaces, /tmp on $NESTED_TMP, pid 1 $( [ "$NESTED_INIT" = 1 ] && echo catatonit || echo "the test shell")
==   command  bash scripts/setup.sh && CI=true $TEST_CMD
==   output   every nested line starts with "${PREFIX}"; raw log $rawlog
$bar
HDR
t0=$(now)
trap 'pm rm -f -t 0 "$name" >/dev/null 2>&1 || true' EXIT
set +e
timeout -k 60s "$TIMEOUT" nice -n "$NICE" "${PODMAN[@]}" run --rm "${init_opt[@]}" --name "$name" "${run_opts[@]}" -e "CKPT_TOP=$top" -e "CKPT_TEST_CMD=$TEST_CMD" -e "CKPT_RUN=$ts" -w / \
  "$IMAGE" bash -c "$inner" </dev/null 2>&1 | tee "$rawlog" | awk -v p="$PREFIX" '{print p $0; fflush()}'
rc=${PIPESTATUS[0]}
set -e
t_run=$(($(now) - t0))
[ "$rc" = 124 ] && echo "== test-in-container: the nested run exceeded CKPT_NESTED_TIMEOUT=$TIMEOUT and was stopped"
ls -1t "$LOGDIR"/nested-*.log 2>/dev/null | tail -n +21 | xargs -r rm -f

# Top-level tests of verbose output, and go test's package lines.
passed=$(grep -c '^--- PASS' "$rawlog" || true)
failed=$(grep -c '^--- FAIL' "$rawlog" || true)
skipped=$(grep -c '^--- SKIP' "$rawlog" || true)
pkg_ok=$(grep -cE '^ok  ' "$rawlog" || true)
pkg_fail=$(grep -cE '^FAIL\s' "$rawlog" || true)
cat <<FTR
$bar
== NESTED RUN END: exit status $rc ($( [ "$rc" = 0 ] && echo PASSED || echo FAILED ))
==   packages: $pkg_ok ok, $pkg_fail failed; top-level tests in verbose output: $passed passed, $failed failed, $skipped skipped
==   time: rootfs $(dur $t_rootfs), import $(dur $t_import), prepare (setup.sh) $(dur $t_prepare), test run $(dur $t_run) (0m00s: cached)
FTR
grep -E '^(--- FAIL|FAIL\s|panic:|make: \*\*\*)' "$rawlog" | sed 's/^/==   /' || true
echo "$bar"
exit "$rc"
