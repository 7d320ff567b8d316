#!/usr/bin/env bash
# Builds the sandboxes' base image: Debian 12 (bookworm) minbase with python3
# (python and python3 on PATH) and ca-certificates, from Debian's packages
# through the mirror this machine's apt uses, packed as a one-layer OCI image
# and imported into the image store as python:3.11 and debian:bookworm.
# Does nothing when the store already has both.
# Usage: build-base-image.sh [--store DIR]   (default: $CWSB_IMAGE_STORE or
#        /var/lib/cwsandbox-local/images). Needs root, mmdebstrap, umoci, skopeo.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
store=${CWSB_IMAGE_STORE:-/var/lib/cwsandbox-local/images}
if [ "${1:-}" = "--store" ] && [ -n "${2:-}" ]; then store=$2; fi
names=(python:3.11 debian:bookworm)
image() { node "$here/image.js" --store "$store" "$@"; }
say() { echo "base image: $*"; }
die() { echo "base image: $*" >&2; exit 1; }

if image has "${names[@]}" >/dev/null; then
    say "store $store already has ${names[*]}"
    exit 0
fi
for tool in mmdebstrap umoci skopeo; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install $tool)"
done

# One "deb URI SUITE main" line per Debian archive apt knows here, with the
# suite renamed to bookworm's (this host may run another release).
debian_sources() {
    apt-get indextargets --format '$(REPO_URI) $(RELEASE)' \
        'Created-By: Packages' 'Origin: Debian' 'Component: main' | sort -u |
    while read -r uri release; do
        case $release in
        *-security) echo "deb $uri bookworm-security main" ;;
        *-updates) echo "deb $uri bookworm-updates main" ;;
        *-*) ;;
        *) echo "deb $uri bookworm main" ;;
        esac
    done | sort -u
}
mapfile -t sources < <(debian_sources)
if [ ${#sources[@]} -eq 0 ]; then
    # Archives' origins are known only once apt has fetched their Release files.
    apt-get update -qq >/dev/null
    mapfile -t sources < <(debian_sources)
fi
[ ${#sources[@]} -gt 0 ] || die "apt on this machine knows no Debian archive (run apt-get update first)"

# Keep apt's own view of Release file dates (a snapshot mirror needs this off).
aptopts=()
eval "$(apt-config shell valid_until Acquire::Check-Valid-Until)"
if [ "${valid_until:-}" = false ]; then aptopts+=(--aptopt='Acquire::Check-Valid-Until "false"'); fi

start=$(date +%s)
work=$(mktemp -d /var/tmp/cwsb-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
say "mmdebstrap bookworm from $(printf '%s\n' "${sources[@]}" | cut -d' ' -f2 | sort -u | tr '\n' ' ')..."
mmdebstrap --quiet --variant=minbase --include=python3,python-is-python3,ca-certificates,procps \
    "${aptopts[@]}" bookworm "$work/rootfs.tar" "${sources[@]}" ||
    die "mmdebstrap failed"

say "packing an OCI image..."
layout="$work/layout:base"
umoci init --layout "$work/layout"
umoci new --image "$layout"
umoci raw add-layer --image "$layout" "$work/rootfs.tar"
umoci config --image "$layout" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env LANG=C.UTF-8 --config.cmd /bin/sh

for n in "${names[@]}"; do
    image import "oci:$layout" "$n" >/dev/null
done
say "store $store has ${names[*]} ($(($(date +%s) - start))s)"
