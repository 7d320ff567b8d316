#!/usr/bin/env bash
# The main job on a fresh machine: set up and build (tests/setup.sh), mount cwsfs
# with no credentials set, so it starts the bundled local backend, and run the
# Python evaluation example through the mount. Unmounts on the way out.
# Usage: examples/demo.sh [MOUNTPOINT]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/tests/setup.sh"

mnt=${1:-$(mktemp -d /tmp/cwsfs-demo.XXXXXX)}
mkdir -p "$mnt"
log=$(mktemp /tmp/cwsfs-demo-log.XXXXXX)
# No endpoint and no key: cwsfs starts the local backend itself and says so.
env -u CWSANDBOX_BASE_URL -u CWSANDBOX_API_KEY -u WANDB_SANDBOX_BASE_URL -u WANDB_API_KEY \
    "$top/build/cwsfs" "$mnt" -f -o cleanup 2>"$log" &
daemon=$!
cleanup() {
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 150); do
    mountpoint -q "$mnt" && break
    kill -0 "$daemon" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
done
mountpoint -q "$mnt" || { echo "demo: the mount did not come up" >&2; cat "$log" >&2; exit 1; }
sed -n '1,3p' "$log"

results=$(mktemp -d /tmp/cwsfs-demo-results.XXXXXX)
"$top/examples/run-python-eval.sh" "$mnt" "$results"
echo "demo: done; result.json is in $results, the daemon's log was $log"
