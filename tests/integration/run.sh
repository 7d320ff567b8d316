#!/usr/bin/env bash
# run.sh - run the integration suite: every tests/integration/test_*.sh (or the ones
# named as arguments), each in its own process with its own backend and mount.
# Prints PASS/FAIL per test file with its time, the output of the failed ones, the
# FIGURE lines (call counts) of all, and exits non-zero if any failed.
#
#   CWSFS_BIN=build/cwsfs tests/integration/run.sh [test_x.sh ...]
#   IT_JOBS=N         run N test files at once (default 1)
#   IT_FILE_TIMEOUT   seconds a whole test file may take (default 600, scaled)
#   IT_VERBOSE=1      print every file's output, not only the failed ones'
set -u -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
export CWSFS_BIN=${CWSFS_BIN:-$top/build/cwsfs}
case $CWSFS_BIN in /*) ;; *) CWSFS_BIN=$PWD/$CWSFS_BIN ;; esac
jobs_max=${IT_JOBS:-1}
scale=${IT_SCALE:-1}
[ -n "${CWSFS_WRAPPER:-}" ] && [ -z "${IT_SCALE:-}" ] && scale=6
file_timeout=$((${IT_FILE_TIMEOUT:-600} * scale))

if [ ! -x "$CWSFS_BIN" ]; then
    echo "run.sh: $CWSFS_BIN is not built (set CWSFS_BIN)" >&2
    exit 2
fi
for tool in fusermount3 mountpoint node curl python3 timeout cmp; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (tests/setup.sh installs it)" >&2; exit 2; }
done

tests=()
if [ $# -gt 0 ]; then
    for a in "$@"; do
        a=$(basename "$a")
        [ -f "$here/$a" ] || { echo "run.sh: no test $a" >&2; exit 2; }
        tests+=("$a")
    done
else
    for f in "$here"/test_*.sh; do tests+=("$(basename "$f")"); done
fi

results=$(mktemp -d "${TMPDIR:-/tmp}/cwsfs-it-results.XXXXXX")
declare -A start_ms=() pids=()
failed=()
now_ms() { echo $(($(date +%s%N) / 1000000)); }
t_all=$(now_ms)

finish_one() { # TEST STATUS
    local tname=$1 rc=$2 ms
    ms=$(($(now_ms) - ${start_ms[$tname]}))
    if [ "$rc" -eq 0 ]; then
        printf 'PASS %-28s %4d.%01ds\n' "$tname" $((ms / 1000)) $((ms % 1000 / 100))
        [ "${IT_VERBOSE:-0}" = 1 ] && sed 's/^/    /' "$results/$tname.out"
    else
        printf 'FAIL %-28s %4d.%01ds%s\n' "$tname" $((ms / 1000)) $((ms % 1000 / 100)) \
            "$([ "$rc" -eq 124 ] && echo " (timed out after $file_timeout s)")"
        sed 's/^/    /' "$results/$tname.out"
        failed+=("$tname")
    fi
}

reap() { # wait for any one running test to finish
    local tname
    while :; do
        for tname in "${!pids[@]}"; do
            if ! kill -0 "${pids[$tname]}" 2>/dev/null; then
                wait "${pids[$tname]}"
                finish_one "$tname" $?
                unset "pids[$tname]"
                return
            fi
        done
        sleep 0.2
    done
}

for tname in "${tests[@]}"; do
    while [ ${#pids[@]} -ge "$jobs_max" ]; do reap; done
    start_ms[$tname]=$(now_ms)
    timeout -k 10 "$file_timeout" bash "$here/$tname" >"$results/$tname.out" 2>&1 </dev/null &
    pids[$tname]=$!
done
while [ ${#pids[@]} -gt 0 ]; do reap; done

figures=$(cat "$results"/*.out 2>/dev/null | grep '^FIGURE ' || true)
if [ -n "$figures" ]; then
    echo
    echo "call-count figures:"
    printf '%s\n' "$figures" | sed 's/^FIGURE /  /'
fi
ms=$(($(now_ms) - t_all))
echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "integration: all ${#tests[@]} test files passed in $((ms / 1000)) s"
    rm -rf "$results"
    exit 0
fi
echo "integration: ${#failed[@]} of ${#tests[@]} test files FAILED in $((ms / 1000)) s: ${failed[*]}"
echo "(outputs in $results)"
exit 1
