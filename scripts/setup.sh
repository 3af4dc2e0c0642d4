#!/usr/bin/env bash
# Installs every real component ckpt's tests and demo need on a fresh Debian 12
# machine, skipping whatever is already there at the right version:
#   - build tools and the libraries CRIU and runc link against (Debian apt)
#   - CRIU 4.2.1, built from Debian sid's source tarball (bookworm's 3.17
#     cannot dump on kernels >= 6.13: "vdso: Unexpected rt vDSO area bounds";
#     4.1.x cannot dump any TCP or UDP socket on kernels >= 6.16: "Can't get
#     1:16 opt", fixed in 4.2)
#   - runc at the version go.mod pins (ckpt writes runc's state with runc's
#     own types, so the two must agree)
#   - containerd 2.x and ctr, at CONTAINERD_VERSION
#   - staticcheck, for make lint
#   - Docker 28 and 26 next to the host's packages (scripts/setup-docker.sh)
#   - nerdctl, CNI plugins, crictl and containerd 2.4 (scripts/setup-clients.sh)
# Everything lands in /usr/local; build caches live in $CKPT_CACHE.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
CKPT_CACHE=${CKPT_CACHE:-/var/cache/ckpt}
CRIU_VERSION=4.2.1
CRIU_SUITE=sid
# Checksums-Sha256 of criu_4.2.1.orig.tar.xz in sid's signed Sources index.
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.2.9}
RUNC_VERSION=$(awk '$1=="github.com/opencontainers/runc"{print $2}' "$top/go.mod")
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$PATH
export GOBIN=$CKPT_CACHE/gobin

log() { printf '== setup: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup.sh must run as root (it installs packages)" >&2; exit 1; }
mkdir -p "$CKPT_CACHE" "$GOBIN"

apt_pkgs=(
  build-essential pkg-config git xz-utils curl ca-certificates
  # CRIU's build dependencies (make criu)
  libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  python3-protobuf libnl-3-dev libnet1-dev libcap-dev libaio-dev libbsd-dev
  libgnutls28-dev libnftables-dev uuid-dev libdrm-dev
  # CRIU locks a container's network with iptables-restore
  iptables
  # runc with seccomp
  libseccomp-dev
  # test images and tools the tests drive
  busybox-static iproute2 procps util-linux psmisc tmux
)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- CRIU ------------------------------------------------------------------
have_criu=$(/usr/local/sbin/criu --version 2>/dev/null | awk '/^Version:/{print $2}' || true)
if [ "$have_criu" != "$CRIU_VERSION" ]; then
  src=$CKPT_CACHE/criu_${CRIU_VERSION}.orig.tar.xz
  if [ ! -f "$src" ] || ! echo "$CRIU_SHA256  $src" | sha256sum -c --quiet - 2>/dev/null; then
    log "fetching CRIU $CRIU_VERSION source from Debian $CRIU_SUITE"
    # Source packages only: the host's binary packages stay bookworm's.
    rm -f /etc/apt/sources.list.d/ckpt-trixie-src.sources
    cat > /etc/apt/sources.list.d/ckpt-criu-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $CRIU_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
    dl=$(mktemp -d)
    # Not every file of the source package is served here, so apt may exit
    # non-zero; the tarball arrives, and its checksum is checked below.
    (cd "$dl" && apt-get source --download-only -qq "criu=${CRIU_VERSION}-1" >/dev/null 2>&1 || true)
    [ -f "$dl/criu_${CRIU_VERSION}.orig.tar.xz" ] || { echo "CRIU source tarball did not arrive" >&2; exit 1; }
    mv "$dl/criu_${CRIU_VERSION}.orig.tar.xz" "$src"
    rm -rf "$dl"
  fi
  echo "$CRIU_SHA256  $src" | sha256sum -c --quiet - || { echo "CRIU tarball checksum mismatch" >&2; exit 1; }
  log "building CRIU $CRIU_VERSION"
  build=$CKPT_CACHE/criu-build
  rm -rf "$build" && mkdir -p "$build"
  tar -C "$build" --strip-components=1 -xJf "$src"
  make -C "$build" -j"$(nproc)" criu >"$CKPT_CACHE/criu-build.log" 2>&1 || { tail -30 "$CKPT_CACHE/criu-build.log"; exit 1; }
  install -D -m 0755 "$build/criu/criu" /usr/local/sbin/criu
fi
log "criu $(/usr/local/sbin/criu --version | awk '/^Version:/{print $2}') at /usr/local/sbin/criu"

# --- runc ------------------------------------------------------------------
have_runc=$(/usr/local/sbin/runc --version 2>/dev/null | awk '/^runc version/{print $3}' || true)
if [ "v$have_runc" != "$RUNC_VERSION" ]; then
  log "building runc $RUNC_VERSION"
  CGO_ENABLED=1 go install -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION"
  install -D -m 0755 "$GOBIN/runc" /usr/local/sbin/runc
fi
log "$(/usr/local/sbin/runc --version | head -1) at /usr/local/sbin/runc"

# --- containerd ------------------------------------------------------------
have_ctrd=$(/usr/local/bin/containerd --version 2>/dev/null | awk '{print $3}' || true)
if [ "$have_ctrd" != "$CONTAINERD_VERSION" ] || [ ! -x /usr/local/bin/ctr ] || [ ! -x /usr/local/bin/containerd-shim-runc-v2 ]; then
  log "building containerd $CONTAINERD_VERSION (takes a few minutes)"
  mod=github.com/containerd/containerd/v2
  ldflags="-X $mod/version.Version=$CONTAINERD_VERSION"
  go install -ldflags "$ldflags" "$mod/cmd/containerd@$CONTAINERD_VERSION" \
    "$mod/cmd/ctr@$CONTAINERD_VERSION" "$mod/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  for b in containerd ctr containerd-shim-runc-v2; do install -D -m 0755 "$GOBIN/$b" "/usr/local/bin/$b"; done
fi
log "$(/usr/local/bin/containerd --version) at /usr/local/bin/containerd"

# --- staticcheck (make lint) -------------------------------------------------
STATICCHECK_VERSION=v0.8.2 # staticcheck 2026.2.2
have_sc=$(/usr/local/bin/staticcheck -version 2>/dev/null | sed -n 's/.*(\(.*\)).*/v\1/p' || true)
if [ "$have_sc" != "$STATICCHECK_VERSION" ]; then
  log "installing staticcheck $STATICCHECK_VERSION"
  go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
  install -D -m 0755 "$GOBIN/staticcheck" /usr/local/bin/staticcheck
fi
log "$(/usr/local/bin/staticcheck -version) at /usr/local/bin/staticcheck"

# --- Docker 28 and 26, for integration/docker --------------------------------
bash "$top/scripts/setup-docker.sh"

# --- nerdctl, CNI plugins, crictl, containerd 2.4 -----------------------------
bash "$top/scripts/setup-clients.sh"

log "done"
