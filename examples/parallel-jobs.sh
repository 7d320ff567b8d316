#!/usr/bin/env bash
# Fan out N sandboxes, each counting the primes in its own slice of a range, wait for
# all of them, gather their outputs and add them up; then remove the sandboxes.
# Only files: mkdir, echo > ctl, cat exit (blocks until the command ends), cat stdout.
# Usage: examples/parallel-jobs.sh MOUNTPOINT [N [LIMIT]]
# Prints one line per job and the total number of primes below LIMIT.
set -euo pipefail
mnt=${1:?usage: parallel-jobs.sh MOUNTPOINT [N [LIMIT]]}
n=${2:-4}
limit=${3:-200000}
prefix=$mnt/primes-$$
cleanup() {
    for ((i = 1; i <= n; i++)); do
        [ -d "$prefix-$i" ] && rm -r "$prefix-$i"
    done
    return 0
}
trap cleanup EXIT

# The job, one ctl line run with sh -c in each sandbox: count primes in [LO, HI).
job='awk -v lo="$LO" -v hi="$HI" '"'"'BEGIN { c = 0; for (k = (lo < 2 ? 2 : lo); k < hi; k++) { p = 1; for (d = 2; d * d <= k; d++) if (k % d == 0) { p = 0; break }; c += p }; print c }'"'"

step=$(((limit + n - 1) / n))
for ((i = 1; i <= n; i++)); do
    lo=$(((i - 1) * step))
    hi=$((i * step < limit ? i * step : limit))
    mkdir "$prefix-$i"
    # the spec first (env), then the exec: the exec starts the sandbox
    printf '%s\n' "env LO=$lo" "env HI=$hi" "exec $job" >"$prefix-$i/ctl" &
done
wait # every sandbox is created and its command started

total=0
failed=0
for ((i = 1; i <= n; i++)); do
    code=$(cat "$prefix-$i/exit") # blocks until job i ends
    if [ "$code" != 0 ]; then
        echo "job $i failed ($code): $(cat "$prefix-$i/stderr")" >&2
        failed=1
        continue
    fi
    count=$(cat "$prefix-$i/stdout")
    echo "job $i [$(((i - 1) * step)), $((i * step < limit ? i * step : limit))): $count primes"
    total=$((total + count))
done
[ $failed = 0 ] || exit 1
echo "total: $total primes below $limit"
