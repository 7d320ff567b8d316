#!/usr/bin/env bash
# Benchmarks of cwsfs against the local backend, printed as ratios measured in this
# one run (machines here are noisy: compare within a run, never across runs).
#   copy in/out     cwsfs cp vs. the same bytes through a plain local cp
#   exec output     streaming a command's stdout vs. the raw StreamExec rpc via curl
#   exec latency    `exec true` + `cat exit` vs. one raw Exec rpc via curl
#   ls -l           calls per directory listing of 1000 entries
#   memory          daemon RSS growth per MiB of output streamed (output spools to disk)
# Usage: bench/run.sh [path/to/cwsfs]   (default build/cwsfs; run tests/setup.sh first)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build/cwsfs}
work=$(mktemp -d /tmp/cwsfs-bench.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
    fusermount3 -uz "$mnt" 2>/dev/null || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
    [ -n "${backend:-}" ] && kill "$backend" 2>/dev/null && wait "$backend" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

node "$top/contrib/local-backend/server.js" --listen 127.0.0.1:0 --state-dir "$work/state" \
    --address-file "$work/addr" >/dev/null 2>"$work/backend.log" &
backend=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
url=$(cat "$work/addr")
"$bin" "$mnt" -f -o "endpoint=$url,tags=bench-$$" 2>"$work/cwsfs.log" &
daemon=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
calls() { curl -s "$url/_local/calls" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1',0))"; }
rpc() { # RPC JSON: a raw unary call
    curl -s --http2-prior-knowledge -H 'Content-Type: application/json' \
        -H 'Connect-Protocol-Version: 1' -d "$2" "$url/coreweave.sandbox.v1.SandboxService/$1"
}

sb=$mnt/b
mkdir "$sb"
echo start >"$sb/ctl"
id=$(cat "$sb/id")
size_mib=100
dd if=/dev/urandom of="$work/data" bs=1M count=$size_mib status=none

t0=$(now); cp "$work/data" "$work/local-copy"; sync -f "$work/local-copy"; t1=$(now)
local_cp=$(secs "$t0" "$t1")
t0=$(now); cp "$work/data" "$sb/root/tmp/data"; t1=$(now)
cp_in=$(secs "$t0" "$t1")
t0=$(now); cp "$sb/root/tmp/data" "$work/back"; t1=$(now)
cp_out=$(secs "$t0" "$t1")
cmp -s "$work/data" "$work/back" || { echo "bench: the copy came back different" >&2; exit 1; }
printf 'copy %d MiB in:  %.2f s (%.0f MiB/s), %sx a local cp\n' $size_mib "$cp_in" \
    "$(echo "$size_mib / $cp_in" | bc -l)" "$(ratio "$cp_in" "$local_cp")"
printf 'copy %d MiB out: %.2f s (%.0f MiB/s), %sx a local cp\n' $size_mib "$cp_out" \
    "$(echo "$size_mib / $cp_out" | bc -l)" "$(ratio "$cp_out" "$local_cp")"

# Exec output: the same command through the mount and through a raw StreamExec.
python3 - "$id" >"$work/body" <<'PY'
import json, struct, sys
def env(o):
    b = json.dumps(o).encode()
    return struct.pack('>BI', 0, len(b)) + b
cmd = ["head", "-c", str(100 << 20), "/dev/zero"]
sys.stdout.buffer.write(env({"init": {"sandboxId": sys.argv[1], "command": cmd}}) + env({"close": {}}))
PY
t0=$(now)
curl -s --http2-prior-knowledge -H 'Content-Type: application/connect+json' \
    -H 'Connect-Protocol-Version: 1' --data-binary @"$work/body" \
    "$url/coreweave.sandbox.v1.SandboxService/StreamExec" -o /dev/null
t1=$(now)
raw_stream=$(secs "$t0" "$t1")
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
t0=$(now)
echo "exec head -c $((100 << 20)) /dev/zero" >"$sb/ctl"
got=$(cat "$sb/stdout" | wc -c)
t1=$(now)
rss1=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
[ "$got" -eq $((100 << 20)) ] || { echo "bench: stdout had $got bytes" >&2; exit 1; }
fs_stream=$(secs "$t0" "$t1")
printf 'exec output 100 MiB: %.2f s through cwsfs, %sx the raw StreamExec rpc\n' "$fs_stream" \
    "$(ratio "$fs_stream" "$raw_stream")"
printf 'memory: daemon RSS grew %d KiB while 100 MiB of output streamed (%.1f KiB per MiB)\n' \
    $((rss1 - rss0)) "$(echo "($rss1 - $rss0) / 100" | bc -l)"

# Exec latency: 20 short commands.
n=20
t0=$(now)
for _ in $(seq $n); do rpc Exec "{\"sandboxId\":\"$id\",\"command\":[\"true\"]}" >/dev/null; done
t1=$(now)
raw_exec=$(secs "$t0" "$t1")
t0=$(now)
for _ in $(seq $n); do echo 'exec true' >"$sb/ctl"; cat "$sb/exit" >/dev/null; done
t1=$(now)
fs_exec=$(secs "$t0" "$t1")
printf 'exec latency: %.1f ms per `exec true` + `cat exit`, %sx one raw Exec rpc (%.1f ms)\n' \
    "$(echo "$fs_exec * 1000 / $n" | bc -l)" "$(ratio "$fs_exec" "$raw_exec")" \
    "$(echo "$raw_exec * 1000 / $n" | bc -l)"

# Listing: calls for ls -l of a directory of 1000 files.
echo 'exec mkdir -p /bench && cd /bench && for i in $(seq 1000); do echo $i > f$i; done' >"$sb/ctl"
cat "$sb/exit" >/dev/null
sleep 1.1 # let the listing cache of / expire: count a cold listing
e0=$(calls Exec)
t0=$(now); entries=$(ls -l "$sb/root/bench" | tail -n +2 | wc -l); t1=$(now)
e1=$(calls Exec)
printf 'ls -l of %d entries: %d Exec calls (%.3f per entry), %.2f s\n' "$entries" $((e1 - e0)) \
    "$(echo "($e1 - $e0) / $entries" | bc -l)" "$(secs "$t0" "$t1")"

d0=$(calls DeleteSandbox); x0=$(calls Exec)
rm -r "$sb"
d1=$(calls DeleteSandbox); x1=$(calls Exec)
printf 'rm -r of a sandbox holding 1000+ files: %d DeleteSandbox, %d Exec\n' $((d1 - d0)) $((x1 - x0))
fusermount3 -u "$mnt"
wait "$daemon"
daemon=
