#!/usr/bin/env bash
# Installs what cwsfs needs on Debian 12 and builds it: apt packages, the local
# backend's npm packages, and the build in $BUILD_DIR (default build/).
# Usage: [SETUP_EXTRA_PACKAGES="pkg..."] tests/setup.sh [extra cmake args...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build}

packages=(build-essential cmake pkg-config libfuse3-dev fuse3 libcurl4-openssl-dev
          libjansson-dev uthash-dev libcmocka-dev protobuf-compiler libprotobuf-dev
          nodejs npm curl valgrind python3 iproute2 util-linux psmisc
          runc skopeo umoci mmdebstrap golang-github-containers-common
          scdoc libsystemd-dev man-db groff-base bsdextrautils binutils systemd
          bash-completion procps)
read -r -a extra <<<"${SETUP_EXTRA_PACKAGES:-}"
packages+=("${extra[@]}")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Node may come from another package than Debian's nodejs (with npm built in).
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs/}")
    missing=("${missing[@]/npm/}")
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | grep -v '^$' || true)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d "$top/contrib/local-backend/node_modules" ]; then
    echo "setup: npm ci in contrib/local-backend"
    (cd "$top/contrib/local-backend" && npm ci --no-audit --no-fund --loglevel=error)
fi
(cd "$top/contrib/local-backend" && npm run --silent build)
# The sandboxes' base image in the machine-wide image store (cached: once per machine).
if [ "$(id -u)" -eq 0 ]; then
    "$top/contrib/local-backend/scripts/build-base-image.sh"
else
    sudo "$top/contrib/local-backend/scripts/build-base-image.sh"
fi

cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
