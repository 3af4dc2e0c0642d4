#!/usr/bin/env bash
# Installs the Docker engines ckpt's Docker tests run against, next to (not
# into) the host's packages:
#   28: docker.io + docker-cli + tini-static from Debian sid
#   26: docker.io + docker-cli + tini        from Debian trixie
# Each lands in $CKPT_DOCKER_PREFIX/<major> (default /opt/ckpt-docker/28 and
# /opt/ckpt-docker/26), extracted with dpkg-deb -x; the binaries are also
# linked into <prefix>/<major>/bin (dockerd, docker, docker-init,
# docker-proxy). They are dynamically linked against libc, libsystemd, libcap,
# libgcrypt, liblzma, libzstd and liblz4, which bookworm has.
#
# The host's apt is never pointed at sid or trixie: apt runs with a private
# configuration under $CKPT_CACHE/docker/apt (its own sources, lists, cache
# and an empty dpkg status), so `apt-get upgrade` on the host cannot pick
# anything from those suites. The .debs come from `apt-get download`, which
# checks them against the SHA256 of the Packages index whose Release file is
# signed (debian-archive-keyring); a cached .deb is checked against the same
# index before it is reused.
#
# Idempotent: an engine whose stamp matches is left alone, and apt is not
# touched at all when both are in place. Needs root. Environment:
#   CKPT_CACHE            cache root (default /var/cache/ckpt)
#   CKPT_DOCKER_PREFIX    install root (default /opt/ckpt-docker)
#   DOCKER28_VERSION      exact sid version of docker.io (default: newest 28.x)
#   DOCKER26_VERSION      exact trixie version of docker.io (default: newest 26.x)
#   CKPT_DOCKER_REFRESH=1 re-read the indexes even if they are recent
set -euo pipefail

CKPT_CACHE=${CKPT_CACHE:-/var/cache/ckpt}
CACHE=$CKPT_CACHE/docker
PREFIX=${CKPT_DOCKER_PREFIX:-/opt/ckpt-docker}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ARCH=$(dpkg --print-architecture)

log() { printf '== setup-docker: %s\n' "$*"; }
die() { printf 'setup-docker: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it writes $PREFIX and $CACHE)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
[ -r "$KEYRING" ] || die "$KEYRING missing (apt-get install debian-archive-keyring)"

# engine table: major  suite  docker.io-version-pattern  init-package
engines=(
  "28 sid    ^28[.] tini-static"
  "26 trixie ^26[.] tini"
)

mkdir -p "$CACHE" "$PREFIX"
exec 9>"$CACHE/.lock"
flock 9

# --- private apt ---------------------------------------------------------------
APT=$CACHE/apt
mkdir -p "$APT/etc/sources.list.d" "$APT/etc/preferences.d" "$APT/etc/apt.conf.d" \
  "$APT/lists/partial" "$APT/cache/archives/partial" "$CACHE/debs"
cat >"$APT/etc/sources.list.d/ckpt-docker.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid trixie
Components: main
Architectures: $ARCH
Signed-By: $KEYRING
EOF
: >"$APT/status.empty"
apt_opts=(
  -o "Dir::Etc::sourcelist=/dev/null"
  -o "Dir::Etc::sourceparts=$APT/etc/sources.list.d"
  -o "Dir::Etc::preferences=/dev/null"
  -o "Dir::Etc::preferencesparts=$APT/etc/preferences.d"
  -o "Dir::Etc::parts=$APT/etc/apt.conf.d"
  -o "Dir::State::lists=$APT/lists"
  -o "Dir::State::status=$APT/status.empty"
  -o "Dir::Cache=$APT/cache"
  -o "APT::Architecture=$ARCH"
  -o "APT::Architectures=$ARCH"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
)
papt_get() { nice -n 10 apt-get "${apt_opts[@]}" "$@"; }
papt_cache() { apt-cache "${apt_opts[@]}" "$@"; }

apt_ready=
apt_update() {
  [ -n "$apt_ready" ] && return
  local stamp=$APT/lists/.updated
  if [ "${CKPT_DOCKER_REFRESH:-0}" = 1 ] || [ -z "$(find "$stamp" -mmin -360 2>/dev/null)" ]; then
    log "apt-get update (private: sid + trixie, $APT)"
    papt_get update -qq || die "apt-get update of the private sid/trixie sources failed"
    touch "$stamp"
  fi
  apt_ready=1
}

# field PKG VERSION FIELD: a field of one version's record in the index.
field() {
  papt_cache show "$1=$2" 2>/dev/null | awk -v f="$3:" '$1==f{print $2; exit}'
}

# newest PKG SUITE PATTERN: the newest version of PKG that SUITE offers and
# the regular expression PATTERN matches (madison lists newest first).
newest() {
  papt_cache madison "$1" | awk -F'|' -v s="$2" -v p="$3" '
    { gsub(/ /, "", $2); if ($3 ~ (" " s "/") && $2 ~ p) { print $2; exit } }'
}

# offers PKG SUITE VERSION: SUITE has exactly that version of PKG.
offers() {
  papt_cache madison "$1" | awk -F'|' -v s="$2" -v v="$3" '
    { gsub(/ /, "", $2); if ($3 ~ (" " s "/") && $2 == v) found=1 } END { exit !found }'
}

# fetch PKG VERSION: a verified .deb in $CACHE/debs; prints its path.
fetch() {
  local pkg=$1 ver=$2 sha size name path
  sha=$(field "$pkg" "$ver" SHA256)
  size=$(field "$pkg" "$ver" Size)
  [ -n "$sha" ] || die "$pkg=$ver is not in the sid/trixie indexes"
  name=$(field "$pkg" "$ver" Filename)
  path=$CACHE/debs/$(basename "$name")
  if [ -f "$path" ] && echo "$sha  $path" | sha256sum -c --quiet - 2>/dev/null; then
    echo "$path"
    return
  fi
  rm -f "$path"
  local dl
  dl=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
  chown _apt "$dl" 2>/dev/null || true # apt downloads as _apt when it can
  (cd "$dl" && papt_get download -qq "$pkg=$ver" >/dev/null) || { rm -rf "$dl"; die "apt-get download $pkg=$ver failed"; }
  local got
  got=$(ls "$dl"/*.deb)
  # apt already checked it; checking again costs nothing and covers the cache.
  echo "$sha  $got" | sha256sum -c --quiet - || { rm -rf "$dl"; die "$pkg=$ver: SHA256 mismatch"; }
  [ "$(stat -c %s "$got")" = "$size" ] || { rm -rf "$dl"; die "$pkg=$ver: size mismatch"; }
  mv "$got" "$path"
  rm -rf "$dl"
  echo "$path"
}

installed_stamp() { cat "$PREFIX/$1/.ckpt-stamp" 2>/dev/null || true; }

works() { # major: the installed engine's binaries run here
  local d=$PREFIX/$1/bin
  "$d/dockerd" --version >/dev/null 2>&1 && "$d/docker" --version >/dev/null 2>&1 &&
    "$d/docker-init" --version >/dev/null 2>&1 && "$d/docker-proxy" --help >/dev/null 2>&1 || return 1
}

for e in "${engines[@]}"; do
  read -r major suite pattern initpkg <<<"$e"
  want_var=DOCKER${major}_VERSION
  want=${!want_var:-}
  stamp=$(installed_stamp "$major")
  # Without an explicit version an installed engine of the right major stays.
  if [ -n "$stamp" ] && works "$major"; then
    if [ -z "$want" ] || [[ "$stamp" == "docker.io=$want "* ]]; then
      log "Docker $major present: $stamp ($PREFIX/$major)"
      continue
    fi
  fi
  apt_update
  ver=${want:-$(newest docker.io "$suite" "$pattern")}
  [ -n "$ver" ] || die "no docker.io matching $pattern in $suite"
  offers docker.io "$suite" "$ver" || die "docker.io=$ver is not in $suite"
  # The CLI is built from the same source package: same version.
  cli_ver=$ver
  offers docker-cli "$suite" "$cli_ver" || die "docker-cli=$cli_ver is not in $suite"
  init_ver=$(newest "$initpkg" "$suite" .)
  [ -n "$init_ver" ] || die "$initpkg is not in $suite"
  new_stamp="docker.io=$ver docker-cli=$cli_ver $initpkg=$init_ver"
  log "Docker $major: $new_stamp (Debian $suite)"
  debs=()
  for pv in "docker.io=$ver" "docker-cli=$cli_ver" "$initpkg=$init_ver"; do
    deb=$(fetch "${pv%%=*}" "${pv#*=}") # fails the script if fetch dies
    debs+=("$deb")
  done
  stage=$PREFIX/.$major.tmp
  rm -rf "$stage"
  mkdir -p "$stage/bin"
  for d in "${debs[@]}"; do dpkg-deb -x "$d" "$stage"; done
  # docker.io's /usr/bin/docker-init is a symlink to tini-static (from
  # tini-static in sid, from tini in trixie).
  [ -x "$stage/usr/bin/tini-static" ] || die "$initpkg has no /usr/bin/tini-static"
  ln -s ../usr/sbin/dockerd "$stage/bin/dockerd"
  ln -s ../usr/sbin/docker-proxy "$stage/bin/docker-proxy"
  ln -s ../usr/bin/docker "$stage/bin/docker"
  ln -s ../usr/bin/tini-static "$stage/bin/docker-init"
  echo "$new_stamp" >"$stage/.ckpt-stamp"
  rm -rf "$PREFIX/$major.old"
  [ -e "$PREFIX/$major" ] && mv "$PREFIX/$major" "$PREFIX/$major.old"
  mv "$stage" "$PREFIX/$major"
  rm -rf "$PREFIX/$major.old"
  works "$major" || die "Docker $major does not run here: $("$PREFIX/$major/bin/dockerd" --version 2>&1 | head -3)"
done

for e in "${engines[@]}"; do
  read -r major _ <<<"$e"
  log "$("$PREFIX/$major/bin/dockerd" --version) -> $PREFIX/$major/bin"
done
