#!/usr/bin/env bash
# Installs what cwsfs needs on Debian 12 and builds it: apt packages, the local
# backend's npm packages, and the build in $BUILD_DIR (default build/). Output is one
# line per step; a step that fails prints its log.
# Usage: [SETUP_EXTRA_PACKAGES="pkg..."] tests/setup.sh [extra cmake args...]
#        tests/setup.sh --list-packages     the Debian packages it installs
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build}

# Every command the scripts of tests/, examples/ and bench/ run comes from one of these
# or from a package every Debian system has (tests/check-commands.py checks it).
# nodejs: Debian 12's is Node 18, which contrib/local-backend/package.json asks for.
packages=(build-essential cmake pkg-config libfuse3-dev fuse3 libcurl4-openssl-dev
          libjansson-dev uthash-dev libcmocka-dev protobuf-compiler libprotobuf-dev
          nodejs npm curl valgrind python3 util-linux procps bc shfmt
          runc skopeo umoci mmdebstrap golang-github-containers-common
          scdoc libsystemd-dev man-db groff-base bsdextrautils binutils systemd
          bash-completion)
read -r -a extra <<<"${SETUP_EXTRA_PACKAGES:-}"
packages+=("${extra[@]}")
if [ "${1:-}" = --list-packages ]; then
    printf '%s\n' "${packages[@]}"
    exit 0
fi

log=$(mktemp "${TMPDIR:-/tmp}/cwsfs-setup.XXXXXX")
trap 'rm -f "$log"' EXIT
# quietly STEP CMD...: run CMD with its output in the log; print the log if it fails.
quietly() {
    local what=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "setup: $what failed:" >&2
        cat "$log" >&2
        exit 1
    fi
}

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
# apt_get ARGS...: apt-get that waits (up to 10 min) for another apt or dpkg to finish
# (fresh cloud machines run unattended-upgrades at boot) instead of failing. Installs
# wait on dpkg's lock through DPkg::Lock::Timeout; apt-get update ignores it for the
# lists lock, so a refused lock is also retried here.
apt_get() {
    local deadline=$((SECONDS + 600)) said=
    until "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=600 "$@" >"$log" 2>&1; do
        if ! grep -qE 'Could not get lock|Unable to (acquire|lock)' "$log" || [ $SECONDS -ge $deadline ]; then
            echo "setup: apt-get $* failed:" >&2
            cat "$log" >&2
            exit 1
        fi
        [ -n "$said" ] || echo "setup: waiting for another apt or dpkg to finish"
        said=1
        sleep 5
    done
}

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
    apt_get update -qq
    apt_get install -y -qq "${missing[@]}"
fi

if [ ! -d "$top/contrib/local-backend/node_modules" ]; then
    echo "setup: npm ci in contrib/local-backend"
    quietly "npm ci" bash -c 'cd "$1" && npm ci --no-audit --no-fund --loglevel=error' _ "$top/contrib/local-backend"
fi
quietly "building the local backend" bash -c 'cd "$1" && npm run --silent build' _ "$top/contrib/local-backend"
# The sandboxes' base image in the machine-wide image store (cached: once per machine).
echo "setup: the sandboxes' base image"
quietly "building the base image" "${sudo_cmd[@]}" "$top/contrib/local-backend/scripts/build-base-image.sh"

echo "setup: building cwsfs in $build"
quietly "cmake" cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
quietly "the build" cmake --build "$build" -j"$(nproc)"
