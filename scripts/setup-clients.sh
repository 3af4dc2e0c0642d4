#!/usr/bin/env bash
# Installs the clients ckpt is tested with beside ctr and Docker, and the
# second containerd of the test matrix (called by scripts/setup.sh; can run
# alone). Each step is skipped when the binary is there at its version
# (read from the binary's Go build info, so nothing is stamped by hand):
#   - nerdctl NERDCTL_VERSION, built in a module of our own: its go.mod has
#     a replace directive (mod/tigron), so `go install ...@version` refuses
#     it. github.com/moby/moby/v2 at the version nerdctl asks for is refused
#     by the module proxy; MOBY_V2_VERSION is one it serves.
#   - the CNI plugins nerdctl's default bridge network needs, in /opt/cni/bin
#   - crictl (cri-tools CRICTL_VERSION)
#   - containerd CONTAINERD2_VERSION, with its ctr and runc shim, in
#     /opt/ckpt-containerd/<version>/bin, beside the one in /usr/local/bin
# Build caches live in $CKPT_CACHE.
set -euo pipefail

CKPT_CACHE=${CKPT_CACHE:-/var/cache/ckpt}
NERDCTL_VERSION=v2.4.2
MOBY_V2_VERSION=v2.0.0-beta.25
CNI_PLUGINS_VERSION=v1.10.0
CNI_PLUGINS=(main/bridge ipam/host-local main/loopback meta/portmap meta/firewall meta/tuning)
CNI_BIN=${CNI_BIN:-/opt/cni/bin}
CRICTL_VERSION=v1.37.0
CONTAINERD2_VERSION=${CONTAINERD2_VERSION:-v2.4.2}
CONTAINERD2_PREFIX=/opt/ckpt-containerd/$CONTAINERD2_VERSION
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$PATH

log() { printf '== setup-clients: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup-clients.sh must run as root" >&2; exit 1; }
mkdir -p "$CKPT_CACHE"

# modver BIN MODULE: the version of MODULE that BIN was built with ("" if
# BIN is missing or not built from it).
modver() {
  go version -m "$1" 2>/dev/null | awk -v m="$2" '($1=="mod"||$1=="dep") && $2==m {print $3; exit}'
}

# --- nerdctl -----------------------------------------------------------------
if [ "$(modver /usr/local/bin/nerdctl github.com/containerd/nerdctl/v2)" != "$NERDCTL_VERSION" ]; then
  log "building nerdctl $NERDCTL_VERSION (moby/moby/v2 pinned to $MOBY_V2_VERSION)"
  mod=$CKPT_CACHE/nerdctl-$NERDCTL_VERSION
  rm -rf "$mod" && mkdir -p "$mod"
  cat >"$mod/go.mod" <<EOF
module ckpt.local/nerdctl-build

go 1.24

require github.com/containerd/nerdctl/v2 $NERDCTL_VERSION

replace github.com/moby/moby/v2 => github.com/moby/moby/v2 $MOBY_V2_VERSION
EOF
  pkg=github.com/containerd/nerdctl/v2/cmd/nerdctl
  (cd "$mod" && go get "$pkg@$NERDCTL_VERSION" &&
    go build -o "$mod/nerdctl" \
      -ldflags "-s -w -X github.com/containerd/nerdctl/v2/pkg/version.Version=$NERDCTL_VERSION" "$pkg")
  install -D -m 0755 "$mod/nerdctl" /usr/local/bin/nerdctl
fi
log "$(/usr/local/bin/nerdctl --version) at /usr/local/bin/nerdctl"

# --- CNI plugins -------------------------------------------------------------
need_cni=()
for p in "${CNI_PLUGINS[@]}"; do
  if [ "$(modver "$CNI_BIN/${p#*/}" github.com/containernetworking/plugins)" != "$CNI_PLUGINS_VERSION" ]; then
    need_cni+=("github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION")
  fi
done
if [ ${#need_cni[@]} -gt 0 ]; then
  log "building CNI plugins $CNI_PLUGINS_VERSION: ${need_cni[*]##*/}"
  gobin=$CKPT_CACHE/cni-$CNI_PLUGINS_VERSION
  mkdir -p "$gobin" "$CNI_BIN"
  GOBIN=$gobin CGO_ENABLED=0 go install \
    -ldflags "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "${need_cni[@]}"
  for p in "${CNI_PLUGINS[@]}"; do
    [ -x "$gobin/${p#*/}" ] && install -m 0755 "$gobin/${p#*/}" "$CNI_BIN/${p#*/}"
  done
fi
log "CNI plugins $CNI_PLUGINS_VERSION in $CNI_BIN: $(cd "$CNI_BIN" && echo "${CNI_PLUGINS[@]##*/}")"

# --- crictl ------------------------------------------------------------------
if [ "$(modver /usr/local/bin/crictl sigs.k8s.io/cri-tools)" != "$CRICTL_VERSION" ]; then
  log "building crictl $CRICTL_VERSION"
  gobin=$CKPT_CACHE/crictl-$CRICTL_VERSION
  GOBIN=$gobin CGO_ENABLED=0 go install \
    -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  install -D -m 0755 "$gobin/crictl" /usr/local/bin/crictl
fi
log "$(/usr/local/bin/crictl --version) at /usr/local/bin/crictl"

# --- containerd 2.4 ----------------------------------------------------------
have=$("$CONTAINERD2_PREFIX/bin/containerd" --version 2>/dev/null | awk '{print $3}' || true)
if [ "$have" != "$CONTAINERD2_VERSION" ] || [ ! -x "$CONTAINERD2_PREFIX/bin/ctr" ] ||
  [ ! -x "$CONTAINERD2_PREFIX/bin/containerd-shim-runc-v2" ]; then
  log "building containerd $CONTAINERD2_VERSION into $CONTAINERD2_PREFIX (takes a few minutes)"
  m=github.com/containerd/containerd/v2
  gobin=$CKPT_CACHE/containerd-$CONTAINERD2_VERSION
  GOBIN=$gobin go install -ldflags "-X $m/version.Version=$CONTAINERD2_VERSION" \
    "$m/cmd/containerd@$CONTAINERD2_VERSION" "$m/cmd/ctr@$CONTAINERD2_VERSION" \
    "$m/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION"
  for b in containerd ctr containerd-shim-runc-v2; do
    install -D -m 0755 "$gobin/$b" "$CONTAINERD2_PREFIX/bin/$b"
  done
fi
log "$("$CONTAINERD2_PREFIX/bin/containerd" --version) at $CONTAINERD2_PREFIX/bin"
